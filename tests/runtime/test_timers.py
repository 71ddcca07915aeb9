"""PreciseSleep: asyncio.sleep's contract (never early, in deadline order, cancellable)
kept on a timerfd, on asyncio and uvloop, and asyncio.sleep itself where no timerfd
can be had. How precise it is, is a benchmark's business (``bench_clock``)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from twin_server.runtime import timers
from twin_server.runtime.timers import PreciseSleep

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")


def on_loops(test: Callable[[PreciseSleep], Awaitable[None]]) -> Callable[..., None]:
    """Run the async ``test`` on a fresh asyncio loop and, where installed, on uvloop."""

    @pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
    def run(loop: str) -> None:
        sleep = PreciseSleep()
        try:
            if loop == "uvloop":
                uvloop = pytest.importorskip("uvloop")
                uvloop.run(test(sleep))
            else:
                asyncio.run(test(sleep))
        finally:
            sleep.close()

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


@linux
@on_loops
async def test_never_early_and_in_order(sleep: PreciseSleep) -> None:
    """Concurrent sleeps end in the order of their deadlines, none before its own."""
    assert sleep.precise
    woke: list[tuple[float, float]] = []

    async def one(delay: float) -> None:
        started = time.monotonic()
        await sleep(delay)
        woke.append((delay, time.monotonic() - started))

    delays = [0.03, 0.001, 0.02, 0.0005, 0.01, 0.01]
    await asyncio.gather(*(one(d) for d in delays))
    assert [d for d, _ in woke] == sorted(delays)
    assert all(took >= delay for delay, took in woke), woke


@linux
@on_loops
async def test_cancelled_sleep_leaves_the_others(sleep: PreciseSleep) -> None:
    """A cancelled sleeper (the soonest) neither wakes nor holds up the others."""
    soonest = asyncio.ensure_future(sleep(0.005))
    later = asyncio.ensure_future(sleep(0.02))
    await asyncio.sleep(0)
    soonest.cancel()
    started = time.monotonic()
    await asyncio.wait_for(later, 5)
    assert time.monotonic() - started < 2.0
    assert soonest.cancelled()
    assert not sleep._heap  # the cancelled entry was dropped when it came up


@linux
@on_loops
async def test_zero_and_negative_yield_once(sleep: PreciseSleep) -> None:
    """A delay of 0 or less yields to the loop once, as asyncio.sleep(0) does."""
    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "other")
    await sleep(0)
    await sleep(-1.0)
    assert ran == ["other"]
    assert sleep._timer is None  # no fd opened for them


@linux
def test_each_loop_gets_its_fd() -> None:
    """A second loop opens a fresh fd; close releases it."""
    sleep = PreciseSleep()
    fds: list[int] = []

    async def use() -> None:
        await sleep(0.001)
        assert sleep._timer is not None
        fds.append(sleep._timer.fd)

    asyncio.run(use())
    asyncio.run(use())
    sleep.close()
    assert sleep._timer is None
    for fd in fds[1:]:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_without_timerfd_it_is_asyncio_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where libc has no timerfd (not Linux), sleeps are asyncio's."""
    monkeypatch.setattr(timers, "_libc", lambda: None)
    sleep = PreciseSleep()
    assert not sleep.precise

    async def use() -> float:
        started = time.monotonic()
        await sleep(0.01)
        return time.monotonic() - started

    assert asyncio.run(use()) >= 0.0099
    assert sleep._timer is None


@linux
def test_a_failing_timerfd_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the fd cannot be made, the first sleep says so in the log and falls back."""

    def refuse(*args: Any) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(timers._TimerFd, "__init__", refuse)
    sleep = PreciseSleep()

    async def use() -> None:
        await sleep(0.001)
        await sleep(0.001)

    asyncio.run(use())
    assert not sleep.precise and sleep._timer is None
