"""HistoryRead under a hostile client of the lowest role: one request naming a
recorded node 100 times with no NumValuesPerNode (issue 13, part 2).

A real OpcUaServer on 127.0.0.1 (port 0) with anonymous viewers on the None
endpoint, a store holding 12,000 samples of the tank's level, the tank session
paced at 100 Hz by its real Clock in the same event loop (an in-process
``LocalHost`` running its clock: what the server's work holds back, it holds
back), and real asyncua clients. The tests check that a big read is answered in
slices while the clock ticks on; how late the ticks are meanwhile is a figure of
``tests/bench/bench_history_storm.py`` (target: 50 ms at most).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadTooManyOperations

from tests.opcua.conftest import MODULE_LOOP, plant
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig
from twin_server.engine.session import SessionSettings
from twin_server.history import HistoryStore
from twin_server.opcua.history_read import TwinHistoryManager
from twin_server.opcua.server import OpcUaServer
from twin_server.runtime import HostedSession, LocalHost
from twin_server.runtime.clock import Clock
from twin_server.runtime.sinks import Pacer

pytestmark = MODULE_LOOP
T = TypeVar("T")

VIEWER = SecurityConfig(policies=("None",), anonymous="viewer")
T0 = 1_700_000_000.0
SAMPLES = 12_000
EVENTS = 500
LEVEL = "Components.tank.Outputs.level"
STORM = 100  # how often one request names the node


@dataclass
class Env:
    server: OpcUaServer
    clock: Clock
    limits: LimitsConfig
    ns: int

    @property
    def history(self) -> TwinHistoryManager:
        assert self.server.history is not None
        return self.server.history

    @property
    def url(self) -> str:
        return self.server.endpoint_url

    def nodeid(self, path: str = "") -> ua.NodeId:
        return self.server.session_nodeid("tank", path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    state: Path = tmp_path_factory.mktemp("history-limits")
    store = await HistoryStore.open(state / "history.db", batch_interval=0.05,
                                    max_queue=SAMPLES + EVENTS)
    for k in range(SAMPLES):
        store.record(f"tank/{LEVEL}", T0 + k * 0.01, float(k))
    for k in range(EVENTS):
        store.record_event("tank", "stepped", f"event {k}", 100, T0 + k * 0.01)
    await store.flush()
    server = OpcUaServer(ServerConfig(security=VIEWER, state_dir=str(state)),
                         endpoint="opc.tcp://127.0.0.1:0/twin-server")
    await server.start()
    try:
        await server.add_twin(plant())
        server.install_history(store)
        # the host runs the session's clock as a task of this event loop: whatever the
        # server does holds the clock back, as it would an in-process daemon's sessions
        async with LocalHost(server.session_event, clocks=True) as host:
            await host.create("tank", plant(), SessionSettings(
                step_size=0.01, realtime_factor=1.0, publish_rate=50.0))
            hosted = HostedSession(host, "tank")
            await server.add_session(hosted, plant(), historized=[LEVEL],
                                     pacer=Pacer(hosted, (server.publisher,)))
            try:
                await hosted.start()
                yield Env(server, host.clock("tank"), server.config.limits, server.namespace)
            finally:
                await server.remove_session("tank")
    finally:
        await server.stop()
        await store.close()


@pytest_asyncio.fixture(loop_scope="module")
async def viewer(env: Env) -> AsyncIterator[Client]:
    async with Client(env.url, timeout=30) as client:
        yield client


def when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def raw(n: int = 0) -> ua.ReadRawModifiedDetails:
    return ua.ReadRawModifiedDetails(IsReadModified=False, StartTime=when(T0 - 1),
                                     EndTime=when(T0 + SAMPLES), NumValuesPerNode=n,
                                     ReturnBounds=False)


async def history_read(client: Client, details: Any, nodeids: list[ua.NodeId],
                       cps: list[bytes | None] | None = None, *, release: bool = False
                       ) -> list[ua.HistoryReadResult]:
    params = ua.HistoryReadParameters(HistoryReadDetails=details,
                                      TimestampsToReturn=ua.TimestampsToReturn.Source,
                                      ReleaseContinuationPoints=release)
    for nodeid, cp in zip(nodeids, cps or [None] * len(nodeids), strict=True):
        params.NodesToRead.append(ua.HistoryReadValueId(NodeId=nodeid, ContinuationPoint=cp))
    return await client.uaclient.history_read(params)  # type: ignore[no-any-return]


def count(results: list[ua.HistoryReadResult]) -> int:
    return sum(len(r.HistoryData.DataValues if isinstance(r.HistoryData, ua.HistoryData)
                   else r.HistoryData.Events) for r in results)


class Sliced:
    """The clock's ticks, and the slices the server's history reads were served in,
    while the block ran."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.ticks = 0
        self.yields = 0

    def __enter__(self) -> Sliced:
        self._ticks = self.env.clock.statistics().ticks
        self._yields = self.env.history.yields
        return self

    def __exit__(self, *_exc: object) -> None:
        self.ticks = self.env.clock.statistics().ticks - self._ticks
        self.yields = self.env.history.yields - self._yields

    def check(self) -> None:
        """The reads let the loop run between slices, and the clock ticked meanwhile."""
        assert self.yields > 1, f"served in {self.yields + 1} slice(s)"
        assert self.ticks > 0, "the clock took no tick while the reads were served"


async def answered_in(url: str) -> float:
    """Seconds a second client takes to connect and read the server's state."""
    started = time.perf_counter()
    async with Client(url, timeout=10) as legit:
        state = await legit.get_node(ua.ObjectIds.Server_ServerStatus_State).read_value()
    assert state == ua.ServerState.Running
    return time.perf_counter() - started


def in_thread(url: str, work: Callable[[Client], Awaitable[T]]) -> Awaitable[T]:
    """Run ``work`` with a client of its own in a thread with its own event loop, as
    a client on another machine would: decoding big responses is then not the
    server's event loop's work."""

    async def main() -> T:
        # asyncua's client probes the server every watchdog_intervall s on the same
        # connection, whose requests the server answers in order: behind a page of
        # 10,000 values on a loaded 2-core machine (0.4-0.8 s seen) the default 1 s
        # probe gives up and disconnects
        async with Client(url, timeout=30, watchdog_intervall=10.0) as client:
            return await work(client)

    return asyncio.to_thread(asyncio.run, main())


async def release(client: Client, details: Any, nodeid: ua.NodeId,
                  results: list[ua.HistoryReadResult]) -> None:
    cps = [r.ContinuationPoint for r in results if r.ContinuationPoint]
    if cps:
        await history_read(client, details, [nodeid] * len(cps), cps, release=True)


class TestRawStorm:
    async def test_one_request_naming_a_node_100_times_is_capped(self, env: Env) -> None:
        """The storm answers at most the request cap, every node with a continuation
        point, while the 100 Hz session stays on time and a second client is served."""
        node = env.nodeid(LEVEL)

        async def storm(client: Client) -> list[ua.HistoryReadResult]:
            results = await history_read(client, raw(), [node] * STORM)
            await release(client, raw(), node, results)
            return results

        with Sliced(env) as sliced:
            storming = asyncio.ensure_future(in_thread(env.url, storm))
            legit = await answered_in(env.url)
            results = await storming
        assert all(r.StatusCode.is_good() for r in results)
        assert 0 < count(results) <= env.limits.max_history_values_per_request
        assert all(r.ContinuationPoint for r in results)
        sliced.check()
        assert legit < 1.0

    async def test_paging_returns_every_sample_once(self, env: Env) -> None:
        """Three of the storm's readers page to the end: each gets all 12,000 samples
        exactly once, in order; the others' points are released."""
        node = env.nodeid(LEVEL)
        keep = (0, 57, STORM - 1)

        async def page_through(client: Client) -> tuple[list[list[float]], list[int]]:
            first = await history_read(client, raw(), [node] * STORM)
            released = await history_read(
                client, raw(), [node] * (STORM - len(keep)),
                [r.ContinuationPoint for i, r in enumerate(first) if i not in keep],
                release=True)
            assert all(r.StatusCode.is_good() for r in released)
            got = [[dv.Value.Value for dv in first[i].HistoryData.DataValues] for i in keep]
            cps = [first[i].ContinuationPoint for i in keep]
            sizes = [count(first)]
            while any(cps):
                live = [i for i, cp in enumerate(cps) if cp]
                page = await history_read(client, raw(), [node] * len(live),
                                          [cps[i] for i in live])
                sizes.append(count(page))
                for i, result in zip(live, page, strict=True):
                    result.StatusCode.check()
                    got[i] += [dv.Value.Value for dv in result.HistoryData.DataValues]
                    cps[i] = result.ContinuationPoint
            return got, sizes

        with Sliced(env) as sliced:
            got, sizes = await in_thread(env.url, page_through)
        assert all(values == [float(k) for k in range(SAMPLES)] for values in got)
        assert max(sizes) <= env.limits.max_history_values_per_request
        sliced.check()

    async def test_too_many_nodes_are_refused(self, env: Env, viewer: Client) -> None:
        """A request naming more nodes than MaxNodesPerHistoryReadData is refused with
        BadTooManyOperations; the same client is served right after."""
        node = env.nodeid(LEVEL)
        with pytest.raises(BadTooManyOperations):
            await history_read(viewer, raw(),
                               [node] * (env.limits.max_history_nodes_per_request + 1))
        (result,) = await history_read(viewer, raw(5), [node])
        assert len(result.HistoryData.DataValues) == 5
        assert await answered_in(env.url) < 1.0
        await release(viewer, raw(5), node, [result])

    async def test_limits_are_advertised(self, env: Env, viewer: Client) -> None:
        """OperationLimits and ServerCapabilities carry the configured limits."""
        ids = ua.ObjectIds
        limits = env.limits

        async def read(ident: int) -> Any:
            return await viewer.get_node(ua.NodeId(ident)).read_value()

        assert await read(ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadData
                          ) == limits.max_history_nodes_per_request
        assert await read(
            ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadEvents
        ) == limits.max_history_nodes_per_request
        assert await read(ids.Server_ServerCapabilities_MaxHistoryContinuationPoints
                          ) == limits.max_history_continuation_points
        assert await read(ids.HistoryServerCapabilities_MaxReturnDataValues
                          ) == limits.max_history_values_per_request
        assert await read(ids.HistoryServerCapabilities_MaxReturnEventValues
                          ) == limits.max_history_values_per_request


class TestOtherReads:
    @pytest.mark.parametrize("kind", ["processed", "events"])
    async def test_storm_is_capped(self, env: Env, kind: str) -> None:
        """100 processed reads of 1,000 intervals each, or 100 event reads of the session
        node, answer at most the cap in total, with continuation points, in slices while
        the clock ticks on."""
        if kind == "processed":
            node = env.nodeid(LEVEL)
            details: Any = ua.ReadProcessedDetails(
                StartTime=when(T0), EndTime=when(T0 + 100), ProcessingInterval=100.0,
                AggregateType=[ua.NodeId(ua.ObjectIds.AggregateFunction_Count)] * STORM)
        else:
            node = env.nodeid()
            details = ua.ReadEventDetails(StartTime=when(T0 - 1), EndTime=when(T0 + SAMPLES))
            details.Filter = ua.EventFilter(SelectClauses=[ua.SimpleAttributeOperand(
                TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
                BrowsePath=[ua.QualifiedName("Message", 0)], AttributeId=ua.AttributeIds.Value)])

        async def storm(client: Client) -> list[ua.HistoryReadResult]:
            results = await history_read(client, details, [node] * STORM)
            await release(client, details, node, results)
            return results

        with Sliced(env) as sliced:
            results = await in_thread(env.url, storm)
        assert all(r.StatusCode.is_good() for r in results)
        assert 0 < count(results) <= env.limits.max_history_values_per_request
        assert all(r.ContinuationPoint for r in results)
        sliced.check()
