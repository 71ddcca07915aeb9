"""Scenario runs on the daemon (``RunScenario``): each in a thread of its own, on a
fresh in-process session that never touches a served one, so that runs never hold
up the daemon's ticks.

A run is the offline runner (``offline.prepare`` on the daemon's loaded config,
``SessionTarget``), so the same scenario and seed give the same trace and verdicts
as ``twin-server test --config``. With ``fork`` the run starts instead from the
current state of a served session (a snapshot of it, restored into a fresh
session of its twin and settings): what-if tests of a running plant that leave it
alone. Live runs (HIL peers, real time) are ``twin-server test --endpoint``'s.

The scenario is TOML text or the name of a file below the scenario folders
(``server.scenario_dirs``, relative entries against the config file's folder;
default: the config file's folder and its subfolders, as ``server.fmu_dirs``):
a name that resolves outside them (``..``, an absolute path, a symlink out) is
refused, so that a client reads no other file through it.

The service keeps every running run and the last ``server.scenario_reports``
finished ones (``ScenarioRun``: state, current step, checks, reports); the OPC
UA layer (``opcua/scenario_nodes.py``) shows them and hears of each start and end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from twin_server.config.schema import ServerConfig
from twin_server.engine.session import RunState, Session, SessionSettings, SessionSnapshot
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    ConfigErrors,
    InvalidArgument,
    InvalidState,
    NotFound,
    ResourceExhausted,
    TwinServerError,
)
from twin_server.runtime.checks import ArgumentRefused
from twin_server.runtime.compile import LoadedConfig
from twin_server.runtime.served import ServedSession
from twin_server.scenarios.junit import junit_text
from twin_server.scenarios.names import bind
from twin_server.scenarios.offline import Prepared, SessionTarget, prepare, scenario_parameters
from twin_server.scenarios.report import scenario_markdown
from twin_server.scenarios.results import CheckResult, ScenarioResult, Trace, Verdict
from twin_server.scenarios.runner import Progress, Runner, TargetStopped
from twin_server.scenarios.schema import ScenarioFile, config_errors, parse_scenario

log = structlog.get_logger(__name__)

SETTING = "server.scenario_dirs"
#: ticks between two moments a run's thread lets go of the GIL (the daemon's loop and
#: in-process clocks wait at most this long for it, not the interpreter's 5 ms)
GIL_EVERY = 16
#: seconds the thread then sleeps: long enough that a thread waiting for the GIL
#: gets it (a bare sleep(0) hands it back at once more often than not)
GIL_PAUSE = 50e-6
#: runs at once; more are refused (BadResourceUnavailable)
MAX_RUNNING = 4


@dataclass(frozen=True, slots=True)
class RunOptions:
    """RunScenario's Options (JSON): ``{"seed": 7, "fork": "tank"}``, each optional."""

    seed: int | None = None
    fork: str | None = None

    @classmethod
    def parse(cls, text: str) -> RunOptions:
        if not text.strip():
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"RunScenario Options is JSON, e.g. {{\"seed\": 7, \"fork\": "
                                  f"\"tank\"}} (line {exc.lineno}, column {exc.colno}: "
                                  f"{exc.msg})") from None
        if not isinstance(raw, dict):
            raise InvalidArgument(f"RunScenario Options is a JSON object such as "
                                  f"{{\"seed\": 7}} (got {type(raw).__name__})")
        unknown = sorted(set(raw) - {"seed", "fork"})
        if unknown:
            raise InvalidArgument(f"RunScenario Options: unknown key(s) {', '.join(unknown)} "
                                  f"(known: seed, fork)")
        seed, fork = raw.get("seed"), raw.get("fork")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not -(2**31) <= seed < 2**31):
            raise InvalidArgument(f"RunScenario Options seed is a 32-bit integer (got {seed!r})")
        if fork is not None and (not isinstance(fork, str) or not fork.isidentifier()):
            raise InvalidArgument(f"RunScenario Options fork names a served session "
                                  f"(got {fork!r})")
        return cls(seed, fork)


@dataclass(frozen=True, slots=True)
class ScenarioFolders:
    """The folders scenario files may be read from (resolved at each lookup)."""

    folders: tuple[Path, ...]
    default: bool = False

    @classmethod
    def of(cls, server: ServerConfig, base_dir: Path | None) -> ScenarioFolders:
        base = (base_dir if base_dir is not None else Path.cwd()).absolute()
        entries = server.scenario_dirs
        if entries is None:
            return cls((base,), default=True)
        return cls(tuple(base / entry for entry in entries))

    def describe(self) -> str:
        if self.default:
            return (f"{SETTING} is not set: only the config file's folder "
                    f"{str(self.folders[0])!r} and its subfolders")
        if not self.folders:
            return f"{SETTING} = [] allows none"
        return f"{SETTING}: {', '.join(repr(str(f)) for f in self.folders)}"

    def find(self, name: str) -> Path:
        """The file ``name`` (relative, below one of the folders); InvalidArgument for
        a name that leads outside them, NotFound for none there."""
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise InvalidArgument(
                f"scenario file {name!r}: a name relative to the scenario folders, without "
                f"'..' ({self.describe()})")
        for folder in self.folders:
            try:
                top = folder.resolve(strict=True)
                real = (folder / relative).resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if not real.is_relative_to(top):
                raise InvalidArgument(
                    f"scenario file {name!r} leads out of {str(top)!r} (a symlink?); only "
                    f"files inside the scenario folders are read ({self.describe()})")
            if real.is_file():
                return real
        raise NotFound(f"no scenario file {name!r} in the scenario folders "
                       f"({self.describe()}); give the path relative to one of them, e.g. "
                       f"'scenarios/{relative.name}', or the scenario's TOML text")


def read_argument(text: str, folders: ScenarioFolders, label: str = "RunScenario"
                  ) -> ScenarioFile:
    """RunScenario's Scenario argument: TOML text (it has a newline or a '[') or a
    file name below ``folders``; InvalidArgument with every error (file, key, column).
    ``label``: the file name of a text in the reports."""
    if "\n" in text or "[" in text:
        file, source, path = label, text, None
    else:
        if not text.strip():
            raise InvalidArgument("RunScenario Scenario is a scenario in TOML, or the name of "
                                  "a scenario file (e.g. 'scenarios/tank_setpoint_step.toml'); "
                                  "got an empty text")
        path = folders.find(text.strip())
        file = text.strip()
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"scenario file {file!r} cannot be read: {exc}") from None
    try:
        return parse_scenario(source, file=file, path=path)
    except ConfigErrors as group:
        raise InvalidArgument(_errors_text(group)) from None


def _errors_text(group: ConfigErrors) -> str:
    errors = config_errors(group)
    return f"{len(errors)} error(s) in the scenario:\n" + "\n".join(str(e) for e in errors)


class Daemonish(Protocol):
    """What the service needs of the daemon (``runtime.daemon.Daemon``)."""

    @property
    def loaded(self) -> LoadedConfig: ...

    @property
    def sessions(self) -> Mapping[str, ServedSession]: ...


@dataclass(slots=True)
class ScenarioRun:
    """One run of a scenario: what its nodes show. The thread writes the runner's
    records; the loop reads them (a float or a reference at a time)."""

    name: str
    scenario: ScenarioFile
    options: RunOptions
    session: str  # what it runs on: "<session> (fresh)", "fork of <session>"
    state: RunState = RunState.RUNNING
    started: float = field(default_factory=time.time)
    runner: Runner | None = None
    result: ScenarioResult | None = None
    junit: str = ""
    markdown: str = ""
    #: who started it (the OPC UA or REST user, "anonymous"; "" for the server itself)
    user: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    #: why it was cancelled (the run's error then)
    cancel_reason: str = "the run was cancelled: the server is stopping"
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def halt(self, reason: str) -> None:
        """Stop the run at its next tick (its verdict is then error, with ``reason``);
        InvalidState once it has ended."""
        if self.result is not None or self.cancel.is_set():
            raise InvalidState(f"scenario run {self.name!r} has ended already "
                               f"({self.verdict}); nothing to halt")
        self.cancel_reason = reason
        self.cancel.set()

    @property
    def total(self) -> int:
        return len(self.scenario.steps)

    @property
    def step_index(self) -> int:
        """The step running now (-1 before the first, and once the run ended)."""
        if self.runner is None or self.result is not None:
            return -1
        current = self.runner.current
        return current.index if current is not None else -1

    @property
    def current_step(self) -> str:
        if self.runner is None or self.result is not None:
            return ""
        current = self.runner.current
        return current.label if current is not None else ""

    @property
    def progress(self) -> float:
        """Per cent of the steps done (100 once ended)."""
        if self.result is not None:
            return 100.0
        if self.runner is None or not self.total:
            return 0.0
        return 100.0 * self.runner.steps_done / self.total

    @property
    def sim_time(self) -> float:
        if self.result is not None:
            return self.result.sim_time
        return self.runner.target.elapsed if self.runner is not None else 0.0

    @property
    def verdict(self) -> str:
        """running, passed, failed or error."""
        return "running" if self.result is None else str(self.result.verdict)

    @property
    def checks(self) -> list[CheckResult]:
        if self.result is not None:
            return self.result.checks
        if self.runner is None:
            return [CheckResult(p.check_name, p.index, getattr(p.step, "check", ""),
                                getattr(p.step, "mode", "now"), ())
                    for p in self.scenario.checks]
        return list(self.runner.checks.values())


class ServerTarget(SessionTarget):
    """The offline target in a run's thread: lets go of the GIL every ``GIL_EVERY``
    ticks and stops when the run is cancelled. The trace is the offline one."""

    def __init__(self, session: Session, prepared: Prepared, run: ScenarioRun) -> None:
        super().__init__(session, prepared.binding)
        self._run = run
        self._count = 0

    async def sample(self) -> None:
        if self._run.cancel.is_set():
            raise TargetStopped(self._run.cancel_reason)
        await super().sample()
        self._count += 1
        if not self._count % GIL_EVERY:
            time.sleep(GIL_PAUSE)  # (lets go of the GIL: a waiting thread takes it)


Listener = Callable[[ScenarioRun], Awaitable[None]]


class ScenarioService:
    """Starts, runs and keeps scenario runs (``serve`` owns their tasks)."""

    def __init__(self, daemon: Daemonish, *, keep: int = 20) -> None:
        self._daemon = daemon
        self.keep = keep
        self.runs: collections.OrderedDict[str, ScenarioRun] = collections.OrderedDict()
        self._numbers = itertools.count(1)
        self._tasks: asyncio.TaskGroup | None = None
        self._ready = asyncio.Event()
        #: told of a run's start (its nodes are built) and of its end
        self.on_started: list[Listener] = []
        self.on_finished: list[Listener] = []
        #: told of a finished run's removal (beyond ``keep``)
        self.on_removed: list[Listener] = []

    def folders(self) -> ScenarioFolders:
        loaded = self._daemon.loaded
        return ScenarioFolders.of(loaded.config.server,
                                  loaded.path.parent if loaded.path is not None else None)

    @property
    def running(self) -> list[ScenarioRun]:
        return [r for r in self.runs.values() if r.result is None]

    async def serve(self) -> None:
        """Own the runs' tasks until cancelled; a cancellation cancels the runs (each
        thread stops at its next tick)."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                self._ready.set()
                await asyncio.Event().wait()
        finally:
            self._tasks = None
            for run in self.runs.values():
                run.cancel.set()

    async def run_scenario(self, scenario: str, options: str = "", *, user: str = "",
                           label: str = "RunScenario") -> ScenarioRun:
        """RunScenario(Scenario, [Options]) over OPC UA and REST alike: the arguments
        read (``RunOptions.parse``, ``read_argument`` with the folders' rules) and
        the run started; a refusal names its argument (``checks.ArgumentRefused``:
        0 the scenario, 1 the options)."""
        try:
            parsed_options = RunOptions.parse(options)
        except InvalidArgument as exc:
            raise ArgumentRefused(1, exc) from None
        try:
            parsed = read_argument(scenario, self.folders(), label)
        except (InvalidArgument, NotFound) as exc:
            raise ArgumentRefused(0, exc) from None
        try:
            return await self.start(parsed, parsed_options, user=user)
        except InvalidArgument as exc:
            raise ArgumentRefused(0, exc) from None
        except NotFound as exc:
            raise ArgumentRefused(1, exc) from None

    def get(self, name: str) -> ScenarioRun:
        """The run ``name`` (NotFound: the service keeps the running ones and the last
        ``keep`` finished)."""
        run = self.runs.get(name)
        if run is None:
            raise NotFound(f"no scenario run {name[:60]!r} (the server keeps the running "
                           f"ones and the last {self.keep} finished: Scenarios/ lists them)")
        return run

    async def start(self, scenario: ScenarioFile, options: RunOptions, *,
                    user: str = "") -> ScenarioRun:
        """Prepare a run and start it; the run (its nodes are built by the
        ``on_started`` listeners before this returns). InvalidArgument for names the
        twin lacks (every error, with file and key), NotFound for an unknown session
        to fork, ResourceExhausted beyond MAX_RUNNING runs at once."""
        if len(self.running) >= MAX_RUNNING:
            raise ResourceExhausted(
                f"{MAX_RUNNING} scenario runs are running already "
                f"({', '.join(r.name for r in self.running)}); wait for one to end")
        if self._tasks is None:
            raise TwinServerError("scenario runs are not served (the daemon is not running)")
        number = next(self._numbers)
        name = f"{_slug(scenario.name)}_{number}"
        try:
            if options.fork is not None:
                record = self._daemon.sessions.get(options.fork)
                if record is None:
                    raise NotFound(
                        f"RunScenario Options fork: no session {options.fork!r} is served "
                        f"(served: {', '.join(sorted(self._daemon.sessions)) or 'none'})")
                twin, settings = record.twin, record.settings
                snapshot = await record.session.snapshot()
                prepared = await asyncio.to_thread(_prepare_fork, scenario, twin, settings,
                                                   snapshot, options.seed, name)
                on = f"a fork of session {options.fork!r} at tick {snapshot.step_count}"
            else:
                loaded = self._daemon.loaded
                prepared = await asyncio.to_thread(prepare, scenario, loaded,
                                                   seed=options.seed, name=name)
                on = (f"a fresh session like {scenario.header.session!r}"
                      if scenario.header.session else
                      f"a fresh session of twin {scenario.header.twin!r}")
        except ConfigErrors as group:
            raise InvalidArgument(_errors_text(group)) from None
        run = ScenarioRun(name, scenario, options, on, user=user)
        self.runs[name] = run
        for listener in self.on_started:
            await listener(run)
        self._tasks.create_task(self._run(run, prepared), name=f"scenario-{name}")
        log.info("scenario_started", run=name, scenario=scenario.name, file=scenario.file,
                 seed=prepared.seed, on=on)
        return run

    async def _run(self, run: ScenarioRun, prepared: Prepared) -> None:
        thread = asyncio.ensure_future(asyncio.to_thread(_run_in_thread, run, prepared))
        try:
            result = await asyncio.shield(thread)
        except asyncio.CancelledError:
            # the thread cannot be cancelled: it stops at its next tick (ServerTarget)
            run.cancel.set()
            with contextlib.suppress(Exception):
                await thread
            raise
        except Exception as exc:  # (the runner catches what a step raises: a bug here)
            log.exception("scenario_failed", run=run.name)
            result = ScenarioResult(run.scenario.name, run.scenario.file, "server",
                                    run.session, [], [], run.runner.trace if run.runner
                                    else _empty_trace(), error=f"the run failed: {exc}",
                                    seed=prepared.seed)
        run.junit = junit_text([result])
        run.markdown = scenario_markdown(result)
        run.result = result
        run.state = RunState.HALTED
        run.done.set()
        log.info("scenario_finished", run=run.name, verdict=str(result.verdict),
                 sim_time=result.sim_time, wall_time=round(result.wall_time, 3))
        for listener in self.on_finished:
            await listener(run)
        await self._trim()

    async def _trim(self) -> None:
        finished = [r for r in self.runs.values() if r.result is not None]
        for run in finished[:max(len(finished) - self.keep, 0)]:
            del self.runs[run.name]
            for listener in self.on_removed:
                await listener(run)

    def __iter__(self) -> Iterator[ScenarioRun]:
        return iter(list(self.runs.values()))


def _empty_trace() -> Trace:
    return Trace(())


def _run_in_thread(run: ScenarioRun, prepared: Prepared) -> ScenarioResult:
    async def main() -> ScenarioResult:
        session = prepared.session
        try:
            target = ServerTarget(session, prepared, run)
            runner = Runner(prepared.scenario, prepared.binding, target, mode="server",
                            seed=prepared.seed, listener=_ignore)
            run.runner = runner
            return await runner.run()
        finally:
            session.close()
    return asyncio.run(main())


def _ignore(_: Progress) -> None:
    return None


def _prepare_fork(scenario: ScenarioFile, twin: TwinDefinition, settings: SessionSettings,
                  snapshot: SessionSnapshot, seed: int | None, name: str) -> Prepared:
    """A fresh session of ``twin`` in ``snapshot``'s state, with the scenario's
    parameters on top (tunable ones at once, fixed ones at a Reset step)."""
    seed = seed if seed is not None else scenario.header.seed
    settings = dataclasses.replace(settings, realtime_factor=0.0, parameters=None,
                                   autostart=False)
    if scenario.header.step_size is not None and scenario.header.step_size != settings.step_size:
        raise InvalidArgument(
            f"{scenario.file}: scenario.step_size: a fork steps as its source does "
            f"({settings.step_size!r} s, not {scenario.header.step_size!r} s); leave "
            f"step_size out of a scenario run on a fork")
    session = Session(name, twin, settings)
    try:
        session.restore(snapshot)
        overrides = scenario_parameters(scenario, twin, seed)
        if overrides:
            session.set_parameters(overrides)
        if session.state is RunState.SUSPENDED:
            session.resume()
        binding = bind(scenario, (key for key, _ in session.variables()), live=False)
    except BaseException:
        session.close()
        raise
    return Prepared(scenario, session, binding, seed)


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "scenario"
    return ("s_" + slug if slug[0].isdigit() else slug)[:48]


def counts(run: ScenarioRun) -> Mapping[Verdict, int]:
    result = dict.fromkeys(Verdict, 0)
    for check in run.checks:
        result[check.verdict] += 1
    return result
