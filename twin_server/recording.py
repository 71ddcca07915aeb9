"""Recording sessions into the history store: the edge between the engine and history.

The history package knows nothing of sessions (it takes ``"<session>/<path>"``
series and plain values); the engine knows nothing of history. This module
knows both: a ``Recorder`` takes one session's frames (``runtime.Frame``: the
session in this process or a worker) and queues them in the store, records client
and HIL writes with their source, and stores the session's log events its owner
hands it (``event``). ``Recording`` holds the recorders of every served session
and is a sink of the sessions' pacers (``runtime.sinks``): each period it gets the
frame the OPC UA publisher and the HIL mirror get, with the same stamp, so that
the history holds the values subscribers received, at their SourceTimestamps.

Decisions:

* **What**: by default every output and state of every component (inputs repeat
  the outputs they are connected to, parameters change only by writes, which
  are events already). ``variables`` names others: ``"component.variable"`` or
  a glob (``"tank.*"``, ``"*.level"``) matched against every variable of any
  kind. A pattern that matches nothing is an error at start, not silence.
* **When**: at the record rate (default: the session's publish rate), taking the
  pacer's frames, and only when the session's ``version`` or a value's quality
  (``Frame.quality``: a HIL input's link status) moved since the last record.
  A sample is stored with its value's StatusCode, and a Bad value as null, as
  the address space serves it, so the history agrees with what a subscriber
  saw. A record rate below the publish rate takes a subset of the frames (one
  when a record period has passed since the last taken, within half a publish
  period), with their stamps: what is recorded was also published, at the same
  SourceTimestamp. A record rate above the publish rate records every frame (the
  publish rate is the rate at which the session is read; it is logged at start as
  ``history_record_rate_capped``). In ``change`` mode
  (the default, as historians do) a value is stored only when it differs from
  the last one stored for it, so a slow tank costs nothing while it rests; the
  first record after the recorder starts stores every value, so a read's
  bounding value always exists. ``every`` mode stores every recorded variable
  at each record in which the session moved (a cyclic trend).
* **Timestamps** are the frame's stamp: the wall-clock time (UTC) at which the
  pacer read it, the SourceTimestamp of the same values published.
* **Simulated time** is stored beside each sample (the store's ``sim_t``: the
  frame's ``sim_time``), because wall time alone cannot rebuild a session run
  faster than real time (at real-time factor 0 it takes many ticks between two
  records). For OPC UA clients it is also a series of its own, ``SimTime``
  (NodeId ``Sessions.<session>.SimTime``, marked Historizing): one sample in
  every record that stores anything, stamped like the values it came with, so a
  HistoryRead of a variable and of ``SimTime`` over the same range pairs each
  value with its simulated time by timestamp. Why a node and not simulated
  SourceTimestamps: Part 11 clients (UaExpert's trend, a SCADA's historian
  link) read UtcTime and expect it to rise; simulated time starts again at 0 on
  every Reset and jumps on Restore, and a faked date would no longer line up
  with alarms, events and the PLC's own history. A write (``written``) gets the
  simulated time of the latest frame the recorder was handed.
* **Writes** (``written``): a client's or HIL's write to a recorded variable is
  stored at once with its source (``client`` or ``hil``), and counts as the
  last value stored, so the next record does not store it again as a tick. A
  client's write to an input or state that is not recorded becomes a
  ``value_written`` log event instead, so the audit trail stays whole (a
  parameter write is logged by the session itself as ``parameter_changed``).
* **Events**: the owner hands every event to ``event`` as it happens
  (``record_event`` never waits): the daemon stores every event the OPC UA server
  emits (the session's own, ``created``, alarms). An alarm transition comes with the
  fields of the condition event that went out, and its time, so that a history
  read answers the same event (``opcua/event_fields.py``).
* **Drops**: the store never makes a tick wait; when its queue is full it drops
  and counts. The recorder counts what it handed over and what was refused.
"""

from __future__ import annotations

import asyncio
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
from twin_server.runtime.host import GOOD_ONLY, Frame, FrameSource, SessionLayout
from twin_server.runtime.sinks import Stamp

log = structlog.get_logger(__name__)

#: the store's datatype name for each of our data types
HISTORY_DATATYPES: dict[DataType, str] = {
    DataType.DOUBLE: "Double",
    DataType.INT32: "Int32",
    DataType.BOOLEAN: "Boolean",
    DataType.STRING: "String",
}
MODES = ("change", "every")
#: the severity bit of a Bad StatusCode
_BAD = 0x80000000
SOURCES = ("client", "hil")
#: the severity of a ``value_written`` event (a person changed the process)
SEVERITY_WRITE = 200
#: a session recorded at a publish rate above this is recorded at this rate
MAX_RECORD_RATE = 1000.0
#: the series of a session's simulated time (the path below ``Sessions.<session>``)
SIM_TIME = "SimTime"
#: sessions of at least this many variables get their recorder built in a thread
LARGE = 5_000

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
    """Records one session into ``store``: the frames its pacer delivers (``deliver``,
    through ``Recording``) at the record rate, ``written`` from the write paths, and
    ``event`` the session's events as they happen."""

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
        self._sim_series = f"{name}/{SIM_TIME}"
        #: the simulated time of the latest frame handed over (a write's)
        self._sim_time: float | None = None
        #: the last value stored of each key, with its status (0: Good)
        self._last: dict[VarKey, tuple[Value | None, int]] = {}
        self._paths = [key.path for key in self.keys] + [SIM_TIME]
        self._version: int | None = None
        self._quality: Mapping[int, int] = GOOD_ONLY
        #: when the next frame is to be taken (decimation: a record rate below the
        #: publish rate), seconds since the epoch
        self._due: float | None = None
        self._every = settings.mode == "every"
        self._records = self._samples = self._writes = self._events = self._dropped = 0
        self._closed = False
        store.set_retention(name, settings.retention)

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def rate(self) -> float:
        """Records per wall second: the record rate, at most the publish rate (the
        rate the pacer delivers frames at)."""
        publish = min(max(self.layout.publish_rate, 1e-3), MAX_RECORD_RATE)
        return min(self.settings.record_rate or publish, publish)

    @property
    def capped(self) -> bool:
        """Whether the configured record rate is above the publish rate."""
        rate = self.settings.record_rate
        return rate is not None and rate > self.rate

    @property
    def paths(self) -> list[str]:
        """The ``VarKey.path`` of every recorded variable, and ``SimTime`` (their
        NodeIds are ``Sessions.<session>.<path>``: mark those Historizing)."""
        return self._paths

    async def declare(self) -> None:
        """Create every recorded series with its data type (else the first value
        stored decides, and an Int32 that starts at 0 is as good as any)."""
        variables = self.layout.variables
        for i, (index, _key, series) in enumerate(self._slots, 1):
            await self.store.declare_series(series,
                                            HISTORY_DATATYPES[variables[index][1].datatype])
            if not i % 1024:
                await asyncio.sleep(0)  # (20,000 series: the event loop serves meanwhile)
        await self.store.declare_series(self._sim_series, "Double")

    # -- recording (plain defs: the store's queue never waits) --------------------------

    def deliver(self, frame: Frame, stamp: Stamp) -> int:
        """The pacer's frame, read at ``stamp``: recorded (``record``) if a record is
        due (every frame when the record rate is the publish rate); how many samples
        were queued."""
        if self._closed:
            return 0
        self._sim_time = frame.sim_time
        t = stamp.seconds
        rate = self.rate
        if rate < self.layout.publish_rate:
            period, due = 1.0 / rate, self._due
            slack = 0.5 / self.layout.publish_rate
            if due is not None and due - 2 * period < t < due - slack:
                return 0  # not due (a wall clock set back more than that: taken)
            self._due = (due + period if due is not None and abs(t - due) <= period
                         else t + period)
        return self.record(frame, t)

    def record_once(self, now: float | None = None) -> int:
        """Read the session's frame and record it at ``now`` (default: the time now),
        whatever the record rate: offline use and tests, where no pacer runs."""
        if self._closed:
            return 0
        try:
            frame = self.session.frame()
        except NotFound:  # closed (deleted) meanwhile
            self._closed = True
            return 0
        return self.record(frame, self._now() if now is None else now)

    def record(self, frame: Frame, t: float) -> int:
        """Queue what changed in ``frame`` since the last record (everything in
        ``every`` mode, and on the first record) at ``t`` (seconds since the epoch);
        return how many samples were queued. Does nothing when the session's version
        has not moved, or once the recorder is closed."""
        if self._closed:
            return 0
        sim_t = self._sim_time = frame.sim_time
        quality = frame.quality
        if frame.version == self._version and quality == self._quality:
            return 0
        self._version, self._quality = frame.version, quality
        values = frame.values
        record = self.store.record
        last = self._last
        every = self._every
        queued = refused = 0
        for i, key, series in self._slots:
            status = quality.get(i, 0) if quality else 0
            # a Bad value is null, as the address space serves it (Part 4, 7.7.1)
            sample = (None if status & _BAD else values[i], status)
            if every or last.get(key) != sample:
                if record(series, t, *sample, "tick", sim_t):
                    last[key] = sample
                    queued += 1
                else:
                    refused += 1  # not remembered: tried again at the next record
        if queued:  # every instant stored has its simulated time (module docstring)
            if record(self._sim_series, t, sim_t, 0, "tick", sim_t):
                queued += 1
            else:
                refused += 1
        self._records += 1
        self._samples += queued
        self._dropped += refused
        return queued

    def written(self, key: VarKey, value: Value, source: str = "client",
                status: int = 0) -> None:
        """A client (``"client"``) or HIL binding (``"hil"``) wrote ``value`` (as the
        session stored it) to ``key``: store it now with its source, and ``status``
        (a HIL input's quality: the PLC's value is Good, a fallback
        UncertainSubstituteValue)."""
        if self._closed:
            return
        if source not in SOURCES:
            raise InvalidArgument(f"a write's source is one of {', '.join(SOURCES)} "
                                  f"(got {source!r})")
        series = self._series.get(key)
        if series is not None:
            if self.store.record(series, self._now(), value, status, source,
                                 self._sim_time):
                self._last[key] = (value, status)
                self._samples += 1
                self._writes += 1
            else:
                self._dropped += 1
        elif source == "client" and key.kind in (Kind.INPUT, Kind.STATE):
            what = "forced" if key.kind is Kind.INPUT else "set"
            self.event("value_written",
                       f"{key.kind} {key.name!r} of component {key.component!r} {what} to "
                       f"{value!r} by a client", SEVERITY_WRITE)

    def event(self, kind: str, message: str, severity: int = 100, *,
              fields: bytes | None = None, t: float | None = None) -> None:
        """Store a log event of this session that did not come from the session itself
        (the daemon's ``created``, the server's alarms), at ``t`` (seconds since the
        epoch; None: now), with the ``fields`` it was served with (an alarm's)."""
        when = self._now() if t is None else t
        if self.store.record_event(self.session.name, kind, message, severity, when, fields):
            self._events += 1
        else:
            self._dropped += 1

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop recording the session; idempotent. (Its last values came with the
        last frame its pacer delivered as it stopped.)"""
        self._closed = True

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(self.session.name, len(self.keys), self._records,
                                  self._samples, self._writes, self._events, self._dropped)


class Recording:
    """The recorders of every served session: the history sink of the pacers.

    The daemon adds a recorder when it serves a session and removes it when the
    session goes; every pacer delivers its frames (``deliver``), the write paths
    call ``written`` and the OPC UA layer asks ``paths`` which nodes to mark
    Historizing.
    """

    def __init__(self, store: HistoryStore, config: HistoryConfig | None = None, *,
                 now: Now = time.time) -> None:
        self.store = store
        self.config = config or HistoryConfig()
        self._now = now
        self._recorders: dict[str, Recorder] = {}

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
        if len(session.layout.variables) >= LARGE:  # (seconds of work for 60,000)
            recorder = await asyncio.to_thread(Recorder, self.store, session, settings,
                                               now=self._now)
        else:
            recorder = Recorder(self.store, session, settings, now=self._now)
        try:
            await recorder.declare()
        except BaseException:
            recorder.close()
            raise
        self._recorders[session.name] = recorder
        log.info("history_recording", session=session.name, variables=len(recorder.keys),
                 rate=recorder.rate, mode=settings.mode)
        if recorder.capped:
            log.warning("history_record_rate_capped", session=session.name,
                        record_rate=settings.record_rate, publish_rate=recorder.rate,
                        reason="a session is recorded from the frames it publishes: at "
                               "most at its publish rate; raise the session's "
                               "publish_rate to record more often")
        return recorder

    def wants(self, session: str) -> bool:
        """Whether ``session`` is recorded (``runtime.sinks.Sink``)."""
        return session in self._recorders

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        """A pacer's frame (``runtime.sinks.Sink``): to the session's recorder, if it
        is recorded."""
        recorder = self._recorders.get(session)
        if recorder is not None:
            recorder.deliver(frame, stamp)

    def remove(self, session: str) -> None:
        """Stop recording ``session`` (its pacer delivered its last frame); its history
        stays stored, under its retention policy, until retention has removed it all."""
        recorder = self._recorders.pop(session, None)
        if recorder is not None:
            recorder.close()
            self.store.retire(session)

    def paths(self, session: str) -> list[str]:
        """The recorded ``VarKey.path``s of ``session`` ([] if it is not recorded)."""
        recorder = self._recorders.get(session)
        return recorder.paths if recorder is not None else []

    def written(self, session: str, key: VarKey, value: Value, source: str = "client",
                status: int = 0) -> None:
        """The write paths' hook: a client or HIL binding wrote ``value`` to ``key``
        (a HIL input's value with its ``status``)."""
        recorder = self._recorders.get(session)
        if recorder is not None:
            recorder.written(key, value, source, status)

    def event(self, session: str, kind: str, message: str, severity: int = 100, *,
              fields: bytes | None = None, t: float | None = None) -> None:
        """Store a log event of ``session`` that the session itself did not emit (the
        server's ``on_log_event``), at ``t`` with ``fields`` (``Recorder.event``)."""
        recorder = self._recorders.get(session)
        if recorder is not None:
            recorder.event(kind, message, severity, fields=fields, t=t)

    def close(self) -> None:
        for name in list(self._recorders):
            self.remove(name)

    def statistics(self) -> list[RecorderStatistics]:
        return [r.statistics() for r in self._recorders.values()]


def recorded_nodes(session: str, paths: Iterable[str]) -> list[str]:
    """The NodeId strings (``Sessions.<session>.<path>``) of recorded variables."""
    return [f"Sessions.{session}.{path}" for path in paths]
