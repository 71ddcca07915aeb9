"""The REST API's scenario runs: RunScenario's runs (``Daemon.scenarios``, the
``ScenarioService``), over HTTP.

A run started here is the one RunScenario starts (``ScenarioService.run_scenario``:
the same arguments, the same scenario folders' path rules, the same refusals):
it shows under ``Scenarios/<run>`` in OPC UA, and every run started over OPC UA
is listed here. Its id is the run's name there (``<scenario>_<n>``). The server
keeps the running runs and the last ``server.scenario_reports`` finished ones.

A run steps on a thread of its own, on a fresh session (or a fork of a served
one: ``fork``), never on the daemon's loop. POST answers when it ends or after
``wait`` seconds (``state`` running: GET it again); ``/halt`` is the run's Halt
(its verdict is then error); ``/junit`` and ``/report`` are its reports once it
has ended. The HTML view of the report (``/report.html``) embeds the SVG plot
of each check (``scenarios/report.plot_check``, as ``twin-server test --report``
writes them); ``/plots/step<N>.svg`` serves one. Both are sent with a Content
Security Policy that lets them load and run nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
from typing import Any

from aiohttp import web

from twin_server.errors import InvalidArgument, NotFound
from twin_server.runtime import checks
from twin_server.scenarios.report import plot_check
from twin_server.scenarios.results import ScenarioResult, Verdict
from twin_server.scenarios.service import ScenarioRun, ScenarioService
from twin_server.security.roles import METHOD_ROLES
from twin_server.web import views
from twin_server.web.api import Api, _field, user_of
from twin_server.web.routes import Route
from twin_server.web.runs import RunRoutes, confined, served

#: seconds a POST waits for its run at most
MAX_WAIT = 60.0
#: a plot's name: step<N>.svg, N the index of its check's step
PLOT = re.compile(r"^step(\d{1,6})\.svg$")

RUN: dict[str, Any] = {
    "type": "object", "required": ["id", "name", "state"],
    "properties": {
        "id": {"type": "string", "description": "the run's name: Scenarios/<id> in OPC UA"},
        "name": {"type": "string", "description": "the scenario's name"},
        "file": {"type": "string"}, "user": {"type": "string"},
        "state": {"type": "string", "enum": ["running", "passed", "failed", "error"]},
        "started": {"type": "number"}, "runs_on": {"type": "string"},
        "seed": {"type": "integer", "nullable": True},
        "current_step": {"type": "string"}, "step_index": {"type": "integer"},
        "progress": {"type": "number", "description": "steps done, per cent"},
        "sim_time": {"type": "number"},
        "summary": {"type": "string", "nullable": True},
        "error": {"type": "string", "nullable": True},
        "wall_time": {"type": "number", "nullable": True},
        "steps": {"type": "array", "items": {"type": "object"}},
        "checks": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "step": {"type": "integer"},
            "condition": {"type": "string"}, "mode": {"type": "string"},
            "verdict": {"type": "string"}, "message": {"type": "string"},
            "decided": {"type": "number"}}}},
    },
}


def run_view(run: ScenarioRun) -> dict[str, Any]:
    result = run.result
    seed = run.options.seed if run.options.seed is not None else run.scenario.header.seed
    return {
        "id": run.name, "name": run.scenario.name, "file": run.scenario.file,
        "user": run.user, "state": run.verdict, "started": run.started,
        "runs_on": run.session, "seed": seed, "current_step": run.current_step,
        "step_index": run.step_index, "progress": run.progress, "sim_time": run.sim_time,
        "summary": result.summary() if result is not None else None,
        "error": result.error if result is not None else None,
        "wall_time": result.wall_time if result is not None else None,
        "steps": [{"index": s.index, "label": s.label, "started": s.started,
                   "ended": s.ended, "outcome": s.outcome, "message": s.message}
                  for s in result.steps] if result is not None else [],
        "checks": [{"name": c.name, "step": c.step, "condition": c.condition,
                    "mode": c.mode, "verdict": str(c.verdict), "message": c.message,
                    "decided": c.decided} for c in run.checks],
    }


class ScenarioRuns(RunRoutes[ScenarioRun]):
    """The routes, over the daemon's ScenarioService."""

    KIND = "scenario"
    FOLDER = "scenarios"

    def view(self, run: ScenarioRun) -> dict[str, Any]:
        return run_view(run)

    def running(self, run: ScenarioRun) -> bool:
        return run.result is None

    @property
    def service(self) -> ScenarioService:
        return served(self.api.daemon.scenarios, "scenario")

    async def start(self, request: web.Request) -> web.Response:
        body = await self.api.body(request, "max_definition_size")
        text = _field(body, "scenario", str)
        wait = _field(body, "wait", float, default=10.0)
        if not 0 <= wait <= MAX_WAIT:
            raise InvalidArgument(f"wait must be within [0, {MAX_WAIT:g}] s (got {wait:g})")
        label = _field(body, "file", str, default="RunScenario")[:200]
        # RunScenario's Options, from the body's seed and fork (checked there)
        options = json.dumps({k: body[k] for k in ("seed", "fork") if body.get(k) is not None})
        try:
            run = await self.service.run_scenario(
                text, options, user=user_of(request).name or "anonymous", label=label)
        except checks.ArgumentRefused as exc:
            raise exc.error from None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await run.done.wait()
        return web.json_response(run_view(run), status=201)

    async def junit(self, request: web.Request) -> web.Response:
        return web.Response(text=self._ended(request).junit, content_type="application/xml")

    async def report(self, request: web.Request) -> web.Response:
        return web.Response(text=self._ended(request).markdown, content_type="text/markdown")

    async def report_html(self, request: web.Request) -> web.Response:
        result = self._ended(request).result
        assert result is not None
        return confined(report_html(result), "text/html")

    async def plot(self, request: web.Request) -> web.Response:
        run = self._ended(request)
        assert run.result is not None
        name = request.match_info["plot"]
        match = PLOT.match(name)
        check = next((c for c in run.result.checks
                      if match is not None and c.step == int(match.group(1))), None)
        svg = plot_check(run.result.trace, check) if check is not None else None
        if svg is None:
            plotted = [f"step{c.step}.svg" for c in run.result.checks
                       if plot_check(run.result.trace, c) is not None]
            raise NotFound(f"scenario run {run.name} has no plot {name[:40]!r} (its plots: "
                           f"{', '.join(plotted) or 'none'}; a check not reached has none)")
        return confined(svg, "image/svg+xml")

    async def halt(self, request: web.Request) -> web.Response:
        run = self._run(request)
        run.halt(f"halted by {user_of(request).name or 'an anonymous client'} over the "
                 f"REST API")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await run.done.wait()
        return web.json_response(run_view(run))


_MARK = {Verdict.PASSED: "PASS", Verdict.FAILED: "FAIL", Verdict.ERROR: "ERROR",
         Verdict.SKIPPED: "SKIP"}


def report_html(result: ScenarioResult) -> str:
    """The report as one HTML page, each check's SVG plot inline (what the Markdown
    report says, with the plots ``twin-server test --report`` writes beside it)."""
    e = html.escape
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(result.name)}: {e(result.verdict.upper())}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        ".passed{color:#1a7f37}.failed,.error{color:#cf222e}.skipped{color:#777}</style>",
        "</head><body>",
        f'<h1>{e(result.name)}: <span class="{e(str(result.verdict))}">'
        f"{e(result.verdict.upper())}</span></h1>",
        f"<p>{e(result.summary())}</p>",
        f"<ul><li>file: <code>{e(result.file)}</code></li><li>mode: {e(result.mode)}, "
        f"session <code>{e(result.session)}</code></li><li>seed: {e(str(result.seed))}</li>"
        f"</ul>"]
    if result.error:
        parts.append(f'<p class="error"><b>The run broke off:</b> {e(result.error)}</p>')
    parts.append("<h2>Steps</h2><table><tr><th>#</th><th>step</th><th>from</th><th>to</th>"
                 "<th>outcome</th></tr>")
    for step in result.steps:
        note = f" ({step.message})" if step.message else ""
        parts.append(f"<tr><td>{step.index}</td><td>{e(step.label)}</td>"
                     f"<td>{step.started:.6g} s</td><td>{step.ended:.6g} s</td>"
                     f"<td>{e(step.outcome + note)}</td></tr>")
    parts.append("</table><h2>Checks</h2>")
    for check in result.checks:
        parts.append(f'<section data-step="{check.step}"><h3 class="{e(str(check.verdict))}">'
                     f"{_MARK[check.verdict]}: {e(check.name)}</h3>"
                     f"<p><code>{e(check.condition)}</code> ({e(check.mode)}): "
                     f"{e(check.message)}</p>")
        if check.verdict in (Verdict.FAILED, Verdict.ERROR):
            parts.append(f"<pre>{e(check.describe())}</pre>")
        svg = plot_check(result.trace, check)
        if svg is not None:
            parts.append(svg)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def routes(api: Api) -> list[Route]:
    runs = ScenarioRuns(api)
    one = "/api/scenarios/{run}"
    return [
        Route("POST", "/api/scenarios", runs.start, "runScenario",
              "Run a scenario on the server, as RunScenario (it shows under Scenarios/ in "
              "OPC UA); answered when it ends or after wait seconds", "scenarios",
              role=METHOD_ROLES["RunScenario"],
              body={"type": "object", "required": ["scenario"], "properties": {
                  "scenario": {"type": "string",
                               "description": "the scenario in TOML, or the name of a "
                                              "scenario file relative to the scenario "
                                              "folders (server.scenario_dirs)"},
                  "file": {"type": "string",
                           "description": "a TOML text's name, for the reports"},
                  "seed": {"type": "integer", "description": "RunScenario's Options seed"},
                  "fork": {"type": "string",
                           "description": "RunScenario's Options fork: start from the "
                                          "current state of this served session"},
                  "wait": {"type": "number", "minimum": 0, "maximum": MAX_WAIT}}},
              response=RUN, status=201,
              refusals=("BadInvalidArgument", "BadNotFound", "BadTypeMismatch",
                        "BadResourceUnavailable")),
        Route("GET", "/api/scenarios", runs.list_runs, "listScenarioRuns",
              "The running scenario runs and the last finished ones, newest first (over "
              "OPC UA and REST)", "scenarios", response=views.array_of(RUN)),
        Route("GET", one, runs.get_run, "getScenarioRun",
              "A run: its state, current step, progress and checks", "scenarios",
              response=RUN, refusals=("BadNotFound",)),
        Route("GET", one + "/junit", runs.junit, "getScenarioJunit",
              "A finished run's JUnit XML", "scenarios",
              response={"type": "string"}, media="application/xml",
              refusals=("BadNotFound", "BadInvalidState")),
        Route("GET", one + "/report", runs.report, "getScenarioReport",
              "A finished run's Markdown report", "scenarios",
              response={"type": "string"}, media="text/markdown",
              refusals=("BadNotFound", "BadInvalidState")),
        Route("GET", one + "/report.html", runs.report_html, "getScenarioReportHtml",
              "A finished run's report as an HTML page, each check's SVG plot inline",
              "scenarios", response={"type": "string"}, media="text/html",
              refusals=("BadNotFound", "BadInvalidState")),
        Route("GET", one + "/plots/{plot}", runs.plot, "getScenarioPlot",
              "The SVG plot of a finished run's check: plots/step<N>.svg, N its step's "
              "index (the variables it read around its verdict)", "scenarios",
              response={"type": "string"}, media="image/svg+xml",
              refusals=("BadNotFound", "BadInvalidState")),
        Route("POST", one + "/halt", runs.halt, "haltScenarioRun",
              "Stop a run at its next tick, as its Halt (its verdict is then error)",
              "scenarios", role=METHOD_ROLES["Halt"], response=RUN,
              refusals=("BadNotFound", "BadInvalidState")),
    ]
