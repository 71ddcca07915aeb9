"""An asyncua subscription handler that keeps the events it gets, for tests that
await them (a scenario run's or a campaign's finished event, an alarm's events)."""

from __future__ import annotations

import asyncio
from typing import Any


class RunEvents:
    """Events kept in arrival order; :meth:`wait_for` awaits the one of a run,
    :meth:`wait` the first few."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.arrived = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.items.append(event)
        self.arrived.set()

    async def wait_for(self, run: str, timeout: float = 30.0) -> Any:
        """The first event whose Run field is ``run``, waiting for it."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.items:
                    if event.Run == run:
                        return event
                self.arrived.clear()
                await self.arrived.wait()

    async def wait(self, count: int, timeout: float = 10.0) -> list[Any]:
        """The first ``count`` events, waiting for them."""
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.items[:count]
