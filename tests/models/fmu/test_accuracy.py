"""Model exchange accuracy: the component's CVode keeps its history from tick to tick,
so at a given tolerance its error is within twice that of FMPy's own simulate_fmu
on the same output grid (FMPy integrates across its output points without
restarting) and does not grow as the ticks get shorter. Checked on a stiff Van der
Pol oscillator (vdp2, against a DOP853 solution at rtol 1e-13) and on the bouncing
ball (ball3, against its exact piecewise parabolas), both at rtol 1e-6."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import fmpy
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from tests.models.fmu.conftest import defaults, open_fmu
from twin_server.models import fmu as fmu_module
from twin_server.models.base import Kind

TOLERANCE = 1e-6


@functools.cache
def vdp_reference(mu: float, stop: float) -> Any:
    """The Van der Pol solution from x = (2, 0) by SciPy's DOP853 at rtol = atol = 1e-13
    (it agrees with Radau at 1e-12 to 1e-13 for mu = 10, at a tenth of the cost)."""
    def rhs(t: float, x: np.ndarray) -> list[float]:
        return [x[1], mu * (1 - x[0] ** 2) * x[1] - x[0]]
    return solve_ivp(rhs, (0, stop), [2.0, 0.0], method="DOP853", rtol=1e-13, atol=1e-13,
                     dense_output=True).sol


def ball_exact(times: np.ndarray, g: float = 9.81, e: float = 0.7) -> np.ndarray:
    """The height of ball3 dropped from 1 m: parabolas between bounces (v := -e*v at
    h = 0), at rest once a bounce leaves it slower than 0.05 m/s."""
    arcs, t, v = [(0.0, 1.0, 0.0)], np.sqrt(2.0 / g), 0.0
    v = e * g * t
    while v >= 0.05:
        arcs.append((t, 0.0, v))
        t, v = t + 2 * v / g, v * e
    rest = t
    heights = []
    for time in times:
        start, h0, v0 = next(a for a in reversed(arcs) if a[0] <= time)
        d = time - start
        heights.append(0.0 if time >= rest else h0 + v0 * d - g * d * d / 2)
    return np.array(heights)


def run_ticks(path: Path, cache_dir: Path, dt: float, stop: float, output: str,
              parameters: dict[str, float], inputs: dict[str, float]) -> tuple[np.ndarray, ...]:
    """Tick the FMU from 0 to ``stop``; (times, ``output`` at each tick end, with t = 0)."""
    model = open_fmu(path, cache_dir, tolerance=TOLERANCE)
    try:
        start = model.reset({**defaults(model, Kind.PARAMETER), **parameters}, {})
        times, values = [0.0], [float(start[output])]
        for k in range(round(stop / dt)):
            values.append(float(model.step(k * dt, dt, inputs)[output]))
            times.append((k + 1) * dt)
    finally:
        model.close()
    return np.array(times), np.array(values)


def fmpy_run(path: Path, dt: float, stop: float, output: str,
             parameters: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    result = fmpy.simulate_fmu(str(path), fmi_type="ModelExchange", stop_time=stop,
                               relative_tolerance=TOLERANCE, output=[output],
                               start_values=parameters, output_interval=dt)
    return result["time"], result[output]


class TestStiffOscillator:
    MU, STOP = 10.0, 30.0

    @pytest.mark.parametrize("dt", [0.1, 0.01])
    def test_within_twice_fmpy(self, fmus: dict[str, Path], cache_dir: Path, dt: float) -> None:
        """Van der Pol at mu = 10 over 30 s: the error at rtol 1e-6 is at most twice
        FMPy's on the same grid (restarting CVode at each tick made it 10 to 20 times)."""
        reference = vdp_reference(self.MU, self.STOP)
        times, x0 = run_ticks(fmus["vdp2"], cache_dir, dt, self.STOP, "x0", {"mu": self.MU},
                              {"u": 0.0})
        ours = np.max(np.abs(x0 - reference(times)[0]))
        ref_times, ref_x0 = fmpy_run(fmus["vdp2"], dt, self.STOP, "x0", {"mu": self.MU})
        theirs = np.max(np.abs(ref_x0 - reference(ref_times)[0]))
        assert ours <= 2 * theirs, (ours, theirs)

    def test_error_does_not_grow_with_shorter_ticks(self, fmus: dict[str, Path],
                                                    cache_dir: Path) -> None:
        """Ten times more ticks (dt 0.1 -> 0.01) do not make Van der Pol less accurate."""
        reference = vdp_reference(self.MU, self.STOP)
        errors = []
        for dt in (0.1, 0.01):
            times, x0 = run_ticks(fmus["vdp2"], cache_dir, dt, self.STOP, "x0",
                                  {"mu": self.MU}, {"u": 0.0})
            errors.append(np.max(np.abs(x0 - reference(times)[0])))
        assert errors[1] <= 1.5 * errors[0], errors
        assert errors[1] < 1e-3

    def test_forced_restarts_keep_the_accuracy(self, fmus: dict[str, Path], cache_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """A restart every 100 ticks (the bound on Restore's replay) keeps the error
        within twice FMPy's."""
        monkeypatch.setattr(fmu_module, "_REPLAY_LIMIT", 100)
        reference = vdp_reference(self.MU, self.STOP)
        times, x0 = run_ticks(fmus["vdp2"], cache_dir, 0.01, self.STOP, "x0", {"mu": self.MU},
                              {"u": 0.0})
        ref_times, ref_x0 = fmpy_run(fmus["vdp2"], 0.01, self.STOP, "x0", {"mu": self.MU})
        ours = np.max(np.abs(x0 - reference(times)[0]))
        assert ours <= 2 * np.max(np.abs(ref_x0 - reference(ref_times)[0]))


class TestBouncingBall:
    STOP = 3.0
    #: no time events: the bounces (state events) are the only discontinuities
    PARAMETERS: ClassVar[dict[str, float]] = {"period": 1e9}

    @pytest.mark.parametrize("dt", [0.1, 0.01, 0.001])
    def test_within_twice_fmpy(self, fmus: dict[str, Path], cache_dir: Path, dt: float) -> None:
        """ball3's height over 3 s (eleven bounces, then at rest) is within twice FMPy's
        error from the exact parabolas, and within 1e-4 m, whatever the tick."""
        times, h = run_ticks(fmus["ball3"], cache_dir, dt, self.STOP, "ball_h",
                             self.PARAMETERS, {"a": 0.0})
        ours = np.max(np.abs(h - ball_exact(times)))
        ref_times, ref_h = fmpy_run(fmus["ball3"], dt, self.STOP, "ball.h", self.PARAMETERS)
        theirs = np.max(np.abs(ref_h - ball_exact(ref_times)))
        assert ours <= 2 * theirs, (ours, theirs)
        assert ours < 1e-4


class TestReplay:
    def test_restore_after_many_ticks_is_bit_identical(
            self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """A snapshot 500 ticks after the last restart restores (into a new instance) to
        a future bit-identical with the original's: the integrator's history is replayed."""
        model = open_fmu(fmus["vdp2"], cache_dir, tolerance=TOLERANCE)
        other = open_fmu(fmus["vdp2"], cache_dir, tolerance=TOLERANCE)
        try:
            model.reset({"mu": 10.0}, {})
            for k in range(500):
                model.step(k * 0.01, 0.01, {"u": 0.0})
            snap = model.snapshot()
            other.restore(snap)
            for k in range(500, 1000):
                assert model.step(k * 0.01, 0.01, {"u": 0.0}) == other.step(
                    k * 0.01, 0.01, {"u": 0.0})
        finally:
            model.close()
            other.close()
