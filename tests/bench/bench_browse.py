"""Tick lateness of the demo's 100 Hz tank while 1, 3 and 10 clients browse the whole
tree in a loop (issue 14's benchmark): sessions in worker processes (``workers``
at its default, one per CPU), beside the same run with ``workers = 0`` (every
session on the server's event loop, as before the workers).

Each client is a process of its own (as UaExpert or a SCADA is: its decoding is
not the server's work) running a real asyncua client that browses everything
below ``Objects/TwinServer`` (hierarchical references, forward, one Browse
request per level as a browser expanding the tree does: ``soak_clients.browse_tree``),
again and again, for ``SECONDS`` (``BENCH_QUICK=1``: 5 s) once every client has
finished its first browse.

Lateness is taken where the session ticks: its clock counts every tick by
lateness (``ClockStatistics.lateness_counts``, read through the host: from the
worker's shared memory, or the in-process clock), and the difference of two
readings is the histogram of the phase's ticks alone. Missed ticks are the
clock's overruns (ticks started more than a period late) in the phase, plus the
deadlines no tick was taken for (the session's ``skip`` policy drops those after
a late tick: 15 s at 100 Hz has 1,500 deadlines; counted from frames the main
process reads, with one tick allowed for the window's ends).

Three runs of the daemon: workers with ``server.worker_scheduling = "realtime"``
(the default: SCHED_FIFO where this process may grant it, root or
CAP_SYS_NICE; else the fallback, and the figures say which policy the workers
got), workers with ``"normal"`` scheduling, and the baseline ``workers = 0``.
Beside each phase, a bare loop pacing 100 Hz in a process of its own
(``common.Floor``) shows how late this machine wakes any process in the same
seconds.

    python -m tests.bench.bench_browse URL    # one browsing client (stdin closed: stop)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.bench_publish import _loop_run
from tests.bench.common import Floor, counts_between, later_than, load_average, quantile, worst

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.toml"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("BENCH_BROWSE_SECONDS", "5" if QUICK else "15"))
CLIENTS = (1, 3, 10)
SESSION = "tank"
STEP = 0.01  # the demo tank's step size (s)


# -- one browsing client (a subprocess) ---------------------------------------------------


async def _client(url: str) -> None:
    from asyncua import Client, ua

    from tests.soak_clients import browse_tree

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while not stop.is_set():
        try:
            async with Client(url, timeout=30) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                root = ua.NodeId("TwinServer", ns)
                while not stop.is_set():
                    found = await browse_tree(client, [root])
                    print(json.dumps({"variables": len(found)}), flush=True)
        except Exception as exc:  # counted by the bench; the client connects again
            print(json.dumps({"error": repr(exc)[:300]}), flush=True)
            await asyncio.sleep(0.5)


class Browsers:
    """``count`` client processes browsing; ``cycles`` counts their browses, ``errors``
    their failures (a request unanswered in 30 s, a lost connection: the client
    connects again)."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self.cycles = 0
        self.variables = 0
        self.errors: list[str] = []
        self._first: list[asyncio.Event] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, url: str, count: int) -> None:
        for _ in range(count):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.bench.bench_browse", url, cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            first = asyncio.Event()
            self.processes.append(process)
            self._first.append(first)
            self._readers.append(asyncio.ensure_future(self._read(process, first)))
        async with asyncio.timeout(120):
            await asyncio.gather(*(e.wait() for e in self._first))

    async def _read(self, process: asyncio.subprocess.Process, first: asyncio.Event) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            record = json.loads(line)
            if "error" in record:
                self.errors.append(record["error"])
                continue
            self.variables = record["variables"]
            self.cycles += 1
            first.set()

    async def stop(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        try:
            async with asyncio.timeout(60):
                codes = await asyncio.gather(*(p.wait() for p in self.processes))
            await asyncio.gather(*self._readers)
        finally:
            for process in self.processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert codes == [0] * len(codes), f"a browsing client failed: exit codes {codes}"


# -- the daemon under browsing clients ----------------------------------------------------


async def _phases(workers: int | None, scheduling: str = "realtime") -> dict[Any, Any]:
    """The tank's ticks in each phase (no client, then 1, 3, 10 browsing), the
    workers asking for ``scheduling``; ``"policy"``: the one the tank's worker got."""
    from twin_server.runtime.compile import load_config
    from twin_server.runtime.daemon import Daemon

    update: dict[str, Any] = {"worker_scheduling": scheduling}
    if workers is not None:
        update["workers"] = workers
    results: dict[Any, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-browse-") as state:
        os.environ["STATE_DIRECTORY"] = state  # (read by the config loader)
        loaded = load_config(DEMO)
        server = loaded.config.server.model_copy(update=update)
        loaded = dataclasses.replace(
            loaded, config=loaded.config.model_copy(update={"server": server}))
        daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.ensure_future(daemon.run())
        try:
            await daemon.wait_ready()
            await asyncio.sleep(1.0)
            tank = daemon.session(SESSION)
            assert daemon.host is not None
            where = daemon.host.statistics().worker_of(SESSION)
            policy = results["policy"] = where.policy if where is not None else "in-process"
            for count in (0, *CLIENTS):
                browsers = Browsers()
                if count:
                    await browsers.start(daemon.endpoint_url, count)
                floor = await Floor(0.5, SECONDS).start()
                await asyncio.sleep(0.5)  # (a fresh reading of the worker's statistics)
                before, cycles, cpu = tank.clock_statistics(), browsers.cycles, time.process_time()
                first = tank.frame().step_count  # (published after every tick)
                errors = len(browsers.errors)
                began = time.perf_counter()
                await asyncio.sleep(SECONDS)
                after, done = tank.clock_statistics(), browsers.cycles - cycles
                steps = tank.frame().step_count - first
                elapsed = time.perf_counter() - began
                cpu = (time.process_time() - cpu) / elapsed
                bare = await floor.counts()
                await browsers.stop()
                counts = counts_between(before, after)
                results[count] = {
                    "p50": quantile(counts, 0.50), "p99": quantile(counts, 0.99),
                    "worst": worst(counts), "over2ms": later_than(counts, 0.002),
                    "ticks": after.ticks - before.ticks,
                    "overruns": after.overruns - before.overruns,
                    # deadlines no tick was taken for (the skip policy drops them after
                    # a late tick), beside the ticks taken more than a period late; the
                    # window's two ends may each cut a tick off: one is allowed
                    "dropped": max(0, math.floor(elapsed / STEP) - 1 - steps),
                    "browses": done / elapsed, "variables": browsers.variables,
                    "cpu": cpu, "errors": len(browsers.errors) - errors,
                    "floor_p99": quantile(bare, 0.99),
                }
                r = results[count]
                print(f"  workers={workers} ({policy}), {count} clients: "
                      f"{r['ticks']} ticks, p50 "
                      f"{r['p50'] * 1e3:.2f} ms, p99 {r['p99'] * 1e3:.2f} ms, worst <= "
                      f"{r['worst'] * 1e3:.1f} ms, {r['overruns']} late by more than a "
                      f"period, {r['dropped']} deadlines dropped, "
                      f"{r['browses']:.1f} browses/s of {r['variables']} variables, "
                      f"main process CPU {cpu:.0%}, {r['errors']} client errors, bare loop "
                      f"beside it p99 {r['floor_p99'] * 1e3:.2f} ms, load "
                      f"{load_average()}" + (f" (first: {browsers.errors[0]})"
                                             if browsers.errors else ""),
                      file=sys.stderr, flush=True)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 60)
            del os.environ["STATE_DIRECTORY"]
    return results


def run() -> list[dict[str, Any]]:
    ours: Any = _loop_run(_phases(None, "realtime"))  # type: ignore[arg-type]
    normal: Any = _loop_run(_phases(None, "normal"))  # type: ignore[arg-type]
    base: Any = _loop_run(_phases(0))  # type: ignore[arg-type]
    load = load_average()
    got = ours["policy"]
    figures: list[dict[str, Any]] = []
    for count in CLIENTS:
        what = f"100 Hz tank, {count} client{'s' if count > 1 else ''} browsing the tree"
        o, n, b = ours[count], normal[count], base[count]
        figures += [
            {"figure": f"tick lateness p99, {what} (workers, realtime: {got})",
             "value": o["p99"] * 1e3,
             "unit": "ms", "baseline": "the same, workers = 0 (in-process)",
             "baseline_value": b["p99"] * 1e3, "target": "p99 <= 2 ms",
             "higher_is_better": False},
            {"figure": f"missed ticks, {what} for {SECONDS:g} s (workers, realtime)",
             "value": float(o["overruns"] + o["dropped"]),
             "unit": f"of {round(SECONDS / STEP)} deadlines",
             "baseline": "the same, workers = 0 (in-process)",
             "baseline_value": float(b["overruns"] + b["dropped"]), "target": "0",
             "higher_is_better": False},
            {"figure": f"  tick lateness p99, {what} (workers, worker_scheduling = normal)",
             "value": n["p99"] * 1e3, "unit": "ms",
             "baseline": "the same, workers = 0 (in-process)",
             "baseline_value": b["p99"] * 1e3, "target": "", "higher_is_better": False},
            {"figure": f"  missed ticks, {what} (workers, normal)",
             "value": float(n["overruns"] + n["dropped"]),
             "unit": f"of {round(SECONDS / STEP)} deadlines",
             "baseline": "the same, workers = 0 (in-process)",
             "baseline_value": float(b["overruns"] + b["dropped"]), "target": "",
             "higher_is_better": False},
            {"figure": f"  client errors (timeouts, lost connections), {what} (workers)",
             "value": float(o["errors"]), "unit": "errors",
             "baseline": "the same, workers = 0", "baseline_value": float(b["errors"]),
             "target": "", "higher_is_better": False},
            {"figure": f"  bare 100 Hz timerfd loop in its own process, same seconds as the "
                       f"{count}-client phase with workers: lateness p99",
             "value": o["floor_p99"] * 1e3, "unit": "ms",
             "baseline": "the same beside workers = 0", "baseline_value": b["floor_p99"] * 1e3,
             "target": "", "higher_is_better": False},
            {"figure": f"  worst tick, {what} (workers; bucket edge)",
             "value": o["worst"] * 1e3, "unit": "ms <=",
             "baseline": "the same, workers = 0", "baseline_value": b["worst"] * 1e3,
             "target": "", "higher_is_better": False},
            {"figure": f"  browses of the tree served, {count} client{'s' if count > 1 else ''}"
                       f" ({o['variables']} variables each)",
             "value": o["browses"], "unit": "browses/s",
             "baseline": "the same, workers = 0", "baseline_value": b["browses"],
             "target": "", "higher_is_better": True},
        ]
    figures.append({"figure": f"  tick lateness p99, 100 Hz tank, no client (workers, "
                              f"realtime; load average {load})",
                    "value": ours[0]["p99"] * 1e3, "unit": "ms",
                    "baseline": "the same, workers = 0", "baseline_value": base[0]["p99"] * 1e3,
                    "target": "", "higher_is_better": False})
    return figures


if __name__ == "__main__":
    asyncio.run(_client(sys.argv[1]))
