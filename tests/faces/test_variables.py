"""Units between a twin and its face (faces/variables.py): pure, no server."""

from __future__ import annotations

import pytest

from twin_server.faces.variables import IDENTITY, UnitMismatch, conversion


class TestConversion:
    @pytest.mark.parametrize(("twin", "face", "value", "shown"), [
        pytest.param("m^3/s", ("l/min", "L2"), 0.01, 600.0, id="flow"),
        pytest.param("m", ("mm",), 1.25, 1250.0, id="length"),
        pytest.param("degC", ("K", "KEL"), 20.0, 293.15, id="offset"),
        pytest.param("K", ("°C", "CEL"), 293.15, 20.0, id="offset-back"),
        pytest.param("m^3/s", ("whatever", "MQH"), 1.0, 3600.0, id="by-unece-code"),
    ])
    def test_converts_both_ways(self, twin: str, face: tuple[str, ...], value: float,
                                shown: float) -> None:
        """A twin's value shows in the face's unit, and a face's value comes back."""
        convert = conversion(twin, face)
        assert convert is not None
        assert convert.to_face(value) == pytest.approx(shown)
        assert convert.to_twin(shown) == pytest.approx(value)

    def test_same_or_missing_unit(self) -> None:
        """The same unit, or none on either side, is no conversion."""
        assert conversion("m^2.5/s", ("m^2.5/s",)) is IDENTITY
        assert conversion("", ("m",)) is IDENTITY
        assert conversion("m", ()) is IDENTITY

    def test_unknown_unit(self) -> None:
        """A unit not in the table cannot be compared: None (taken as equal, logged)."""
        assert conversion("furlong", ("m",)) is None

    def test_other_quantity(self) -> None:
        """Units of different quantities are refused, naming both."""
        with pytest.raises(UnitMismatch, match="'m' is a length, the face's 'l/min' a flow"):
            conversion("m", ("l/min",))
