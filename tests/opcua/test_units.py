"""The unit table: UNECE codes packed as OPC UA UnitIds."""

from __future__ import annotations

import pytest

from twin_server.models import registry
from twin_server.opcua.units import UNECE_NAMESPACE, UNITS, engineering_units, unit_id


class TestUnitId:
    @pytest.mark.parametrize(("code", "value"), [
        pytest.param("MTR", 5067858, id="metre"),
        pytest.param("CEL", 4408652, id="celsius"),
        pytest.param("P1", 20529, id="percent"),
        pytest.param("C26", 4403766, id="millisecond"),
    ])
    def test_packed_ascii(self, code: str, value: int) -> None:
        """A UNECE code becomes its ASCII bytes as a big-endian integer (OPC UA Part 8)."""
        assert unit_id(code) == value


class TestTable:
    def test_every_model_unit_is_known(self) -> None:
        """Every unit symbol a built-in model declares is in the table."""
        symbols = {v.unit for model in registry.available().values()
                   for v in model.variables if v.unit}
        assert symbols <= set(UNITS), symbols - set(UNITS)

    def test_unknown_symbol(self) -> None:
        """A symbol outside the table still shows, with UnitId -1."""
        eu = engineering_units("furlong/fortnight")
        assert (eu.UnitId, eu.DisplayName.Text, eu.NamespaceUri) == (
            -1, "furlong/fortnight", UNECE_NAMESPACE)

    def test_degrees_celsius(self) -> None:
        """degC is shown as °C with the CEL code."""
        eu = engineering_units("degC")
        assert eu.DisplayName.Text == "°C"
        assert eu.UnitId == unit_id("CEL")
