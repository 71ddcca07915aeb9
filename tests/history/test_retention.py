"""Retention: by age and by size, per session or per series, deleted in bulk."""

from __future__ import annotations

import asyncio

import pytest

from twin_server.errors import InvalidArgument
from twin_server.history import HistoryStore, RetentionPolicy
from twin_server.history.store import RETIRE_MARGIN

NOW = 1_700_000_000.0


async def fill(store: HistoryStore, series: list[str], seconds: int = 100) -> None:
    """One sample per series per second over the last ``seconds``, plus events."""
    for k in range(seconds):
        for name in series:
            store.record(name, NOW - seconds + k + 1, float(k))
        store.record_event(series[0].split("/")[0], "tick", f"{k}", t=NOW - seconds + k + 1)
    await store.flush()


async def count(store: HistoryStore, series: str) -> int:
    return len((await store.read_raw(series, 0.0, NOW + 1)).samples)


class TestRetention:
    async def test_by_age_per_session(self, store: HistoryStore) -> None:
        """A session's max_age keeps only its younger samples and events."""
        await fill(store, ["a/x", "a/y"])
        await fill(store, ["b/x"])
        store.set_retention("a", RetentionPolicy(max_age=30.0))
        result = await store.enforce_retention(now=NOW)
        # t < now - 30 s goes, now - 30 s stays: 69 of 100 per series go
        assert (result.samples_deleted, result.events_deleted) == (138, 69)
        assert (await store.read_raw("a/x", 0.0, NOW + 1)).samples[0].t == NOW - 30
        assert (await count(store, "a/y"), await count(store, "b/x")) == (31, 100)
        assert len((await store.read_events("a", 0.0, NOW + 1)).events) == 31

    async def test_by_size_and_series_override(self, store: HistoryStore) -> None:
        """max_samples keeps the newest N; a series' own policy beats its session's."""
        await fill(store, ["a/x", "a/y"])
        store.set_retention("a", RetentionPolicy(max_samples=10))
        store.set_retention("a", RetentionPolicy(max_samples=25), path="y")
        await store.enforce_retention(now=NOW)
        got = (await store.read_raw("a/x", 0.0, NOW + 1)).samples
        assert [s.value for s in got] == [float(k) for k in range(90, 100)]
        assert await count(store, "a/y") == 25
        assert (await store.enforce_retention(now=NOW)).samples_deleted == 0

    async def test_size_keeps_equal_timestamps_by_seq(self, store: HistoryStore) -> None:
        """A size limit cutting through equal timestamps keeps the newest recorded."""
        for k in range(10):
            store.record("a/x", NOW, float(k))
        await store.flush()
        store.set_retention("a", RetentionPolicy(max_samples=3))
        await store.enforce_retention(now=NOW)
        assert [s.value for s in (await store.read_raw("a/x", NOW, NOW + 1)).samples] == [
            7.0, 8.0, 9.0]

    async def test_bulk_statements_only(self, store: HistoryStore) -> None:
        """Recording issues no DELETE; retention issues one DELETE per series and limit."""
        statements: list[str] = []
        await store._db.set_trace_callback(statements.append)
        await fill(store, ["a/x", "a/y", "a/z"])
        assert not [s for s in statements if s.lstrip().upper().startswith("DELETE")]
        store.set_retention("a", RetentionPolicy(max_age=30.0, max_samples=20))
        statements.clear()
        await store.enforce_retention(now=NOW)
        deletes = [s for s in statements if s.lstrip().upper().startswith("DELETE")]
        assert len(deletes) == 3 + 3 + 1  # age per series, size per series, events
        await store._db.set_trace_callback(None)

    async def test_periodic_task(self, store: HistoryStore) -> None:
        """run_retention enforces on its own until close()."""
        store.record("a/x", 1.0, 1.0)  # 1970: older than any max_age
        store.record("a/x", NOW * 2, 2.0)  # the far future
        await store.flush()
        store.set_retention("a", RetentionPolicy(max_age=3600.0))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(store.run_retention(every=0.05))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if await count(store, "a/x") == 0:
                    break
            assert len((await store.read_raw("a/x", 0.0, NOW * 3)).samples) == 1
            await store.close()

    @pytest.mark.parametrize("kwargs", [
        pytest.param({"max_age": 0.0}, id="zero-age"),
        pytest.param({"max_samples": 0}, id="zero-size"),
        pytest.param({"max_samples": 1.5}, id="fractional-size"),
    ])
    def test_bad_policy_refused(self, kwargs: dict[str, float]) -> None:
        """A policy that would delete everything or is malformed is refused."""
        with pytest.raises(InvalidArgument):
            RetentionPolicy(**kwargs)  # type: ignore[arg-type]


class TestDeletedSessions:
    """A deleted (retired) session's history stays under its policy until retention has
    removed it all; then nothing of it is left: no series row, cached id or policy."""

    async def retired(self, store: HistoryStore, session: str) -> None:
        store.retire(session)
        await asyncio.sleep(RETIRE_MARGIN * 0.05 + 0.05)  # the store's batch interval: 0.05 s

    async def test_forgotten_once_emptied(self, store: HistoryStore) -> None:
        """Its policy keeps applying while samples or events are left; once they have
        all aged out its series and policy go, and other sessions are untouched."""
        await fill(store, ["gone/x", "gone/y"])
        await fill(store, ["kept/x"])
        for session in ("gone", "kept"):
            store.set_retention(session, RetentionPolicy(max_age=30.0))
        await self.retired(store, "gone")
        result = await store.enforce_retention(now=NOW)
        assert (result.samples_deleted, result.sessions_forgotten) == (3 * 69, 0)
        assert len(await store.list_series("gone")) == 2
        result = await store.enforce_retention(now=NOW + 3600)
        assert result.sessions_forgotten == 1
        assert await store.list_series("gone") == []
        assert [s.path for s in await store.list_series()] == ["x"]  # kept/x, emptied
        assert "gone" not in store._policies.sessions and "gone" not in store._policies.retired
        assert not [k for k in store._writer.series if "gone" in str(k)]
        assert "kept" in store._policies.sessions

    async def test_recorded_again_keeps_its_policy(self, store: HistoryStore) -> None:
        """A session created again under the name before retention ran is not retired:
        its policy and series stay."""
        await fill(store, ["again/x"])
        store.set_retention("again", RetentionPolicy(max_age=30.0))
        await self.retired(store, "again")
        store.set_retention("again", RetentionPolicy(max_age=60.0))
        result = await store.enforce_retention(now=NOW + 3600)
        assert result.sessions_forgotten == 0
        assert store._policies.sessions["again"] == RetentionPolicy(max_age=60.0)
        assert len(await store.list_series("again")) == 1

    async def test_without_policy_history_stays(self, store: HistoryStore) -> None:
        """A retired session without a policy keeps its history for good; only its
        cached ids and the retirement itself go."""
        await fill(store, ["plain/x"])
        await self.retired(store, "plain")
        result = await store.enforce_retention(now=NOW + 3600)
        assert result.sessions_forgotten == 0
        assert await count(store, "plain/x") == 100
        assert not store._policies.retired
        assert not [k for k in store._writer.series if "plain" in str(k)]
