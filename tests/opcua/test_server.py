"""The server's lifecycle: endpoint, adding and removing sessions, statistics, speed."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadNodeIdUnknown

from tests.opcua.conftest import MODULE_LOOP, Served, plant, serve, unserve
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.engine.session import SessionSettings
from twin_server.engine.twin import TwinDefinition
from twin_server.opcua.server import NAMESPACE_URI, OpcUaServer, ServerState
from twin_server.runtime import HostedSession, LocalHost
from twin_server.runtime.compile import parse_config
from twin_server.runtime.sinks import Pacer

#: the None endpoint, anonymous may do everything (security is tested in tests/security)
OPEN = SecurityConfig(policies=("None",), anonymous="admin")

pytestmark = MODULE_LOOP


class TestEndpoint:
    async def test_port_zero_is_replaced(self, server: OpcUaServer) -> None:
        """With port 0 the server binds a free port and endpoint_url names it."""
        url = urlparse(server.endpoint_url)
        assert url.hostname == "127.0.0.1"
        assert url.port and url.port > 0
        assert url.path == "/twin-server"

    async def test_endpoints_carry_the_bound_port(self, server: OpcUaServer) -> None:
        """GetEndpoints offers the bound URL, with no security for now."""
        async with Client(server.endpoint_url, timeout=10) as client:
            endpoints = await client.get_endpoints()
        assert {e.EndpointUrl for e in endpoints} == {server.endpoint_url}
        assert {e.SecurityMode for e in endpoints} == {ua.MessageSecurityMode.None_}

    async def test_namespace(self, served: Served) -> None:
        """Our nodes live in the urn:twin-server namespace."""
        array = await served.client.get_namespace_array()
        assert array[served.ns] == NAMESPACE_URI
        assert served.server.namespace == served.ns

    async def test_stop_before_start(self) -> None:
        """Stopping a server that never started is a no-op."""
        server = OpcUaServer(ServerConfig(security=OPEN))
        await server.stop()
        assert server.state is ServerState.STOPPED


class TestSessions:
    async def test_two_sessions_of_one_twin(self, served: Served, host: LocalHost) -> None:
        """Two sessions of the same twin have separate subtrees and values."""
        other = await serve(served.server, host, "other")
        try:
            other.step(3)
            await served.server.publish("other")
            assert await served.node("Sessions.other.StepCount").read_value() == 3
            assert await served.var("StepCount").read_value() == 0
        finally:
            await unserve(served.server, host, "other")

    async def test_remove_session(self, served: Served, host: LocalHost) -> None:
        """A removed session's nodes are gone and the Sessions folder no longer lists it."""
        await serve(served.server, host, "gone")
        node = served.node("Sessions.gone.Components.tank.Outputs.level")
        assert await node.read_value() == 0.5
        await unserve(served.server, host, "gone")
        with pytest.raises(BadNodeIdUnknown):
            await node.read_value()
        names = [(await c.read_browse_name()).Name
                 for c in await served.node("Sessions").get_children()]
        assert names == ["tank"]

    async def test_readd_after_remove(self, served: Served, host: LocalHost) -> None:
        """A session name can be served again after removal (NodeIds are stable)."""
        for _ in range(2):
            await serve(served.server, host, "again")
            await unserve(served.server, host, "again")

    async def test_removed_sessions_leave_no_folders(self, served: Served,
                                                     host: LocalHost) -> None:
        """Sessions created and removed under new names leave the server's folder
        bookkeeping as it was (it grew with every name a client ever used)."""
        folders = set(served.server._folders)
        for i in range(3):
            await serve(served.server, host, f"new{i}")
            await unserve(served.server, host, f"new{i}")
        assert served.server._folders == folders

    async def test_duplicate_session(self, served: Served) -> None:
        """Adding a session name twice is refused."""
        with pytest.raises(ValueError, match="already served"):
            await served.server.add_session(served.hosted, plant(), pacer=served.pacer)

    async def test_duplicate_twin(self, served: Served) -> None:
        """Adding a twin name twice is refused."""
        with pytest.raises(ValueError, match="already served"):
            await served.server.add_twin(plant())

    async def test_statistics(self, served: Served) -> None:
        """statistics() counts twins, sessions and our nodes in an immutable snapshot."""
        stats = served.server.statistics()
        assert (stats.twins, stats.sessions, stats.state) == (1, 1, ServerState.RUNNING)
        assert stats.nodes > len(served.session.variables())
        with pytest.raises(AttributeError):
            stats.sessions = 2  # type: ignore[misc]


def _tanks(count: int) -> TwinDefinition:
    text = "[twins.many]\n" + "".join(
        f'[twins.many.components.tank{i}]\nmodel = "water_tank"\n' for i in range(count))
    return parse_config(text).twins["many"]


class TestBuildSpeed:
    async def test_thousands_of_variables(self, server: OpcUaServer, host: LocalHost) -> None:
        """A session of 2,700 variables (9,000 nodes) is served in well under a second
        of CPU (measured ~0.25-0.5 s on a shared 2-core machine; the bound is loose)."""
        twin = _tanks(300)
        await host.create("many", twin, SessionSettings())
        hosted = HostedSession(host, "many")
        pacer = Pacer(hosted, (server.publisher,))
        started = time.process_time()
        await server.add_session(hosted, twin, pacer=pacer)
        elapsed = time.process_time() - started
        try:
            assert len(host.layout("many").variables) == 2700
            assert elapsed < 2.0
        finally:
            await unserve(server, host, "many")
