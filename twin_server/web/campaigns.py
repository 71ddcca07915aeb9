"""The REST API's campaign runs: RunCampaign's campaigns (``Daemon.campaigns``, the
``CampaignService``), over HTTP.

A campaign started here is the one RunCampaign starts (``CampaignService.run_campaign``:
TOML text or a file name below the scenario folders, the same path rules, the same
refusals, BadNotSupported without Dask): it shows under ``Campaigns/<run>`` in OPC UA,
and every campaign started over OPC UA is listed here. Its id is the run's name there.
The server keeps the running campaign and the last ``server.scenario_reports``
finished ones.

``/runs`` is its summary table (``results.sqlite``: one row per run with its
parameters, status and figures; paged with ``offset`` and ``limit``), readable while
it runs; ``/report`` the Markdown report (``report/index.md``) once it has ended,
``/report.html`` the same as one HTML page with its SVG plots inline, and
``/plots/<name>.svg`` one plot. The HTML and SVG are sent with a Content Security
Policy that lets them load and run nothing (the scenario reports' policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web

from twin_server.campaigns.plots import REPORT
from twin_server.campaigns.report import kinds
from twin_server.campaigns.service import CampaignRun, CampaignService
from twin_server.campaigns.store import ResultStore
from twin_server.errors import InvalidArgument, InvalidState, NotFound
from twin_server.security.roles import METHOD_ROLES
from twin_server.web import views
from twin_server.web.api import Api, _field
from twin_server.web.routes import Query, Route
from twin_server.web.runs import RunRoutes, confined, served

#: rows of the summary table in one answer at most (and by default)
MAX_ROWS = 1000
#: a plot's name, as ``campaigns/plots.py`` writes them
PLOT = re.compile(r"^[A-Za-z0-9_.-]{1,120}\.svg$")
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")

RUN: dict[str, Any] = {
    "type": "object", "required": ["id", "name", "state"],
    "properties": {
        "id": {"type": "string", "description": "the run's name: Campaigns/<id> in OPC UA"},
        "name": {"type": "string", "description": "the campaign's name"},
        "file": {"type": "string"}, "started": {"type": "number"},
        "state": {"type": "string", "enum": ["running", "finished", "cancelled", "error"]},
        "runs_on": {"type": "string"},
        "results": {"type": "string", "description": "the results folder on the server"},
        "total": {"type": "integer"}, "done": {"type": "integer"},
        "ok": {"type": "integer"}, "failed": {"type": "integer"},
        "cancelled": {"type": "integer"},
        "progress": {"type": "number", "description": "runs done, per cent"},
        "error": {"type": "string"}, "summary": {"type": "string"},
    },
}

TABLE: dict[str, Any] = {
    "type": "object", "required": ["columns", "rows", "total"],
    "properties": {
        "columns": {"type": "array", "items": {"type": "string"},
                    "description": "run, status, message, ticks, sim_time, wall_s, then "
                                   "the parameters, figures and verdicts"},
        "parameters": {"type": "array", "items": {"type": "string"}},
        "figures": {"type": "array", "items": {"type": "string"}},
        "verdicts": {"type": "array", "items": {"type": "string"}},
        "total": {"type": "integer", "description": "runs in the campaign"},
        "offset": {"type": "integer"},
        "next_offset": {"type": "integer", "nullable": True,
                        "description": "the offset of the next page (null: none)"},
        "rows": {"type": "array", "items": {"type": "object"},
                 "description": "one object per run, by column"},
    },
}


def run_view(run: CampaignRun) -> dict[str, Any]:
    return {
        "id": run.name, "name": run.campaign.name, "file": run.campaign.file,
        "started": run.started, "state": run.state, "runs_on": run.where,
        "results": str(run.results), "total": run.total, "done": run.done,
        "ok": run.done - run.failed, "failed": run.failed, "cancelled": run.cancelled,
        "progress": run.progress, "error": run.error, "summary": run.summary(),
    }


class CampaignRuns(RunRoutes[CampaignRun]):
    """The routes, over the daemon's CampaignService."""

    KIND = "campaign"
    FOLDER = "campaigns"

    def view(self, run: CampaignRun) -> dict[str, Any]:
        return run_view(run)

    def running(self, run: CampaignRun) -> bool:
        return run.running

    def running_note(self, run: CampaignRun) -> str:
        return "; /runs shows the runs done so far"

    @property
    def service(self) -> CampaignService:
        return served(self.api.daemon.campaigns, "campaign")

    async def start(self, request: web.Request) -> web.Response:
        body = await self.api.body(request)
        text = _field(body, "campaign", str)
        run = await self.service.run_campaign(text)
        return web.json_response(run_view(run), status=201)

    async def halt(self, request: web.Request) -> web.Response:
        run = self._run(request)
        run.halt()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await run.ended.wait()
        return web.json_response(run_view(run))

    async def table(self, request: web.Request) -> web.Response:
        run = self._run(request)
        offset = _int_query(request, "offset", 0, 0, 1 << 31)
        limit = _int_query(request, "limit", MAX_ROWS, 1, MAX_ROWS)
        return web.json_response(await asyncio.to_thread(_table, run, offset, limit))

    def _report_folder(self, request: web.Request) -> tuple[CampaignRun, Path]:
        run = self._ended(request)
        folder = run.results / REPORT
        if not (folder / "index.md").is_file():
            raise NotFound(f"campaign run {run.name} has no report ({run.state}"
                           + (f": {run.error}" if run.error else "") + ")")
        return run, folder

    async def report(self, request: web.Request) -> web.Response:
        _, folder = self._report_folder(request)
        text = await asyncio.to_thread((folder / "index.md").read_text, encoding="utf-8")
        return web.Response(text=text, content_type="text/markdown")

    async def report_html(self, request: web.Request) -> web.Response:
        _, folder = self._report_folder(request)
        page = await asyncio.to_thread(report_html, folder)
        return confined(page, "text/html")

    async def plot(self, request: web.Request) -> web.Response:
        run, folder = self._report_folder(request)
        name = request.match_info["plot"]
        plots = sorted(p.name for p in folder.glob("*.svg"))
        if PLOT.match(name) is None or name not in plots:
            raise NotFound(f"campaign run {run.name} has no plot {name[:40]!r} (its plots: "
                           f"{', '.join(plots) or 'none'})")
        svg = await asyncio.to_thread((folder / name).read_text, encoding="utf-8")
        return confined(svg, "image/svg+xml")


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} is an integer (got {raw[:40]!r})") from None
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be within [{low}, {high}] (got {value})")
    return value


def _table(run: CampaignRun, offset: int, limit: int) -> dict[str, Any]:
    """A page of the runs table (in a thread: SQLite)."""
    try:
        store = ResultStore.open(run.results)
    except FileNotFoundError:
        raise InvalidState(f"campaign run {run.name} has no results yet ({run.state}"
                           + (f": {run.error}" if run.error else "; its cluster is starting")
                           + ")") from None
    try:
        meta, columns = store.meta(), store.columns("runs")
        rows = store.rows("runs")
    except sqlite3.OperationalError as exc:  # (being created this instant)
        raise InvalidState(f"campaign run {run.name}'s results cannot be read yet ({exc}); "
                           "ask again") from None
    finally:
        store.close()
    params, figures, verdicts = kinds(meta, columns)
    page = rows[offset:offset + limit]
    following = offset + len(page)
    return {"columns": columns, "parameters": params, "figures": figures,
            "verdicts": verdicts, "total": len(rows), "offset": offset,
            "next_offset": following if following < len(rows) else None,
            "rows": [dict(zip(columns, row, strict=True)) for row in page]}


def report_html(folder: Path) -> str:
    """``report/index.md`` as one HTML page, each plot's SVG inline (the Markdown
    ``write_report`` writes: headings, one fenced block, images, text)."""
    e = html.escape
    lines = (folder / "index.md").read_text(encoding="utf-8").splitlines()
    title = lines[0].lstrip("# ") if lines else "Campaign"
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1em}pre{background:#f6f7f9;"
             "padding:.5em}svg{margin:.5em 1em .5em 0}</style>", "</head><body>"]
    fenced = False
    for line in lines:
        if line.startswith("```"):
            parts.append("</pre>" if fenced else "<pre>")
            fenced = not fenced
        elif fenced:
            parts.append(e(line))
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            parts.append(f"<h{level}>{e(line[level:].strip())}</h{level}>")
        elif (image := _IMAGE.match(line.strip())) is not None:
            name = image.group(2)
            path = folder / name
            if PLOT.match(name) is not None and path.is_file():
                parts.append(f'<figure data-plot="{e(name)}">'
                             + path.read_text(encoding="utf-8") + "</figure>")
            else:
                parts.append(f"<p>({e(image.group(1))}: no plot)</p>")
        elif line.strip():
            parts.append(f"<p>{e(line)}</p>")
    if fenced:
        parts.append("</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def routes(api: Api) -> list[Route]:
    runs = CampaignRuns(api)
    one = "/api/campaigns/{run}"
    ended = ("BadNotFound", "BadInvalidState")
    return [
        Route("POST", "/api/campaigns", runs.start, "runCampaign",
              "Run a campaign on the server's Dask cluster in the background, as "
              "RunCampaign (it shows under Campaigns/ in OPC UA)", "campaigns",
              role=METHOD_ROLES["RunCampaign"],
              body={"type": "object", "required": ["campaign"], "properties": {
                  "campaign": {"type": "string",
                               "description": "the campaign in TOML, or the name of a "
                                              "campaign file relative to the scenario "
                                              "folders (server.scenario_dirs)"}}},
              response=RUN, status=201,
              refusals=("BadInvalidArgument", "BadNotFound", "BadTypeMismatch",
                        "BadResourceUnavailable", "BadNotSupported")),
        Route("GET", "/api/campaigns", runs.list_runs, "listCampaignRuns",
              "The running campaign and the last finished ones, newest first (over OPC UA "
              "and REST), with their state, progress and counts", "campaigns",
              response=views.array_of(RUN)),
        Route("GET", one, runs.get_run, "getCampaignRun",
              "A campaign run: its state, progress and counts", "campaigns",
              response=RUN, refusals=("BadNotFound",)),
        Route("POST", one + "/halt", runs.halt, "haltCampaignRun",
              "Cancel the runs not finished, as its Halt (the finished ones are kept); "
              "answered when it has ended", "campaigns", role=METHOD_ROLES["Halt"],
              response=RUN, refusals=ended),
        Route("GET", one + "/runs", runs.table, "getCampaignResults",
              "The summary table: one row per run with its parameters, status and "
              "figures (paged; also while it runs)", "campaigns", response=TABLE,
              query=(Query("offset", {"type": "integer", "minimum": 0},
                           "the first row (its next_offset)"),
                     Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS},
                           f"rows at most (default {MAX_ROWS})")),
              refusals=("BadNotFound", "BadInvalidState", "BadInvalidArgument")),
        Route("GET", one + "/report", runs.report, "getCampaignReport",
              "An ended campaign's Markdown report (report/index.md)", "campaigns",
              response={"type": "string"}, media="text/markdown", refusals=ended),
        Route("GET", one + "/report.html", runs.report_html, "getCampaignReportHtml",
              "An ended campaign's report as an HTML page, its SVG plots inline",
              "campaigns", response={"type": "string"}, media="text/html", refusals=ended),
        Route("GET", one + "/plots/{plot}", runs.plot, "getCampaignPlot",
              "One SVG plot of an ended campaign's report (the names its Markdown "
              "report links)", "campaigns", response={"type": "string"},
              media="image/svg+xml", refusals=ended),
    ]
