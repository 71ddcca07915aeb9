"""The FMU component stepping real FMUs: against FMPy's own simulate_fmu, parameters,
snapshot/restore, FMI errors and the instance lifecycle. The test FMUs enforce the
FMI mode state machine (src/fmi_modes.h), so a call in the wrong mode fails a test."""

from __future__ import annotations

import gc
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fmpy
import numpy as np
import pytest
from fmpy.fmi1 import FMICallException
from structlog.testing import capture_logs

from tests.models.fmu.conftest import defaults, open_fmu, started
from twin_server.errors import FMIError, InvalidState, NotSupported, NotWritable
from twin_server.models.base import Kind, SimulationEnded, Value
from twin_server.models.fmu import FMU, FMUSnapshot

DT = 0.01

#: how a model-exchange step stops in Event Mode: the ball FMUs' tunable parameter
#: that makes their event update fail (FMIError with its status) or ask to terminate
#: (SimulationEnded, no fault) from that time on
EVENT_FAILURES = [
    pytest.param("fail_at", "Error", id="error"),
    pytest.param("stop_at", "terminateSimulation", id="terminate"),
]


def stop_status(exc: BaseException) -> str:
    """The FMIError's status, or terminateSimulation for the end an FMU asked for."""
    return exc.fmi_status if isinstance(exc, FMIError) else "terminateSimulation"


def event_update(name: str) -> str:
    """The FMI function of a ball FMU's event update."""
    return "fmi2NewDiscreteStates" if name == "ball2" else "fmi3UpdateDiscreteStates"


def run(model: FMU, start: int, stop: int, u: object = None) -> list[dict[str, Value]]:
    """Step ticks start..stop-1 (t = k*DT); ``u(t)`` feeds input u when given."""
    out = []
    for k in range(start, stop):
        t = k * DT
        inputs = {} if u is None else {"u": u(t)}  # type: ignore[operator]
        out.append(model.step(t, DT, inputs))
    return out


class TestCoSimulation:
    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_agrees_with_simulate_fmu(self, fmus: dict[str, Path], cache_dir: Path,
                                      name: str) -> None:
        """200 ticks with a sampled sine input match FMPy's simulate_fmu to 1e-12 (same doSteps)."""
        times = np.arange(0, 201) * DT
        signal = np.array(list(zip(times, np.sin(3 * times), strict=True)),
                          dtype=[("time", np.float64), ("u", np.float64)])
        ref = fmpy.simulate_fmu(str(fmus[name]), stop_time=2.0, output_interval=DT,
                                start_values={"k": 1.5, "y0": 0.2}, input=signal,
                                output=["y", "steps"])
        model = started(fmus[name], cache_dir, {"k": 1.5, "y0": 0.2})
        try:
            out = run(model, 0, 200, lambda t: math.sin(3 * t))
        finally:
            model.close()
        ours = np.array([o["y"] for o in out])
        assert np.max(np.abs(ours - ref["y"][1:201])) < 1e-12
        assert [o["steps"] for o in out] == list(ref["steps"][1:201])

    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_outputs_are_typed(self, fmus: dict[str, Path], cache_dir: Path, name: str) -> None:
        """reset and step return every output with its declared Python type."""
        model = started(fmus[name], cache_dir)
        try:
            first = model.step(0.0, DT, {"u": 1.0})
        finally:
            model.close()
        assert isinstance(first["y"], float) and isinstance(first["steps"], int)
        assert isinstance(first["above"], bool) and first["steps"] == 1

    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_tunable_parameter_applies_at_next_step(self, fmus: dict[str, Path], cache_dir: Path,
                                                    name: str) -> None:
        """A tunable parameter set while stepping changes the very next step."""
        a, b = started(fmus[name], cache_dir), started(fmus[name], cache_dir, {"k": 4.0})
        try:
            run(a, 0, 10, lambda t: 1.0)
            a.set_parameter("k", 4.0)
            b_out = [b.step(k * DT, DT, {"u": 1.0}) for k in range(11)]
            a_out = a.step(10 * DT, DT, {"u": 1.0})
            plain = started(fmus[name], cache_dir)
            plain_out = run(plain, 0, 11, lambda t: 1.0)[-1]
            plain.close()
        finally:
            a.close()
            b.close()
        assert a_out["y"] > plain_out["y"]  # the gain 4 acted from tick 10 on
        assert a_out["y"] < b_out[-1]["y"]  # but not before
        assert a.parameters["k"] == 4.0

    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_fixed_parameters_and_strings_apply_at_reset(self, fmus: dict[str, Path],
                                                         cache_dir: Path, name: str) -> None:
        """Reset (again) applies fixed parameters, Integer and String ones included."""
        model = started(fmus[name], cache_dir)
        try:
            run(model, 0, 5, lambda t: 1.0)
            params = {**defaults(model, Kind.PARAMETER), "y0": 3.0, "substeps": 7, "label": "oven"}
            assert model.reset(params, {}) == {"y": 3.0, "steps": 0, "above": True}
            assert model.step(0.0, DT, {"u": 1.0})["steps"] == 1
        finally:
            model.close()

    def test_reset_repeats_a_run_exactly(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """A second run after Reset is bit-identical to the first."""
        model = started(fmus["lag3"], cache_dir, states="energy")
        try:
            first = run(model, 0, 50, math.cos), model.get_states()
            model.reset(defaults(model, Kind.PARAMETER), {})
            second = run(model, 0, 50, math.cos), model.get_states()
        finally:
            model.close()
        assert first == second

    def test_local_state_is_read(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """A chosen local is read as a state: energy is the integral of y."""
        model = started(fmus["lag2"], cache_dir, states="energy")
        try:
            out = run(model, 0, 100, lambda t: 0.0)
            energy = model.get_states()["energy"]
        finally:
            model.close()
        # y = 0.5*exp(-t/0.5) with u = 0: the integral over 1 s is 0.25*(1 - e^-2)
        assert energy == pytest.approx(0.25 * (1 - math.exp(-2.0)), rel=1e-12)
        assert out[-1]["y"] == pytest.approx(0.5 * math.exp(-2.0), rel=1e-12)

    def test_calculated_local_refuses_initial_and_writes(self, fmus: dict[str, Path],
                                                         cache_dir: Path) -> None:
        """A calculated local cannot be given an initial value, nor written while running."""
        model = open_fmu(fmus["lag2"], cache_dir, states="energy")
        try:
            with pytest.raises(NotWritable, match=r"state 'energy' .* is calculated by the FMU"):
                model.reset(defaults(model, Kind.PARAMETER), {"energy": 1.0})
            model.reset(defaults(model, Kind.PARAMETER), {})
            with pytest.raises(NotWritable, match="cannot be overwritten while the FMU runs"):
                model.set_states({"energy": 1.0})
        finally:
            model.close()

    def test_instances_are_independent(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Two instances of one FMU keep separate states (one FMI instance each)."""
        a, b = started(fmus["lag2"], cache_dir), started(fmus["lag2"], cache_dir)
        try:
            ya = run(a, 0, 20, lambda t: 1.0)[-1]["y"]
            yb = run(b, 0, 20, lambda t: -1.0)[-1]["y"]
        finally:
            a.close()
            b.close()
        assert ya > 0.5 > yb


class TestModelExchange:
    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_agrees_with_simulate_fmu(self, fmus: dict[str, Path], cache_dir: Path,
                                      name: str) -> None:
        """The bouncing ball over 2 s (four bounces, eight time events) matches simulate_fmu
        (CVode, rtol 1e-9 both) to 1e-5 m and 1e-4 m/s at every tick."""
        ref = fmpy.simulate_fmu(str(fmus[name]), stop_time=2.0, output_interval=DT,
                                relative_tolerance=1e-9, record_events=False,
                                output=["ball.h", "ball.v", "ticks"])
        model = started(fmus[name], cache_dir, tolerance=1e-9)
        try:
            out = [model.step(k * DT, DT, {"a": 0.0}) for k in range(200)]
        finally:
            model.close()
        h = np.array([o["ball_h"] for o in out])
        v = np.array([o["ball_v"] for o in out])
        assert np.max(np.abs(h - ref["ball.h"][1:201])) < 1e-5
        assert np.max(np.abs(v - ref["ball.v"][1:201])) < 1e-4
        assert [o["ticks"] for o in out] == list(ref["ticks"][1:201])

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_state_event_bounces(self, fmus: dict[str, Path], cache_dir: Path,
                                 name: str) -> None:
        """The ball never goes below the floor and bounces at the analytic impact time
        (velocity after the bounce within 1e-6 relative at rtol 1e-10)."""
        model = started(fmus[name], cache_dir, tolerance=1e-10)
        try:
            out = [model.step(k * DT, DT, {"a": 0.0}) for k in range(100)]
        finally:
            model.close()
        impact = math.sqrt(2 * 1.0 / 9.81)  # 0.4515 s
        assert min(o["ball_h"] for o in out) >= -1e-9
        k = math.ceil(impact / DT)  # first tick ending after the impact
        assert out[k - 1]["ball_v"] > 0 > out[k - 2]["ball_v"]
        assert out[k - 1]["ball_v"] == pytest.approx(
            0.7 * 9.81 * impact - 9.81 * (k * DT - impact), rel=1e-6)

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_time_events_fire_on_the_grid(self, fmus: dict[str, Path], cache_dir: Path,
                                          name: str) -> None:
        """The time event every period (0.1 s here) counts exactly at its time."""
        model = started(fmus[name], cache_dir, {"period": 0.1})
        try:
            ticks = [model.step(k * DT, DT, {"a": 0.0})["ticks"] for k in range(100)]
        finally:
            model.close()
        assert ticks[9] == 1 and ticks[8] == 0 and ticks[-1] == 10

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_input_and_tunable_parameter(self, fmus: dict[str, Path], cache_dir: Path,
                                         name: str) -> None:
        """An input (upward acceleration) and a tunable restitution act from the next step."""
        model = started(fmus[name], cache_dir, tolerance=1e-9)
        try:
            model.step(0.0, DT, {"a": 9.81})  # weightless: v stays 0
            floating = model.step(DT, DT, {"a": 9.81})
            model.set_parameter("e", 1.0)
            out = [model.step(k * DT, DT, {"a": 0.0}) for k in range(2, 60)]
        finally:
            model.close()
        assert floating["ball_v"] == pytest.approx(0.0, abs=1e-12)
        # with e = 1 the bounce loses nothing: h + v^2/2g stays 1 m through the bounce
        assert max(o["ball_v"] for o in out) > 3.0  # it did bounce
        for o in out:
            assert o["ball_h"] + o["ball_v"] ** 2 / (2 * 9.81) == pytest.approx(1.0, abs=1e-6)

    def test_continuous_local_state_is_written_while_running(self, fmus: dict[str, Path],
                                                             cache_dir: Path) -> None:
        """A continuous local (ball3's x, dx/dt = 0.5 m/s) takes an initial value at Reset
        and a new value while running, and integrates on from it (to 1e-9 m)."""
        model = started(fmus["ball3"], cache_dir, initial={"ball_x": 2.0},
                        states="ball.x, resting")
        try:
            for k in range(10):
                model.step(k * DT, DT, {"a": 0.0})
            before = model.get_states()["ball_x"]
            model.set_states({"ball_x": 5.0})
            for k in range(10, 30):
                model.step(k * DT, DT, {"a": 0.0})
            after = model.get_states()
            with pytest.raises(NotWritable, match=r"state 'resting' .* cannot be overwritten "
                                                  r"while the FMU runs"):
                model.set_states({"resting": True})
        finally:
            model.close()
        assert before == pytest.approx(2.0 + 0.5 * 10 * DT, abs=1e-9)
        assert after["ball_x"] == pytest.approx(5.0 + 0.5 * 20 * DT, abs=1e-9)
        assert after["resting"] is False

    def test_termination_names_the_fmi_call(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """An FMU asking to terminate raises SimulationEnded (no fault) naming the FMI call
        and the event time, with its outputs there (ball3 with e = 0.2 comes to rest at
        its third impact, t = 1.48 * sqrt(2/g)); Reset runs it again."""
        model = started(fmus["ball3"], cache_dir, {"e": 0.2, "stop_at_rest": True},
                        tolerance=1e-10)
        try:
            with pytest.raises(SimulationEnded) as info:
                for k in range(100):
                    model.step(k * DT, DT, {"a": 0.0})
            model.reset({**defaults(model, Kind.PARAMETER), "e": 0.2}, {})
            rested = [model.step(k * DT, DT, {"a": 0.0}) for k in range(100)][-1]
        finally:
            model.close()
        end = info.value
        rest = (1 + 2 * 0.2 + 2 * 0.2**2) * math.sqrt(2 * 1.0 / 9.81)  # 0.668255 s
        assert end.function == "fmi3UpdateDiscreteStates"
        assert end.time == pytest.approx(rest, abs=1e-6)
        assert str(end).startswith(f"FMU 'ball3.fmu' asked to end the simulation at "
                                   f"t={rest:g} s (fmi3UpdateDiscreteStates: "
                                   f"terminateSimulation)")
        assert end.outputs["ball_h"] == 0.0 and end.outputs["ball_v"] == 0.0
        assert k == math.floor(rest / DT)  # in the tick that holds the rest time
        assert rested["ball_h"] == 0.0 and rested["ball_v"] == 0.0


class TestSnapshot:
    @pytest.mark.parametrize("name", ["lag2", "lag3", "ball2", "ball3"])
    def test_restore_gives_bit_identical_future(self, fmus: dict[str, Path], cache_dir: Path,
                                                name: str) -> None:
        """After Restore the same inputs give bit-identical outputs, in the same instance."""
        model = started(fmus[name], cache_dir)
        key = "a" if name.startswith("ball") else "u"
        try:
            for k in range(30):
                model.step(k * DT, DT, {key: 0.1})
            snap = model.snapshot()
            first = [model.step(k * DT, DT, {key: 0.2}) for k in range(30, 90)]
            model.restore(snap)
            second = [model.step(k * DT, DT, {key: 0.2}) for k in range(30, 90)]
        finally:
            model.close()
        assert first == second

    @pytest.mark.parametrize("name", ["lag2", "lag3", "ball2", "ball3"])
    def test_fork_into_another_instance(self, fmus: dict[str, Path], cache_dir: Path,
                                        name: str) -> None:
        """A serialized snapshot restores into another instance (Fork): identical futures."""
        key = "a" if name.startswith("ball") else "u"
        a, b = started(fmus[name], cache_dir), started(fmus[name], cache_dir)
        try:
            for k in range(40):
                a.step(k * DT, DT, {key: 0.3})
            snap = a.snapshot()
            assert isinstance(snap, FMUSnapshot) and snap.serialized
            b.restore(snap)
            fa = [a.step(k * DT, DT, {key: 0.0}) for k in range(40, 80)]
            fb = [b.step(k * DT, DT, {key: 0.0}) for k in range(40, 80)]
        finally:
            a.close()
            b.close()
        assert fa == fb

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    @pytest.mark.parametrize(("parameter", "status"), EVENT_FAILURES)
    def test_restore_after_a_step_failed_in_event_mode(
            self, fmus: dict[str, Path], cache_dir: Path, name: str, parameter: str,
            status: str) -> None:
        """A step that fails or is asked to terminate in Event Mode (the event a tunable
        parameter starts) leaves the FMU there; Restore brings it back to Continuous-Time
        Mode, and the run goes on bit-identical to the one before."""
        model = started(fmus[name], cache_dir)
        try:
            for k in range(30):
                model.step(k * DT, DT, {"a": 0.1})
            snap = model.snapshot()
            first = [model.step(k * DT, DT, {"a": 0.2}) for k in range(30, 90)]
            model.restore(snap)
            model.set_parameter(parameter, 0.0)
            with pytest.raises((FMIError, SimulationEnded)) as info:
                model.step(30 * DT, DT, {"a": 0.2})
            model.restore(snap)
            second = [model.step(k * DT, DT, {"a": 0.2}) for k in range(30, 90)]
        finally:
            model.close()
        assert (info.value.function, stop_status(info.value)) == (event_update(name), status)
        assert first == second

    def test_no_snapshot_of_a_failed_step(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """A step that failed in Event Mode leaves nothing to snapshot: InvalidState saying
        where the FMU was left; Reset makes it snapshot again."""
        model = started(fmus["ball3"], cache_dir, {"fail_at": 0.25})
        try:
            with pytest.raises(FMIError):
                for k in range(30):
                    model.step(k * DT, DT, {"a": 0.0})
            with pytest.raises(InvalidState, match=r"'ball3.fmu' cannot snapshot: its FMI "
                                                   r"instance was left in Event Mode"):
                model.snapshot()
            model.reset(defaults(model, Kind.PARAMETER), {})
            assert isinstance(model.snapshot(), FMUSnapshot)
        finally:
            model.close()

    def test_state_write_after_a_failed_step_is_an_fmi_error(
            self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Writing a continuous state of an FMU a failed step left in Event Mode is an
        FMIError naming the FMI call and the state, not FMPy's own exception."""
        model = started(fmus["ball3"], cache_dir, {"fail_at": 0.25}, states="ball.x, resting")
        try:
            with pytest.raises(FMIError):
                for k in range(30):
                    model.step(k * DT, DT, {"a": 0.0})
            with pytest.raises(FMIError, match=r"ball3.fmu'.*while writing 'ball_x'") as info:
                model.set_states({"ball_x": 1.0})
            assert info.value.function.startswith("fmi3")
        finally:
            model.close()

    def test_fmu_without_state_access_refuses(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Snapshot of an FMU without canGetAndSetFMUstate raises NotSupported saying so."""
        model = started(fmus["lag2_nostate"], cache_dir)
        try:
            with pytest.raises(NotSupported, match=r"lag2_nostate.fmu' cannot snapshot: .* "
                                                   r"canGetAndSetFMUstate"):
                model.snapshot()
        finally:
            model.close()

    def test_unserializable_state_restores_only_in_place(self, fmus: dict[str, Path],
                                                         cache_dir: Path) -> None:
        """Without canSerializeFMUstate a snapshot restores in its own instance, not in a fork."""
        a = started(fmus["lag2_noserialize"], cache_dir)
        b = started(fmus["lag2_noserialize"], cache_dir)
        try:
            run(a, 0, 10, lambda t: 1.0)
            snap = a.snapshot()
            first = run(a, 10, 20, lambda t: 1.0)
            a.restore(snap)
            assert run(a, 10, 20, lambda t: 1.0) == first
            with pytest.raises(NotSupported, match="cannot serialize its state"):
                b.restore(snap)
            a.close()
            a.reset(defaults(a, Kind.PARAMETER), {})  # a new FMI instance
            with pytest.raises(NotSupported, match="only into the FMI instance that took it"):
                a.restore(snap)
            del snap
            gc.collect()  # the unserialized FMI state is freed with its snapshot
        finally:
            a.close()
            b.close()

    def test_foreign_snapshot_is_refused(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """A snapshot of another FMU is refused before anything changes."""
        a, b = started(fmus["lag2"], cache_dir), started(fmus["lag3"], cache_dir)
        try:
            with pytest.raises(NotSupported, match=r"was not taken from FMU 'lag3\.fmu'"):
                b.restore(a.snapshot())
        finally:
            a.close()
            b.close()


class TestFMIErrors:
    @pytest.mark.parametrize(("name", "function"), [("lag2", "fmi2DoStep"), ("lag3", "fmi3DoStep")])
    def test_error_status_names_function_and_status(self, fmus: dict[str, Path], cache_dir: Path,
                                                    name: str, function: str) -> None:
        """doStep returning Error raises FMIError naming the function, status, time and FMU log."""
        model = started(fmus[name], cache_dir, {"fail_at": 0.05})
        try:
            run(model, 0, 5, lambda t: 1.0)
            with pytest.raises(FMIError) as info:
                model.step(5 * DT, DT, {"u": 1.0})
        finally:
            model.close()
        err = info.value
        assert (err.function, err.fmi_status) == (function, "Error")
        assert str(err).startswith(f"FMU '{name}.fmu': {function} returned Error while stepping "
                                   "from t=0.05 s")
        assert f"(FMU log: {name} fails on purpose at t=0.05" in str(err)

    def test_reset_recovers_after_an_error(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """After an FMI error, Reset gives a working instance again."""
        model = started(fmus["lag2"], cache_dir, {"fail_at": 0.0})
        try:
            with pytest.raises(FMIError):
                model.step(0.0, DT, {"u": 1.0})
            model.reset(defaults(model, Kind.PARAMETER), {})
            assert model.step(0.0, DT, {"u": 1.0})["steps"] == 1
        finally:
            model.close()

    def test_log_message_goes_to_its_own_fmu(self, fmus: dict[str, Path],
                                             cache_dir: Path) -> None:
        """With several FMI 2.0 instances alive, an FMU's log message is quoted in its own
        FMIError, not routed to the newest instance's log."""
        failing = started(fmus["lag2"], cache_dir, {"fail_at": 0.0})
        newer = started(fmus["lag2"], cache_dir)
        try:
            with pytest.raises(FMIError) as info:
                failing.step(0.0, DT, {"u": 1.0})
        finally:
            failing.close()
            newer.close()
        assert str(info.value).endswith("(FMU log: lag2 fails on purpose at t=0 (fail_at=0))")

    def test_log_message_after_the_newest_instance_is_collected(
            self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """An FMI 2.0 FMU that logs after the newest FMI 2.0 instance was freed and garbage
        collected does not crash the process (in a subprocess, as the crash would)."""
        script = (
            "import gc, sys\n"
            "from twin_server.models.base import Kind\n"
            "from twin_server.models.fmu import FMU\n"
            "def started(fail_at):\n"
            "    model = FMU({'path': sys.argv[1], 'cache_dir': sys.argv[2]})\n"
            "    parameters = {v.name: v.default for v in model.variables\n"
            "                  if v.kind is Kind.PARAMETER}\n"
            "    model.reset({**parameters, 'fail_at': fail_at}, {})\n"
            "    return model\n"
            "failing, newer = started(0.0), started(1e30)\n"
            "newer.close()\n"
            "del newer\n"
            "gc.collect()\n"
            "try:\n"
            "    failing.step(0.0, 0.01, {'u': 1.0})\n"
            "except Exception as exc:\n"
            "    print(exc)\n"
        )
        result = subprocess.run([sys.executable, "-c", script, str(fmus["lag2"]), str(cache_dir)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "(FMU log: lag2 fails on purpose at t=0 (fail_at=0))" in result.stdout

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    @pytest.mark.parametrize(("parameter", "status"), EVENT_FAILURES)
    def test_reset_after_the_first_event_iteration_failed(
            self, fmus: dict[str, Path], cache_dir: Path, name: str, parameter: str,
            status: str) -> None:
        """A Reset whose first event iteration (right after initialization) fails or asks to
        terminate raises that FMIError; the next Reset resets the FMU, which is left in
        Event Mode, and initializes it again: the run is that of a fresh instance."""
        model = open_fmu(fmus[name], cache_dir)
        fresh = started(fmus[name], cache_dir)
        parameters = defaults(model, Kind.PARAMETER)
        try:
            with pytest.raises(FMIError) as info:
                model.reset({**parameters, parameter: 0.0}, {})
            model.reset(parameters, {})
            out = [model.step(k * DT, DT, {"a": 0.0}) for k in range(60)]
            expected = [fresh.step(k * DT, DT, {"a": 0.0}) for k in range(60)]
        finally:
            model.close()
            fresh.close()
        assert (info.value.function, info.value.fmi_status) == (event_update(name), status)
        assert out == expected


class TestStrictTestFMUs:
    @pytest.mark.parametrize(("name", "call", "message"), [
        pytest.param("lag2", lambda fmu: fmu.doStep(0.0, DT), "fmi2DoStep called in "
                     "Instantiated; FMI 2.0 allows it only in Step Mode", id="lag2"),
        pytest.param("lag3", lambda fmu: fmu.doStep(0.0, DT), "fmi3DoStep called in "
                     "Instantiated; FMI 3.0 allows it only in Step Mode", id="lag3"),
        pytest.param("ball2", lambda fmu: fmu.setTime(0.0), "fmi2SetTime called in "
                     "Instantiated; FMI 2.0 allows it only in Event Mode, Continuous-Time Mode",
                     id="ball2"),
        pytest.param("ball3", lambda fmu: fmu.enterContinuousTimeMode(),
                     "fmi3EnterContinuousTimeMode called in Instantiated; FMI 3.0 allows it "
                     "only in Event Mode", id="ball3"),
    ])
    def test_call_in_the_wrong_mode_is_an_error(self, fmus: dict[str, Path], cache_dir: Path,
                                                name: str, call: Callable[[Any], object],
                                                message: str) -> None:
        """A test FMU answers a call in the wrong mode with Error and a log message saying
        so, as a strict FMU does (here: before initialization)."""
        model = open_fmu(fmus[name], cache_dir)
        try:
            with capture_logs() as logs, pytest.raises(FMICallException) as info:
                call(model._fmu)
        finally:
            model.close()
        assert info.value.status == 3  # Error
        assert [e["message"] for e in logs if e["event"] == "fmu_log"] == [message]


class TestLifecycle:
    def test_states_before_the_first_reset(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Before the first Reset the states read as their start values, without an FMI
        read (which FMI does not allow before initialization)."""
        model = open_fmu(fmus["ball3"], cache_dir, states="ball.x, resting")
        try:
            assert model.get_states() == {"ball_x": 0.0, "resting": False}
        finally:
            model.close()

    def test_close_is_idempotent(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """close() frees the instance once; calling it again is harmless."""
        model = started(fmus["lag2"], cache_dir)
        model.close()
        model.close()
        assert model.closed

    def test_reset_after_close_makes_a_new_instance(self, fmus: dict[str, Path],
                                                    cache_dir: Path) -> None:
        """A closed component re-instantiates at Reset."""
        model = started(fmus["lag3"], cache_dir)
        model.close()
        model.reset(defaults(model, Kind.PARAMETER), {})
        try:
            assert model.step(0.0, DT, {"u": 0.0})["steps"] == 1
        finally:
            model.close()

    def test_garbage_collected_instance_is_freed(self, fmus: dict[str, Path],
                                                 cache_dir: Path) -> None:
        """An instance dropped without close() is freed by its finalizer."""
        model = started(fmus["lag2"], cache_dir)
        finalizer = model._finalizer
        assert finalizer is not None and finalizer.alive
        del model
        gc.collect()
        assert not finalizer.alive

    def test_unpacked_once_per_content(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Every instance of one FMU shares one unpacked copy in the cache."""
        before = {p.name for p in cache_dir.iterdir()}
        model = open_fmu(fmus["lag2"], cache_dir)
        other = open_fmu(fmus["lag2"], cache_dir)
        model.close()
        other.close()
        lag2 = [p for p in cache_dir.iterdir() if p.name.startswith("lag2-")]
        assert len(lag2) == 1 and (lag2[0] / "binaries").is_dir()
        assert {p.name for p in cache_dir.iterdir()} - before <= {lag2[0].name}


class TestCrashFMU:
    @pytest.mark.parametrize("interface", ["co-simulation", "model-exchange"])
    def test_a_lag_until_crash_at(self, fmus: dict[str, Path], cache_dir: Path,
                                  interface: str) -> None:
        """crash2 (the worker tests' FMU) is y' = u - y before crash_at: 1 - exp(-t) for
        u = 1 over 200 ticks, to 1e-12 (CS: the exact update) or 1e-6 (ME, CVode rtol
        1e-9), its doSteps counted; crash_at = 2.005 s is not reached early."""
        model = started(fmus["crash2"], cache_dir, {"crash_at": 2.005},
                        interface=interface, tolerance=1e-9)
        try:
            out = run(model, 0, 200, lambda t: 1.0)
        finally:
            model.close()
        exact = 1.0 - np.exp(-np.arange(1, 201) * DT)
        error = np.max(np.abs(np.array([o["y"] for o in out]) - exact))
        assert error < (1e-12 if interface == "co-simulation" else 1e-6)
        steps = list(range(1, 201)) if interface == "co-simulation" else [0] * 200
        assert [o["steps"] for o in out] == steps
