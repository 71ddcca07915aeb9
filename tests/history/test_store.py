"""The store: what is written is read back, the writer never blocks, errors surface."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from twin_server.errors import InvalidArgument
from twin_server.history import (
    BAD_BOUND_NOT_FOUND,
    HistoryStore,
    InvalidContinuation,
    Sample,
    StoreError,
)
from twin_server.history import schema as schema_module

T0 = 1_700_000_000.0  # a wall-clock time, seconds since the epoch

#: the tables as schema v1 created them (history/schema.py ``_v1``, frozen)
V1_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL, "
    "description TEXT NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "INSERT INTO meta (key, value) VALUES ('next_seq', 0)",
    "CREATE TABLE series (id INTEGER PRIMARY KEY, session TEXT NOT NULL, path TEXT NOT NULL, "
    "datatype TEXT NOT NULL, created INTEGER NOT NULL, UNIQUE (session, path))",
    "CREATE TABLE samples (series_id INTEGER NOT NULL, t INTEGER NOT NULL, "
    "seq INTEGER NOT NULL, value, status INTEGER NOT NULL DEFAULT 0, "
    "source INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (series_id, t, seq)) WITHOUT ROWID",
    "CREATE TABLE events (id INTEGER PRIMARY KEY, session TEXT NOT NULL, t INTEGER NOT NULL, "
    "kind TEXT NOT NULL, severity INTEGER NOT NULL, message TEXT NOT NULL)",
    "CREATE INDEX events_by_time ON events (session, t, id)",
    "CREATE TABLE snapshots (session TEXT PRIMARY KEY, t INTEGER NOT NULL, blob BLOB NOT NULL)",
    "CREATE TABLE twins (name TEXT PRIMARY KEY, toml TEXT NOT NULL, t INTEGER NOT NULL)",
)


def values(samples: list[Sample]) -> list[object]:
    return [s.value for s in samples]


class TestReadBack:
    @pytest.mark.parametrize("value", [
        pytest.param(1.25, id="double"),
        pytest.param(-7, id="int"),
        pytest.param(True, id="bool"),
        pytest.param("open", id="string"),
    ])
    async def test_value_types_round_trip(self, store: HistoryStore, value: object) -> None:
        """A value comes back with the type and value it was recorded with."""
        store.record("s/v", T0, value, status=0x40000000, source="hil")
        await store.flush()
        (sample,) = (await store.read_raw("s/v", T0, T0 + 1)).samples
        assert sample == Sample(round(T0 * 1e6), value, 0x40000000, "hil")
        assert type(sample.value) is type(value)

    async def test_reads_equal_writes(self, store: HistoryStore) -> None:
        """Many series interleaved at one time each tick read back each in order."""
        for k in range(2000):
            for j in range(5):
                store.record(("s", f"v{j}"), T0 + k * 0.001, float(k * 10 + j))
        await store.flush()
        for j in range(5):
            got = (await store.read_raw(("s", f"v{j}"), T0, T0 + 10)).samples
            assert values(got) == [float(k * 10 + j) for k in range(2000)]
            assert [s.t_us for s in got] == [round((T0 + k * 0.001) * 1e6) for k in range(2000)]

    async def test_equal_timestamps_keep_their_order(self, store: HistoryStore) -> None:
        """Samples with one timestamp come back in the order they were recorded."""
        for k in range(50):
            store.record("s/v", T0, float(k))
        await store.flush()
        assert values((await store.read_raw("s/v", T0, T0 + 1)).samples) == [float(k)
                                                                             for k in range(50)]

    async def test_datetime_and_float_times_agree(self, store: HistoryStore) -> None:
        """A read by datetime (naive taken as UTC) equals a read by epoch seconds."""
        store.record("s/v", T0 + 0.5, 1.0)
        await store.flush()
        start = datetime.fromtimestamp(T0, UTC)
        by_dt = await store.read_raw("s/v", start.replace(tzinfo=None), T0 + 1)
        assert by_dt == await store.read_raw("s/v", T0, T0 + 1)
        assert by_dt.samples[0].time == datetime.fromtimestamp(T0 + 0.5, UTC)

    async def test_backward_read_reverses(self, store: HistoryStore) -> None:
        """start > end reads end < t <= start, newest first; forward=False reverses too."""
        for k in range(10):
            store.record("s/v", T0 + k, float(k))
        await store.flush()
        assert values((await store.read_raw("s/v", T0 + 7, T0 + 2)).samples) == [
            7.0, 6.0, 5.0, 4.0, 3.0]
        assert values((await store.read_raw("s/v", T0 + 2, T0 + 7, forward=False)).samples) == [
            6.0, 5.0, 4.0, 3.0, 2.0]
        assert values((await store.read_raw("s/v", None, T0 + 2)).samples) == [2.0, 1.0, 0.0]
        assert values((await store.read_raw("s/v", T0 + 8, None)).samples) == [8.0, 9.0]

    async def test_start_equal_end_reads_that_instant(self, store: HistoryStore) -> None:
        """start == end returns the samples stamped exactly then."""
        for k in range(3):
            store.record("s/v", T0 + k, float(k))
        await store.flush()
        assert values((await store.read_raw("s/v", T0 + 1, T0 + 1)).samples) == [1.0]

    async def test_bounds(self, store: HistoryStore) -> None:
        """return_bounds adds the samples just outside the range, or BadBoundNotFound."""
        for k in (1, 2, 3):
            store.record("s/v", T0 + k, float(k))
        await store.flush()
        inside = await store.read_raw("s/v", T0 + 1.5, T0 + 2.5, return_bounds=True)
        assert values(inside.samples) == [1.0, 2.0, 3.0]
        exact = await store.read_raw("s/v", T0 + 2, T0 + 3, return_bounds=True)
        assert values(exact.samples) == [2.0, 3.0]
        outside = (await store.read_raw("s/v", T0, T0 + 10, return_bounds=True)).samples
        assert values(outside) == [None, 1.0, 2.0, 3.0, None]
        assert outside[0].status == outside[-1].status == BAD_BOUND_NOT_FOUND
        assert (outside[0].t, outside[-1].t) == (T0, T0 + 10)
        backward = await store.read_raw("s/v", T0 + 2.5, T0 + 1.5, return_bounds=True)
        assert values(backward.samples) == [3.0, 2.0, 1.0]

    async def test_unknown_series_reads_empty(self, store: HistoryStore) -> None:
        """A series never recorded reads as no data (bounds as BadBoundNotFound)."""
        assert (await store.read_raw("s/none", T0, T0 + 1)).samples == []
        bounded = await store.read_raw("s/none", T0, T0 + 1, return_bounds=True)
        assert [s.status for s in bounded.samples] == [BAD_BOUND_NOT_FOUND] * 2

    @pytest.mark.parametrize("token", [
        pytest.param(b"junk", id="garbage"),
        pytest.param(None, id="other-series"),
    ])
    async def test_foreign_token_refused(self, store: HistoryStore, token: bytes | None) -> None:
        """A token from another read is refused with BadContinuationPointInvalid."""
        for k in range(5):
            store.record("s/a", T0 + k, float(k))
            store.record("s/b", T0 + k, float(k))
        await store.flush()
        if token is None:
            token = (await store.read_raw("s/a", T0, T0 + 9, max_values=2)).continuation
        with pytest.raises(InvalidContinuation) as info:
            await store.read_raw("s/b", T0, T0 + 9, max_values=2, continuation=token)
        assert info.value.status == "BadContinuationPointInvalid"

    async def test_read_needs_a_time(self, store: HistoryStore) -> None:
        """A read with neither start nor end is refused with a reason."""
        with pytest.raises(InvalidArgument, match="start time, an end time"):
            await store.read_raw("s/v", None, None)

    async def test_reads_see_flushed_data_only(self, store: HistoryStore) -> None:
        """Until a batch commits a recorded sample is not read (flush() makes it so)."""
        store.record("s/v", T0, 1.0)
        assert (await store.read_raw("s/v", T0, T0 + 1)).samples == []
        await store.flush()
        assert len((await store.read_raw("s/v", T0, T0 + 1)).samples) == 1


class TestEvents:
    async def test_events_read_back_paged(self, store: HistoryStore) -> None:
        """Session events come back in order, paged without repeats, per session."""
        for k in range(25):
            store.record_event("a", "tick", f"event {k}", severity=100 + k, t=T0 + k // 5)
        store.record_event("b", "started", "other session", t=T0)
        await store.flush()
        got, token = [], None
        while True:
            page = await store.read_events("a", T0, T0 + 100, max_values=4, continuation=token)
            got += page.events
            token = page.continuation
            if token is None:
                break
        assert [e.message for e in got] == [f"event {k}" for k in range(25)]
        assert got[3].severity == 103 and got[3].kind == "tick"
        backward = await store.read_events("a", T0 + 100, T0 - 1)
        assert [e.message for e in backward.events] == [f"event {k}" for k in range(24, -1, -1)]


class TestWriter:
    async def test_record_never_blocks(self, tmp_path: Path) -> None:
        """With the queue full, record() returns False at once and counts a drop."""
        store = await HistoryStore.open(tmp_path / "h.db", batch_size=10, max_queue=100)
        try:
            accepted = [store.record("s/v", T0 + k, float(k)) for k in range(100)]
            started = time.perf_counter()
            refused = [store.record("s/v", T0 + k, float(k)) for k in range(50)]
            elapsed = time.perf_counter() - started
            assert all(accepted) and not any(refused)
            assert elapsed < 0.05
            stats = store.statistics()
            assert (stats.queued, stats.accepted, stats.dropped) == (100, 100, 50)
        finally:
            await store.close()
        assert store.statistics().written == 100

    async def test_batches_by_size_and_interval(self, tmp_path: Path) -> None:
        """A full batch is written at once; a partial one after batch_interval."""
        store = await HistoryStore.open(tmp_path / "h.db", batch_size=100, batch_interval=0.3)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(store.run())
            for k in range(250):
                store.record("s/v", T0 + k, float(k))
            await asyncio.sleep(0.1)
            assert store.statistics().written == 200  # two full batches, without waiting
            await asyncio.sleep(0.4)
            stats = store.statistics()
            assert stats.written == 250 and stats.batches == 3 and stats.queued == 0
            await store.close()
        assert not store.statistics().running

    async def test_malformed_items_rejected_alone(self, store: HistoryStore) -> None:
        """A malformed sample is rejected and counted; the rest of its batch is written."""
        store.record("s/v", T0, 1.0)
        store.record("no-slash", T0, 1.0)
        store.record("s/v", float("nan"), 1.0)
        store.record("s/v", T0, [1, 2])
        store.record("s/v", T0, 1.0, source="plc")
        store.record("s/v", T0 + 1, 2.0)
        await store.flush()
        stats = store.statistics()
        assert (stats.written, stats.rejected) == (2, 4)
        assert "rejected" in stats.last_error
        assert values((await store.read_raw("s/v", T0, T0 + 9)).samples) == [1.0, 2.0]

    async def test_database_error_surfaces_and_writer_recovers(self, tmp_path: Path) -> None:
        """A failing batch reaches statistics and on_error, and is retried until it commits."""
        errors: list[BaseException] = []
        path = tmp_path / "h.db"
        store = await HistoryStore.open(path, batch_interval=0.05, on_error=errors.append)
        store.record("s/v", T0, 1.0)
        await store.flush()
        with sqlite3.connect(path) as other:  # someone breaks the file under us
            other.execute("ALTER TABLE samples RENAME TO samples_moved")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(store.run())
            store.record("s/v", T0 + 1, 2.0)
            for _ in range(100):
                await asyncio.sleep(0.02)
                if store.statistics().errors >= 2:
                    break
            stats = store.statistics()
            assert not stats.healthy and stats.errors >= 2 and stats.queued == 1
            assert "no such table: samples" in stats.last_error
            assert errors and isinstance(errors[0], sqlite3.OperationalError)
            with sqlite3.connect(path) as other:
                other.execute("ALTER TABLE samples_moved RENAME TO samples")
            for _ in range(100):
                await asyncio.sleep(0.02)
                if store.statistics().healthy:
                    break
            await store.close()
        assert store.statistics().written == 2
        reopened = await HistoryStore.open(path)
        try:
            assert values((await reopened.read_raw("s/v", T0, T0 + 9)).samples) == [1.0, 2.0]
        finally:
            await reopened.close()

    async def test_close_flushes_everything(self, tmp_path: Path) -> None:
        """close() commits what was queued, with or without the writer task running."""
        path = tmp_path / "h.db"
        store = await HistoryStore.open(path, batch_interval=10.0)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(store.run())
            await asyncio.sleep(0)
            assert store.statistics().running
            for k in range(30_000):
                store.record("s/v", T0 + k * 1e-3, float(k))
            await store.close()
        reopened = await HistoryStore.open(path)
        try:
            got = (await reopened.read_raw("s/v", T0, T0 + 100)).samples
            assert values(got) == [float(k) for k in range(30_000)]
        finally:
            await reopened.close()

    async def test_cancelled_writer_then_close_loses_nothing(self, tmp_path: Path) -> None:
        """Cancelling run() mid-batch and then closing still commits every sample."""
        path = tmp_path / "h.db"
        store = await HistoryStore.open(path, batch_size=1000)
        task = asyncio.create_task(store.run())
        for k in range(20_000):
            store.record("s/v", T0 + k * 1e-3, float(k))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.close()
        assert store.statistics().written == 20_000

    async def test_record_after_close_is_dropped(self, store: HistoryStore) -> None:
        """After close() record() refuses and counts the drop instead of raising."""
        await store.close()
        assert store.record("s/v", T0, 1.0) is False
        assert store.statistics().dropped == 1


class TestSchema:
    async def test_new_file_is_migrated_and_reopens(self, tmp_path: Path) -> None:
        """An empty file gets every migration once; a reopen applies none."""
        path = tmp_path / "h.db"
        store = await HistoryStore.open(path)
        assert (store.migrated_from, store.schema_version) == (0, schema_module.SCHEMA_VERSION)
        await store.close()
        store = await HistoryStore.open(path)
        assert store.migrated_from == schema_module.SCHEMA_VERSION
        await store.close()
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT version FROM schema_version").fetchall()
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")}
        assert rows == [(1,), (2,), (3,)] and mode == "wal"
        assert {"series", "samples", "events", "snapshots", "twins", "meta"} <= tables

    async def test_next_version_is_one_function(self, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """A file of today's version opened by a build with one more migration runs
        just that one."""
        path = tmp_path / "h.db"
        store = await HistoryStore.open(path)
        store.record("s/v", T0, 1.0)
        await store.close()

        async def v2(db: object) -> None:
            """Add a notes table."""
            await db.execute("CREATE TABLE notes (text TEXT)")  # type: ignore[attr-defined]

        now = schema_module.SCHEMA_VERSION
        monkeypatch.setitem(schema_module.MIGRATIONS, now + 1, v2)
        monkeypatch.setattr(schema_module, "SCHEMA_VERSION", now + 1)
        store = await HistoryStore.open(path)
        try:
            assert (store.migrated_from, store.schema_version) == (now, now + 1)
            assert values((await store.read_raw("s/v", T0, T0 + 1)).samples) == [1.0]
        finally:
            await store.close()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT version, description FROM schema_version "
                              "ORDER BY version").fetchall()[-1] == (now + 1,
                                                                     "Add a notes table.")

    async def test_v1_file_gains_simulated_time(self, tmp_path: Path) -> None:
        """A file written at schema v1 (no simulated time) opens migrated to v2: its
        samples read back unchanged with sim_t None, new samples carry their sim_t,
        and a read across both pages through them in order."""
        path = tmp_path / "v1.db"
        with sqlite3.connect(path) as db:  # the v1 schema as v1 builds wrote it
            for statement in V1_SCHEMA:
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (1, 0, 'Series, samples, ...')")
            db.execute("INSERT INTO series VALUES (1, 's', 'v', 'Double', 0)")
            db.executemany("INSERT INTO samples VALUES (1, ?, ?, ?, 0, 0)",
                           [(int((T0 + i) * 1e6), i, float(i)) for i in range(3)])
            db.execute("UPDATE meta SET value = 3 WHERE key = 'next_seq'")
        store = await HistoryStore.open(path)
        try:
            assert (store.migrated_from, store.schema_version) == (1, 3)
            store.record("s/v", T0 + 3, 3.0, sim_t=30.0)
            store.record("s/v", T0 + 4, 4.0, sim_t=40)
            await store.flush()
            samples = (await store.read_raw("s/v", T0, T0 + 10, max_values=2)).samples
            assert [(s.value, s.sim_t) for s in samples] == [(0.0, None), (1.0, None)]
            everything = (await store.read_raw("s/v", T0, T0 + 10)).samples
            assert [(s.value, s.sim_t) for s in everything] == [
                (0.0, None), (1.0, None), (2.0, None), (3.0, 30.0), (4.0, 40.0)]
        finally:
            await store.close()

    async def test_v2_file_gains_event_fields(self, tmp_path: Path) -> None:
        """A file written at schema v2 opens migrated in place to v3: its events read
        back unchanged with fields None, new events keep their fields (bytes, as
        given), and a read pages across both in order."""
        path = tmp_path / "v2.db"
        with sqlite3.connect(path) as db:  # the v2 schema as v2 builds wrote it
            for statement in V1_SCHEMA:
                db.execute(statement)
            db.execute("ALTER TABLE samples ADD COLUMN sim_t REAL")
            db.executemany("INSERT INTO schema_version VALUES (?, 0, ?)",
                           [(1, "Series, samples, ..."), (2, "Samples carry ...")])
            db.executemany("INSERT INTO events (session, t, kind, severity, message) "
                           "VALUES ('s', ?, ?, 600, ?)",
                           [(int((T0 + i) * 1e6), "alarm_active", f"old {i}") for i in range(2)])
        store = await HistoryStore.open(path)
        try:
            assert (store.migrated_from, store.schema_version) == (2, 3)
            blob = bytes(range(256)) * 3
            assert store.record_event("s", "alarm_inactive", "new", 600, T0 + 2, blob)
            store.record_event("s", "started", "plain", t=T0 + 3)
            store.record_event("s", "alarm_active", "bad", t=T0 + 4,
                               fields="not bytes")  # type: ignore[arg-type]
            await store.flush()
            first = await store.read_events("s", T0, T0 + 10, max_values=2)
            rest = await store.read_events("s", T0, T0 + 10, continuation=first.continuation)
            got = [(e.message, e.fields) for e in first.events + rest.events]
            assert got == [("old 0", None), ("old 1", None), ("new", blob), ("plain", None)]
            assert store.statistics().rejected == 1
        finally:
            await store.close()
        with sqlite3.connect(path) as db:
            assert [r[0] for r in db.execute("SELECT version FROM schema_version")] == [1, 2, 3]

    @pytest.mark.parametrize("sim_t", [
        pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf"),
        pytest.param("3", id="string"), pytest.param(True, id="bool")])
    async def test_bad_simulated_time_rejected(self, store: HistoryStore, sim_t: object
                                               ) -> None:
        """A sample whose simulated time is not finite seconds is rejected, counted,
        and the others of its batch are written."""
        store.record("s/v", T0, 1.0, sim_t=sim_t)  # type: ignore[arg-type]
        store.record("s/v", T0 + 1, 2.0, sim_t=0.5)
        await store.flush()
        assert store.statistics().rejected == 1
        samples = (await store.read_raw("s/v", T0, T0 + 10)).samples
        assert [(s.value, s.sim_t) for s in samples] == [(2.0, 0.5)]

    async def test_newer_schema_refused(self, tmp_path: Path) -> None:
        """A file from a newer twin-server is refused with the versions named."""
        path = tmp_path / "h.db"
        await (await HistoryStore.open(path)).close()
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO schema_version VALUES (99, 0, 'future')")
        with pytest.raises(StoreError, match="schema version 99, newer"):
            await HistoryStore.open(path)

    async def test_missing_directory_refused(self, tmp_path: Path) -> None:
        """A path in a directory that does not exist fails with the directory named."""
        with pytest.raises(StoreError, match="does not exist"):
            await HistoryStore.open(tmp_path / "nope" / "h.db")


class TestPersistence:
    async def test_snapshots_and_twins_survive_reopen(self, tmp_path: Path) -> None:
        """Snapshots (latest per session) and twins come back after a reopen."""
        path = tmp_path / "h.db"
        store = await HistoryStore.open(path)
        await store.save_snapshot("a", b"one")
        await store.save_snapshot("a", b"two")
        await store.save_snapshot("b", bytes(range(256)))
        await store.save_twin("t1", "[twin]\nname = 't1'\n")
        await store.save_twin("t2", "x")
        await store.delete_twin("t2")
        await store.close()
        store = await HistoryStore.open(path)
        try:
            assert await store.load_snapshots() == {"a": b"two", "b": bytes(range(256))}
            assert await store.load_twins() == {"t1": "[twin]\nname = 't1'\n"}
        finally:
            await store.close()

    async def test_delete_session(self, store: HistoryStore) -> None:
        """delete_session removes a session's samples, series, events and snapshot only."""
        for session in ("a", "b"):
            store.record(f"{session}/v", T0, 1.0)
            store.record_event(session, "started", "hi", t=T0)
            await store.save_snapshot(session, b"x")
        await store.flush()
        assert await store.delete_session("a") == 1
        assert [s.session for s in await store.list_series()] == ["b"]
        assert (await store.read_raw("a/v", T0, T0 + 1)).samples == []
        assert (await store.read_events("a", T0, T0 + 1)).events == []
        assert list(await store.load_snapshots()) == ["b"]
        store.record("a/v", T0 + 2, 3.0)  # recording again recreates the series
        await store.flush()
        assert values((await store.read_raw("a/v", T0, T0 + 9)).samples) == [3.0]


class TestCancellation:
    @pytest.mark.parametrize("yields", [pytest.param(n, id=f"cancel-after-{n}-yields")
                                        for n in range(6)])
    async def test_cancelled_write_leaves_no_open_transaction(
            self, store: HistoryStore, yields: int) -> None:
        """A snapshot save cancelled at any await (a shutdown stage) still commits or rolls
        back, so the writer's next batch and later saves work."""
        task = asyncio.create_task(store.save_snapshot("s", b"state" * 100))
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.record("s/Components.tank.Outputs.level", 1_700_000_000.0, 1.0)
        await store.flush()
        await store.save_snapshot("s", b"again")
        assert (await store.load_snapshots())["s"] == b"again"
