"""RunCampaign on a daemon over OPC UA (asyncua): a campaign under Campaigns/<run> on
a local Dask cluster of worker processes, its progress and results' folder, its end
event, Halt keeping the finished runs, bad campaigns and files outside the scenario
folders refused, BadNotSupported without Dask (``campaigns/service.py``,
``opcua/campaign_nodes.py``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.campaigns.conftest import TANK, TANK_TWIN
from tests.events import RunEvents
from tests.opcua.conftest import MODULE_LOOP, run_daemon, stop_daemon
from tests.processes import children
from twin_server.campaigns.store import ResultStore
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon
from twin_server.security.roles import Role, method_role

pytestmark = [MODULE_LOOP, pytest.mark.timeout(90)]

#: 4 short runs (1 worker process)
QUICK = """
[campaign]
name = "quick"
config = "tank.toml"
session = "tank"
duration = 5.0
[parameters]
"tank.area" = { values = [0.4, 0.5, 0.6, 0.7] }
[summary."tank.level"]
"""

#: 400 runs of 30 s at 0.01 s: minutes on one worker (halted long before)
LONG = """
[campaign]
name = "long"
config = "tank.toml"
session = "tank"
step_size = 0.01
duration = 30.0
[parameters]
"tank.area" = { range = [0.3, 0.9], steps = 400 }
[summary."tank.level"]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenario folder: the tank's config and a campaign file; a config outside."""
    root = tmp_path_factory.mktemp("campaign-dirs")
    inside = root / "inside"
    inside.mkdir()
    (inside / "tank.toml").write_text(TANK)
    (inside / "quick.toml").write_text(QUICK)
    (root / "secret.toml").write_text(TANK)
    return inside


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(folder: Path) -> AsyncIterator[Daemon]:
    text = (f'[server]\nscenario_dirs = ["{folder}"]\ncampaign_workers = 1\n'
            '[server.security]\npolicies = ["None"]\nanonymous = "operator"\n' + TANK_TWIN
            + '[sessions.live]\ntwin = "tank_level"\n')
    daemon, task = await run_daemon(text)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)
        assert daemon.campaigns is not None
        assert all(not r.running for r in daemon.campaigns.runs.values())
    assert children() == {}, "a campaign's cluster outlived the daemon"


@pytest_asyncio.fixture(loop_scope="module")
async def client(daemon: Daemon) -> AsyncIterator[tuple[Client, int, RunEvents]]:
    async with Client(daemon.endpoint_url, timeout=30) as c:
        ns = await c.get_namespace_index(NAMESPACE_URI)
        events = RunEvents()
        sub = await c.create_subscription(20, events)
        etype = c.get_node(ua.NodeId("CampaignFinishedEventType", ns))
        await sub.subscribe_events(c.get_node(ua.NodeId("Campaigns", ns)), etype)
        yield c, ns, events
        await sub.delete()


async def _call(c: Client, ns: int, campaign: str) -> ua.CallMethodResult:
    (result,) = await c.uaclient.call([ua.CallMethodRequest(
        ObjectId=ua.NodeId("TwinServer", ns), MethodId=ua.NodeId("RunCampaign", ns),
        InputArguments=[ua.Variant(campaign, ua.VariantType.String)])])
    return result


async def _started(c: Client, ns: int, campaign: str) -> str:
    result = await _call(c, ns, campaign)
    assert result.StatusCode.is_good(), _info(result)
    return str(result.OutputArguments[0].Value.Identifier).removeprefix("Campaigns.")


def _info(result: ua.CallMethodResult) -> str:
    infos = [d.AdditionalInfo or "" for d in result.InputArgumentDiagnosticInfos or []]
    return f"{result.StatusCode.name}: " + " | ".join(infos)


async def _read(c: Client, ns: int, path: str) -> Any:
    return await c.get_node(ua.NodeId(f"Campaigns.{path}", ns)).read_value()


class TestRunCampaign:
    async def test_file_campaign_runs_to_the_end(
            self, client: tuple[Client, int, RunEvents]) -> None:
        """A campaign file below the folders runs on the local cluster: its node ends
        Halted with every run done, the event says finished, the results are there."""
        c, ns, events = client
        run = await _started(c, ns, "quick.toml")
        assert await _read(c, ns, f"{run}.Total") == 4
        event = await events.wait_for(run, timeout=60.0)
        assert (event.State, event.Ok, event.Failed, event.Campaign) == ("finished", 4, 0,
                                                                          "quick")
        assert (await _read(c, ns, f"{run}.CurrentState")).Text == "Halted"
        assert (await _read(c, ns, f"{run}.Done"), await _read(c, ns, f"{run}.Progress")) == (
            4, 100.0)
        assert "nice 10" in await _read(c, ns, f"{run}.RunsOn")
        results = Path(await _read(c, ns, f"{run}.Results"))
        assert results == Path(event.Results) and (results / "runs.csv").is_file()
        store = ResultStore.open(results)
        try:
            assert store.counts().ok == 4 and store.meta()["state"] == "finished"
        finally:
            store.close()

    async def test_halt_keeps_the_finished_runs(
            self, client: tuple[Client, int, RunEvents]) -> None:
        """Halt cancels what has not finished: the event says cancelled, the finished
        runs are stored; a second Halt is BadInvalidState; a campaign given as text
        resolves its config against the scenario folder."""
        c, ns, events = client
        run = await _started(c, ns, LONG)
        assert (await _read(c, ns, f"{run}.CurrentState")).Text == "Running"
        async with asyncio.timeout(60):
            while await _read(c, ns, f"{run}.Done") < 1:
                await asyncio.sleep(0.1)
        busy = await _call(c, ns, QUICK)
        assert busy.StatusCode.name == "BadResourceUnavailable"
        halt = ua.NodeId(f"Campaigns.{run}.Halt", ns)
        (result,) = await c.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId(f"Campaigns.{run}", ns), MethodId=halt)])
        assert result.StatusCode.is_good()
        event = await events.wait_for(run, timeout=60.0)
        assert event.State == "cancelled" and event.Ok >= 1 and event.Cancelled > 0
        assert event.Ok + event.Failed + event.Cancelled == 400
        (again,) = await c.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId(f"Campaigns.{run}", ns), MethodId=halt)])
        assert again.StatusCode.name == "BadInvalidState"


class TestRefused:
    async def test_bad_campaign(self, client: tuple[Client, int, RunEvents]) -> None:
        """A campaign with errors is BadInvalidArgument naming the key."""
        c, ns, _ = client
        result = await _call(c, ns, QUICK.replace('"tank.area"', '"tank.arae"'))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert "parameters" in _info(result) and "arae" in _info(result)

    async def test_config_outside_the_folders(self, client: tuple[Client, int, RunEvents]) -> None:
        """A campaign naming a config outside the scenario folders is refused, unread."""
        c, ns, _ = client
        result = await _call(c, ns, QUICK.replace('"tank.toml"', '"../secret.toml"'))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert "outside the scenario folders" in _info(result)
        missing = await _call(c, ns, "nope.toml")
        assert missing.StatusCode.name == "BadNotFound"

    async def test_without_dask(self, client: tuple[Client, int, RunEvents],
                                monkeypatch: pytest.MonkeyPatch) -> None:
        """Where distributed cannot be imported, RunCampaign is BadNotSupported naming
        the extra to install."""
        c, ns, _ = client
        monkeypatch.setitem(sys.modules, "distributed", None)
        result = await _call(c, ns, "quick.toml")
        assert result.StatusCode.name == "BadNotSupported"

    async def test_operator_role(self) -> None:
        """RunCampaign is an operator's."""
        assert method_role(ua.NodeId("RunCampaign", 2), 2) is Role.OPERATOR
