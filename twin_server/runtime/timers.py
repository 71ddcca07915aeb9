"""Sleeping to the tens of microseconds on an event loop: one Linux timerfd per loop.

asyncio and uvloop both wake their timers at millisecond granularity: asyncio
rounds the selector's timeout up to a whole ms, uvloop rounds every delay to a
ms of libuv's cached loop time (so a timer fires up to a ms early or late). A
clock sleeping until a 10 ms deadline on either starts its tick 0-1 ms late,
p50 ~0.3 ms with nothing else running. ``PreciseSleep`` arms a timerfd at the
absolute ``CLOCK_MONOTONIC`` deadline (``time.monotonic``'s clock) for the
soonest of its sleepers; the loop's selector watches the fd and wakes within
microseconds of it.

The daemon hands one to every session clock (``Clock(sleep=...)``); the engine
itself stays free of I/O. Python has ``os.timerfd_create`` from 3.13 only, so
the three libc calls go through ctypes. Where they are missing (not Linux) or
fail, ``PreciseSleep`` is ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import heapq
import itertools
import os
import sys
import time

import structlog

log = structlog.get_logger(__name__)

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    if time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None  # the deadlines would be on another clock than the timer's
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


class _TimerFd:
    """A non-blocking CLOCK_MONOTONIC timerfd, armed at absolute deadlines."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._libc = libc
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_create: {os.strerror(errno)}")
        self.fd = fd
        self._spec = _Itimerspec()

    def arm(self, deadline: float) -> None:
        """Expire at ``deadline`` (``time.monotonic`` seconds; a past one expires at once)."""
        seconds = int(deadline)
        value = self._spec.it_value
        value.tv_sec = seconds
        # (an all-zero it_value disarms: never one here, monotonic time is past 0)
        value.tv_nsec = max(int((deadline - seconds) * 1e9), 1 if seconds == 0 else 0)
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec),
                                      None) < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)  # the expiration count; reading it clears the readiness

    def close(self) -> None:
        os.close(self.fd)


class PreciseSleep:
    """``await sleep(delay)`` like ``asyncio.sleep``, woken by a timerfd at the
    deadline. One instance serves every sleeper of one event loop (a heap of
    deadlines, the fd armed for the soonest); a new loop gets a new fd."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._timer: _TimerFd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._armed: float | None = None

    @property
    def precise(self) -> bool:
        """Whether sleeps are woken by the timerfd (else they are ``asyncio.sleep``)."""
        return self._libc is not None

    async def __call__(self, delay: float) -> None:
        if delay <= 0 or self._libc is None:
            await asyncio.sleep(delay)
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop and not self._open(loop):
            await asyncio.sleep(delay)
            return
        deadline = time.monotonic() + delay
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (deadline, next(self._order), future))
        if self._armed is None or deadline < self._armed:
            self._arm(deadline)
        await future  # cancelled: left in the heap, dropped when it comes up

    def _open(self, loop: asyncio.AbstractEventLoop) -> bool:
        self.close()
        assert self._libc is not None
        try:
            timer = _TimerFd(self._libc)
            loop.add_reader(timer.fd, self._expired)
        except (OSError, NotImplementedError) as exc:
            log.warning("precise_timer_unavailable", error=str(exc))
            self._libc = None
            return False
        self._timer, self._loop = timer, loop
        return True

    def _arm(self, deadline: float) -> None:
        assert self._timer is not None
        self._timer.arm(deadline)
        self._armed = deadline

    def _expired(self) -> None:
        assert self._timer is not None
        self._timer.drain()
        self._armed = None
        heap = self._heap
        now = time.monotonic()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_result(None)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        """Release the fd (sleepers still waiting are cancelled)."""
        timer, loop = self._timer, self._loop
        self._timer = self._loop = None
        self._armed = None
        if timer is None or loop is None:
            return
        for _, _, future in self._heap:
            future.cancel()
        self._heap.clear()
        if not loop.is_closed():
            loop.remove_reader(timer.fd)
        timer.close()
