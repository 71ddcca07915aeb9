"""Hostile clients all at once against the real daemon, its session stepping in a
worker process (issue 13, part 10: what the worker design is for).

The daemon (``Daemon``, in this process, ``server.workers = 1``, a None endpoint,
anonymous operators) runs the tank at 100 Hz in a worker, and its history holds
12,000 samples of the tank's level. Then, at the same time:

* a client sends a 3 MiB SetParameters argument, again and again (issue 13, part 8);
* a client sends HistoryRead storms: one request naming the level 100 times with
  NumValuesPerNode = 0 (part 2), from a thread with a loop of its own;
* a flood of anonymous sessions asking for 600 s timeouts, each with a
  subscription, abandoned without CloseSession (part 5).

Each attack is refused or capped as those parts say, a legitimate client is served
within a second, and the tank misses no tick: every tick due by the wall clock is
taken (its overrun policy catches a late tick up at once, so a tick can only be
missed by a stall of its worker), its step count never stands still for long, and
its worker's clock statistics count not one overrun more. The worker runs at
real-time priority (``conftest.realtime``), as a deployment would run it: a busy
machine alone makes a tenth of a worker's ticks start a period late at normal
priority, and none at real-time priority (measured at a load of 10 on 2 cores);
the same attacks on an in-process daemon (``workers = 0``) at real-time priority
hold its loop past some deadlines (4 and 9 overruns seen). Where real-time
priority is not permitted, no tick missed and no stall is what is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.opcua.conftest import message, run_daemon, s, stop_daemon
from tests.security.addresses import (
    ATTACKER,
    VICTIM,
    drop,
    from_address,
    quiet_session,
    quiet_subscription,
)
from tests.security.conftest import MODULE_LOOP, realtime
from tests.security.test_fuzz import PLANT, TickWatch, clock_statistics
from twin_server.engine.session import RunState
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime import HostedSession, WorkerHost
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

STEP = 0.01
#: the tank takes every tick: a late one (the machine is busy) is caught up at once
CONFIG = PLANT + """
[server]
workers = 1
session_idle_timeout = 0

[server.security]
policies = ["None"]
anonymous = "operator"

[server.limits]
max_client_sessions = 60
max_sessions_per_address = 30
max_connections = 100

[sessions.tank]
twin = "plant"
step_size = 0.01
publish_rate = 20.0
overrun_policy = "catch_up"
"""
LEVEL = "Components.tank.Outputs.level"
SAMPLES = 12_000
STORM = 100  # how often one HistoryRead names the level
STORMS = 3
FLOOD = 50  # abandoned sessions
HUGE_CALLS = 3
MIB = 1024 * 1024
#: where the hostile clients connect from (the flood from ATTACKER, the legitimate
#: client from VICTIM: each address has its own share of the sessions)
STORMER, HUGE = "127.0.0.4", "127.0.0.5"
#: the longest its step count may stand still: longer would mean the tank stalled (a
#: busy 2-core machine starts ticks a few periods late at times)
STALL = 0.25


@dataclass
class Target:
    daemon: Daemon
    tank: HostedSession
    url: str
    t0: float  # the first recorded sample's time
    realtime: bool  # whether the tank's worker runs at real-time priority

    def nodeid(self, ns: int, path: str = "") -> ua.NodeId:
        return ua.NodeId(".".join(p for p in ("Sessions.tank", path) if p), ns)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target() -> AsyncIterator[Target]:
    daemon, task = await run_daemon(CONFIG)
    try:
        assert isinstance(daemon.host, WorkerHost), "the tank must step in a worker"
        rt = realtime(daemon.host.worker_pid("tank"))
        tank = daemon.session("tank")
        assert daemon.store is not None
        t0 = time.time() - 600.0
        for k in range(SAMPLES):
            daemon.store.record(f"tank/{LEVEL}", t0 + k * STEP, float(k))
        await daemon.store.flush()
        async with asyncio.timeout(10):  # (the worker has taken its first ticks)
            while tank.clock_statistics().ticks < 10:
                await asyncio.sleep(0.05)
        yield Target(daemon, tank, daemon.endpoint_url, t0, rt)
    finally:
        await stop_daemon(daemon, task)


def behind(tank: HostedSession, since: float, first: int) -> float:
    """Ticks due by the wall clock since ``since`` (the tank at tick ``first``) that
    the tank has not taken."""
    return (time.monotonic() - since) / STEP - (tank.frame().step_count - first)


# -- the attacks ----------------------------------------------------------------------

async def huge_arguments(target: Target) -> list[ua.CallMethodResult]:
    """SetParameters with a 3 MiB argument, ``HUGE_CALLS`` times."""
    huge = '{"tank": {"area": 1.5}, "pad": "' + "x" * (3 * MIB) + '"}'
    results = []
    async with from_address(Client(target.url, timeout=10), HUGE) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        for _ in range(HUGE_CALLS):
            (result,) = await client.uaclient.call([ua.CallMethodRequest(
                ObjectId=target.nodeid(ns), MethodId=target.nodeid(ns, "SetParameters"),
                InputArguments=[s(huge)])])
            results.append(result)
    return results


def history_storms(target: Target) -> list[list[ua.HistoryReadResult]]:
    """``STORMS`` requests naming the level 100 times, NumValuesPerNode = 0 (all of
    it), each followed by the release of its continuation points: from a thread with
    a loop of its own, as a client on another machine (decoding the answers is then
    not the daemon's loop's work)."""

    async def main() -> list[list[ua.HistoryReadResult]]:
        details = ua.ReadRawModifiedDetails(
            IsReadModified=False, StartTime=datetime.fromtimestamp(target.t0 - 1, UTC),
            EndTime=datetime.fromtimestamp(target.t0 + SAMPLES * STEP, UTC),
            NumValuesPerNode=0, ReturnBounds=False)
        answers = []
        # (a long keep-alive probe: behind a page of 10,000 values the default 1 s gives up)
        client = from_address(Client(target.url, timeout=30, watchdog_intervall=10.0), STORMER)
        async with client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            node = target.nodeid(ns, LEVEL)
            for _ in range(STORMS):
                results = await history_read(client, details, [node] * STORM)
                answers.append(results)
                cps = [r.ContinuationPoint for r in results if r.ContinuationPoint]
                if cps:
                    await history_read(client, details, [node] * len(cps), cps, release=True)
        return answers

    return asyncio.run(main())


async def history_read(client: Client, details: Any, nodeids: list[ua.NodeId],
                       cps: list[bytes] | None = None, *, release: bool = False
                       ) -> list[ua.HistoryReadResult]:
    params = ua.HistoryReadParameters(HistoryReadDetails=details,
                                      TimestampsToReturn=ua.TimestampsToReturn.Source,
                                      ReleaseContinuationPoints=release)
    for nodeid, cp in zip(nodeids, cps or [None] * len(nodeids), strict=True):
        params.NodesToRead.append(ua.HistoryReadValueId(NodeId=nodeid, ContinuationPoint=cp))
    return await client.uaclient.history_read(params)  # type: ignore[no-any-return]


async def abandoned_sessions(target: Target, clients: list[Client]) -> dict[str, int]:
    """``FLOOD`` anonymous sessions asking for 600 s, each with a subscription, their
    connections cut without CloseSession; how each CreateSession ended."""
    outcomes: dict[str, int] = {}
    for _ in range(FLOOD):
        try:
            client = await quiet_session(target.url, ATTACKER, timeout_ms=600_000.0)
        except ua.UaStatusCodeError as exc:
            name = ua.StatusCode(exc.code).name
            outcomes[name] = outcomes.get(name, 0) + 1
            continue
        clients.append(client)
        await quiet_subscription(client)
        drop(client)
        outcomes["Good"] = outcomes.get("Good", 0) + 1
    return outcomes


async def served_within_a_second(target: Target) -> float:
    """Seconds a well-behaved client (from another address) takes to connect and
    read the tank's StepCount."""
    started = time.monotonic()
    async with asyncio.timeout(1.0), from_address(Client(target.url, timeout=1), VICTIM) as c:
        ns = await c.get_namespace_index(NAMESPACE_URI)
        assert await c.get_node(target.nodeid(ns, "StepCount")).read_value() > 0
    return time.monotonic() - started


class TestHostileClients:
    @pytest.mark.timeout(60)  # (the module's daemon starts in this test's setup)
    async def test_tank_in_a_worker_misses_no_tick(self, target: Target) -> None:
        """A 3 MiB argument, HistoryRead storms of 100 nodes with no value limit and 50
        abandoned sessions at once: each refused or capped, a new client served within
        a second, and the tank in its worker misses no tick."""
        tank, limits = target.tank, target.daemon.loaded.config.server.limits
        before = await clock_statistics(tank)
        since, first = time.monotonic(), tank.frame().step_count
        watch = TickWatch(tank)
        watching = asyncio.create_task(watch.run())
        clients: list[Client] = []
        try:
            huge, storms, flood = await asyncio.gather(
                huge_arguments(target), asyncio.to_thread(history_storms, target),
                abandoned_sessions(target, clients))
            legit = await served_within_a_second(target)
            # every tick due was taken (a late one caught up, none dropped)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    while behind(tank, since, first) >= 2:
                        await asyncio.sleep(0.01)
            missed = behind(tank, since, first)
            after = await clock_statistics(tank)
        finally:
            watching.cancel()
            for client in clients:
                drop(client)
        print(f"\nhostile: {before=} {after=} pause={watch.longest:.4f} {legit=:.3f} {flood=}")
        assert all(r.StatusCode.name == "BadInvalidArgument" for r in huge), \
            [message(r) for r in huge]
        assert all("server.limits.max_argument_size" in message(r) for r in huge)
        for results in storms:
            assert all(r.StatusCode.is_good() and r.ContinuationPoint for r in results)
            values = sum(len(r.HistoryData.DataValues) for r in results)
            assert values == limits.max_history_values_per_request  # of 1,200,000 asked
        assert flood.get("Good", 0) >= 25 and set(flood) <= {"Good", "BadTooManySessions"}
        assert legit < 1.0
        frame = tank.frame()
        assert (frame.state, frame.good, tank.fault()) == (RunState.RUNNING, True, None)
        assert missed < 2, f"the tank missed {missed:.0f} ticks"
        assert watch.longest < STALL, watch.longest
        if target.realtime:  # not one tick started a period late: nothing reached it
            assert after.overruns == before.overruns, (before, after)
