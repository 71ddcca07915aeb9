"""What a face binding reaches in a session, and how its units convert (pure: no
asyncua, no I/O; ``config`` checks use it before any NodeSet is read).

A binding names a session variable ``component.variable``. A name a component
declares under more than one kind (a tank's ``level`` is its output and its
state) means the first of: output, state, input, parameter (what a machine's
node shows is what the twin computes). Outputs only feed the face; a client
write to a face variable bound to an input, state or parameter is the twin's
write (README, "Machine faces").

Units: the face's EngineeringUnits are the machine's, and a value crosses in
them: a twin computing a flow in m^3/s behind a face that shows l/min sends 60,000
times the number. ``conversion`` knows the units of ``UNITS`` by their symbol
(the twin's ``Variable.unit``) and by the display names and UNECE codes a NodeSet
writes (``m³/s``, ``l/min``, ``MQS``); two units of one quantity convert, two of
different quantities are a config error, and a unit it does not know is taken as
the twin's (logged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twin_server.engine.state import VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.models.base import Kind, Variable

#: the kinds a binding's name is looked up in, in order
ORDER = (Kind.OUTPUT, Kind.STATE, Kind.INPUT, Kind.PARAMETER)
#: the kinds a client write through a face reaches
WRITABLE = frozenset({Kind.STATE, Kind.INPUT, Kind.PARAMETER})


def resolve_variable(twin: TwinDefinition, name: str,
                     fail: Callable[[str], None]) -> tuple[VarKey, Variable] | None:
    """The variable ``component.variable`` of ``twin``, or None after telling ``fail``
    why there is none."""
    cname, _, vname = name.partition(".")
    names = [c.name for c in twin.components]
    if cname not in names:
        fail(f"twin {twin.name!r} has no component {cname!r} (its components: "
             f"{', '.join(names)})")
        return None
    declared = twin.component(cname).declared()
    for kind in ORDER:
        for var in declared:
            if var.kind is kind and var.name == vname:
                return VarKey(cname, kind, vname), var
    known = list(dict.fromkeys(v.name for v in declared))
    fail(f"component {cname!r} of twin {twin.name!r} has no variable {vname!r} "
         f"(it has: {', '.join(known) or 'none'})")
    return None


@dataclass(frozen=True, slots=True)
class Quantity:
    """A unit as a multiple of its quantity's base unit: ``base = value * factor +
    offset``."""

    quantity: str
    factor: float
    offset: float = 0.0


_Q = Quantity
#: units by every name a model or a NodeSet gives them (symbol, display name, UNECE code)
_UNITS: dict[str, Quantity] = {}


def _add(quantity: str, factor: float, *names: str, offset: float = 0.0) -> None:
    for n in names:
        _UNITS[n.casefold()] = _Q(quantity, factor, offset)


_add("length", 1.0, "m", "MTR", "metre", "meter")
_add("length", 1e-2, "cm", "CMT")
_add("length", 1e-3, "mm", "MMT")
_add("volume", 1.0, "m^3", "m³", "MTQ")
_add("volume", 1e-3, "l", "L", "LTR", "litre", "liter")
_add("flow", 1.0, "m^3/s", "m³/s", "MQS")
_add("flow", 1.0 / 3600, "m^3/h", "m³/h", "MQH")
_add("flow", 1e-3, "l/s", "L/s", "G51")
_add("flow", 1e-3 / 60, "l/min", "L/min", "L2")
_add("flow", 1e-3 / 3600, "l/h", "L/h", "E32")
_add("time", 1.0, "s", "SEC")
_add("time", 1e-3, "ms", "C26")
_add("time", 60.0, "min", "MIN")
_add("time", 3600.0, "h", "HUR")
_add("temperature", 1.0, "K", "KEL", "kelvin")
_add("temperature", 1.0, "degC", "°C", "CEL", offset=273.15)
_add("power", 1.0, "W", "WTT")
_add("power", 1e3, "kW", "KWT")
_add("pressure", 1.0, "Pa", "PAL")
_add("pressure", 1e3, "kPa", "KPA")
_add("pressure", 1e5, "bar", "BAR")
_add("ratio", 1.0, "1", "C62")
_add("ratio", 1e-2, "%", "P1")
_add("area", 1.0, "m^2", "m²", "MTK")


def quantity(unit: str) -> Quantity | None:
    """The quantity of ``unit`` (a symbol, display name or UNECE code), None if unknown."""
    return _UNITS.get(unit.strip().casefold())


@dataclass(frozen=True, slots=True)
class Conversion:
    """From the twin's unit to the face's: ``face = twin * scale + shift``."""

    scale: float = 1.0
    shift: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.shift == 0.0

    def to_face(self, value: float) -> float:
        return value * self.scale + self.shift

    def to_twin(self, value: float) -> float:
        return (value - self.shift) / self.scale


IDENTITY = Conversion()


class UnitMismatch(ValueError):
    """Two units of different quantities."""


def conversion(twin_unit: str, face_units: tuple[str, ...]) -> Conversion | None:
    """The conversion from ``twin_unit`` to the face's unit, given by any of the names
    in ``face_units`` (its display name, its UNECE code): none when either has no
    unit; None when either is not known (taken as equal); UnitMismatch for units of
    different quantities."""
    if not face_units or not twin_unit or twin_unit in face_units:
        return IDENTITY  # (a variable without a unit is in the face's)
    twin_q = quantity(twin_unit)
    face_q = next((q for q in map(quantity, face_units) if q is not None), None)
    if twin_q is None or face_q is None:
        return None
    if twin_q.quantity != face_q.quantity:
        raise UnitMismatch(f"the twin's unit {twin_unit!r} is a {twin_q.quantity}, the "
                           f"face's {face_units[0]!r} a {face_q.quantity}")
    if twin_q == face_q:
        return IDENTITY
    # base = twin * tf + to = face * ff + fo  =>  face = twin * tf/ff + (to - fo)/ff
    return Conversion(twin_q.factor / face_q.factor,
                      (twin_q.offset - face_q.offset) / face_q.factor)
