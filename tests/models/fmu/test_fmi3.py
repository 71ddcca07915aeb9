"""FMI 3.0 specifics with types3 (src/types3.c): structural parameters set in
Configuration Mode within their declared range, every integer width, Float32 and an
enumeration range-checked before they reach the FMU, a co-simulation FMU asking to
terminate (and FMI 2.0's way of asking, with crash2), and configured inputs applied
in Initialization Mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.models.fmu.conftest import defaults, started
from twin_server.engine.session import (
    SEVERITY_HALT,
    RunState,
    Session,
    SessionEvent,
    SessionSettings,
    VarKey,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import ConfigErrors, InvalidState, OutOfRange, TypeMismatch
from twin_server.models.base import Kind, SimulationEnded
from twin_server.runtime.compile import load_config

CONFIG = """
[server]
fmu_dirs = ["{path.parent}"]

[twins.typed.components.plant]
model = "fmu"
options = {{ path = "{path}", cache_dir = "{cache}" }}
{extra}
"""

TOTAL = VarKey("plant", Kind.OUTPUT, "total")
SIZE = VarKey("plant", Kind.OUTPUT, "size")

#: (variable, value) a 0.1 s tick of types3 refuses: wraps, fractions, non-members
REFUSED = [
    pytest.param("i8", 200, OutOfRange, id="Int8-200"),
    pytest.param("i8", -129, OutOfRange, id="Int8--129"),
    pytest.param("u8", -1, OutOfRange, id="UInt8--1"),
    pytest.param("u8", 256, OutOfRange, id="UInt8-256"),
    pytest.param("i16", 40000, OutOfRange, id="Int16-40000"),
    pytest.param("u16", 65536, OutOfRange, id="UInt16-65536"),
    pytest.param("u32", -1.0, OutOfRange, id="UInt32--1.0"),
    pytest.param("u32", 4294967296.0, OutOfRange, id="UInt32-2**32"),
    pytest.param("u32", 1.5, TypeMismatch, id="UInt32-1.5"),
    pytest.param("i64", 1e19, OutOfRange, id="Int64-1e19"),
    pytest.param("i64", 0.25, TypeMismatch, id="Int64-0.25"),
    pytest.param("u64", -1.0, OutOfRange, id="UInt64--1"),
    pytest.param("u64", 2.0**64, OutOfRange, id="UInt64-2**64"),
    pytest.param("i8", 1.5, TypeMismatch, id="Int8-1.5"),
    pytest.param("f32", 1e39, OutOfRange, id="Float32-1e39"),
    pytest.param("f32", -3.5e38, OutOfRange, id="Float32--3.5e38"),
    pytest.param("mode", 3, OutOfRange, id="Enumeration-3"),
]

#: values at the edges of each type, which reach the FMU unchanged
ACCEPTED = [
    pytest.param("i8", -128, id="Int8-min"), pytest.param("i8", 127, id="Int8-max"),
    pytest.param("u8", 255, id="UInt8-max"), pytest.param("i16", -32768, id="Int16-min"),
    pytest.param("u16", 65535, id="UInt16-max"),
    pytest.param("u32", 4294967295.0, id="UInt32-max"),
    pytest.param("i64", -(2.0**62), id="Int64"), pytest.param("u64", 2.0**53, id="UInt64"),
    pytest.param("f32", 0.5, id="Float32"), pytest.param("mode", 5, id="Enumeration-Auto"),
]


def typed_twin(tmp_path: Path, fmu: Path, cache_dir: Path, extra: str = "") -> TwinDefinition:
    config = tmp_path / "typed.toml"
    config.write_text(CONFIG.format(path=fmu, cache=cache_dir, extra=extra))
    return load_config(config).twins["typed"]


@pytest.fixture
def session(tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> Iterator[Session]:
    session = Session("s", typed_twin(tmp_path, fmus["types3"], cache_dir),
                      SessionSettings(step_size=0.1))
    yield session
    session.close()


class TestStructuralParameters:
    def test_set_in_configuration_mode(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """n (a UInt64 structural parameter) is set in Configuration Mode: the FMU takes it."""
        model = started(fmus["types3"], cache_dir, {"n": 4.0})
        try:
            assert model.step(0.0, 0.1, defaults(model, Kind.INPUT))["size"] == 4.0
        finally:
            model.close()

    def test_declared_range_is_honoured(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """n's declared range 0..5 (a UInt64: FMPy does not read it) is n's range."""
        model = started(fmus["types3"], cache_dir)
        try:
            n = model.variable(Kind.PARAMETER, "n")
            assert (n.low, n.high, n.tunable) == (0.0, 5.0, False)
        finally:
            model.close()

    def test_out_of_range_is_refused_with_nothing_changed(self, session: Session) -> None:
        """n = 9 is refused (OutOfRange naming n and 0..5) at Reset; n stays, the session runs."""
        with pytest.raises(OutOfRange, match=r"'n' of component 'plant' must be within \[0, 5\]"):
            session.reset({"plant": {"n": 9}})
        session.step(1)
        assert session.fault is None and session.read(SIZE) == 2.0

    def test_out_of_range_in_the_config(self, tmp_path: Path, fmus: dict[str, Path],
                                        cache_dir: Path) -> None:
        """A config giving n = 9 is a config error naming the key."""
        with pytest.raises(ConfigErrors) as info:
            typed_twin(tmp_path, fmus["types3"], cache_dir, "parameters = { n = 9 }")
        (error,) = info.value.exceptions
        assert "components.plant.parameters.n: parameter 'n' must be within [0, 5] (got 9.0)" in (
            str(error))


class TestTypeRanges:
    @pytest.mark.parametrize(("name", "value", "error"), REFUSED)
    def test_refused_with_nothing_changed(self, session: Session, name: str, value: float,
                                          error: type[Exception]) -> None:
        """A value its FMI type cannot hold is refused, nothing changes, the session steps on."""
        session.step(1)
        key = VarKey("plant", Kind.INPUT, name)
        before = session.read(key)
        with pytest.raises(error):
            session.write(key, value)
        assert session.read(key) == before
        session.step(2)
        assert session.fault is None and session.read(TOTAL) == 1.0  # mode Off = 1

    @pytest.mark.parametrize(("name", "value"), ACCEPTED)
    def test_edges_reach_the_fmu_unchanged(self, session: Session, name: str,
                                           value: float) -> None:
        """A value at the edge of its type reaches the FMU as it was written."""
        session.write(VarKey("plant", Kind.INPUT, name), value)
        session.step(1)
        assert session.fault is None
        assert session.read(TOTAL) == pytest.approx(value + (1 if name != "mode" else 0),
                                                     rel=1e-15)

    def test_declared_parameter_range(self, session: Session) -> None:
        """level (Int8, declared -10..10) refuses 11 although an Int8 holds it."""
        with pytest.raises(OutOfRange, match=r"\[-10, 10\]"):
            session.set_parameters({"plant": {"level": 11}})
        session.set_parameters({"plant": {"level": -10}})
        session.step(1)
        assert session.read(TOTAL) == -9.0

    def test_config_values_refused(self, tmp_path: Path, fmus: dict[str, Path],
                                   cache_dir: Path) -> None:
        """Config inputs its FMI types cannot hold are config errors, each at its key."""
        with pytest.raises(ConfigErrors) as info:
            typed_twin(tmp_path, fmus["types3"], cache_dir,
                       "inputs = { i8 = 200, u8 = -1, u32 = 1.5, f32 = 1e39, mode = 3 }")
        errors = [str(e).split(": ", 1)[1] for e in info.value.exceptions]
        assert errors == [
            "twins.typed.components.plant.inputs.i8: input 'i8' must be within [-128, 127] "
            "(got 200)",
            "twins.typed.components.plant.inputs.u8: input 'u8' must be within [0, 255] "
            "(got -1)",
            "twins.typed.components.plant.inputs.u32: input 'u32' takes a whole number "
            "(got non-integral 1.5)",
            "twins.typed.components.plant.inputs.f32: input 'f32' must be within "
            "[-3.40282e+38, 3.40282e+38] (got 1e+39)",
            "twins.typed.components.plant.inputs.mode: input 'mode' must be one of 1 (Off), "
            "2 (On), 5 (Auto) (got 3)"]

    def test_enumeration_names_its_items(self, session: Session) -> None:
        """An enumeration refuses a non-member with a message listing its items."""
        with pytest.raises(OutOfRange, match=r"one of 1 \(Off\), 2 \(On\), 5 \(Auto\)"):
            session.write(VarKey("plant", Kind.INPUT, "mode"), 3)


def terminated_events(session: Session) -> list[SessionEvent]:
    """The session's events from now on (a list that fills as they come)."""
    events: list[SessionEvent] = []
    session.subscribe(events.append)
    return events


class TestTermination:
    @pytest.mark.parametrize("how", [
        pytest.param("types3", id="fmi3-cs-terminateSimulation"),
        pytest.param("crash2", id="fmi2-cs-discard-terminated"),
        pytest.param("ball3", id="fmi3-me-terminateSimulation"),
        pytest.param("ball2", id="fmi2-me-terminateSimulation"),
    ])
    def test_the_fmu_ends_the_session_cleanly(self, tmp_path: Path, fmus: dict[str, Path],
                                              cache_dir: Path, how: str) -> None:
        """An FMU asking to terminate at t = 0.5 s, by any FMI version and kind, ends the
        session as Halt would, not on a fault: the tick is taken (the FMU's outputs where
        it stopped), a ``terminated`` event (Halt's severity) names the component, the
        time and the FMI call, a Step in progress ends; Reset runs it again."""
        parameters = {"types3": "parameters = { stop_at = 0.5 }",
                      "crash2": "parameters = { crash_at = 0.45, how = 3 }",
                      "ball3": "parameters = { stop_at = 0.5, period = 0.25 }",
                      "ball2": "parameters = { stop_at = 0.5, period = 0.25 }"}[how]
        twin = typed_twin(tmp_path, fmus[how], cache_dir, parameters)
        session = Session("s", twin, SessionSettings(step_size=0.1))
        events = terminated_events(session)
        try:
            session.step(10)
            assert session.state is RunState.HALTED and session.fault is None
            assert session.step_count == 5 and session.steps_remaining == 0
            assert session.step_progress().taken == 5
            (end,) = [e for e in events if e.kind == "terminated"]
            assert end.severity == SEVERITY_HALT
            assert not [e for e in events if e.kind in ("fault", "step_completed")]
            function, at = {"types3": ("fmi3DoStep", 0.5),
                            "crash2": ("fmi2DoStep", 0.4),  # (Discard: the step not taken)
                            "ball3": ("fmi3UpdateDiscreteStates", 0.5),
                            "ball2": ("fmi2NewDiscreteStates", 0.5)}[how]
            assert (f"component 'plant' ended the simulation: FMU '{how}.fmu' asked to end "
                    f"the simulation at t={at:g} s ({function}: terminateSimulation)") in (
                end.message)
            assert "the session halted at t=0.5 s (tick 5), not on a fault" in end.message
            assert session.ended is not None and session.ended in end.message
            session.reset()
            assert session.ended is None
            session.step(3)
            assert session.fault is None and session.step_count == 3
        finally:
            session.close()

    def test_clock_ticks_end_there(self, tmp_path: Path, fmus: dict[str, Path],
                                   cache_dir: Path) -> None:
        """A Running session (ticked by a clock) is Halted by the request, no tick after."""
        twin = typed_twin(tmp_path, fmus["types3"], cache_dir, "parameters = { stop_at = 0.3 }")
        session = Session("s", twin, SessionSettings(step_size=0.1))
        try:
            session.start()
            while session.state is RunState.RUNNING:
                session.tick()
            assert session.state is RunState.HALTED and session.fault is None
            assert session.step_count == 3 and session.read(TOTAL) == 1.0
        finally:
            session.close()

    def test_termination_at_the_model(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """The model raises SimulationEnded naming fmi3DoStep and the time the FMU stopped
        at, with its outputs there; it snapshots no more (InvalidState) until Reset."""
        model = started(fmus["types3"], cache_dir, {"stop_at": 0.2})
        try:
            inputs = {**defaults(model, Kind.INPUT), "i8": 3}
            model.step(0.0, 0.1, inputs)
            with pytest.raises(SimulationEnded, match=r"fmi3DoStep: terminateSimulation") as info:
                model.step(0.1, 0.1, inputs)
            assert info.value.time == pytest.approx(0.2)
            assert info.value.outputs["total"] == 4.0
            with pytest.raises(InvalidState, match="asked to end the simulation"):
                model.snapshot()
        finally:
            model.close()

    def test_fmi2_discard_with_terminated(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """FMI 2.0 co-simulation: fmi2DoStep's Discard with fmi2Terminated set is the
        same end, at the FMU's last successful time."""
        model = started(fmus["crash2"], cache_dir, {"crash_at": 0.25, "how": 3})
        try:
            inputs = defaults(model, Kind.INPUT)
            model.step(0.0, 0.1, inputs)
            model.step(0.1, 0.1, inputs)
            with pytest.raises(SimulationEnded, match=r"asked to end the simulation at t=0\.2 s "
                                                      r"\(fmi2DoStep: terminateSimulation\)"):
                model.step(0.2, 0.1, inputs)
        finally:
            model.close()


class TestInputsAtStart:
    def test_configured_inputs_set_in_initialization(self, tmp_path: Path,
                                                     fmus: dict[str, Path],
                                                     cache_dir: Path) -> None:
        """Inputs given in the config reach the FMU before its outputs at t = 0 are read."""
        twin = typed_twin(tmp_path, fmus["types3"], cache_dir,
                          "inputs = { i8 = 5, f64 = 0.25, mode = 2 }")
        session = Session("s", twin, SessionSettings(step_size=0.1))
        try:
            assert session.read(TOTAL) == 7.25
        finally:
            session.close()

    def test_reset_starts_from_the_configured_inputs(self, session: Session) -> None:
        """Reset releases a client's force (the session's defined state): the FMU's
        input at t = 0 is the configured one again, not the forced value."""
        session.write(VarKey("plant", Kind.INPUT, "u8"), 7)
        assert session.forced()
        session.reset()
        assert not session.forced()
        assert session.read(TOTAL) == 1.0
