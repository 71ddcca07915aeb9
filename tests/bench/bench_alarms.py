"""Tick lateness of 100 Hz tank sessions while their alarms toggle and clients
acknowledge, confirm and refresh them (issue #17), beside the same sessions with
their alarms disabled and no client, in the same daemon and run.

``SESSIONS`` sessions of the demo's tank twin (``common.TANK_TWIN``), each with a
High alarm on its setpoint, a square wave of period ``PERIOD`` s that crosses the
limit twice a period: with the alarms enabled each session raises and clears one
alarm per period. The daemon runs with ``workers = 0``: every session ticks on the
server's event loop, which also builds the conditions' events, serves the
clients' calls and ConditionRefresh (the case where alarm traffic can delay a
tick; with workers only the evaluation is in the worker). Each client is a process
of its own (``python -m tests.bench.bench_alarms URL``) running an asyncua client
subscribed to alarm events on the Server object that answers every active event
with Acknowledge then Confirm and calls ConditionRefresh every second.

Lateness is the sessions' clocks' histograms (``ClockStatistics.lateness_counts``)
pooled over the phase's ticks; ``common.Floor`` beside each phase shows how late
this shared machine wakes a bare 100 Hz loop in the same seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

from tests.bench.common import (
    TANK_TWIN,
    Floor,
    counts_between,
    later_than,
    load_average,
    pooled,
    quantile,
    worst,
)

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("BENCH_ALARMS_SECONDS", "5" if QUICK else "15"))
SESSIONS = 4
CLIENTS = 3
PERIOD = 0.5  # s: the setpoint's square wave, one alarm raised and cleared per period

CONFIG = TANK_TWIN.replace("period = 120.0", f"period = {PERIOD}") + """
[twins.tank_level.alarms.HighSetpoint]
variable = "setpoint.output"
high = 1.2
severity = 600
message = "Setpoint high"

[server]
session_idle_timeout = 0
workers = 0

[server.security]
policies = ["None"]
anonymous = "operator"
""" + "".join(f"""
[sessions.tank{i}]
twin = "tank_level"
step_size = 0.01
publish_rate = 10.0
""" for i in range(SESSIONS))


# -- one client (a subprocess) -------------------------------------------------------------


async def _client(url: str) -> None:
    """Acknowledge and Confirm every alarm that becomes active, ConditionRefresh every
    second, until stdin closes; then print the counts as JSON."""
    from asyncua import Client, ua

    counts = {"events": 0, "acknowledged": 0, "confirmed": 0, "refreshes": 0, "refused": 0}
    queue: asyncio.Queue[Any] = asyncio.Queue()

    class Handler:
        def event_notification(self, event: Any) -> None:
            counts["events"] += 1
            if getattr(event, "ConditionName", None) and getattr(event, "Retain", False):
                queue.put_nowait(event)

    async def call(obj: ua.NodeId, method: int, *args: ua.Variant) -> bool:
        (result,) = await client.uaclient.call([ua.CallMethodRequest(
            ObjectId=obj, MethodId=ua.NodeId(method), InputArguments=list(args))])
        return bool(result.StatusCode.is_good())

    async with Client(url, timeout=30) as client:
        sub = await client.create_subscription(100, Handler())
        await sub.subscribe_events(client.get_node(ua.NodeId(ua.ObjectIds.Server)),
                                   client.get_node(ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)))

        async def answer() -> None:
            while True:
                event = await queue.get()
                eid = ua.Variant(event.EventId, ua.VariantType.ByteString)
                text = ua.Variant(ua.LocalizedText("bench"), ua.VariantType.LocalizedText)
                cond = getattr(event, "NodeId", None)
                if cond is None:
                    continue
                if not getattr(event, "AckedState/Id", True):
                    ok = await call(cond, ua.ObjectIds.AcknowledgeableConditionType_Acknowledge,
                                    eid, text)
                    counts["acknowledged" if ok else "refused"] += 1
                elif not getattr(event, "ConfirmedState/Id", True):
                    ok = await call(cond, ua.ObjectIds.AcknowledgeableConditionType_Confirm,
                                    eid, text)
                    counts["confirmed" if ok else "refused"] += 1

        async def refresh() -> None:
            while True:
                await asyncio.sleep(1.0)
                await call(ua.NodeId(ua.ObjectIds.ConditionType),
                           ua.ObjectIds.ConditionType_ConditionRefresh,
                           ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
                counts["refreshes"] += 1

        tasks = [asyncio.create_task(answer()), asyncio.create_task(refresh())]
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(counts), flush=True)


async def _start_clients(url: str, count: int) -> list[asyncio.subprocess.Process]:
    procs = []
    for _ in range(count):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench.bench_alarms", url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert json.loads(line)["ready"], line
        procs.append(proc)
    return procs


async def _stop_clients(procs: list[asyncio.subprocess.Process]) -> dict[str, int]:
    total: dict[str, int] = {}
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(b""), 60)
        for key, value in json.loads(out.splitlines()[-1]).items():
            total[key] = total.get(key, 0) + value
    return total


# -- the phases -----------------------------------------------------------------------------


async def _phase(daemon: Any, names: list[str]) -> dict[str, Any]:
    sessions = [daemon.session(n) for n in names]
    floor = await Floor(0.5, SECONDS).start()
    await asyncio.sleep(0.5)
    before = [s.clock_statistics() for s in sessions]
    cpu, began = time.process_time(), time.perf_counter()
    emitted = daemon.server.alarms.emitted
    await asyncio.sleep(SECONDS)
    after = [s.clock_statistics() for s in sessions]
    elapsed = time.perf_counter() - began
    counts = pooled([counts_between(b, a) for b, a in zip(before, after, strict=True)])
    return {"p50": quantile(counts, 0.5), "p99": quantile(counts, 0.99), "worst": worst(counts),
            "over2ms": later_than(counts, 0.002), "ticks": sum(counts),
            "overruns": sum(a.overruns - b.overruns for b, a in zip(before, after, strict=True)),
            "cpu": (time.process_time() - cpu) / elapsed,
            "events": (daemon.server.alarms.emitted - emitted) / elapsed,
            "floor_p99": quantile(await floor.counts(), 0.99)}


async def _phases() -> dict[str, Any]:
    from tests.opcua.conftest import run_daemon, stop_daemon

    with tempfile.TemporaryDirectory(prefix="bench-alarms-") as state:
        from pathlib import Path

        daemon, task = await run_daemon(CONFIG, Path(state))
        names = [f"tank{i}" for i in range(SESSIONS)]
        try:
            await asyncio.sleep(1.0)
            for name in names:
                await daemon.session(name).alarm("HighSetpoint", "disable")
            base = await _phase(daemon, names)
            for name in names:
                await daemon.session(name).alarm("HighSetpoint", "enable")
            procs = await _start_clients(daemon.endpoint_url, CLIENTS)
            try:
                load = await _phase(daemon, names)
            finally:
                load["clients"] = await _stop_clients(procs)
        finally:
            await stop_daemon(daemon, task)
    for what, r in (("alarms disabled, no client", base),
                    (f"alarms toggling, {CLIENTS} clients acknowledging", load)):
        print(f"  {SESSIONS} x 100 Hz tanks, {what}: {r['ticks']} ticks, p50 "
              f"{r['p50'] * 1e3:.2f} ms, p99 {r['p99'] * 1e3:.2f} ms, worst <= "
              f"{r['worst'] * 1e3:.1f} ms, {r['overruns']} overruns, {r['events']:.1f} "
              f"alarm events/s, CPU {r['cpu']:.0%}, bare loop p99 "
              f"{r['floor_p99'] * 1e3:.2f} ms, load {load_average()}"
              + (f", clients {r['clients']}" if "clients" in r else ""),
              file=sys.stderr, flush=True)
    return {"base": base, "load": load}


def run() -> list[dict[str, Any]]:
    results = asyncio.run(_phases())
    base, load = results["base"], results["load"]
    what = (f"{SESSIONS} x 100 Hz tanks, alarms toggling {SESSIONS / PERIOD:g}/s, "
            f"{CLIENTS} clients acknowledging, confirming, refreshing")
    return [
        {"figure": f"tick lateness p99, {what}", "value": load["p99"] * 1e3, "unit": "ms",
         "baseline": "alarms disabled, no client", "baseline_value": base["p99"] * 1e3,
         "target": "<= 2x baseline", "higher_is_better": False},
        {"figure": f"ticks later than 2 ms, {what}", "value": load["over2ms"],
         "unit": "ticks", "baseline": "alarms disabled, no client",
         "baseline_value": base["over2ms"], "higher_is_better": False},
        {"figure": f"alarm events emitted, {what}", "value": load["events"],
         "unit": "events/s", "higher_is_better": True},
    ]


if __name__ == "__main__":
    asyncio.run(_client(sys.argv[1]))
