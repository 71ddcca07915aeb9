"""The real-time clock: paces a session's ticks against absolute wall-clock deadlines.

One ``Clock`` per session; ``run`` is its task (owned by the daemon's TaskGroup)
and runs until cancelled. While the session is not Running the clock waits on an
``asyncio.Event`` set by the session's events (it does not poll). While Running,
tick ``k`` is due at

    deadline(k) = anchor_wall + (k - anchor_k) * step_size / realtime_factor

with ``anchor_wall`` one period after the moment of anchoring: an absolute
deadline, so sleeping late never accumulates into drift. A tick is due when the
wall time reaches the simulated time it computes to: after Start, the first
tick (t: 0 -> dt) runs one period later, so the twin never runs ahead of the
process it stands in for. The anchor is set at Start and Resume, when the
real-time factor changes, and when the "skip" policy drops missed deadlines.

A tick that starts more than one period after its deadline counts an overrun
(one per such tick). Then:

* ``skip`` re-anchors at that tick: the missed deadlines are dropped and the
  twin falls behind wall time by the gap (simulated time stays k*dt);
* ``catch_up`` runs the late ticks back to back until it is on time again; a
  backlog longer than ``max_backlog`` seconds of wall time (or two periods,
  whichever is longer) is dropped as with ``skip``, so one long stall cannot turn
  into minutes of flat-out stepping.

A real-time factor of 0 steps as fast as possible. Either way the clock yields
to the event loop at least every ``yield_interval`` seconds (and every
``yield_ticks`` ticks), so one busy session cannot starve the server.

Garbage collection is paced by the ticks (``Collector``): while any clock runs in
real time, CPython's automatic collections are off and each clock collects after
its tick, in the slack before its next deadline: the young generations whenever
their thresholds say so (a few ms at most), a full collection only when the slack
is longer than the last one took, or, failing that, at least every
``Collector.full_interval`` seconds. An automatic full collection walks every
object allocated since start-up (the subscriptions of ten clients: ~100 ms) and
lands wherever an allocation triggers it, late ticks and overruns with it.

Ticks come first (``Ticks``): every pacing clock registers its next deadline
with the process's ``TICKS``, and long work on the same event loop that can wait
a moment (the publisher's chunks, a subscription's PublishResponse) asks
``TICKS.clear(seconds)`` first: when a tick falls due within that time, the work
waits until that tick has run, so that it runs after the tick instead of in its
way. An event loop runs whatever is ready in order, so without this a
tick that falls due during a 1 ms chunk of publishing waits for that chunk and
the next (measured: 10 clients subscribed to 1,000 variables each put the
lateness p99 of a 100 Hz twin at 6-7 ms).

``now`` and ``sleep`` are injected so that tests drive a fake clock.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from twin_server.engine.session import RunState, Session, SessionEvent

#: events after which the deadlines are anchored afresh at the next tick
_REANCHOR = frozenset({"started", "resumed", "realtime_factor_changed", "reset"})
#: a wait longer than this is raced against the session's events, so that a
#: Suspend, Halt or new real-time factor acts at once instead of after the wait
_INTERRUPTIBLE = 0.05


#: the upper edges (s) of the lateness histogram's buckets: 2 ms x 2^(k/4), from
#: 0.0625 ms to 2 s, four buckets a doubling, with 2 ms (the usual p99 target) an
#: edge. Bucket ``i`` counts the ticks with ``EDGES[i-1] < lateness <= EDGES[i]``;
#: the last one (``len(EDGES)``) those later than 2 s.
LATENESS_EDGES: tuple[float, ...] = tuple(0.002 * 2.0 ** (k / 4) for k in range(-20, 41))
LATENESS_BUCKETS = len(LATENESS_EDGES) + 1


@dataclass(frozen=True, slots=True)
class ClockStatistics:
    """An immutable snapshot for the Diagnostics nodes; times in seconds."""

    ticks: int  # ticks this clock has taken
    overruns: int  # deadlines missed by more than one step period
    lateness_p50: float  # how late ticks started against their deadline, recent window
    lateness_p99: float
    lateness_max: float
    #: every tick started since the clock was made, counted by its lateness
    #: (``LATENESS_EDGES`` buckets): the difference of two snapshots is the histogram
    #: of the ticks between them, which the recent window's percentiles cannot give
    lateness_counts: tuple[int, ...] = (0,) * LATENESS_BUCKETS


class Collector:
    """Garbage collection in the slack after ticks, for every clock of the process.

    While at least one clock runs paced, the collector is off (``gc.disable``) and
    ``after_tick`` collects: generation 0 or 1 when CPython's own thresholds would
    have, generation 2 when its threshold is reached and the slack before the next
    deadline is longer than the previous full collection took (or ``full_interval``
    seconds have passed since the last one). When the last paced clock stops, the
    collector is enabled again, unless it was off already when the first started.
    """

    def __init__(self, full_interval: float = 600.0) -> None:
        self.full_interval = full_interval
        self.full_seconds = 0.05  # the last full collection, a guess until one ran
        self.collections = [0, 0, 0]
        self._clocks = 0
        self._owned = False
        self._last_full = time.monotonic()

    def enter(self) -> None:
        if self._clocks == 0 and gc.isenabled():
            gc.disable()
            self._owned = True
            self._last_full = time.monotonic()
        self._clocks += 1

    def exit(self) -> None:
        self._clocks -= 1
        if self._clocks == 0 and self._owned:
            self._owned = False
            gc.enable()

    def after_tick(self, slack: float) -> None:
        """Collect what is due, given ``slack`` seconds until the next deadline."""
        if not self._owned or gc.isenabled():
            return  # someone else enabled it meanwhile: CPython collects
        count0, count1, count2 = gc.get_count()
        limit0, limit1, limit2 = gc.get_threshold()
        if count0 < limit0 or not limit0:
            return
        generation = 1 if count1 >= limit1 else 0
        if generation == 1 and count2 >= limit2:
            now = time.monotonic()
            if slack > 1.5 * self.full_seconds or now - self._last_full > self.full_interval:
                started = time.perf_counter()
                gc.collect(2)
                self.full_seconds = time.perf_counter() - started
                self._last_full = now
                self.collections[2] += 1
                return
        gc.collect(generation)
        self.collections[generation] += 1


#: the one collector of the process
COLLECTOR = Collector()


class Ticks:
    """The next tick deadlines of every pacing clock of the process, for work that
    can wait for them (``clear``). Times are ``time.monotonic()``, the clocks' own."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._clocks: set[Clock] = set()
        #: per clock, the futures of work waiting for its next tick
        self._waiting: dict[Clock, list[asyncio.Future[None]]] = {}
        self.waits = 0  # how often work waited for a tick

    def enter(self, clock: Clock) -> None:
        self._clocks.add(clock)

    def exit(self, clock: Clock) -> None:
        self._clocks.discard(clock)
        self.ticked(clock)

    def ticked(self, clock: Clock) -> None:
        """``clock`` took its tick (or stopped pacing): release the work waiting for it."""
        if self._waiting:
            for future in self._waiting.pop(clock, ()):
                if not future.done():
                    future.set_result(None)

    def due_in(self) -> float | None:
        """Seconds until the soonest tick deadline (negative: a tick is late); None
        while no clock paces."""
        soonest = self._soonest()
        return None if soonest is None else soonest[1] - self._now()

    def _soonest(self) -> tuple[Clock, float] | None:
        found: tuple[Clock, float] | None = None
        for clock in self._clocks:
            deadline = clock._deadline
            if deadline is not None and (found is None or deadline < found[1]):
                found = clock, deadline
        return found

    async def clear(self, seconds: float, patience: float = 0.05) -> None:
        """Return at once unless a tick falls due within ``seconds`` (or is late):
        then wait until that tick has run, at most ``patience`` seconds past its
        deadline. Work shorter than ``SHORT_WORK`` never waits. Waits once: with
        many clocks a tick is always near, and the caller's work must go on."""
        if seconds < SHORT_WORK or not self._clocks:
            return
        soonest = self._soonest()
        if soonest is None:
            return
        clock, deadline = soonest
        due = deadline - self._now()
        if due >= seconds:
            return
        self.waits += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(clock, []).append(future)
        try:
            async with asyncio.timeout(max(due, 0.0) + patience):
                await future
        except TimeoutError:
            pass


#: work this short goes on without looking: it delays a tick by less than the
#: event loop's own timers do (and 100 clocks need not be scanned for it)
SHORT_WORK = 0.0002
#: the tick deadlines of the process
TICKS = Ticks()


class Clock:
    """Paces one session in (scaled) real time. ``run`` until cancelled."""

    def __init__(
        self,
        session: Session,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        window: int = 2048,
        max_backlog: float = 1.0,
        yield_interval: float = 0.005,
        yield_ticks: int = 256,
        collector: Collector | None = None,
        phase: float = 0.0,
        ticks: Ticks | None = None,
    ) -> None:
        """``phase`` (0 <= phase < 1) puts this clock's deadlines that fraction of a
        period later than its start would: sessions started together then do not all
        tick in the same instant. Only wall-clock deadlines move; results do not."""
        if not 0.0 <= phase < 1.0:
            raise ValueError(f"a clock's phase is a fraction of a period in [0, 1) (got {phase})")
        if window < 1:
            raise ValueError(f"the lateness window must hold at least 1 tick (got {window})")
        self.session = session
        self._phase = phase
        self._now = now
        self._sleep = sleep
        self._max_backlog = max_backlog
        self._yield_interval = yield_interval
        self._yield_ticks = yield_ticks
        self._collector = collector if collector is not None else COLLECTOR
        self._schedule = ticks if ticks is not None else TICKS
        #: when the next tick is due (``now`` time), while running paced
        self._deadline: float | None = None
        self._wake = asyncio.Event()
        self._reanchor = True
        self._ticks = 0
        self._overruns = 0
        self._lateness = np.zeros(window, dtype=np.float64)
        self._late_index = 0
        self._late_count = 0
        self._counts = [0] * LATENESS_BUCKETS

    # -- observation -----------------------------------------------------------------

    def statistics(self) -> ClockStatistics:
        count = self._late_count
        if count:
            recent = self._lateness[:count]
            p50, p99 = (float(x) for x in np.percentile(recent, (50.0, 99.0)))
            worst = float(recent.max())
        else:
            p50 = p99 = worst = 0.0
        return ClockStatistics(
            ticks=self._ticks,
            overruns=self._overruns,
            lateness_p50=p50,
            lateness_p99=p99,
            lateness_max=worst,
            lateness_counts=tuple(self._counts),
        )

    def due_in(self) -> float | None:
        """Seconds until the next tick is due (negative: it is late); None while the
        clock is not pacing a running session. Long work that cannot yield midway
        (``Session.values()`` of a big twin) waits for a tick that is about to fall due
        instead of delaying it."""
        deadline = self._deadline
        return None if deadline is None else deadline - self._now()

    # -- the loop --------------------------------------------------------------------

    def _on_event(self, event: SessionEvent) -> None:
        if event.kind in _REANCHOR:
            self._reanchor = True
        self._wake.set()

    async def run(self) -> None:
        """Tick the session while it is Running; wait for its events while it is not."""
        session = self.session
        unsubscribe = session.subscribe(self._on_event)
        try:
            while True:
                if session.state is not RunState.RUNNING:
                    self._wake.clear()
                    await self._wake.wait()
                    self._reanchor = True
                    continue
                if session.realtime_factor == 0:
                    await self._run_flat_out()
                else:
                    await self._run_paced()
        finally:
            unsubscribe()

    def _record(self, lateness: float) -> None:
        i = self._late_index
        self._lateness[i] = lateness
        i += 1
        self._late_index = 0 if i == len(self._lateness) else i
        if self._late_count < len(self._lateness):
            self._late_count += 1
        self._counts[bisect.bisect_left(LATENESS_EDGES, lateness)] += 1

    async def _run_flat_out(self) -> None:
        """Step as fast as possible, yielding to the loop every few ms; return when
        the session stops running or the factor becomes non-zero.

        Each yield also lets go of the GIL (``time.sleep(0)``): yielding to the loop
        alone kept it, and a thread that wanted it (the history writer's and the
        snapshots' aiosqlite threads, ``asyncio.to_thread``) got it only when the
        interpreter's switch interval forced it, one short turn per 5 ms: in-process
        (``workers = 0``) a flat-out session made a periodic snapshot save take 48 s
        and a test wait 60 s for history (``tests/nodeopcua/test_sim_time_history``)."""
        session = self.session
        now = self._now
        tick = session.tick
        running = RunState.RUNNING
        budget, ticks = self._yield_interval, self._yield_ticks
        while session.state is running and session.realtime_factor == 0:
            since = now()
            for _ in range(ticks):
                k = session.step_count
                tick()
                if session.step_count != k:  # not a faulted tick
                    self._ticks += 1
                if session.state is not running or session.realtime_factor != 0:
                    break
                if now() - since >= budget:
                    break
            time.sleep(0)  # lets a thread that waits for the GIL take it (the docstring)
            await self._sleep(0)
        self._reanchor = True

    async def _run_paced(self) -> None:
        """Tick against absolute deadlines; return when the session stops running or
        the factor becomes 0. Garbage is collected after ticks meanwhile."""
        self._collector.enter()
        self._schedule.enter(self)
        try:
            await self._paced_loop()
        finally:
            self._deadline = None
            self._schedule.exit(self)
            self._collector.exit()

    async def _paced_loop(self) -> None:
        session = self.session
        now = self._now
        running = RunState.RUNNING
        factor = session.realtime_factor
        period = session.step_size / factor
        catch_up = session.settings.overrun_policy == "catch_up"
        anchor_k, anchor_wall = 0, 0.0
        burst_start = now()
        burst_ticks = 0
        collector = self._collector
        while session.state is running:
            if session.realtime_factor != factor:
                factor = session.realtime_factor
                if factor == 0:
                    return
                period = session.step_size / factor
                self._reanchor = True
            k = session.step_count
            if self._reanchor:
                self._reanchor = False
                anchor_k, anchor_wall = k, now() + period * (1.0 + self._phase)
            deadline = self._deadline = anchor_wall + (k - anchor_k) * period
            started = now()
            delay = deadline - started
            if delay > 0:
                await self._wait(delay)
                burst_start, burst_ticks = now(), 0
                continue
            lateness = -delay
            if lateness > period:
                self._overruns += 1
                if not catch_up or lateness > max(self._max_backlog, 2 * period):
                    anchor_k, anchor_wall = k, started
            self._record(lateness)
            session.tick()
            self._schedule.ticked(self)
            if session.step_count != k:  # not a faulted tick
                self._ticks += 1
            self._deadline = anchor_wall + (session.step_count - anchor_k) * period
            collector.after_tick(self._deadline - now())
            burst_ticks += 1
            # back-to-back ticks (catching up, or a tick that took a whole period):
            # let the rest of the server run every few ms
            if burst_ticks >= self._yield_ticks or now() - burst_start >= self._yield_interval:
                await self._sleep(0)
                burst_start, burst_ticks = now(), 0

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds; a long sleep ends early on a session event."""
        if delay <= _INTERRUPTIBLE:
            await self._sleep(delay)
            return
        self._wake.clear()
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
