"""The web front under load: a twin of ``VARIABLES`` variables stepping at 100 Hz
(dt = 10 ms, real-time factor 1, published at 10 Hz) while ``BROWSERS`` WebSockets
watch it (ten browsers' worth, in a subprocess: the load generator does not share
the daemon's loop) and a REST client reads its variables and state in a loop, for
``SECONDS`` (30 s; ``BENCH_QUICK=1`` runs 8 s).

Figures: the clock's lateness p50 / p99 / max and the missed ticks beside the same
daemon with no web client (run for a third of the time); WebSocket value updates
delivered per second (of those offered: every variable changes every tick) and
REST requests answered per second.
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


async def _run(browsers: int, seconds: float) -> dict[str, float]:
    from twin_server.runtime.compile import parse_config
    from twin_server.runtime.daemon import Daemon

    with tempfile.TemporaryDirectory() as state:
        text = config_text(state, 1, VARIABLES, STEP, PUBLISH_RATE)
        daemon = Daemon(parse_config(text + "\n[web]\nenabled = true\nport = 0\n"))
        runner = asyncio.ensure_future(daemon.run())
        await daemon.wait_ready()
        try:
            clock = daemon.host.clock("w0")  # type: ignore[union-attr]  # (workers = 0)
            lateness: list[float] = []
            recording = False
            record = clock._record

            def recorded(late: float) -> None:
                if recording:
                    lateness.append(late)
                record(late)

            clock._record = recorded  # type: ignore[method-assign]
            assert daemon.web is not None
            counts = {"values": 0.0, "frames": 0.0, "requests": 0.0}
            if browsers:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", CLIENTS, daemon.web.url, str(browsers), str(seconds),
                    str(WARMUP),
                    stdout=subprocess.PIPE)
                await asyncio.sleep(WARMUP)
            overruns = clock.statistics().overruns
            recording = True
            if browsers:
                out, _ = await proc.communicate()
                counts = json.loads(out)
            else:
                await asyncio.sleep(seconds)
            recording = False
            overruns = clock.statistics().overruns - overruns
        finally:
            daemon.stop()
            await runner
    late = np.asarray(lateness) * 1e3
    return {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)),
            "max": float(late.max()), "overruns": float(overruns), "ticks": float(len(late)),
            "values": counts["values"] / seconds, "frames": counts["frames"] / seconds,
            "requests": counts["requests"] / seconds}


def run() -> list[dict[str, Any]]:
    loaded = _loop_run(_run(BROWSERS, SECONDS))  # type: ignore[arg-type]
    print(f"  under web load: {loaded}", file=sys.stderr)
    time.sleep(0.5)
    quiet = _loop_run(_run(0, max(4.0, SECONDS / 3)))  # type: ignore[arg-type]
    print(f"  no web clients: {quiet}", file=sys.stderr)
    what = f"twin at 100 Hz, {BROWSERS} WebSockets x {VARIABLES} variables + REST"
    base = "the same, no web client"
    figures = [
        {"figure": f"clock lateness {q}, {what}", "value": loaded[q], "unit": "ms",
         "baseline": base, "baseline_value": quiet[q],
         "target": "<= 2 ms" if q == "p99" else "", "higher_is_better": False}
        for q in ("p50", "p99", "max")]
    figures += [
        {"figure": f"missed ticks, {what}", "value": loaded["overruns"],
         "unit": f"of {loaded['ticks']:.0f} ticks", "baseline": base,
         "baseline_value": quiet["overruns"], "target": "0", "higher_is_better": False},
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
