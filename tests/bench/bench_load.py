"""Clock under load: a twin stepping at 100 Hz (dt = 10 ms, real-time factor 1) while
``CLIENTS`` client sessions, in ``PROCESSES`` subprocesses, each subscribe to
``VARIABLES`` of its variables (every one changing each tick, published at 10 Hz,
publishing interval 100 ms), for ``SECONDS`` (a minute; ``BENCH_QUICK=1`` runs 10 s).

Figures: the clock's lateness p50 / p99 / max over every tick of the run, and the
ticks that started more than a period late (overruns: missed ticks), each beside
the same daemon and clock with no client at all (run for a third of the time).
The value changes delivered to the clients and the server's CPU are reported too,
to show the load. Lateness is taken from every tick (the clock's own statistics
keep a window of the recent ones only).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

from tests.bench.bench_publish import _loop_run, config_text, measured, subscribers

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "10" if QUICK else "60"))
CLIENTS = 10
PROCESSES = 2
VARIABLES = 1000
STEP = 0.01
PUBLISH_RATE = 10.0
WARMUP = 2.0


async def _run(clients: int, seconds: float) -> dict[str, float]:
    from twin_server.opcua.server import NAMESPACE_URI
    from twin_server.runtime.compile import parse_config
    from twin_server.runtime.daemon import Daemon

    with tempfile.TemporaryDirectory() as state:
        daemon = Daemon(parse_config(config_text(state, 1, VARIABLES, STEP, PUBLISH_RATE)))
        runner = asyncio.ensure_future(daemon.run())
        await daemon.wait_ready()
        try:
            clock = daemon.host.clock("w0")  # type: ignore[union-attr]  # (workers = 0: in-process clocks)
            lateness: list[float] = []
            recording = False
            record = clock._record

            def recorded(late: float) -> None:
                if recording:
                    lateness.append(late)
                record(late)

            clock._record = recorded  # type: ignore[method-assign]
            group = [f"ns=?;s=Sessions.w0.Components.s{i}.Outputs.output"
                     for i in range(VARIABLES)]
            per_process = [clients // PROCESSES + (k < clients % PROCESSES)
                           for k in range(PROCESSES)] if clients else []
            specs = [{"groups": [group], "ns": NAMESPACE_URI, "clients": n, "count_only": True}
                     for n in per_process if n]
            async with subscribers(daemon.endpoint_url, specs) as subs:
                await asyncio.sleep(WARMUP)
                overruns = clock.statistics().overruns
                recording = True
                rate, cpu = await measured(subs, asyncio.sleep(seconds))
                recording = False
                overruns = clock.statistics().overruns - overruns
        finally:
            daemon.stop()
            await runner
    late = np.asarray(lateness) * 1e3
    return {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)),
            "max": float(late.max()), "overruns": float(overruns), "ticks": float(len(late)),
            "delivered": rate, "cpu": cpu * 100}


def run() -> list[dict[str, Any]]:
    loaded = _loop_run(_run(CLIENTS, SECONDS))
    print(f"  under load: {loaded}", file=sys.stderr)
    time.sleep(0.5)
    quiet = _loop_run(_run(0, max(5.0, SECONDS / 3)))
    print(f"  no clients: {quiet}", file=sys.stderr)
    what = f"twin at 100 Hz, {CLIENTS} clients x {VARIABLES} variables"
    base = "the same, no clients"
    figures = [
        {"figure": f"clock lateness {q}, {what}", "value": loaded[q], "unit": "ms",
         "baseline": base, "baseline_value": quiet[q],
         "target": "<= 2 ms" if q == "p99" else "", "higher_is_better": False}
        for q in ("p50", "p99", "max")]
    figures += [
        {"figure": f"missed ticks over {SECONDS:g} s, {what}", "value": loaded["overruns"],
         "unit": f"of {loaded['ticks']:.0f} ticks", "baseline": base,
         "baseline_value": quiet["overruns"], "target": "0", "higher_is_better": False},
        {"figure": f"value changes delivered, {what}", "value": loaded["delivered"],
         "unit": f"values/s (of {CLIENTS * VARIABLES * PUBLISH_RATE:,.0f}/s offered)",
         "baseline": "", "baseline_value": None, "target": "", "higher_is_better": True},
        {"figure": f"server CPU, {what}", "value": loaded["cpu"], "unit": "% of a core",
         "baseline": base, "baseline_value": quiet["cpu"], "target": "",
         "higher_is_better": False},
    ]
    return figures
