"""Unit symbols of our models mapped to OPC UA EngineeringUnits (UNECE Rec. 20 codes).

OPC UA Part 8 identifies a unit by its UNECE common code packed into an Int32
(``UnitId``) in the namespace ``http://www.opcfoundation.org/UA/units/un/cefact``.
A symbol with no UNECE code (``m^2.5/s``, a tank outlet's discharge coefficient)
is still shown by its display name, with ``UnitId`` -1 as Part 8 prescribes for
units outside the table.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from asyncua import ua

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"


class Unit(NamedTuple):
    code: str | None  # UNECE common code, None when it has none
    display: str  # what a client shows next to the value
    description: str


#: the symbols models declare (``Variable.unit``), and a few common neighbours
UNITS: dict[str, Unit] = {
    "m": Unit("MTR", "m", "metre"),
    "m^2": Unit("MTK", "m²", "square metre"),
    "m^3": Unit("MTQ", "m³", "cubic metre"),
    "m^3/s": Unit("MQS", "m³/s", "cubic metre per second"),
    "m^2.5/s": Unit(None, "m^2.5/s",
                    "square metre to the power 2.5 per second (outlet coefficient)"),
    "m/s": Unit("MTS", "m/s", "metre per second"),
    "s": Unit("SEC", "s", "second"),
    "ms": Unit("C26", "ms", "millisecond"),
    "degC": Unit("CEL", "°C", "degree Celsius"),
    "K": Unit("KEL", "K", "kelvin"),
    "K/W": Unit("B21", "K/W", "kelvin per watt"),
    "J/K": Unit("JE", "J/K", "joule per kelvin"),
    "J": Unit("JOU", "J", "joule"),
    "W": Unit("WTT", "W", "watt"),
    "Hz": Unit("HTZ", "Hz", "hertz"),
    "%": Unit("P1", "%", "percent"),
    "rad": Unit("C81", "rad", "radian"),
    "1/s": Unit("C97", "1/s", "reciprocal second"),
    "Pa": Unit("PAL", "Pa", "pascal"),
    "bar": Unit("BAR", "bar", "bar"),
    "kg": Unit("KGM", "kg", "kilogram"),
    "kg/s": Unit("KGS", "kg/s", "kilogram per second"),
    "V": Unit("VLT", "V", "volt"),
    "A": Unit("AMP", "A", "ampere"),
}


def unit_id(code: str) -> int:
    """The Int32 ``UnitId`` of a UNECE common code: its ASCII bytes, big-endian."""
    value = 0
    for char in code:
        value = (value << 8) | ord(char)
    return value


@functools.cache
def engineering_units(symbol: str) -> ua.EUInformation:
    """The EUInformation for ``symbol``; an unknown symbol gets UnitId -1 and its own text."""
    unit = UNITS.get(symbol)
    if unit is None:
        return ua.EUInformation(NamespaceUri=UNECE_NAMESPACE, UnitId=-1,
                                DisplayName=ua.LocalizedText(symbol),
                                Description=ua.LocalizedText(symbol))
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE,
        UnitId=-1 if unit.code is None else unit_id(unit.code),
        DisplayName=ua.LocalizedText(unit.display),
        Description=ua.LocalizedText(unit.description),
    )
