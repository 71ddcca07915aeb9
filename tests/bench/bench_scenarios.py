"""Scenarios: what checks and steps cost, and what runs cost the daemon.

* offline: the demo's tank session (100 Hz) run through a scenario of an ``always``
  check and a ``within`` check over 600 simulated seconds, in simulated seconds per
  wall second, beside the same session stepped bare for as many ticks;
* live (``twin-server test --endpoint``): the wall time of one sample of a run with
  four ``always`` checks polling as fast as it can (its Read, trace and checks),
  beside the Read alone in the same samples; the difference per check is what a
  check adds to the latency of a verdict;
* RunScenario: the tick lateness (p99) of the demo's tank session (in-process,
  ``workers = 0``: it shares the interpreter with the run's thread) while a run
  steps flat out, beside the same session's lateness in the seconds before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from tests.bench.bench_publish import _loop_run
from tests.bench.common import counts_between, quantile
from twin_server.engine.session import Session
from twin_server.runtime.compile import LoadedConfig, load_config
from twin_server.runtime.daemon import Daemon
from twin_server.scenarios.live import LiveTarget, run_live
from twin_server.scenarios.offline import prepare, run_prepared
from twin_server.scenarios.runner import Runner
from twin_server.scenarios.schema import parse_scenario

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
SECONDS = 5.0

OFFLINE = """
[scenario]
session = "tank"
[[steps]]
check = "not tank.overflow and tank.level < 1.9"
always = true
[[steps]]
check = "tank.level == 1.3 ± 0.05"
within = 60.0
[[steps]]
wait = 600.0
"""

LIVE = """
[scenario]
session = "tank"
[[steps]]
check = "tank.level < 1.9"
always = true
[[steps]]
check = "not tank.overflow"
always = true
[[steps]]
check = "controller.output >= 0"
always = true
[[steps]]
check = "abs(tank.level - setpoint.output) < 2"
always = true
[[steps]]
wait = 1e9
"""
LIVE_CHECKS = 4

LONG = """
[scenario]
session = "tank"
[[steps]]
check = "tank.level < 1.9"
always = true
[[steps]]
wait = 1e9
"""


def _demo(workers: int = 0) -> LoadedConfig:
    loaded = load_config(DEMO)
    server = loaded.config.server.model_copy(update={"workers": workers})
    return dataclasses.replace(loaded, config=loaded.config.model_copy(update={"server": server}))


# -- offline ----------------------------------------------------------------------------


async def _offline() -> tuple[float, float]:
    loaded = _demo()
    prepared = prepare(parse_scenario(OFFLINE), loaded, name="bench")
    result = await run_prepared(prepared)
    ticks = len(result.trace.times) - 1
    assert result.passed, result.summary()
    bare = prepare(parse_scenario(OFFLINE), loaded, name="bare").session
    try:
        bare.start()
        started = time.perf_counter()
        _step(bare, ticks)
        wall = time.perf_counter() - started
    finally:
        bare.close()
    return result.sim_time / result.wall_time, ticks * bare.step_size / wall


def _step(session: Session, ticks: int) -> None:
    for _ in range(ticks):
        session.tick()


# -- a daemon ---------------------------------------------------------------------------


async def _with_daemon(body: Any) -> Any:
    with tempfile.TemporaryDirectory(prefix="bench-scenarios-") as state:
        os.environ["STATE_DIRECTORY"] = state
        loaded = _demo()
        server = loaded.config.server.model_copy(update={"state_dir": state})
        loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
            update={"server": server}))
        daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.create_task(daemon.run())
        try:
            await daemon.wait_ready()
            return await body(daemon)
        finally:
            daemon.stop()
            await runner
            del os.environ["STATE_DIRECTORY"]


async def _live(daemon: Daemon) -> tuple[float, float]:
    """(seconds per live sample with LIVE_CHECKS checks, seconds of its Read alone):
    the same samples of one run, timed around the runner's sample (Read, trace,
    checks) and around the target's (the Read)."""
    whole: list[float] = []
    read: list[float] = []
    runner_sample, target_sample = Runner._sample, LiveTarget.sample

    async def timed_runner(self: Runner) -> None:
        started = time.perf_counter()
        await runner_sample(self)
        whole.append(time.perf_counter() - started)

    async def timed_target(self: LiveTarget) -> None:
        started = time.perf_counter()
        await target_sample(self)
        read.append(time.perf_counter() - started)

    Runner._sample = timed_runner  # type: ignore[method-assign]
    LiveTarget.sample = timed_target  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(run_live([parse_scenario(LIVE)], daemon.endpoint_url,
                                            session="tank", poll=0.0))
        await asyncio.sleep(SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        Runner._sample = runner_sample  # type: ignore[method-assign]
        LiveTarget.sample = target_sample  # type: ignore[method-assign]
    count = min(len(whole), len(read))
    return sum(whole[:count]) / count, sum(read[:count]) / count


async def _lateness(daemon: Daemon) -> tuple[float, float, float]:
    """(p99 while a run steps, p99 before, the run's ticks per second)."""
    clock = daemon.host.clock("tank")  # type: ignore[union-attr]
    await asyncio.sleep(1.0)
    before = clock.statistics()
    await asyncio.sleep(SECONDS)
    idle = clock.statistics()
    async with Client(daemon.endpoint_url, timeout=10) as client:
        ns = await client.get_namespace_index("urn:twin-server")
        (result,) = await client.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId("TwinServer", ns), MethodId=ua.NodeId("RunScenario", ns),
            InputArguments=[ua.Variant(LONG, ua.VariantType.String)])])
        assert result.StatusCode.is_good(), result
        run_id = result.OutputArguments[0].Value
        await asyncio.sleep(0.5)
        start = clock.statistics()
        sim0 = await client.get_node(ua.NodeId(f"{run_id.Identifier}.SimTime", ns)).read_value()
        await asyncio.sleep(SECONDS)
        busy = clock.statistics()
        sim1 = await client.get_node(ua.NodeId(f"{run_id.Identifier}.SimTime", ns)).read_value()
        await client.uaclient.call([ua.CallMethodRequest(
            ObjectId=run_id, MethodId=ua.NodeId(f"{run_id.Identifier}.Halt", ns))])
    rate = (sim1 - sim0) / 0.01 / SECONDS
    return (quantile(counts_between(start, busy), 0.99),
            quantile(counts_between(before, idle), 0.99), rate)


def run() -> list[dict[str, Any]]:
    scenario_rate, bare_rate = _loop_run(_offline())
    live_sample, bare_read = _loop_run(_with_daemon(_live))
    busy, idle, rate = _loop_run(_with_daemon(_lateness))  # type: ignore[misc]
    per_check = (live_sample - bare_read) / LIVE_CHECKS
    return [
        {"figure": "offline scenario, demo tank at 100 Hz (an always and a within check)",
         "value": scenario_rate, "unit": "sim s / wall s",
         "baseline": "the same session stepped bare", "baseline_value": bare_rate,
         "target": ">= 0.5x baseline", "higher_is_better": True},
        {"figure": f"live scenario: one sample with {LIVE_CHECKS} checks (Read + checks)",
         "value": live_sample * 1e3, "unit": "ms",
         "baseline": "its OPC UA Read alone", "baseline_value": bare_read * 1e3,
         "target": "<= 1.5x baseline", "higher_is_better": False},
        {"figure": "  live mode: added latency per check", "value": per_check * 1e3,
         "unit": "ms", "baseline": "", "baseline_value": None, "target": "<= 0.5 ms",
         "higher_is_better": False},
        {"figure": "tick lateness p99 of the demo tank (in-process) while RunScenario runs",
         "value": busy * 1e3, "unit": "ms",
         "baseline": "the same session before the run", "baseline_value": idle * 1e3,
         "target": "<= 1.5x baseline", "higher_is_better": False},
        {"figure": "  RunScenario's own stepping meanwhile", "value": rate, "unit": "ticks/s",
         "baseline": "", "baseline_value": None, "target": "", "higher_is_better": True},
    ]
