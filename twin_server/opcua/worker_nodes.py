"""The health nodes of the session host: its worker processes, what the latest
crash was, and where each session steps.

::

    Objects/TwinServer/Diagnostics                  ns;s=Diagnostics
      Workers                                       ns;s=Diagnostics.Workers
        Host (String: "workers" or "in-process"), Workers, SparesReady,
        Sessions (UInt32), Crashes, Hangs, Replacements (UInt64),
        LastReplacementTime (Double, ms)
        Scheduling, SchedulingFallback (String)
        Names, Roles, Policies (String[]), Pids, SessionCounts (UInt32[])   one per worker
        LastCrash                                   ns;s=Diagnostics.Workers.LastCrash
          Time (DateTime; 1601-01-01: none yet), Worker, Cause, Signal (String),
          ExitCode (Int32), Pid (UInt32), Hung (Boolean), Session, Component
          (String), Tick (Int64; -1: between ticks), Sessions (String[]), Message
    Sessions/<session>/Diagnostics/
      Worker (String), WorkerPid (UInt32), Live (Boolean), Fault (String)

Values come from ``SessionHost.statistics()`` (a ``HostStatistics`` snapshot),
the sessions' frames and faults, every ``period`` seconds and at once when
``wake`` is called (the daemon does on a crash and a recovery): not per tick.
As the HIL health nodes, only changed values are written, each as a prepared
DataValue through ``write_attribute_value``.

A session's ``Live`` is False while its worker is gone (its values are the last
the worker published, each with StatusCode BadCommunicationError) and True again
once a new worker holds it; ``Worker`` is empty meanwhile. ``Fault`` is the
fault the session is Halted on (a model's, or its worker's death), empty when
there is none.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from twin_server.errors import NotFound
from twin_server.opcua.nodes import NodeBatch
from twin_server.opcua.tree import SESSIONS
from twin_server.opcua.units import engineering_units
from twin_server.runtime.host import CrashReport, HostedSession, HostStatistics

DIAGNOSTICS = "Diagnostics"
WORKERS = f"{DIAGNOSTICS}.Workers"
LAST_CRASH = f"{WORKERS}.LastCrash"
#: OPC UA's "no time" (DateTime 0): LastCrash.Time before any crash
NO_TIME = datetime(1601, 1, 1, tzinfo=UTC)
IN_PROCESS = "in-process"

_VALUE = ua.AttributeIds.Value
_UNSENT = object()
_S, _B, _U32, _U64, _I32, _I64, _D, _T = (
    ua.VariantType.String, ua.VariantType.Boolean, ua.VariantType.UInt32,
    ua.VariantType.UInt64, ua.VariantType.Int32, ua.VariantType.Int64, ua.VariantType.Double,
    ua.VariantType.DateTime)


@dataclass(frozen=True, slots=True)
class Spec:
    """One health variable: its name, type, description, and its value from the
    host's statistics (or, for a session's, from the session and the statistics)."""

    name: str
    vtype: ua.VariantType
    description: str
    get: Callable[..., Any]
    array: bool = False
    unit: str | None = None


def _crash(get: Callable[[CrashReport], Any], none: Any) -> Callable[[HostStatistics], Any]:
    def value(stats: HostStatistics) -> Any:
        return none if stats.last_crash is None else get(stats.last_crash)
    return value


WORKER_VARIABLES: tuple[Spec, ...] = (
    Spec("Host", _S, "Where sessions step: 'workers' (worker processes) or 'in-process' "
         "(server.workers = 0)", lambda s: IN_PROCESS if s.in_process else "workers"),
    Spec("Workers", _U32, "Worker processes alive, spares included",
         lambda s: s.workers),
    Spec("SparesReady", _U32, "Started, idle workers ready to take a dead worker's place "
         "at once", lambda s: s.spares),
    Spec("Sessions", _U32, "Sessions the host holds", lambda s: s.sessions),
    Spec("Crashes", _U64, "Workers that died (a signal, an exit, or killed because they "
         "hung)", lambda s: s.crashes),
    Spec("Hangs", _U64, "Of the crashes, workers killed because a Running session took "
         "no tick for server.hang_timeout", lambda s: s.hangs),
    Spec("Replacements", _U64, "Workers started (or spares taken) in a dead one's place",
         lambda s: s.replacements),
    Spec("LastReplacementTime", _D, "From noticing the latest death to its sessions "
         "served again (Halted) by the new worker, in ms",
         lambda s: s.last_replacement_seconds * 1e3, unit="ms"),
    Spec("Scheduling", _S, "What the workers ask the kernel for: 'realtime' (SCHED_FIFO) or "
         "'normal' (server.worker_scheduling); 'in-process' with server.workers = 0",
         lambda s: s.scheduling),
    Spec("SchedulingFallback", _S, "Empty when the workers got the scheduling asked for; "
         "else what they got instead, why, and how to grant it (systemd LimitRTPRIO=, "
         "docker --cap-add SYS_NICE); and each worker overloaded now (its sessions need "
         "more than its core: it dropped to normal scheduling until they do not), with "
         "its CPU share and what to do", lambda s: s.scheduling_fallback),
    Spec("Names", _S, "Each worker's name (w0.. shared, isolated-<session>, spare<n>)",
         lambda s: [w.name for w in s.processes], array=True),
    Spec("Roles", _S, "Each worker's role: shared, isolated or spare",
         lambda s: [w.role for w in s.processes], array=True),
    Spec("Policies", _S, "Each worker's scheduling as the kernel has it now: 'SCHED_FIFO "
         "priority 10', or 'SCHED_OTHER nice 0' (normal; a realtime worker is too while "
         "it runs flat out: a Step, real-time factor 0, creating a session; and while it "
         "is overloaded: SchedulingFallback)",
         lambda s: [w.policy for w in s.processes], array=True),
    Spec("Pids", _U32, "Each worker's process id",
         lambda s: [w.pid for w in s.processes], array=True),
    Spec("SessionCounts", _U32, "How many sessions each worker steps",
         lambda s: [len(w.sessions) for w in s.processes], array=True),
)

CRASH_VARIABLES: tuple[Spec, ...] = (
    Spec("Time", _T, "When the death was noticed (1601-01-01: no crash yet)",
         _crash(lambda c: datetime.fromtimestamp(c.time, UTC), NO_TIME)),
    Spec("Worker", _S, "The worker that died", _crash(lambda c: c.worker, "")),
    Spec("Pid", _U32, "Its process id", _crash(lambda c: c.pid, 0)),
    Spec("Cause", _S, "How it ended: 'died of SIGSEGV (Segmentation fault)', 'exited with "
         "code 1'", _crash(lambda c: c.cause, "")),
    Spec("Signal", _S, "The signal that ended it (SIGSEGV, SIGABRT, SIGKILL); empty for an "
         "exit", _crash(lambda c: c.signal, "")),
    Spec("ExitCode", _I32, "Its exit code (minus the signal number for a signal)",
         _crash(lambda c: c.exit_code if c.exit_code is not None else 0, 0)),
    Spec("Hung", _B, "True if the host killed it because a Running session took no tick "
         "for server.hang_timeout", _crash(lambda c: c.hung, False)),
    Spec("Session", _S, "The session it was stepping when it died (empty: between ticks)",
         _crash(lambda c: c.session, "")),
    Spec("Component", _S, "The component whose step was running (empty: between ticks)",
         _crash(lambda c: c.component, "")),
    Spec("Tick", _I64, "That session's tick (-1: between ticks)",
         _crash(lambda c: c.tick, -1)),
    Spec("Sessions", _S, "Every session it held, each Halted by its death",
         _crash(lambda c: list(c.sessions), []), array=True),
    Spec("Message", _S, "All of it in words, with what to do", _crash(lambda c: c.message, "")),
)


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a session's health variables show."""

    worker: str
    pid: int
    live: bool
    fault: str


SESSION_VARIABLES: tuple[Spec, ...] = (
    Spec("Worker", _S, "The worker process stepping this session ('in-process' with "
         "server.workers = 0; empty while its worker is being replaced)", lambda v: v.worker),
    Spec("WorkerPid", _U32, "That process's id (0 while its worker is being replaced)",
         lambda v: v.pid),
    Spec("Live", _B, "False while the session's worker is gone: its values are the last "
         "the worker published, with status BadCommunicationError", lambda v: v.live),
    Spec("Fault", _S, "The fault the session is Halted on (a model's, or its worker's "
         "death; empty: none): Reset, or Restore a snapshot, to go on", lambda v: v.fault),
)


def session_view(session: HostedSession, stats: HostStatistics) -> SessionView:
    """The health of ``session`` (NotFound if its host let go of it)."""
    frame = session.frame()
    fault = session.fault()
    if stats.in_process:
        worker, pid = IN_PROCESS, os.getpid()
    else:
        info = stats.worker_of(session.name)
        worker, pid = (info.name, info.pid) if info is not None else ("", 0)
    return SessionView(worker, pid, frame.good, "" if fault is None else str(fault))


_NO_STATISTICS = HostStatistics(0, 0, 0, 0, 0, 0, 0.0)
_NO_VIEW = SessionView("", 0, True, "")


@dataclass(slots=True)
class _Session:
    session: HostedSession
    ids: list[ua.NodeId]
    sent: list[Any]


@dataclass(slots=True)
class WorkerNodes:
    """The NodeIds of the health nodes and the values last written to them."""

    workers: list[ua.NodeId]  # aligned with WORKER_VARIABLES
    crash: list[ua.NodeId]  # aligned with CRASH_VARIABLES
    all: list[ua.NodeId]
    sessions: dict[str, _Session] = field(default_factory=dict)
    sent: dict[ua.NodeId, Any] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add_session(self, session: HostedSession, ids: list[ua.NodeId]) -> None:
        """Feed ``session``'s health variables (``build_session_health``) from now on."""
        self.sessions[session.name] = _Session(session, ids, [_UNSENT] * len(ids))
        self._wake.set()

    def remove_session(self, name: str) -> None:
        self.sessions.pop(name, None)

    def wake(self) -> None:
        """Publish now, not at the end of the period (a worker died or came back)."""
        self._wake.set()

    async def publish(self, aspace: AddressSpace, stats: HostStatistics) -> int:
        """Write the values that changed since the last publish; return how many."""
        now = datetime.now(UTC)
        changes: list[tuple[ua.NodeId, Spec, Any]] = []
        for nodeid, spec in zip([*self.workers, *self.crash],
                                (*WORKER_VARIABLES, *CRASH_VARIABLES), strict=True):
            value = spec.get(stats)
            if self.sent.get(nodeid, _UNSENT) != value:
                changes.append((nodeid, spec, value))
                self.sent[nodeid] = value
        for entry in list(self.sessions.values()):
            try:
                view = session_view(entry.session, stats)
            except NotFound:
                continue  # deleted meanwhile (remove_session follows)
            for i, (nodeid, spec) in enumerate(zip(entry.ids, SESSION_VARIABLES,
                                                   strict=True)):
                value = spec.get(view)
                if entry.sent[i] != value:
                    changes.append((nodeid, spec, value))
                    entry.sent[i] = value
        for nodeid, spec, value in changes:
            await aspace.write_attribute_value(nodeid, _VALUE, ua.DataValue(
                ua.Variant(value, spec.vtype, is_array=spec.array),
                SourceTimestamp=now, ServerTimestamp=now))
        return len(changes)

    async def run(self, aspace: AddressSpace, statistics: Callable[[], HostStatistics],
                  period: float = 0.5) -> None:
        """Publish every ``period`` seconds, and when woken, until cancelled."""
        while True:
            self._wake.clear()
            await self.publish(aspace, statistics())
            try:
                async with asyncio.timeout(period):
                    await self._wake.wait()
            except TimeoutError:
                pass


def _variables(batch: NodeBatch, parent: ua.NodeId, base: str, specs: tuple[Spec, ...],
               source: Any) -> list[ua.NodeId]:
    ids = []
    for spec in specs:
        unit = engineering_units(spec.unit) if spec.unit else None
        ids.append(batch.variable(parent, f"{base}.{spec.name}", spec.name, spec.get(source),
                                  spec.vtype, description=spec.description, array=spec.array,
                                  analog=unit is not None, unit=unit))
    return ids


def build_workers(batch: NodeBatch, root: ua.NodeId) -> WorkerNodes:
    """``Diagnostics/Workers`` below ``root`` (the TwinServer object), holding the
    values of a host with nothing yet; ``WorkerNodes.run`` keeps them current."""
    start = len(batch)
    folder = batch.folder(root, DIAGNOSTICS, DIAGNOSTICS, "The server's health")
    node = batch.object(folder, WORKERS, "Workers",
                        "The worker processes that step the sessions, and their crashes")
    workers = _variables(batch, node, WORKERS, WORKER_VARIABLES, _NO_STATISTICS)
    crash_node = batch.object(node, LAST_CRASH, "LastCrash",
                              "The latest worker death: which process, why, and what it "
                              "was stepping")
    crash = _variables(batch, crash_node, LAST_CRASH, CRASH_VARIABLES, _NO_STATISTICS)
    return WorkerNodes(workers, crash, batch.nodeids[start:])


def build_session_health(batch: NodeBatch, session: str) -> list[ua.NodeId]:
    """``Sessions.<session>.Diagnostics.{Worker, WorkerPid, Live, Fault}``, in the
    batch that builds the session (its Diagnostics folder comes first in it)."""
    base = f"{SESSIONS}.{session}.{DIAGNOSTICS}"
    return _variables(batch, batch.nodeid(base), base, SESSION_VARIABLES, _NO_VIEW)
