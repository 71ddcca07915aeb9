"""Fault injection under load: a twin of ``VARIABLES`` sine outputs stepping at 100 Hz
(dt = 10 ms, real-time factor 1, published at 10 Hz) while ``CLIENTS`` OPC UA clients
(in a subprocess: the load generator does not share the daemon's loop) each inject a
fault (noise, stuck, offset, delay in turn) on one of its outputs, browse
``Faults/`` and read every property of the new fault's node, then clear it, in a
loop, for ``SECONDS`` (20 s; ``BENCH_QUICK=1`` runs 6 s).

Figures: the clock's lateness p50 / p99 / max and the missed ticks, beside the same
daemon with no client (run for a third of the time, in the same run); fault
cycles (inject, browse, read, clear) completed per second, and their round trip.
Each cycle adds and deletes a fault's nine nodes and emits two events.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from tests.bench.bench_publish import _loop_run, config_text
from tests.bench.common import counts_between, load_average, quantile, worst

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("BENCH_FAULTS_SECONDS", "6" if QUICK else "20"))
CLIENTS = 4
VARIABLES = 200
STEP = 0.01
PUBLISH_RATE = 10.0
WARMUP = 2.0

#: the load: CLIENTS clients cycling faults; prints {"cycles", "round_trips_ms"}
LOAD = r"""
import asyncio, json, sys, time
from asyncua import Client, ua
url, clients = sys.argv[1], int(sys.argv[2])
seconds, warmup = float(sys.argv[3]), float(sys.argv[4])
KINDS = [("noise", '{"sigma": 0.1, "seed": 1}'), ("stuck", ""), ("offset", '{"offset": 1}'),
         ("delay", '{"delay": 0.2}')]
cycles, trips, recording = [0], [], [False]
async def client(index, stop):
    async with Client(url, timeout=10) as c:
        ns = await c.get_namespace_index("urn:twin-server")
        session = c.get_node(ua.NodeId("Sessions.w0", ns))
        folder = c.get_node(ua.NodeId("Sessions.w0.Faults", ns))
        k = 0
        while time.monotonic() < stop:
            kind, params = KINDS[k % len(KINDS)]
            started = time.perf_counter()
            fault = await session.call_method(
                ua.NodeId("Sessions.w0.InjectFault", ns), f"s{index}.Outputs.output", kind,
                params, 0.0, f"c{index}")
            await folder.get_children()  # (browse: the other clients' faults too)
            node = c.get_node(ua.NodeId(f"Sessions.w0.Faults.{fault}", ns))
            await asyncio.gather(*(p.read_value() for p in await node.get_children()))
            await session.call_method(ua.NodeId("Sessions.w0.ClearFault", ns), fault)
            if recording[0]:
                cycles[0] += 1
                trips.append((time.perf_counter() - started) * 1e3)
            k += 1
async def main():
    stop = time.monotonic() + warmup + seconds
    async def record():
        await asyncio.sleep(warmup)
        recording[0] = True
    await asyncio.gather(record(), *(client(i, stop) for i in range(clients)))
    print(json.dumps({"cycles": cycles[0], "round_trips_ms": trips}))
asyncio.run(main())
"""


async def _run(clients: int, seconds: float, workers: int) -> dict[str, Any]:
    from twin_server.runtime.compile import parse_config
    from twin_server.runtime.daemon import Daemon

    with tempfile.TemporaryDirectory() as state:
        text = config_text(state, 1, VARIABLES, STEP, PUBLISH_RATE)
        text = text.replace("workers = 0", f"workers = {workers}")
        daemon = Daemon(parse_config(text))
        runner = asyncio.ensure_future(daemon.run())
        await daemon.wait_ready()
        try:
            session = daemon.sessions["w0"].session
            load: dict[str, Any] = {"cycles": 0, "round_trips_ms": []}
            if clients:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", LOAD, daemon.endpoint_url, str(clients),
                    str(seconds), str(WARMUP), stdout=subprocess.PIPE)
            await asyncio.sleep(WARMUP)
            before = session.clock_statistics()
            if clients:
                out, _ = await proc.communicate()
                assert proc.returncode == 0, "the fault clients failed"
                load = json.loads(out)
            else:
                await asyncio.sleep(seconds)
            await asyncio.sleep(0.5)  # (a fresh reading of a worker's statistics)
            after = session.clock_statistics()
        finally:
            daemon.stop()
            await runner
    counts = counts_between(before, after)
    trips = np.asarray(load["round_trips_ms"] or [float("nan")])
    return {"p50": quantile(counts, 0.5) * 1e3, "p99": quantile(counts, 0.99) * 1e3,
            "max": worst(counts) * 1e3, "overruns": float(after.overruns - before.overruns),
            "ticks": float(sum(counts)), "cycles": load["cycles"] / seconds,
            "trip_p50": float(np.median(trips)), "trip_p99": float(np.percentile(trips, 99))}


def run() -> list[dict[str, Any]]:
    figures: list[dict[str, Any]] = []
    for workers in (0, 1):
        where = "in-process (workers = 0)" if not workers else "in a worker process"
        loaded = _loop_run(_run(CLIENTS, SECONDS, workers))  # type: ignore[arg-type]
        print(f"  {where}, under fault load: {loaded}", file=sys.stderr)
        time.sleep(0.5)
        quiet = _loop_run(_run(0, max(4.0, SECONDS / 3), workers))  # type: ignore[arg-type]
        print(f"  {where}, no client: {quiet}", file=sys.stderr)
        what = (f"twin at 100 Hz ({VARIABLES} outputs) {where}, {CLIENTS} clients "
                f"injecting, reading and clearing faults (load average {load_average()})")
        base = "the same, no client"
        figures += [
            {"figure": f"clock lateness {q}, {what}", "value": loaded[q], "unit": "ms",
             "baseline": base, "baseline_value": quiet[q],
             "target": "<= 2 ms" if q == "p99" and workers else "",
             "higher_is_better": False}
            for q in ("p50", "p99", "max")]
        figures += [
            {"figure": f"missed ticks, {what}", "value": loaded["overruns"],
             "unit": f"of {loaded['ticks']:.0f} ticks", "baseline": base,
             "baseline_value": quiet["overruns"], "target": "0" if workers else "",
             "higher_is_better": False},
            {"figure": f"fault cycles (InjectFault, browse Faults/, read the node, "
                       f"ClearFault), {what}", "value": loaded["cycles"], "unit": "cycles/s",
             "baseline": "", "baseline_value": None, "target": "", "higher_is_better": True},
            {"figure": f"fault cycle round trip p50, {what}", "value": loaded["trip_p50"],
             "unit": f"ms (p99 {loaded['trip_p99']:.1f} ms)", "baseline": "",
             "baseline_value": None, "target": "", "higher_is_better": False},
        ]
    return figures
