"""Scale: 100 sessions of the demo's tank twin stepping (and publishing) at 10 Hz in
one daemon, for ``SECONDS``:

* clock lateness p50, p99 and max over every tick of every session, beside 100 bare
  asyncio tasks pacing 10 Hz against absolute deadlines with no work at all (the
  floor the event loop's timers give on this machine right now);
* overruns (ticks more than one period late);
* the process's CPU (``time.process_time`` over wall time, 100 % = one core),
  beside the same daemon with the same 100 sessions Suspended;
* resident memory (VmRSS) per session: the daemon's RSS after the sessions were
  created minus before, over their number; beside it the RSS of the same daemon
  with no session (what the runtime costs before any twin runs).

The daemon runs in a fresh subprocess (this module run as ``python -m
tests.bench.bench_scale child``), so that its RSS is not the heap an earlier
benchmark left behind, and the bare tasks run in that process after it.

All sessions are started in one loop, so their clocks are anchored within a
millisecond of each other and all 100 tick in the same instant every 100 ms; the
last of each burst waits for the 99 before it. A second, shorter run resumes them
one by one, 1 ms apart, so that their deadlines spread over the period: the
lateness of that run shows what spreading the clocks' phases (anchors) would gain.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.common import TANK_TWIN, lateness_samples
from twin_server.engine.session import SessionSettings
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon

SESSIONS = 100
PERIOD = 0.1  # 10 Hz
SECONDS = 20.0
SPREAD_SECONDS = 10.0
IDLE_SECONDS = 5.0
SETTLE = 1.0

# the demo's tank twin (configs/demo.toml), no session of its own; no history
CONFIG = """
[server]
workers = 0  # the in-process baseline (its clocks are read directly)
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
state_dir = "{state}"
max_sessions = 200
session_idle_timeout = 0

[server.security]  # the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
enabled = false

""" + TANK_TWIN


def rss_bytes() -> int:
    """This process's resident set size (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _cpu_over(seconds: float) -> Any:
    async def measure() -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        return (time.process_time() - cpu) / (time.perf_counter() - wall) * 100
    return measure()


async def _daemon_run(state: str) -> dict[str, Any]:
    daemon = Daemon(parse_config(CONFIG.replace("{state}", state)))
    daemon.client_settings = SessionSettings(step_size=PERIOD, publish_rate=1 / PERIOD)
    runner = asyncio.create_task(daemon.run())
    await daemon.wait_ready()
    try:
        await asyncio.sleep(1.0)
        gc.collect()
        empty = rss_bytes()
        sessions = [await daemon.create_session("tank_level", f"tank{i}", {})
                    for i in range(SESSIONS)]
        gc.collect()
        created = rss_bytes()
        clocks = [daemon.host.clock(s.name) for s in sessions]  # type: ignore[union-attr]

        # all started in one loop: phases aligned
        for session in sessions:
            await session.start()
        await asyncio.sleep(SETTLE)
        before = [len(lateness_samples(c)) for c in clocks]
        ticks0 = sum(c.statistics().ticks for c in clocks)
        over0 = sum(c.statistics().overruns for c in clocks)
        cpu = await _cpu_over(SECONDS)
        aligned = np.concatenate([lateness_samples(c)[n:] for c, n in zip(clocks, before,
                                                                            strict=True)])
        ticks = sum(c.statistics().ticks for c in clocks) - ticks0
        overruns = sum(c.statistics().overruns for c in clocks) - over0

        # the same sessions Suspended: what the daemon costs with nothing stepping
        for session in sessions:
            session.suspend()
        await asyncio.sleep(0.5)
        idle_cpu = await _cpu_over(IDLE_SECONDS)

        # resumed one by one, PERIOD / SESSIONS apart: phases spread over the period
        for session in sessions:
            session.resume()
            await asyncio.sleep(PERIOD / SESSIONS)
        await asyncio.sleep(SETTLE)
        before = [len(lateness_samples(c)) for c in clocks]
        await asyncio.sleep(SPREAD_SECONDS)
        spread = np.concatenate([lateness_samples(c)[n:] for c, n in zip(clocks, before,
                                                                           strict=True)])
        for session in sessions:
            await daemon.delete_session(session.name)
    finally:
        daemon.stop()
        await runner
    return {"empty": empty, "created": created, "aligned": aligned, "spread": spread,
            "cpu": cpu, "idle_cpu": idle_cpu, "ticks": ticks, "overruns": overruns}


async def _bare_tasks(seconds: float) -> np.ndarray:
    """Lateness of every tick of SESSIONS bare tasks pacing 10 Hz with no work."""
    loop = asyncio.get_running_loop()

    async def pace() -> list[float]:
        start = loop.time()
        lateness = []
        k = 1
        while k * PERIOD < seconds:
            deadline = start + k * PERIOD
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            lateness.append(loop.time() - deadline)
            k += 1
        return lateness

    runs = await asyncio.gather(*(pace() for _ in range(SESSIONS)))
    return np.concatenate([np.asarray(r) for r in runs])


def _child() -> None:
    """The measurement, in this (fresh) process; JSON on stdout."""
    from twin_server import logs

    logs.configure("warning")

    async def both() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as state:
            ours = await _daemon_run(state)
        ours["bare"] = await _bare_tasks(SECONDS / 2)
        return ours

    result = asyncio.run(both())
    print(json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v
                      for k, v in result.items()}), flush=True)


def run() -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_scale", "child"],
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2],
                         timeout=SECONDS * 4 + 120)
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    ours = {k: np.asarray(v) if isinstance(v, list) else v for k, v in raw.items()}
    bare = ours["bare"]
    aligned, spread = ours["aligned"] * 1e3, ours["spread"] * 1e3
    bare_ms = bare * 1e3
    label = f"{SESSIONS} tank sessions at 10 Hz"
    base = f"{SESSIONS} bare asyncio tasks at 10 Hz"
    figures: list[dict[str, Any]] = []
    for q, name, target in ((50, "p50", ""), (99, "p99", "<= 10 ms"), (100, "max", "")):
        figures.append({
            "figure": f"clock lateness {name}, {label} (all ticks)",
            "value": float(np.percentile(aligned, q)), "unit": "ms", "baseline": base,
            "baseline_value": float(np.percentile(bare_ms, q)), "target": target,
            "higher_is_better": False})
    figures[1]["samples"] = aligned.tolist()
    figures[1]["baseline_samples"] = bare_ms.tolist()
    figures.append({
        "figure": f"clock lateness p99, {label}, phases spread (resumed 1 ms apart)",
        "value": float(np.percentile(spread, 99)), "unit": "ms",
        "baseline": "the same sessions started together (above)",
        "baseline_value": float(np.percentile(aligned, 99)), "target": "",
        "higher_is_better": False, "samples": spread.tolist(),
        "baseline_samples": aligned.tolist()})
    figures += [
        {"figure": f"clock overruns, {label}", "value": float(ours["overruns"]),
         "unit": f"of {ours['ticks']:,} ticks", "target": "0", "higher_is_better": False},
        {"figure": f"process CPU, {label}", "value": ours["cpu"], "unit": "% of one core",
         "baseline": "the same sessions Suspended", "baseline_value": ours["idle_cpu"],
         "target": "<= 50 %", "higher_is_better": False},
        {"figure": "  CPU per running session (above minus Suspended, / 100)",
         "value": (ours["cpu"] - ours["idle_cpu"]) / SESSIONS, "unit": "% of one core",
         "baseline": "", "target": "", "higher_is_better": False},
        {"figure": f"resident memory per session, {label}",
         "value": (ours["created"] - ours["empty"]) / SESSIONS / 2**20, "unit": "MiB",
         "baseline": "", "target": "<= 1 MiB", "higher_is_better": False},
        {"figure": f"daemon RSS with {SESSIONS} tank sessions",
         "value": ours["created"] / 2**20, "unit": "MiB",
         "baseline": "the same daemon with no session", "baseline_value":
         ours["empty"] / 2**20, "target": "", "higher_is_better": False},
    ]
    return figures


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    _child()
