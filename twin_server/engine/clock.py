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

``now`` and ``sleep`` are injected so that tests drive a fake clock.
"""

from __future__ import annotations

import asyncio
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


@dataclass(frozen=True, slots=True)
class ClockStatistics:
    """An immutable snapshot for the Diagnostics nodes; times in seconds."""

    ticks: int  # ticks this clock has taken
    overruns: int  # deadlines missed by more than one step period
    lateness_p50: float  # how late ticks started against their deadline, recent window
    lateness_p99: float
    lateness_max: float


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
    ) -> None:
        if window < 1:
            raise ValueError(f"the lateness window must hold at least 1 tick (got {window})")
        self.session = session
        self._now = now
        self._sleep = sleep
        self._max_backlog = max_backlog
        self._yield_interval = yield_interval
        self._yield_ticks = yield_ticks
        self._wake = asyncio.Event()
        self._reanchor = True
        self._ticks = 0
        self._overruns = 0
        self._lateness = np.zeros(window, dtype=np.float64)
        self._late_index = 0
        self._late_count = 0

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
        )

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

    async def _run_flat_out(self) -> None:
        """Step as fast as possible, yielding to the loop every few ms; return when
        the session stops running or the factor becomes non-zero."""
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
            await self._sleep(0)
        self._reanchor = True

    async def _run_paced(self) -> None:
        """Tick against absolute deadlines; return when the session stops running or
        the factor becomes 0."""
        session = self.session
        now = self._now
        running = RunState.RUNNING
        factor = session.realtime_factor
        period = session.step_size / factor
        catch_up = session.settings.overrun_policy == "catch_up"
        anchor_k, anchor_wall = 0, 0.0
        burst_start = now()
        burst_ticks = 0
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
                anchor_k, anchor_wall = k, now() + period
            deadline = anchor_wall + (k - anchor_k) * period
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
            if session.step_count != k:  # not a faulted tick
                self._ticks += 1
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
