"""Face methods bound to a routine: a short scenario run on the face's served session
(``[faces.<name>.methods] "<method>" = { scenario = "fill.toml" }`` or ``{ steps =
[...] }``), as a machine's Fill or Drain method runs a sequence of the machine's.

A call runs the routine *live on the running session*: the scenario service's
``Runner`` (the same step semantics as ``twin-server test``) over a ``HostedTarget``,
the served session seen from the daemon's process (values from its latest frame,
time from its StepCount as ``live.LiveTarget`` counts it over OPC UA, writes through
the twin tree's write path, calls of its methods). Not the service's own runs: those
step a fresh session or a fork and leave the served one alone, while a machine's
method acts on the machine; nor steps applied directly: a served session runs on its
clock (in a worker process, say), and only it steps it.

The call answers when the routine ends, its status the verdict: Good when every
check passed, BadInvalidState otherwise with the failing check's (or the broken-off
step's) message as the diagnostic's AdditionalInfo. A NodeSet method's signature is
the machine's, so there is no output to carry a run name in; a client waits as for
the real machine's method (asyncua serves one connection's requests in order: keep
routines shorter than the clients' request timeout). A second call while the routine
runs is BadInvalidState.

``load_routine`` reads and checks a routine at start-up and in ``twin-server check``:
a scenario file not found in the scenario folders is a ConfigError at the method's
``scenario`` key of the config file; a scenario's own errors (and its names unknown
to the session's twin) name the scenario file and its key, inline steps the config
file and ``faces.<name>.methods."<method>".steps[i]...``. The routine runs on the
face's session whatever its ``[scenario]`` header names; PLC nodes and link faults
are refused (a routine acts on the session alone).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from asyncua import ua

from twin_server.config.loader import quoted_key
from twin_server.config.schema import FaceRoutine, ServerConfig
from twin_server.engine.faults import FaultSpec
from twin_server.engine.session import RunState, SessionSnapshot
from twin_server.engine.state import VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    ConfigError,
    ConfigErrors,
    InvalidArgument,
    InvalidState,
    NotFound,
    TwinServerError,
)
from twin_server.faces.routes import Lookup, WrittenLookup
from twin_server.opcua.status import GOOD, diagnostic, status_of
from twin_server.runtime import checks
from twin_server.runtime.host import Frame, HostedSession
from twin_server.scenarios.expr import Number
from twin_server.scenarios.names import TIME, Binding, PlcRef, Ref, bind
from twin_server.scenarios.results import ScenarioResult, Verdict
from twin_server.scenarios.runner import Runner, TargetStopped
from twin_server.scenarios.schema import (
    ClearFaultStep,
    ClearLinkFaultStep,
    InjectFaultStep,
    InjectLinkFaultStep,
    ScenarioFile,
    read_scenario,
    scenario_from_table,
)
from twin_server.scenarios.service import ScenarioFolders

log = structlog.get_logger(__name__)

#: wall seconds between two looks at the session's frame while a routine waits
POLL = 0.02


@dataclass(frozen=True, slots=True)
class Routine:
    """A face method's routine, read and its names bound to the session's variables."""

    key: str  # the method, as the config writes it
    scenario: ScenarioFile
    binding: Binding


def twin_variables(twin: TwinDefinition) -> list[VarKey]:
    """Every variable a session of ``twin`` has."""
    return [VarKey(c.name, v.kind, v.name) for c in twin.components for v in c.declared()]


def load_routine(face: str, key: str, routine: FaceRoutine, *, session: str,
                 server: ServerConfig,
                 base: Path, file: str, variables: Iterable[VarKey] | None,
                 errors: list[ConfigError]) -> Routine | None:
    """``routine`` read (``base``: the config file's folder, for the scenario folders)
    and bound to ``variables`` (None: the session is unknown, reported elsewhere);
    every problem appended to ``errors``."""
    where = f"faces.{quoted_key(face)}.methods.{quoted_key(key)}"
    inline = routine.steps is not None
    try:
        if routine.scenario is not None:
            try:
                path = ScenarioFolders.of(server, base).find(routine.scenario)
            except (InvalidArgument, NotFound) as exc:
                errors.append(ConfigError(str(exc), path=f"{where}.scenario", file=file))
                return None
            scenario = read_scenario(path)
        else:
            assert routine.steps is not None
            scenario = scenario_from_table(
                {"scenario": {"name": _slug(key), "session": session},
                 "steps": [dict(s) for s in routine.steps]},
                file=file)
        if variables is None:
            return None
        return Routine(key, scenario, bind(scenario, variables, live=False))
    except ConfigErrors as group:
        for error in group.exceptions:
            assert isinstance(error, ConfigError)
            errors.append(error.with_context(prefix=where) if inline and error.file == file
                          else error)
        return None


def _slug(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", key.rsplit("/", 1)[-1]).strip("_") or "routine"
    return ("r_" + name if name[0].isdigit() else name)[:48]


class HostedTarget:
    """A served session as a runner's target, seen from the daemon's process."""

    def __init__(self, hosted: HostedSession, binding: Binding, written: WrittenLookup,
                 *, poll: float = POLL) -> None:
        self.session = hosted.name
        self._hosted = hosted
        self._written = written
        self._poll = poll
        layout = hosted.layout
        self.step_size = layout.step_size
        self._positions = {k: i for i, (k, _) in enumerate(layout.variables)}
        self._reads = sorted(binding.reads.items())
        self._snapshots: dict[str, SessionSnapshot] = {}
        self._values: dict[str, Number] = {}
        self._steps = 0
        self.elapsed = 0.0
        frame = hosted.frame()
        self._count = frame.step_count
        self._read(frame)

    @property
    def values(self) -> Mapping[str, Number]:
        return self._values

    def _read(self, frame: Frame) -> None:
        self._state = frame.state
        self._steps += max(frame.step_count - self._count, 0)  # (0 after a Reset)
        self._count = frame.step_count
        self.elapsed = self._steps * self.step_size
        values: dict[str, Number] = {TIME: self.elapsed}
        for name, ref in self._reads:
            assert not isinstance(ref, PlcRef)
            value = frame.values[self._positions[ref]]
            assert not isinstance(value, str)
            values[name] = value
        self._values = values

    def _refresh(self) -> None:
        self._read(self._hosted.frame())

    async def sample(self) -> None:
        if self._state is not RunState.RUNNING:
            fault = self._hosted.fault()
            raise TargetStopped(
                f"session {self.session!r} halted on a fault: {fault}" if fault is not None
                else f"session {self.session!r} is {self._state}: time does not pass "
                     f"(start the machine first, or begin the routine with call = 'Start')")
        while True:
            await asyncio.sleep(self._poll)
            frame = self._hosted.frame()
            if frame.step_count != self._count or frame.state is not RunState.RUNNING:
                self._read(frame)
                return

    async def write(self, ref: Ref, value: Number | str) -> None:
        assert not isinstance(ref, PlcRef)
        await checks.write_value(self._hosted, ref, value, self._written())
        self._refresh()

    async def release(self, ref: Ref) -> None:
        assert not isinstance(ref, PlcRef)
        await self._hosted.release(ref)
        self._refresh()

    async def call(self, method: str, label: str) -> None:
        hosted = self._hosted
        running = self._state is RunState.RUNNING
        if method == "Snapshot":
            self._snapshots[label] = await hosted.snapshot()
        elif method == "Restore":
            snapshot = self._snapshots.get(label)
            if snapshot is None:
                raise NotFound(f"no snapshot labelled {label!r} taken in this routine "
                               f"(taken: {', '.join(self._snapshots) or 'none'})")
            if running:
                await hosted.suspend()
            await hosted.restore(snapshot)
            if running:
                await hosted.resume()
        elif method == "Reset":
            await hosted.reset()
            if running:
                await hosted.start()
        else:
            await getattr(hosted, method.lower())()
        self._refresh()

    async def inject_fault(self, step: InjectFaultStep | ClearFaultStep,
                           ref: Ref | None) -> None:
        hosted = self._hosted
        if isinstance(step, InjectFaultStep):
            assert isinstance(ref, VarKey)
            parameters = {k: float(v) for k, v in step.parameters.items()
                          if not isinstance(v, str)}
            await hosted.inject_fault(FaultSpec(
                target=f"{ref.component}.{ref.kind.folder}.{ref.name}", kind=step.kind,
                parameters=parameters, duration=step.duration, id=step.inject_fault))
        elif step.clear_fault == "*":
            await hosted.clear_faults()
        else:
            await hosted.clear_fault(step.clear_fault)
        self._refresh()

    async def link_fault(self, step: InjectLinkFaultStep | ClearLinkFaultStep) -> None:
        """Never reached: ``load_routine`` binds routines as offline scenarios."""
        raise InvalidState("a face method's routine acts on its session alone: link "
                           "faults are a live scenario's (twin-server test --endpoint)")


def outcome(result: ScenarioResult) -> tuple[ua.StatusCode, str]:
    """A routine's status (Good: passed) and the message of what failed."""
    verdict = result.verdict
    if verdict is Verdict.PASSED:
        return GOOD, ""
    bad = next((c for c in result.checks if c.verdict is Verdict.FAILED), None) \
        if result.error is None else None
    if bad is None:
        bad = next((c for c in result.checks if c.verdict is Verdict.ERROR), None)
    if result.error is not None:
        message = result.error
    elif bad is not None:
        message = f"check {bad.name!r}: {bad.describe()}"
    else:
        message = f"the routine ended {verdict}"
    return ua.StatusCode(ua.StatusCodes.BadInvalidState), f"{result.name}: {message}"


def routine_callback(face: str, routine: Routine, session: str, lookup: Lookup,
                     written: WrittenLookup, running: dict[tuple[str, str], float],
                     after: Callable[[str], Awaitable[None]] | None = None,
                     ) -> Callable[..., Awaitable[ua.CallMethodResult]]:
    """The asyncua callback of a face method bound to ``routine``; ``running``: the
    routines under way, (face, method) -> their start (``time.monotonic``)."""
    key = routine.key
    mine = (face, key)

    def refused(status: ua.StatusCode, message: str, n: int) -> ua.CallMethodResult:
        return ua.CallMethodResult(
            StatusCode=status, InputArgumentResults=[GOOD] * n,
            InputArgumentDiagnosticInfos=[diagnostic(message)] * max(n, 1))

    async def callback(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        n = len(args)
        hosted = lookup(session)
        if mine in running:
            message = (f"face {face!r}: {key} runs already (for "
                       f"{time.monotonic() - running[mine]:.1f} s); call it again once it "
                       f"ended")
            log.info("face_routine_refused", face=face, method=key, reason=message)
            return refused(ua.StatusCode(ua.StatusCodes.BadInvalidState), message, n)
        if hosted is None:
            exc = NotFound(f"face {face!r}: session {session!r}, which {key} runs on, is "
                           f"not served (deleted)")
            return refused(status_of(exc), str(exc), n)
        running[mine] = time.monotonic()
        log.info("face_routine_started", face=face, method=key, session=session,
                 scenario=routine.scenario.file)
        try:
            scenario = routine.scenario
            try:
                if scenario.header.parameters:
                    await hosted.set_parameters(scenario.header.parameters)
                target = HostedTarget(hosted, routine.binding, written)
                result = await Runner(scenario, routine.binding, target,
                                      mode="face").run()
            except TwinServerError as exc:
                return refused(status_of(exc), f"face {face!r}: {key}: {exc}", n)
        finally:
            del running[mine]
            if after is not None:
                await after(session)
        status, message = outcome(result)
        log.info("face_routine_finished", face=face, method=key, session=session,
                 verdict=str(result.verdict), sim_time=round(result.sim_time, 6),
                 wall_time=round(result.wall_time, 3), reason=message or None)
        if status.is_good():
            return ua.CallMethodResult(StatusCode=status, InputArgumentResults=[GOOD] * n)
        return refused(status, message, n)

    return callback
