"""``LocalHost``: sessions and their clocks on the caller's event loop (``workers = 0``).

What the daemon does today, behind the ``SessionHost`` interface: for tests,
debugging, and machines where a process per core is not wanted. A crash of a
model's native code takes the whole process down here; ``isolate`` is accepted
and means nothing.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from twin_server.engine.session import Session, SessionSettings, SessionSnapshot, StepProgress
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import AlreadyExists, InvalidState, NotFound, SessionFault
from twin_server.runtime.clock import Clock, ClockStatistics
from twin_server.runtime.commands import STEP, create_session, run_command
from twin_server.runtime.host import (
    GOOD_ONLY,
    EventListener,
    Frame,
    HostStatistics,
    SessionLayout,
)
from twin_server.runtime.stepping import StepJob

log = structlog.get_logger(__name__)

#: seconds a deleted session's clock task may take to end once cancelled (it ends at
#: its next await: a tick is far shorter)
CLOCK_STOP_TIMEOUT = 5.0


def clock_phase(name: str) -> float:
    """A fixed fraction of a period from the session's name: sessions started
    together spread their ticks over the period instead of all falling due at once."""
    return (zlib.crc32(name.encode()) % 1024) / 1024


def layout_of(session: Session) -> SessionLayout:
    return SessionLayout(session.name, session.twin.name, session.step_size,
                         float(session.publish_rate), tuple(session.variables()))


def frame_of(session: Session) -> Frame:
    """The frame of an in-process session, as it is now."""
    stats = session.statistics()
    return Frame(session.step_count, session.sim_time, session.state,
                 session.realtime_factor, session.version, tuple(session.value_list()),
                 stats.step_duration_mean, stats.step_duration_max,
                 steps_remaining=session.steps_remaining, forces=session.forces,
                 quality=session.quality() or GOOD_ONLY, faults=session.fault_changes)


class SessionFrames:
    """A bare in-process ``Session`` as a ``FrameSource`` (no host, no clock: whoever
    holds the session steps it), for offline use and tests."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.name = session.name
        self.layout = layout_of(session)
        self._frame: Frame | None = None

    def frame(self) -> Frame:
        session = self.session
        if session.closed:
            raise NotFound(f"session {self.name!r} is closed")
        if self._frame is None or self._frame.version != session.version:
            self._frame = frame_of(session)
        return self._frame


@dataclass(slots=True)
class _Local:
    session: Session
    clock: Clock
    layout: SessionLayout
    task: asyncio.Task[None] | None
    unsubscribe: Callable[[], None]
    #: the latest frame read, kept while the session's version stands still
    frame: Frame | None = None
    #: the Step running in the background, if any
    step: StepJob | None = None


class LocalHost:
    """Every session on this event loop, each paced by its own ``Clock`` task."""

    def __init__(self, on_event: EventListener,
                 *, sleep: Callable[[float], Awaitable[None]] | None = None,
                 clocks: bool = True) -> None:
        """``sleep`` is the clocks' (the daemon passes its ``timers.PreciseSleep``).
        ``clocks=False`` starts no clock task: whoever holds the sessions (``session``)
        ticks them, or runs ``clock(name).run()`` itself (tests that drive ticks)."""
        self._on_event = on_event
        self._sleep = sleep
        self._clocks = clocks
        self._sessions: dict[str, _Local] = {}
        self._closed = False

    async def create(self, name: str, twin: TwinDefinition, settings: SessionSettings, *,
                     snapshot: SessionSnapshot | None = None,
                     isolate: bool = False, fault: SessionFault | None = None,
                     keep_faulted: bool = False) -> SessionLayout:
        self._require_open()
        if name in self._sessions:
            raise AlreadyExists(f"a session named {name!r} is hosted already")
        session = create_session(name, twin, settings, snapshot=snapshot, fault=fault,
                                 keep_faulted=keep_faulted)
        extra: dict[str, Any] = {} if self._sleep is None else {"sleep": self._sleep}
        clock = Clock(session, phase=clock_phase(name), **extra)
        on_event = self._on_event
        unsubscribe = session.subscribe(lambda event: on_event(name, event))
        task = None
        if self._clocks:
            task = asyncio.get_running_loop().create_task(clock.run(), name=f"clock:{name}")
            task.add_done_callback(_log_clock_end)
        local = _Local(session, clock, layout_of(session), task, unsubscribe)
        self._sessions[name] = local
        return local.layout

    async def delete(self, name: str) -> None:
        local = self._get(name)
        del self._sessions[name]
        await _stop(local)

    async def call(self, name: str, command: str, *args: Any) -> Any:
        local = self._get(name)
        if command == STEP:
            return await self._step(local, *args)
        return run_command(local.session, command, args)

    async def _step(self, local: _Local, count: int = 1,
                    wait: float | None = None) -> StepProgress:
        """Start a Step in slices on this loop; answer when it ended or after ``wait`` s."""
        job = local.step = StepJob.begin(local.session, count, replacing=local.step)
        return await job.wait(wait)

    def frame(self, name: str) -> Frame:
        local = self._get(name)
        frame = local.frame
        if frame is None or frame.version != local.session.version:
            frame = local.frame = frame_of(local.session)
        return frame

    def layout(self, name: str) -> SessionLayout:
        return self._get(name).layout

    def fault(self, name: str) -> SessionFault | None:
        return self._get(name).session.fault

    def recovery_snapshot(self, name: str) -> SessionSnapshot | None:
        """None: in-process nothing outlives the session to bring it back from (a crash
        of its native code ends this process)."""
        self._get(name)
        return None

    def clock_statistics(self, name: str) -> ClockStatistics:
        return self._get(name).clock.statistics()

    def statistics(self) -> HostStatistics:
        return HostStatistics(workers=0, spares=0, sessions=len(self._sessions), crashes=0, hangs=0,
                              replacements=0, last_replacement_seconds=0.0, in_process=True,
                              scheduling="in-process")

    def names(self) -> list[str]:
        return list(self._sessions)

    def session(self, name: str) -> Session:
        """The in-process ``Session`` itself (tests and debugging: a worker host has none)."""
        return self._get(name).session

    def clock(self, name: str) -> Clock:
        """The session's ``Clock`` (with ``clocks=False``, not running unless run)."""
        return self._get(name).clock

    async def stop_clocks(self) -> None:
        """Stop every clock, leaving each session as it is (a Running one stays
        Running, ticking no more): the shutdown's last record and snapshot then
        see the state the daemon stopped in."""
        for local in self._sessions.values():
            task, local.task = local.task, None
            if task is not None:
                await _end_clock(local, task, None)

    async def aclose(self) -> None:
        self._closed = True
        while self._sessions:
            _, local = self._sessions.popitem()
            await _stop(local)

    async def __aenter__(self) -> LocalHost:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _get(self, name: str) -> _Local:
        try:
            return self._sessions[name]
        except (KeyError, TypeError):
            raise NotFound(f"no session named {name!r} is hosted "
                           f"(sessions: {', '.join(self._sessions) or 'none'})") from None

    def _require_open(self) -> None:
        if self._closed:
            raise InvalidState("the session host is closed")


async def _stop(local: _Local, timeout: float | None = None) -> None:
    """End the session's clock, then close the session. A clock task that has not
    ended ``timeout`` seconds after its cancellation is reported (``clock_stop_timeout``,
    with where it is) and the session closed under it: a closed session is Halted, so
    its clock stops ticking, and a deletion never waits for ever."""
    if local.step is not None:
        local.step.cancel()
    if local.task is not None:
        await _end_clock(local, local.task, timeout)
    local.session.close()  # emits "closed" to the listener, then drops it
    local.unsubscribe()


async def _end_clock(local: _Local, task: asyncio.Task[None], timeout: float | None) -> None:
    """Cancel the clock ``task`` and wait ``timeout`` seconds (CLOCK_STOP_TIMEOUT) at
    most for it to end; one that has not is reported with where it is."""
    task.cancel()
    # (asyncio.wait, not a timeout around ``await task``: cancelling a wait for a task
    # only cancels that task again, so a task that ignores it is waited for for ever;
    # the caller's own cancellation still ends this wait)
    if timeout is None:
        timeout = CLOCK_STOP_TIMEOUT
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.error("clock_stop_timeout", session=local.session.name, seconds=timeout,
                  task=task.get_name(), stack=_where(task))


def _where(task: asyncio.Task[None]) -> str:
    frames = task.get_stack()
    return " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames)) or "?"


def _log_clock_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("clock_failed", task=task.get_name(), error=repr(task.exception()))
