"""The contract between a model and the engine: declared variables, reset and step.

A model is a pure, synchronous block: no I/O, no asyncio, no OPC UA. It declares
its variables (name, kind, data type, unit, range, default) and implements

* ``reset(parameters, initial)``: take the full parameter set and initial state
  values and return the outputs at the start time;
* ``step(t, dt, inputs)``: advance from ``t`` to ``t + dt`` with the inputs held
  over the interval and return the outputs at ``t + dt``.

``direct_feedthrough`` says whether a step's outputs depend on that step's
inputs (a gain, a PID) or only on the state carried in from before (a tank's
level, a lag's output): only feedthrough components order the graph, so a loop
through a tank is fine and a loop of gains is an algebraic loop.

A model that asks to end the simulation (an FMU setting terminateSimulation)
raises ``SimulationEnded`` from ``step`` with its outputs where it stopped: not
a fault, the end of the run (the session finishes the tick and halts).
"""

from __future__ import annotations

import abc
import copy
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from twin_server.errors import NotFound, NotWritable, OutOfRange, TypeMismatch
from twin_server.logs import excerpt

Value = float | int | bool | str


class Kind(enum.StrEnum):
    """What a variable is to its component; also the folder it appears in over OPC UA."""

    INPUT = "input"
    OUTPUT = "output"
    STATE = "state"
    PARAMETER = "parameter"

    @property
    def folder(self) -> str:
        return {"input": "Inputs", "output": "Outputs", "state": "States",
                "parameter": "Parameters"}[self.value]


class DataType(enum.StrEnum):
    """The value types a variable may have; named as OPC UA names them."""

    DOUBLE = "Double"
    INT32 = "Int32"
    BOOLEAN = "Boolean"
    STRING = "String"


_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True, slots=True)
class Variable:
    """One declared variable of a model.

    ``unit`` is a symbol (``m``, ``m^3/s``, ``degC``, ``W``); the OPC UA layer maps it
    to a UNECE code for EngineeringUnits. ``low``/``high`` bound the value (either
    may be None); for parameters ``tunable`` says whether a change takes effect at
    the next tick while running (True) or only at Reset (False). ``integral``: a
    Double that must hold a whole number (an FMI UInt32, Int64 or UInt64 carried as
    Double); ``choices``: the only values allowed, each with its name (an FMI
    enumeration's items).
    """

    name: str
    kind: Kind
    unit: str = ""
    low: float | None = None
    high: float | None = None
    default: Value = 0.0
    datatype: DataType = DataType.DOUBLE
    description: str = ""
    tunable: bool = True
    integral: bool = False
    choices: tuple[tuple[int, str], ...] = ()

    def coerce(self, value: Any) -> Value:
        """Return ``value`` as this variable's type, or raise TypeMismatch / OutOfRange.

        Ints are accepted for Double; bools are never taken as numbers; a Double
        must be finite. The message names the variable, the value and the range.
        """
        dt = self.datatype
        if dt is DataType.BOOLEAN:
            if not isinstance(value, bool):
                raise TypeMismatch(f"{self.kind} {self.name!r} takes a Boolean "
                                   f"(got {type(value).__name__} {_shown(value)})")
            return value
        if dt is DataType.STRING:
            if not isinstance(value, str):
                raise TypeMismatch(f"{self.kind} {self.name!r} takes a String "
                                   f"(got {type(value).__name__} {_shown(value)})")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeMismatch(f"{self.kind} {self.name!r} takes a {dt.value} "
                               f"(got {type(value).__name__} {_shown(value)})")
        if dt is DataType.INT32:
            if isinstance(value, float):
                if not value.is_integer():
                    raise TypeMismatch(f"{self.kind} {self.name!r} takes an Int32 "
                                       f"(got non-integral {value!r})")
                value = int(value)
            if not _INT32[0] <= value <= _INT32[1]:
                raise OutOfRange(f"{self.kind} {self.name!r} must fit an Int32 "
                                 f"(got {excerpt(value, 50)})")
            result: Value = value
        else:
            result = float(value)
            if not math.isfinite(result):
                raise OutOfRange(f"{self.kind} {self.name!r} must be finite (got {result})")
            if self.integral and not result.is_integer():
                raise TypeMismatch(f"{self.kind} {self.name!r} takes a whole number "
                                   f"(got non-integral {value!r})")
        self.check_range(result)
        return result

    def check_range(self, value: Value) -> None:
        """Raise OutOfRange when a numeric value lies outside [low, high]."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if self.choices and value not in {v for v, _ in self.choices}:
            allowed = ", ".join(f"{v} ({name})" for v, name in self.choices)
            raise OutOfRange(f"{self.kind} {self.name!r} must be one of {allowed} (got {value})")
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise OutOfRange(
                f"{self.kind} {self.name!r} must be within {self.range_text()} "
                f"{self.unit}".rstrip() + f" (got {value})"
            )

    def range_text(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"


def _shown(value: object) -> str:
    """A refused value in a message: an excerpt (it may be a client's whole argument)."""
    return repr(excerpt(value, 100)) if isinstance(value, str) else excerpt(value, 100)


class SimulationEnded(Exception):
    """Raised from ``step`` by a model that asks to end the simulation (an FMU's
    terminateSimulation). Not a fault: the session takes ``outputs`` (the model's
    outputs where it stopped, at simulated time ``time``) as the tick's, finishes the
    tick and halts with a ``terminated`` event carrying the message. Only Reset (or
    Restore) runs the model again."""

    def __init__(self, message: str, *, time: float, outputs: Mapping[str, Value] | None = None,
                 function: str = "") -> None:
        super().__init__(message)
        self.time = time
        self.outputs: dict[str, Value] = dict(outputs or {})
        self.function = function


class Model(abc.ABC):
    """Base of every component model. Subclasses declare ``variables`` and implement
    ``reset`` and ``step``; they never do I/O.

    The engine guarantees that ``reset`` and ``step`` receive complete mappings of
    coerced, in-range values: every parameter, every input.
    """

    #: the variables of every instance; a model whose variables depend on its
    #: configuration (an FMU) sets ``self.variables`` in ``__init__`` instead.
    variables: ClassVar[tuple[Variable, ...]] = ()
    direct_feedthrough: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        """``options`` are non-variable settings from the config (an FMU's path)."""
        self.options = dict(options or {})

    @classmethod
    def ranges(cls, parameters: Mapping[str, Value]) -> dict[str, tuple[float, float]]:
        """The ranges that ``parameters`` (every parameter, coerced and in range) set
        for the model's other variables, by name (an output, state or input of that
        name): a tank's level lies within 0..height. OPC UA shows them as the
        variables' EURange, following the parameters as they change; a variable not
        named here has its declared ``low``..``high`` (no EURange where either end
        is open). Pure; the default sets none."""
        return {}

    @classmethod
    def declare(cls, options: Mapping[str, Any]) -> tuple[Variable, ...]:
        """The variables an instance made with ``options`` will have, without making
        one: config checks call this. Override where they depend on the options
        (an FMU reads its modelDescription); the default is ``cls.variables``."""
        return cls.variables

    # -- the contract ---------------------------------------------------------------

    @abc.abstractmethod
    def reset(self, parameters: Mapping[str, Value],
              initial: Mapping[str, Value]) -> dict[str, Value]:
        """Take all parameters and initial state values; return the outputs at start."""

    @abc.abstractmethod
    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        """Advance from ``t`` to ``t + dt`` with ``inputs`` held; return the outputs
        at ``t + dt``."""

    def set_start_inputs(self, inputs: Mapping[str, Value]) -> None:  # noqa: B027 - optional
        """The values the inputs will hold in the first tick as far as they are known
        before ``reset`` (a client's forced value, else the configured one), for a
        model whose start depends on them (an FMU initialises with them, as FMPy
        applies its input signals in Initialization Mode). The engine calls it before
        every ``reset``; the default ignores them."""

    def set_parameter(self, name: str, value: Value) -> None:
        """Apply a tunable parameter from the next step on. The default stores it in
        ``self.parameters``; override where a parameter needs derived values updated."""
        self.parameters[name] = value

    def get_states(self) -> dict[str, Value]:
        """The current values of the declared STATE variables."""
        return {}

    def set_states(self, states: Mapping[str, Value]) -> None:
        """Overwrite some STATE variables (coerced and in range) from the next step on."""
        if states:
            raise NotWritable(f"{type(self).__name__} has no writable states")

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately a no-op
        """Release what the instance holds outside Python (an FMU instance); called
        when its session goes. Idempotent; the default holds nothing."""

    def snapshot(self) -> Any:
        """An opaque copy of everything the model carries, for Snapshot and Fork."""
        return copy.deepcopy(self.__dict__)

    def restore(self, snapshot: Any) -> None:
        """Return to a state taken by ``snapshot``."""
        self.__dict__.update(copy.deepcopy(snapshot))

    # -- helpers for subclasses and the engine -------------------------------------

    parameters: dict[str, Value]

    @classmethod
    def declared(cls, kind: Kind) -> tuple[Variable, ...]:
        return tuple(v for v in cls.variables if v.kind is kind)

    def variables_of(self, kind: Kind) -> tuple[Variable, ...]:
        return tuple(v for v in self.variables if v.kind is kind)

    def variable(self, kind: Kind, name: str) -> Variable:
        for v in self.variables:
            if v.kind is kind and v.name == name:
                return v
        names = ", ".join(v.name for v in self.variables if v.kind is kind) or "none"
        raise NotFound(f"{type(self).__name__} has no {kind} {name!r} (its {kind}s: {names})")

