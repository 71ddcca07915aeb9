"""The sessions and twins of one server: create, fork, delete, snapshots, expiry.

``SessionManager`` is the bookkeeping behind the OPC UA methods CreateSession,
DeleteSession, DefineTwin, RemoveTwin, Fork, Snapshot and Restore. Pure and
synchronous like the rest of the engine: the daemon owns the clocks and the
address space and calls in here; every call either completes or raises with
nothing changed.

Decisions:

* Names of sessions follow the config's name rule (``NAME_PATTERN``, at most 64
  characters): they become NodeId parts.
* ``max_sessions`` counts every session, config and client ones together.
* Snapshots are kept per session under ids ``"1"``, ``"2"``, ... (never reused
  within the session's life), at most ``max_snapshots`` (32) per session: taking
  one more evicts the oldest. Deleting a session drops its snapshots; a fork
  starts with none.
* Expiry: a client-created session idle (no ``touch``) for more than
  ``idle_timeout`` seconds is listed by ``expired()``; config sessions never are,
  and ``idle_timeout`` 0 turns expiry off. The manager only lists: the daemon
  deletes and emits the event.
* ``parse_parameters`` takes a JSON object, nested ``{"tank": {"area": 2.0}}``,
  flat ``{"tank.area": 2.0}``, or both mixed; ``""``, whitespace or ``{}`` mean
  none.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import re
import time
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal

from twin_server.config.nesting import DEFAULT_MAX_DEPTH, json_too_deep
from twin_server.config.schema import NAME_PATTERN
from twin_server.engine.session import (
    RunState,
    Session,
    SessionSettings,
    SessionSnapshot,
    _check_factor,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    NotFound,
    ResourceExhausted,
)
from twin_server.logs import excerpt
from twin_server.models.base import Value

Origin = Literal["config", "client"]
Overrides = Mapping[str, Mapping[str, Value]]

_NAME = re.compile(NAME_PATTERN)
_NAME_MAX = 64
#: snapshots kept per session before the oldest is evicted
MAX_SNAPSHOTS = 32


class SessionManager:
    """Every twin definition and session of the server, by name."""

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
        self._sessions: dict[str, Session] = {}
        self._origin: dict[str, Origin] = {}
        self._last_used: dict[str, float] = {}
        self._snapshots: dict[str, collections.OrderedDict[str, SessionSnapshot]] = {}
        self._snapshot_ids: dict[str, itertools.count[int]] = {}
        self._created = 0
        self._deleted = 0
        self.twins: Mapping[str, TwinDefinition] = types.MappingProxyType(self._twins)
        """Twin name -> definition (a read-only view)."""
        self.sessions: Mapping[str, Session] = types.MappingProxyType(self._sessions)
        """Session name -> Session, in creation order (a read-only view)."""

    # -- twins -----------------------------------------------------------------------

    def twin_origin(self, name: str) -> Origin:
        """``"config"`` for twins given at construction, ``"client"`` for DefineTwin."""
        self._twin(name)
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
        twin = self._twin(name)
        users = [s.name for s in self._sessions.values() if s.twin is twin]
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

    def origin(self, name: str) -> Origin:
        """``"config"`` for sessions the config declares, ``"client"`` for the rest."""
        self.get(name)
        return self._origin[name]

    def get(self, name: str) -> Session:
        """The session ``name`` (NotFound naming the known ones)."""
        try:
            return self._sessions[name]
        except (KeyError, TypeError):
            raise NotFound(
                f"no session named {excerpt(name, 100)!r} (sessions: {_names(self._sessions)})"
            ) from None

    def create(
        self,
        twin: str,
        name: str,
        parameters: Overrides | None = None,
        settings: SessionSettings | None = None,
        origin: Origin = "client",
    ) -> Session:
        """A new Ready session of ``twin``.

        ``parameters`` go on top of ``settings.parameters`` (per parameter). Refusals:
        NotFound (unknown twin, listing the known ones; unknown component or
        parameter), InvalidArgument (a name that cannot be a NodeId part; bad
        settings), AlreadyExists (a taken name), ResourceExhausted (beyond
        ``max_sessions``), TypeMismatch / OutOfRange (a bad parameter value); the
        first problem found is raised and nothing is created.
        """
        definition = self._twin(twin)
        self._check_new(name)
        settings = settings or SessionSettings()
        if parameters:
            merged: dict[str, dict[str, Value]] = {
                c: dict(v) for c, v in (settings.parameters or {}).items()
            }
            if not isinstance(parameters, Mapping):
                raise InvalidArgument(
                    f"parameters must map component -> parameter -> value "
                    f"(got {type(parameters).__name__})"
                )
            for cname, values in parameters.items():
                if not isinstance(values, Mapping):
                    raise InvalidArgument(
                        f"the parameters of component {cname!r} must map parameter -> value "
                        f"(got {type(values).__name__} {values!r})"
                    )
                merged.setdefault(cname, {}).update(values)
            settings = dataclasses.replace(settings, parameters=merged)
        session = Session(name, definition, settings)
        self._add(session, origin)
        return session

    def delete(self, name: str) -> Session:
        """Remove and close the session (its models freed, its snapshots dropped)."""
        session = self.get(name)
        del self._sessions[name]
        del self._origin[name]
        del self._last_used[name]
        del self._snapshots[name]
        del self._snapshot_ids[name]
        self._deleted += 1
        session.close()
        return session

    def fork(self, source: str, name: str, realtime_factor: float) -> Session:
        """A new client-owned session of ``source``'s twin in exactly its current state.

        Its run state: Running if the source runs, Ready if the source is Ready,
        else Suspended; it steps at ``realtime_factor`` (0 = as fast as possible).
        Refusals as ``create``, plus InvalidArgument for a bad factor,
        InvalidState for a source halted on a fault, NotSupported naming a
        component whose state cannot be copied (an FMU).
        """
        parent = self.get(source)
        self._check_new(name)
        _check_factor(name, realtime_factor)
        settings = dataclasses.replace(parent.settings, realtime_factor=float(realtime_factor))
        child = parent.fork(name, settings)
        if parent.state is RunState.RUNNING:
            child.resume()
        self.touch(source)
        self._add(child, "client")
        return child

    def _add(self, session: Session, origin: Origin) -> None:
        name = session.name
        self._created += 1
        self._sessions[name] = session
        self._origin[name] = origin
        self._last_used[name] = self._now()
        self._snapshots[name] = collections.OrderedDict()
        self._snapshot_ids[name] = itertools.count(1)

    # -- snapshots -------------------------------------------------------------------

    def take_snapshot(self, session: str) -> str:
        """Snapshot the session; return its id. Beyond ``max_snapshots`` of this
        session the oldest is evicted. Refusals as ``Session.snapshot``."""
        target = self.get(session)
        snap = target.snapshot()
        store = self._snapshots[session]
        snap_id = str(next(self._snapshot_ids[session]))
        store[snap_id] = snap
        while len(store) > self.max_snapshots:
            store.popitem(last=False)
        self.touch(session)
        target.emit(
            "snapshot_taken",
            f"snapshot {snap_id} taken at tick {snap.step_count} (t={snap.sim_time:g} s)",
        )
        return snap_id

    def snapshot(self, session: str, snapshot_id: str) -> SessionSnapshot:
        """The stored snapshot ``snapshot_id`` of ``session`` (NotFound naming the known ids)."""
        self.get(session)
        store = self._snapshots[session]
        try:
            return store[snapshot_id]
        except (KeyError, TypeError):
            kept = ", ".join(store) or "none"
            raise NotFound(
                f"session {session!r} has no snapshot {excerpt(snapshot_id, 100)!r} "
                f"(its snapshots: {kept}; it keeps the latest {self.max_snapshots})"
            ) from None

    def snapshot_ids(self, session: str) -> list[str]:
        """The ids of ``session``'s stored snapshots, oldest first."""
        self.get(session)
        return list(self._snapshots[session])

    def restore_snapshot(self, session: str, snapshot_id: str) -> None:
        """Restore a stored snapshot (NotFound for an unknown id; refusals as
        ``Session.restore``). The snapshot stays stored."""
        snap = self.snapshot(session, snapshot_id)
        self._sessions[session].restore(snap)
        self.touch(session)

    # -- expiry ----------------------------------------------------------------------

    def touch(self, name: str) -> None:
        """Note activity on a session; an unknown name is ignored (a read racing a
        delete)."""
        if name in self._last_used:
            self._last_used[name] = self._now()

    def idle_for(self, name: str) -> float:
        """Seconds since the session was last touched."""
        self.get(name)
        return self._now() - self._last_used[name]

    def expired(self) -> list[str]:
        """Client-created sessions idle for more than ``idle_timeout`` seconds."""
        if self.idle_timeout == 0:
            return []
        now = self._now()
        return [
            name
            for name, last in self._last_used.items()
            if self._origin[name] == "client" and now - last > self.idle_timeout
        ]

    # -- observation -----------------------------------------------------------------

    def statistics(self) -> ManagerStatistics:
        origins = list(self._origin.values())
        return ManagerStatistics(
            twins=len(self._twins),
            sessions=len(origins),
            client_sessions=origins.count("client"),
            max_sessions=self.max_sessions,
            snapshots=sum(len(store) for store in self._snapshots.values()),
            sessions_created=self._created,
            sessions_deleted=self._deleted,
        )

    # -- helpers ---------------------------------------------------------------------

    def _twin(self, name: str) -> TwinDefinition:
        try:
            return self._twins[name]
        except (KeyError, TypeError):
            raise NotFound(
                f"no twin named {excerpt(name, 100)!r} (twins: {_names(self._twins)})"
            ) from None

    def _check_new(self, name: str) -> None:
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


@dataclasses.dataclass(frozen=True, slots=True)
class ManagerStatistics:
    """An immutable snapshot of the manager's counts, for diagnostics."""

    twins: int
    sessions: int  # config and client ones together
    client_sessions: int
    max_sessions: int
    snapshots: int  # stored, over every session
    sessions_created: int  # since start, forks included
    sessions_deleted: int  # since start, expired ones included


def check_name(what: str, name: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > _NAME_MAX:
        raise InvalidArgument(
            f"{excerpt(name, 100)!r} cannot be a {what} name: a name becomes part of NodeIds, "
            f"so it must start with a letter or '_', hold only letters, digits and '_', and "
            f"be at most {_NAME_MAX} characters"
        )


def _names(items: Mapping[str, Any]) -> str:
    return ", ".join(items) or "none"


# -- parameters given as JSON text ------------------------------------------------------------


def parse_parameters(text: str, *, max_depth: int = DEFAULT_MAX_DEPTH
                     ) -> dict[str, dict[str, Value]]:
    """Parameter overrides from a JSON object string (CreateSession, SetParameters,
    Reset): ``{"tank": {"area": 2.0}}``, or flat ``{"tank.area": 2.0}``, or both
    mixed. ``""`` (or whitespace) and ``{}`` mean none.

    InvalidArgument for malformed JSON (naming the line, column, character
    position and what was expected), JSON nested more than ``max_depth`` arrays
    and objects deep (found before parsing: Python's parser recurses), a
    non-object, a duplicate key, or a value that is not a number, boolean or
    string (naming the key). Only the form is checked here: names and values are
    checked against the twin by the session.
    """
    if not isinstance(text, str):
        raise InvalidArgument(
            f"parameters must be a JSON object string (got {type(text).__name__})"
        )
    if not text.strip():
        return {}
    too_deep = json_too_deep(text, max_depth)
    if too_deep is not None:
        raise InvalidArgument(
            _too_deep(max_depth, f" at line {too_deep.line}, column {too_deep.column}"))
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                         parse_int=_integer)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"parameters are not valid JSON: {exc.msg} at line {exc.lineno}, column "
            f"{exc.colno} (character {exc.pos}){_near(text, exc.pos)}"
        ) from None
    except RecursionError:  # (only were the count and the parser to disagree)
        raise InvalidArgument(_too_deep(max_depth, "")) from None
    if not isinstance(raw, dict):
        raise InvalidArgument(
            f'parameters must be a JSON object such as {{"tank": {{"area": 2.0}}}} or '
            f'{{"tank.area": 2.0}} (got {_json_type(raw)})'
        )
    result: dict[str, dict[str, Value]] = {}
    for key, value in raw.items():
        if "." in key:
            component, _, parameter = key.partition(".")
            if not component or not parameter or "." in parameter:
                raise InvalidArgument(
                    f"parameter key {excerpt(key, 100)!r} must be 'component.parameter' (one dot)"
                )
            _put(result, component, parameter, value, key)
        elif isinstance(value, dict):
            if not key:
                raise InvalidArgument("parameters: a component name must not be empty")
            result.setdefault(key, {})
            for parameter, inner in value.items():
                _put(result, key, parameter, inner, f"{key}.{parameter}")
        else:
            raise InvalidArgument(
                f"parameters: {excerpt(key, 100)!r} must be a component holding an object of "
                f'parameters, as in {{"{excerpt(key, 100)}": {{"name": 1.0}}}}, or a flat key '
                f'"component.parameter" (got {_json_type(value)})'
            )
    return result


def _too_deep(limit: int, where: str) -> str:
    return (f"parameters nest arrays and objects more than {limit} levels deep{where}; "
            f'they need two, as in {{"tank": {{"area": 2.0}}}}')


def _put(
    result: dict[str, dict[str, Value]], component: str, parameter: str, value: Any, key: str
) -> None:
    if not parameter:
        raise InvalidArgument(f"parameters: {excerpt(key, 100)!r} has an empty parameter name")
    if isinstance(value, bool | int | float | str):
        values = result.setdefault(component, {})
        if parameter in values:
            raise InvalidArgument(
                f"parameters: {excerpt(f'{component}.{parameter}', 100)} is given twice "
                f"(nested and flat)"
            )
        values[parameter] = value
        return
    raise InvalidArgument(
        f"parameters: {excerpt(key, 100)} must be a number, boolean or string "
        f"(got {_json_type(value)})"
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidArgument(
                f"parameters: the key {excerpt(key, 100)!r} appears twice in one object")
        result[key] = value
    return result


#: digits of the longest integer taken (Int64 has 19; Python refuses past 4300 with a
#: ValueError that is no JSONDecodeError)
MAX_DIGITS = 100


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise InvalidArgument(
            f"parameters: an integer of {len(text.lstrip('-'))} digits is no parameter value "
            f"(at most {MAX_DIGITS} digits)")
    return int(text)


def _no_constant(name: str) -> Any:
    raise InvalidArgument(
        f"parameters: {name} is not valid JSON and not a parameter value; give a finite number"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {excerpt(json.dumps(value), 100)}"
    return f"the string {json.dumps(excerpt(value, 100))}"


def _near(text: str, pos: int) -> str:
    if pos >= len(text):
        return ", at the end of the text"
    return f", near {text[max(0, pos - 10) : pos + 10]!r}"
