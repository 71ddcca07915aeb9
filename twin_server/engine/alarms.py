"""Alarms of a session: limit and off-normal conditions evaluated on simulated time.

Pure and synchronous, part of the session's state (``engine.session`` owns one
``AlarmSet``): Snapshot, Restore, Fork and Reset carry it, and the same config and
inputs give the same transitions at the same ticks on every run, whatever the
wall clock does.

Definitions (``AlarmDefinition``, compiled from ``[twins.<t>.alarms.<name>]`` and
overridden by ``[sessions.<s>.alarms.<name>]``):

* a **limit alarm** on a numeric variable: any of HighHigh, High, Low, LowLow, each a
  limit with its severity. A limit is *exceeded* when the value is above a high
  limit (below a low one); once exceeded it stays so until the value is back by
  more than ``deadband`` (hysteresis). ``exclusive`` (OPC UA ExclusiveLimitAlarmType):
  one limit state at a time, the most severe exceeded; else (NonExclusive) every
  exceeded limit is active at once.
* an **off-normal alarm** on a Boolean: active while the value differs from ``normal``.

Delays count ticks of simulated time: a new limit state (active, or another limit)
must hold ``on_delay`` seconds, a return to normal ``off_delay`` seconds, before the
alarm takes it (``ceil(delay / dt)`` ticks; 0: at the tick it happens).

The condition (OPC UA Part 9, one branch): ``enabled``; ``active`` and its
``limits``; ``acked``; ``confirmed``; ``retain`` = enabled and (active or not acked
or not confirmed). Becoming active, or moving to a more severe limit, needs a new
acknowledgement (acked and confirmed go false); a return to normal leaves them as
they are. Acknowledge needs an unacknowledged, enabled condition; Confirm an
acknowledged, unconfirmed one; both, and AddComment, name the condition's latest
``event_id`` (an older one: BadEventIdUnknown). Disable ends evaluation (the
condition is shown inactive, not retained); Enable starts it afresh (inactive,
acknowledged, confirmed: the next tick finds what is true).

Shelving (Part 9 ShelvedStateMachineType): an operator silences an alarm for a while.
``shelving`` is Unshelved, TimedShelved (TimedShelve: for a time at most the
definition's ``max_time_shelved``) or OneShotShelved (OneShotShelve: until the alarm
goes inactive, at most ``max_time_shelved``). A shelved alarm is evaluated as
before and its transitions still go out, with SuppressedOrShelved true (a client's
alarm list hides them). Shelving is an operator's act in real time, not simulated
time: the caller gives the wall-clock time (``wall``, seconds since the epoch), the
condition keeps the wall-clock time it ends at (``unshelve_at``), and whoever owns a
real clock (``opcua/alarms.py``) calls ``expire_shelving`` with the time once it
has passed (refused before it: a stale timer changes nothing). So the engine stays
pure, and the expiry travels with the condition through Snapshot, Restore, Fork and a
worker's death. Refusals: BadConditionAlreadyShelved (TimedShelve when timed-shelved,
OneShotShelve when one-shot-shelved), BadConditionNotShelved (Unshelve),
BadShelvingTimeOutOfRange (a time <= 0 or over ``max_time_shelved``). Disable,
Enable and Reset end shelving.

Every change is an ``AlarmState`` (the whole condition after it, with what changed
in ``transition``), which the session emits as an ``alarm_<transition>`` event.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Literal

from twin_server.engine.state import VarKey
from twin_server.errors import AlarmRefused, NotFound
from twin_server.logs import excerpt
from twin_server.models.base import DataType, Kind, Value, Variable

if TYPE_CHECKING:
    from twin_server.config.schema import AlarmConfig

#: the limits of a limit alarm, most severe first within each side
LIMITS = ("HighHigh", "High", "Low", "LowLow")
_HIGH = frozenset({"HighHigh", "High"})
#: the order in which an exclusive alarm picks the one limit state shown
_RANK = {"HighHigh": 4, "LowLow": 4, "High": 2, "Low": 2}

Action = Literal["acknowledge", "confirm", "add_comment", "enable", "disable",
                 "timed_shelve", "one_shot_shelve", "unshelve"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "confirm", "add_comment", "enable", "disable",
                               "timed_shelve", "one_shot_shelve", "unshelve")
#: the shelving methods (Part 9 ShelvedStateMachineType), and the expiry of a shelving
#: that the owner of the real clock calls (not a client's method)
SHELVING: tuple[str, ...] = ("timed_shelve", "one_shot_shelve", "unshelve")
EXPIRE = "expire_shelving"
#: the states of ShelvedStateMachineType
UNSHELVED, TIMED_SHELVED, ONE_SHOT_SHELVED = "Unshelved", "TimedShelved", "OneShotShelved"
#: MaxTimeShelved when the config gives none: one shift, s
MAX_TIME_SHELVED = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class AlarmDefinition:
    """One alarm as the config defines it (see the module docstring)."""

    name: str
    variable: VarKey
    kind: Literal["limit", "off_normal"]
    #: (limit name, value, severity) of a limit alarm, in ``LIMITS`` order
    limits: tuple[tuple[str, float, int], ...] = ()
    exclusive: bool = True
    normal: bool = False
    deadband: float = 0.0
    on_delay: float = 0.0
    off_delay: float = 0.0
    severity: int = 500
    message: str = ""
    enabled: bool = True
    #: the longest a shelving lasts (MaxTimeShelved), wall-clock seconds
    max_time_shelved: float = MAX_TIME_SHELVED

    def severity_of(self, limits: Iterable[str]) -> int:
        given = {name: sev for name, _, sev in self.limits}
        return max((given[name] for name in limits if name in given), default=self.severity)

    def limit(self, name: str) -> float:
        return next(value for n, value, _ in self.limits if n == name)


@dataclass(frozen=True, slots=True)
class AlarmState:
    """A condition as it is after one transition (what a Part 9 event carries)."""

    name: str
    enabled: bool
    active: bool
    #: the limit states active (exclusive: at most one); () for an off-normal alarm
    limits: tuple[str, ...]
    acked: bool
    confirmed: bool
    retain: bool
    severity: int
    message: str
    #: simulated time of this transition and of the last change of ``active``, s
    time: float
    active_time: float
    #: counts the condition's events: its EventId is derived from it (``event_id``)
    sequence: int
    #: what changed: active, inactive, limit, acknowledged, confirmed, comment,
    #: enabled, disabled, shelved, unshelved, reset, restored
    transition: str
    value: Value | None = None
    comment: str = ""
    #: who made the latest comment, acknowledgement or confirmation (ClientUserId)
    user: str = ""
    tick: int = 0
    #: ShelvingState: UNSHELVED, TIMED_SHELVED or ONE_SHOT_SHELVED
    shelving: str = UNSHELVED
    #: when a shelving ends by itself, wall-clock seconds since the epoch (0: unshelved)
    unshelve_at: float = 0.0

    @property
    def shelved(self) -> bool:
        """SuppressedOrShelved (there is no suppression yet)."""
        return self.shelving != UNSHELVED

    def __setstate__(self, state: tuple[object, ...]) -> None:
        # a snapshot pickled before shelving holds fewer fields: the rest take defaults
        names = [f.name for f in fields(self)]
        for name, value in zip(names, state, strict=False):
            object.__setattr__(self, name, value)
        for f in fields(self)[len(state):]:
            object.__setattr__(self, f.name, f.default)

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    @property
    def limit(self) -> str:
        """The most severe active limit state ('' when none)."""
        return max(self.limits, key=lambda n: _RANK[n], default="")


def event_id(session: str, alarm: str, sequence: int) -> bytes:
    """The EventId of a condition's event number ``sequence``: the same on every run."""
    return hashlib.sha256(f"{session}\0{alarm}\0{sequence}".encode()).digest()[:16]


@dataclass(slots=True)
class _Live:
    """One alarm's evaluation: the condition, its raw limit states and a pending change."""

    definition: AlarmDefinition
    state: AlarmState
    #: limits exceeded now, with hysteresis, before any delay
    raw: frozenset[str] = frozenset()
    #: the raw states waiting out their delay, and since which tick
    pending: frozenset[str] | None = None
    since: int = 0
    on_ticks: int = 0
    off_ticks: int = 0


@dataclass(frozen=True, slots=True)
class AlarmsSnapshot:
    """Every alarm's condition and evaluation, detached (part of a SessionSnapshot)."""

    states: tuple[tuple[str, AlarmState, frozenset[str], frozenset[str] | None, int], ...]


class AlarmSet:
    """The alarms of one session (``session`` names it in EventIds and messages)."""

    def __init__(self, session: str, definitions: Iterable[AlarmDefinition],
                 step_size: float) -> None:
        self.session = session
        self._dt = step_size
        self._alarms: dict[str, _Live] = {}
        for definition in definitions:
            live = _Live(definition, _initial(definition, 0.0, 0, 0, "reset"))
            live.on_ticks = _ticks(definition.on_delay, step_size)
            live.off_ticks = _ticks(definition.off_delay, step_size)
            self._alarms[definition.name] = live

    def __bool__(self) -> bool:
        return bool(self._alarms)

    def __len__(self) -> int:
        return len(self._alarms)

    @property
    def definitions(self) -> tuple[AlarmDefinition, ...]:
        return tuple(a.definition for a in self._alarms.values())

    def states(self) -> tuple[AlarmState, ...]:
        """Every condition as it is now, in definition order."""
        return tuple(a.state for a in self._alarms.values())

    def event_id(self, name: str) -> bytes:
        return event_id(self.session, name, self._get(name).state.sequence)

    # -- evaluation ------------------------------------------------------------------

    def evaluate(self, read: Callable[[VarKey], Value], tick: int,
                 sim_time: float) -> list[AlarmState]:
        """Look at every enabled alarm's variable after tick ``tick`` (at ``sim_time``);
        the conditions that changed."""
        changed: list[AlarmState] = []
        for live in self._alarms.values():
            if not live.state.enabled:
                continue
            d = live.definition
            value = read(d.variable)
            live.raw = _exceeded(d, value, live.raw)
            target = live.raw
            shown = frozenset(live.state.limits) if d.kind == "limit" else (
                frozenset({"OffNormal"}) if live.state.active else frozenset())
            if d.kind == "limit" and d.exclusive and target:
                target = frozenset({max(target, key=lambda n: _RANK[n])})
            if target == shown:
                live.pending = None
                continue
            if live.pending != target:
                live.pending, live.since = target, tick
            wait = live.on_ticks if target else live.off_ticks
            if tick - live.since < wait:
                continue
            live.pending = None
            live.state = _moved(d, live.state, target, value, tick, sim_time)
            changed.append(live.state)
        return changed

    # -- methods ---------------------------------------------------------------------

    def call(self, name: str, action: str, *, event: bytes | None = None, comment: str = "",
             user: str = "", tick: int = 0, sim_time: float = 0.0,
             shelving_time: float = 0.0, wall: float = 0.0) -> AlarmState:
        """Acknowledge, Confirm, AddComment, Enable, Disable, TimedShelve (for
        ``shelving_time`` s), OneShotShelve or Unshelve alarm ``name`` (or
        ``expire_shelving``), at wall-clock time ``wall``; its new state. AlarmRefused
        (with the Part 9 status) when the condition is not in a state that allows it,
        or ``event`` is not its latest EventId."""
        live = self._get(name)
        state = live.state
        where = f"alarm {name!r} of session {self.session!r}"
        if action == EXPIRE:
            return self._expire(live, tick, sim_time, wall)
        if action not in ACTIONS:
            raise AlarmRefused(f"{action!r} is not an alarm method (methods: "
                               f"{', '.join(ACTIONS)})", status="BadInvalidArgument")
        if action == "enable":
            if state.enabled:
                raise AlarmRefused(f"{where} is enabled already",
                                   status="BadConditionAlreadyEnabled")
            live.raw, live.pending = frozenset(), None
            new = _initial(live.definition, sim_time, tick, state.sequence + 1, "enabled",
                           enabled=True)
            live.state = replace(new, user=user)
            return live.state
        if not state.enabled:
            if action == "disable":
                raise AlarmRefused(f"{where} is disabled already",
                                   status="BadConditionAlreadyDisabled")
            raise AlarmRefused(f"{where} is disabled: Enable it first",
                               status="BadConditionDisabled")
        if action == "disable":
            live.raw, live.pending = frozenset(), None
            live.state = replace(state, enabled=False, active=False, limits=(), retain=False,
                                 transition="disabled", time=sim_time, tick=tick, user=user,
                                 sequence=state.sequence + 1, shelving=UNSHELVED,
                                 unshelve_at=0.0,
                                 message=f"{_title(live.definition)}: disabled")
            return live.state
        if action in SHELVING:
            live.state = _shelve(live.definition, state, where, action, shelving_time, wall,
                                 user, comment, tick, sim_time)
            return live.state
        current = event_id(self.session, name, state.sequence)
        if event is not None and event != current:
            raise AlarmRefused(
                f"{where}: EventId {event.hex() if event else '(empty)'} is not its latest "
                f"event's ({current.hex()}); refresh (ConditionRefresh) and use the EventId "
                f"of the event you answer", status="BadEventIdUnknown")
        if action == "acknowledge":
            if state.acked:
                raise AlarmRefused(f"{where} is acknowledged already",
                                   status="BadConditionBranchAlreadyAcked")
            new = replace(state, acked=True, transition="acknowledged")
        elif action == "confirm":
            if not state.acked:
                raise AlarmRefused(f"{where} is not acknowledged yet: Acknowledge it first",
                                   status="BadConditionBranchAlreadyConfirmed")
            if state.confirmed:
                raise AlarmRefused(f"{where} is confirmed already",
                                   status="BadConditionBranchAlreadyConfirmed")
            new = replace(state, confirmed=True, transition="confirmed")
        else:
            new = replace(state, transition="comment")
        live.state = replace(new, retain=_retain(new.enabled, new.active, new.acked,
                                                 new.confirmed),
                             comment=comment if comment or action == "add_comment"
                             else state.comment,
                             user=user, time=sim_time, tick=tick, sequence=state.sequence + 1)
        return live.state

    # -- Reset, Snapshot, Restore ----------------------------------------------------

    def reset(self, sim_time: float = 0.0) -> list[AlarmState]:
        """Every alarm back to its defined state (enabled as defined, inactive,
        acknowledged, confirmed); the conditions that were not so."""
        changed: list[AlarmState] = []
        for live in self._alarms.values():
            d = live.definition
            before = live.state
            live.raw, live.pending = frozenset(), None
            fresh = _initial(d, sim_time, 0, before.sequence, "reset")
            if _condition(fresh) != _condition(before):
                live.state = replace(fresh, sequence=before.sequence + 1)
                changed.append(live.state)
            else:
                live.state = replace(before, time=sim_time, tick=0)
        return changed

    def snapshot(self) -> AlarmsSnapshot:
        return AlarmsSnapshot(tuple((a.definition.name, a.state, a.raw, a.pending, a.since)
                                    for a in self._alarms.values()))

    def restore(self, snapshot: AlarmsSnapshot | None, sim_time: float,
                tick: int) -> list[AlarmState]:
        """Take the conditions ``snapshot`` holds (by name: an alarm it does not know
        is reset); the conditions that changed, each as a ``restored`` transition."""
        held = {} if snapshot is None else {s[0]: s for s in snapshot.states}
        changed: list[AlarmState] = []
        for name, live in self._alarms.items():
            before = live.state
            if name in held:
                _, state, raw, pending, since = held[name]
                live.raw, live.pending, live.since = raw, pending, since
                after = replace(state, sequence=max(state.sequence, before.sequence),
                                transition="restored")
            else:
                live.raw, live.pending = frozenset(), None
                after = _initial(live.definition, sim_time, tick, before.sequence, "restored")
            if _condition(after) != _condition(before):
                after = replace(after, sequence=after.sequence + 1, time=sim_time, tick=tick)
                changed.append(after)
            live.state = after
        return changed

    def _expire(self, live: _Live, tick: int, sim_time: float, wall: float) -> AlarmState:
        """The shelving of ``live`` ends, its time (``unshelve_at``) passed at ``wall``."""
        state = live.state
        where = f"alarm {state.name!r} of session {self.session!r}"
        if not state.shelved:
            raise AlarmRefused(f"{where} is not shelved", status="BadConditionNotShelved")
        if wall < state.unshelve_at:
            raise AlarmRefused(f"{where} is shelved until {state.unshelve_at:.3f}, not "
                               f"ended at {wall:.3f}", status="BadInvalidState")
        text = (f"{_title(live.definition)}: shelving ended "
                f"({'its time' if state.shelving == TIMED_SHELVED else 'MaxTimeShelved'} "
                f"is up)")
        live.state = replace(state, shelving=UNSHELVED, unshelve_at=0.0,
                             transition="unshelved", message=text, user="", time=sim_time,
                             tick=tick, sequence=state.sequence + 1)
        return live.state

    def _get(self, name: str) -> _Live:
        try:
            return self._alarms[name]
        except KeyError:
            known = ", ".join(self._alarms) or "none"
            raise NotFound(f"session {self.session!r} has no alarm {excerpt(name, 100)!r} "
                           f"(its alarms: {known})") from None


def merge(twin: Iterable[AlarmDefinition],
          session: Mapping[str, AlarmDefinition] | None) -> tuple[AlarmDefinition, ...]:
    """The twin's alarms with the session's overrides (by name; new names added)."""
    merged = {d.name: d for d in twin}
    merged.update(session or {})
    return tuple(merged.values())


# -- helpers -------------------------------------------------------------------------


def _ticks(delay: float, dt: float) -> int:
    return max(0, math.ceil(delay / dt - 1e-9))


def _retain(enabled: bool, active: bool, acked: bool, confirmed: bool) -> bool:
    return enabled and (active or not acked or not confirmed)


def _condition(state: AlarmState) -> tuple[object, ...]:
    return (state.enabled, state.active, state.limits, state.acked, state.confirmed,
            state.shelving, state.unshelve_at)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _shelve(d: AlarmDefinition, state: AlarmState, where: str, action: str,
            shelving_time: float, wall: float, user: str, comment: str, tick: int,
            sim_time: float) -> AlarmState:
    """TimedShelve, OneShotShelve or Unshelve of ``state`` (see the module docstring)."""
    by = f" by {user}" if user else ""
    if action == "unshelve":
        if not state.shelved:
            raise AlarmRefused(f"{where} is not shelved", status="BadConditionNotShelved")
        shelving, until, text = UNSHELVED, 0.0, f"{_title(d)}: unshelved{by}"
    elif action == "timed_shelve":
        if state.shelving == TIMED_SHELVED:
            raise AlarmRefused(f"{where} is timed-shelved already: Unshelve it first",
                               status="BadConditionAlreadyShelved")
        if not 0 < shelving_time <= d.max_time_shelved:  # (NaN too)
            raise AlarmRefused(
                f"{where}: ShelvingTime must be more than 0 and at most its "
                f"MaxTimeShelved, {d.max_time_shelved * 1000:.10g} ms "
                f"({_duration(d.max_time_shelved)}; got {shelving_time * 1000:.10g} ms)",
                status="BadShelvingTimeOutOfRange")
        shelving, until = TIMED_SHELVED, wall + shelving_time
        text = f"{_title(d)}: shelved{by} for {_duration(shelving_time)}"
    else:
        if state.shelving == ONE_SHOT_SHELVED:
            raise AlarmRefused(f"{where} is one-shot-shelved already",
                               status="BadConditionAlreadyShelved")
        shelving, until = ONE_SHOT_SHELVED, wall + d.max_time_shelved
        text = (f"{_title(d)}: shelved{by} until it goes inactive (at most "
                f"{_duration(d.max_time_shelved)})")
    if comment:
        text += f" ({comment})"
    return replace(state, shelving=shelving, unshelve_at=until,
                   transition="unshelved" if shelving == UNSHELVED else "shelved",
                   message=text, user=user, comment=comment or state.comment,
                   time=sim_time, tick=tick, sequence=state.sequence + 1)


def _initial(d: AlarmDefinition, sim_time: float, tick: int, sequence: int, transition: str,
             *, enabled: bool | None = None) -> AlarmState:
    on = d.enabled if enabled is None else enabled
    return AlarmState(
        name=d.name, enabled=on, active=False, limits=(), acked=True, confirmed=True,
        retain=False, severity=d.severity, message=f"{_title(d)}: normal", time=sim_time,
        active_time=sim_time, sequence=sequence, transition=transition, tick=tick)


def _exceeded(d: AlarmDefinition, value: Value, before: frozenset[str]) -> frozenset[str]:
    if d.kind == "off_normal":
        return frozenset({"OffNormal"}) if bool(value) != d.normal else frozenset()
    v = float(value)
    out = set()
    for name, limit, _ in d.limits:
        band = d.deadband if name in before else 0.0
        if name in _HIGH:
            if v > limit - band:
                out.add(name)
        elif v < limit + band:
            out.add(name)
    return frozenset(out)


def _title(d: AlarmDefinition) -> str:
    return d.message or f"{d.variable.component}.{d.variable.name}"


def _moved(d: AlarmDefinition, state: AlarmState, target: frozenset[str], value: Value,
           tick: int, sim_time: float) -> AlarmState:
    where = f"{d.variable.component}.{d.variable.name} = {value!r}"
    if d.kind == "off_normal":
        limits: tuple[str, ...] = ()
        active = bool(target)
        text = (f"{_title(d)}: {where}, not {d.normal!r} as normal" if active
                else f"{_title(d)}: {where}, back to normal")
    else:
        limits = tuple(n for n in LIMITS if n in target)
        active = bool(limits)
        if active:
            worst = max(limits, key=lambda n: _RANK[n])
            side = "above" if worst in _HIGH else "below"
            text = f"{_title(d)}: {where}, {side} the {worst} limit {d.limit(worst):g}"
        else:
            text = f"{_title(d)}: {where}, back within limits"
    escalated = active and (not state.active or _worse(limits, state.limits))
    acked = state.acked and not escalated
    confirmed = state.confirmed and not escalated
    transition = ("active" if active and not state.active else
                  "inactive" if not active else "limit")
    if not active and state.shelving == ONE_SHOT_SHELVED:  # (its one shot is over)
        state = replace(state, shelving=UNSHELVED, unshelve_at=0.0)
    return replace(
        state, active=active, limits=limits, acked=acked, confirmed=confirmed,
        retain=_retain(state.enabled, active, acked, confirmed),
        severity=d.severity_of(limits) if active else d.severity, message=text,
        time=sim_time, active_time=sim_time if active != state.active else state.active_time,
        sequence=state.sequence + 1, transition=transition, value=value, tick=tick)


def _worse(new: tuple[str, ...], old: tuple[str, ...]) -> bool:
    """A limit state more severe than any before, or one on the other side."""
    rank = max((_RANK[n] for n in new), default=0)
    was = max((_RANK[n] for n in old), default=0)
    high_before = any(n in _HIGH for n in old)
    return rank > was or any(n not in old and (n in _HIGH) != high_before for n in new)


# -- compiling the config --------------------------------------------------------------

_KIND_PREFERENCE = (Kind.OUTPUT, Kind.STATE, Kind.INPUT, Kind.PARAMETER)


def compile_alarms(configs: Mapping[str, AlarmConfig],
                   variables: Mapping[str, Iterable[Variable]],
                   fail: Callable[[str, str], None]) -> tuple[AlarmDefinition, ...]:
    """``[... .alarms]`` tables checked against the twin's components (``variables``:
    component -> its variables); each problem goes to ``fail(key path, message)``
    below ``alarms``, and the alarm is left out."""
    out: list[AlarmDefinition] = []
    for name, cfg in configs.items():
        path = f"alarms.{name}.variable"
        component, _, vname = cfg.variable.partition(".")
        if component not in variables:
            fail(path, f"alarm {name!r}: no component {component!r} (components: "
                       f"{', '.join(variables) or 'none'})")
            continue
        found = {v.kind: v for v in variables[component] if v.name == vname}
        var = next((found[k] for k in _KIND_PREFERENCE if k in found), None)
        if var is None:
            names = sorted({v.name for v in variables[component]})
            fail(path, f"alarm {name!r}: component {component!r} has no variable "
                       f"{vname!r} (its variables: {', '.join(names) or 'none'})")
            continue
        key = VarKey(component, var.kind, var.name)
        base = AlarmDefinition(name, key, "limit", deadband=float(cfg.deadband),
                               on_delay=float(cfg.on_delay), off_delay=float(cfg.off_delay),
                               severity=cfg.severity, message=cfg.message,
                               enabled=cfg.enabled,
                               max_time_shelved=float(cfg.max_time_shelved))
        if cfg.normal is not None:
            if var.datatype is not DataType.BOOLEAN:
                fail(path, f"alarm {name!r}: an off-normal alarm ('normal') needs a Boolean, "
                           f"and {cfg.variable!r} is a {var.datatype}; give it limits instead")
                continue
            out.append(replace(base, kind="off_normal", normal=cfg.normal))
            continue
        if var.datatype not in (DataType.DOUBLE, DataType.INT32):
            fail(path, f"alarm {name!r}: a limit alarm needs a number, and {cfg.variable!r} "
                       f"is a {var.datatype}; use 'normal' for a Boolean")
            continue
        severe = cfg.severity_high_high or min(1000, cfg.severity + 200)
        limits = tuple(
            (limit, float(value), severe if limit in ("HighHigh", "LowLow") else cfg.severity)
            for limit, value in (("HighHigh", cfg.high_high), ("High", cfg.high),
                                 ("Low", cfg.low), ("LowLow", cfg.low_low))
            if value is not None)
        out.append(replace(base, limits=limits, exclusive=cfg.exclusive))
    return tuple(out)
