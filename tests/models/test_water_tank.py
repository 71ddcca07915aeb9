"""The water tank against SciPy and closed forms; its rim, its invariants, its snapshots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from tests.models.support import make, run
from twin_server.errors import OutOfRange
from twin_server.models.water_tank import WaterTank, level_after

#: solve_ivp reference settings: DOP853 at rtol 1e-10 and a tiny atol
REFERENCE = {"method": "DOP853", "rtol": 1e-10, "atol": 1e-14}
#: the model may differ from that reference by at most this much, in metres
TOLERANCE_M = 1e-9


def reference(h0: float, inflow: float, area: float, k: float, times: np.ndarray) -> np.ndarray:
    """The level at ``times`` from a tight-tolerance solve_ivp, h clamped at 0 in the RHS."""
    def rhs(_t: float, y: np.ndarray) -> list[float]:
        return [(inflow - k * math.sqrt(max(y[0], 0.0))) / area]

    sol = solve_ivp(rhs, (0.0, float(times[-1])), [h0], t_eval=times, **REFERENCE)
    assert sol.success
    return np.maximum(sol.y[0], 0.0)


class TestAgainstSolveIvp:
    @pytest.mark.parametrize(("h0", "inflow", "area", "k"), [
        pytest.param(0.5, 0.05, 1.0, 0.05, id="filling-to-equilibrium"),
        pytest.param(1.9, 0.01, 1.0, 0.05, id="falling-to-equilibrium"),
        pytest.param(1.0, 0.0, 1.0, 0.05, id="draining-until-empty"),
        pytest.param(0.0, 0.02, 1.0, 0.05, id="filling-from-empty"),
        pytest.param(1e-6, 1e-4, 0.3, 0.2, id="nearly-empty-fast-outlet"),
        pytest.param(0.2, 0.03, 2.5, 0.0, id="outlet-closed"),
    ])
    def test_matches_reference_at_10ms(self, h0: float, inflow: float, area: float,
                                       k: float) -> None:
        """Over 120 s of 10 ms ticks the level stays within 1e-9 m of solve_ivp(rtol=1e-10)."""
        dt, steps = 0.01, 12_000
        tank = make(WaterTank, {"level": h0}, area=area, outflow_coefficient=k, height=10.0)
        levels = np.array([o["level"] for o in run(tank, dt, steps, inflow=inflow)])
        expected = reference(h0, inflow, area, k, np.arange(1, steps + 1) * dt)
        assert np.max(np.abs(levels - expected)) < TOLERANCE_M

    @pytest.mark.parametrize("dt", [pytest.param(0.01, id="10ms"), pytest.param(1.0, id="1s"),
                                    pytest.param(60.0, id="1min"), pytest.param(900.0, id="15min")])
    def test_exact_for_any_step_size(self, dt: float) -> None:
        """Large steps are as accurate as small ones (no stability limit): 1e-9 m at t = 1800 s."""
        steps = round(1800.0 / dt)
        tank = make(WaterTank, {"level": 0.0}, height=10.0)
        level = run(tank, dt, steps, inflow=0.04)[-1]["level"]
        expected = reference(0.0, 0.04, 1.0, 0.05, np.array([1800.0]))[-1]
        assert abs(level - expected) < TOLERANCE_M


class TestClosedForms:
    def test_draining_is_torricelli(self) -> None:
        """Without inflow sqrt(h) falls linearly, k/(2A) per second, to exactly 0 (1e-12 m)."""
        h0, area, k = 1.0, 2.0, 0.1
        tank = make(WaterTank, {"level": h0}, area=area, outflow_coefficient=k)
        for i, out in enumerate(run(tank, 0.5, 200), start=1):
            expected = max(math.sqrt(h0) - k * i * 0.5 / (2 * area), 0.0) ** 2
            assert out["level"] == pytest.approx(expected, abs=1e-12)
        assert out["level"] == 0.0 and out["outflow"] == 0.0

    def test_levels_satisfy_the_implicit_solution(self) -> None:
        """Each level in t(u) = 2A/k*((u0-u) + u*ln((u*-u0)/(u*-u))) gives its time (1e-9 s)."""
        h0, inflow, area, k, dt = 0.04, 0.05, 1.0, 0.05, 0.01
        u0, u_eq = math.sqrt(h0), inflow / k
        tank = make(WaterTank, {"level": h0}, area=area, outflow_coefficient=k)
        for i, out in enumerate(run(tank, dt, 2000, inflow=inflow), start=1):
            u = math.sqrt(out["level"])
            implied = 2 * area / k * ((u0 - u) + u_eq * math.log((u_eq - u0) / (u_eq - u)))
            assert implied == pytest.approx(i * dt, abs=1e-9)

    def test_closed_outlet_fills_linearly(self) -> None:
        """With k = 0 the level rises by inflow/area per second (1e-12 m)."""
        tank = make(WaterTank, {"level": 0.1}, outflow_coefficient=0.0, area=4.0)
        out = run(tank, 0.01, 1000, inflow=0.2)[-1]
        assert out["level"] == pytest.approx(0.1 + 0.2 * 10.0 / 4.0, abs=1e-12)
        assert out["outflow"] == 0.0

    def test_equilibrium_is_steady(self) -> None:
        """At h = (q/k)^2 the level does not move at all."""
        tank = make(WaterTank, {"level": 1.0}, outflow_coefficient=0.05)
        outputs = run(tank, 0.01, 100, inflow=0.05)
        assert {o["level"] for o in outputs} == {1.0}
        assert outputs[-1]["outflow"] == pytest.approx(0.05, rel=1e-15)


class TestOverflow:
    def test_level_clamps_at_height_and_flags(self) -> None:
        """Inflow beyond the outlet fills to the rim, holds the level there and sets overflow."""
        tank = make(WaterTank, {"level": 1.9}, height=2.0, outflow_coefficient=0.05)
        outputs = run(tank, 0.1, 100, inflow=0.5)
        assert max(o["level"] for o in outputs) == 2.0
        assert outputs[-1] == {"level": 2.0, "outflow": 0.05 * math.sqrt(2.0), "overflow": True}
        assert not outputs[0]["overflow"]

    def test_overflow_clears_when_inflow_drops(self) -> None:
        """Once the inflow falls below the outflow the level leaves the rim and the flag clears."""
        tank = make(WaterTank, {"level": 2.0}, height=2.0)
        assert run(tank, 0.1, 1, inflow=1.0)[-1]["overflow"]
        out = run(tank, 0.1, 1, start=1, inflow=0.0)[-1]
        assert not out["overflow"] and out["level"] < 2.0

    def test_lowering_the_rim_spills_at_once(self) -> None:
        """A height tuned below the level clamps the level to the new height."""
        tank = make(WaterTank, {"level": 1.5})
        tank.set_parameter("height", 1.0)
        assert tank.get_states() == {"level": 1.0}
        assert run(tank, 0.1, 1, inflow=1.0)[-1]["overflow"]

    def test_initial_level_above_height_is_refused(self) -> None:
        """Reset names both values when the initial level lies above the rim."""
        with pytest.raises(OutOfRange, match=r"must not exceed its height 2 m \(got 3 m\)"):
            make(WaterTank, {"level": 3.0}, height=2.0)

    def test_state_write_above_height_is_refused(self) -> None:
        """Writing a level above the rim raises and leaves the level unchanged."""
        tank = make(WaterTank, initial_level=0.7)
        with pytest.raises(OutOfRange):
            tank.set_states({"level": 2.5})
        assert tank.get_states() == {"level": 0.7}


class TestInitialisation:
    def test_initial_level_parameter_applies_at_reset(self) -> None:
        """Without an initial state the level starts at the initial_level parameter."""
        tank = WaterTank()
        out = make(WaterTank, initial_level=0.8).reset(
            {"area": 1.0, "outflow_coefficient": 0.05, "height": 2.0, "initial_level": 0.8}, {})
        assert out == {"level": 0.8, "outflow": 0.05 * math.sqrt(0.8), "overflow": False}
        assert tank.direct_feedthrough is False

    def test_initial_state_wins_over_parameter(self) -> None:
        """An initial value for the state 'level' overrides the initial_level parameter."""
        tank = make(WaterTank, {"level": 1.2}, initial_level=0.3)
        assert tank.get_states() == {"level": 1.2}

    def test_initial_level_is_not_tunable(self) -> None:
        """initial_level is fixed while running; area, coefficient and height are tunable."""
        tunable = {v.name: v.tunable for v in WaterTank.variables if v.kind == "parameter"}
        assert tunable == {"area": True, "outflow_coefficient": True, "height": True,
                           "initial_level": False}


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(
        h0=st.floats(0.0, 3.0),
        height=st.floats(1e-3, 3.0),
        area=st.floats(1e-6, 100.0),
        k=st.floats(0.0, 10.0),
        steps=st.lists(st.tuples(st.floats(0.0, 50.0), st.floats(1e-4, 3600.0)),
                       min_size=1, max_size=30),
    )
    def test_level_stays_within_tank(self, h0: float, height: float, area: float, k: float,
                                     steps: list[tuple[float, float]]) -> None:
        """Whatever the inflows and step sizes, the level stays finite and within [0, height]."""
        tank = make(WaterTank, {"level": min(h0, height)}, height=height, area=area,
                    outflow_coefficient=k)
        t = 0.0
        for inflow, dt in steps:
            out = tank.step(t, dt, {"inflow": inflow})
            t += dt
            assert 0.0 <= out["level"] <= height
            assert math.isfinite(out["outflow"])

    @settings(max_examples=200, deadline=None)
    @given(h0=st.floats(0.0, 5.0), inflow=st.floats(1e-6, 5.0), k=st.floats(1e-3, 5.0),
           dt=st.floats(1e-3, 1e4))
    def test_level_approaches_equilibrium_without_crossing(self, h0: float, inflow: float,
                                                           k: float, dt: float) -> None:
        """One step moves the level toward (q/k)^2 and never past it."""
        h_eq = (inflow / k) ** 2
        h = level_after(h0, dt, inflow, 1.0, k)
        assert min(h0, h_eq) - 1e-12 * (1 + h_eq) <= h <= max(h0, h_eq) + 1e-12 * (1 + h_eq)


class TestSnapshot:
    def test_restore_gives_bit_identical_future(self) -> None:
        """After restore, the same inputs give exactly the same levels as the first time."""
        tank = make(WaterTank, {"level": 0.3})
        run(tank, 0.01, 50, inflow=0.08)
        snap = tank.snapshot()
        first = run(tank, 0.01, 300, start=50, inflow=0.3)
        tank.restore(snap)
        assert run(tank, 0.01, 300, start=50, inflow=0.3) == first
