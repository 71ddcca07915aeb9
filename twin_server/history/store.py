"""HistoryStore: the SQLite file that holds samples, session events, snapshots and twins.

One store per daemon. Two aiosqlite connections to one WAL-mode file: the write
connection belongs to the writer (batches, retention, snapshots, twins, all under
one lock), the read connection serves reads, so a HistoryRead never queues behind
a batch being committed (WAL lets it read the last committed state meanwhile).
``synchronous=NORMAL``: in WAL mode a commit survives a killed process; only a
power cut or OS crash can lose the last commits, never corrupt the file.

Reads see what has been committed: a sample is readable at most one batch
interval after ``record()``, or at once after ``await flush()``.

Lifecycle, as the daemon wires it::

    store = await HistoryStore.open("history.db")
    async with asyncio.TaskGroup() as tg:
        tg.create_task(store.run())                   # the writer
        tg.create_task(store.run_retention(60.0))     # bulk retention
        ...
        await store.close()   # stops both loops, commits everything queued, closes the file
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from twin_server.errors import InvalidArgument
from twin_server.history import reads, retention, schema
from twin_server.history.records import (
    EventResult,
    Processed,
    RawResult,
    RetentionPolicy,
    RetentionResult,
    SeriesInfo,
    SeriesKey,
    StoreError,
    TimeArg,
    WriterStatistics,
    parse_series,
    to_us,
)
from twin_server.history.writer import (
    DOUBLE,
    KIND_OF_DATATYPE,
    ErrorHook,
    EventItem,
    Writer,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: batch intervals after its deletion before a session's history counts as settled
#: (its last samples and its ``deleted`` event committed)
RETIRE_MARGIN = 3

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA temp_store = MEMORY",
    # bigger pages of cache than the default 2 MB: reads of long ranges stay warm
    "PRAGMA cache_size = -32000",
)


class HistoryStore:
    """The history database. Open with ``await HistoryStore.open(path)``."""

    def __init__(self, path: str, db: aiosqlite.Connection, reader: aiosqlite.Connection,
                 writer: Writer, versions: tuple[int, int]) -> None:
        self.path = path
        self._db = db
        self._reader = reader
        self._writer = writer
        self._lock = writer.lock  # one lock for every transaction on the write connection
        self.migrated_from, self.schema_version = versions
        self._policies = retention.Policies()
        self._retention_wake = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, *, batch_interval: float = 1.0,
                   batch_size: int = 10_000, max_queue: int = 200_000,
                   on_error: ErrorHook | None = None) -> HistoryStore:
        """Open (creating and migrating as needed) the database at ``path``."""
        path = str(path)
        if path == ":memory:" or path.startswith("file:"):
            raise InvalidArgument("the history store needs a file path (two connections "
                                  f"share it; got {path!r})")
        if Path(path).parent and not Path(path).parent.is_dir():
            raise StoreError(f"cannot open history database {path}: the directory "
                             f"{Path(path).parent} does not exist")
        db: aiosqlite.Connection | None = None
        reader: aiosqlite.Connection | None = None
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
            for pragma in _PRAGMAS:
                await db.execute(pragma)
            versions = await schema.migrate(db, path)
            async with db.execute("SELECT value FROM meta WHERE key = 'next_seq'") as cur:
                row = await cur.fetchone()
            reader = await aiosqlite.connect(path, isolation_level=None)
            for pragma in (*_PRAGMAS[1:], "PRAGMA query_only = ON"):
                await reader.execute(pragma)
        except BaseException as exc:
            for conn in (reader, db):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if isinstance(exc, StoreError | InvalidArgument) or not isinstance(exc, Exception):
                raise
            raise StoreError(f"cannot open history database {path}: "
                             f"{type(exc).__name__}: {exc}") from exc
        writer = Writer(db, asyncio.Lock(), next_seq=int(row[0]) if row else 0,
                        batch_interval=batch_interval, batch_size=batch_size,
                        max_queue=max_queue, on_error=on_error)
        store = cls(path, db, reader, writer, versions)
        log.info("history_opened", path=path, schema_version=versions[1],
                 migrated_from=versions[0])
        return store

    async def close(self) -> None:
        """Stop the loops, commit everything queued, close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._retention_wake.set()
        try:
            await self._writer.stop()
        finally:
            for conn in (self._reader, self._db):
                with contextlib.suppress(Exception):
                    await conn.close()
            log.info("history_closed", path=self.path, **_counts(self._writer.statistics()))

    async def __aenter__(self) -> HistoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- recording (plain defs: they never wait) -------------------------------------

    def record(self, series: SeriesKey, t: float, value: Any, status: int = 0,
               source: str = "tick", sim_t: float | None = None) -> bool:
        """Queue a sample of ``series`` at ``t`` (seconds since the epoch, UTC), at
        simulated time ``sim_t`` (seconds; None: not known).

        Returns at once: True if queued, False if dropped because the queue is full
        (counted in ``statistics().dropped``). ``source`` is tick, client or hil.
        """
        return self._writer.record(series, t, value, status, source, sim_t)

    def record_event(self, session: str, kind: str, message: str, severity: int = 100,
                     t: float | None = None, fields: bytes | None = None) -> bool:
        """Queue a session log event (``t`` defaults to now), with the ``fields`` it was
        served with (opaque bytes, read back as ``Event.fields``); same rules as
        ``record``."""
        item = EventItem(session, time.time() if t is None else t, kind, severity, message,
                         fields)
        return self._writer.record_event(item)

    def statistics(self) -> WriterStatistics:
        return self._writer.statistics()

    async def run(self) -> None:
        """The writer loop; returns after ``close()``."""
        await self._writer.run()

    async def flush(self) -> None:
        """Commit everything recorded before this call; raises StoreError if it cannot."""
        await self._writer.flush()

    # -- series ------------------------------------------------------------------------

    async def declare_series(self, series: SeriesKey, datatype: str) -> int:
        """Create ``series`` with an explicit datatype (else the first value decides)."""
        if datatype not in KIND_OF_DATATYPE:
            raise InvalidArgument(f"unknown history datatype {datatype!r}; one of "
                                  f"{', '.join(KIND_OF_DATATYPE)}")
        session, path = parse_series(series)

        async def work() -> tuple[int, int]:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                entry = await self._writer.ensure_series(session, path, datatype)
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            return entry

        entry = await self._locked(work)
        self._writer.series[(session, path)] = entry
        return entry[0]

    async def list_series(self, session: str | None = None) -> list[SeriesInfo]:
        sql = "SELECT id, session, path, datatype FROM series"
        args: tuple[Any, ...] = ()
        if session is not None:
            sql += " WHERE session = ?"
            args = (session,)
        async with self._reader.execute(sql + " ORDER BY session, path", args) as cur:
            return [SeriesInfo(*row) for row in await cur.fetchall()]

    async def _lookup(self, series: SeriesKey) -> tuple[int | None, int]:
        """(series id or None if never recorded, value kind)."""
        key = parse_series(series)
        entry = self._writer.series.get(key)
        if entry is not None:
            return entry
        async with self._reader.execute("SELECT id, datatype FROM series WHERE session = ? "
                                        "AND path = ?", key) as cur:
            row = await cur.fetchone()
        if row is None:
            return None, DOUBLE
        return int(row[0]), KIND_OF_DATATYPE.get(row[1], DOUBLE)

    async def delete_session(self, session: str) -> int:
        """Delete every sample, series, event and the snapshot of ``session``; rows deleted."""

        async def work() -> int:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = await self._db.execute(
                    "DELETE FROM samples WHERE series_id IN "
                    "(SELECT id FROM series WHERE session = ?)", (session,))
                deleted = cur.rowcount
                for sql in ("DELETE FROM series WHERE session = ?",
                            "DELETE FROM events WHERE session = ?",
                            "DELETE FROM snapshots WHERE session = ?"):
                    await self._db.execute(sql, (session,))
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            return deleted

        deleted = await self._locked(work)
        self._forget_cached(session)
        self._policies.forget(session)
        return deleted

    def _forget_cached(self, session: str) -> None:
        """Drop the writer's cached series ids of ``session``."""
        for key in [k for k in self._writer.series
                    if (k[0] if isinstance(k, tuple) else k.partition("/")[0]) == session]:
            del self._writer.series[key]

    # -- reads ----------------------------------------------------------------------------

    async def read_raw(self, series: SeriesKey, start: TimeArg, end: TimeArg, *,
                       max_values: int = 0, forward: bool = True,
                       continuation: bytes | None = None,
                       return_bounds: bool = False) -> RawResult:
        """One page of raw samples (see ``reads`` for the Part 11 semantics)."""
        series_id, kind = await self._lookup(series)
        return await reads.read_raw(self._reader, series_id, kind, to_us(start), to_us(end),
                                    max_values=max_values, forward=forward,
                                    continuation=continuation, return_bounds=return_bounds)

    async def read_processed(self, series: SeriesKey, start: TimeArg, end: TimeArg,
                             interval: float, aggregate: str) -> list[Processed]:
        """Average, Minimum, Maximum or Count per ``interval`` seconds (0: one interval)."""
        series_id, kind = await self._lookup(series)
        first, last, step = to_us(start), to_us(end), to_us(interval)
        if first is None or last is None or step is None:
            raise InvalidArgument("a processed read needs both a start and an end time")
        return await reads.read_processed(self._reader, series_id, kind, first, last, step,
                                          aggregate)

    async def read_events(self, session: str, start: TimeArg, end: TimeArg,
                          max_values: int = 0, continuation: bytes | None = None, *,
                          forward: bool = True) -> EventResult:
        """One page of a session's log events, oldest first (newest first if start > end)."""
        return await reads.read_events(self._reader, session, to_us(start), to_us(end),
                                       max_values, continuation, forward)

    # -- retention --------------------------------------------------------------------------

    def set_retention(self, session: str, policy: RetentionPolicy | None, *,
                      path: str | None = None) -> None:
        """Keep ``session``'s series (or the one at ``path``) within ``policy``.

        A session's policy applies to each of its series unless that series has its
        own; ``max_age`` of a session's policy also bounds its events. None removes it.
        """
        self._policies.set(session, path, policy)

    def retire(self, session: str) -> None:
        """``session`` was deleted: its history stays, under its retention policy, and
        once retention has removed all of it (samples and events), its series rows,
        cached ids and policy go too. Recording the name again ends the retirement."""
        self._policies.retire(session)

    async def enforce_retention(self, now: float | None = None) -> RetentionResult:
        """Delete, in bulk, what the policies no longer keep; then forget the deleted
        sessions with nothing left."""
        async def work() -> RetentionResult:
            result = await retention.enforce(self._db, self._policies,
                                             time.time() if now is None else now)
            # a session deleted within the last batches may still have samples queued
            settled = time.monotonic() - RETIRE_MARGIN * self._writer.batch_interval
            retired = sorted(s for s, at in self._policies.retired.items() if at <= settled)
            if not retired:
                return result
            gone = await retention.drop_emptied(self._db, retired)
            forgotten = 0
            for session in retired:
                if session not in self._policies.retired:
                    continue  # recorded again meanwhile: its cache and policy are live
                self._forget_cached(session)  # (a cache only: the rows are looked up again)
                if session in gone or not self._policies.has(session):
                    # nothing left, or nothing a policy will ever remove
                    self._policies.forget(session)
                    forgotten += session in gone
            return dataclasses.replace(result, sessions_forgotten=forgotten)

        return await self._locked(work)

    async def run_retention(self, every: float = 60.0) -> None:
        """Enforce retention every ``every`` seconds until ``close()``; errors are reported
        like the writer's, and the next round tries again."""
        while not self._closed:
            try:
                result = await self.enforce_retention()
            except Exception as exc:
                self._writer.report_failure(exc, "history retention failed")
            else:
                if result.samples_deleted or result.events_deleted:
                    log.info("history_retention", samples=result.samples_deleted,
                             events=result.events_deleted,
                             sessions_forgotten=result.sessions_forgotten,
                             seconds=round(result.duration, 3))
            self._retention_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._retention_wake.wait()

    # -- snapshots and twins ------------------------------------------------------------

    async def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        async def work() -> None:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    await self._db.execute(sql, args)
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

        await self._locked(work)

    async def _locked(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work``, one transaction, under the write lock and to its end even when
        the caller is cancelled (a shutdown stage): a transaction cut off between
        BEGIN and COMMIT would leave the connection inside it, and every later BEGIN
        (the writer's last batch included) would fail."""
        async def whole() -> T:
            async with self._lock:
                return await work()

        return await asyncio.shield(whole())

    async def save_snapshot(self, session: str, blob: bytes) -> None:
        """Store ``session``'s latest snapshot (replacing the one before), committed at once."""
        await self._write([("INSERT INTO snapshots (session, t, blob) VALUES (?, ?, ?) "
                            "ON CONFLICT (session) DO UPDATE SET t = excluded.t, "
                            "blob = excluded.blob", (session, _now_us(), bytes(blob)))])

    async def delete_snapshot(self, session: str) -> None:
        await self._write([("DELETE FROM snapshots WHERE session = ?", (session,))])

    async def load_snapshots(self) -> dict[str, bytes]:
        async with self._reader.execute("SELECT session, blob FROM snapshots "
                                        "ORDER BY session") as cur:
            return {session: bytes(blob) for session, blob in await cur.fetchall()}

    async def save_twin(self, name: str, text: str) -> None:
        """Store a twin defined at run time (its TOML), replacing one of that name."""
        await self._write([("INSERT INTO twins (name, toml, t) VALUES (?, ?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET toml = excluded.toml, "
                            "t = excluded.t", (name, text, _now_us()))])

    async def delete_twin(self, name: str) -> None:
        await self._write([("DELETE FROM twins WHERE name = ?", (name,))])

    async def load_twins(self) -> dict[str, str]:
        async with self._reader.execute("SELECT name, toml FROM twins ORDER BY name") as cur:
            return {name: text for name, text in await cur.fetchall()}

    async def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" or SQLite's list of problems."""
        async with self._reader.execute("PRAGMA integrity_check") as cur:
            rows = await cur.fetchall()
        return "\n".join(str(r[0]) for r in rows)


def _now_us() -> int:
    return round(time.time() * 1_000_000)


def _counts(stats: WriterStatistics) -> dict[str, int]:
    return {"written": stats.written, "dropped": stats.dropped, "rejected": stats.rejected,
            "errors": stats.errors}
