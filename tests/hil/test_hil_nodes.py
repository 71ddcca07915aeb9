"""The HIL/<peer> nodes in our address space, read by a real client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from asyncua import Client, ua
from structlog.testing import capture_logs

from tests.hil.conftest import LOOP, SoftPlc, cancel, hosted_of, load, quiet_host, wait_for
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.hil import HilMirror
from twin_server.opcua.hil_nodes import build_hil
from twin_server.opcua.server import NAMESPACE_URI, OpcUaServer
from twin_server.runtime.sinks import Pacer

#: the None endpoint, anonymous may do everything (security is tested in tests/security)
OPEN = SecurityConfig(policies=("None",), anonymous="admin")


@contextlib.asynccontextmanager
async def served(endpoint: str, peer: str = LOOP
                 ) -> AsyncIterator[tuple[HilMirror, Client, int]]:
    """A mirror of a tank session with ``peer``'s bindings, its HIL nodes in a server,
    and a client of that server (with our namespace index)."""
    loaded = load(endpoint, peer)
    host = quiet_host()
    hosted = await hosted_of(host, loaded)
    mirror = HilMirror(loaded.config.hil, {"s": hosted})
    server = OpcUaServer(ServerConfig(security=OPEN), endpoint="opc.tcp://127.0.0.1:0/twin-server")
    await server.start()
    try:
        aspace = server.asyncua.iserver.aspace
        batch = server._batch()
        nodes = build_hil(batch, server.nodeid(server.root_path()), mirror.statistics())
        batch.commit(aspace)
        tasks = [asyncio.create_task(mirror.run()),
                 asyncio.create_task(Pacer(hosted, [mirror]).run()),
                 asyncio.create_task(nodes.run(aspace, mirror.statistics, period=0.05))]
        try:
            async with Client(server.endpoint_url) as client:
                yield mirror, client, await client.get_namespace_index(NAMESPACE_URI)
        finally:
            await cancel(*tasks)
    finally:
        await server.stop()
        await host.aclose()


async def read(client: Client, ns: int, path: str) -> object:
    return await client.get_node(ua.NodeId(f"HIL.plc.{path}", ns)).read_value()


class TestHilNodes:
    async def test_health_nodes_follow_the_link(self, shared_plc: SoftPlc) -> None:
        """HIL.<peer>.Connected, State, counters and binding statuses follow the mirror."""
        async with served(shared_plc.endpoint) as (mirror, client, ns):
            deadline = asyncio.get_running_loop().time() + 5
            while not await read(client, ns, "Connected"):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            await wait_for(lambda: mirror.statistics().peer("plc")
                           .binding("valve").status == "Good", 5)
            await asyncio.sleep(0.2)
            assert await read(client, ns, "State") == "connected"
            assert await read(client, ns, "WritesSent") >= 1  # type: ignore[operator]
            latency = client.get_node(ua.NodeId("HIL.plc.RoundTripLatency", ns))
            assert await latency.read_data_type_as_variant_type() == ua.VariantType.Double
            assert await read(client, ns, "Bindings.valve.Status") == "Good"
            browse = await client.nodes.objects.get_child(
                [f"{ns}:TwinServer", f"{ns}:HIL", f"{ns}:plc", f"{ns}:Connected"])
            assert browse.nodeid == ua.NodeId("HIL.plc.Connected", ns)


@pytest.fixture
def slow_plc() -> Iterator[SoftPlc]:
    plc = SoftPlc("--min-publishing-interval", "100").start()
    try:
        yield plc
    finally:
        plc.kill()


class TestRevisedIntervals:
    async def test_the_plcs_revision_is_shown_and_logged(self, slow_plc: SoftPlc) -> None:
        """A PLC that revises our 50 ms publishing interval to 100 ms: the HIL nodes
        show both, each binding its revised sampling interval, and one event says so."""
        with capture_logs() as logs:
            async with served(slow_plc.endpoint) as (mirror, client, ns):
                await wait_for(lambda: mirror.statistics().peer("plc")
                               .binding("valve").status == "Good", 10)
                await asyncio.sleep(0.2)
                assert await read(client, ns, "RequestedPublishingInterval") == 50.0
                assert await read(client, ns, "PublishingInterval") == 100.0
                assert await read(client, ns, "Bindings.valve.SamplingInterval") == 100.0
                assert await read(client, ns, "Bindings.level.SamplingInterval") == 0.0
        revised = [e for e in logs if e["event"] == "hil_intervals_revised"]
        assert len(revised) == 1
        assert revised[0]["publishing_ms"] == 100.0
        assert revised[0]["requested_publishing_ms"] == 50.0
        assert revised[0]["sampling_ms"] == {"valve": 100.0}


class TestClampedCounted:
    ECHO = """
[hil.plc.bindings.echo]
variable = "tank.inflow"
direction = "from_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoOut"
"""

    async def test_a_clamped_value_shows_on_the_bindings_nodes(self, shared_plc: SoftPlc) -> None:
        """-1.0 from the PLC into an input of range [0, inf]: the binding's Status node
        reads GoodClamped, not Good, and its Clamped node counts it."""
        async with Client(shared_plc.endpoint) as plc:
            echo = plc.get_node("ns=2;s=PLC.EchoIn")
            await echo.write_value(-1.0)
            try:
                async with served(shared_plc.endpoint, self.ECHO) as (_, client, ns):
                    deadline = asyncio.get_running_loop().time() + 5
                    while await read(client, ns, "Bindings.echo.Clamped") != 1:
                        assert asyncio.get_running_loop().time() < deadline
                        await asyncio.sleep(0.05)
                    assert await read(client, ns, "Bindings.echo.Status") == "GoodClamped"
            finally:
                await echo.write_value(0.0)
