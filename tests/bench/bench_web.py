"""The web front under load: a twin of ``VARIABLES`` sine components (5,000
variables: each one's output changes every tick) stepping at 100 Hz (dt = 10 ms,
real-time factor 1, published at 10 Hz) while ``BROWSERS`` WebSockets watch it (ten
browsers' worth, in a subprocess: the load generator does not share the daemon's
loop) and a REST client reads all its variables and the sessions in a loop, for
``SECONDS`` (30 s; ``BENCH_QUICK=1`` runs 8 s). Twice: with the session stepping
on the daemon's own loop (``workers = 0``, where every millisecond the web side
holds the loop delays a tick) and in a worker process (``workers = 1``, the
default's kind).

Figures, per mode: the clock's lateness p50 / p99 / max (from the clock's
histogram, read through the host) and the missed ticks beside the same daemon
with no web client (run for a third of the time); WebSocket value updates
delivered per second (of those offered) and REST requests answered per second.
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

from tests.bench.bench_publish import _loop_run, config_text
from tests.bench.common import counts_between, quantile, worst

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("BENCH_WEB_SECONDS", "8" if QUICK else "30"))
BROWSERS = 10
VARIABLES = 1000
STEP = 0.01
PUBLISH_RATE = 10.0
WARMUP = 2.0

#: the load: BROWSERS WebSockets and one REST loop; prints {"values", "frames", "requests"}
CLIENTS = r"""
import asyncio, json, sys, time
import aiohttp
url, browsers, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
counts = {"values": 0, "frames": 0, "requests": 0}
async def watch(http, stop):
    async with http.ws_connect(url + "/api/sessions/w0/live") as ws:
        while time.monotonic() < stop:
            msg = await ws.receive(timeout=5)
            data = json.loads(msg.data)
            if data["type"] == "frame":
                counts["frames"] += 1
                counts["values"] += len(data["values"])
async def rest(http, stop):
    while time.monotonic() < stop:
        for path in ("/api/sessions/w0/variables", "/api/sessions"):
            async with http.get(url + path) as r:
                await r.read()
                counts["requests"] += 1
async def main():
    async with aiohttp.ClientSession() as http:
        warm = time.monotonic() + float(sys.argv[4])
        await asyncio.gather(*(watch(http, warm) for _ in range(browsers)))
        for k in counts: counts[k] = 0
        stop = time.monotonic() + seconds
        await asyncio.gather(rest(http, stop), *(watch(http, stop) for _ in range(browsers)))
    print(json.dumps(counts))
asyncio.run(main())
"""


async def _run(browsers: int, seconds: float, workers: int) -> dict[str, float]:
    from twin_server.runtime.compile import parse_config
    from twin_server.runtime.daemon import Daemon

    with tempfile.TemporaryDirectory() as state:
        text = config_text(state, 1, VARIABLES, STEP, PUBLISH_RATE)
        text = text.replace("workers = 0", f"workers = {workers}", 1)
        daemon = Daemon(parse_config(text + "\n[web]\nenabled = true\nport = 0\n"))
        runner = asyncio.ensure_future(daemon.run())
        await daemon.wait_ready()
        try:
            host = daemon.host
            assert host is not None and daemon.web is not None
            counts = {"values": 0.0, "frames": 0.0, "requests": 0.0}
            if browsers:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", CLIENTS, daemon.web.url, str(browsers), str(seconds),
                    str(WARMUP),
                    stdout=subprocess.PIPE)
            await asyncio.sleep(WARMUP)
            before = host.clock_statistics("w0")
            if browsers:
                out, _ = await proc.communicate()
                counts = json.loads(out)
            else:
                await asyncio.sleep(seconds)
            after = host.clock_statistics("w0")
        finally:
            daemon.stop()
            await runner
    late = counts_between(before, after)
    return {"p50": quantile(late, 0.5) * 1e3, "p99": quantile(late, 0.99) * 1e3,
            "max": worst(late) * 1e3, "overruns": float(after.overruns - before.overruns),
            "ticks": float(sum(late)),
            "values": counts["values"] / seconds, "frames": counts["frames"] / seconds,
            "requests": counts["requests"] / seconds}


def _mode(workers: int) -> list[dict[str, Any]]:
    loaded = _loop_run(_run(BROWSERS, SECONDS, workers))  # type: ignore[arg-type]
    print(f"  workers = {workers}, under web load: {loaded}", file=sys.stderr)
    time.sleep(0.5)
    quiet = _loop_run(_run(0, max(4.0, SECONDS / 3), workers))  # type: ignore[arg-type]
    print(f"  workers = {workers}, no web clients: {quiet}", file=sys.stderr)
    where = "on the daemon's loop (workers = 0)" if workers == 0 else \
        f"in a worker (workers = {workers})"
    what = (f"{VARIABLES:,}-component twin at 100 Hz {where}, {BROWSERS} WebSockets "
            f"+ a REST loop")
    base = "the same, no web client"
    figures = [
        {"figure": f"clock lateness {q}, {what}", "value": loaded[q], "unit": "ms",
         "baseline": base, "baseline_value": quiet[q],
         "target": ("<= 2 ms" if workers else "<= 2x baseline") if q == "p99" else "",
         "higher_is_better": False}
        for q in ("p50", "p99", "max")]
    figures += [
        {"figure": f"missed ticks, {what}", "value": loaded["overruns"],
         "unit": f"of {loaded['ticks']:.0f} ticks", "baseline": base,
         "baseline_value": quiet["overruns"], "target": "0" if workers else "",
         "higher_is_better": False},
        {"figure": f"WebSocket value updates delivered, {what}", "value": loaded["values"],
         "unit": f"values/s (of {BROWSERS * VARIABLES * PUBLISH_RATE:,.0f}/s offered)",
         "baseline": "", "baseline_value": None,
         "target": f">= {0.9 * BROWSERS * VARIABLES * PUBLISH_RATE:.0f}",
         "higher_is_better": True},
        {"figure": f"REST requests answered, {what}", "value": loaded["requests"],
         "unit": "requests/s", "baseline": "", "baseline_value": None, "target": "",
         "higher_is_better": True},
    ]
    return figures


def run() -> list[dict[str, Any]]:
    modes = [int(m) for m in os.environ.get("BENCH_WEB_WORKERS", "0,1").split(",")]
    return [figure for workers in modes for figure in _mode(workers)]
