"""Helpers the benchmark modules share (not a benchmark: no ``bench_`` prefix)."""

from __future__ import annotations

from typing import Any

#: the demo's tank twin (configs/demo.toml), for benchmarks of many tank sessions
TANK_TWIN = """\
[twins.tank_level]
description = "Water tank with a PID level controller on the inflow valve"
connections = [
    "setpoint.output -> controller.setpoint",
    "tank.level -> controller.measurement",
    "controller.output -> tank.inflow",
]

[twins.tank_level.components.setpoint]
model = "square"
parameters = { offset = 1.0, amplitude = 0.3, period = 120.0, duty = 0.5 }

[twins.tank_level.components.tank]
model = "water_tank"
parameters = { area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }

[twins.tank_level.components.controller]
model = "pid"
parameters = { kp = 0.2, ki = 0.004, kd = 0.0, output_min = 0.0, output_max = 0.05 }
"""


def lateness_samples(clock: Any) -> list[float]:
    """The lateness of the clock's recent ticks (its window, up to 2,048), in
    seconds, oldest first as far as the window allows: for the distribution plots.
    ``Clock`` keeps them in a ring buffer for its percentiles; a public
    ``lateness_samples()`` wins if the clock has one."""
    public = getattr(clock, "lateness_samples", None)
    if callable(public):
        return [float(x) for x in public()]
    ring, count = getattr(clock, "_lateness", None), getattr(clock, "_late_count", 0)
    if ring is None or not count:
        return []
    if count < len(ring):
        return [float(x) for x in ring[:count]]
    index = int(getattr(clock, "_late_index", 0))
    return [float(x) for x in (*ring[index:], *ring[:index])]
