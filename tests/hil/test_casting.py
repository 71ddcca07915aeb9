"""Casts to the PLC's DataTypes and back to the session's types."""

from __future__ import annotations

import math
from typing import Any

import pytest
from asyncua import ua

from twin_server.errors import OutOfRange, TypeMismatch
from twin_server.hil.casting import FLOAT_MAX, changed, from_plc, to_plc, variant_type
from twin_server.models.base import DataType, Kind, Variable

V = ua.VariantType


class TestToPlc:
    @pytest.mark.parametrize(("value", "vtype", "expected", "clamped"), [
        pytest.param(12.6, V.Int16, 13, False, id="int16-rounds"),
        pytest.param(2.5, V.Int16, 2, False, id="int16-ties-to-even"),
        pytest.param(40000.0, V.Int16, 32767, True, id="int16-clamps-high"),
        pytest.param(-40000, V.Int16, -32768, True, id="int16-clamps-low"),
        pytest.param(-3.4, V.UInt16, 0, True, id="uint16-clamps-at-0"),
        pytest.param(300, V.Byte, 255, True, id="byte"),
        pytest.param(math.inf, V.Int32, 2**31 - 1, True, id="inf-clamps"),
        pytest.param(0.1, V.Float, 0.1, False, id="float"),
        pytest.param(1e39, V.Float, FLOAT_MAX, True, id="float-range"),
        pytest.param(True, V.Double, 1.0, False, id="bool-to-double"),
        pytest.param(0.0, V.Boolean, False, False, id="zero-is-false"),
        pytest.param(2.0, V.Boolean, True, False, id="nonzero-is-true"),
        pytest.param(1.5, V.String, "1.5", False, id="string"),
    ])
    def test_cast(self, value: Any, vtype: ua.VariantType, expected: Any, clamped: bool) -> None:
        """Values take the node's type; out-of-range integers saturate and say so."""
        cast = to_plc(value, vtype)
        assert cast.value == expected and type(cast.value) is type(expected)
        assert cast.clamped is clamped

    def test_nan_into_an_integer_is_refused(self) -> None:
        """NaN has no nearest integer."""
        with pytest.raises(OutOfRange):
            to_plc(math.nan, V.Int16)

    def test_string_into_a_number_is_refused(self) -> None:
        """A string is not sent to a numeric node."""
        with pytest.raises(TypeMismatch):
            to_plc("on", V.Double)


class TestFromPlc:
    VALVE = Variable("inflow", Kind.INPUT, low=0.0, high=0.5)
    COUNT = Variable("n", Kind.INPUT, datatype=DataType.INT32, low=0, high=10)
    FLAG = Variable("on", Kind.INPUT, datatype=DataType.BOOLEAN, default=False)

    @pytest.mark.parametrize(("value", "variable", "expected", "clamped"), [
        pytest.param(120, VALVE, 0.5, True, id="int-clamped-into-range"),
        pytest.param(-0.001, VALVE, 0.0, True, id="small-negative"),
        pytest.param(0.25, VALVE, 0.25, False, id="in-range"),
        pytest.param(3.7, COUNT, 4, False, id="rounded-int32"),
        pytest.param(99, COUNT, 10, True, id="int32-range"),
        pytest.param(1, FLAG, True, False, id="number-to-bool"),
    ])
    def test_cast(self, value: Any, variable: Variable, expected: Any, clamped: bool) -> None:
        """Values take the variable's type and range."""
        cast = from_plc(value, variable)
        assert cast.value == expected and type(cast.value) is type(expected)
        assert cast.clamped is clamped

    def test_nan_is_refused(self) -> None:
        """A NaN command keeps the input's last value (the caller keeps it)."""
        with pytest.raises(OutOfRange):
            from_plc(math.nan, self.VALVE)


class TestDataTypes:
    @pytest.mark.parametrize(("nodeid", "expected"), [
        pytest.param(ua.NodeId(10), V.Float, id="float"),
        pytest.param(ua.NodeId(4), V.Int16, id="int16"),
        pytest.param(ua.NodeId(290), V.Double, id="duration"),
        pytest.param(ua.NodeId(22), None, id="structure"),
        pytest.param(ua.NodeId(3003, 3), None, id="vendor-type"),
    ])
    def test_variant_type(self, nodeid: ua.NodeId, expected: ua.VariantType | None) -> None:
        """Built-in scalar DataTypes map to their VariantType; others are not carried."""
        assert variant_type(nodeid) == expected


class TestDeadband:
    @pytest.mark.parametrize(("new", "old", "deadband", "expected"), [
        pytest.param(1.0, None, 0.5, True, id="never-sent"),
        pytest.param(1.0, 1.0, 0.0, False, id="same"),
        pytest.param(1.4, 1.0, 0.5, False, id="within"),
        pytest.param(1.6, 1.0, 0.5, True, id="beyond"),
        pytest.param(True, 1, 0.0, True, id="bool-vs-int"),
    ])
    def test_changed(self, new: Any, old: Any, deadband: float, expected: bool) -> None:
        """Only a change larger than the absolute deadband counts."""
        assert changed(new, old, deadband) is expected
