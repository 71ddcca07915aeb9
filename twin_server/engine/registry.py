"""The bookkeeping of a server's twins and sessions: names, limits, snapshot ids, expiry.

``Registry[R]`` holds the twin definitions by name and one record per session
(any ``R`` that has a name, a twin, an origin, when it was last used and its
snapshots: ``Record``). It is the one place of the rules behind the OPC UA
methods CreateSession, DeleteSession, DefineTwin, RemoveTwin, Fork, Snapshot
and Restore, and of expiry; both the engine's ``SessionManager`` (records of
``Session`` objects in this process) and the daemon's ``SessionRegistry``
(``runtime.served.ServedSession`` records of hosted sessions) are one. Pure and
synchronous: whoever holds the sessions creates or snapshots them, then records
here; every call either completes or raises with nothing changed.

Decisions:

* Names of twins and sessions follow the config's name rule (``NAME_PATTERN``,
  at most 64 characters): they become NodeId parts.
* A twin cannot be removed while sessions use it.
* ``max_sessions`` counts every session, config and client ones together.
* Snapshots are kept per session under ids ``"1"``, ``"2"``, ... (never reused
  within the session's life), at most ``max_snapshots`` (32) per session: taking
  one more evicts the oldest. Deleting a session drops its snapshots; a fork
  starts with none (a new record).
* Expiry: a client-created session idle (no ``touch``) for more than
  ``idle_timeout`` seconds is listed by ``expired()``; config sessions never are,
  and ``idle_timeout`` 0 turns expiry off. The registry only lists: its owner
  deletes and emits the event.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
import time
import types
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, Protocol, TypeVar

from twin_server.config.schema import NAME_PATTERN
from twin_server.engine.session import SessionSnapshot
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    NotFound,
    ResourceExhausted,
)
from twin_server.logs import excerpt

Origin = Literal["config", "client"]

_NAME = re.compile(NAME_PATTERN)
_NAME_MAX = 64
#: snapshots kept per session before the oldest is evicted
MAX_SNAPSHOTS = 32


class Snapshots:
    """One session's stored snapshots by id, oldest first; ids are never reused."""

    def __init__(self) -> None:
        self._kept: collections.OrderedDict[str, SessionSnapshot] = collections.OrderedDict()
        self._ids = itertools.count(1)

    def keep(self, snapshot: SessionSnapshot, limit: int) -> str:
        """Store ``snapshot`` under the next id, evicting the oldest beyond ``limit``."""
        snap_id = str(next(self._ids))
        self._kept[snap_id] = snapshot
        while len(self._kept) > limit:
            self._kept.popitem(last=False)
        return snap_id

    def get(self, snapshot_id: str) -> SessionSnapshot | None:
        try:
            return self._kept.get(snapshot_id)
        except TypeError:  # an unhashable id
            return None

    def ids(self) -> list[str]:
        return list(self._kept)

    def __len__(self) -> int:
        return len(self._kept)


class Record(Protocol):
    """What the registry needs of a session's record."""

    @property
    def name(self) -> str: ...

    @property
    def twin(self) -> TwinDefinition: ...

    @property
    def origin(self) -> Origin: ...

    #: when a client last used it (the registry's clock)
    last_used: float

    @property
    def snapshots(self) -> Snapshots: ...


R = TypeVar("R", bound=Record)


class Registry(Generic[R]):
    """Every twin definition and session record of a server, by name."""

    def __init__(
        self,
        twins: Mapping[str, TwinDefinition],
        *,
        max_sessions: int = 100,
        idle_timeout: float = 3600.0,
        max_snapshots: int = MAX_SNAPSHOTS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1 (got {max_sessions})")
        if idle_timeout < 0:
            raise ValueError(f"idle_timeout must be >= 0 s, 0 = never (got {idle_timeout})")
        if max_snapshots < 1:
            raise ValueError(f"max_snapshots must be >= 1 (got {max_snapshots})")
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.max_snapshots = max_snapshots
        self._now = now
        self._twins: dict[str, TwinDefinition] = dict(twins)
        self._twin_origin: dict[str, Origin] = dict.fromkeys(self._twins, "config")
        self._sessions: dict[str, R] = {}
        self._created = 0
        self._deleted = 0
        self.twins: Mapping[str, TwinDefinition] = types.MappingProxyType(self._twins)
        """Twin name -> definition (a read-only view)."""
        self.sessions: Mapping[str, R] = types.MappingProxyType(self._sessions)
        """Session name -> its record, in creation order (a read-only view)."""

    # -- twins -----------------------------------------------------------------------

    def twin(self, name: str) -> TwinDefinition:
        """The twin ``name`` (NotFound naming the known ones)."""
        try:
            return self._twins[name]
        except (KeyError, TypeError):
            raise NotFound(
                f"no twin named {excerpt(name, 100)!r} (twins: {_names(self._twins)})"
            ) from None

    def twin_origin(self, name: str) -> Origin:
        """``"config"`` for twins given at construction, ``"client"`` for DefineTwin."""
        self.twin(name)
        return self._twin_origin[name]

    def define_twin(self, twin: TwinDefinition, *, origin: Origin = "client") -> None:
        """Add a twin (AlreadyExists if its name is taken)."""
        if twin.name in self._twins:
            raise AlreadyExists(
                f"a twin named {twin.name!r} exists already; remove it first (RemoveTwin) "
                f"or choose another name"
            )
        check_name("twin", twin.name)
        self._twins[twin.name] = twin
        self._twin_origin[twin.name] = origin

    def remove_twin(self, name: str) -> TwinDefinition:
        """Remove a twin (NotFound; InvalidState while sessions of it exist)."""
        twin = self.twin(name)
        users = [r.name for r in self._sessions.values() if r.twin is twin]
        if users:
            raise InvalidState(
                f"cannot remove twin {name!r}: {len(users)} "
                f"{'session uses' if len(users) == 1 else 'sessions use'} it "
                f"({', '.join(users)}); delete {'it' if len(users) == 1 else 'them'} first"
            )
        del self._twins[name]
        del self._twin_origin[name]
        return twin

    # -- sessions --------------------------------------------------------------------

    def get(self, name: str) -> R:
        """The record of session ``name`` (NotFound naming the known ones)."""
        try:
            return self._sessions[name]
        except (KeyError, TypeError):
            raise NotFound(
                f"no session named {excerpt(name, 100)!r} (sessions: {_names(self._sessions)})"
            ) from None

    def origin(self, name: str) -> Origin:
        """``"config"`` for sessions the config declares, ``"client"`` for the rest."""
        return self.get(name).origin

    def records(self) -> list[R]:
        """Every record, in creation order."""
        return list(self._sessions.values())

    def check_new(self, name: str) -> None:
        """Refuse a name that cannot be a new session's (InvalidArgument,
        AlreadyExists, ResourceExhausted beyond ``max_sessions``)."""
        check_name("session", name)
        if name in self._sessions:
            raise AlreadyExists(
                f"a session named {name!r} exists already (twin "
                f"{self._sessions[name].twin.name!r}); choose another name or delete it first"
            )
        if len(self._sessions) >= self.max_sessions:
            raise ResourceExhausted(
                f"cannot create session {name!r}: the server holds {len(self._sessions)} "
                f"sessions, its limit (server.max_sessions = {self.max_sessions}); delete "
                f"sessions or raise server.max_sessions in the config"
            )

    def add(self, record: R) -> None:
        """Record a new session (refusals as ``check_new``), used as of now."""
        self.check_new(record.name)
        record.last_used = self._now()
        self._sessions[record.name] = record
        self._created += 1

    def remove(self, name: str) -> R:
        """Forget session ``name`` and its snapshots (NotFound); return its record."""
        record = self.get(name)
        del self._sessions[name]
        self._deleted += 1
        return record

    # -- snapshots -------------------------------------------------------------------

    def keep_snapshot(self, session: str, snapshot: SessionSnapshot) -> str:
        """Keep ``snapshot`` of ``session`` under a new id (the oldest evicted beyond
        ``max_snapshots``); return the id."""
        return self.get(session).snapshots.keep(snapshot, self.max_snapshots)

    def snapshot(self, session: str, snapshot_id: str) -> SessionSnapshot:
        """The stored snapshot ``snapshot_id`` of ``session`` (NotFound naming the known ids)."""
        store = self.get(session).snapshots
        snapshot = store.get(snapshot_id)
        if snapshot is None:
            raise NotFound(
                f"session {session!r} has no snapshot {excerpt(snapshot_id, 100)!r} "
                f"(its snapshots: {', '.join(store.ids()) or 'none'}; it keeps the latest "
                f"{self.max_snapshots})"
            )
        return snapshot

    def snapshot_ids(self, session: str) -> list[str]:
        """The ids of ``session``'s stored snapshots, oldest first."""
        return self.get(session).snapshots.ids()

    # -- expiry ----------------------------------------------------------------------

    def touch(self, name: str) -> None:
        """Note activity on a session; an unknown name is ignored (a read racing a
        delete)."""
        record = self._sessions.get(name)
        if record is not None:
            record.last_used = self._now()

    def idle_for(self, name: str) -> float:
        """Seconds since the session was last touched."""
        return self._now() - self.get(name).last_used

    def expired(self) -> list[str]:
        """Client-created sessions idle for more than ``idle_timeout`` seconds."""
        if self.idle_timeout == 0:
            return []
        now = self._now()
        return [
            r.name
            for r in self._sessions.values()
            if r.origin == "client" and now - r.last_used > self.idle_timeout
        ]

    # -- observation -----------------------------------------------------------------

    def statistics(self) -> RegistryStatistics:
        records = self._sessions.values()
        return RegistryStatistics(
            twins=len(self._twins),
            sessions=len(records),
            client_sessions=sum(r.origin == "client" for r in records),
            max_sessions=self.max_sessions,
            snapshots=sum(len(r.snapshots) for r in records),
            sessions_created=self._created,
            sessions_deleted=self._deleted,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryStatistics:
    """An immutable snapshot of the registry's counts, for diagnostics."""

    twins: int
    sessions: int  # config and client ones together
    client_sessions: int
    max_sessions: int
    snapshots: int  # stored, over every session
    sessions_created: int  # since start, forks included
    sessions_deleted: int  # since start, expired ones included


def check_name(what: str, name: Any) -> None:
    """Refuse (InvalidArgument) a twin or session name that cannot be a NodeId part."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > _NAME_MAX:
        raise InvalidArgument(
            f"{excerpt(name, 100)!r} cannot be a {what} name: a name becomes part of NodeIds, "
            f"so it must start with a letter or '_', hold only letters, digits and '_', and "
            f"be at most {_NAME_MAX} characters"
        )


def _names(items: Mapping[str, Any]) -> str:
    return ", ".join(items) or "none"
