"""The sessions and twins of one process: create, fork, delete, snapshots, expiry.

``SessionManager`` runs ``Session`` objects in this process under the rules of
``engine/registry.py`` (names, the session limit, twins refused removal while
used, snapshot ids and eviction, expiry: documented there), which the daemon's
``runtime.served.SessionRegistry`` applies to hosted sessions alike. Pure and
synchronous like the rest of the engine; every call either completes or raises
with nothing changed.

Decisions:

* ``create`` merges its ``parameters`` on top of the settings' own, per
  parameter (``merge_parameters``, which the daemon uses too).
* A fork runs if its source runs, else stays Ready or Suspended as the source
  is; it is the client's.
* ``parse_parameters`` takes a JSON object, nested ``{"tank": {"area": 2.0}}``,
  flat ``{"tank.area": 2.0}``, or both mixed; ``""``, whitespace or ``{}`` mean
  none.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from twin_server.config.nesting import DEFAULT_MAX_DEPTH, json_too_deep
from twin_server.engine.registry import MAX_SNAPSHOTS as MAX_SNAPSHOTS
from twin_server.engine.registry import Origin as Origin
from twin_server.engine.registry import Registry, RegistryStatistics, Snapshots
from twin_server.engine.session import (
    RunState,
    Session,
    SessionSettings,
    SessionSnapshot,
    _check_factor,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import InvalidArgument
from twin_server.logs import excerpt
from twin_server.models.base import Value

Overrides = Mapping[str, Mapping[str, Value]]


@dataclasses.dataclass(eq=False)
class _Managed:
    """The registry's record of one session in this process."""

    session: Session
    origin: Origin
    last_used: float = 0.0
    snapshots: Snapshots = dataclasses.field(default_factory=Snapshots)

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def twin(self) -> TwinDefinition:
        return self.session.twin


class _SessionsView(Mapping[str, Session]):
    """Session name -> Session over the registry's records (read-only)."""

    def __init__(self, records: Mapping[str, _Managed]) -> None:
        self._records = records

    def __getitem__(self, name: str) -> Session:
        return self._records[name].session

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


class SessionManager:
    """Every twin definition and session of the process, by name."""

    def __init__(
        self,
        twins: Mapping[str, TwinDefinition],
        *,
        max_sessions: int = 100,
        idle_timeout: float = 3600.0,
        max_snapshots: int = MAX_SNAPSHOTS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry: Registry[_Managed] = Registry(
            twins, max_sessions=max_sessions, idle_timeout=idle_timeout,
            max_snapshots=max_snapshots, now=now)
        self.twins: Mapping[str, TwinDefinition] = self._registry.twins
        """Twin name -> definition (a read-only view)."""
        self.sessions: Mapping[str, Session] = _SessionsView(self._registry.sessions)
        """Session name -> Session, in creation order (a read-only view)."""

    @property
    def max_sessions(self) -> int:
        return self._registry.max_sessions

    @property
    def idle_timeout(self) -> float:
        return self._registry.idle_timeout

    @property
    def max_snapshots(self) -> int:
        return self._registry.max_snapshots

    # -- twins -----------------------------------------------------------------------

    def twin_origin(self, name: str) -> Origin:
        """``"config"`` for twins given at construction, ``"client"`` for DefineTwin."""
        return self._registry.twin_origin(name)

    def define_twin(self, twin: TwinDefinition, *, origin: Origin = "client") -> None:
        """Add a twin (AlreadyExists if its name is taken)."""
        self._registry.define_twin(twin, origin=origin)

    def remove_twin(self, name: str) -> TwinDefinition:
        """Remove a twin (NotFound; InvalidState while sessions of it exist)."""
        return self._registry.remove_twin(name)

    # -- sessions --------------------------------------------------------------------

    def origin(self, name: str) -> Origin:
        """``"config"`` for sessions the config declares, ``"client"`` for the rest."""
        return self._registry.origin(name)

    def get(self, name: str) -> Session:
        """The session ``name`` (NotFound naming the known ones)."""
        return self._registry.get(name).session

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
        definition = self._registry.twin(twin)
        self._registry.check_new(name)
        settings = merge_parameters(settings or SessionSettings(), parameters)
        session = Session(name, definition, settings)
        self._registry.add(_Managed(session, origin))
        return session

    def delete(self, name: str) -> Session:
        """Remove and close the session (its models freed, its snapshots dropped)."""
        session = self._registry.remove(name).session
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
        self._registry.check_new(name)
        _check_factor(name, realtime_factor)
        settings = dataclasses.replace(parent.settings, realtime_factor=float(realtime_factor))
        child = parent.fork(name, settings)
        if parent.state is RunState.RUNNING:
            child.resume()
        self.touch(source)
        self._registry.add(_Managed(child, "client"))
        return child

    # -- snapshots -------------------------------------------------------------------

    def take_snapshot(self, session: str) -> str:
        """Snapshot the session; return its id. Beyond ``max_snapshots`` of this
        session the oldest is evicted. Refusals as ``Session.snapshot``."""
        target = self.get(session)
        snap = target.snapshot()
        snap_id = self._registry.keep_snapshot(session, snap)
        self.touch(session)
        target.emit(
            "snapshot_taken",
            f"snapshot {snap_id} taken at tick {snap.step_count} (t={snap.sim_time:g} s)",
        )
        return snap_id

    def snapshot(self, session: str, snapshot_id: str) -> SessionSnapshot:
        """The stored snapshot ``snapshot_id`` of ``session`` (NotFound naming the known ids)."""
        return self._registry.snapshot(session, snapshot_id)

    def snapshot_ids(self, session: str) -> list[str]:
        """The ids of ``session``'s stored snapshots, oldest first."""
        return self._registry.snapshot_ids(session)

    def restore_snapshot(self, session: str, snapshot_id: str) -> None:
        """Restore a stored snapshot (NotFound for an unknown id; refusals as
        ``Session.restore``). The snapshot stays stored."""
        snap = self.snapshot(session, snapshot_id)
        self.get(session).restore(snap)
        self.touch(session)

    # -- expiry ----------------------------------------------------------------------

    def touch(self, name: str) -> None:
        """Note activity on a session; an unknown name is ignored (a read racing a
        delete)."""
        self._registry.touch(name)

    def idle_for(self, name: str) -> float:
        """Seconds since the session was last touched."""
        return self._registry.idle_for(name)

    def expired(self) -> list[str]:
        """Client-created sessions idle for more than ``idle_timeout`` seconds."""
        return self._registry.expired()

    # -- observation -----------------------------------------------------------------

    def statistics(self) -> RegistryStatistics:
        return self._registry.statistics()


def merge_parameters(settings: SessionSettings, parameters: Overrides | None) -> SessionSettings:
    """``settings`` with ``parameters`` on top of its own (per parameter);
    InvalidArgument for a malformed mapping."""
    if not parameters:
        return settings
    if not isinstance(parameters, Mapping):
        raise InvalidArgument(
            f"parameters must map component -> parameter -> value "
            f"(got {type(parameters).__name__})"
        )
    merged: dict[str, dict[str, Value]] = {
        c: dict(v) for c, v in (settings.parameters or {}).items()
    }
    for cname, values in parameters.items():
        if not isinstance(values, Mapping):
            raise InvalidArgument(
                f"the parameters of component {cname!r} must map parameter -> value "
                f"(got {type(values).__name__} {values!r})"
            )
        merged.setdefault(cname, {}).update(values)
    return dataclasses.replace(settings, parameters=merged)


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
