"""The PID controller: its terms, anti-windup, no derivative kick, reverse action, retuning."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.models.support import make, run
from twin_server.errors import OutOfRange
from twin_server.models.pid import PID
from twin_server.models.water_tank import WaterTank

WIDE = {"output_min": -1e6, "output_max": 1e6}


class TestTerms:
    def test_proportional(self) -> None:
        """With ki = kd = 0 the output is kp * (setpoint - measurement), exactly."""
        pid = make(PID, kp=2.5, ki=0.0, **WIDE)
        assert run(pid, 0.1, 1, setpoint=3.0, measurement=1.0)[-1]["output"] == 5.0

    def test_integral_is_a_ramp(self) -> None:
        """With a constant error the integral term grows by ki*e*dt per step (1e-12)."""
        pid = make(PID, kp=0.0, ki=0.5, **WIDE)
        outputs = run(pid, 0.01, 1000, setpoint=1.0, measurement=0.2)
        for i, out in enumerate(outputs, start=1):
            assert out["output"] == pytest.approx(0.5 * 0.8 * 0.01 * i, abs=1e-12)
        assert pid.get_states()["integral"] == pytest.approx(4.0, abs=1e-12)

    def test_derivative_of_a_measurement_ramp(self) -> None:
        """A measurement rising at 2/s gives D = -kd*2 once a previous sample exists (1e-9)."""
        pid = make(PID, kp=0.0, ki=0.0, kd=0.3, **WIDE)
        outputs = [pid.step(k * 0.01, 0.01, {"setpoint": 0.0, "measurement": 2.0 * k * 0.01})
                   for k in range(10)]
        assert outputs[0]["output"] == 0.0  # no previous measurement: no kick from reset
        for out in outputs[1:]:
            assert out["output"] == pytest.approx(-0.6, abs=1e-9)

    def test_derivative_filter_is_a_first_order_lag(self) -> None:
        """With filter time Tf a measurement ramp's D rises as -kd*slope*(1 - exp(-t/Tf)) (1e-9)."""
        tf, dt = 0.2, 0.01
        pid = make(PID, kp=0.0, ki=0.0, kd=1.0, derivative_filter_time=tf, **WIDE)
        pid.step(0.0, dt, {"setpoint": 0.0, "measurement": 0.0})
        for k in range(1, 200):
            out = pid.step(k * dt, dt, {"setpoint": 0.0, "measurement": 1.0 * k * dt})
            assert out["output"] == pytest.approx(-(1 - math.exp(-k * dt / tf)), abs=1e-9)


class TestDerivativeOnMeasurement:
    def test_setpoint_step_gives_no_kick(self) -> None:
        """A setpoint step with a large kd leaves the output at exactly the P + I values."""
        pid = make(PID, kp=1.0, ki=0.0, kd=100.0, **WIDE)
        run(pid, 0.01, 10, setpoint=0.0, measurement=0.0)
        outputs = run(pid, 0.01, 5, start=10, setpoint=1.0, measurement=0.0)
        assert [o["output"] for o in outputs] == [1.0] * 5

    def test_measurement_step_kicks(self) -> None:
        """A measurement step of the same size does move D: -kd*step/dt at once."""
        pid = make(PID, kp=0.0, ki=0.0, kd=0.1, **WIDE)
        run(pid, 0.01, 10, setpoint=0.0, measurement=0.0)
        out = run(pid, 0.01, 1, start=10, setpoint=0.0, measurement=1.0)[-1]
        assert out["output"] == pytest.approx(-10.0, rel=1e-12)


class TestAntiWindup:
    def test_integral_holds_while_saturated(self) -> None:
        """During a long saturation the integral term stops at the limit instead of winding up."""
        pid = make(PID, kp=1.0, ki=1.0, output_min=0.0, output_max=10.0)
        outputs = run(pid, 0.1, 1000, setpoint=50.0, measurement=0.0)
        assert {o["output"] for o in outputs} == {10.0}
        assert pid.get_states()["integral"] <= 10.0

    def test_output_leaves_saturation_as_soon_as_error_reverses(self) -> None:
        """After 100 s at the upper limit, an overshoot drops the output below the limit at once."""
        pid = make(PID, kp=1.0, ki=1.0, output_min=0.0, output_max=10.0)
        run(pid, 0.1, 1000, setpoint=50.0, measurement=0.0)
        out = run(pid, 0.1, 1, start=1000, setpoint=50.0, measurement=51.0)[-1]
        assert out["output"] < 10.0

    def test_lower_limit_too(self) -> None:
        """Saturating at the lower limit holds the integral at or above output_min."""
        pid = make(PID, kp=0.5, ki=2.0, output_min=-5.0, output_max=5.0)
        run(pid, 0.1, 500, setpoint=-100.0, measurement=0.0)
        assert pid.get_states()["integral"] >= -5.0
        out = run(pid, 0.1, 1, start=500, setpoint=-100.0, measurement=-101.0)[-1]
        assert out["output"] > -5.0

    @settings(max_examples=100, deadline=None)
    @given(kp=st.floats(0, 100), ki=st.floats(0, 100), kd=st.floats(0, 10),
           low=st.floats(-100, 0), span=st.floats(0, 200),
           signal=st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=1,
                           max_size=40))
    def test_output_and_integral_stay_within_limits(self, kp: float, ki: float, kd: float,
                                                    low: float, span: float,
                                                    signal: list[tuple[float, float]]) -> None:
        """Whatever the gains and signals, output and integral stay within the output limits."""
        high = low + span
        pid = make(PID, kp=kp, ki=ki, kd=kd, output_min=low, output_max=high)
        for k, (sp, pv) in enumerate(signal):
            out = pid.step(k * 0.1, 0.1, {"setpoint": sp, "measurement": pv})["output"]
            assert low <= out <= high
            assert low <= pid.get_states()["integral"] <= high


class TestReverseAction:
    @pytest.mark.parametrize(("reverse", "expected"), [
        pytest.param(False, -2.0, id="direct"), pytest.param(True, 2.0, id="reverse")])
    def test_error_sign(self, reverse: bool, expected: float) -> None:
        """A measurement above the setpoint drives a direct controller down, a reverse one up."""
        pid = make(PID, kp=1.0, ki=0.0, reverse=reverse, **WIDE)
        assert run(pid, 0.1, 1, setpoint=1.0, measurement=3.0)[-1]["output"] == expected

    def test_reverse_derivative_acts_with_the_measurement(self) -> None:
        """Reversed, a rising measurement raises the derivative term."""
        pid = make(PID, kp=0.0, ki=0.0, kd=1.0, reverse=True, **WIDE)
        run(pid, 0.1, 1, measurement=0.0)
        assert run(pid, 0.1, 1, start=1, measurement=1.0)[-1]["output"] == pytest.approx(10.0)


class TestRetuning:
    @pytest.mark.parametrize(("name", "value"), [
        pytest.param("kp", 4.0, id="kp"), pytest.param("kd", 2.0, id="kd"),
        pytest.param("ki", 3.0, id="ki")])
    def test_bumpless_with_integral_action(self, name: str, value: float) -> None:
        """With ki > 0 a gain change moves the output only as the new gains would (1e-12)."""
        pid = make(PID, kp=1.0, ki=0.5, kd=0.5, output_min=-100.0, output_max=100.0)
        for k in range(20):  # measurement ramps at 0.1/s: D is steady at -kd*0.1
            before = pid.step(k * 0.1, 0.1, {"setpoint": 1.0, "measurement": 0.01 * k})["output"]
        integral = pid.get_states()["integral"]
        pid.set_parameter(name, value)
        after = pid.step(2.0, 0.1, {"setpoint": 1.0, "measurement": 0.20})["output"]
        gains = {"kp": 1.0, "ki": 0.5, name: value}
        # what the new gains add over one step on the ramp: P falls by kp*0.01, I grows by ki*e*dt
        expected = -gains["kp"] * 0.01 + gains["ki"] * 0.8 * 0.1
        assert after - before == pytest.approx(expected, abs=1e-12)
        assert name == "ki" or pid.get_states()["integral"] != integral

    def test_limits_in_the_wrong_order_are_refused(self) -> None:
        """output_min above output_max is refused and nothing changes."""
        pid = make(PID, output_min=0.0, output_max=10.0)
        with pytest.raises(OutOfRange, match="output_min must not exceed output_max"):
            pid.set_parameter("output_min", 20.0)
        assert pid.parameters["output_min"] == 0.0
        with pytest.raises(OutOfRange):
            make(PID, output_min=5.0, output_max=1.0)

    def test_narrowed_limits_clamp_the_integral(self) -> None:
        """Lowering output_max below the integral term pulls the integral term down with it."""
        pid = make(PID, {"integral": 50.0}, output_max=100.0)
        pid.set_parameter("output_max", 20.0)
        assert pid.get_states() == {"integral": 20.0}

    def test_integral_preload(self) -> None:
        """A written integral is the output at zero error (bumpless switch from manual)."""
        pid = make(PID, kp=2.0, ki=1.0)
        pid.set_states({"integral": 42.0})
        assert run(pid, 0.1, 1, setpoint=1.0, measurement=1.0)[-1]["output"] == 42.0


class TestClosedLoop:
    def test_controls_the_tank_level(self) -> None:
        """A PI controller on the tank's inflow brings the level to 1.2 m and holds it (1e-4 m)."""
        tank = make(WaterTank, {"level": 0.2})
        pid = make(PID, kp=0.5, ki=0.05, output_min=0.0, output_max=0.2)
        level = tank.get_states()["level"]
        dt = 0.1
        for k in range(6000):  # 600 s; the tank has no feedthrough, so it reads last tick's u
            u = pid.step(k * dt, dt, {"setpoint": 1.2, "measurement": level})["output"]
            level = tank.step(k * dt, dt, {"inflow": u})["level"]
        assert level == pytest.approx(1.2, abs=1e-4)
        assert u == pytest.approx(0.05 * math.sqrt(1.2), abs=1e-5)

    def test_restore_gives_bit_identical_future(self) -> None:
        """After restore the same inputs give exactly the same outputs, derivative included."""
        pid = make(PID, kp=1.0, ki=0.2, kd=0.3, derivative_filter_time=0.5)
        for k in range(20):
            pid.step(k * 0.1, 0.1, {"setpoint": 5.0, "measurement": 0.1 * k})
        snap = pid.snapshot()
        signal = [{"setpoint": 5.0, "measurement": math.sin(0.3 * k)} for k in range(100)]
        first = [pid.step((20 + k) * 0.1, 0.1, s) for k, s in enumerate(signal)]
        pid.restore(snap)
        assert [pid.step((20 + k) * 0.1, 0.1, s) for k, s in enumerate(signal)] == first
