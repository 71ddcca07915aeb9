"""Fixtures for the runtime tests: hosts of both kinds, an event log to await, and
the check that a host leaves no process and no shared memory behind."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.processes import children
from twin_server.engine.session import SessionEvent
from twin_server.runtime import LocalHost, WorkerHost

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"


class EventLog:
    """Every (session, event) a host reported, and a way to await one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, SessionEvent]] = []
        self._changed = asyncio.Event()

    def __call__(self, name: str, event: SessionEvent) -> None:
        self.events.append((name, event))
        self._changed.set()

    def kinds(self, name: str) -> list[str]:
        return [e.kind for n, e in self.events if n == name]

    async def wait(self, name: str, kind: str, timeout: float = 10.0) -> SessionEvent:
        """The first event ``kind`` of session ``name`` (waiting for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for n, event in self.events:
                    if n == name and event.kind == kind:
                        return event
                self._changed.clear()
                await self._changed.wait()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` (a frame read: there is no event for a tick) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        await asyncio.sleep(0.005)


def child_processes() -> list[int]:
    """Live children of this process, but multiprocessing's resource tracker."""
    return list(children())


def shm_blocks() -> set[str]:
    """Our shared-memory blocks in /dev/shm (named after this process's pid)."""
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(f"tw{os.getpid()}x")}


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
async def workers(events: EventLog) -> AsyncIterator[WorkerHost]:
    """A started WorkerHost of two shared workers; afterwards nothing is left."""
    host = WorkerHost(events, workers=2, hang_timeout=1.5, snapshot_interval=0.2)
    await host.start()
    try:
        yield host
    finally:
        await host.aclose()
        assert children() == {}
        assert shm_blocks() == set()


@pytest.fixture(params=["local", "worker"])
async def host(request: pytest.FixtureRequest,
               events: EventLog) -> AsyncIterator[LocalHost | WorkerHost]:
    """Each kind of host, for behaviour that must be the same in both."""
    if request.param == "local":
        local = LocalHost(events)
        try:
            yield local
        finally:
            await local.aclose()
        return
    remote = WorkerHost(events, workers=1)
    await remote.start()
    try:
        yield remote
    finally:
        await remote.aclose()
        assert children() == {}
        assert shm_blocks() == set()
