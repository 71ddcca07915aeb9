"""A twin of 20,000 components over 127.0.0.1 with real clients: creating a session of
it holds neither the server nor the worker it shares with a 100 Hz session.

(The twin is defined in the config, so the daemon's start loads it; a session of it
takes tens of seconds to build on a busy machine, hence this module's timeout.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.opcua.conftest import MODULE_LOOP, PLANT, Connected, message, run_daemon, s, stop_daemon
from tests.opcua.test_live import _session_event_type, _subscribe_events
from tests.test_workers import chain
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = [MODULE_LOOP, pytest.mark.timeout(300)]

SIZE = 20_000
CONFIG = PLANT + chain("big", SIZE) + """
[server]
workers = 1
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.steady]
twin = "plant"
step_size = 0.01
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def ua_client(daemon: Daemon) -> AsyncIterator[Connected]:
    async with Client(daemon.endpoint_url, timeout=10) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        yield Connected(daemon, client, ns)


class Ticking:
    """Another client reading the 100 Hz session's StepCount every 50 ms: the longest
    it saw the count stand still, and its slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.still = self.slowest = 0.0
        self.reads = 0
        self.connected = False
        self._done = asyncio.Event()
        self.task = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        async with Client(self.url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            node = client.get_node(ua.NodeId("Sessions.steady.StepCount", ns))
            count, moved = await node.read_value(), time.monotonic()
            while not self._done.is_set():
                asked = time.monotonic()
                now_count = await node.read_value()
                now = time.monotonic()
                self.reads += 1
                self.slowest = max(self.slowest, now - asked)
                if now_count != count:
                    count, moved = now_count, now
                self.still = max(self.still, now - moved)
                await asyncio.sleep(0.05)
            await client.check_connection()  # (raises if its keep-alive had failed)
            self.connected = True

    async def stop(self) -> None:
        self._done.set()
        await self.task


class TestCreatingABigTwin:
    async def test_create_session_holds_no_clock_and_no_client(self,
                                                              ua_client: Connected) -> None:
        """CreateSession of a twin of 20,000 components: answered within seconds (the
        rest runs in the background), its created event announces the end, the 100 Hz
        session in the same worker ticks on all along, and another client is
        answered within a second and stays connected."""
        daemon = ua_client.daemon
        events = await _subscribe_events(ua_client, ua_client.node("Sessions"),
                                         _session_event_type(ua_client))
        ticking = Ticking(daemon.endpoint_url)
        try:
            await asyncio.sleep(1.0)  # (connected, and the tank seen ticking)
            asked = time.monotonic()
            created = await ua_client.server_call("CreateSession", s("big"), s("huge"), s(""))
            answered = time.monotonic() - asked
            assert created.StatusCode.is_good(), message(created)
            assert created.OutputArguments[0].Value == ua.NodeId("Sessions.huge", ua_client.ns)

            async def announced() -> Any:
                while True:
                    event = await events.events.get()
                    if event.SourceName == "huge" and event.Kind in ("created",
                                                                     "create_failed"):
                        return event

            event = await asyncio.wait_for(announced(), 240)
        finally:
            await ticking.stop()
        assert event.Kind == "created", event.Message
        assert answered < 5.0, answered  # about a second: the build runs on afterwards
        assert ticking.connected and ticking.reads > 20
        assert ticking.slowest < 1.0, ticking.slowest
        assert ticking.still < 1.0, ticking.still  # the tank never stopped for a second
        await ua_client.client.check_connection()
        last = ua_client.node(f"Sessions.huge.Components.g{SIZE - 1}.Parameters.gain")
        assert await last.read_value() == 1.0
        deleted = await ua_client.server_call("DeleteSession", s("huge"))
        assert deleted.StatusCode.is_good(), message(deleted)

    async def test_a_name_being_created_is_taken(self, ua_client: Connected) -> None:
        """While a big session is created in the background, CreateSession of the same
        name is refused (BadBrowseNameDuplicated), as is its deletion
        (BadInvalidState), until its created event."""
        created = await ua_client.server_call("CreateSession", s("big"), s("busy"), s(""))
        assert created.StatusCode.is_good(), message(created)
        again = await ua_client.server_call("CreateSession", s("plant"), s("busy"), s(""))
        assert again.StatusCode.value == ua.StatusCodes.BadBrowseNameDuplicated, message(again)
        assert "being created" in message(again)
        early = await ua_client.server_call("DeleteSession", s("busy"))
        assert early.StatusCode.value == ua.StatusCodes.BadInvalidState, message(early)
        daemon = ua_client.daemon
        async with asyncio.timeout(240):
            while "busy" not in daemon.sessions or "busy" in daemon._creating:
                await asyncio.sleep(0.1)
        deleted = await ua_client.server_call("DeleteSession", s("busy"))
        assert deleted.StatusCode.is_good(), message(deleted)
