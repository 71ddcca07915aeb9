"""HistoryRead through a real asyncua client against a plain asyncua server with our
adapter installed: raw paging, bounds, processed aggregates, event history, export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Server, ua
from asyncua.common.events import Event as UaEvent

from tests.opcua.conftest import MODULE_LOOP, plant
from twin_server.engine.session import Session, SessionSettings
from twin_server.history import HistoryStore, export_csv
from twin_server.opcua.history_read import (
    GOOD_CALCULATED,
    HistoryLimits,
    TwinHistoryManager,
    install,
    mark_event_history,
    mark_historizing,
)
from twin_server.recording import Recorder, RecordingSettings
from twin_server.runtime.local import SessionFrames

pytestmark = MODULE_LOOP

URI = "urn:twin-server"
T0 = 1_700_000_000.0
X = "Sessions.s.Components.c.Outputs.x"
N = "Sessions.s.Components.c.Outputs.n"
B = "Sessions.s.Components.c.Outputs.b"
PLAIN = "Sessions.s.Components.c.Inputs.u"
SESSION = "Sessions.s"
EMPTY = "Sessions.s.Components.c.Outputs.empty"
#: small, so that paging and the limits show with little data
LIMITS = HistoryLimits(values=64, nodes=20, continuation_points=8)


def when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def x_samples() -> list[tuple[float, float]]:
    """200 samples every 0.5 s, with a second (and third) sample at some timestamps."""
    samples = [(T0 + k * 0.5, k * 1.5) for k in range(200)]
    for k in (10, 11, 50, 50, 199):
        samples.append((T0 + k * 0.5, -float(k)))
    return sorted(samples, key=lambda s: s[0])  # stable: equal times keep their order


@dataclass
class Env:
    server: Server
    store: HistoryStore
    manager: TwinHistoryManager
    ns: int
    url: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    path: Path = tmp_path_factory.mktemp("history") / "history.db"
    store = await HistoryStore.open(path, batch_interval=0.05)
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/history")
    ns = await server.register_namespace(URI)
    objects = server.nodes.objects
    session = await objects.add_object(ua.NodeId(SESSION, ns), ua.QualifiedName("s", ns))
    nodes = {
        X: ua.Variant(0.0, ua.VariantType.Double), N: ua.Variant(0, ua.VariantType.Int32),
        B: ua.Variant(False, ua.VariantType.Boolean), PLAIN: ua.Variant(0.0, ua.VariantType.Double),
        EMPTY: ua.Variant(0.0, ua.VariantType.Double),
    }
    for ident, variant in nodes.items():
        await session.add_variable(ua.NodeId(ident, ns), ua.QualifiedName(ident, ns), variant)
    for t, v in x_samples():
        store.record("s/Components.c.Outputs.x", t, v)
    for k in range(50):
        store.record("s/Components.c.Outputs.n", T0 + k, k % 7)
        store.record("s/Components.c.Outputs.b", T0 + k, k % 3 == 0)
        store.record("s/Components.c.Inputs.u", T0 + k, 1.0)  # stored, but not historizing
    for k in range(25):
        store.record_event("s", "stepped" if k % 2 else "started", f"event {k}",
                           100 + 10 * k, T0 + k)
    await store.flush()
    await server.start()
    port = server.bserver._server.sockets[0].getsockname()[1]
    url = f"opc.tcp://127.0.0.1:{port}/history"
    for edp in server.iserver.endpoints:
        edp.EndpointUrl = url
    aspace = server.iserver.aspace
    manager = install(server, store, ns, limits=LIMITS)
    assert mark_historizing(aspace, [ua.NodeId(i, ns) for i in (X, N, B, EMPTY)]) == 4
    assert mark_event_history(aspace, [ua.NodeId(SESSION, ns)]) == 1
    try:
        yield Env(server, store, manager, ns, url)
    finally:
        await server.stop()
        await store.close()


@pytest_asyncio.fixture(loop_scope="module")
async def client(env: Env) -> AsyncIterator[Client]:
    async with Client(env.url, timeout=10) as c:
        yield c


async def history_read(client: Client, details: Any, nodeids: list[ua.NodeId],
                       cps: list[bytes | None] | None = None, *, release: bool = False,
                       timestamps: ua.TimestampsToReturn = ua.TimestampsToReturn.Both,
                       ) -> list[ua.HistoryReadResult]:
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = timestamps
    params.ReleaseContinuationPoints = release
    for nodeid, cp in zip(nodeids, cps or [None] * len(nodeids), strict=True):
        params.NodesToRead.append(ua.HistoryReadValueId(NodeId=nodeid, ContinuationPoint=cp))
    return await client.uaclient.history_read(params)  # type: ignore[no-any-return]


def raw(start: float | None, end: float | None, n: int = 0,
        bounds: bool = False) -> ua.ReadRawModifiedDetails:
    epoch = ua.get_win_epoch()
    return ua.ReadRawModifiedDetails(
        IsReadModified=False, StartTime=epoch if start is None else when(start),
        EndTime=epoch if end is None else when(end), NumValuesPerNode=n, ReturnBounds=bounds)


async def all_pages(client: Client, nodeid: ua.NodeId, details: Any
                    ) -> tuple[list[ua.DataValue], int]:
    values: list[ua.DataValue] = []
    cp: bytes | None = None
    pages = 0
    while True:
        (result,) = await history_read(client, details, [nodeid], [cp])
        result.StatusCode.check()
        pages += 1
        values += result.HistoryData.DataValues
        cp = result.ContinuationPoint
        if cp is None:
            return values, pages
        assert pages < 1000


def pairs(values: list[ua.DataValue]) -> list[tuple[float, Any]]:
    return [(round(dv.SourceTimestamp.timestamp(), 6), None if dv.Value is None
             else dv.Value.Value) for dv in values]


def expected_x(lo: float, hi: float) -> list[tuple[float, Any]]:
    return [(round(t, 6), v) for t, v in x_samples() if lo <= t < hi]


class TestRaw:
    @pytest.mark.parametrize("page", [1, 3, 7, 64, 0], ids=lambda p: f"page{p}")
    async def test_forward_paging_never_repeats_or_drops(self, env: Env, client: Client,
                                                         page: int) -> None:
        """Pages of any size (0: the server's own limit) add up to the samples in range,
        in order, equal timestamps included, each exactly once."""
        nodeid = ua.NodeId(X, env.ns)
        values, pages = await all_pages(client, nodeid, raw(T0 + 2, T0 + 60, page))
        want = expected_x(T0 + 2, T0 + 60)
        assert pairs(values) == want
        assert pages == -(-len(want) // (page or 64))  # no empty last page

    @pytest.mark.parametrize("page", [1, 4, 0], ids=lambda p: f"page{p}")
    async def test_backward_paging(self, env: Env, client: Client, page: int) -> None:
        """start > end reads newest first over (end, start], paging the same way."""
        values, _ = await all_pages(client, ua.NodeId(X, env.ns), raw(T0 + 30, T0 + 2, page))
        forward = [(round(t, 6), v) for t, v in x_samples() if T0 + 2 < t <= T0 + 30]
        assert pairs(values) == forward[::-1]

    async def test_only_a_start_reads_forward_to_the_end(self, env: Env,
                                                         client: Client) -> None:
        """Without an EndTime the read goes forward from StartTime to the last sample."""
        values, _ = await all_pages(client, ua.NodeId(X, env.ns), raw(T0 + 90, None, 5))
        assert pairs(values) == expected_x(T0 + 90, T0 + 1000)

    async def test_bounds(self, env: Env, client: Client) -> None:
        """ReturnBounds adds the samples at or around start and end; a missing one is a
        null value with BadBoundNotFound."""
        values, _ = await all_pages(client, ua.NodeId(X, env.ns),
                                    raw(T0 + 10.25, T0 + 12.25, 2, bounds=True))
        got = pairs(values)
        assert got[0] == (round(T0 + 10.0, 6), 20 * 1.5)
        assert got[-1] == (round(T0 + 12.5, 6), 25 * 1.5)
        assert got[1:-1] == expected_x(T0 + 10.25, T0 + 12.25)
        values, _ = await all_pages(client, ua.NodeId(X, env.ns),
                                    raw(T0 - 5, T0 + 0.75, 0, bounds=True))
        assert values[0].Value.Value is None
        assert values[0].StatusCode.value == ua.StatusCodes.BadBoundNotFound
        values, _ = await all_pages(client, ua.NodeId(X, env.ns),
                                    raw(T0 + 99, T0 + 500, 0, bounds=True))
        assert values[-1].StatusCode.value == ua.StatusCodes.BadBoundNotFound
        assert values[-1].SourceTimestamp.timestamp() == pytest.approx(T0 + 500)

    async def test_types_follow_the_node(self, env: Env, client: Client) -> None:
        """Values come back typed as the node's DataType says."""
        (n,) = await history_read(client, raw(T0, T0 + 3), [ua.NodeId(N, env.ns)])
        (b,) = await history_read(client, raw(T0, T0 + 3), [ua.NodeId(B, env.ns)])
        assert [(dv.Value.VariantType, dv.Value.Value) for dv in n.HistoryData.DataValues] == \
            [(ua.VariantType.Int32, k) for k in (0, 1, 2)]
        assert [dv.Value.Value for dv in b.HistoryData.DataValues] == [True, False, False]

    async def test_several_nodes_in_one_request(self, env: Env, client: Client) -> None:
        """Each node has its own status, values and continuation point."""
        nodeids = [ua.NodeId(i, env.ns) for i in (X, N, PLAIN, "Sessions.s.nope", EMPTY)]
        results = await history_read(client, raw(T0, T0 + 10, 3), nodeids)
        assert [r.StatusCode.value for r in results] == [
            ua.StatusCodes.Good, ua.StatusCodes.Good,
            ua.StatusCodes.BadHistoryOperationUnsupported, ua.StatusCodes.BadNodeIdUnknown,
            ua.StatusCodes.GoodNoData]
        assert results[0].ContinuationPoint and results[1].ContinuationPoint
        assert results[4].ContinuationPoint is None

    async def test_release_and_bad_continuation_points(self, env: Env, client: Client) -> None:
        """Releasing answers Good with no data; a point from another read is refused."""
        nodeid = ua.NodeId(X, env.ns)
        (first,) = await history_read(client, raw(T0, T0 + 50, 2), [nodeid])
        (released,) = await history_read(client, raw(T0, T0 + 50, 2), [nodeid],
                                         [first.ContinuationPoint], release=True)
        assert released.StatusCode.is_good() and released.ContinuationPoint is None
        (backward,) = await history_read(client, raw(T0 + 50, T0, 2), [nodeid],
                                         [first.ContinuationPoint])
        (garbage,) = await history_read(client, raw(T0, T0 + 50, 2), [nodeid], [b"R1234"])
        (other,) = await history_read(client, raw(T0, T0 + 50, 2), [ua.NodeId(N, env.ns)],
                                      [first.ContinuationPoint])
        for result in (backward, garbage, other):
            assert result.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid

    async def test_read_modified_is_empty(self, env: Env, client: Client) -> None:
        """History is never rewritten: ReadModified finds nothing."""
        details = raw(T0, T0 + 50)
        details.IsReadModified = True
        (result,) = await history_read(client, details, [ua.NodeId(X, env.ns)])
        assert result.StatusCode.value == ua.StatusCodes.GoodNoData
        assert result.HistoryData.DataValues == []

    async def test_timestamps_to_return(self, env: Env, client: Client) -> None:
        """Source gives only source timestamps; Neither is refused."""
        (source,) = await history_read(client, raw(T0, T0 + 1), [ua.NodeId(X, env.ns)],
                                       timestamps=ua.TimestampsToReturn.Source)
        assert all(dv.ServerTimestamp is None for dv in source.HistoryData.DataValues)
        (neither,) = await history_read(client, raw(T0, T0 + 1), [ua.NodeId(X, env.ns)],
                                        timestamps=ua.TimestampsToReturn.Neither)
        assert neither.StatusCode.value == ua.StatusCodes.BadTimestampsToReturnInvalid

    async def test_node_read_raw_history(self, env: Env, client: Client) -> None:
        """asyncua's own Node.read_raw_history (paging until done) gets everything."""
        node = client.get_node(ua.NodeId(X, env.ns))
        values = await node.read_raw_history(when(T0), when(T0 + 200), return_bounds=False)
        assert pairs(values) == expected_x(T0, T0 + 200)


class TestLimits:
    async def test_nodes_share_the_request_cap(self, env: Env, client: Client) -> None:
        """Seven readers of X in one request get 64 values in all, each its share of
        what the ones before left, and a continuation point; paging on, each gets
        every sample once."""
        nodeid = ua.NodeId(X, env.ns)
        details = raw(T0, T0 + 200)
        readers = 7
        got: list[list[ua.DataValue]] = [[] for _ in range(readers)]
        cps: list[bytes | None] = [None] * readers
        live = list(range(readers))
        while live:
            results = await history_read(client, details, [nodeid] * len(live),
                                         [cps[i] for i in live])
            assert sum(len(r.HistoryData.DataValues) for r in results) <= LIMITS.values
            if not any(cps):  # the first request
                assert [len(r.HistoryData.DataValues) for r in results] == [9] * 6 + [10]
            for i, result in zip(live, results, strict=True):
                result.StatusCode.check()
                got[i] += result.HistoryData.DataValues
                cps[i] = result.ContinuationPoint
            live = [i for i in live if cps[i]]
        assert all(pairs(values) == expected_x(T0, T0 + 200) for values in got)

    async def test_too_many_nodes(self, env: Env, client: Client) -> None:
        """More nodes than MaxNodesPerHistoryReadData: BadTooManyOperations for the
        whole request."""
        with pytest.raises(ua.uaerrors.BadTooManyOperations):
            await history_read(client, raw(T0, T0 + 5), [ua.NodeId(X, env.ns)] *
                               (LIMITS.nodes + 1))

    async def test_one_request_needing_more_points_than_allowed(self, env: Env,
                                                                client: Client) -> None:
        """Past MaxHistoryContinuationPoints within one request: BadNoContinuationPoints
        for the nodes beyond, without data."""
        nodeid = ua.NodeId(X, env.ns)
        results = await history_read(client, raw(T0, T0 + 50, 2), [nodeid] * 10)
        assert [r.StatusCode.value for r in results] == \
            [ua.StatusCodes.Good] * 8 + [ua.StatusCodes.BadNoContinuationPoints] * 2
        assert all(r.ContinuationPoint for r in results[:8])
        assert results[9].ContinuationPoint is None and not results[9].HistoryData

    async def test_earlier_points_are_freed_for_a_new_request(self, env: Env,
                                                              client: Client) -> None:
        """A full table gives way to a new request: the oldest point of an earlier
        request goes (BadContinuationPointInvalid), the others still read on."""
        nodeid = ua.NodeId(X, env.ns)
        details = raw(T0, T0 + 50, 2)
        first = await history_read(client, details, [nodeid] * LIMITS.continuation_points)
        (second,) = await history_read(client, details, [nodeid])
        assert second.ContinuationPoint
        old = await history_read(client, details, [nodeid] * 2,
                                 [first[0].ContinuationPoint, first[1].ContinuationPoint])
        assert old[0].StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
        assert old[1].StatusCode.is_good()
        assert pairs(old[1].HistoryData.DataValues) == expected_x(T0, T0 + 50)[2:4]

    async def test_points_are_used_once_and_only_by_their_session(self, env: Env,
                                                                  client: Client) -> None:
        """A point read on from once is gone; another session cannot use it."""
        nodeid = ua.NodeId(X, env.ns)
        details = raw(T0, T0 + 50, 2)
        (first,) = await history_read(client, details, [nodeid])
        async with Client(env.url, timeout=10) as other:
            (stolen,) = await history_read(other, details, [nodeid], [first.ContinuationPoint])
        assert stolen.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
        (again,) = await history_read(client, details, [nodeid], [first.ContinuationPoint])
        assert again.StatusCode.is_good()
        (twice,) = await history_read(client, details, [nodeid], [first.ContinuationPoint])
        assert twice.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid

    async def test_release_and_close_free_the_points(self, env: Env) -> None:
        """ReleaseContinuationPoints frees the points named; closing the session frees
        the rest."""
        nodeid = ua.NodeId(X, env.ns)
        details = raw(T0, T0 + 50, 2)
        held = env.manager.points.statistics().held
        async with Client(env.url, timeout=10) as c:
            results = await history_read(c, details, [nodeid] * 4)
            assert env.manager.points.statistics().held == held + 4
            released = await history_read(c, details, [nodeid] * 2,
                                          [r.ContinuationPoint for r in results[:2]],
                                          release=True)
            assert all(r.StatusCode.is_good() for r in released)
            assert env.manager.points.statistics().held == held + 2
            (gone,) = await history_read(c, details, [nodeid], [results[0].ContinuationPoint])
            assert gone.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
        assert env.manager.points.statistics().held == held

    async def test_limits_are_advertised(self, env: Env, client: Client) -> None:
        """MaxReturnDataValues, MaxNodesPerHistoryReadData and -Events, and
        MaxHistoryContinuationPoints say the limits."""
        ids = ua.ObjectIds
        expected = {
            ids.HistoryServerCapabilities_MaxReturnDataValues: LIMITS.values,
            ids.HistoryServerCapabilities_MaxReturnEventValues: LIMITS.values,
            ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadData:
                LIMITS.nodes,
            ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadEvents:
                LIMITS.nodes,
            ids.Server_ServerCapabilities_MaxHistoryContinuationPoints:
                LIMITS.continuation_points,
        }
        for ident, value in expected.items():
            assert await client.get_node(ua.NodeId(ident)).read_value() == value


class TestAttributes:
    async def test_historizing_and_access_level(self, env: Env, client: Client) -> None:
        """Recorded variables say Historizing and HistoryRead; others do not."""
        x = client.get_node(ua.NodeId(X, env.ns))
        plain = client.get_node(ua.NodeId(PLAIN, env.ns))
        assert await x.read_attribute(ua.AttributeIds.Historizing) is not None
        assert (await x.read_attribute(ua.AttributeIds.Historizing)).Value.Value is True
        for attribute in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
            level = (await x.read_attribute(attribute)).Value.Value
            assert level & ua.AccessLevel.HistoryRead.mask
            assert level & ua.AccessLevel.CurrentRead.mask
            assert not (await plain.read_attribute(attribute)).Value.Value \
                & ua.AccessLevel.HistoryRead.mask
        notifier = (await client.get_node(ua.NodeId(SESSION, env.ns)).read_attribute(
            ua.AttributeIds.EventNotifier)).Value.Value
        assert notifier & ua.EventNotifier.HistoryRead.mask

    async def test_capabilities_are_advertised(self, env: Env, client: Client) -> None:
        """HistoryServerCapabilities say what is served and list the four aggregates."""
        caps = client.get_node(ua.ObjectIds.HistoryServerCapabilities)
        data = await client.get_node(
            ua.ObjectIds.HistoryServerCapabilities_AccessHistoryDataCapability).read_value()
        events = await client.get_node(
            ua.ObjectIds.HistoryServerCapabilities_AccessHistoryEventsCapability).read_value()
        assert data is True and events is True
        folder = await caps.get_child("0:AggregateFunctions")
        names = {(await n.read_browse_name()).Name for n in await folder.get_children()}
        assert {"Average", "Minimum", "Maximum", "Count"} <= names


def processed(aggregate: int, start: float, end: float, interval_ms: float
              ) -> ua.ReadProcessedDetails:
    return ua.ReadProcessedDetails(StartTime=when(start), EndTime=when(end),
                                   ProcessingInterval=interval_ms,
                                   AggregateType=[ua.NodeId(aggregate)])


class TestProcessed:
    @pytest.mark.parametrize(("aggregate", "compute"), [
        pytest.param(ua.ObjectIds.AggregateFunction_Average, lambda v: sum(v) / len(v),
                     id="average"),
        pytest.param(ua.ObjectIds.AggregateFunction_Minimum, min, id="minimum"),
        pytest.param(ua.ObjectIds.AggregateFunction_Maximum, max, id="maximum"),
        pytest.param(ua.ObjectIds.AggregateFunction_Count, len, id="count"),
    ])
    async def test_aggregates_per_interval(self, env: Env, client: Client, aggregate: int,
                                           compute: Any) -> None:
        """Each 10 s interval's value is the aggregate of its raw samples, stamped at its
        start, Good and Calculated."""
        values, _ = await all_pages(client, ua.NodeId(X, env.ns),
                                    processed(aggregate, T0, T0 + 100, 10_000))
        assert len(values) == 10
        for k, dv in enumerate(values):
            inside = [v for t, v in x_samples() if T0 + 10 * k <= t < T0 + 10 * (k + 1)]
            assert dv.SourceTimestamp.timestamp() == pytest.approx(T0 + 10 * k)
            assert dv.Value.Value == pytest.approx(compute(inside))
            assert dv.StatusCode.value == GOOD_CALCULATED
        if aggregate == ua.ObjectIds.AggregateFunction_Count:
            assert values[0].Value.VariantType == ua.VariantType.Int32

    async def test_empty_intervals_and_paging(self, env: Env, client: Client) -> None:
        """Intervals beyond the data are BadNoData; more intervals than a page hold come
        in pages that add up to the whole read."""
        details = processed(ua.ObjectIds.AggregateFunction_Average, T0, T0 + 200, 1_000)
        values, pages = await all_pages(client, ua.NodeId(X, env.ns), details)
        assert len(values) == 200 and pages == 4  # 64 per page
        assert [round(dv.SourceTimestamp.timestamp() - T0) for dv in values] == \
            list(range(200))
        assert all(dv.StatusCode.is_good() for dv in values[:100])
        assert all(dv.StatusCode.value == ua.StatusCodes.BadNoData for dv in values[100:])

    async def test_one_interval_and_backward(self, env: Env, client: Client) -> None:
        """Interval 0 is one interval over the range; start > end aggregates backward."""
        (whole,) = await history_read(client, processed(
            ua.ObjectIds.AggregateFunction_Count, T0, T0 + 50, 0), [ua.NodeId(X, env.ns)])
        assert [dv.Value.Value for dv in whole.HistoryData.DataValues] == \
            [len(expected_x(T0, T0 + 50))]
        (back,) = await history_read(client, processed(
            ua.ObjectIds.AggregateFunction_Maximum, T0 + 20, T0, 10_000), [ua.NodeId(X, env.ns)])
        # intervals (T0+10, T0+20] then (T0, T0+10]
        assert [dv.Value.Value for dv in back.HistoryData.DataValues] == [40 * 1.5, 20 * 1.5]

    async def test_refusals(self, env: Env, client: Client) -> None:
        """An unknown aggregate, a list that does not match the nodes, a missing end."""
        nodeid = ua.NodeId(X, env.ns)
        (unknown,) = await history_read(client, processed(
            ua.ObjectIds.AggregateFunction_Interpolative, T0, T0 + 10, 1000), [nodeid])
        assert unknown.StatusCode.value == ua.StatusCodes.BadAggregateNotSupported
        mismatch = await history_read(client, processed(
            ua.ObjectIds.AggregateFunction_Count, T0, T0 + 10, 1000), [nodeid, nodeid])
        assert {r.StatusCode.value for r in mismatch} == {ua.StatusCodes.BadAggregateListMismatch}
        details = processed(ua.ObjectIds.AggregateFunction_Count, T0, T0 + 10, 1000)
        details.EndTime = ua.get_win_epoch()
        (open_end,) = await history_read(client, details, [nodeid])
        assert open_end.StatusCode.value == ua.StatusCodes.BadInvalidTimestampArgument


class TestEvents:
    async def test_event_history_with_select_clauses(self, env: Env, client: Client) -> None:
        """The session node's stored events come back with the selected standard fields."""
        node = client.get_node(ua.NodeId(SESSION, env.ns))
        events: list[UaEvent] = await node.read_event_history(when(T0 + 3), when(T0 + 8))
        assert [e.Message.Text for e in events] == [f"event {k}" for k in range(3, 8)]
        first = events[0]
        assert first.Severity == 130
        assert first.SourceName == "s"
        assert first.SourceNode == ua.NodeId(SESSION, env.ns)
        assert first.EventType == ua.NodeId(ua.ObjectIds.BaseEventType)
        assert first.Time.timestamp() == pytest.approx(T0 + 3)
        assert isinstance(first.EventId, bytes) and len(first.EventId) == 16
        assert len({e.EventId for e in events}) == 5

    async def test_event_paging_and_where_clause(self, env: Env, client: Client) -> None:
        """Events page with continuation points; a WhereClause on a type filters them."""
        node = client.get_node(ua.NodeId(SESSION, env.ns))
        full = await node.read_event_history(when(T0), when(T0 + 100))
        assert len(full) == 25
        details = ua.ReadEventDetails(StartTime=when(T0), EndTime=when(T0 + 100),
                                      NumValuesPerNode=4)
        details.Filter = ua.EventFilter()
        message = ua.SimpleAttributeOperand(
            TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
            BrowsePath=[ua.QualifiedName("Message", 0)], AttributeId=ua.AttributeIds.Value)
        details.Filter.SelectClauses = [message]
        seen: list[str] = []
        cp = None
        while True:
            (result,) = await history_read(client, details, [node.nodeid], [cp])
            result.StatusCode.check()
            seen += [f.EventFields[0].Value.Text for f in result.HistoryData.Events]
            cp = result.ContinuationPoint
            if cp is None:
                break
        assert seen == [f"event {k}" for k in range(25)]
        # a WhereClause that no stored event fits
        details.Filter.WhereClause = ua.ContentFilter(Elements=[ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.OfType,
            FilterOperands=[ua.LiteralOperand(Value=ua.Variant(
                ua.NodeId(ua.ObjectIds.AuditEventType)))])])
        (none,) = await history_read(client, details, [node.nodeid])
        assert none.HistoryData.Events == []

    async def test_event_history_only_on_session_nodes(self, env: Env, client: Client) -> None:
        """A variable holds no event history."""
        details = ua.ReadEventDetails(StartTime=when(T0), EndTime=when(T0 + 100))
        details.Filter = ua.EventFilter()
        (result,) = await history_read(client, details, [ua.NodeId(X, env.ns)])
        assert result.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported


class TestEndToEnd:
    async def test_export_matches_history_read(self, env: Env, client: Client) -> None:
        """The CSV export of a range holds exactly what HistoryRead returns for it."""
        out = io.StringIO()
        await export_csv(env.store, "s", ["Components.c.Outputs.x"], T0 + 5, T0 + 70, out,
                         layout="long")
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        values, _ = await all_pages(client, ua.NodeId(X, env.ns), raw(T0 + 5, T0 + 70, 9))
        assert [(round(float(r["epoch_s"]), 6), float(r["value"])) for r in rows] == \
            pairs(values)
        assert [datetime.fromisoformat(r["time"]) for r in rows] == \
            [dv.SourceTimestamp.replace(tzinfo=UTC) if dv.SourceTimestamp.tzinfo is None
             else dv.SourceTimestamp for dv in values]

    async def test_recorded_session_reads_back(self, env: Env, client: Client) -> None:
        """A real session recorded by a Recorder reads back through HistoryRead as it
        was produced."""
        session = Session("rec", plant(), SessionSettings(step_size=0.01))
        recorder = Recorder(env.store, SessionFrames(session), RecordingSettings(
            variables=("tank.level",), mode="every"))
        await recorder.declare()
        produced = []
        session.start()
        for i in range(30):
            session.tick()
            recorder.record_once(T0 + i)
            produced.append((round(T0 + i, 6), session.values()[recorder.keys[0]]))
        await env.store.flush()
        nodeid = ua.NodeId("Sessions.rec.Components.tank.Outputs.level", env.ns)
        parent = env.server.get_node(ua.NodeId(SESSION, env.ns))
        await parent.add_variable(nodeid, ua.QualifiedName("level", env.ns), 0.0)
        mark_historizing(env.server.iserver.aspace, [nodeid])
        values, _ = await all_pages(client, nodeid, raw(T0, T0 + timedelta(hours=1).seconds, 7))
        assert pairs(values) == produced
        recorder.close()
