"""Raw, processed and event reads, with continuation tokens that never repeat or drop.

Raw reads follow OPC UA Part 11 (ReadRawModifiedDetails): ``start < end`` reads
forward over ``start <= t < end``; ``start > end`` reads backward over
``end < t <= start``; a missing ``end`` reads forward from ``start``, a missing
``start`` backward from ``end`` (``t <= end``); ``start == end`` reads the values
stamped exactly then. ``forward=False`` with ``start < end`` returns the same
set as the forward read, newest first. With ``return_bounds`` the read also
returns the bounding values: the sample at or before ``start`` (at or after, read
backward) and the one at or after ``end`` (at or before, read backward); a bound
that does not exist comes back as a sample with value None and status
BadBoundNotFound stamped at that time.

Every sample has a unique key ``(t, seq)``. Internally a read is a walk along
keys: a cursor (exclusive) and a limit (inclusive), both keys. A page returns up
to ``max_values`` samples after the cursor; its continuation token is the key of
the last sample returned, so the next page starts right after it, however many
samples share its timestamp. Missing bounds are virtual samples whose keys sit
just outside every real key in range (seq -1 or 2**62, real seqs lying between).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import aiosqlite

from twin_server.errors import InvalidArgument
from twin_server.history.records import (
    BAD_BOUND_NOT_FOUND,
    BAD_NO_DATA,
    GOOD,
    SOURCES,
    T_MAX,
    T_MIN,
    Event,
    EventResult,
    InvalidContinuation,
    Processed,
    RawResult,
    Sample,
)
from twin_server.history.writer import BOOLEAN, DOUBLE, INTEGER, STRING

FORWARD, BACKWARD = 0, 1
#: placeholder seqs for missing bounds, and cursor seqs beyond them; real seqs lie in [0, 2**62)
PH_LO, PH_HI = -1, 2**62
CUR_LO, CUR_HI = -2, 2**62 + 1

_TOKEN = struct.Struct("<BBBqqq")  # version, what, direction, scope, t, seq
_TOKEN_VERSION = 1
_SAMPLES, _EVENTS = 1, 2

AGGREGATES = ("Average", "Minimum", "Maximum", "Count")
_GOOD_ONLY = "(status & 3221225472) = 0"  # the two severity bits clear: Good
#: a processed read returns at most this many intervals (a typo in the interval
#: must not allocate gigabytes)
MAX_INTERVALS = 1_000_000

Key = tuple[int, int]


def plan(start: int | None, end: int | None, forward: bool) -> tuple[int, int, int | None]:
    """(direction, first t included, last t excluded or None) per Part 11."""
    if start is None and end is None:
        raise InvalidArgument("a history read needs a start time, an end time or both "
                              "(got neither)")
    if start is None:
        assert end is not None
        return BACKWARD, end, None
    if end is None:
        return (FORWARD if forward else BACKWARD), start, None
    if start == end:
        return (FORWARD, start, start + 1) if forward else (BACKWARD, start, start - 1)
    if start < end:
        return (FORWARD, start, end) if forward else (BACKWARD, end - 1, start - 1)
    return BACKWARD, start, end


def encode_token(what: int, direction: int, scope: int, key: Key) -> bytes:
    return _TOKEN.pack(_TOKEN_VERSION, what, direction, scope, key[0], key[1])


def decode_token(token: bytes, what: int, direction: int, scope: int) -> Key:
    try:
        version, t_what, t_dir, t_scope, t, seq = _TOKEN.unpack(token)
    except (struct.error, TypeError):
        raise InvalidContinuation(f"not a history continuation token ({len(token)} bytes, "
                                  f"expected {_TOKEN.size})") from None
    if (version, t_what, t_dir, t_scope) != (_TOKEN_VERSION, what, direction, scope):
        raise InvalidContinuation("this continuation token belongs to another read (another "
                                  "series, direction or kind of read); repeat the first read")
    return t, seq


async def _one_key(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...]) -> Key | None:
    async with db.execute(sql, args) as cur:
        row = await cur.fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


_AT_OR_BEFORE = ("SELECT t, seq FROM samples WHERE series_id = ? AND t <= ? "
                 "ORDER BY t DESC, seq DESC LIMIT 1")
_AT_OR_AFTER = "SELECT t, seq FROM samples WHERE series_id = ? AND t >= ? ORDER BY t, seq LIMIT 1"
_PAGE = {
    FORWARD: "SELECT t, seq, value, status, source, sim_t FROM samples WHERE series_id = ? "
             "AND (t, seq) > (?, ?) AND (t, seq) <= (?, ?) ORDER BY t, seq LIMIT ?",
    BACKWARD: "SELECT t, seq, value, status, source, sim_t FROM samples WHERE series_id = ? "
              "AND (t, seq) < (?, ?) AND (t, seq) >= (?, ?) ORDER BY t DESC, seq DESC LIMIT ?",
}


async def read_raw(db: aiosqlite.Connection, series_id: int | None, kind: int,
                   start: int | None, end: int | None, *, max_values: int, forward: bool,
                   continuation: bytes | None, return_bounds: bool) -> RawResult:
    """One page of a raw read of one series (``series_id`` None: a series never recorded)."""
    if isinstance(max_values, bool) or not isinstance(max_values, int) or max_values < 0:
        raise InvalidArgument(f"max_values must be an integer >= 0, 0 meaning all "
                              f"(got {max_values!r})")
    direction, first, last = plan(start, end, forward)
    sid = -1 if series_id is None else series_id
    fwd = direction == FORWARD
    cursor: Key = (first, CUR_LO if fwd else CUR_HI)
    start_ph: Key | None = None
    end_ph: Key | None = None
    if return_bounds:
        found = await _one_key(db, _AT_OR_BEFORE if fwd else _AT_OR_AFTER, (sid, first))
        if found is None:
            start_ph = (first, PH_LO if fwd else PH_HI)
        elif found[0] != first:
            cursor = (found[0], found[1] - 1 if fwd else found[1] + 1)
    if last is None:
        limit: Key = (T_MAX, CUR_HI) if fwd else (T_MIN, CUR_LO)
    else:
        limit = (last - 1, CUR_HI) if fwd else (last + 1, CUR_LO)
        if return_bounds:
            found = await _one_key(db, _AT_OR_AFTER if fwd else _AT_OR_BEFORE, (sid, last))
            if found is None:
                end_ph = (last, PH_LO if fwd else PH_HI)
            else:
                limit = found
    if continuation is not None:
        cursor = decode_token(continuation, _SAMPLES, direction, sid)

    head: list[Sample] = []
    if start_ph is not None and (start_ph > cursor if fwd else start_ph < cursor):
        head.append(Sample(first, None, BAD_BOUND_NOT_FOUND, ""))
    fetch = max_values + 1 - len(head) if max_values else -1
    rows: list[Any] = []
    if series_id is not None and fetch != 0:
        async with db.execute(_PAGE[direction], (sid, *cursor, *limit, fetch)) as cur:
            rows = list(await cur.fetchall())
    truncated = fetch != -1 and len(rows) >= fetch
    samples = head + _samples(rows, kind)
    if end_ph is not None and not truncated:
        assert last is not None
        samples.append(Sample(last, None, BAD_BOUND_NOT_FOUND, ""))
    if not max_values or len(samples) <= max_values:
        return RawResult(samples, None)
    # more remain: the token is the key of the last sample this page returns
    index = max_values - 1 - len(head)
    key = start_ph if index < 0 else (rows[index][0], rows[index][1])
    assert key is not None
    return RawResult(samples[:max_values], encode_token(_SAMPLES, direction, sid, key))


def _samples(rows: list[Any], kind: int) -> list[Sample]:
    sources = SOURCES
    if kind == BOOLEAN:
        return [Sample(t, None if v is None else bool(v), st, sources[src], sim)
                for t, _seq, v, st, src, sim in rows]
    return [Sample(t, v, st, sources[src], sim) for t, _seq, v, st, src, sim in rows]


async def read_processed(db: aiosqlite.Connection, series_id: int | None, kind: int,
                         start: int, end: int, interval: int, aggregate: str) -> list[Processed]:
    """Part 13 simple aggregates over Good samples, one per interval from ``start``.

    Intervals are ``[start + k*interval, start + (k+1)*interval)`` read forward, and
    ``(start - (k+1)*interval, start - k*interval]`` read backward (``start > end``),
    each stamped with the time it starts from; the last one is cut at ``end``.
    ``interval`` 0 makes one interval of the whole range. An interval with no Good
    sample gives BadNoData (Count gives 0, Good). Bucketing is one GROUP BY in SQL.
    """
    if aggregate not in AGGREGATES:
        raise InvalidArgument(f"unknown aggregate {aggregate!r}; this store computes "
                              f"{', '.join(AGGREGATES)}")
    if kind == STRING and aggregate != "Count":
        raise InvalidArgument(f"{aggregate} needs a numeric series; this one holds strings "
                              "(Count works on any series)")
    if start == end:
        raise InvalidArgument("a processed read needs start != end (got the same time twice)")
    if interval < 0:
        raise InvalidArgument(f"the processing interval must be >= 0 (got {interval} us)")
    span = abs(end - start)
    interval = interval or span
    count = -(-span // interval)
    if count > MAX_INTERVALS:
        raise InvalidArgument(f"{count} intervals asked for, at most {MAX_INTERVALS} per read; "
                              "use a longer interval or a shorter range")
    fwd = start < end
    bucket = "(t - ?) / ?" if fwd else "(? - t) / ?"
    where = "t >= ? AND t < ?" if fwd else "t <= ? AND t > ?"
    found: dict[int, tuple[int, Any, Any, Any]] = {}
    if series_id is not None:
        sql = (f"SELECT {bucket} AS b, count(value), avg(value), min(value), max(value) "
               f"FROM samples WHERE series_id = ? AND {where} AND {_GOOD_ONLY} "
               f"AND value IS NOT NULL GROUP BY b")
        async with db.execute(sql, (start, interval, series_id, start, end)) as cur:
            async for b, n, avg, lo, hi in cur:
                found[int(b)] = (int(n), avg, lo, hi)
    step = interval if fwd else -interval
    out: list[Processed] = []
    for k in range(count):
        n, avg, lo, hi = found.get(k, (0, None, None, None))
        t = start + k * step
        if aggregate == "Count":
            out.append(Processed(t, n, GOOD, n))
        elif n == 0:
            out.append(Processed(t, None, BAD_NO_DATA, 0))
        else:
            value = {"Average": avg, "Minimum": lo, "Maximum": hi}[aggregate]
            if aggregate != "Average" and kind == DOUBLE:
                value = float(value)
            elif aggregate != "Average" and kind in (INTEGER, BOOLEAN):
                value = int(value)
            out.append(Processed(t, value, GOOD, n))
    return out


def session_scope(session: str) -> int:
    return zlib.crc32(session.encode())


_EVENT_PAGE = {
    FORWARD: "SELECT t, id, kind, severity, message, fields FROM events WHERE session = ? "
             "AND (t, id) > (?, ?) AND t < ? ORDER BY t, id LIMIT ?",
    BACKWARD: "SELECT t, id, kind, severity, message, fields FROM events WHERE session = ? "
              "AND (t, id) < (?, ?) AND t > ? ORDER BY t DESC, id DESC LIMIT ?",
}


async def read_events(db: aiosqlite.Connection, session: str, start: int | None,
                      end: int | None, max_values: int, continuation: bytes | None,
                      forward: bool = True) -> EventResult:
    """One page of a session's log events, same time semantics as a raw read (no bounds)."""
    if isinstance(max_values, bool) or not isinstance(max_values, int) or max_values < 0:
        raise InvalidArgument(f"max_values must be an integer >= 0, 0 meaning all "
                              f"(got {max_values!r})")
    direction, first, last = plan(start, end, forward)
    fwd = direction == FORWARD
    scope = session_scope(session)
    cursor: Key = (first, -1) if fwd else (first, 2**63 - 1)
    if continuation is not None:
        cursor = decode_token(continuation, _EVENTS, direction, scope)
    stop = (T_MAX if fwd else T_MIN) if last is None else last
    fetch = max_values + 1 if max_values else -1
    async with db.execute(_EVENT_PAGE[direction], (session, *cursor, stop, fetch)) as cur:
        rows = list(await cur.fetchall())
    events = [Event(t, kind, severity, message, fields)
              for t, _id, kind, severity, message, fields in rows]
    if not max_values or len(events) <= max_values:
        return EventResult(events, None)
    last_row = rows[max_values - 1]
    return EventResult(events[:max_values],
                       encode_token(_EVENTS, direction, scope, (last_row[0], last_row[1])))
