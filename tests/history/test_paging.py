"""Paging: the pages of a read, concatenated, are the read: no repeats, no drops; also
when the nodes of one HistoryRead request share its cap on values."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace, NodeData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin_server.history import BAD_BOUND_NOT_FOUND, HistoryStore, to_datetime
from twin_server.opcua.history_read import HistoryLimits, TwinHistoryManager, mark_historizing

MS = 1000  # microseconds


def reference(data: list[tuple[int, float]], start: int, end: int, bounds: bool
              ) -> list[tuple[int, float | None]]:
    """Part 11 raw read over ``data`` ((t_us, value) in recorded order), written
    independently of the store: filter, sort, then add the bounds."""
    ordered = sorted(enumerate(data), key=lambda iv: (iv[1][0], iv[0]))
    rows = [tv for _, tv in ordered]
    if start < end:
        out: list[tuple[int, float | None]] = [tv for tv in rows if start <= tv[0] < end]
        if bounds:
            before = [tv for tv in rows if tv[0] <= start]
            if not before:
                out.insert(0, (start, None))
            elif before[-1][0] < start:
                out.insert(0, before[-1])
            after = [tv for tv in rows if tv[0] >= end]
            out.append(after[0] if after else (end, None))
        return out
    out = [tv for tv in reversed(rows) if end < tv[0] <= start]
    if bounds:
        after = [tv for tv in rows if tv[0] >= start]
        if not after:
            out.insert(0, (start, None))
        elif after[0][0] > start:
            out.insert(0, after[0])
        before = [tv for tv in rows if tv[0] <= end]
        out.append(before[-1] if before else (end, None))
    return out


async def check(path: Path, data: list[tuple[int, float]], reads: list[dict[str, Any]]) -> None:
    store = await HistoryStore.open(path)
    try:
        for t, value in data:
            store.record("s/v", t / 1e6, value)
            store.record("s/other", t / 1e6, -value)  # interleaved, must never leak in
        await store.flush()
        for read in reads:
            start, end, bounds, size = read["start"], read["end"], read["bounds"], read["size"]
            full = (await store.read_raw("s/v", start / 1e6, end / 1e6,
                                         return_bounds=bounds)).samples
            pages: list[Any] = []
            token = None
            while True:
                page = await store.read_raw("s/v", start / 1e6, end / 1e6, max_values=size,
                                            continuation=token, return_bounds=bounds)
                assert 0 < len(page.samples) <= size or (not page.samples and not pages)
                pages += page.samples
                token = page.continuation
                if token is None:
                    break
            assert pages == full
            got = [(s.t_us, s.value) for s in full]
            assert got == reference(data, start, end, bounds)
            assert all((s.status == BAD_BOUND_NOT_FOUND) == (s.value is None) for s in full)
    finally:
        await store.close()


times = st.integers(min_value=0, max_value=12).map(lambda k: k * MS)
read_spec = st.fixed_dictionaries({
    "start": st.integers(min_value=-2, max_value=14).map(lambda k: k * MS),
    "end": st.integers(min_value=-2, max_value=14).map(lambda k: k * MS),
    "bounds": st.booleans(),
    "size": st.integers(min_value=1, max_value=12),
}).filter(lambda r: r["start"] != r["end"])


class TestPaging:
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(ts=st.lists(times, max_size=80), reads=st.lists(read_spec, min_size=1, max_size=6))
    def test_pages_concatenate_to_the_read(self, ts: list[int], reads: list[dict[str, Any]]
                                           ) -> None:
        """Forward and backward, with and without bounds, pages never repeat or drop."""
        data = [(t, float(i)) for i, t in enumerate(ts)]  # unique values reveal repeats
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(check(Path(tmp) / "h.db", data, reads))

    def test_page_boundary_inside_a_run_of_equal_timestamps(self, tmp_path: Path) -> None:
        """1000 samples at one instant, read 7 at a time, come back whole and in order."""
        data = [(5 * MS, float(i)) for i in range(1000)]
        asyncio.run(check(tmp_path / "h.db", data, [
            {"start": 0, "end": 10 * MS, "bounds": False, "size": 7},
            {"start": 10 * MS, "end": 0, "bounds": True, "size": 7},
        ]))


# -- HistoryRead requests: the request's budget, shared by its nodes ----------------------

NS = 2
#: the variables' nodes, and the series they read
SERIES = {"v": "s/Components.c.Outputs.v", "w": "s/Components.c.Outputs.w"}


def nodeid(name: str) -> ua.NodeId:
    return ua.NodeId(f"Sessions.s.Components.c.Outputs.{name}", NS)


def history_manager(store: HistoryStore, limits: HistoryLimits, chunk: int
                    ) -> TwinHistoryManager:
    """The HistoryRead service over ``store``, with the two variables v and w in a real
    asyncua AddressSpace (no network: tests/opcua reads through a client)."""
    aspace = AddressSpace()
    for name in SERIES:
        aspace[nodeid(name)] = NodeData(nodeid(name))
    mark_historizing(aspace, [nodeid(name) for name in SERIES])
    return TwinHistoryManager(SimpleNamespace(aspace=aspace), store, NS, limits=limits,
                              chunk=chunk)


def raw_details(read: dict[str, Any]) -> ua.ReadRawModifiedDetails:
    return ua.ReadRawModifiedDetails(
        IsReadModified=False, StartTime=to_datetime(read["start"]),
        EndTime=to_datetime(read["end"]), NumValuesPerNode=read["size"],
        ReturnBounds=read["bounds"])


async def check_requests(path: Path, data: list[tuple[int, float]], read: dict[str, Any],
                         names: list[str], limits: HistoryLimits, chunk: int) -> None:
    store = await HistoryStore.open(path)
    try:
        for t, value in data:
            store.record(SERIES["v"], t / 1e6, value)
            store.record(SERIES["w"], t / 1e6, -value)
        await store.flush()
        manager = history_manager(store, limits, chunk)
        details = raw_details(read)
        got: list[list[tuple[int, float | None]]] = [[] for _ in names]
        cps: list[bytes | None] = [None] * len(names)
        live = list(range(len(names)))
        session = object()
        requests = 0
        while live:
            params = ua.HistoryReadParameters(
                HistoryReadDetails=details, TimestampsToReturn=ua.TimestampsToReturn.Source,
                ReleaseContinuationPoints=False,
                NodesToRead=[ua.HistoryReadValueId(NodeId=nodeid(names[i]),
                                                   ContinuationPoint=cps[i]) for i in live])
            results = await manager.read_history(params, session)
            requests += 1
            assert sum(len(r.HistoryData.DataValues) for r in results) <= limits.values
            for i, result in zip(live, results, strict=True):
                assert result.StatusCode.is_good(), result.StatusCode
                values = result.HistoryData.DataValues
                assert not read["size"] or len(values) <= read["size"]
                assert values or not result.ContinuationPoint  # every page moves on
                got[i] += [(round(dv.SourceTimestamp.timestamp() * 1e6), dv.Value.Value)
                           for dv in values]
                cps[i] = result.ContinuationPoint
            assert manager.points.held(session) <= limits.continuation_points
            live = [i for i in live if cps[i]]
            assert requests < 10_000
        for name, pages in zip(names, got, strict=True):
            want = reference(data, read["start"], read["end"], read["bounds"])
            if name == "w":
                want = [(t, None if v is None else -v) for t, v in want]
            assert pages == want
        assert manager.points.held(session) == 0
    finally:
        await store.close()


class TestRequestBudget:
    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(ts=st.lists(times, max_size=60), read=read_spec,
           names=st.lists(st.sampled_from(sorted(SERIES)), min_size=1, max_size=6),
           values=st.integers(min_value=1, max_value=20),
           chunk=st.integers(min_value=1, max_value=8))
    def test_nodes_sharing_a_request_page_to_their_whole_reads(
            self, ts: list[int], read: dict[str, Any], names: list[str], values: int,
            chunk: int) -> None:
        """However many nodes (the same one repeated, too) share a request's cap, each
        pages to exactly its whole read, and no response passes the cap."""
        data = [(t, float(i)) for i, t in enumerate(ts)]
        limits = HistoryLimits(values=max(values, len(names)), nodes=len(names),
                               continuation_points=len(names))
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(check_requests(Path(tmp) / "h.db", data, read, names, limits, chunk))
