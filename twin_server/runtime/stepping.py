"""Step(n) in the background, in slices: how both hosts run a session's Step.

A Step of a million ticks takes seconds to minutes; run in one piece it would
hold everything else its event loop serves (the worker's other sessions, or, in
process, the whole server) and the calling client's connection with it. So a
host starts it (``Session.begin_step``: refusals are raised at once), and a
``StepJob`` takes its ticks in slices of ``SLICE`` seconds (``continue_step``),
yielding to the event loop between two slices: the other sessions tick on time
(a slice waits for a tick that falls due within it: ``runtime.clock.TICKS``),
commands are answered, and a Suspend, Halt, Reset or Restore cancels the Step
between two slices. ``wait(timeout)`` answers the caller when the Step ended or
after ``timeout`` seconds, whichever comes first (``StepProgress``), so that a
client's call returns in well under a second while the Step goes on; the
session's ``step_completed`` event announces its end.

The hooks let a worker say what it is doing for the main process's crash and
hang watch (``before``: the session being stepped; ``progress``: the live step
count after every tick; ``after``: the frame published).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from twin_server.engine.session import Session, StepProgress
from twin_server.runtime.clock import TICKS, Ticks

log = structlog.get_logger(__name__)

#: seconds of stepping between two yields to the event loop
SLICE = 0.002


def _nothing() -> None:
    return None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("step_failed", task=task.get_name(), error=repr(task.exception()))


class StepJob:
    """The running Step of one session, taken in slices until it ends."""

    def __init__(self, session: Session, *,
                 before: Callable[[], None] = _nothing,
                 progress: Callable[[], None] = _nothing,
                 after: Callable[[], None] = _nothing,
                 slice_seconds: float = SLICE,
                 ticks: Ticks = TICKS,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.session = session
        self._before, self._progress, self._after = before, progress, after
        self._slice = slice_seconds
        self._ticks = ticks
        self._sleep = sleep
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def begin(cls, session: Session, count: int, *,
              before: Callable[[], None] = _nothing,
              progress: Callable[[], None] = _nothing,
              after: Callable[[], None] = _nothing,
              replacing: StepJob | None = None) -> StepJob:
        """Start a Step of ``count`` ticks (``Session.begin_step``'s refusals raise
        here, before anything runs) and its task on the running loop. ``replacing``:
        the session's previous job, whose task is stopped once this Step began (a
        cancelled Step's task may not have noticed yet; it must not take this one's
        ticks)."""
        session.begin_step(count)
        if replacing is not None:
            replacing.cancel()
        job = cls(session, before=before, progress=progress, after=after)
        job.task = asyncio.get_running_loop().create_task(
            job.run(), name=f"step:{session.name}")
        job.task.add_done_callback(_log_failure)
        return job

    def progress(self) -> StepProgress:
        return self.session.step_progress()

    @property
    def done(self) -> bool:
        return self.task is None or self.task.done()

    async def wait(self, timeout: float | None = None) -> StepProgress:
        """The Step's progress once it ended, or after ``timeout`` seconds (None:
        until it ends)."""
        if self.task is not None and not self.task.done() and (timeout is None or timeout > 0):
            await asyncio.wait({self.task}, timeout=timeout)
        return self.progress()

    def cancel(self) -> None:
        """Stop taking ticks (the session's own Step state is the caller's to end)."""
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        session = self.session
        perf = time.perf_counter
        advance, progress = session.continue_step, self._progress
        while session.steps_remaining:
            await self._ticks.clear(self._slice)
            if not session.steps_remaining:
                break  # cancelled meanwhile
            self._before()
            try:
                deadline = perf() + self._slice
                # one tick at a time, as the clock does: the live count then names
                # the very tick a crash or hang happened in
                while advance(1) and session.steps_remaining:
                    progress()
                    if perf() >= deadline:
                        break
            finally:
                progress()
                self._after()
            time.sleep(0)  # a thread waiting for the GIL takes it (clock.py, flat out)
            await self._sleep(0)
