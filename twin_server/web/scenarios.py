"""The REST API's scenario runs: a scenario file run offline on the server, its
verdicts, its JUnit XML and its Markdown report.

``POST /api/scenarios`` takes a scenario file's text (TOML, as ``twin-server
test`` reads it: ``scenarios/schema.py``) and runs it offline
(``scenarios/offline.py``: a fresh session of the named twin or config session,
faster than real time, deleted afterwards) against this daemon's twins, those
defined by clients included; the file's own ``config`` key is not read. Every
error of the file comes back at once (422 BadConfigurationError, with file, key
and column) and nothing runs.

Ticks first: a run steps its private session on a thread of its own, with its
own event loop, never on the daemon's loop, where the sessions of ``workers =
0`` tick and the OPC UA clients are served (the interpreter's lock is shared: a
run takes at most its switch interval, 5 ms, at a time). The POST answers when
the run ends or after ``wait`` seconds (then ``state`` is ``running``: ask
``GET /api/scenarios/{id}`` again). The daemon keeps the latest ``MAX_RUNS``
runs in memory (a restart forgets them); ``DELETE`` stops a running one and
forgets it. Running one needs the operator's role (it costs the server CPU),
reading them the viewer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from twin_server.errors import InvalidArgument, InvalidState, NotFound, ResourceExhausted
from twin_server.scenarios.offline import Prepared, prepare, run_prepared
from twin_server.scenarios.results import ScenarioResult
from twin_server.scenarios.schema import parse_scenario
from twin_server.security.roles import Role
from twin_server.web import views
from twin_server.web.api import Api, _field, user_of
from twin_server.web.routes import Route

log = structlog.get_logger(__name__)

#: runs kept (the oldest finished one goes first)
MAX_RUNS = 50
#: runs at once (each a thread stepping a session as fast as it can)
MAX_RUNNING = 2
#: seconds a POST waits for its run at most
MAX_WAIT = 60.0
#: seconds the server's stop waits for the runs it stopped
STOP_WAIT = 2.0


@dataclass(eq=False)
class Run:
    """One scenario run and what it found."""

    id: str
    name: str
    file: str
    user: str
    started: float  # s since the epoch
    result: ScenarioResult | None = None
    error: str | None = None  # it could not run (a crash of the runner itself)
    cancelled: bool = False
    ended: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[ScenarioResult] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        if not self.done.is_set():
            return "running"
        if self.cancelled:
            return "cancelled"
        if self.result is None:
            return "error"
        return str(self.result.verdict)

    def cancel(self) -> None:
        with self._lock:
            if self.ended is not None:
                return  # (ended already: its verdict stands)
            self.cancelled = True
            if self._loop is not None and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)

    def view(self) -> dict[str, Any]:
        result = self.result
        found: dict[str, Any] = {
            "id": self.id, "name": self.name, "file": self.file, "user": self.user,
            "state": self.state, "started": self.started, "ended": self.ended,
            "summary": result.summary() if result is not None else None,
            "error": self.error if result is None else result.error,
        }
        if result is not None:
            found.update(
                session=result.session, seed=result.seed, sim_time=result.sim_time,
                wall_time=result.wall_time,
                steps=[{"index": s.index, "label": s.label, "started": s.started,
                        "ended": s.ended, "outcome": s.outcome, "message": s.message}
                       for s in result.steps],
                checks=[{"name": c.name, "step": c.step, "condition": c.condition,
                         "mode": c.mode, "verdict": str(c.verdict), "message": c.message,
                         "decided": c.decided} for c in result.checks])
        return found


RUN: dict[str, Any] = {
    "type": "object", "required": ["id", "name", "state"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "file": {"type": "string"},
        "user": {"type": "string"},
        "state": {"type": "string",
                  "enum": ["running", "passed", "failed", "error", "cancelled"]},
        "started": {"type": "number"}, "ended": {"type": "number", "nullable": True},
        "summary": {"type": "string", "nullable": True},
        "error": {"type": "string", "nullable": True},
        "session": {"type": "string"}, "seed": {"type": "integer", "nullable": True},
        "sim_time": {"type": "number"}, "wall_time": {"type": "number"},
        "steps": {"type": "array", "items": {"type": "object"}},
        "checks": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "condition": {"type": "string"},
            "mode": {"type": "string"}, "verdict": {"type": "string"},
            "message": {"type": "string"}}}},
    },
}


class ScenarioRuns:
    """The runs of one daemon, each on its own thread."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.runs: dict[str, Run] = {}
        self._threads: set[threading.Thread] = set()

    # -- routes ------------------------------------------------------------------------

    async def start(self, request: web.Request) -> web.Response:
        body = await self.api.body(request, "max_definition_size")
        text = _field(body, "scenario", str)
        seed = _field(body, "seed", int, default=None)
        wait = _field(body, "wait", float, default=10.0)
        if not 0 <= wait <= MAX_WAIT:
            raise InvalidArgument(f"wait must be within [0, {MAX_WAIT:g}] s (got {wait:g})")
        running = sum(not r.done.is_set() for r in self.runs.values())
        if running >= MAX_RUNNING:
            raise ResourceExhausted(
                f"{running} scenario runs are running already (at most {MAX_RUNNING} at "
                f"once): wait for one to end, or stop one (DELETE /api/scenarios/<id>)")
        file = _field(body, "file", str, default="<request>")[:200]
        scenario = parse_scenario(text, file=file)  # (ConfigErrors: 422, every error)
        daemon = self.api.daemon
        loaded = dataclasses.replace(daemon.loaded, twins=dict(daemon.manager.twins))
        run = Run(secrets.token_hex(8), scenario.name, file, user_of(request).name or
                  "anonymous", time.time())
        # (a fresh session: its models are made here, FMUs loaded; ConfigErrors: 422)
        prepared = await asyncio.to_thread(prepare, scenario, loaded, seed=seed,
                                           name=f"scenario_{run.id}")
        self._keep(run)
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._thread, args=(run, prepared, loop),
                                  name=f"scenario-{run.id}", daemon=True)
        self._threads.add(thread)
        run.thread = thread
        thread.start()
        log.info("scenario_run_started", run=run.id, scenario=run.name, user=run.user)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await run.done.wait()
        return web.json_response(run.view(), status=201)

    async def list_runs(self, request: web.Request) -> web.Response:
        return web.json_response([r.view() for r in reversed(self.runs.values())])

    def _run(self, request: web.Request) -> Run:
        key = request.match_info["run"]
        run = self.runs.get(key)
        if run is None:
            raise NotFound(f"no scenario run {key[:40]!r} (the server keeps the latest "
                           f"{MAX_RUNS}: GET /api/scenarios lists them)")
        return run

    def _result(self, request: web.Request) -> tuple[Run, ScenarioResult]:
        run = self._run(request)
        if run.result is None:
            raise InvalidState(f"scenario run {run.id} is {run.state}: it has no report"
                               + (" yet" if run.state == "running" else ""))
        return run, run.result

    async def get_run(self, request: web.Request) -> web.Response:
        return web.json_response(self._run(request).view())

    async def junit(self, request: web.Request) -> web.Response:
        from twin_server.scenarios.junit import junit_text

        _, result = self._result(request)
        return web.Response(text=junit_text([result]), content_type="application/xml")

    async def report(self, request: web.Request) -> web.Response:
        from twin_server.scenarios.report import scenario_markdown

        _, result = self._result(request)
        return web.Response(text=scenario_markdown(result), content_type="text/markdown")

    async def delete(self, request: web.Request) -> web.Response:
        run = self._run(request)
        run.cancel()
        async with asyncio.timeout(STOP_WAIT):
            await run.done.wait()
            while run.thread is not None and run.thread.is_alive():
                await asyncio.sleep(0.005)
        self.runs.pop(run.id, None)
        return web.Response(status=204)

    # -- the runs' threads ---------------------------------------------------------------

    def _keep(self, run: Run) -> None:
        self.runs[run.id] = run
        while len(self.runs) > MAX_RUNS:
            oldest = next((r for r in self.runs.values() if r.done.is_set()), None)
            if oldest is None:
                break
            del self.runs[oldest.id]

    def _thread(self, run: Run, prepared: Prepared, loop: asyncio.AbstractEventLoop) -> None:
        async def main() -> ScenarioResult:
            with run._lock:
                run._loop = asyncio.get_running_loop()
                run._task = asyncio.current_task()
                if run.cancelled:
                    raise asyncio.CancelledError
            return await run_prepared(prepared, mode="server")

        try:
            run.result = asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # (the runner's own failure: a step's is in the result)
            log.exception("scenario_run_failed", run=run.id)
            run.error = f"the scenario runner failed: {type(exc).__name__}: {exc}"
        finally:
            prepared.session.close()  # (idempotent: run_prepared closes it once started)
            with run._lock:
                run.ended = time.time()
                run._loop = run._task = None
            with contextlib.suppress(RuntimeError):  # (the daemon's loop closed)
                loop.call_soon_threadsafe(self._ended, run)

    def _ended(self, run: Run) -> None:
        run.done.set()
        self._threads = {t for t in self._threads if t.is_alive()}
        log.info("scenario_run_ended", run=run.id, scenario=run.name, state=run.state,
                 summary=run.result.summary() if run.result is not None else run.error)

    async def stop(self) -> None:
        """Stop every run and wait for its thread (at most ``STOP_WAIT`` s)."""
        for run in self.runs.values():
            if not run.done.is_set():
                run.cancel()
        async with asyncio.timeout(STOP_WAIT):
            while any(t.is_alive() for t in self._threads):
                await asyncio.sleep(0.01)


def routes(api: Api) -> list[Route]:
    runs = ScenarioRuns(api)
    api.closers.append(runs.stop)
    one = "/api/scenarios/{run}"
    return [
        Route("POST", "/api/scenarios", runs.start, "runScenario",
              "Run a scenario file offline on the server (its text); answered when it "
              "ends or after wait seconds", "scenarios", role=Role.OPERATOR,
              body={"type": "object", "required": ["scenario"], "properties": {
                  "scenario": {"type": "string", "description": "the scenario file, TOML"},
                  "file": {"type": "string", "description": "its name, for the reports"},
                  "seed": {"type": "integer"},
                  "wait": {"type": "number", "minimum": 0, "maximum": MAX_WAIT}}},
              response=RUN, status=201,
              refusals=("BadConfigurationError", "BadInvalidArgument", "BadTypeMismatch",
                        "BadResourceUnavailable")),
        Route("GET", "/api/scenarios", runs.list_runs, "listScenarioRuns",
              "The latest scenario runs, newest first", "scenarios",
              response=views.array_of(RUN)),
        Route("GET", one, runs.get_run, "getScenarioRun", "A run: its state and verdicts",
              "scenarios", response=RUN, refusals=("BadNotFound",)),
        Route("GET", one + "/junit", runs.junit, "getScenarioJunit",
              "A finished run's JUnit XML", "scenarios",
              response={"type": "string"}, media="application/xml",
              refusals=("BadNotFound", "BadInvalidState")),
        Route("GET", one + "/report", runs.report, "getScenarioReport",
              "A finished run's Markdown report", "scenarios",
              response={"type": "string"}, media="text/markdown",
              refusals=("BadNotFound", "BadInvalidState")),
        Route("DELETE", one, runs.delete, "deleteScenarioRun",
              "Stop a run (if it runs) and forget it", "scenarios", role=Role.OPERATOR,
              status=204, refusals=("BadNotFound",)),
    ]
