"""Ending tasks without losing a cancellation on the way."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended. Its CancelledError is absorbed,
    but not the caller's own: ``with suppress(CancelledError): await task`` would
    swallow a cancellation of the caller that lands meanwhile too, and the caller
    (a session's deletion, the daemon's stop) would go on as if never cancelled."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
