"""The heated room against its analytic solution and a tight SciPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from tests.models.support import make, run
from twin_server.models.room_temperature import RoomTemperature


class TestAgainstAnalytic:
    @pytest.mark.parametrize(("power", "ambient", "efficiency", "dt"), [
        pytest.param(2000.0, 10.0, 1.0, 0.01, id="heating-10ms"),
        pytest.param(0.0, -5.0, 1.0, 1.0, id="cooling-1s"),
        pytest.param(3000.0, 15.0, 0.6, 60.0, id="partly-efficient-1min"),
    ])
    def test_step_response_is_exponential(self, power: float, ambient: float,
                                          efficiency: float, dt: float) -> None:
        """T(t) = T_ss + (T0 - T_ss)*exp(-t/RC) at every tick over 3 h, within 1e-9 K."""
        r, c, t0 = 0.005, 1e6, 20.0
        room = make(RoomTemperature, {"temperature": t0}, thermal_resistance=r,
                    thermal_capacitance=c, efficiency=efficiency)
        steps = round(3 * 3600 / dt)
        stride = max(1, steps // 2000)
        steady = ambient + efficiency * power * r
        outputs = run(room, dt, steps, heater_power=power, ambient_temperature=ambient)
        for i in range(stride - 1, steps, stride):
            expected = steady + (t0 - steady) * math.exp(-(i + 1) * dt / (r * c))
            assert outputs[i]["temperature"] == pytest.approx(expected, abs=1e-9)

    def test_piecewise_inputs_match_solve_ivp(self) -> None:
        """With inputs changing every 10 min the temperature stays within 1e-7 K of
        solve_ivp(DOP853, rtol=1e-10, atol=1e-12) integrated piece by piece."""
        r, c, dt = 0.01, 5e5, 1.0
        room = make(RoomTemperature, {"temperature": 18.0}, thermal_resistance=r,
                    thermal_capacitance=c, efficiency=0.9)
        pieces = [(1500.0, 5.0), (0.0, 5.0), (2500.0, -10.0), (800.0, 12.0)]
        temperature, k = 18.0, 0
        for power, ambient in pieces:
            out = run(room, dt, 600, start=k, heater_power=power, ambient_temperature=ambient)
            k += 600
            sol = solve_ivp(lambda _t, y, p=power, a=ambient: [(0.9 * p - (y[0] - a) / r) / c],
                            (0.0, 600.0), [temperature], method="DOP853", rtol=1e-10, atol=1e-12,
                            t_eval=np.arange(1, 601) * dt)
            model = np.array([o["temperature"] for o in out])
            assert np.max(np.abs(model - sol.y[0])) < 1e-7
            temperature = float(sol.y[0, -1])


class TestBehaviour:
    def test_defaults_describe_a_room(self) -> None:
        """Default RC is 5000 s, and a 2 kW heater holds the room 10 K above ambient."""
        defaults = {v.name: v.default for v in RoomTemperature.variables if v.kind == "parameter"}
        assert defaults["thermal_resistance"] * defaults["thermal_capacitance"] == 5000.0
        room = make(RoomTemperature, {"temperature": 10.0})
        out = run(room, 60.0, 24 * 60, heater_power=2000.0, ambient_temperature=10.0)[-1]
        assert out["temperature"] == pytest.approx(20.0, abs=1e-6)
        assert RoomTemperature.direct_feedthrough is False

    def test_tuning_capacitance_takes_effect_next_step(self) -> None:
        """A tuned capacitance changes the next step's rate exactly as a fresh model would."""
        room = make(RoomTemperature)
        run(room, 1.0, 10, heater_power=1000.0)
        room.set_parameter("thermal_capacitance", 2e5)
        fresh = make(RoomTemperature, {"temperature": room.get_states()["temperature"]},
                     thermal_capacitance=2e5)
        assert run(room, 1.0, 5, start=10, heater_power=1000.0) == run(
            fresh, 1.0, 5, start=10, heater_power=1000.0)

    def test_initial_parameter_and_state(self) -> None:
        """initial_temperature applies at reset unless an initial state value is given."""
        assert make(RoomTemperature, initial_temperature=16.0).get_states() == {"temperature": 16.0}
        assert make(RoomTemperature, {"temperature": 25.0}, initial_temperature=16.0
                    ).get_states() == {"temperature": 25.0}

    def test_state_write_applies_from_next_step(self) -> None:
        """Writing the temperature moves the room there; the next step starts from it."""
        room = make(RoomTemperature)
        room.set_states({"temperature": 30.0})
        out = run(room, 1.0, 1, heater_power=0.0, ambient_temperature=30.0)[-1]
        assert out["temperature"] == 30.0

    def test_restore_gives_bit_identical_future(self) -> None:
        """After restore the same inputs give exactly the same temperatures."""
        room = make(RoomTemperature)
        run(room, 0.5, 100, heater_power=500.0)
        snap = room.snapshot()
        first = run(room, 0.5, 100, start=100, heater_power=1500.0, ambient_temperature=0.0)
        room.restore(snap)
        assert run(room, 0.5, 100, start=100, heater_power=1500.0, ambient_temperature=0.0) == first
