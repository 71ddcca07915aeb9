"""The one interface the main process uses for a session, wherever it steps.

``SessionHost`` is a transport (httpx's ``BaseTransport``, mosaik's proxies):
``create``, ``delete``, ``call`` a command, read the latest ``frame`` and the
clock's statistics. Two implementations: ``LocalHost`` (``local.py``, the
session and its clock on the caller's event loop: ``workers = 0``) and
``WorkerHost`` (``pool.py``, the session in a worker process). ``HostedSession``
is the typed front over either: ``await hosted.write(key, 1.0)``.

Both hosts give the same behaviour: the same results, the same exceptions (with
their structured fields), the same events in the same order. A command is
answered once the session has done it; a frame read after the answer shows its
effect. Events reach the ``EventListener`` given to the host at construction,
in the order the session emitted them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from twin_server.engine.alarms import AlarmDefinition, AlarmState
from twin_server.engine.faults import FaultSpec, FaultState
from twin_server.engine.session import (
    RunState,
    SessionEvent,
    SessionSettings,
    SessionSnapshot,
    SessionStatistics,
    StepProgress,
    VarKey,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import SessionFault
from twin_server.models.base import Value, Variable
from twin_server.runtime.clock import ClockStatistics

#: ``Frame.quality`` of a frame whose values are all Good
GOOD_ONLY: Mapping[int, int] = MappingProxyType({})

#: called with the session's name and each event it emits (and the host's own:
#: a worker's crash is a ``fault`` event, its replacement a ``recovered`` one)
EventListener = Callable[[str, SessionEvent], None]


@dataclass(frozen=True, slots=True)
class SessionLayout:
    """What never changes in a hosted session: its variables, in the order of
    ``Frame.values`` (``Session.variables()``), and its fixed settings."""

    name: str
    twin: str
    step_size: float
    publish_rate: float
    variables: tuple[tuple[VarKey, Variable], ...]


@dataclass(frozen=True, slots=True)
class Frame:
    """One consistent view of a session: every value as of one tick.

    ``values`` follow ``SessionLayout.variables``. ``good`` is False while the
    session's worker is gone: the values are the last it published, ``state`` is
    Halted. ``version`` moves whenever any value may have changed (as
    ``Session.version``, but counted by the host: compare, do not do sums).
    ``steps_remaining``: ticks the Step running in the background has still to
    take (0: none runs). ``quality``: the OPC UA StatusCode (an int) of each value,
    by index, that is not Good although the session stepped it, e.g. a HIL input
    while its PLC is lost (``HostedSession.mark``): the status travels with the
    value it describes to every sink. ``forces``: see below."""

    step_count: int
    sim_time: float
    state: RunState
    realtime_factor: float
    version: int
    values: tuple[Value, ...]
    step_duration_mean: float
    step_duration_max: float
    good: bool = True
    steps_remaining: int = 0
    #: moves whenever the set of forced inputs may have changed (``Session.forces``,
    #: counted by the host): ask ``forced`` then
    forces: int = 0
    quality: Mapping[int, int] = field(default_factory=lambda: GOOD_ONLY)
    #: moves whenever the set of injected faults changes (``Session.fault_changes``,
    #: counted by the host): ask ``faults`` then
    faults: int = 0


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker process as its host sees it (``HostStatistics.processes``)."""

    name: str  # w0, w1, ... (shared), isolated-<session>, spare<n>
    pid: int
    role: str  # "shared", "isolated" or "spare" (idle, ready to take a dead one's place)
    sessions: tuple[str, ...]  # the sessions it steps, in creation order
    #: its scheduling as the kernel has it now: "SCHED_FIFO priority 10",
    #: "SCHED_OTHER nice 0" (``runtime.scheduling``)
    policy: str = ""
    #: while its paced sessions need more than its core and it dropped real-time
    #: scheduling for that (``scheduling.OverloadGuard``): the CPU share that had it
    #: drop (0.0: not overloaded)
    overload: float = 0.0


@dataclass(frozen=True, slots=True)
class CrashReport:
    """What the latest worker death was: which process, why, and where it was.

    ``session``, ``component`` and ``tick`` say what the worker was stepping when it
    died (the session whose tick it was, the component whose native code was
    running, that session's tick); all empty (tick -1) when it died between ticks.
    ``sessions`` are every session it held, each Halted by the death."""

    worker: str
    pid: int
    cause: str  # "died of SIGSEGV (Segmentation fault)", "exited with code 3"
    signal: str  # "SIGSEGV"; "" for an exit
    exit_code: int | None  # -11 for SIGSEGV, as multiprocessing reports it
    hung: bool  # killed by the host because a Running session stopped ticking
    session: str
    component: str
    tick: int
    sessions: tuple[str, ...]
    time: float  # when it was noticed, seconds since the epoch (wall clock)
    message: str  # all of it in words (the stepped session's fault, or the worker's)


@dataclass(frozen=True, slots=True)
class HostStatistics:
    """An immutable snapshot of a host's work, for the Diagnostics nodes."""

    workers: int  # worker processes alive, spares included (0 for the in-process host)
    spares: int  # of which started and idle, ready to take a crashed worker's place
    sessions: int
    crashes: int  # workers that died (hung ones killed included)
    hangs: int  # of which killed because a running session stopped ticking
    replacements: int  # workers started again after a crash
    last_replacement_seconds: float  # from noticing a death to its sessions served again
    #: every live worker process (shared, isolated, spares), in that order
    processes: tuple[WorkerInfo, ...] = ()
    last_crash: CrashReport | None = None
    #: the sessions step in the host's own process (``LocalHost``: workers = 0)
    in_process: bool = False
    #: the scheduling the workers ask for ("realtime" or "normal";
    #: ``server.worker_scheduling``), and, when they did not get it, why and how to
    #: grant it, and which worker is overloaded now, each with what to do ("" when
    #: every worker has what was asked for)
    scheduling: str = ""
    scheduling_fallback: str = ""

    def worker_of(self, session: str) -> WorkerInfo | None:
        """The worker stepping ``session`` (None: in-process, or none right now: its
        worker died and the replacement has not taken it yet)."""
        for info in self.processes:
            if session in info.sessions:
                return info
        return None


class FrameSource(Protocol):
    """What reads a session's values needs (the recorder, the HIL mirror): its
    name, layout and latest frame. ``HostedSession`` is one; ``local.SessionFrames``
    makes one of a bare in-process ``Session`` (offline use, tests)."""

    @property
    def name(self) -> str: ...

    @property
    def layout(self) -> SessionLayout: ...

    def frame(self) -> Frame: ...


class SessionHost(Protocol):
    """Where sessions step: in this process or in worker processes."""

    async def create(
        self,
        name: str,
        twin: TwinDefinition,
        settings: SessionSettings,
        *,
        snapshot: SessionSnapshot | None = None,
        isolate: bool = False,
        fault: SessionFault | None = None,
        keep_faulted: bool = False,
    ) -> SessionLayout:
        """Build the session (restored from ``snapshot`` when given, then Halted on
        ``fault`` when given: a session that had crashed before a restart) and its
        clock. The engine's refusals are raised as they are; nothing is left behind.
        With ``keep_faulted``, a session whose models fail their first Reset is built
        all the same, Halted on that fault (``fault(name)`` returns it)."""
        ...

    async def delete(self, name: str) -> None:
        """Stop the clock and close the session (its models freed). NotFound."""
        ...

    async def call(self, name: str, command: str, *args: Any) -> Any:
        """Run one command of ``commands.COMMANDS`` (or ``step``, in the background:
        ``commands.STEP``) on the session, answered with its result or the engine's
        exception."""
        ...

    def frame(self, name: str) -> Frame:
        """The latest consistent values (never blocks)."""
        ...

    def layout(self, name: str) -> SessionLayout: ...

    def fault(self, name: str) -> SessionFault | None:
        """The fault the session is Halted on, if any (a model's, or its worker's death)."""
        ...

    def recovery_snapshot(self, name: str) -> SessionSnapshot | None:
        """The latest snapshot the host holds of the session from before a fault, to
        bring it back from (None: it keeps none, or has none yet)."""
        ...

    def clock_statistics(self, name: str) -> ClockStatistics: ...

    def statistics(self) -> HostStatistics: ...

    def names(self) -> list[str]:
        """The hosted sessions, in creation order."""
        ...

    async def aclose(self) -> None:
        """Stop every clock, close every session, end every worker. Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class _Mark:
    """The status of one variable's value: ``status`` for ``value`` (any value when
    ``conditional`` is False), ``otherwise`` for any other value (the value before
    a write under way, which the frame may still show)."""

    status: int
    value: Value | None = None
    conditional: bool = False
    otherwise: int = 0


class HostedSession:
    """The typed front of one hosted session (``SessionHost.call`` underneath).

    It also holds the *quality* of values that the session steps but something in
    this process vouches for (a HIL input fed by a PLC, ``hil/mirror.py``):
    ``mark`` and ``write_marked`` set it, and every ``frame`` read through this
    front carries it (``Frame.quality``), so that a value and the status that
    describes it reach the sinks together. The daemon holds one front per served
    session, which the pacer, the publisher, the recorder and the mirror share."""

    def __init__(self, host: SessionHost, name: str) -> None:
        self.host = host
        self.name = name
        self._marks: dict[VarKey, _Mark] = {}
        self._positions: dict[VarKey, int] | None = None

    @property
    def layout(self) -> SessionLayout:
        return self.host.layout(self.name)

    def frame(self) -> Frame:
        """The latest frame, with the quality of the values marked (``mark``)."""
        frame = self.host.frame(self.name)
        if not self._marks:
            return frame
        positions = self._positions
        if positions is None:
            positions = self._positions = {
                key: i for i, (key, _) in enumerate(self.layout.variables)}
        values = frame.values
        quality: dict[int, int] = dict(frame.quality)  # (a dropout's, from the session)
        for key, mark in self._marks.items():
            i = positions[key]
            status = (mark.status if not mark.conditional or values[i] == mark.value
                      else mark.otherwise)
            if status:
                quality[i] = status
        return replace(frame, quality=MappingProxyType(quality)) if quality else frame

    def status(self, key: VarKey) -> int:
        """The status ``key``'s value is marked with (0: Good)."""
        mark = self._marks.get(key)
        return 0 if mark is None else mark.status

    def mark(self, key: VarKey, status: int) -> None:
        """From now on ``key``'s value has OPC UA StatusCode ``status`` (0: Good, the
        mark is removed), whatever it is."""
        if status:
            self._marks[key] = _Mark(status)
        else:
            self._marks.pop(key, None)

    async def write_marked(self, key: VarKey, value: Value, status: int) -> Value:
        """``write`` ``value`` to ``key``, whose value has ``status`` from then on. A
        frame read while the write is under way shows ``status`` only with ``value``
        (a worker may show the new value before its answer comes, or the old one
        after the request left): a value never carries a status that is not its
        own. On a refused write the mark stays as it was."""
        before = self._marks.get(key)
        self._marks[key] = mark = _Mark(status, value, True,
                                         0 if before is None else before.status)
        try:
            stored = await self.write(key, value)
        except BaseException:
            if self._marks.get(key) is mark:
                if before is None:
                    del self._marks[key]
                else:
                    self._marks[key] = before
            raise
        if self._marks.get(key) is mark:  # (not marked again meanwhile)
            self.mark(key, status)
        return stored

    def values(self) -> dict[VarKey, Value]:
        """The latest frame's values by key (a fresh dict)."""
        keys = [key for key, _ in self.layout.variables]
        return dict(zip(keys, self.frame().values, strict=True))

    def fault(self) -> SessionFault | None:
        return self.host.fault(self.name)

    def recovery_snapshot(self) -> SessionSnapshot | None:
        return self.host.recovery_snapshot(self.name)

    def clock_statistics(self) -> ClockStatistics:
        return self.host.clock_statistics(self.name)

    async def start(self) -> None:
        await self.host.call(self.name, "start")

    async def suspend(self) -> None:
        await self.host.call(self.name, "suspend")

    async def resume(self) -> None:
        await self.host.call(self.name, "resume")

    async def halt(self) -> None:
        await self.host.call(self.name, "halt")

    async def reset(self, parameters: Mapping[str, Mapping[str, Value]] | None = None) -> None:
        await self.host.call(self.name, "reset", parameters)

    async def step(self, count: int = 1, wait: float | None = None) -> StepProgress:
        """Step ``count`` ticks in the background (``stepping.py``): answered once the
        Step ended or after ``wait`` seconds (None: once it ended), whichever is first."""
        result: StepProgress = await self.host.call(self.name, "step", count, wait)
        return result

    async def write(self, key: VarKey, value: Value) -> Value:
        result: Value = await self.host.call(self.name, "write", key, value)
        return result

    async def release(self, key: VarKey) -> bool:
        """Stop forcing an input; whether it was forced."""
        result: bool = await self.host.call(self.name, "release", key)
        return result

    async def release_all(self) -> list[VarKey]:
        """Stop forcing every input; the ones that were forced."""
        result: list[VarKey] = await self.host.call(self.name, "release_all")
        return result

    async def forced(self) -> dict[VarKey, Value]:
        """Every forced input with its value."""
        result: dict[VarKey, Value] = await self.host.call(self.name, "forced")
        return result

    async def set_parameters(
        self, overrides: Mapping[str, Mapping[str, Value]]
    ) -> dict[str, dict[str, Value]]:
        result: dict[str, dict[str, Value]] = await self.host.call(
            self.name, "set_parameters", overrides)
        return result

    async def set_realtime_factor(self, factor: float) -> None:
        await self.host.call(self.name, "set_realtime_factor", factor)

    async def snapshot(self) -> SessionSnapshot:
        result: SessionSnapshot = await self.host.call(self.name, "snapshot")
        return result

    async def restore(self, snapshot: SessionSnapshot) -> None:
        await self.host.call(self.name, "restore", snapshot)

    async def statistics(self) -> SessionStatistics:
        result: SessionStatistics = await self.host.call(self.name, "statistics")
        return result

    async def inject_fault(self, spec: FaultSpec) -> str:
        """Inject a fault (``engine.faults``); its id."""
        result: str = await self.host.call(self.name, "inject_fault", spec)
        return result

    async def clear_fault(self, fault_id: str) -> None:
        await self.host.call(self.name, "clear_fault", fault_id)

    async def clear_faults(self) -> list[str]:
        """End every injected fault; their ids."""
        result: list[str] = await self.host.call(self.name, "clear_faults")
        return result

    async def faults(self) -> list[FaultState]:
        """The active faults, in the order they apply."""
        result: list[FaultState] = await self.host.call(self.name, "faults")
        return result

    async def emit(self, kind: str, message: str, severity: int = 100) -> None:
        """Emit an event through the session (the daemon's ``created``, ``expired``)."""
        await self.host.call(self.name, "emit", kind, message, severity)

    async def alarm(self, name: str, action: str, event: bytes | None = None,
                    comment: str = "", user: str = "", shelving_time: float = 0.0,
                    wall: float = 0.0) -> AlarmState:
        """Acknowledge, Confirm, AddComment, Enable, Disable, TimedShelve, OneShotShelve
        or Unshelve one of the session's alarms (``Session.alarm``); its new condition."""
        result: AlarmState = await self.host.call(self.name, "alarm", name, action, event,
                                                  comment, user, shelving_time, wall)
        return result

    async def alarm_definitions(self) -> tuple[AlarmDefinition, ...]:
        """Every alarm of the session as defined."""
        result: tuple[AlarmDefinition, ...] = await self.host.call(self.name,
                                                                   "alarm_definitions")
        return result

    async def alarm_states(self) -> tuple[AlarmState, ...]:
        """Every alarm's condition as it is now."""
        result: tuple[AlarmState, ...] = await self.host.call(self.name, "alarm_states")
        return result
