"""Sources: their value at chosen times, on the engine's counted time grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import square

from tests.models.support import make
from twin_server.models.base import Model
from twin_server.models.sources import Constant, Ramp, Sine, Square, Step, end_time


def value_at(model: Model, k: int, dt: float) -> float:
    """The output the engine sees after tick k-1, i.e. at t = k*dt (k = 0: reset)."""
    if k == 0:
        return float(model.reset(model.parameters, {})["output"])
    return float(model.step((k - 1) * dt, dt, {})["output"])


class TestValues:
    @pytest.mark.parametrize(("cls", "parameters", "k", "dt", "expected"), [
        pytest.param(Constant, {"value": 4.2}, 0, 0.1, 4.2, id="constant-at-0"),
        pytest.param(Constant, {"value": 4.2}, 1000, 0.1, 4.2, id="constant-later"),
        pytest.param(Step, {"initial": 1.0, "final": 3.0, "step_time": 1.0}, 9, 0.1, 1.0,
                     id="step-before"),
        pytest.param(Step, {"initial": 1.0, "final": 3.0, "step_time": 1.0}, 10, 0.1, 3.0,
                     id="step-exactly-at-step-time"),
        pytest.param(Step, {"initial": 1.0, "final": 3.0, "step_time": 0.0}, 0, 0.1, 3.0,
                     id="step-at-0"),
        pytest.param(Ramp, {"initial": 2.0, "slope": 0.5, "start_time": 3.0}, 20, 0.1, 2.0,
                     id="ramp-before-start"),
        pytest.param(Ramp, {"initial": 2.0, "slope": 0.5, "start_time": 3.0}, 70, 0.1, 4.0,
                     id="ramp-after-start"),
        pytest.param(Sine, {"amplitude": 2.0, "frequency": 0.25, "phase": 0.0, "offset": 1.0},
                     100, 0.01, 3.0, id="sine-quarter-period"),
        pytest.param(Sine, {"amplitude": 2.0, "frequency": 0.25, "phase": math.pi / 2,
                            "offset": 1.0}, 0, 0.01, 3.0, id="sine-phase"),
        pytest.param(Square, {"amplitude": 1.5, "period": 4.0, "duty": 0.25, "offset": 0.5},
                     0, 0.5, 2.0, id="square-high-at-0"),
        pytest.param(Square, {"amplitude": 1.5, "period": 4.0, "duty": 0.25, "offset": 0.5},
                     2, 0.5, -1.0, id="square-low-from-duty"),
        pytest.param(Square, {"amplitude": 1.5, "period": 4.0, "duty": 0.25, "offset": 0.5},
                     8, 0.5, 2.0, id="square-next-period"),
    ])
    def test_value_at(self, cls: type[Model], parameters: dict[str, float], k: int, dt: float,
                      expected: float) -> None:
        """The output at t = k*dt equals the closed form (1e-12)."""
        model = make(cls, **parameters)
        assert value_at(model, k, dt) == pytest.approx(expected, abs=1e-12)

    def test_sine_matches_numpy(self) -> None:
        """Over 10 000 ticks the sine equals offset + A*sin(2*pi*f*t + phase) to 1e-12."""
        model = make(Sine, amplitude=3.0, frequency=1.7, phase=0.4, offset=-2.0)
        dt = 0.001
        got = np.array([value_at(model, k, dt) for k in range(1, 10_001)])
        t = np.arange(1, 10_001) * dt
        assert np.max(np.abs(got - (-2.0 + 3.0 * np.sin(2 * np.pi * 1.7 * t + 0.4)))) < 1e-12

    def test_square_matches_scipy_away_from_edges(self) -> None:
        """Away from its switching instants the square wave equals scipy.signal.square exactly."""
        period, duty, dt = 0.7, 0.3, 0.001
        model = make(Square, amplitude=2.0, period=period, duty=duty, offset=1.0)
        t = np.arange(1, 5001) * dt
        got = np.array([value_at(model, k, dt) for k in range(1, 5001)])
        phase = (t / period) % 1.0
        away = (np.abs(phase - duty) > 1e-6) & (phase > 1e-6) & (phase < 1 - 1e-6)
        expected = 1.0 + 2.0 * square(2 * np.pi * t / period, duty)
        assert np.array_equal(got[away], expected[away])

    def test_sources_have_no_inputs_and_no_feedthrough(self) -> None:
        """Every source has exactly one output, no inputs and no direct feedthrough."""
        for cls in (Constant, Step, Ramp, Sine, Square):
            kinds = [v.kind.value for v in cls.variables]
            assert kinds.count("output") == 1 and "input" not in kinds and "state" not in kinds
            assert cls.direct_feedthrough is False


class TestTimeGrid:
    @pytest.mark.parametrize(("k", "dt"), [
        pytest.param(9, 0.1, id="0.9+0.1"), pytest.param(2, 0.1, id="0.2+0.1"),
        pytest.param(99_999, 0.001, id="99.999+0.001")])
    def test_end_of_step_is_counted(self, k: int, dt: float) -> None:
        """The end of a step from t = k*dt is (k+1)*dt exactly, not the rounded t + dt."""
        assert end_time(k * dt, dt) == (k + 1) * dt

    def test_off_grid_time_falls_back_to_sum(self) -> None:
        """A time not on the k*dt grid ends the step at t + dt."""
        assert end_time(0.05, 0.1) == 0.05 + 0.1

    def test_step_fires_on_the_tick_of_step_time(self) -> None:
        """With dt = 0.1 a step at 1.0 s shows in the output of tick 9 (t = 0.9 -> 1.0)."""
        model = make(Step, initial=0.0, final=1.0, step_time=1.0)
        outputs = [model.step(k * 0.1, 0.1, {})["output"] for k in range(12)]
        assert outputs.index(1.0) == 9

    def test_value_depends_on_time_only(self) -> None:
        """Stepping out of order gives the same values as stepping in order (no hidden state)."""
        model = make(Sine, frequency=0.3, amplitude=1.0)
        ordered = [model.step(k * 0.01, 0.01, {}) for k in range(50)]
        shuffled = {k: model.step(k * 0.01, 0.01, {}) for k in reversed(range(50))}
        assert ordered == [shuffled[k] for k in range(50)]
