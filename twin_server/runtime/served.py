"""The daemon's sessions: one record per served session, and the registry of them.

``ServedSession`` is everything that belongs to one session while the daemon
serves it (issue #14, part 9): its handle in the session host, its twin,
settings and origin, its pacer (``sinks.py``: one frame per publish period to the
publisher, the recorder and the HIL mirror), its snapshots by id, when a client
last used it, its history recorder and the watchdog's last view of its progress. The daemon
creates it with the session and drops it with the session; nothing else keeps
a map of sessions by name that must be kept in step (the OPC UA server keeps
its nodes, the recording its recorders, each keyed by the name this record
holds, added and removed by the daemon in one place).

``SessionRegistry`` is the bookkeeping behind CreateSession, DeleteSession,
DefineTwin, RemoveTwin, Fork, Snapshot, Restore and expiry: the engine's
``Registry`` (``engine/registry.py``, whose rules the engine's ``SessionManager``
applies to sessions in this process) over these records. Synchronous: the
daemon awaits the host, then records here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twin_server.engine.manager import merge_parameters as merge_parameters
from twin_server.engine.registry import Origin, Registry, Snapshots
from twin_server.engine.session import SessionSettings
from twin_server.engine.twin import TwinDefinition
from twin_server.runtime.host import HostedSession
from twin_server.runtime.sinks import Pacer

if TYPE_CHECKING:
    from twin_server.recording import Recorder


@dataclass(eq=False)
class ServedSession:
    """One served session and everything that hangs off it."""

    name: str
    twin: TwinDefinition
    settings: SessionSettings
    origin: Origin
    session: HostedSession
    #: reads the session's frame once per publish period for every sink; its task
    #: runs in the daemon's TaskGroup (``Pacer.start``) until the session goes
    pacer: Pacer
    isolated: bool = False
    last_used: float = 0.0
    snapshots: Snapshots = field(default_factory=Snapshots)
    recorder: Recorder | None = None
    #: (clock ticks, when they last moved): the watchdog's view of its progress
    progress: tuple[int, float] | None = None


class SessionRegistry(Registry[ServedSession]):
    """Every twin definition and served session of the daemon, by name."""
