"""Ending a task keeps the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from twin_server.runtime.tasks import cancel_and_wait


async def _stubborn(release: asyncio.Event) -> None:
    """Takes its cancellation only once ``release`` is set (a task that cleans up)."""
    try:
        await asyncio.Event().wait()
    finally:
        await release.wait()


class TestCancelAndWait:
    async def test_ends_the_task(self) -> None:
        """The task is cancelled and has ended when it returns."""
        task = asyncio.create_task(asyncio.Event().wait())
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        assert task.cancelled()

    async def test_the_callers_cancellation_is_kept(self) -> None:
        """A caller cancelled while it waits for the task is cancelled (a suppressed
        CancelledError would have let it go on)."""
        release = asyncio.Event()
        task = asyncio.create_task(_stubborn(release))
        await asyncio.sleep(0)
        caller = asyncio.create_task(cancel_and_wait(task))
        await asyncio.sleep(0)
        caller.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert task.done()

    async def test_the_tasks_error_comes_out(self) -> None:
        """A task that fails while it ends raises its error in the caller."""
        async def failing() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                raise RuntimeError("cleanup failed")
        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="cleanup failed"):
            await cancel_and_wait(task)
