"""Paging: the pages of a read, concatenated, are the read: no repeats, no drops."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin_server.history import BAD_BOUND_NOT_FOUND, HistoryStore

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
