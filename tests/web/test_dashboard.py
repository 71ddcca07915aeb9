"""The dashboard in a real browser: Playwright drives Debian's Chromium
(/usr/bin/chromium; Playwright may not download browsers) against the daemon.
Screenshots go to test-artefacts/ (CI keeps them)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.opcua.conftest import MODULE_LOOP
from tests.web.conftest import CAMPAIGN, PASSWORD, USERS, Web
from twin_server.security.roles import Role

pytestmark = MODULE_LOOP

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"
LEVEL = 'td.value[data-path="Components.tank.Outputs.level"]'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(web: Web) -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does)")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(15_000)
            await page.goto(web.url + "/")
            yield page
            await context.close()
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / f"dashboard-{name}.png"))


async def as_operator(page: Any) -> None:
    """Log the page in as the operator, unless an earlier test of the story did (a test
    run alone starts from the anonymous viewer)."""
    if await page.locator("#who", has_text="(operator)").count():
        return
    await page.locator('#login input[name="user"]').fill(USERS[Role.OPERATOR])
    await page.locator('#login input[name="password"]').fill(PASSWORD)
    await page.locator("#login button").click()
    await page.locator("#who", has_text=f"{USERS[Role.OPERATOR]} (operator)").wait_for()


class TestDashboard:
    async def test_a_viewer_logs_in_as_an_operator(self, page: Any) -> None:
        """Anonymous visitors are viewers here; the login form gets an operator's token."""
        await page.locator("#who", has_text="anonymous (viewer)").wait_for()
        await as_operator(page)

    async def test_it_lists_the_sessions_and_shows_live_values(self, page: Any) -> None:
        """The page lists the sessions; a chosen one's level changes live."""
        row = page.locator('tr[data-session="main"]')
        await row.wait_for()
        await row.locator("td").first.click()
        level = page.locator(LEVEL)
        await page.wait_for_function(
            f"document.querySelector('{LEVEL}')?.textContent.match(/[0-9]/)")
        first = await level.text_content()
        await page.wait_for_function(
            f"document.querySelector('{LEVEL}').textContent !== {first!r}")
        await shot(page, "live")

    async def test_suspend_and_resume_from_the_page(self, page: Any, web: Web) -> None:
        """The Suspend and Resume buttons change the session's run state."""
        row = page.locator('tr[data-session="main"]')
        await row.locator('button[data-command="suspend"]').click()
        await page.locator('#session-state[data-state="Suspended"]').wait_for()
        assert (await web.call("GET", "/api/sessions/main"))[1]["state"] == "Suspended"
        await row.locator('button[data-command="resume"]').click()
        await page.locator('#session-state[data-state="Running"]').wait_for()
        await shot(page, "resumed")

    async def test_an_input_edited_on_the_page_is_forced(self, page: Any, web: Web) -> None:
        """Typing a value into an input's edit box writes it (forced) through the API;
        an out-of-range one shows the refusal's status and changes nothing."""
        box = page.get_by_label("new value of Components.tank.Inputs.inflow")
        await box.fill("-5")
        await box.press("Enter")
        await page.locator("#message.error", has_text="BadOutOfRange").wait_for()
        await box.fill("0.003")
        await box.press("Enter")
        await page.locator('tr.forced[data-path="Components.tank.Inputs.inflow"]').wait_for()
        _, inflow = await web.call("GET", "/api/sessions/main/components/tank/inputs/inflow")
        assert inflow["forced"] and inflow["value"] == 0.003
        await shot(page, "forced")
        await web.call("POST", "/api/sessions/main/release-inputs")

    async def test_a_trend_reaches_back_into_history(self, page: Any) -> None:
        """Ticking a variable's Trend box plots it, from its history on."""
        await page.get_by_label("trend Components.tank.Outputs.level").check()
        await page.locator("#trend-legend span", has_text="tank.level").wait_for()
        await shot(page, "trend")

    async def test_a_fault_is_injected_watched_and_cleared(self, page: Any, web: Web) -> None:
        """The faults panel's form injects a fault on the chosen session, its row's
        remaining time counts down live, one injected over REST shows up unasked,
        and the Clear buttons end them."""
        form = page.locator("#fault-form")
        await form.get_by_label("fault target").select_option("setpoint.Outputs.output")
        await form.get_by_label("fault kind").select_option("offset")
        await form.get_by_label("fault parameters (JSON)").fill('{"offset": 0.0}')
        await form.get_by_label("fault duration").fill("600")
        await form.get_by_label("fault id").fill("page")
        await form.locator("button").click()
        remaining = page.locator('#faults tr[data-fault="page"] .remaining')
        await remaining.wait_for()
        first = await remaining.text_content()
        await page.wait_for_function(
            "document.querySelector('#faults tr[data-fault=\"page\"] .remaining')"
            f".textContent !== {first!r}")
        got, _ = await web.call("POST", "/api/sessions/main/faults", {
            "target": "tank.Inputs.inflow", "kind": "offset",
            "parameters": {"offset": 0.0}, "id": "rest"})
        assert got == 201
        await page.locator('#faults tr[data-fault="rest"]', has_text="until cleared").wait_for()
        await shot(page, "faults")
        await page.locator('#faults button[data-clear="page"]').click()
        await page.locator('#faults tr[data-fault="page"]').wait_for(state="detached")
        await page.locator("#clear-faults").click()
        await page.locator("#faults tbody", has_text="no faults").wait_for()
        assert (await web.call("GET", "/api/sessions/main/faults"))[1] == []

    async def test_an_alarm_is_acknowledged_from_the_alarm_list(self, page: Any, web: Web
                                                                 ) -> None:
        """The alarm list shows the tank's HighLevel; its Acknowledge button
        acknowledges it (as the operator logged in), then Confirm confirms it; Shelve
        shelves it for an hour, Unshelve unshelves it."""
        await as_operator(page)
        row = page.locator('tr[data-alarm="main/HighLevel"]')
        await row.locator('button[data-action="acknowledge"]').click()
        await row.locator('button[data-action="confirm"]').wait_for()
        _, (high,) = await web.call("GET", "/api/sessions/main/alarms")
        assert high["acked"] and high["user"] == USERS[Role.OPERATOR]
        await shot(page, "alarm-acknowledged")
        await row.locator('button[data-action="confirm"]').click()
        await row.locator(".alarm-state", has_text="acknowledged").wait_for()
        await page.wait_for_function(
            "!document.querySelector('tr[data-alarm=\"main/HighLevel\"] "
            "button:not([data-action$=\"shelve\"])')")
        await row.locator('button[data-action="timed-shelve"]').click()
        await row.locator(".alarm-state", has_text="shelved (60 min left)").wait_for()
        _, (high,) = await web.call("GET", "/api/sessions/main/alarms")
        assert (high["shelving"], high["user"]) == ("TimedShelved", USERS[Role.OPERATOR])
        await row.locator('button[data-action="unshelve"]').click()
        await row.locator('button[data-action="timed-shelve"]').wait_for()

    async def test_a_scenario_runs_from_the_page_with_its_report(self, page: Any) -> None:
        """A scenario pasted into the page runs on the server; its row shows the
        verdict, its Markdown report opens, and its report with the check's SVG plot."""
        await page.get_by_label("scenario file", exact=True).fill(
            '[scenario]\nsession = "main"\n[[steps]]\nname = "no overflow"\n'
            'check = "tank.level < 1.9"\nalways = 2.0\n')
        await page.locator("#scenario-form button").click()
        verdict = page.locator("#scenarios .verdict-passed")
        await verdict.wait_for()
        await page.locator('#scenarios button[data-report="report"]').first.click()
        await page.locator("#scenario-report", has_text="PASSED").wait_for()
        await shot(page, "scenario")
        await page.locator('#scenarios button[data-report="html"]').first.click()
        plot = page.frame_locator("#scenario-html").locator('section[data-step="0"] svg')
        await plot.locator("polyline").first.wait_for()
        await shot(page, "scenario-plots")

    async def test_a_big_twins_frames_render_fast(self, page: Any, web: Web) -> None:
        """A session of a 1,000-variable twin (200 sine sources) opens on the page and
        each live frame renders well within its publish period (a generous bound: the
        machine is shared)."""
        definition = "[twins.big]\n" + "".join(
            f'[twins.big.components.s{i}]\nmodel = "sine"\n' for i in range(200))
        got, twin = await web.call("POST", "/api/twins", {"definition": definition})
        assert got == 201, twin
        got, _ = await web.call("POST", "/api/sessions", {"twin": "big", "name": "big"})
        assert got in (201, 202)
        row = page.locator('tr[data-session="big"]')
        await row.wait_for()
        await web.call("POST", "/api/sessions/big/start")
        await row.wait_for()
        title = page.locator("#session-title")
        for _ in range(3):  # (a click while the page above reflows can land on another row)
            await row.locator("td").first.click()
            if await title.text_content() == "big":
                break
            await page.wait_for_timeout(200)
        assert await title.text_content() == "big"
        await page.wait_for_function("window.dashboardStats.frames >= 10", timeout=20_000)
        stats = await page.evaluate("window.dashboardStats")
        rows = await page.locator("#variables tbody tr").count()
        assert rows == 1000
        print(f"big twin: layout {stats['layoutMs']:.1f} ms, frame max "
              f"{stats['frameMsMax']:.1f} ms over {stats['frames']} frames")
        assert stats["frameMsMax"] < 250 and stats["layoutMs"] < 3000, stats
        await shot(page, "big")
        await web.call("DELETE", "/api/sessions/big")

    async def test_a_campaign_runs_from_the_page_with_its_report(self, page: Any) -> None:
        """A campaign pasted into the page runs on the server's Dask cluster; its row
        shows its progress and counts, ends finished, and its report opens with the
        SVG plots."""
        await page.get_by_label("campaign", exact=True).fill(CAMPAIGN)
        await page.locator("#campaign-form button").click()
        row = page.locator("#campaigns tr[data-campaign]").first
        await row.locator(".verdict-finished").wait_for(timeout=60_000)
        assert await row.locator(".runs").text_content() == "3 ok, 0 failed, 0 cancelled of 3"
        assert await row.locator("progress").get_attribute("value") == "100"
        await row.locator("button[data-report]").click()
        plot = page.frame_locator("#campaign-html").locator("figure[data-plot] svg")
        await plot.first.wait_for()
        await shot(page, "campaign")
