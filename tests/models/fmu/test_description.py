"""Variables of an FMU from its modelDescription, option checks, config errors, ``fmu inspect``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models.fmu.conftest import open_fmu
from twin_server.errors import ConfigError, OutOfRange
from twin_server.models import registry
from twin_server.models.base import DataType, Kind, Variable
from twin_server.models.fmu import FMU, inspect_fmu


def declared(path: Path, **options: object) -> dict[tuple[Kind, str], Variable]:
    return {(v.kind, v.name): v for v in FMU.declare({"path": str(path), **options})}


class TestVariables:
    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_causalities_map_to_kinds(self, fmus: dict[str, Path], name: str) -> None:
        """Inputs, outputs and parameters come from causality; locals stay hidden unless chosen."""
        kinds = {v.name: v.kind for v in FMU.declare({"path": str(fmus[name])})}
        assert kinds == {
            "u": Kind.INPUT, "y": Kind.OUTPUT, "steps": Kind.OUTPUT, "above": Kind.OUTPUT,
            "y0": Kind.PARAMETER, "k": Kind.PARAMETER, "T": Kind.PARAMETER,
            "fail_at": Kind.PARAMETER, "threshold": Kind.PARAMETER, "substeps": Kind.PARAMETER,
            "label": Kind.PARAMETER,
        }

    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_types_units_ranges_starts(self, fmus: dict[str, Path], name: str) -> None:
        """FMI types, declared-type units and ranges, start values and descriptions carry over."""
        v = declared(fmus[name])
        y, u, k = v[(Kind.OUTPUT, "y")], v[(Kind.INPUT, "u")], v[(Kind.PARAMETER, "k")]
        assert (y.datatype, y.unit, y.low, y.high) == (DataType.DOUBLE, "K", 0.0, None)
        assert "display unit degC" in y.description and "lagged output" in y.description
        assert (u.unit, u.default, u.description.split(";")[0]) == ("K", 0.0, "input temperature")
        assert (k.default, k.low, k.high, k.unit) == (2.0, 0.0, 100.0, "")
        steps, above = v[(Kind.OUTPUT, "steps")], v[(Kind.OUTPUT, "above")]
        assert (steps.datatype, steps.default) == (DataType.INT32, 0)
        assert (above.datatype, above.default) == (DataType.BOOLEAN, False)
        substeps = v[(Kind.PARAMETER, "substeps")]
        assert (substeps.datatype, substeps.default, substeps.low, substeps.high) == (
            DataType.INT32, 1, 1.0, 1000.0)
        label = v[(Kind.PARAMETER, "label")]
        assert (label.datatype, label.default) == (DataType.STRING, "lag")
        assert v[(Kind.PARAMETER, "T")].unit == "s"

    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_tunable_and_fixed_parameters(self, fmus: dict[str, Path], name: str) -> None:
        """variability tunable makes a parameter tunable; fixed ones apply only at Reset."""
        v = declared(fmus[name])
        tunable = {n for (kind, n), var in v.items() if kind is Kind.PARAMETER and var.tunable}
        assert tunable == {"k", "fail_at", "threshold"}

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_names_become_identifiers(self, fmus: dict[str, Path], name: str) -> None:
        """Dotted FMI names become NodeId-safe names and keep the FMI name in the description."""
        v = declared(fmus[name], states="der(ball.h), resting")
        h = v[(Kind.OUTPUT, "ball_h")]
        assert "FMI name ball.h" in h.description
        assert v[(Kind.STATE, "der_ball_h")].unit == "m/s"
        assert v[(Kind.STATE, "resting")].datatype is DataType.BOOLEAN

    def test_chosen_locals_are_states(self, fmus: dict[str, Path]) -> None:
        """options.states (a list or a comma-separated string) exposes locals as STATE variables."""
        for states in (["energy"], "energy"):
            v = declared(fmus["lag2"], states=states)
            assert v[(Kind.STATE, "energy")].unit == "K.s"

    def test_unknown_state_names_the_locals(self, fmus: dict[str, Path]) -> None:
        """A state that is not a local of the FMU is a config error listing the locals."""
        with pytest.raises(ConfigError, match=r"no local variable 'nope' \(its locals: energy\)"):
            FMU.declare({"path": str(fmus["lag2"]), "states": "nope"})

    def test_fmi2_enumeration_takes_only_its_items(self, fmus: dict[str, Path],
                                                   cache_dir: Path) -> None:
        """An FMI 2.0 enumeration is an Int32 of its items: 3 is refused naming them; the
        FMU initialises and steps with 5."""
        substeps = declared(fmus["lag2_enum"])[(Kind.PARAMETER, "substeps")]
        assert substeps.datatype is DataType.INT32
        assert substeps.choices == ((1, "one"), (2, "two"), (5, "five"))
        with pytest.raises(OutOfRange, match=r"one of 1 \(one\), 2 \(two\), 5 \(five\)"):
            substeps.coerce(3)
        model = open_fmu(fmus["lag2_enum"], cache_dir)
        try:
            model.reset({"substeps": 5}, {})
            assert model.step(0.0, 0.1, {"u": 1.0})["steps"] == 1
        finally:
            model.close()

    def test_registered_as_fmu(self) -> None:
        """The entry point 'fmu' names this model."""
        assert registry.get("fmu") is FMU

    def test_instance_variables_match_declare(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """An instance has exactly the variables declare() promised."""
        model = open_fmu(fmus["lag3"], cache_dir, states="energy")
        try:
            assert model.variables == FMU.declare({"path": str(fmus["lag3"]), "states": "energy"})
        finally:
            model.close()


class TestConfigErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing FMU file is a config error naming the file."""
        path = tmp_path / "missing.fmu"
        with pytest.raises(ConfigError, match=rf"FMU file '{path}' does not exist"):
            FMU.declare({"path": str(path)})

    def test_no_binary_for_this_platform(self, fmus: dict[str, Path]) -> None:
        """An FMU without a binary for this platform is a config error saying what it has."""
        with pytest.raises(ConfigError, match=r"lag2_win64.fmu' has no binary for this platform "
                                              r"\(binaries/linux64/lag2.so is missing; it has "
                                              r"binaries for win64\)"):
            FMU.declare({"path": str(fmus["lag2_win64"])})

    def test_invalid_model_description(self, fmus: dict[str, Path]) -> None:
        """A malformed modelDescription.xml is a config error naming the file."""
        with pytest.raises(ConfigError, match=r"lag2_badxml.fmu' has an invalid modelDescription"):
            FMU.declare({"path": str(fmus["lag2_badxml"])})

    def test_not_a_zip(self, fmus: dict[str, Path]) -> None:
        """A file that is not a zip archive is a config error."""
        with pytest.raises(ConfigError, match=r"notzip.fmu' is not an FMU \(not a zip archive\)"):
            FMU.declare({"path": str(fmus["notzip"])})

    @pytest.mark.parametrize(("options", "message"), [
        pytest.param({}, r"needs options.path", id="no-path"),
        pytest.param({"path": "x.fmu", "speed": 1}, r"unknown FMU option\(s\) 'speed'",
                     id="unknown"),
        pytest.param({"path": "x.fmu", "interface": "sideways"}, r"options.interface must be",
                     id="interface"),
        pytest.param({"path": "x.fmu", "tolerance": 2.0}, r"options.tolerance must be",
                     id="tolerance"),
    ])
    def test_bad_options(self, options: dict[str, object], message: str) -> None:
        """Malformed options are config errors that say what is expected."""
        with pytest.raises(ConfigError, match=message):
            FMU.declare(options)

    @pytest.mark.parametrize(("name", "interface", "offers"), [
        pytest.param("lag2", "model-exchange",
                     r"does not offer model exchange \(it offers co-simulation\)", id="lag2"),
        pytest.param("ball3", "co-simulation",
                     r"does not offer co-simulation \(it offers model exchange\)", id="ball3"),
    ])
    def test_interface_not_offered(self, fmus: dict[str, Path], name: str, interface: str,
                                   offers: str) -> None:
        """Asking an FMU for the interface it does not offer is a config error."""
        with pytest.raises(ConfigError, match=offers):
            FMU.declare({"path": str(fmus[name]), "interface": interface})


class TestInspect:
    def test_table_lists_every_variable(self, fmus: dict[str, Path]) -> None:
        """fmu inspect prints name, causality, type, unit, range, start and description."""
        text = inspect_fmu(fmus["lag2"])
        lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
        assert "lag2 (FMI 2.0; co-simulation)" in text
        assert lines["k"].split()[:6] == ["k", "parameter", "(tunable)", "Real->Double",
                                          "[0,", "100]"]
        assert lines["T"].split()[:7] == ["T", "parameter", "(fixed)", "Real->Double", "s",
                                          "[0.001,", "inf]"]
        assert "(calculated)" in lines["y"] and "display unit degC" in lines["y"]
        assert "'lag'" in lines["label"]
        assert "energy" in lines and "snapshot/fork yes" in text

    def test_model_exchange_fmi3(self, fmus: dict[str, Path]) -> None:
        """An FMI 3.0 model-exchange FMU is listed with its interface and its locals."""
        text = inspect_fmu(fmus["ball3"])
        lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
        assert "ball3 (FMI 3.0; model exchange)" in text
        assert "me: model identifier ball3, snapshot/fork yes" in text
        assert lines["stop_at_rest"].split()[:4] == ["stop_at_rest", "parameter", "(fixed)",
                                                     "Boolean->Boolean"]
        assert lines["ball_x"].split()[:5] == ["ball_x", "local", "(state)", "Float64->Double",
                                               "m"]

    def test_offers_only_what_can_be_a_state(self, fmus: dict[str, Path]) -> None:
        """The states hint offers the continuous-time state and the discrete local, not
        the derivatives the FMU calculates."""
        text = inspect_fmu(fmus["ball3"])
        hint = text[text.index("locals become STATE"):]
        assert "continuous-time states (model exchange may overwrite them while running): "\
            "ball_x" in hint
        assert "other locals (read-only while running): resting" in hint
        assert 'e.g. states = "ball_x, resting"' in hint
        assert "der_ball" not in hint
        assert "local (derivative)" in text.splitlines()[text.splitlines().index(
            next(line for line in text.splitlines() if line.startswith("der_ball_h")))]

    def test_nothing_to_offer(self, fmus: dict[str, Path]) -> None:
        """An FMU without a local that can be a state says so, with no empty states = ""."""
        text = inspect_fmu(fmus["types3"])
        assert 'states = ""' not in text
        assert "no locals to offer as states (options.states)" in text
        assert "v_min: a constant: it never changes, so it is no state" in text

    def test_constant_refused_as_a_state(self, fmus: dict[str, Path]) -> None:
        """options.states naming a constant local is a config error saying why."""
        with pytest.raises(ConfigError, match=r"'v_min' of FMU 'types3.fmu' cannot be a state: "
                                              r"a constant"):
            FMU.declare({"path": str(fmus["types3"]), "states": "v_min"})

    def test_structural_parameter_and_type_ranges(self, fmus: dict[str, Path]) -> None:
        """A structural parameter shows its declared range; integers their type's;
        an enumeration its items."""
        text = inspect_fmu(fmus["types3"])
        lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
        assert lines["n"].split()[:5] == ["n", "structuralParameter", "(fixed)",
                                          "UInt64->Double", "[0,"]
        assert "[0, 5]" in lines["n"]
        assert "[-128, 127]" in lines["i8"] and "[0, 255]" in lines["u8"]
        assert "{1 Off, 2 On, 5 Auto}" in lines["mode"]

    def test_inspect_of_a_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        """Inspecting a missing file raises the same config error as loading it."""
        with pytest.raises(ConfigError, match="does not exist"):
            inspect_fmu(tmp_path / "none.fmu")
