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


# -- lateness from the clocks' histograms (ClockStatistics.lateness_counts) -------------


def counts_between(before: Any, after: Any) -> list[int]:
    """The ticks by lateness bucket between two ``ClockStatistics`` of one clock."""
    return [b - a for a, b in zip(before.lateness_counts, after.lateness_counts, strict=True)]


def pooled(histograms: list[list[int]]) -> list[int]:
    """Several clocks' histograms added bucket by bucket."""
    return [sum(column) for column in zip(*histograms, strict=True)]


def quantile(counts: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of a lateness histogram, in seconds, interpolated
    linearly inside its bucket (the buckets are 19 % wide: 2^(1/4)); NaN when empty.
    ``quantile(c, 0.99) <= 0.002`` holds exactly when at most 1 % of the ticks were
    later than 2 ms (an edge)."""
    from twin_server.runtime.clock import LATENESS_EDGES

    total = sum(counts)
    if not total:
        return float("nan")
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            low = LATENESS_EDGES[i - 1] if i else 0.0
            high = LATENESS_EDGES[i] if i < len(LATENESS_EDGES) else 2 * LATENESS_EDGES[-1]
            return low + (high - low) * max(rank - seen, 0.0) / count
        seen += count
    return LATENESS_EDGES[-1]


def worst(counts: list[int]) -> float:
    """The upper edge of the latest non-empty bucket (s): no tick was later."""
    from twin_server.runtime.clock import LATENESS_EDGES

    for i in range(len(counts) - 1, -1, -1):
        if counts[i]:
            return LATENESS_EDGES[i] if i < len(LATENESS_EDGES) else float("inf")
    return 0.0


def later_than(counts: list[int], seconds: float) -> int:
    """Ticks later than ``seconds`` (rounded to the bucket edge at or above it)."""
    import bisect

    from twin_server.runtime.clock import LATENESS_EDGES

    return sum(counts[bisect.bisect_left(LATENESS_EDGES, seconds) + 1:])


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages, for the figures' context."""
    import os

    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# -- the machine's floor: a bare 100 Hz loop in a process of its own ----------------------


class Floor:
    """A bare loop pacing 100 Hz on a timerfd in a process of its own (as a worker
    sleeps, with no session), measuring ``seconds`` after ``delay``: run beside a
    figure, it shows how late this shared machine wakes a process in the same
    seconds. ``counts()`` is its histogram (``LATENESS_EDGES`` buckets)."""

    def __init__(self, delay: float, seconds: float, *, fifo: bool = False) -> None:
        """``fifo``: the loop asks for real-time scheduling (``SCHED_FIFO``, priority
        10: root, or CAP_SYS_NICE), as a service can with systemd's
        ``CPUSchedulingPolicy=fifo``."""
        self.delay, self.seconds, self.fifo = delay, seconds, fifo
        self._process: Any = None

    async def start(self) -> Floor:
        import asyncio
        import sys
        from pathlib import Path

        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench.common", "floor", str(self.delay),
            str(self.seconds), *(["fifo"] if self.fifo else []),
            cwd=Path(__file__).resolve().parents[2],
            stdout=asyncio.subprocess.PIPE)
        return self

    async def counts(self) -> list[int]:
        import asyncio
        import json

        out, _ = await asyncio.wait_for(self._process.communicate(), self.seconds + 120)
        assert self._process.returncode == 0, f"the floor loop exited {self._process.returncode}"
        return [int(x) for x in json.loads(out)]


def _floor_main(delay: float, seconds: float, fifo: bool) -> None:
    import asyncio
    import bisect
    import json
    import os
    import time

    from twin_server.runtime.clock import LATENESS_BUCKETS, LATENESS_EDGES
    from twin_server.runtime.timers import PreciseSleep

    async def pace() -> list[int]:
        sleep = PreciseSleep()
        counts = [0] * LATENESS_BUCKETS
        start = time.monotonic() + delay
        k = 0
        try:
            while k * 0.01 < seconds:
                deadline = start + k * 0.01
                now = time.monotonic()
                if deadline > now:
                    await sleep(deadline - now)
                    continue
                counts[bisect.bisect_left(LATENESS_EDGES, now - deadline)] += 1
                k += 1
        finally:
            sleep.close()
        return counts

    if fifo:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    print(json.dumps(asyncio.run(pace())))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["floor"]:
        _floor_main(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:5] == ["fifo"])
