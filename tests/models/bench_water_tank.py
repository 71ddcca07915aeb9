"""Cost and accuracy of ways to advance the water tank by one 10 ms tick.

Run with ``python -m tests.models.bench_water_tank``. Compares, per tick:

* ``solve_ivp`` (RK45, default tolerances) called once per tick, as a naive
  SciPy-based model would;
* a fixed-step RK4 with 4 substeps and h clamped at 0 inside the right-hand side;
* the exact solution the model uses (``level_after``);

each against a ``solve_ivp`` reference at ``rtol=1e-10`` over the same trajectory.
Not collected by pytest (no ``test_`` prefix); the accuracy is asserted in
``test_water_tank.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from twin_server.models.base import Kind
from twin_server.models.water_tank import WaterTank, level_after

AREA, K, DT = 1.0, 0.05, 0.01


def rhs(q: float) -> Callable[[float, np.ndarray], np.ndarray]:
    def f(_t: float, y: np.ndarray) -> np.ndarray:
        return np.array([(q - K * math.sqrt(max(y[0], 0.0))) / AREA])
    return f


def tick_solve_ivp(h: float, q: float) -> float:
    sol = solve_ivp(rhs(q), (0.0, DT), [h], method="RK45")
    return max(float(sol.y[0, -1]), 0.0)


def tick_rk4(h: float, q: float, substeps: int = 4) -> float:
    dt = DT / substeps

    def f(x: float) -> float:
        return (q - K * math.sqrt(max(x, 0.0))) / AREA

    for _ in range(substeps):
        k1 = f(h)
        k2 = f(h + 0.5 * dt * k1)
        k3 = f(h + 0.5 * dt * k2)
        k4 = f(h + dt * k3)
        h = max(h + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), 0.0)
    return h


def tick_exact(h: float, q: float) -> float:
    return level_after(h, DT, q, AREA, K)


def reference(h0: float, q: float, ticks: int) -> np.ndarray:
    t = np.arange(1, ticks + 1) * DT
    sol = solve_ivp(rhs(q), (0.0, t[-1]), [h0], method="DOP853", t_eval=t,
                    rtol=1e-10, atol=1e-14)
    return np.maximum(sol.y[0], 0.0)


def run(tick: Callable[[float, float], float], h0: float, q: float, ticks: int) -> np.ndarray:
    out = np.empty(ticks)
    h = h0
    for i in range(ticks):
        h = tick(h, q)
        out[i] = h
    return out


def cost_us(tick: Callable[[float, float], float], ticks: int) -> float:
    h = 0.5
    start = time.perf_counter()
    for _ in range(ticks):
        h = tick(h, 0.05)
    return (time.perf_counter() - start) / ticks * 1e6


def main() -> None:
    scenarios = {"filling 0.5 m -> 1 m": (0.5, 0.05), "draining 1 m, no inflow": (1.0, 0.0),
                 "filling from empty": (0.0, 0.02)}
    ticks = 20_000  # 200 s of simulated time
    model = WaterTank()
    model.reset({v.name: v.default for v in WaterTank.declared(Kind.PARAMETER)}, {})
    inputs = {"inflow": 0.05}

    def tick_model(_h: float, _q: float) -> float:
        return float(model.step(0.0, DT, inputs)["level"])

    print(f"cost per {DT * 1e3:g} ms tick (mean of many ticks):")
    for name, fn, n in (("solve_ivp RK45 per tick", tick_solve_ivp, 2_000),
                        ("RK4, 4 substeps", tick_rk4, 50_000),
                        ("exact (level_after)", tick_exact, 50_000),
                        ("WaterTank.step", tick_model, 50_000)):
        print(f"  {name:28s} {cost_us(fn, n):8.2f} us")
    print("max |error| against solve_ivp(DOP853, rtol=1e-10, atol=1e-14) over 200 s:")
    for label, (h0, q) in scenarios.items():
        ref = reference(h0, q, ticks)
        errors = {name: float(np.max(np.abs(run(fn, h0, q, ticks) - ref)))
                  for name, fn in (("solve_ivp", tick_solve_ivp), ("rk4", tick_rk4),
                                   ("exact", tick_exact))}
        print(f"  {label:26s} " + "  ".join(f"{n}={e:.2e} m" for n, e in errors.items()))


if __name__ == "__main__":
    main()
