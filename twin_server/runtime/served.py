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
DefineTwin, RemoveTwin, Fork, Snapshot, Restore and expiry, as the engine's
``SessionManager`` is for sessions in this process: the same names, limits,
snapshot ids and expiry rules (``engine/manager.py`` documents them), over
hosted sessions. Synchronous: the daemon awaits the host, then records here.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twin_server.engine.manager import MAX_SNAPSHOTS, ManagerStatistics, Origin, check_name
from twin_server.engine.session import SessionSettings, SessionSnapshot
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    NotFound,
    ResourceExhausted,
)
from twin_server.models.base import Value
from twin_server.runtime.host import HostedSession
from twin_server.runtime.sinks import Pacer

if TYPE_CHECKING:
    from twin_server.recording import Recorder

Overrides = Mapping[str, Mapping[str, Value]]


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
    snapshots: collections.OrderedDict[str, SessionSnapshot] = field(
        default_factory=collections.OrderedDict)
    snapshot_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    recorder: Recorder | None = None
    #: (clock ticks, when they last moved): the watchdog's view of its progress
    progress: tuple[int, float] | None = None


def merge_parameters(settings: SessionSettings, parameters: Overrides | None) -> SessionSettings:
    """``settings`` with ``parameters`` on top of its own (per parameter), as
    ``SessionManager.create`` merges them; InvalidArgument for a malformed mapping."""
    if not parameters:
        return settings
    if not isinstance(parameters, Mapping):
        raise InvalidArgument(f"parameters must map component -> parameter -> value "
                              f"(got {type(parameters).__name__})")
    merged: dict[str, dict[str, Value]] = {
        c: dict(v) for c, v in (settings.parameters or {}).items()}
    for cname, values in parameters.items():
        if not isinstance(values, Mapping):
            raise InvalidArgument(
                f"the parameters of component {cname!r} must map parameter -> value "
                f"(got {type(values).__name__} {values!r})")
        merged.setdefault(cname, {}).update(values)
    return dataclasses.replace(settings, parameters=merged)


class SessionRegistry:
    """Every twin definition and served session of the daemon, by name."""

    def __init__(self, twins: Mapping[str, TwinDefinition], *, max_sessions: int = 100,
                 idle_timeout: float = 3600.0, max_snapshots: int = MAX_SNAPSHOTS,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.max_snapshots = max_snapshots
        self._now = now
        self._twins: dict[str, TwinDefinition] = dict(twins)
        self._twin_origin: dict[str, Origin] = dict.fromkeys(self._twins, "config")
        self._sessions: dict[str, ServedSession] = {}
        self._created = 0
        self._deleted = 0
        self.twins: Mapping[str, TwinDefinition] = types.MappingProxyType(self._twins)
        """Twin name -> definition (a read-only view)."""
        self.sessions: Mapping[str, ServedSession] = types.MappingProxyType(self._sessions)
        """Session name -> its record, in creation order (a read-only view)."""

    # -- twins -----------------------------------------------------------------------

    def twin(self, name: str) -> TwinDefinition:
        try:
            return self._twins[name]
        except (KeyError, TypeError):
            raise NotFound(f"no twin named {name!r} (twins: {_names(self._twins)})") from None

    def twin_origin(self, name: str) -> Origin:
        self.twin(name)
        return self._twin_origin[name]

    def define_twin(self, twin: TwinDefinition, *, origin: Origin = "client") -> None:
        """Add a twin (AlreadyExists if its name is taken)."""
        if twin.name in self._twins:
            raise AlreadyExists(
                f"a twin named {twin.name!r} exists already; remove it first (RemoveTwin) "
                f"or choose another name")
        check_name("twin", twin.name)
        self._twins[twin.name] = twin
        self._twin_origin[twin.name] = origin

    def remove_twin(self, name: str) -> TwinDefinition:
        """Remove a twin (NotFound; InvalidState while sessions of it exist)."""
        twin = self.twin(name)
        users = [s.name for s in self._sessions.values() if s.twin is twin]
        if users:
            raise InvalidState(
                f"cannot remove twin {name!r}: {len(users)} "
                f"{'session uses' if len(users) == 1 else 'sessions use'} it "
                f"({', '.join(users)}); delete {'it' if len(users) == 1 else 'them'} first")
        del self._twins[name]
        del self._twin_origin[name]
        return twin

    # -- sessions --------------------------------------------------------------------

    def get(self, name: str) -> ServedSession:
        """The record of session ``name`` (NotFound naming the known ones)."""
        try:
            return self._sessions[name]
        except (KeyError, TypeError):
            raise NotFound(
                f"no session named {name!r} (sessions: {_names(self._sessions)})") from None

    def origin(self, name: str) -> Origin:
        return self.get(name).origin

    def records(self) -> list[ServedSession]:
        return list(self._sessions.values())

    def check_new(self, name: str) -> None:
        """Refuse a name that cannot be a new session's (InvalidArgument,
        AlreadyExists, ResourceExhausted beyond ``max_sessions``)."""
        check_name("session", name)
        if name in self._sessions:
            raise AlreadyExists(
                f"a session named {name!r} exists already (twin "
                f"{self._sessions[name].twin.name!r}); choose another name or delete it first")
        if len(self._sessions) >= self.max_sessions:
            raise ResourceExhausted(
                f"cannot create session {name!r}: the server holds {len(self._sessions)} "
                f"sessions, its limit (server.max_sessions = {self.max_sessions}); delete "
                f"sessions or raise server.max_sessions in the config")

    def add(self, record: ServedSession) -> None:
        self.check_new(record.name)
        record.last_used = self._now()
        self._sessions[record.name] = record
        self._created += 1

    def remove(self, name: str) -> ServedSession:
        record = self.get(name)
        del self._sessions[name]
        self._deleted += 1
        return record

    # -- snapshots -------------------------------------------------------------------

    def keep_snapshot(self, session: str, snapshot: SessionSnapshot) -> str:
        """Keep ``snapshot`` of ``session`` under a new id (the oldest evicted beyond
        ``max_snapshots``); return the id."""
        record = self.get(session)
        snap_id = str(next(record.snapshot_ids))
        record.snapshots[snap_id] = snapshot
        while len(record.snapshots) > self.max_snapshots:
            record.snapshots.popitem(last=False)
        return snap_id

    def snapshot(self, session: str, snapshot_id: str) -> SessionSnapshot:
        """The stored snapshot ``snapshot_id`` of ``session`` (NotFound naming the known ids)."""
        store = self.get(session).snapshots
        try:
            return store[snapshot_id]
        except (KeyError, TypeError):
            kept = ", ".join(store) or "none"
            raise NotFound(
                f"session {session!r} has no snapshot {snapshot_id!r} (its snapshots: {kept}; "
                f"it keeps the latest {self.max_snapshots})") from None

    def snapshot_ids(self, session: str) -> list[str]:
        return list(self.get(session).snapshots)

    # -- expiry ----------------------------------------------------------------------

    def touch(self, name: str) -> None:
        """Note activity on a session; an unknown name is ignored (a read racing a delete)."""
        record = self._sessions.get(name)
        if record is not None:
            record.last_used = self._now()

    def idle_for(self, name: str) -> float:
        return self._now() - self.get(name).last_used

    def expired(self) -> list[str]:
        """Client-created sessions idle for more than ``idle_timeout`` seconds."""
        if self.idle_timeout == 0:
            return []
        now = self._now()
        return [r.name for r in self._sessions.values()
                if r.origin == "client" and now - r.last_used > self.idle_timeout]

    def statistics(self) -> ManagerStatistics:
        records = self._sessions.values()
        return ManagerStatistics(
            twins=len(self._twins), sessions=len(records),
            client_sessions=sum(r.origin == "client" for r in records),
            max_sessions=self.max_sessions,
            snapshots=sum(len(r.snapshots) for r in records),
            sessions_created=self._created, sessions_deleted=self._deleted)


def _names(items: Mapping[str, object]) -> str:
    return ", ".join(items) or "none"
