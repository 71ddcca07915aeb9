"""Casting values between the twin's types and the DataTypes PLCs declare.

A PLC declares its nodes with the narrow types of its program (REAL = Float,
INT = Int16, WORD = UInt16, BOOL = Boolean, BYTE = Byte, ...); the twin computes
in Double, Int32, Boolean and String. A write whose Variant type differs from the
node's DataType is refused by most servers (BadTypeMismatch), so every value is
cast to the node's type before it is sent, and every value received is cast to
the session variable's type before it is forced.

Decisions (README, "Hardware in the loop"):

* Towards an integer type a value is rounded to the nearest integer (ties to
  even, as IEC 61131-3 REAL_TO_INT does) and, when it lies outside the type's
  range, **clamped** to the nearest limit: an analog input card saturates at the
  end of its range rather than going silent. The cast reports the clamp, and
  the binding's status and counter show it. NaN has no nearest integer and is
  refused (BadOutOfRange); +-inf clamp.
* Towards Float a finite value beyond the float32 range clamps to +-3.4028235e38.
* Boolean <- number: non-zero is True. Number <- Boolean: 1 or 0.
  String <- anything: ``str(value)``. Number <- String: refused (BadTypeMismatch).
* From the PLC into a session variable: the same rules towards the variable's
  type, then a clamp into the variable's declared [low, high] (a valve command
  of -0.001 m^3/s becomes 0), again reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from asyncua import ua

from twin_server.errors import OutOfRange, TypeMismatch
from twin_server.models.base import DataType, Value, Variable

_V = ua.VariantType
FLOAT_MAX = 3.4028234663852886e38

#: inclusive ranges of the integer VariantTypes
INTEGER_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    _V.SByte: (-(2**7), 2**7 - 1),
    _V.Byte: (0, 2**8 - 1),
    _V.Int16: (-(2**15), 2**15 - 1),
    _V.UInt16: (0, 2**16 - 1),
    _V.Int32: (-(2**31), 2**31 - 1),
    _V.UInt32: (0, 2**32 - 1),
    _V.Int64: (-(2**63), 2**63 - 1),
    _V.UInt64: (0, 2**64 - 1),
}
FLOATS = frozenset({_V.Float, _V.Double})
#: the scalar types a binding can carry
SUPPORTED = frozenset({*INTEGER_RANGES, *FLOATS, _V.Boolean, _V.String})

#: standard DataTypes that are subtypes of a built-in one (ns=0 ids)
_SUBTYPES: dict[int, ua.VariantType] = {
    290: _V.Double,  # Duration
    29: _V.Int32,  # Enumeration: an enumerated value is encoded as Int32
    26: _V.Double,  # Number (abstract): servers declaring it send Doubles in practice
    27: _V.Int64,  # Integer (abstract)
    28: _V.UInt64,  # UInteger (abstract)
    11737: _V.UInt64,  # BitFieldMaskDataType
}


def variant_type(datatype: ua.NodeId) -> ua.VariantType | None:
    """The VariantType to write to a node of DataType ``datatype``, or None when it is
    not a scalar type a binding can carry (a structure, a vendor type)."""
    if datatype.NamespaceIndex != 0 or not isinstance(datatype.Identifier, int):
        return None
    ident = datatype.Identifier
    vtype = ua.VariantType(ident) if 1 <= ident <= 25 else _SUBTYPES.get(ident)
    return vtype if vtype in SUPPORTED else None


@dataclass(frozen=True, slots=True)
class Cast:
    """A cast value and whether it had to be clamped to fit."""

    value: Any
    clamped: bool = False


def to_plc(value: Value, vtype: ua.VariantType) -> Cast:
    """``value`` as ``vtype``; OutOfRange for NaN into an integer, TypeMismatch for a
    string into a number."""
    if vtype is _V.String:
        return Cast(value if isinstance(value, str) else _text(value))
    if isinstance(value, str):
        raise TypeMismatch(f"cannot send the string {value!r} to a {vtype.name} node")
    if vtype is _V.Boolean:
        return Cast(bool(value))
    number = float(value) if isinstance(value, bool) else value
    if vtype in FLOATS:
        number = float(number)
        if vtype is _V.Float and math.isfinite(number) and abs(number) > FLOAT_MAX:
            return Cast(math.copysign(FLOAT_MAX, number), True)
        return Cast(number)
    low, high = INTEGER_RANGES[vtype]
    return _integer(number, low, high, vtype.name)


def from_plc(value: Any, variable: Variable) -> Cast:
    """A value received from the PLC as ``variable``'s type, clamped into its range;
    OutOfRange or TypeMismatch when no such value exists."""
    dt = variable.datatype
    if dt is DataType.STRING:
        return Cast(value if isinstance(value, str) else _text(value))
    if isinstance(value, str) or not isinstance(value, int | float):
        raise TypeMismatch(f"{variable.kind} {variable.name!r} takes a {dt.value}, "
                           f"the PLC sent {type(value).__name__} {value!r}")
    if dt is DataType.BOOLEAN:
        return Cast(bool(value))
    number = float(value) if isinstance(value, bool) else value
    if dt is DataType.INT32:
        low = -(2**31) if variable.low is None else max(-(2**31), math.ceil(variable.low))
        high = 2**31 - 1 if variable.high is None else min(2**31 - 1, math.floor(variable.high))
        return _integer(number, low, high, f"{variable.kind} {variable.name!r}")
    number = float(number)
    if math.isnan(number):
        raise OutOfRange(f"{variable.kind} {variable.name!r}: the PLC sent NaN")
    low_f = -math.inf if variable.low is None else variable.low
    high_f = math.inf if variable.high is None else variable.high
    if number < low_f:
        return Cast(float(low_f), True)
    if number > high_f:
        return Cast(float(high_f), True)
    if not math.isfinite(number):  # an unbounded variable still needs a finite value
        raise OutOfRange(f"{variable.kind} {variable.name!r}: the PLC sent {number}")
    return Cast(number)


def _integer(number: float | int, low: int, high: int, what: str) -> Cast:
    if isinstance(number, float):
        if math.isnan(number):
            raise OutOfRange(f"NaN has no {what} value")
        if math.isinf(number):
            return Cast(high if number > 0 else low, True)
        number = round(number)
    if number < low:
        return Cast(low, True)
    if number > high:
        return Cast(high, True)
    return Cast(int(number))


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def changed(new: Value, old: Value | None, deadband: float) -> bool:
    """Whether ``new`` differs from ``old`` by more than ``deadband`` (absolute, numbers
    only; anything else compares by value). ``old`` None (never sent) is a change."""
    if old is None:
        return True
    if (isinstance(new, int | float) and not isinstance(new, bool)
            and isinstance(old, int | float) and not isinstance(old, bool)):
        if deadband > 0:
            return abs(new - old) > deadband
        return new != old
    return new != old or type(new) is not type(old)
