"""Fault injection: what a broken sensor, actuator or wire does to one variable.

Pure and synchronous, owned by its ``Session`` (``Session.inject_fault``,
``clear_fault``, ``clear_faults``, ``faults``). A fault sits on one input or
output of a component (``FaultSpec.target``, ``"tank.Outputs.level"``) and
transforms its value where it flows, on simulated time (tick ``j``, the value at
``t_j``):

* on an **output**, what every downstream component, client, history and HIL
  binding sees (the model's own value is kept, and comes back when it clears);
* on an **input**, what the component gets (its source's value, a forced one or
  its default, transformed); reads of the input show what it gets.

Kinds, with their parameters (numbers; ``x`` is the true value at tick ``j``, the
fault started at tick ``s``, ``dt`` is the step size):

=========  ===================================  =====================================
kind       parameters                           value at tick j
=========  ===================================  =====================================
stuck      value (default: the value at ``s``)  ``value``
offset     offset                               ``x + offset``
drift      rate (per simulated second)          ``x + rate * (j - s) * dt``
noise      sigma (>= 0), seed (default 0)       ``x + sigma * N(seed, target, j)``
spike      amplitude, rate (spikes per          ``x + amplitude`` on ticks where
           simulated second), seed              ``U(seed, target, j) < rate * dt``, else ``x``
quantise   step (> 0)                           ``step * floor(x / step + 1/2)``
delay      delay (s, >= 0)                      ``x`` at tick ``j - round(delay / dt)``
                                                (the value at ``s`` before that)
dropout    (none)                               the value shown at ``s``, held, with
                                                StatusCode BadSensorFailure
=========  ===================================  =====================================

``N`` and ``U`` are a standard normal and a uniform draw that are pure functions
of (seed, target, tick) (splitmix64 of the three): no generator state, so a
seeded fault gives bit-identical values whatever else happened, after a
Snapshot and Restore, in a Fork, in a worker process or in-process. Only
``delay`` (its buffer of past values) and the held values of ``stuck`` and
``dropout`` are state, and they travel in the session's snapshot.

Numeric kinds (offset, drift, noise, spike, quantise) apply to Double and Int32
variables (an Int32's result is rounded); stuck, delay and dropout to any type
(a stuck Boolean takes 0 or 1). A fault on an input is held to the input's
range (its model's contract); one on an output is not (a sensor may read out of
range). Several faults on one variable apply in the order they were injected.

Dropout: the variable's status is ``BAD_SENSOR_FAILURE`` (OPC UA Part 8
Bad_SensorFailure: the value comes from a sensor that failed, which is what a
dropout of a sensor is; Bad_NoCommunication is for a link with no last value,
and the HIL link faults use the link-loss codes). Its value stays the last one
shown before the dropout, and that held value is what downstream components
(and HIL bindings to a PLC) get: a program that ignores the status sees a frozen
sensor. OPC UA clients read the status with a null value (Part 4 7.7.1: the
value of a Bad DataValue is null; asyncua's server enforces it).

A ``duration`` (simulated seconds, rounded to whole ticks, at least one) ends
the fault by itself: it acts on ticks ``s .. s+n-1`` and is gone at tick
``s+n``. Each start and end is a session event (``fault_injected``,
``fault_cleared``), which the OPC UA layer turns into an OPC UA event and
the history records.
"""

from __future__ import annotations

import enum
import math
import re
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twin_server.errors import InvalidArgument
from twin_server.models.base import DataType, Kind, Value, Variable

#: OPC UA StatusCode Bad_SensorFailure (Part 8), the status of a dropped-out value
BAD_SENSOR_FAILURE = 0x808C0000

#: session event kinds of a fault's start and end
FAULT_INJECTED = "fault_injected"
FAULT_CLEARED = "fault_cleared"
#: severities of those events (a fault makes the twin lie on purpose: worth a look)
SEVERITY_INJECTED = 500
SEVERITY_CLEARED = 300

#: an id names a node (Faults/<id>): as a config name
ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ID = 64


class FaultKind(enum.StrEnum):
    STUCK = "stuck"
    OFFSET = "offset"
    DRIFT = "drift"
    NOISE = "noise"
    SPIKE = "spike"
    QUANTISE = "quantise"
    DELAY = "delay"
    DROPOUT = "dropout"


@dataclass(frozen=True, slots=True)
class _Param:
    required: bool
    default: float = 0.0
    #: "" any finite number; ">=0", ">0", "0..1", "int"
    rule: str = ""


#: each kind's parameters (module docstring)
PARAMETERS: Mapping[FaultKind, Mapping[str, _Param]] = {
    FaultKind.STUCK: {"value": _Param(False)},
    FaultKind.OFFSET: {"offset": _Param(True)},
    FaultKind.DRIFT: {"rate": _Param(True)},
    FaultKind.NOISE: {"sigma": _Param(True, rule=">=0"), "seed": _Param(False, 0, "int")},
    FaultKind.SPIKE: {"amplitude": _Param(True), "rate": _Param(True, rule=">=0"),
                      "seed": _Param(False, 0, "int")},
    FaultKind.QUANTISE: {"step": _Param(True, rule=">0")},
    FaultKind.DELAY: {"delay": _Param(True, rule=">=0")},
    FaultKind.DROPOUT: {},
}
#: kinds that do arithmetic on the value (Double and Int32 only)
NUMERIC_KINDS = frozenset({FaultKind.OFFSET, FaultKind.DRIFT, FaultKind.NOISE,
                           FaultKind.SPIKE, FaultKind.QUANTISE})
#: the longest delay, in ticks (its buffer is kept in memory and in snapshots)
MAX_DELAY_TICKS = 100_000


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A fault to inject: the engine-level API (``Session.inject_fault``), the config's
    ``[[sessions.<s>.faults]]`` entries and the OPC UA InjectFault all build one.

    ``target``: ``component.Inputs.name`` or ``component.Outputs.name`` (a leading
    ``Components.`` is accepted: the NodeId tail below the session). ``parameters``:
    the kind's (module docstring). ``duration``: simulated seconds, None (or 0)
    until cleared. ``id``: names it (letters, digits, _); "" lets the session pick
    ``f1``, ``f2``, ..."""

    target: str
    kind: FaultKind | str
    parameters: Mapping[str, float] = field(default_factory=dict)
    duration: float | None = None
    id: str = ""


@dataclass(frozen=True, slots=True)
class FaultState:
    """An active fault as clients see it (``Session.faults``)."""

    id: str
    target: str  # component.Inputs|Outputs.name
    kind: FaultKind
    parameters: Mapping[str, float]  # every parameter, defaults filled in
    duration: float | None  # simulated seconds; None: until cleared
    started: float  # simulated time it started at, s
    remaining: float | None  # simulated seconds left; None: until cleared
    from_config: bool  # defined in the config (Reset brings it back)
    dropout: bool  # the value's status is Bad


def parse_target(target: str) -> tuple[str, Kind, str]:
    """(component, INPUT or OUTPUT, name) of ``target``; InvalidArgument if malformed."""
    text = target[len("Components."):] if target.startswith("Components.") else target
    parts = text.split(".")
    folders = {Kind.INPUT.folder: Kind.INPUT, Kind.OUTPUT.folder: Kind.OUTPUT}
    if len(parts) != 3 or not parts[0] or not parts[2] or parts[1] not in folders:
        raise InvalidArgument(
            f"a fault's target is component.Inputs.name or component.Outputs.name, "
            f"e.g. tank.Outputs.level (got {target[:100]!r})")
    return parts[0], folders[parts[1]], parts[2]


def check_spec(spec: FaultSpec) -> tuple[FaultKind, dict[str, float], float | None]:
    """The kind, the complete parameters and the duration of ``spec``, checked
    without a session (the config does this): InvalidArgument naming what is wrong."""
    try:
        kind = FaultKind(spec.kind)
    except ValueError:
        raise InvalidArgument(
            f"{spec.kind!r} is not a kind of fault (kinds: "
            f"{', '.join(k.value for k in FaultKind)})") from None
    if spec.id and (len(spec.id) > MAX_ID or not ID_PATTERN.match(spec.id)):
        raise InvalidArgument(
            f"a fault's id is letters, digits and _, not starting with a digit, at most "
            f"{MAX_ID} characters (got {spec.id[:100]!r})")
    known = PARAMETERS[kind]
    if not isinstance(spec.parameters, Mapping):
        raise InvalidArgument(f"a {kind} fault's parameters map name -> number "
                              f"(got {type(spec.parameters).__name__})")
    unknown = [name for name in spec.parameters if name not in known]
    if unknown:
        raise InvalidArgument(
            f"a {kind} fault has no parameter {', '.join(map(repr, unknown))} "
            f"(its parameters: {', '.join(known) or 'none'})")
    params: dict[str, float] = {}
    for name, rule in known.items():
        if name not in spec.parameters:
            if rule.required:
                raise InvalidArgument(
                    f"a {kind} fault needs its parameter {name!r} (its parameters: "
                    f"{', '.join(known)})")
            if name == "value":
                continue  # stuck at the value it has when the fault starts
            params[name] = rule.default
            continue
        value = spec.parameters[name]
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise InvalidArgument(f"parameter {name!r} of a {kind} fault must be a finite "
                                  f"number (got {value!r})")
        if (rule.rule == ">=0" and value < 0) or (rule.rule == ">0" and value <= 0):
            bound = "> 0" if rule.rule == ">0" else ">= 0"
            raise InvalidArgument(f"parameter {name!r} of a {kind} fault must be {bound} "
                                  f"(got {value!r})")
        if rule.rule == "int" and (value != int(value) or not 0 <= value < 2**63):
            raise InvalidArgument(f"parameter {name!r} of a {kind} fault must be a whole "
                                  f"number >= 0 (got {value!r})")
        params[name] = float(value)
    duration = spec.duration
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float) \
                or not math.isfinite(duration) or duration < 0:
            raise InvalidArgument(f"a fault's duration is simulated seconds >= 0, 0 or none "
                                  f"meaning until cleared (got {duration!r})")
        duration = float(duration) or None
    return kind, params, duration


# -- pure draws ------------------------------------------------------------------------

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(seed: int, salt: int, tick: int, stream: int = 0) -> float:
    """A uniform draw in (0, 1), a pure function of its arguments."""
    h = _mix(_mix(_mix(seed & _MASK) ^ salt) ^ (tick & _MASK) ^ (stream << 62))
    return ((h >> 11) + 0.5) / 9007199254740992.0  # 2**53


def normal(seed: int, salt: int, tick: int) -> float:
    """A standard normal draw (Box-Muller), a pure function of its arguments."""
    u1 = uniform(seed, salt, tick, 1)
    u2 = uniform(seed, salt, tick, 2)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# -- active faults ---------------------------------------------------------------------


@dataclass(slots=True)
class Active:
    """One injected fault, with its state (part of the session's snapshot)."""

    id: str
    target: str  # normalised: component.Inputs|Outputs.name
    component: int  # the component's evaluation index
    var_kind: Kind  # INPUT or OUTPUT
    name: str
    variable: Variable
    kind: FaultKind
    parameters: dict[str, float]
    duration: float | None
    start: int  # tick it started at
    end: int | None  # first tick it no longer acts on (None: until cleared)
    from_config: bool
    salt: int = 0
    #: stuck: its value; dropout: the value held
    held: Value = 0.0
    #: delay: the true values of the last ticks (oldest first), and the latest tick in it
    buffer: deque[Value] | None = None
    last: int = 0

    def acts(self, tick: int) -> bool:
        return self.start <= tick and (self.end is None or tick < self.end)

    def observe(self, tick: int, true: Value) -> None:
        """Record the true value at ``tick`` (a delay's buffer; once per tick)."""
        buf = self.buffer
        if buf is None:
            return
        if tick > self.last:
            buf.append(true)
            self.last = tick
        elif tick == self.last:
            buf[-1] = true

    def apply(self, value: Value, tick: int, step_size: float) -> Value:
        """The value at ``tick`` through this fault (no state changes)."""
        if not self.acts(tick):
            return value
        kind = self.kind
        p = self.parameters
        if kind is FaultKind.STUCK or kind is FaultKind.DROPOUT:
            return self.held
        if kind is FaultKind.DELAY:
            assert self.buffer is not None
            return self.buffer[0]
        x = float(value)
        if kind is FaultKind.OFFSET:
            x += p["offset"]
        elif kind is FaultKind.DRIFT:
            x += p["rate"] * ((tick - self.start) * step_size)
        elif kind is FaultKind.NOISE:
            x += p["sigma"] * normal(int(p["seed"]), self.salt, tick)
        elif kind is FaultKind.SPIKE:
            if uniform(int(p["seed"]), self.salt, tick) < p["rate"] * step_size:
                x += p["amplitude"]
        else:  # QUANTISE
            q = p["step"]
            x = q * math.floor(x / q + 0.5)
        return _typed(self.variable, x, self.var_kind is Kind.INPUT)

    def state(self, step_size: float, tick: int) -> FaultState:
        remaining = None if self.end is None else max(0, self.end - tick) * step_size
        params = dict(self.parameters)
        if self.kind is FaultKind.STUCK and "value" not in params:
            params["value"] = float(self.held)  # (taken from the value at the start)
        return FaultState(self.id, self.target, self.kind, params, self.duration,
                          self.start * step_size, remaining, self.from_config,
                          self.kind is FaultKind.DROPOUT)


def make_active(spec: FaultSpec, *, fault_id: str, component: int, var_kind: Kind, name: str,
                target: str, variable: Variable, start: int, step_size: float,
                shown: Value, true: Value, from_config: bool) -> Active:
    """An ``Active`` fault from a checked ``spec`` on a variable whose shown value is
    ``shown`` and true value ``true`` at tick ``start``; InvalidArgument for a kind
    that does not fit the variable's type, or a stuck value outside an input's range."""
    kind, params, duration = check_spec(spec)
    datatype = variable.datatype
    if kind in NUMERIC_KINDS and datatype not in (DataType.DOUBLE, DataType.INT32):
        raise InvalidArgument(
            f"a {kind} fault needs a Double or Int32 variable; {target} is {datatype} "
            f"(faults for any type: stuck, delay, dropout)")
    end = None
    if duration is not None:
        end = start + max(1, round(duration / step_size))
    active = Active(fault_id, target, component, var_kind, name, variable, kind, params,
                    duration, start, end, from_config, salt=zlib.crc32(target.encode()),
                    held=shown, last=start)
    if kind is FaultKind.STUCK and "value" in params:
        try:
            active.held = _typed(variable, params["value"], var_kind is Kind.INPUT,
                                 strict=True)
        except InvalidArgument as exc:
            raise InvalidArgument(f"stuck fault on {target}: {exc}") from None
    elif kind is FaultKind.DELAY:
        ticks = round(params["delay"] / step_size)
        if ticks > MAX_DELAY_TICKS:
            raise InvalidArgument(
                f"a delay fault holds at most {MAX_DELAY_TICKS:,} ticks of values; "
                f"{params['delay']:g} s is {ticks:,} ticks of {step_size:g} s")
        active.buffer = deque([true] * (ticks + 1), maxlen=ticks + 1)
    return active


def _typed(variable: Variable, x: float, clamp: bool, *, strict: bool = False) -> Value:
    """``x`` as ``variable``'s type; on an input (``clamp``) held to its range."""
    datatype = variable.datatype
    if datatype is DataType.BOOLEAN:
        if strict and x not in (0.0, 1.0):
            raise InvalidArgument(f"a Boolean is stuck at 0 or 1 (got {x!r})")
        return x != 0.0
    if datatype is DataType.STRING:
        if strict:
            raise InvalidArgument("a String variable cannot be stuck at a number; "
                                  "leave out the value to hold the one it has")
        return str(x)
    if clamp:
        low, high = variable.low, variable.high
        if strict and ((low is not None and x < low) or (high is not None and x > high)):
            raise InvalidArgument(
                f"{x!r} is outside the input's range [{_bound(low)}, {_bound(high)}]")
        if low is not None and x < low:
            x = low
        if high is not None and x > high:
            x = high
    if datatype is DataType.INT32:
        return int(max(-2**31, min(2**31 - 1, math.floor(x + 0.5))))
    return x


def _bound(value: float | None) -> str:
    return "-inf" if value is None else f"{value:g}"


def describe(active: Active) -> str:
    """``noise (sigma=0.01, seed=7) on tank.Outputs.level for 2 s``: for messages."""
    params = ", ".join(f"{k}={v:g}" for k, v in active.parameters.items())
    text = f"{active.kind}{f' ({params})' if params else ''} on {active.target}"
    return text + (f" for {active.duration:g} s" if active.duration else " until cleared")


def snapshot_of(active: Active) -> dict[str, Any]:
    """A detached copy of ``active`` for a session snapshot (no shared buffer)."""
    copy = {name: getattr(active, name) for name in Active.__slots__}
    if active.buffer is not None:
        copy["buffer"] = deque(active.buffer, maxlen=active.buffer.maxlen)
    copy["parameters"] = dict(active.parameters)
    return copy


def from_snapshot(saved: Mapping[str, Any]) -> Active:
    copy = dict(saved)
    if copy.get("buffer") is not None:
        buf = copy["buffer"]
        copy["buffer"] = deque(buf, maxlen=buf.maxlen)
    copy["parameters"] = dict(copy["parameters"])
    return Active(**copy)
