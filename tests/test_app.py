"""The daemon in-process: sessions created and deleted at run time with their clocks
in the daemon's TaskGroup, and the expiry of idle client sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.opcua.conftest import MODULE_LOOP, PLANT, in_process, run_daemon, stop_daemon
from twin_server.engine.session import RunState
from twin_server.errors import InvalidState, NotFound
from twin_server.opcua import events as ev
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon, DaemonState

pytestmark = MODULE_LOOP

IDLE_TIMEOUT = 0.5
CONFIG = PLANT + f"""
[server]
session_idle_timeout = {IDLE_TIMEOUT}

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.main]
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
        assert daemon.state is DaemonState.STOPPED
        assert not daemon.manager.sessions


@pytest_asyncio.fixture(loop_scope="module")
async def client(daemon: Daemon) -> AsyncIterator[Client]:
    async with Client(daemon.endpoint_url, timeout=10) as client:
        yield client


@pytest.fixture
def no_expiry(daemon: Daemon) -> Any:
    """Expiry off for the test (its sessions live longer than the idle timeout)."""
    daemon.manager.idle_timeout = 3600.0
    yield
    daemon.manager.idle_timeout = IDLE_TIMEOUT


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


class TestStartInTests:
    async def test_a_daemon_not_ready_in_time_fails_its_start_and_ends(self) -> None:
        """A daemon that is not READY within the suite's bound fails its fixture with
        TimeoutError and is ended, instead of being awaited for ever as it runs on."""
        before = asyncio.all_tasks()
        async with asyncio.timeout(15):
            with pytest.raises(TimeoutError, match=r"not READY within 0\.01 s"):
                await run_daemon(CONFIG, timeout=0.01)
        assert not [t for t in asyncio.all_tasks() - before
                    if t is not asyncio.current_task() and not t.done()]


@pytest.mark.usefixtures("no_expiry")
class TestRuntimeSessions:
    async def test_clock_runs_and_stops(self, daemon: Daemon) -> None:
        """A session created at run time steps on its own clock, which Delete stops
        (the session closed, gone from the host)."""
        hosted = await daemon.create_session("plant", "runner", {})
        session = in_process(daemon, "runner")
        await hosted.start()
        await _until(lambda: hosted.frame().step_count >= 10)
        await daemon.delete_session("runner")
        assert session.closed
        assert "runner" not in daemon.manager.sessions
        assert daemon.host is not None and "runner" not in daemon.host.names()

    async def test_many_sessions_run_together(self, daemon: Daemon) -> None:
        """Twenty sessions created, started, and deleted: all step, the config one too."""
        main = daemon.session("main")
        sessions = [await daemon.create_session("plant", f"crowd{i}", {}) for i in range(20)]
        local = [in_process(daemon, s.name) for s in sessions]
        for session in sessions:
            await session.start()
            daemon.touch(session.name)
        before = main.frame().step_count
        await _until(lambda: all(s.frame().step_count >= 5 for s in sessions))
        assert main.frame().step_count > before
        for session in sessions:
            await daemon.delete_session(session.name)
        assert all(s.closed for s in local)

    async def test_fork_runs_at_its_factor(self, daemon: Daemon) -> None:
        """A fork of the running config session runs as fast as possible."""
        main = daemon.session("main")
        child = await daemon.fork_session("main", "sprinter", 0.0)
        assert child.frame().state is RunState.RUNNING
        await _until(lambda: child.frame().step_count > main.frame().step_count + 1000)
        await daemon.delete_session("sprinter")

    async def test_delete_unknown(self, daemon: Daemon) -> None:
        """Deleting an unknown session raises NotFound, changing nothing."""
        with pytest.raises(NotFound):
            await daemon.delete_session("ghost")

    async def test_define_and_remove_twin(self, daemon: Daemon) -> None:
        """A twin defined at run time is served and removable."""
        twin = await daemon.define_twin(
            '[twins.extra.components.tank]\nmodel = "water_tank"\n')
        assert twin.name == "extra"
        await daemon.create_session("extra", "of_extra", {})
        with pytest.raises(InvalidState):
            await daemon.remove_twin("extra")
        await daemon.delete_session("of_extra")
        await daemon.remove_twin("extra")
        assert "extra" not in daemon.twins


class TestExpiry:
    async def test_idle_session_expires(self, daemon: Daemon, client: Client) -> None:
        """A client session nobody uses is deleted after the idle timeout, with an
        expired event that says why; the config session stays."""
        ns = await client.get_namespace_index(NAMESPACE_URI)
        events: asyncio.Queue[Any] = asyncio.Queue()

        class Handler:
            def event_notification(self, event: Any) -> None:
                events.put_nowait(event)

        sub = await client.create_subscription(10, Handler())
        await sub.subscribe_events(client.nodes.server,
                                   client.get_node(ua.NodeId(ev.SESSION_EVENT_TYPE, ns)))
        await daemon.create_session("plant", "forgotten", {})
        async with asyncio.timeout(5):
            while True:
                event = await events.get()
                if event.Kind == "expired":
                    break
        assert event.SourceName == "forgotten"
        assert event.Severity == ev.SEVERITY_EXPIRED
        assert "session_idle_timeout" in event.Message.Text
        assert "forgotten" not in daemon.manager.sessions
        # the config session, idle just as long (nobody reads it), never expires
        assert daemon.manager.idle_for("main") > IDLE_TIMEOUT
        assert "main" in daemon.manager.sessions
        await sub.delete()

    async def test_reads_keep_it_alive(self, daemon: Daemon, client: Client) -> None:
        """A session a client keeps reading does not expire; left alone, it does."""
        ns = await client.get_namespace_index(NAMESPACE_URI)
        await daemon.create_session("plant", "read_often", {})
        node = client.get_node(ua.NodeId("Sessions.read_often.StepCount", ns))
        loop = asyncio.get_running_loop()
        until = loop.time() + 3 * IDLE_TIMEOUT
        while loop.time() < until:
            await node.read_value()
            await asyncio.sleep(IDLE_TIMEOUT / 4)
        assert "read_often" in daemon.manager.sessions
        await _until(lambda: "read_often" not in daemon.manager.sessions)

    async def test_subscription_keeps_it_alive(self, daemon: Daemon, client: Client) -> None:
        """A session with a monitored item does not expire."""
        ns = await client.get_namespace_index(NAMESPACE_URI)
        await daemon.create_session("plant", "watched", {})

        class Quiet:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                pass

        sub = await client.create_subscription(50, Quiet())
        await sub.subscribe_data_change(
            client.get_node(ua.NodeId("Sessions.watched.Components.tank.Outputs.level", ns)))
        await asyncio.sleep(4 * IDLE_TIMEOUT)
        assert "watched" in daemon.manager.sessions
        await sub.delete()
        await _until(lambda: "watched" not in daemon.manager.sessions)
