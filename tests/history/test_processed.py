"""Processed reads (Average, Minimum, Maximum, Count) against numpy over the same data."""

from __future__ import annotations

import numpy as np
import pytest

from twin_server.errors import InvalidArgument
from twin_server.history import BAD_NO_DATA, HistoryStore

T0 = 1_700_000_000.0
BAD = 0x80000000
UNCERTAIN = 0x40000000


def expected(t_us: np.ndarray, v: np.ndarray, good: np.ndarray, start: int, end: int,
             interval: int, aggregate: str) -> list[tuple[int, float | None]]:
    """numpy's answer: bucket by integer division, Good samples only."""
    forward = start < end
    span = abs(end - start)
    count = -(-span // interval)
    inside = good & ((t_us >= start) & (t_us < end) if forward else (t_us <= start) & (t_us > end))
    bucket = ((t_us - start) if forward else (start - t_us)) // interval
    out: list[tuple[int, float | None]] = []
    for k in range(count):
        sel = v[inside & (bucket == k)]
        t = start + k * interval if forward else start - k * interval
        if aggregate == "Count":
            out.append((t, int(sel.size)))
        elif sel.size == 0:
            out.append((t, None))
        else:
            fn = {"Average": np.mean, "Minimum": np.min, "Maximum": np.max}[aggregate]
            out.append((t, float(fn(sel))))
    return out


class TestProcessed:
    @pytest.mark.parametrize("aggregate", ["Average", "Minimum", "Maximum", "Count"])
    @pytest.mark.parametrize(("start", "end", "interval"), [
        pytest.param(T0, T0 + 60, 7.0, id="forward"),
        pytest.param(T0 + 60, T0 - 5, 11.0, id="backward"),
        pytest.param(T0 + 10, T0 + 50, 0.0, id="one-interval"),
        pytest.param(T0 - 100, T0 + 200, 13.0, id="empty-edges"),
    ])
    async def test_against_numpy(self, store: HistoryStore, aggregate: str, start: float,
                                 end: float, interval: float) -> None:
        """Each interval's aggregate equals numpy's over the Good samples in it."""
        rng = np.random.default_rng(7)
        t_us = np.sort(rng.integers(round(T0 * 1e6), round((T0 + 60) * 1e6), 5000))
        t_us[100:140] = t_us[100]  # a run of equal timestamps
        v = rng.normal(20.0, 5.0, t_us.size)
        status = rng.choice([0, 0, 0, 0, BAD, UNCERTAIN], t_us.size)
        for t, value, st in zip(t_us.tolist(), v.tolist(), status.tolist(), strict=True):
            store.record("s/v", t / 1e6, value, status=st)
        await store.flush()
        got = await store.read_processed("s/v", start, end, interval, aggregate)
        start_us, end_us = round(start * 1e6), round(end * 1e6)
        want = expected(t_us, v, status == 0, start_us, end_us,
                        round(interval * 1e6) or abs(end_us - start_us), aggregate)
        assert [p.t_us for p in got] == [t for t, _ in want]
        for p, (_, w) in zip(got, want, strict=True):
            if w is None:
                assert p.value is None and p.status == BAD_NO_DATA
            else:
                assert p.value == pytest.approx(w, rel=1e-12) and p.status == 0

    async def test_integer_series_keeps_integers(self, store: HistoryStore) -> None:
        """Minimum and Maximum of an integer series are integers."""
        for k, value in enumerate([5, -3, 9, 2]):
            store.record("s/n", T0 + k, value)
        await store.flush()
        (lo,) = await store.read_processed("s/n", T0, T0 + 10, 0, "Minimum")
        (hi,) = await store.read_processed("s/n", T0, T0 + 10, 0, "Maximum")
        (avg,) = await store.read_processed("s/n", T0, T0 + 10, 0, "Average")
        assert (lo.value, hi.value, avg.value) == (-3, 9, 3.25)
        assert type(lo.value) is int

    @pytest.mark.parametrize(("aggregate", "interval", "match"), [
        pytest.param("Median", 1.0, "unknown aggregate", id="unknown"),
        pytest.param("Average", -1.0, "interval must be >= 0", id="negative"),
        pytest.param("Count", 1e-6, "at most", id="too-many"),
    ])
    async def test_bad_requests_refused(self, store: HistoryStore, aggregate: str,
                                        interval: float, match: str) -> None:
        """Unknown aggregates, negative or absurd intervals are refused with a reason."""
        with pytest.raises(InvalidArgument, match=match):
            await store.read_processed("s/v", T0, T0 + 3600, interval, aggregate)

    async def test_strings_only_count(self, store: HistoryStore) -> None:
        """A string series can be counted but not averaged."""
        store.record("s/text", T0, "a")
        await store.flush()
        (count,) = await store.read_processed("s/text", T0, T0 + 1, 0, "Count")
        assert count.value == 1
        with pytest.raises(InvalidArgument, match="numeric"):
            await store.read_processed("s/text", T0, T0 + 1, 0, "Average")
