"""The database schema and its forward migrations.

``MIGRATIONS[n]`` takes a database at version n-1 to version n. Each runs inside
one ``BEGIN IMMEDIATE`` transaction together with the row that records it in
``schema_version``, so a crash mid-migration leaves the previous version, and two
processes opening one file never migrate it twice. Adding a version is
adding one ``async def _vN(db)`` and one dict entry.

Samples (``samples``) are a WITHOUT ROWID table clustered on
``(series_id, t, seq)``: the primary key *is* the time-ordered index, so a read of
one series over a time range is one B-tree range scan with no lookups, and rows
of one series sit together on disk. ``t`` is integer microseconds since the Unix
epoch (UTC), exact for comparisons and continuation tokens. ``seq`` is a global
counter assigned by the writer in the order samples were handed to ``record()``;
it makes the key unique and keeps equal timestamps in their recorded order. Its
next value lives in ``meta`` and is updated in the same transaction as each
batch. ``value`` has no declared type, so SQLite keeps each value's own storage
class (REAL, INTEGER, TEXT); ``series.datatype`` says how to read it back.
``source`` is the index into ``records.SOURCES`` (tick, client, hil).
``sim_t`` (v2) is the session's simulated time of the sample in seconds, NULL
where it is not known (samples recorded before v2, or by a caller that gave
none): a session at real-time factor 0 takes many simulated seconds per wall
second, and this is what rebuilds its history in simulated time.

An event's ``fields`` (v3) are the fields of the event as it was served, in the
encoding of whoever recorded it (the OPC UA layer's ``opcua/event_fields.py``: an
alarm transition's condition fields), opaque to the store; NULL for an event that
has none (every event recorded before v3, and the session's own log events).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiosqlite

from twin_server.history.records import StoreError

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]


async def _v1(db: aiosqlite.Connection) -> None:
    """Series, samples, events, snapshots, twins."""
    for statement in (
        """CREATE TABLE meta (
               key   TEXT PRIMARY KEY,
               value
           ) WITHOUT ROWID""",
        "INSERT INTO meta (key, value) VALUES ('next_seq', 0)",
        """CREATE TABLE series (
               id       INTEGER PRIMARY KEY,
               session  TEXT NOT NULL,
               path     TEXT NOT NULL,
               datatype TEXT NOT NULL,
               created  INTEGER NOT NULL,
               UNIQUE (session, path)
           )""",
        """CREATE TABLE samples (
               series_id INTEGER NOT NULL,
               t         INTEGER NOT NULL,
               seq       INTEGER NOT NULL,
               value,
               status    INTEGER NOT NULL DEFAULT 0,
               source    INTEGER NOT NULL DEFAULT 0,
               PRIMARY KEY (series_id, t, seq)
           ) WITHOUT ROWID""",
        """CREATE TABLE events (
               id       INTEGER PRIMARY KEY,
               session  TEXT NOT NULL,
               t        INTEGER NOT NULL,
               kind     TEXT NOT NULL,
               severity INTEGER NOT NULL,
               message  TEXT NOT NULL
           )""",
        "CREATE INDEX events_by_time ON events (session, t, id)",
        """CREATE TABLE snapshots (
               session TEXT PRIMARY KEY,
               t       INTEGER NOT NULL,
               blob    BLOB NOT NULL
           )""",
        """CREATE TABLE twins (
               name TEXT PRIMARY KEY,
               toml TEXT NOT NULL,
               t    INTEGER NOT NULL
           )""",
    ):
        await db.execute(statement)


async def _v2(db: aiosqlite.Connection) -> None:
    """Samples carry their simulated time (sim_t, seconds; NULL where unknown)."""
    await db.execute("ALTER TABLE samples ADD COLUMN sim_t REAL")


async def _v3(db: aiosqlite.Connection) -> None:
    """Events keep the fields they were served with (fields, opaque; NULL where none)."""
    await db.execute("ALTER TABLE events ADD COLUMN fields BLOB")


#: version -> the migration that produces it from the version before
MIGRATIONS: dict[int, Migration] = {
    1: _v1,
    2: _v2,
    3: _v3,
}
SCHEMA_VERSION = max(MIGRATIONS)


async def current_version(db: aiosqlite.Connection) -> int:
    """The schema version of ``db``; 0 for an empty file."""
    async with db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                          "AND name = 'schema_version'") as cur:
        if await cur.fetchone() is None:
            return 0
    async with db.execute("SELECT max(version) FROM schema_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def migrate(db: aiosqlite.Connection, path: str) -> tuple[int, int]:
    """Bring ``db`` (in autocommit mode) to SCHEMA_VERSION; return (from, to).

    Refuses a database written by a newer twin-server rather than guess at it.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                         "version INTEGER PRIMARY KEY, applied INTEGER NOT NULL, "
                         "description TEXT NOT NULL)")
        start = await current_version(db)
        if start > SCHEMA_VERSION:
            raise StoreError(
                f"history database {path} has schema version {start}, newer than this "
                f"twin-server knows ({SCHEMA_VERSION}); upgrade twin-server or point "
                f"history at another file")
        for version in range(start + 1, SCHEMA_VERSION + 1):
            step = MIGRATIONS[version]
            await step(db)
            await db.execute("INSERT INTO schema_version (version, applied, description) "
                             "VALUES (?, ?, ?)",
                             (version, int(time.time()), (step.__doc__ or "").strip()))
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    return start, SCHEMA_VERSION
