"""Retention: how long and how much history to keep, enforced in bulk.

Policies are set per session (applying to each of its series) or per series
(overriding its session's). ``enforce`` runs in one transaction and issues one
DELETE per series and kind of limit, through ``executemany``: by age
``DELETE ... WHERE series_id = ? AND t < ?`` (a range scan at the head of the
series' key range), by size a delete of everything older than the N-th newest
key. Nothing is deleted per insert: a periodic task calls ``enforce``, so each
round deletes only what aged out since the last one.

Deleted pages go to SQLite's free list and are reused by new samples, so a store
under retention stops growing at its high-water mark rather than shrinking.

A deleted session's history stays, under its policy, until retention has removed
all of it (``Policies.retire``); then ``drop_emptied`` deletes its emptied series
and the store forgets its policy, so that sessions created and deleted for months
under ever new names leave neither rows nor policies behind.
"""

from __future__ import annotations

import time

import aiosqlite

from twin_server.history.records import RetentionPolicy, RetentionResult


class Policies:
    """Session and series policies, as the daemon configured them."""

    def __init__(self) -> None:
        self.sessions: dict[str, RetentionPolicy] = {}
        self.series: dict[tuple[str, str], RetentionPolicy] = {}
        #: deleted sessions whose history may still hold something: when they were
        #: deleted (time.monotonic())
        self.retired: dict[str, float] = {}

    def set(self, session: str, path: str | None, policy: RetentionPolicy | None) -> None:
        self.retired.pop(session, None)  # (recorded again under its name)
        if path:
            if policy is None:
                self.series.pop((session, path), None)
            else:
                self.series[(session, path)] = policy
        elif policy is None:
            self.sessions.pop(session, None)
        else:
            self.sessions[session] = policy

    def forget(self, session: str) -> None:
        self.sessions.pop(session, None)
        self.retired.pop(session, None)
        for key in [k for k in self.series if k[0] == session]:
            del self.series[key]

    def retire(self, session: str) -> None:
        """``session`` was deleted; its policies stay until ``forget``."""
        self.retired[session] = time.monotonic()

    def has(self, session: str) -> bool:
        """Whether ``session`` or one of its series has a policy."""
        return session in self.sessions or any(k[0] == session for k in self.series)

    def of(self, session: str, path: str) -> RetentionPolicy | None:
        return self.series.get((session, path)) or self.sessions.get(session)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.series)


_BY_AGE = "DELETE FROM samples WHERE series_id = ? AND t < ?"
_BY_SIZE = ("DELETE FROM samples WHERE series_id = ? AND (t, seq) < "
            "(SELECT t, seq FROM samples WHERE series_id = ? "
            "ORDER BY t DESC, seq DESC LIMIT 1 OFFSET ?)")
_EVENTS_BY_AGE = "DELETE FROM events WHERE session = ? AND t < ?"


_EMPTIED_SERIES = ("DELETE FROM series WHERE session = ? AND NOT EXISTS "
                   "(SELECT 1 FROM samples WHERE samples.series_id = series.id)")
_ANYTHING_LEFT = ("SELECT EXISTS (SELECT 1 FROM series WHERE session = ?) "
                  "OR EXISTS (SELECT 1 FROM events WHERE session = ?)")


async def drop_emptied(db: aiosqlite.Connection, sessions: list[str]) -> list[str]:
    """Delete the series of the deleted ``sessions`` that hold no sample any more;
    return those of them with nothing left, no series and no event (caller holds the
    write lock)."""
    gone = []
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.executemany(_EMPTIED_SERIES, [(s,) for s in sessions])
        for session in sessions:
            async with db.execute(_ANYTHING_LEFT, (session, session)) as cur:
                row = await cur.fetchone()
            if row is not None and not row[0]:
                gone.append(session)
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return gone


async def enforce(db: aiosqlite.Connection, policies: Policies, now: float) -> RetentionResult:
    """Apply ``policies`` at wall time ``now`` (caller holds the write lock)."""
    started = time.perf_counter()
    if not policies:
        return RetentionResult(0, 0, 0.0)
    now_us = round(now * 1_000_000)
    async with db.execute("SELECT id, session, path FROM series") as cur:
        series = list(await cur.fetchall())
    by_age: list[tuple[int, int]] = []
    by_size: list[tuple[int, int, int]] = []
    for series_id, session, path in series:
        policy = policies.of(session, path)
        if policy is None:
            continue
        if policy.max_age is not None:
            by_age.append((series_id, now_us - round(policy.max_age * 1_000_000)))
        if policy.max_samples is not None:
            by_size.append((series_id, series_id, policy.max_samples - 1))
    events = [(session, now_us - round(p.max_age * 1_000_000))
              for session, p in policies.sessions.items() if p.max_age is not None]
    await db.execute("BEGIN IMMEDIATE")
    try:
        before = db.total_changes
        if by_age:
            await db.executemany(_BY_AGE, by_age)
        if by_size:
            await db.executemany(_BY_SIZE, by_size)
        samples = db.total_changes - before
        if events:
            await db.executemany(_EVENTS_BY_AGE, events)
        events_deleted = db.total_changes - before - samples
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return RetentionResult(samples, events_deleted, time.perf_counter() - started)
