"""The history store: samples, session events, snapshots and run-time twins in SQLite.

Imports nothing of twin-server but ``errors``; callers speak plain types (series
named ``"<session>/<path>"``, times in seconds since the epoch or datetimes).
"""

from twin_server.history.export import export_csv
from twin_server.history.reads import AGGREGATES
from twin_server.history.records import (
    BAD_BOUND_NOT_FOUND,
    BAD_NO_DATA,
    SOURCES,
    Event,
    EventResult,
    InvalidContinuation,
    Processed,
    RawResult,
    RetentionPolicy,
    RetentionResult,
    Sample,
    SeriesInfo,
    StoreError,
    WriterStatistics,
    to_datetime,
)
from twin_server.history.schema import SCHEMA_VERSION
from twin_server.history.store import HistoryStore

__all__ = [
    "AGGREGATES",
    "BAD_BOUND_NOT_FOUND",
    "BAD_NO_DATA",
    "SCHEMA_VERSION",
    "SOURCES",
    "Event",
    "EventResult",
    "HistoryStore",
    "InvalidContinuation",
    "Processed",
    "RawResult",
    "RetentionPolicy",
    "RetentionResult",
    "Sample",
    "SeriesInfo",
    "StoreError",
    "WriterStatistics",
    "export_csv",
    "to_datetime",
]
