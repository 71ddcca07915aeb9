"""One pacer per session, one snapshot per period, delivered to every sink.

The OPC UA publisher, the history recorder and the HIL mirror are *sinks*: each
is handed the same ``Frame`` of a session with the same ``Stamp``, once per
publish period, by the session's ``Pacer`` (issue #14, part 3). None of them reads
the session or keeps a period of its own, so a subscriber, the history and the
PLC see the same values with the same SourceTimestamp.

    Pacer (one per session: task in the daemon's TaskGroup, held by its ServedSession)
      every 1 / publish_rate s: frame = session.frame(), stamp = now
        ├─> Publisher.deliver   (opcua/publisher.py: queues the frame; its task writes
        │                         the changes into the address space, a chunk at a time)
        ├─> Recording.deliver   (recording.py: queues the samples in the store; a record
        │                         rate below the publish rate takes a subset of the frames)
        └─> HilMirror.deliver   (hil/mirror.py: the latest frame for each peer's writer)

``Sink.deliver`` is a plain ``def`` that never blocks: a sink with I/O or long
work to do keeps the frame and does it in a task of its own (latest frame wins
when it falls behind). A sink that raises is logged and the others still get the
frame.

Decisions:

* **The stamp** is the wall-clock time (UTC, whole microseconds: the resolution of
  Python's datetime and of the history store) at which the pacer read the frame.
  It is the SourceTimestamp of every value published from the frame and the time
  of every sample recorded from it.
* **Every period delivers**, whether the session moved or not: the sinks compare
  ``Frame.version`` with what they last took (a skipped publish costs a
  comparison), and a change of quality (a HIL input whose PLC is lost) shows at
  the next period even while the session stands still. Unless no sink wants a
  frame (``Sink.wants``: the publisher still has the previous one to write, and
  nothing records or mirrors the session): then the period reads nothing. An
  overloaded event loop (ticks taking all of it) would otherwise spend its little
  spare time reading frames that the next period's replace unread (measured: 5
  sessions of 5,000 variables at 20 Hz published a fifth as many frames).
* **Out of period**: ``pulse`` delivers a frame now (after a method call, so that
  its effect shows when the call returns; at a session's removal and at shutdown,
  so that its last values are recorded). ``wake`` has the pacer's task deliver one
  at once and start its period afresh (the daemon wakes a session's pacer at each
  of its events: a fault, a lost worker back, a state change shows everywhere
  without waiting for the period's end). Either is a frame like the others:
  every sink gets it.
* **Ticks first** (``TICKS``, in-process clocks): before reading a frame the pacer
  waits for a clock tick that would fall due while it reads and delivers (as long
  as its previous pulse took), so that reading never delays a tick.
* **Falling behind**: a period that comes late is not made up; the next is one
  period after the late one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from twin_server.errors import NotFound
from twin_server.runtime.clock import TICKS, Ticks
from twin_server.runtime.host import Frame, FrameSource
from twin_server.runtime.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: how much longer than the previous pulse a pulse may take, for ``Ticks.clear``
MARGIN = 1.5


@dataclass(frozen=True, slots=True)
class Stamp:
    """When a frame was read: one per frame, shared by every sink."""

    us: int  # microseconds since the Unix epoch (UTC): the history store's time

    @property
    def seconds(self) -> float:
        """Seconds since the Unix epoch (exact to the microsecond when stored)."""
        return self.us / 1_000_000

    @property
    def datetime(self) -> datetime:
        """An aware UTC datetime: the SourceTimestamp of the frame's values."""
        return _EPOCH + timedelta(microseconds=self.us)

    @classmethod
    def now(cls) -> Stamp:
        return cls(time.time_ns() // 1000)

    @classmethod
    def at(cls, seconds: float) -> Stamp:
        """The stamp of ``seconds`` since the epoch (tests, offline recording)."""
        return cls(round(seconds * 1_000_000))


class Sink(Protocol):
    """Whatever takes a session's frames: the publisher, the recorder, the HIL mirror."""

    def wants(self, session: str) -> bool:
        """Whether a frame of ``session`` would be taken now (False: it would only
        replace one not taken yet, or the session is none of this sink's)."""
        ...

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        """Take ``frame`` of ``session``, read at ``stamp``. Never blocks: work that
        takes long or does I/O is queued for a task of the sink's own."""
        ...


@dataclass(frozen=True, slots=True)
class PacerStatistics:
    """An immutable snapshot of one pacer's work."""

    session: str
    pulses: int  # frames delivered (periods and out-of-period pulses)
    idle: int  # periods no sink wanted a frame in (none was read)
    late: int  # periods that started more than one period after they were due
    failures: int  # deliveries a sink raised on (logged)
    last_pulse_seconds: float  # the frame read and every sink's deliver, last time


class Pacer:
    """Reads ``session``'s frame once per publish period and hands it to ``sinks``.

    ``sinks`` is read at every pulse: the daemon hands every pacer its one list of
    sinks, to which it adds the HIL mirror once that exists (before any pacer runs).
    """

    def __init__(self, session: FrameSource, sinks: Sequence[Sink], *,
                 ticks: Ticks = TICKS, stamp: Callable[[], Stamp] = Stamp.now) -> None:
        self.session = session
        self.name = session.name
        self.sinks = sinks
        self._ticks = ticks
        self._stamp = stamp
        self._pulses = self._idle = self._late = self._failures = 0
        self._last_pulse = 0.0
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()
        self._closed = False

    @property
    def period(self) -> float:
        """Seconds between two frames: one over the session's publish rate."""
        return 1.0 / max(self.session.layout.publish_rate, 1e-3)

    def pulse(self) -> Frame | None:
        """Read the session's frame now and deliver it to every sink; the frame, or
        None if the session is gone (deleted meanwhile)."""
        started = time.perf_counter()
        try:
            frame = self.session.frame()
        except NotFound:
            return None
        stamp = self._stamp()
        name = self.name
        for sink in self.sinks:
            try:
                sink.deliver(name, frame, stamp)
            except Exception:
                self._failures += 1
                log.exception("sink_failed", session=name, sink=type(sink).__name__)
        self._pulses += 1
        self._last_pulse = time.perf_counter() - started
        return frame

    def wake(self) -> None:
        """Have ``run`` deliver a frame at once (then one per period from then on).
        Never blocks: safe from an event listener, even inside a tick."""
        self._woken.set()

    async def run(self) -> None:
        """Pulse once per period until cancelled or ``stop``ped (and when woken)."""
        loop = asyncio.get_running_loop()
        woken = self._woken
        due = loop.time()
        while not self._closed:
            await self._ticks.clear(MARGIN * self._last_pulse)
            if self._closed:
                return
            name = self.name
            if woken.is_set() or any(sink.wants(name) for sink in self.sinks):
                woken.clear()
                self.pulse()
            else:
                self._idle += 1
            period = self.period
            due += period
            now = loop.time()
            if due <= now:  # late: the missed periods are not made up
                if now - due > period:
                    self._late += 1
                due = now + period
            if woken.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due - now):
                    await woken.wait()
            if woken.is_set():  # a new period from this frame on
                due = loop.time()

    def start(self, tasks: asyncio.TaskGroup) -> None:
        """Run in ``tasks`` (the daemon's TaskGroup) until ``stop``."""
        if self._task is None and not self._closed:
            self._task = tasks.create_task(self.run(), name=f"pacer:{self.name}")

    async def stop(self) -> None:
        """Stop pacing, then deliver one last frame (the session's values as it is
        removed or the daemon stops: recorded, not lost between two periods).
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self.pulse()

    def statistics(self) -> PacerStatistics:
        return PacerStatistics(self.name, self._pulses, self._idle, self._late,
                               self._failures, self._last_pulse)
