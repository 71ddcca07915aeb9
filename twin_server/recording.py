"""Recording sessions into the history store: the edge between the engine and history.

The history package knows nothing of sessions (it takes ``"<session>/<path>"``
series and plain values); the engine knows nothing of history. This module
knows both: a ``Recorder`` reads one session's frames (``runtime.FrameSource``:
the session in this process or a worker) at its record rate and queues them in
the store, records client and HIL writes with their source, and stores the
session's log events its owner hands it (``event``). ``Recording`` holds the
recorders of every served session and paces them all from one task, as the
publisher does for OPC UA.

Decisions:

* **What**: by default every output and state of every component (inputs repeat
  the outputs they are connected to, parameters change only by writes, which
  are events already). ``variables`` names others: ``"component.variable"`` or
  a glob (``"tank.*"``, ``"*.level"``) matched against every variable of any
  kind. A pattern that matches nothing is an error at start, not silence.
* **When**: at the record rate (default: the session's publish rate), and only
  when the session's ``version`` moved since the last record. In ``change`` mode
  (the default, as historians do) a value is stored only when it differs from
  the last one stored for it, so a slow tank costs nothing while it rests; the
  first record after the recorder starts stores every value, so a read's
  bounding value always exists. ``every`` mode stores every recorded variable
  at each record in which the session moved (a cyclic trend).
* **Timestamps** are wall-clock seconds (UTC) of the record, as OPC UA clients
  expect of SourceTimestamps; simulated time is the session's own affair (a
  session at real-time factor 0 takes many ticks between two records).
* **Writes** (``written``): a client's or HIL's write to a recorded variable is
  stored at once with its source (``client`` or ``hil``), and counts as the
  last value stored, so the next record does not store it again as a tick. A
  client's write to an input or state that is not recorded becomes a
  ``value_written`` log event instead, so the audit trail stays whole (a
  parameter write is logged by the session itself as ``parameter_changed``).
* **Events**: the owner hands every event to ``event`` as it happens
  (``record_event`` never waits): the daemon stores every event the OPC UA server
  emits (the session's own, ``created``, alarms).
* **Drops**: the store never makes a tick wait; when its queue is full it drops
  and counts. The recorder counts what it handed over and what was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from twin_server.config.schema import HistoryConfig, SessionHistoryConfig
from twin_server.engine.session import VarKey
from twin_server.errors import InvalidArgument, NotFound
from twin_server.history import HistoryStore, RetentionPolicy
from twin_server.models.base import DataType, Kind, Value
from twin_server.runtime.host import FrameSource, SessionLayout

log = structlog.get_logger(__name__)

#: the store's datatype name for each of our data types
HISTORY_DATATYPES: dict[DataType, str] = {
    DataType.DOUBLE: "Double",
    DataType.INT32: "Int32",
    DataType.BOOLEAN: "Boolean",
    DataType.STRING: "String",
}
MODES = ("change", "every")
SOURCES = ("client", "hil")
#: the severity of a ``value_written`` event (a person changed the process)
SEVERITY_WRITE = 200
#: a session recorded at a publish rate above this is recorded at this rate
MAX_RECORD_RATE = 1000.0

Now = Callable[[], float]


def series_of(session: str, key: VarKey) -> str:
    """The history series of a session variable: ``"<session>/<VarKey.path>"``, which
    is also the NodeId ``Sessions.<session>.<VarKey.path>`` with its first dot a slash."""
    return f"{session}/{key.path}"


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """What one session records, with the server-wide defaults filled in."""

    enabled: bool = True
    #: patterns "component.variable" (globs); None = every output and state
    variables: tuple[str, ...] | None = None
    #: records per wall second; None = the session's publish rate
    record_rate: float | None = None
    mode: str = "change"
    retention: RetentionPolicy | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgument(f"history mode must be one of {', '.join(MODES)} "
                                  f"(got {self.mode!r})")
        if self.record_rate is not None and not (
                math.isfinite(self.record_rate) and 0 < self.record_rate <= MAX_RECORD_RATE):
            raise InvalidArgument(f"history record_rate must be within (0, {MAX_RECORD_RATE:g}] "
                                  f"records per second (got {self.record_rate!r})")


def recording_settings(server: HistoryConfig,
                       session: SessionHistoryConfig | None = None) -> RecordingSettings:
    """A session's settings: its own ``[sessions.<name>.history]`` values where given,
    else the server-wide ``[history]`` ones (client sessions take those alone)."""
    own = session or SessionHistoryConfig()

    def pick(name: str) -> object:
        value = getattr(own, name)
        return getattr(server, name) if value is None else value

    max_age, max_samples = pick("max_age"), pick("max_samples")
    retention = (None if max_age is None and max_samples is None
                 else RetentionPolicy(max_age=max_age, max_samples=max_samples))  # type: ignore[arg-type]
    variables = pick("variables")
    rate = pick("record_rate")
    return RecordingSettings(
        enabled=bool(pick("enabled")) and server.enabled,
        variables=None if variables is None else tuple(variables),  # type: ignore[arg-type]
        record_rate=None if rate is None else float(rate),  # type: ignore[arg-type]
        mode=str(pick("mode")),
        retention=retention)


def select_variables(session: SessionLayout, patterns: tuple[str, ...] | None) -> list[VarKey]:
    """The variables ``patterns`` name, in the session's order (None: every output and
    state). InvalidArgument naming the patterns that match nothing."""
    variables = session.variables
    if patterns is None:
        return [key for key, _ in variables if key.kind in (Kind.OUTPUT, Kind.STATE)]
    unmatched: list[str] = []
    names = [(f"{key.component}.{key.name}", key) for key, _ in variables]
    taken: set[VarKey] = set()
    for pattern in patterns:
        found = [key for name, key in names if fnmatch.fnmatchcase(name, pattern)]
        if not found:
            unmatched.append(pattern)
        for key in found:
            if key not in taken:
                taken.add(key)
    if unmatched:
        known = ", ".join(sorted({name for name, _ in names})) or "none"
        raise InvalidArgument(
            f"session {session.name!r}: history.variables "
            f"{', '.join(repr(p) for p in unmatched)} "
            f"{'matches' if len(unmatched) == 1 else 'match'} no variable of twin "
            f"{session.twin!r}; write 'component.variable' or a pattern such as "
            f"'tank.*' (its variables: {known})")
    return [key for _, key in names if key in taken]


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """An immutable snapshot of one recorder's work since it was created."""

    session: str
    variables: int  # recorded variables
    records: int  # record passes that found the session moved
    samples: int  # samples handed to the store (ticks and writes)
    writes: int  # of which client and HIL writes
    events: int  # log events handed to the store
    dropped: int  # samples and events the store refused (its queue was full)


class Recorder:
    """Records one session into ``store``: ``record_once`` at the record rate (``run``),
    ``written`` from the write paths, and ``event`` the session's events as they happen."""

    def __init__(self, store: HistoryStore, session: FrameSource,
                 settings: RecordingSettings | None = None, *, now: Now = time.time) -> None:
        self.store = store
        self.session = session
        self.layout = layout = session.layout
        self.settings = settings = settings or RecordingSettings()
        self._now = now
        self.keys: list[VarKey] = select_variables(layout, settings.variables)
        name = session.name
        self._series: dict[VarKey, str] = {key: series_of(name, key) for key in self.keys}
        index = {key: i for i, (key, _) in enumerate(layout.variables)}
        #: (frame index, key, series) of every recorded variable
        self._slots = [(index[key], key, self._series[key]) for key in self.keys]
        self._last: dict[VarKey, Value] = {}
        self._version: int | None = None
        self._every = settings.mode == "every"
        self._records = self._samples = self._writes = self._events = self._dropped = 0
        self._closed = False
        store.set_retention(name, settings.retention)

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def rate(self) -> float:
        """Records per wall second."""
        rate = self.settings.record_rate or self.layout.publish_rate
        return min(max(rate, 1e-3), MAX_RECORD_RATE)

    @property
    def paths(self) -> list[str]:
        """The ``VarKey.path`` of every recorded variable (their NodeIds are
        ``Sessions.<session>.<path>``: mark those Historizing)."""
        return [key.path for key in self.keys]

    async def declare(self) -> None:
        """Create every recorded series with its data type (else the first value
        stored decides, and an Int32 that starts at 0 is as good as any)."""
        datatypes = {key: var.datatype for key, var in self.layout.variables}
        for key in self.keys:
            await self.store.declare_series(self._series[key], HISTORY_DATATYPES[datatypes[key]])

    # -- recording (plain defs: the store's queue never waits) --------------------------

    def record_once(self, now: float | None = None) -> int:
        """Queue what changed since the last record (everything in ``every`` mode, and
        on the first record); return how many samples were queued. Does nothing
        when the session's version has not moved, or once it is closed."""
        if self._closed:
            return 0
        try:
            frame = self.session.frame()
        except NotFound:  # closed (deleted) meanwhile
            self._closed = True
            return 0
        if frame.version == self._version:
            return 0
        self._version = frame.version
        values = frame.values
        t = self._now() if now is None else now
        record = self.store.record
        last = self._last
        every = self._every
        queued = refused = 0
        for i, key, series in self._slots:
            value = values[i]
            if every or key not in last or last[key] != value:
                if record(series, t, value):
                    last[key] = value
                    queued += 1
                else:
                    refused += 1  # not remembered: tried again at the next record
        self._records += 1
        self._samples += queued
        self._dropped += refused
        return queued

    def written(self, key: VarKey, value: Value, source: str = "client") -> None:
        """A client (``"client"``) or HIL binding (``"hil"``) wrote ``value`` (as the
        session stored it) to ``key``: store it now with its source."""
        if self._closed:
            return
        if source not in SOURCES:
            raise InvalidArgument(f"a write's source is one of {', '.join(SOURCES)} "
                                  f"(got {source!r})")
        series = self._series.get(key)
        if series is not None:
            if self.store.record(series, self._now(), value, 0, source):
                self._last[key] = value
                self._samples += 1
                self._writes += 1
            else:
                self._dropped += 1
        elif source == "client" and key.kind in (Kind.INPUT, Kind.STATE):
            what = "forced" if key.kind is Kind.INPUT else "set"
            self.event("value_written",
                       f"{key.kind} {key.name!r} of component {key.component!r} {what} to "
                       f"{value!r} by a client", SEVERITY_WRITE)

    def event(self, kind: str, message: str, severity: int = 100) -> None:
        """Store a log event of this session that did not come from the session itself
        (the daemon's ``created``, the server's alarms)."""
        if self.store.record_event(self.session.name, kind, message, severity, self._now()):
            self._events += 1
        else:
            self._dropped += 1

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Record at the record rate until cancelled or the session is closed; a last
        record on the way out. (``Recording.run`` paces many recorders in one task.)"""
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        try:
            while not self._closed:
                self.record_once()
                period = 1.0 / self.rate
                next_due += period
                now = loop.time()
                if next_due <= now:  # fell behind: skip the missed records
                    next_due = now + period
                await asyncio.sleep(next_due - now)
        finally:
            self.final_record()

    def final_record(self) -> None:
        """Record what changed since the last record (at stop, before the flush)."""
        try:
            self.record_once()
        except Exception:  # the way out must not fail on a session's trouble
            log.exception("history_final_record_failed", session=self.name)

    def close(self) -> None:
        """Stop recording the session (after a last record); idempotent."""
        if not self._closed:
            self.final_record()
        self._closed = True

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(self.session.name, len(self.keys), self._records,
                                  self._samples, self._writes, self._events, self._dropped)


class Recording:
    """The recorders of every served session, paced by one task (``run``).

    The daemon adds a recorder when it serves a session and removes it when the
    session goes; the write paths call ``written`` and the OPC UA layer asks
    ``paths`` which nodes to mark Historizing.
    """

    def __init__(self, store: HistoryStore, config: HistoryConfig | None = None, *,
                 now: Now = time.time) -> None:
        self.store = store
        self.config = config or HistoryConfig()
        self._now = now
        self._recorders: dict[str, Recorder] = {}
        self._due: dict[str, float] = {}
        self._wake = asyncio.Event()

    @property
    def recorders(self) -> Mapping[str, Recorder]:
        return self._recorders

    def get(self, session: str) -> Recorder | None:
        return self._recorders.get(session)

    async def add(self, session: FrameSource,
                  history: SessionHistoryConfig | None = None) -> Recorder | None:
        """Start recording ``session`` with its ``[sessions.<name>.history]`` table (None:
        the server-wide defaults, as for client sessions). Returns None if its history
        is disabled. InvalidArgument (nothing started) for variables that match nothing."""
        settings = recording_settings(self.config, history)
        if session.name in self._recorders:
            raise InvalidArgument(f"session {session.name!r} is recorded already")
        if not settings.enabled:
            return None
        recorder = Recorder(self.store, session, settings, now=self._now)
        try:
            await recorder.declare()
        except BaseException:
            recorder.close()
            raise
        self._recorders[session.name] = recorder
        self._due[session.name] = 0.0
        self._wake.set()
        log.info("history_recording", session=session.name, variables=len(recorder.keys),
                 rate=recorder.rate, mode=settings.mode)
        return recorder

    def remove(self, session: str) -> None:
        """Stop recording ``session`` (a last record first); its history stays stored,
        under its retention policy, until retention has removed it all."""
        recorder = self._recorders.pop(session, None)
        self._due.pop(session, None)
        if recorder is not None:
            recorder.close()
            self.store.retire(session)

    def paths(self, session: str) -> list[str]:
        """The recorded ``VarKey.path``s of ``session`` ([] if it is not recorded)."""
        recorder = self._recorders.get(session)
        return recorder.paths if recorder is not None else []

    def written(self, session: str, key: VarKey, value: Value, source: str = "client") -> None:
        """The write paths' hook: a client or HIL binding wrote ``value`` to ``key``."""
        recorder = self._recorders.get(session)
        if recorder is not None:
            recorder.written(key, value, source)

    def event(self, session: str, kind: str, message: str, severity: int = 100) -> None:
        """Store a log event of ``session`` that the session itself did not emit."""
        recorder = self._recorders.get(session)
        if recorder is not None:
            recorder.event(kind, message, severity)

    def record_all(self) -> None:
        """One record of every session now (at stop, before the store's flush)."""
        for recorder in list(self._recorders.values()):
            recorder.final_record()

    async def run(self) -> None:
        """Record every session at its own rate until cancelled; a last record of each
        on the way out. A session that falls behind skips missed records."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = loop.time()
                for name, recorder in list(self._recorders.items()):
                    due = self._due.get(name)
                    if due is None or due > now:
                        continue
                    try:
                        recorder.record_once()
                    except Exception:
                        log.exception("history_record_failed", session=name)
                    period = 1.0 / recorder.rate
                    due += period
                    if due <= now:  # first record, or fell behind: skip the missed ones
                        due = now + period
                    self._due[name] = due
                next_due = min(self._due.values(), default=now + 1.0)
                self._wake.clear()
                delay = next_due - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        finally:
            self.record_all()

    def close(self) -> None:
        for name in list(self._recorders):
            self.remove(name)

    def statistics(self) -> list[RecorderStatistics]:
        return [r.statistics() for r in self._recorders.values()]


def recorded_nodes(session: str, paths: Iterable[str]) -> list[str]:
    """The NodeId strings (``Sessions.<session>.<path>``) of recorded variables."""
    return [f"Sessions.{session}.{path}" for path in paths]
