"""Clock lateness: the demo's tank session stepping at 100 Hz inside the full daemon
(OPC UA server and publisher running), beside a bare asyncio loop pacing the
same 100 Hz against absolute deadlines with no work at all: the floor that the
event loop's own timers give on this machine right now.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.common import lateness_samples
from twin_server.app import Daemon
from twin_server.config.loader import load_config

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
SECONDS = 10.0
PERIOD = 0.01


async def _bare_loop(seconds: float) -> np.ndarray:
    loop = asyncio.get_running_loop()
    start = loop.time()
    lateness = []
    k = 1
    while k * PERIOD < seconds:
        deadline = start + k * PERIOD
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        lateness.append(loop.time() - deadline)
        k += 1
    return np.asarray(lateness)


async def _demo(seconds: float) -> dict[str, Any]:
    # a state directory of its own: the demo must not resume an earlier run's sessions
    with tempfile.TemporaryDirectory(prefix="bench-clock-") as state:
        os.environ["STATE_DIRECTORY"] = state
        try:
            return await _run_demo(seconds)
        finally:
            del os.environ["STATE_DIRECTORY"]


async def _run_demo(seconds: float) -> dict[str, float]:
    daemon = Daemon(load_config(DEMO), endpoint="opc.tcp://127.0.0.1:0/twin-server")
    runner = asyncio.create_task(daemon.run())
    await daemon.wait_ready()
    await asyncio.sleep(seconds)
    clock = daemon.sessions["tank"].clock
    stats = clock.statistics()
    samples = lateness_samples(clock)
    daemon.stop()
    await runner
    return {"p50": stats.lateness_p50, "p99": stats.lateness_p99, "max": stats.lateness_max,
            "overruns": float(stats.overruns), "ticks": float(stats.ticks),
            "samples": samples}


async def run() -> list[dict[str, Any]]:
    bare = await _bare_loop(SECONDS / 2)
    demo = await _demo(SECONDS)
    base = {"p50": float(np.percentile(bare, 50)), "p99": float(np.percentile(bare, 99)),
            "max": float(bare.max())}
    figures = [
        {"figure": f"clock lateness {q}, demo tank at 100 Hz", "value": demo[q] * 1e3,
         "unit": "ms", "baseline": "bare asyncio loop at 100 Hz", "baseline_value": base[q] * 1e3,
         "target": "p99 <= 2 ms" if q == "p99" else "", "higher_is_better": False}
        for q in ("p50", "p99", "max")
    ]
    # the distributions behind the percentiles, for the plots (ms)
    figures[1]["samples"] = [x * 1e3 for x in demo["samples"]]
    figures[1]["baseline_samples"] = [float(x) * 1e3 for x in bare]
    figures.append({"figure": "clock overruns, demo tank", "value": demo["overruns"],
                    "unit": f"of {demo['ticks']:.0f} ticks", "target": "0",
                    "higher_is_better": False})
    return figures
