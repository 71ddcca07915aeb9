"""The server's long-lived tasks end when cancelled, even when what they wait for
comes in the same instant (Python 3.11's ``asyncio.wait_for`` then returns the
result and drops the cancellation: a daemon stop that waited for ever)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from twin_server.opcua.alarms import AlarmConditions
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


class TestShelvingTimer:
    async def test_cancel_as_it_is_woken_ends_it(self) -> None:
        """The alarms' shelving timer woken in the instant it is cancelled ends (as the
        sampler: the daemon's stop would wait on it)."""
        conditions = AlarmConditions(SimpleNamespace(aspace={}), 2)
        conditions._expiries[("tank", "HighLevel")] = time.time() + 100.0  # (a wait)
        task = asyncio.create_task(conditions.run_shelving())
        for _ in range(5):
            await asyncio.sleep(0)  # (into its wait for that shelving's end)
        conditions._wake.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        assert task in done and task.cancelled()
