"""Variable.coerce: the checks every write, parameter change and config value pass
through (whole-number Doubles and enumerated choices, as FMUs declare them)."""

from __future__ import annotations

import pytest

from twin_server.errors import OutOfRange, TypeMismatch
from twin_server.models.base import DataType, Kind, Variable

WIDE = Variable("count", Kind.INPUT, low=0.0, high=2.0**64 - 2048, integral=True)
MODE = Variable("mode", Kind.INPUT, datatype=DataType.INT32, default=1,
                choices=((1, "Off"), (2, "On"), (5, "Auto")))


class TestIntegral:
    def test_whole_numbers_pass(self) -> None:
        """A whole-number Double takes whole numbers, as ints or floats."""
        assert WIDE.coerce(3) == 3.0 and WIDE.coerce(2.0**60) == 2.0**60

    @pytest.mark.parametrize("value", [1.5, 0.1, -0.5])
    def test_fraction_is_a_type_mismatch(self, value: float) -> None:
        """A fraction into a whole-number Double is TypeMismatch naming the value."""
        with pytest.raises(TypeMismatch, match=f"whole number.*{value!r}"):
            WIDE.coerce(value)

    def test_range_still_applies(self) -> None:
        """A whole number outside the range is OutOfRange."""
        with pytest.raises(OutOfRange):
            WIDE.coerce(-1)


class TestChoices:
    @pytest.mark.parametrize("value", [1, 2, 5])
    def test_members_pass(self, value: int) -> None:
        """Each item's value is accepted."""
        assert MODE.coerce(value) == value

    @pytest.mark.parametrize("value", [0, 3, 4, 6])
    def test_non_member_is_out_of_range(self, value: int) -> None:
        """A value between or beside the items is OutOfRange listing them."""
        with pytest.raises(OutOfRange, match=r"one of 1 \(Off\), 2 \(On\), 5 \(Auto\)"):
            MODE.coerce(value)
