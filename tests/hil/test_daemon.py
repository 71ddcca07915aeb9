"""HIL inside the whole daemon: the mirror runs in its TaskGroup, closes the loop
with the soft PLC, and shows its health under HIL/<peer> to a real client."""

from __future__ import annotations

import asyncio
import dataclasses

from asyncua import Client, ua

from tests.hil.conftest import LOOP, SoftPlc, free_port, load, wait_for
from twin_server.engine.session import VarKey
from twin_server.models.base import Kind
from twin_server.runtime.daemon import Daemon

LEVEL = VarKey("tank", Kind.OUTPUT, "level")


class TestDaemonWithPlc:
    async def test_loop_closes_and_health_is_served(self, shared_plc: SoftPlc) -> None:
        """The daemon mirrors the tank to the PLC and back; HIL/plc says Connected."""
        daemon = Daemon(load(shared_plc.endpoint, LOOP, rtf=4.0),
                        endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            session = daemon.sessions["s"].session
            # the PLC's P controller (setpoint 1.0 m) drives the level up from 0.5 m
            await wait_for(lambda: float(session.values()[LEVEL]) > 0.6, timeout=20)
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                connected = client.get_node(ua.NodeId("HIL.plc.Connected", ns))
                await wait_for_value(connected, True)
                writes = await client.get_node(ua.NodeId("HIL.plc.WritesSent", ns)).read_value()
                assert writes > 0
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)


async def wait_for_value(node: object, expected: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await node.read_value()) != expected:  # type: ignore[attr-defined]
        assert asyncio.get_running_loop().time() < deadline, f"still {value!r}"
        await asyncio.sleep(0.1)


class TestSessionReplaced:
    async def test_mirror_follows_a_session_deleted_and_created_again(
            self, shared_plc: SoftPlc) -> None:
        """Deleting the mirrored session idles its peer (the daemon runs on); a new
        session of that name is mirrored again."""
        daemon = Daemon(load(shared_plc.endpoint, LOOP, rtf=4.0),
                        endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            first = daemon.sessions["s"].session
            await wait_for(lambda: float(first.values()[LEVEL]) > 0.6, timeout=20)
            await daemon.delete_session("s")
            await asyncio.sleep(0.5)
            assert not runner.done()
            second = await daemon.create_session("tank", "s", {})
            await second.start()
            assert float(second.values()[LEVEL]) == 0.5
            await wait_for(lambda: float(second.values()[LEVEL]) > 0.6, timeout=20)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)


class TestInputQuality:
    async def test_an_input_the_plc_feeds_is_not_good_before_the_plc_answered(self) -> None:
        """Before its PLC ever sent a value (none listens here), the input that the PLC
        feeds reads BadWaitingForInitialData from READY on, not its default as Good."""
        loaded = load(f"opc.tcp://127.0.0.1:{free_port()}/plc", LOOP)
        server = loaded.config.server.model_copy(update={"workers": 0})
        loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
            update={"server": server}))
        daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
        seen: list[str] = []

        async def at_ready(daemon: Daemon) -> None:
            assert daemon.server is not None
            node = daemon.server.asyncua.get_node(
                daemon.server.session_nodeid("s", "Components.tank.Inputs.inflow"))
            dv = await node.read_data_value(raise_on_bad_status=False)
            seen.append(dv.StatusCode.name)
            daemon.stop()

        await asyncio.wait_for(daemon.run(on_ready=at_ready), 30)
        assert seen == ["BadWaitingForInitialData"]

    async def test_mirrored_input_node_carries_the_link_quality(self, own_plc: SoftPlc) -> None:
        """While the PLC is down, the session's input node keeps its value with
        UncertainLastUsableValue; when the link recovers it is Good again."""
        daemon = Daemon(load(own_plc.endpoint, LOOP, rtf=4.0),
                        endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                inflow = client.get_node(ua.NodeId("Sessions.s.Components.tank.Inputs.inflow", ns))
                await wait_for_status(inflow, "Good")
                # (the node is Good before any link: wait for the PLC's first command)
                assert daemon.hil is not None
                mirror = daemon.hil
                await wait_for(lambda: mirror.statistics().peer("plc")
                               .binding("valve").status == "Good", 15)
                own_plc.kill()
                await wait_for_status(inflow, "UncertainLastUsableValue", timeout=5.0)
                await asyncio.to_thread(own_plc.start)  # (the daemon and client run on)
                await wait_for_status(inflow, "Good", timeout=15.0)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)


async def wait_for_status(node: object, name: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        dv = await node.read_data_value(raise_on_bad_status=False)  # type: ignore[attr-defined]
        if dv.StatusCode.name == name:
            return
        assert asyncio.get_running_loop().time() < deadline, f"still {dv.StatusCode.name}"
        await asyncio.sleep(0.1)
