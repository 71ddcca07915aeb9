"""The batched writer: a bounded queue that the tick loop feeds and one task drains.

``record()`` is a plain ``def``: it puts a tuple on a bounded ``asyncio.Queue`` and
returns. It never waits: when the queue is full it drops the sample, counts it and
returns False, because a tick loop that waited on a disk would stop being a
real-time clock. The queue's bound (``max_queue``) is the memory the store may
hold while the disk is slow or failing.

``run()`` is the one writer task. It wakes every ``batch_interval`` seconds, or as
soon as ``batch_size`` items are waiting, takes at most ``batch_size`` items and
commits them with one ``executemany`` per table inside one transaction. Malformed
items are rejected one by one (counted, never retried); a failed transaction
keeps its batch and retries it a batch interval later, for as long as it takes,
while new items queue up behind it (and are dropped, counted, once the queue is
full). Every failure reaches ``statistics()`` and the ``on_error`` callback.

All writing (batches, retention, snapshots) holds one lock, so transactions on
the one write connection never interleave.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import aiosqlite
import structlog

from twin_server.errors import InvalidArgument, InvalidState, ValueRejected
from twin_server.history.records import (
    SOURCE_CODES,
    SeriesKey,
    StoreError,
    WriterStatistics,
    parse_series,
)

log = structlog.get_logger(__name__)

ErrorHook = Callable[[BaseException], None]

#: series kinds, for normalising values on the way in (decided once per series)
DOUBLE, INTEGER, BOOLEAN, STRING = range(4)
KIND_OF_DATATYPE = {"Double": DOUBLE, "Float": DOUBLE, "Int32": INTEGER, "Int64": INTEGER,
                    "Boolean": BOOLEAN, "String": STRING}
_INT64 = 2**63

_INSERT_SAMPLES = ("INSERT INTO samples (series_id, t, seq, value, status, source, sim_t) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_EVENTS = ("INSERT INTO events (session, t, kind, severity, message, fields) "
                  "VALUES (?, ?, ?, ?, ?, ?)")


class EventItem:
    """A session log event waiting in the queue (samples wait as plain tuples)."""

    __slots__ = ("fields", "kind", "message", "session", "severity", "t")

    def __init__(self, session: str, t: float, kind: str, severity: int, message: str,
                 fields: bytes | None = None) -> None:
        self.session = session
        self.t = t
        self.kind = kind
        self.severity = severity
        self.message = message
        self.fields = fields


def datatype_of(value: Any) -> str:
    """The datatype a series gets from its first value when nobody declared one."""
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, str):
        return "String"
    return "Double"


class Writer:
    """The queue, the batching loop and the series-id cache of one store."""

    def __init__(self, db: aiosqlite.Connection, lock: asyncio.Lock, *, next_seq: int,
                 batch_interval: float, batch_size: int, max_queue: int,
                 on_error: ErrorHook | None) -> None:
        if not (math.isfinite(batch_interval) and batch_interval > 0):
            raise InvalidArgument(f"history batch_interval must be > 0 s (got {batch_interval!r})")
        if batch_size < 1 or max_queue < batch_size:
            raise InvalidArgument(f"history batch_size must be >= 1 and max_queue >= batch_size "
                                f"(got batch_size={batch_size}, max_queue={max_queue})")
        self._db = db
        self.lock = lock
        self._seq = next_seq
        self.batch_interval = batch_interval
        self.batch_size = batch_size
        self.on_error = on_error
        # a plain deque with a bound checked by hand: record() is on the tick loop's
        # path, and asyncio.Queue's put_nowait/full/qsize cost several times more
        self._queue: collections.deque[Any] = collections.deque()
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._retry: list[Any] = []
        #: series key as callers give it (str or pair) -> (series id, kind)
        self.series: dict[SeriesKey, tuple[int, int]] = {}
        self._closing = False
        self._running = False
        self._accepted = 0
        self._handled = 0  # taken from the queue and written or rejected, in order
        self._written = 0
        self._dropped = 0
        self._rejected = 0
        self._batches = 0
        self._errors = 0
        self._healthy = True
        self._last_error = ""
        self._last_error_time: float | None = None
        self._last_flush_duration = 0.0
        self._last_flush_time: float | None = None
        self._heartbeat: float | None = None

    # -- the producer side (never blocks) ---------------------------------------------

    def record(self, series: SeriesKey, t: float, value: Any, status: int = 0,
               source: str = "tick", sim_t: float | None = None) -> bool:
        """Queue one sample; False (and counted as dropped) when the queue is full."""
        queue = self._queue
        if self._closing or len(queue) >= self._max_queue:
            self._dropped += 1
            return False
        queue.append((series, t, value, status, source, sim_t))
        self._accepted += 1
        if len(queue) >= self.batch_size:
            self._wake.set()
        return True

    def record_event(self, item: EventItem) -> bool:
        if self._closing or len(self._queue) >= self._max_queue:
            self._dropped += 1
            return False
        self._queue.append(item)
        self._accepted += 1
        return True

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            queued=len(self._queue) + len(self._retry), accepted=self._accepted,
            written=self._written, dropped=self._dropped, rejected=self._rejected,
            batches=self._batches, errors=self._errors, healthy=self._healthy,
            last_error=self._last_error, last_error_time=self._last_error_time,
            last_flush_duration=self._last_flush_duration,
            last_flush_time=self._last_flush_time, heartbeat=self._heartbeat,
            running=self._running)

    # -- the writer task ----------------------------------------------------------------

    async def run(self) -> None:
        """Drain the queue in batches until ``close()``; owned by the daemon's TaskGroup."""
        if self._running:
            raise InvalidState("the history writer is already running")
        if self._closing:  # close() came first (a TaskGroup may start us late): nothing to do
            return
        self._running = True
        self._stopped.clear()
        loop = asyncio.get_running_loop()
        try:
            next_flush = loop.time() + self.batch_interval
            failed = False
            while not self._closing:
                self._heartbeat = time.monotonic()
                if failed or (len(self._queue) < self.batch_size and not self._retry):
                    self._wake.clear()
                    timeout = next_flush - loop.time()
                    if timeout > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(timeout):
                                await self._wake.wait()
                    if self._closing:
                        break
                next_flush = loop.time() + self.batch_interval
                failed = not await self.write_batch()  # (shielded)
        finally:
            self._running = False
            self._heartbeat = time.monotonic()
            self._stopped.set()

    async def write_batch(self) -> bool:
        """Commit the retried batch, else up to batch_size queued items; False on failure.
        Shielded: a caller cancelled mid-batch (a shutdown stage's timeout) must not cut
        the transaction between BEGIN and COMMIT."""
        return await asyncio.shield(self._write_batch())

    async def _write_batch(self) -> bool:
        async with self.lock:
            if self._retry:
                items, self._retry = self._retry, []
            else:
                queue = self._queue
                count = min(len(queue), self.batch_size)
                items = [queue.popleft() for _ in range(count)]
            if not items:
                return True
            return await self._commit(items)

    async def flush(self) -> None:
        """Return once everything accepted before the call is committed (or rejected)."""
        target = self._accepted
        while self._handled < target:
            if not await self.write_batch():
                raise StoreError(f"history flush failed, {target - self._handled} samples "
                                 f"still queued: {self._last_error}")

    async def stop(self) -> None:
        """Refuse new items, let run() return, then write what is left."""
        self._closing = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()
        if self._handled < self._accepted:
            await self.flush()

    # -- one batch ----------------------------------------------------------------------

    async def _commit(self, items: list[Any]) -> bool:
        started = time.perf_counter()
        db = self._db
        seq = self._seq
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                new_series = await self._resolve(items)
                rows, events, rejected, seq = self._convert(items, new_series, seq)
                if rows:
                    await db.executemany(_INSERT_SAMPLES, rows)
                if events:
                    await db.executemany(_INSERT_EVENTS, events)
                await db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq,))
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
        except Exception as exc:  # the database refused: keep the batch, report, retry
            self._retry = items
            self.report_failure(exc, f"history batch of {len(items)} items failed")
            return False
        self._seq = seq
        self.series.update(new_series)
        self._handled += len(items)
        self._written += len(rows) + len(events)
        self._batches += 1
        self._healthy = True
        self._last_flush_duration = time.perf_counter() - started
        self._last_flush_time = time.time()
        if rejected:
            self._rejected += len(rejected)
            first, reason = rejected[0]
            self._last_error = (f"{len(rejected)} malformed history items rejected, "
                                f"first {first!r}: {reason}")
            self._last_error_time = time.time()
            log.warning("history_items_rejected", count=len(rejected), first=repr(first),
                        reason=reason)
        return True

    def report_failure(self, exc: BaseException, what: str) -> None:
        """Count a failure, surface it in statistics and on_error; log the first loudly."""
        first = self._healthy
        self._healthy = False
        self._errors += 1
        self._last_error = f"{what}: {type(exc).__name__}: {exc}"
        self._last_error_time = time.time()
        # the first failure loudly, repeats quietly until a batch commits again
        (log.error if first else log.debug)("history_write_failed", error=self._last_error,
                                            queued=len(self._queue))
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:  # a broken hook must not stop the writer
                log.exception("history_error_hook_failed")

    async def _resolve(self, items: list[Any]) -> dict[SeriesKey, tuple[int, int]]:
        """Series ids for keys this batch names for the first time (inside the batch's
        transaction, so a rolled-back batch leaves no stale ids in the cache)."""
        known = self.series
        first_values: dict[SeriesKey, Any] = {}
        for item in items:
            if type(item) is tuple:
                try:
                    if item[0] not in known and item[0] not in first_values:
                        first_values[item[0]] = item[2]
                except TypeError:  # an unhashable key: rejected in _convert
                    continue
        found: dict[SeriesKey, tuple[int, int]] = {}
        for key, value in first_values.items():
            try:
                session, path = parse_series(key)
            except ValueRejected:
                continue  # rejected item by item in _convert
            entry = known.get((session, path)) or found.get((session, path))
            if entry is None:
                entry = await self.ensure_series(session, path, datatype_of(value))
                found[(session, path)] = entry
            found[key] = entry
        return found

    async def ensure_series(self, session: str, path: str, datatype: str) -> tuple[int, int]:
        """The (id, kind) of a series, creating it with ``datatype`` if new (caller holds
        the lock and a transaction)."""
        await self._db.execute(
            "INSERT INTO series (session, path, datatype, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (session, path) DO NOTHING", (session, path, datatype, int(time.time())))
        async with self._db.execute("SELECT id, datatype FROM series WHERE session = ? "
                                    "AND path = ?", (session, path)) as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), KIND_OF_DATATYPE.get(row[1], DOUBLE)

    def _convert(self, items: list[Any], new_series: dict[SeriesKey, tuple[int, int]],
                 seq: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                    list[tuple[Any, str]], int]:
        """Queue items -> rows for executemany; malformed ones go to ``rejected``."""
        known = self.series
        sources = SOURCE_CODES
        rows: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        rejected: list[tuple[Any, str]] = []
        append = rows.append
        for item in items:
            if type(item) is not tuple:
                events.append(_event_row(item, rejected))
                continue
            series, t, value, status, source, sim_t = item
            try:
                entry = known.get(series) or new_series.get(series)
            except TypeError:
                entry = None
            if entry is None:
                rejected.append((item, f"bad series name {series!r}, "
                                       "expected '<session>/<path>' or (session, path)"))
                continue
            try:
                t_us = round(t * 1_000_000)
            except (TypeError, ValueError, OverflowError):
                rejected.append((item, f"bad time {t!r}, expected finite seconds since epoch"))
                continue
            if type(value) is not float or entry[1] != DOUBLE:
                value, problem = _normalise(value, entry[1])
                if problem:
                    rejected.append((item, problem))
                    continue
            if status and (type(status) is not int or not 0 <= status < 2**32):
                rejected.append((item, f"bad status {status!r}, expected a 32-bit StatusCode"))
                continue
            code = sources.get(source)
            if code is None:
                rejected.append((item, f"bad source {source!r}, expected one of "
                                       f"{', '.join(sources)}"))
                continue
            if sim_t is not None:
                if type(sim_t) is int:
                    sim_t = float(sim_t)
                if type(sim_t) is not float or not math.isfinite(sim_t):
                    rejected.append((item, f"bad simulated time {sim_t!r}, expected "
                                           "finite seconds or None"))
                    continue
            append((entry[0], t_us, seq, value, status, code, sim_t))
            seq += 1
        events = [e for e in events if e is not None]
        return rows, events, rejected, seq


def _normalise(value: Any, kind: int) -> tuple[Any, str]:
    """(stored value, '') or (None, why it cannot be stored in a series of ``kind``)."""
    if value is None:
        return None, ""
    if isinstance(value, bool):
        return int(value), ""
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            return (float(value), "") if kind == DOUBLE else (None, f"integer {value} "
                                                                    "exceeds 64 bits")
        return (float(value) if kind == DOUBLE else value), ""
    if isinstance(value, float):
        if kind == INTEGER and value.is_integer():
            return int(value), ""
        return value, ""
    if isinstance(value, str):
        return value, ""
    return None, f"a {type(value).__name__} cannot be recorded (a float, int, bool or str can)"


def _event_row(item: EventItem, rejected: list[tuple[Any, str]]) -> Any:
    fields = item.fields
    if fields is not None and not isinstance(fields, bytes):
        rejected.append((item, f"bad event fields {type(fields).__name__}, expected bytes "
                               "or None"))
        return None
    try:
        return (str(item.session), round(item.t * 1_000_000), str(item.kind),
                int(item.severity), str(item.message), fields)
    except (TypeError, ValueError, OverflowError) as exc:
        rejected.append((item, str(exc)))
        return None
