"""The checks and the write path every client front shares: OPC UA and the web.

An OPC UA method or write and the REST operation that does the same thing must
accept and refuse the same values with the same status and message. What is
checked before the session or the daemon is asked lives here, free of asyncua
and of HTTP: ``opcua/methods.py`` and ``opcua/server.py`` call it and attribute a
refusal to their argument; ``web/api.py`` calls it and answers the status name.
What the session or daemon checks itself (names, ranges, run states) is theirs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import structlog

from twin_server.engine.alarms import AlarmState
from twin_server.engine.faults import FaultKind, FaultSpec, check_spec, parse_target
from twin_server.engine.state import VarKey
from twin_server.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    OutOfRange,
    TwinServerError,
    TypeMismatch,
)
from twin_server.models.base import Kind, Value
from twin_server.runtime.host import HostedSession

log = structlog.get_logger(__name__)

#: highest real-time factor a client may set (as the config allows)
MAX_REALTIME_FACTOR = 1000.0
#: most ticks one Step call may take
MAX_STEP_COUNT = 1_000_000
#: seconds a Step call waits for its ticks before it answers (the Step runs on in
#: the background): well under the 1 s in which asyncua's client expects its
#: keep-alive read answered, which waits behind this call on the same connection
STEP_WAIT = 0.5

#: told of every accepted client write: (session, key, stored value, "client")
Written = Callable[[str, VarKey, Value, str], None]


def step_count(count: int) -> int:
    """Step's count of ticks (OutOfRange outside [1, MAX_STEP_COUNT])."""
    if not 1 <= count <= MAX_STEP_COUNT:
        raise OutOfRange(f"Step Count must be within [1, {MAX_STEP_COUNT}] (got {count})")
    return count


def fork_factor(realtime_factor: float) -> float:
    """Fork's real-time factor (OutOfRange outside [0, MAX_REALTIME_FACTOR], NaN too)."""
    if not 0.0 <= realtime_factor <= MAX_REALTIME_FACTOR:  # also refuses NaN
        raise OutOfRange(
            f"Fork RealtimeFactor must be within [0, {MAX_REALTIME_FACTOR:g}] "
            f"(got {realtime_factor}); 0 runs as fast as possible")
    return realtime_factor


def realtime_factor(value: object) -> float:
    """A value written to a session's RealtimeFactor (TypeMismatch, OutOfRange)."""
    if not isinstance(value, float):
        raise TypeMismatch(f"RealtimeFactor takes a Double (got {value!r})")
    if not 0.0 <= value <= MAX_REALTIME_FACTOR:  # also refuses NaN
        raise OutOfRange(f"RealtimeFactor must be within [0, {MAX_REALTIME_FACTOR:g}] "
                         f"(got {value}); 0 runs as fast as possible")
    return value


def input_key(name: str) -> VarKey:
    """ReleaseInput's ``component.input`` (InvalidArgument when it is not that form)."""
    component, dot, variable = name.partition(".")
    if not dot or not component or not variable or "." in variable:
        raise InvalidArgument(
            f"ReleaseInput Name is component.input, e.g. tank.inflow (got {name!r})")
    return VarKey(component, Kind.INPUT, variable)


def definition(text: str) -> str:
    """DefineTwin's TOML text (InvalidArgument when empty)."""
    if not text.strip():
        raise InvalidArgument(
            "DefineTwin takes a twin in TOML, e.g. [twins.tank] with "
            "[twins.tank.components.tank] model = \"water_tank\" (got an empty text)")
    return text


async def write_value(session: HostedSession, key: VarKey, value: Value,
                      written: Written | None) -> Value:
    """A client's write of one variable: the session takes it (or raises with nothing
    changed), then ``written`` (the history's record of client writes) is told the
    value as stored."""
    stored = await session.write(key, value)
    if written is not None:
        written(session.name, key, stored, "client")
    return stored


async def alarm_method(session: HostedSession, alarm: str, action: str, event: bytes | None,
                       comment: str, user: str, shelving_time: float = 0.0) -> AlarmState:
    """An alarm's Acknowledge, Confirm, AddComment, Enable, Disable, TimedShelve (for
    ``shelving_time`` wall-clock seconds), OneShotShelve or Unshelve (``action``:
    ``engine.alarms.ACTIONS``; ``expire_shelving`` from the shelving timer) as
    ``user`` (its ClientUserId), now by the wall clock: the session checks the EventId
    and the condition's state (``AlarmRefused`` with the Part 9 status, NotFound for
    an unknown alarm); logged either way. The condition after it."""
    try:
        state = await session.alarm(alarm, action, event, comment, user, shelving_time,
                                    time.time())
    except TwinServerError as exc:
        log.info("alarm_method_refused", session=session.name, alarm=alarm, method=action,
                 status=exc.status, reason=str(exc))
        raise
    log.info("alarm_method_called", session=session.name, alarm=alarm, method=action,
             user=user)
    return state


def fault_parameters(text: str) -> dict[str, float]:
    """InjectFault's Parameters: a JSON object of numbers ("" or {} for none)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"InjectFault Parameters is not JSON: {exc}; write an object "
                              f'such as {{"sigma": 0.01, "seed": 7}}') from None
    if not isinstance(value, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
        raise InvalidArgument(
            f"InjectFault Parameters is a JSON object of numbers, such as "
            f'{{"sigma": 0.01, "seed": 7}} (got {text[:100]!r})')
    return value


#: InjectFault's arguments, in order (``ArgumentRefused.index`` names one)
INJECT_ARGUMENTS = ("Target", "Kind", "Parameters", "Duration", "Id")


async def inject_fault(session: HostedSession, target: str, kind: str, parameters: str,
                       duration: float = 0.0, fault_id: str = "") -> str:
    """InjectFault(Target, Kind, Parameters, [Duration], [Id]) -> Id, over OPC UA and
    REST alike: each argument checked on its own first, so that a refusal names it
    (``ArgumentRefused``, its index in ``INJECT_ARGUMENTS``), then the session
    injects it (an unknown target: NotFound; an id in use: AlreadyExists)."""
    checks: tuple[tuple[int, Callable[[], Any]], ...] = (
        (0, lambda: parse_target(target)),
        (1, lambda: check_spec(FaultSpec(target, kind))
         if kind not in tuple(FaultKind) else None),
        (2, lambda: check_spec(FaultSpec(target, kind, fault_parameters(parameters)))),
        (3, lambda: check_spec(FaultSpec(target, kind, fault_parameters(parameters),
                                         duration))),
        (4, lambda: check_spec(FaultSpec(target, kind, fault_parameters(parameters),
                                         duration, fault_id))),
    )
    for index, check in checks:
        try:
            check()
        except TwinServerError as exc:
            raise ArgumentRefused(index, exc) from None
    if not math.isfinite(duration) or duration < 0:  # (NaN passes check_spec's compare)
        raise ArgumentRefused(3, InvalidArgument(
            f"InjectFault Duration is simulated seconds >= 0, 0 meaning until cleared "
            f"(got {duration})"))
    spec = FaultSpec(target, kind, fault_parameters(parameters), duration or None, fault_id)
    try:
        return await session.inject_fault(spec)
    except NotFound as exc:
        raise ArgumentRefused(0, exc) from None
    except AlreadyExists as exc:
        raise ArgumentRefused(4, exc) from None


class ArgumentRefused(Exception):
    """One argument of a method refused (InjectFault's, RunScenario's): its index and
    the refusal; OPC UA attributes it to that argument, REST answers the refusal."""

    def __init__(self, index: int, error: TwinServerError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error
