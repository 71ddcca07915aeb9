"""The HIL/<peer> nodes in our address space, read by a real client."""

from __future__ import annotations

import asyncio

from asyncua import Client, ua

from tests.hil.conftest import LOOP, SoftPlc, cancel, hosted_of, load, quiet_host, wait_for
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.hil import HilMirror
from twin_server.opcua.hil_nodes import build_hil
from twin_server.opcua.server import NAMESPACE_URI, OpcUaServer
from twin_server.runtime.sinks import Pacer

#: the None endpoint, anonymous may do everything (security is tested in tests/security)
OPEN = SecurityConfig(policies=("None",), anonymous="admin")


class TestHilNodes:
    async def test_health_nodes_follow_the_link(self, shared_plc: SoftPlc) -> None:
        """HIL.<peer>.Connected, State, counters and binding statuses follow the mirror."""
        loaded = load(shared_plc.endpoint, LOOP)
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
                    ns = await client.get_namespace_index(NAMESPACE_URI)

                    def node(path: str) -> object:
                        return client.get_node(ua.NodeId(f"HIL.plc.{path}", ns))

                    async def connected() -> bool:
                        return bool(await node("Connected").read_value())  # type: ignore[attr-defined]

                    deadline = asyncio.get_running_loop().time() + 5
                    while not await connected():
                        assert asyncio.get_running_loop().time() < deadline
                        await asyncio.sleep(0.05)
                    await wait_for(lambda: mirror.statistics().peer("plc")
                                   .binding("valve").status == "Good", 5)
                    await asyncio.sleep(0.2)
                    assert await node("State").read_value() == "connected"  # type: ignore[attr-defined]
                    assert await node("WritesSent").read_value() >= 1  # type: ignore[attr-defined]
                    latency = node("RoundTripLatency")
                    assert await latency.read_data_type_as_variant_type() == ua.VariantType.Double  # type: ignore[attr-defined]
                    status = node("Bindings.valve.Status")
                    assert await status.read_value() == "Good"  # type: ignore[attr-defined]
                    browse = await client.nodes.objects.get_child(
                        [f"{ns}:TwinServer", f"{ns}:HIL", f"{ns}:plc", f"{ns}:Connected"])
                    assert browse.nodeid == ua.NodeId("HIL.plc.Connected", ns)
            finally:
                await cancel(*tasks)
        finally:
            await server.stop()
