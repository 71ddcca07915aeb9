"""The plain values the history store takes and gives: samples, events, pages, policies.

Everything here is a plain type (str, int, float, tuples, frozen dataclasses), so
the store's callers need nothing of the store's internals and the store needs
nothing of theirs (DESIGN.md: history imports nothing of ours but errors).

Time: the public API takes seconds since the Unix epoch (UTC) as a float, or an
aware ``datetime``; the store keeps integer microseconds (``t_us``). Integers
compare exactly (continuation tokens and equal timestamps rely on it), a float
second near 2024 still resolves 0.25 us so the round trip float -> us -> float
is exact, and microseconds are both Python's ``datetime`` resolution and finer
than any tick a twin takes. OPC UA's 100 ns DateTime ticks are rounded to the
microsecond on the way in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from twin_server.errors import InvalidArgument, TwinServerError

Value = float | int | bool | str

#: where a sample came from; stored as the index into this tuple
SOURCES = ("tick", "client", "hil")
SOURCE_CODES = {name: code for code, name in enumerate(SOURCES)}

#: OPC UA status codes the store itself produces (numeric, to stay free of asyncua)
GOOD = 0
BAD_NO_DATA = 0x809B0000
BAD_BOUND_NOT_FOUND = 0x80D70000
#: the two top bits of a StatusCode: 00 Good, 01 Uncertain, 10 Bad
SEVERITY_MASK = 0xC0000000

#: a series is named ``"<session>/<path>"`` or given as ``(session, path)``
SeriesKey = str | tuple[str, str]
TimeArg = float | int | datetime | None

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: microsecond limits of the key space (about +-146,000 years around 1970)
T_MIN = -(2**62)
T_MAX = 2**62


class StoreError(TwinServerError):
    """The history database could not be opened, migrated or written.

    (Lives here because ``errors.py`` is another module's; it belongs in the tree there.)
    """

    status = "BadInternalError"


class InvalidContinuation(InvalidArgument):
    """A continuation token that this store did not issue for this request."""

    status = "BadContinuationPointInvalid"


def parse_series(series: SeriesKey) -> tuple[str, str]:
    """``"tank/Components.tank.Outputs.level"`` or a pair -> ``(session, path)``."""
    if isinstance(series, tuple):
        if len(series) == 2 and all(isinstance(p, str) and p for p in series):
            return series
    elif isinstance(series, str):
        session, sep, path = series.partition("/")
        if sep and session and path:
            return session, path
    raise InvalidArgument(f"a history series is named '<session>/<path>' or given as a "
                          f"(session, path) pair of non-empty strings (got {series!r})")


def to_us(t: TimeArg) -> int | None:
    """Seconds since the epoch (float/int) or a datetime -> integer microseconds."""
    if t is None:
        return None
    if isinstance(t, datetime):
        if t.tzinfo is None:  # OPC UA DateTimes are UTC; asyncua hands out naive ones
            t = t.replace(tzinfo=UTC)
        delta = t - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise InvalidArgument(f"a history time is seconds since the Unix epoch or a datetime "
                              f"(got {t!r})")
    return round(t * 1_000_000)


def to_datetime(t_us: int) -> datetime:
    """Integer microseconds -> an aware UTC datetime (exact)."""
    return _EPOCH + timedelta(microseconds=t_us)


class Sample(NamedTuple):
    """One recorded value. A missing bound has value None and BadBoundNotFound.
    ``sim_t``: the session's simulated time of the sample in seconds, None where
    not known (recorded before schema v2, or a bound)."""

    t_us: int
    value: Value | None
    status: int
    source: str
    sim_t: float | None = None

    @property
    def t(self) -> float:
        """Seconds since the Unix epoch."""
        return self.t_us / 1_000_000

    @property
    def time(self) -> datetime:
        return to_datetime(self.t_us)


class RawResult(NamedTuple):
    """One page of a raw read; ``continuation`` is None when the read is complete."""

    samples: list[Sample]
    continuation: bytes | None


class Processed(NamedTuple):
    """One interval of a processed read: its start, the aggregate, status, Good count."""

    t_us: int
    value: float | int | None
    status: int
    count: int  # type: ignore[assignment]  # shadows tuple.count: the aggregate's own word


class Event(NamedTuple):
    """One session log event; ``fields``: the event as it was served, if its recorder
    kept it (``HistoryStore.record_event``), else None."""

    t_us: int
    kind: str
    severity: int
    message: str
    fields: bytes | None = None

    @property
    def time(self) -> datetime:
        return to_datetime(self.t_us)


class EventResult(NamedTuple):
    events: list[Event]
    continuation: bytes | None


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    id: int
    session: str
    path: str
    datatype: str  # "Double", "Int32", "Int64", "Boolean", "String"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How much of a series to keep: samples younger than ``max_age`` seconds and at
    most ``max_samples`` of the newest; None means no limit of that kind."""

    max_age: float | None = None
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.max_age is not None and not (math.isfinite(self.max_age) and self.max_age > 0):
            raise InvalidArgument(f"retention max_age must be a finite number of seconds > 0 "
                                  f"(got {self.max_age!r})")
        if self.max_samples is not None and (isinstance(self.max_samples, bool)
                                             or not isinstance(self.max_samples, int)
                                             or self.max_samples < 1):
            raise InvalidArgument(f"retention max_samples must be an integer >= 1 "
                                  f"(got {self.max_samples!r})")


@dataclass(frozen=True, slots=True)
class RetentionResult:
    samples_deleted: int
    events_deleted: int
    duration: float
    #: deleted sessions whose history is all gone now, and with it their policies
    sessions_forgotten: int = 0


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    """A snapshot of the writer, for diagnostics nodes and the systemd watchdog.

    ``accepted`` counts what record()/record_event() took, ``dropped`` what they refused
    because the queue was full (or the store was closed), ``rejected`` what the writer
    refused as malformed, ``written`` what is committed. ``healthy`` is False from a
    failed batch until the next one commits; ``heartbeat`` (time.monotonic()) moves
    on every pass of the writer loop, busy or idle.
    """

    queued: int
    accepted: int
    written: int
    dropped: int
    rejected: int
    batches: int
    errors: int
    healthy: bool
    last_error: str
    last_error_time: float | None
    last_flush_duration: float
    last_flush_time: float | None
    heartbeat: float | None
    running: bool
