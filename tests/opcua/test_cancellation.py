"""The server's long-lived tasks end when cancelled, even when what they wait for
comes in the same instant (Python 3.11's ``asyncio.wait_for`` then returns the
result and drops the cancellation: a daemon stop that waited for ever)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from twin_server.opcua.patches.fastpath import Sampler


class TestSampler:
    async def test_cancel_as_it_is_woken_ends_it(self) -> None:
        """A sampler woken in the instant it is cancelled ends (it used to go on
        waiting, and the daemon's stop with it)."""
        sampler = Sampler()
        watch: Any = None  # (never sampled: its item falls due in 100 s)
        sampler.schedule(time.monotonic() + 100.0, watch, 1)
        task = asyncio.create_task(sampler.run())
        for _ in range(5):
            await asyncio.sleep(0)  # (into its wait for the item)
        sampler.schedule(time.monotonic() + 50.0, watch, 2)  # wakes it
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        assert task in done and task.cancelled()
