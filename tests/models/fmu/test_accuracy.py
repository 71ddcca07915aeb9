"""Model exchange accuracy (issue #16): the component's CVode keeps its history from
tick to tick, so at a given tolerance its error is within twice that of FMPy's own
simulate_fmu on the same output grid (FMPy integrates across its output points
without restarting) and does not grow as the ticks get shorter (dt 0.1, 0.01, 0.001).
Checked on Van der Pol (vdp2: mu = 1 as the Reference FMUs' VanDerPol, and stiff at
mu = 10; against a DOP853 solution at rtol 1e-13) and on the bouncing ball (ball3:
its height against the exact parabolas, and its bounce times), all at rtol 1e-6."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

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


G, E = 9.81, 0.7  # ball3's gravity and coefficient of restitution


def ball_bounces() -> list[tuple[float, float]]:
    """ball3 dropped from 1 m: (time, upward speed) of each bounce (v := -e*v at h = 0),
    until one leaves it slower than 0.05 m/s (it is at rest from the last one on)."""
    t = np.sqrt(2.0 / G)
    bounces = [(t, E * G * t)]
    while bounces[-1][1] >= 0.05:
        t, v = bounces[-1]
        bounces.append((t + 2 * v / G, v * E))
    return bounces


def ball_exact(times: np.ndarray) -> np.ndarray:
    """The exact height of ball3: parabolas between bounces, 0 once at rest."""
    arcs = [(0.0, 1.0, 0.0)] + [(t, 0.0, v) for t, v in ball_bounces()[:-1]]
    rest = ball_bounces()[-1][0]
    heights = []
    for time in times:
        start, h0, v0 = next(a for a in reversed(arcs) if a[0] <= time)
        d = time - start
        heights.append(0.0 if time >= rest else h0 + v0 * d - G * d * d / 2)
    return np.array(heights)


def bounce_time_error(times: np.ndarray, h: np.ndarray, v: np.ndarray) -> float:
    """The largest error of the bounce times as the samples tell them: from the first
    sample (t, h, v) after a bounce (and before the next), the ball left the floor
    s = (sqrt(v^2 + 2 g h) - v) / g before t."""
    bounces = [t for t, _ in ball_bounces()]
    errors = []
    for bounce, following in itertools.pairwise(bounces):
        i = int(np.searchsorted(times, bounce, side="right"))
        if i < len(times) and times[i] < following:
            s = (np.sqrt(v[i] ** 2 + 2 * G * h[i]) - v[i]) / G
            errors.append(abs(times[i] - s - bounce))
    return max(errors)


def run_ticks(path: Path, cache_dir: Path, dt: float, stop: float, output: str,
              parameters: dict[str, float], inputs: dict[str, float],
              *more: str) -> tuple[np.ndarray, ...]:
    """Tick the FMU from 0 to ``stop``; (times, ``output`` at each tick end, with t = 0,
    then each of ``more`` likewise)."""
    model = open_fmu(path, cache_dir, tolerance=TOLERANCE)
    names = (output, *more)
    try:
        start = model.reset({**defaults(model, Kind.PARAMETER), **parameters}, {})
        times, values = [0.0], [[float(start[n]) for n in names]]
        for k in range(round(stop / dt)):
            out = model.step(k * dt, dt, inputs)
            values.append([float(out[n]) for n in names])
            times.append((k + 1) * dt)
    finally:
        model.close()
    return np.array(times), *np.array(values).T


def fmpy_run(path: Path, dt: float, stop: float, output: str,
             parameters: dict[str, float], *more: str) -> tuple[np.ndarray, ...]:
    result = fmpy.simulate_fmu(str(path), fmi_type="ModelExchange", stop_time=stop,
                               relative_tolerance=TOLERANCE, output=[output, *more],
                               start_values=parameters, output_interval=dt)
    return result["time"], *(result[n] for n in (output, *more))


@functools.cache
def vdp_errors(path: Path, cache_dir: Path, mu: float, dt: float) -> tuple[float, float]:
    """The largest error of x0 over the run: (ours, FMPy's) on the grid of ``dt``."""
    stop = VDP_STOP[mu]
    reference = vdp_reference(mu, stop)
    times, x0 = run_ticks(path, cache_dir, dt, stop, "x0", {"mu": mu}, {"u": 0.0})
    ref_times, ref_x0 = fmpy_run(path, dt, stop, "x0", {"mu": mu})
    return (float(np.max(np.abs(x0 - reference(times)[0]))),
            float(np.max(np.abs(ref_x0 - reference(ref_times)[0]))))


#: Van der Pol: mu -> stop time (mu = 1 over 20 s is the Reference FMUs' VanDerPol, the
#: one issue #16 measured: 2.4e-3 against FMPy's 1.9e-5, 7.3e-3 at dt 0.01)
VDP_STOP = {1.0: 20.0, 10.0: 30.0}
TICKS = [0.1, 0.01, 0.001]


class TestStiffOscillator:
    @pytest.mark.parametrize("mu", list(VDP_STOP))
    @pytest.mark.parametrize("dt", TICKS)
    def test_within_twice_fmpy(self, fmus: dict[str, Path], cache_dir: Path, mu: float,
                               dt: float) -> None:
        """Van der Pol (mu = 1 over 20 s, mu = 10 over 30 s): the error at rtol 1e-6 is at
        most twice FMPy's on the same grid (restarting CVode at each tick made it 10 to
        150 times)."""
        ours, theirs = vdp_errors(fmus["vdp2"], cache_dir, mu, dt)
        assert ours <= 2 * theirs, (ours, theirs)

    @pytest.mark.parametrize("mu", list(VDP_STOP))
    def test_error_does_not_grow_with_shorter_ticks(self, fmus: dict[str, Path],
                                                    cache_dir: Path, mu: float) -> None:
        """A hundred times more ticks (dt 0.1 -> 0.01 -> 0.001) do not make Van der Pol less
        accurate (restarting at each tick, mu = 1 went 1.6e-3 -> 7.3e-3 -> 2.3e-2)."""
        errors = [vdp_errors(fmus["vdp2"], cache_dir, mu, dt)[0] for dt in TICKS]
        assert errors[1] <= 1.5 * errors[0] and errors[2] <= 1.5 * errors[1], errors
        assert max(errors) < 1e-3

    def test_forced_restarts_keep_the_accuracy(self, fmus: dict[str, Path], cache_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """A restart every 100 ticks (the bound on Restore's replay) keeps the error
        within twice FMPy's."""
        monkeypatch.setattr(fmu_module, "_REPLAY_LIMIT", 100)
        mu, stop = 10.0, VDP_STOP[10.0]
        times, x0 = run_ticks(fmus["vdp2"], cache_dir, 0.01, stop, "x0", {"mu": mu},
                              {"u": 0.0})
        ours = np.max(np.abs(x0 - vdp_reference(mu, stop)(times)[0]))
        assert ours <= 2 * vdp_errors(fmus["vdp2"], cache_dir, mu, 0.01)[1]


@functools.cache
def ball_errors(path: Path, cache_dir: Path, dt: float) -> dict[str, tuple[float, float]]:
    """ball3 over 3 s on the grid of ``dt``, no time events (the bounces, state events,
    are the only discontinuities): the largest error of the height and of the bounce
    times, (ours, FMPy's)."""
    parameters = {"period": 1e9}
    times, h, v = run_ticks(path, cache_dir, dt, 3.0, "ball_h", parameters, {"a": 0.0},
                            "ball_v")
    ref_times, ref_h, ref_v = fmpy_run(path, dt, 3.0, "ball.h", parameters, "ball.v")
    return {"height": (float(np.max(np.abs(h - ball_exact(times)))),
                       float(np.max(np.abs(ref_h - ball_exact(ref_times))))),
            "bounce": (bounce_time_error(times, h, v),
                       bounce_time_error(ref_times, ref_h, ref_v))}


class TestBouncingBall:
    @pytest.mark.parametrize("dt", TICKS)
    def test_height_within_twice_fmpy(self, fmus: dict[str, Path], cache_dir: Path,
                                      dt: float) -> None:
        """ball3's height over 3 s (eleven bounces, then at rest) is within twice FMPy's
        error from the exact parabolas, and within 1e-4 m, whatever the tick."""
        ours, theirs = ball_errors(fmus["ball3"], cache_dir, dt)["height"]
        assert ours <= 2 * theirs and ours < 1e-4, (ours, theirs)

    @pytest.mark.parametrize("dt", TICKS)
    def test_bounce_times_within_twice_fmpy(self, fmus: dict[str, Path], cache_dir: Path,
                                            dt: float) -> None:
        """The bounce times the ticks show are within twice FMPy's error, and within
        0.3 ms, whatever the tick (restarting at each tick: 2.9 ms off at dt 0.01,
        12 ms at 0.001, where FMPy's are 0.17 ms)."""
        ours, theirs = ball_errors(fmus["ball3"], cache_dir, dt)["bounce"]
        assert ours <= 2 * theirs and ours < 3e-4, (ours, theirs)


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
