"""Clock lateness: the demo's tank session stepping at 100 Hz inside the full daemon
(OPC UA server and publisher running), on the event loop the daemon runs on
(uvloop where installed), beside a bare loop of the same kind pacing the same
100 Hz against absolute deadlines with no work at all, sleeping with the loop's
own timers (``asyncio.sleep``: whole milliseconds) and with the daemon's
timerfd sleep (``timers.PreciseSleep``: the kernel's timer precision, the floor
on this machine right now).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.bench_publish import _loop_run
from tests.bench.common import lateness_samples
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import Daemon
from twin_server.runtime.timers import PreciseSleep

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
SECONDS = 10.0
PERIOD = 0.01


async def _bare_loop(seconds: float, sleep: Callable[[float], Awaitable[None]]) -> np.ndarray:
    start = time.monotonic()
    lateness = []
    k = 1
    while k * PERIOD < seconds:
        deadline = start + k * PERIOD
        await sleep(max(0.0, deadline - time.monotonic()))
        lateness.append(time.monotonic() - deadline)
        k += 1
    return np.asarray(lateness)


async def _bare_loops(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    precise = PreciseSleep()
    try:
        return await _bare_loop(seconds, asyncio.sleep), await _bare_loop(seconds, precise)
    finally:
        precise.close()


async def _demo(seconds: float) -> dict[str, Any]:
    # a state directory of its own: the demo must not resume an earlier run's sessions
    with tempfile.TemporaryDirectory(prefix="bench-clock-") as state:
        os.environ["STATE_DIRECTORY"] = state
        try:
            return await _run_demo(seconds)
        finally:
            del os.environ["STATE_DIRECTORY"]


async def _run_demo(seconds: float) -> dict[str, float]:
    loaded = load_config(DEMO)  # in-process (workers = 0): its clock is read directly
    server = loaded.config.server.model_copy(update={"workers": 0})
    loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(update={"server": server}))
    daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
    runner = asyncio.create_task(daemon.run())
    await daemon.wait_ready()
    await asyncio.sleep(seconds)
    clock = daemon.host.clock("tank")  # type: ignore[union-attr]
    stats = clock.statistics()
    samples = lateness_samples(clock)
    daemon.stop()
    await runner
    return {"p50": stats.lateness_p50, "p99": stats.lateness_p99, "max": stats.lateness_max,
            "overruns": float(stats.overruns), "ticks": float(stats.ticks),
            "samples": samples}


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
            "max": float(x.max())}


def run() -> list[dict[str, Any]]:
    bare, floor = _loop_run(_bare_loops(SECONDS / 2))
    demo = _loop_run(_demo(SECONDS))
    loop = "uvloop" if _on_uvloop() else "asyncio"
    base, timerfd = _quantiles(bare), _quantiles(floor)
    figures = [
        {"figure": f"clock lateness {q}, demo tank at 100 Hz", "value": demo[q] * 1e3,
         "unit": "ms", "baseline": f"bare {loop} loop at 100 Hz, asyncio.sleep",
         "baseline_value": base[q] * 1e3,
         "target": "p99 <= 2 ms" if q == "p99" else "", "higher_is_better": False}
        for q in ("p50", "p99", "max")
    ]
    figures += [
        {"figure": f"  bare {loop} loop at 100 Hz, timerfd sleep: lateness {q}",
         "value": timerfd[q] * 1e3, "unit": "ms", "baseline": "", "baseline_value": None,
         "target": "", "higher_is_better": False}
        for q in ("p50", "p99")
    ]
    # the distributions behind the percentiles, for the plots (ms)
    figures[1]["samples"] = [x * 1e3 for x in demo["samples"]]
    figures[1]["baseline_samples"] = [float(x) * 1e3 for x in bare]
    figures.append({"figure": "clock overruns, demo tank", "value": demo["overruns"],
                    "unit": f"of {demo['ticks']:.0f} ticks", "target": "0",
                    "higher_is_better": False})
    return figures


def _on_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None
