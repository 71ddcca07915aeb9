"""HIL bindings and released forces, in the whole daemon against the soft PLC: Reset and
ReleaseInputs leave no client's force behind, and the inputs a PLC drives are forced
again by their binding before the call answers."""

from __future__ import annotations

import asyncio
import dataclasses

from asyncua import Client, ua

from tests.hil.conftest import LOOP, SoftPlc, load, wait_for
from twin_server.engine.session import VarKey
from twin_server.models.base import Kind
from twin_server.runtime.daemon import Daemon

INFLOW = VarKey("tank", Kind.INPUT, "inflow")
SCALED = VarKey("scaled", Kind.INPUT, "input")


class TestReforced:
    async def test_reset_and_release_keep_the_plc_inputs_forced(
            self, shared_plc: SoftPlc) -> None:
        """After Reset and ReleaseInputs the PLC-driven input is forced (with the PLC's
        value) at once, a client's force is not; ForcedInputs shows it."""
        loaded = load(shared_plc.endpoint, LOOP, rtf=4.0)
        server = loaded.config.server.model_copy(update={"workers": 0})  # (quicker)
        loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
            update={"server": server}))
        daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            session = daemon.sessions["s"].session  # (in a worker, or in-process)
            mirror = daemon.hil
            assert mirror is not None

            def applied() -> bool:  # the PLC's valve command reached the input
                (peer,) = mirror.statistics().peers
                return any(b.variable == "tank.inflow" and b.transfers > 0
                           for b in peer.bindings)

            await wait_for(applied, timeout=20)
            assert INFLOW in await session.forced()
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                node = client.get_node(ua.NodeId("Sessions.s", ns))
                await client.get_node(ua.NodeId("Sessions.s.Components.scaled.Inputs.input",
                                                ns)).write_value(3.0)
                await node.call_method(ua.NodeId("Sessions.s.Halt", ns))
                assert SCALED in await session.forced()
                await node.call_method(ua.NodeId("Sessions.s.Reset", ns))
                # (the PLC's last value: one may still be on its way from before the Halt)
                assert set(await session.forced()) == {INFLOW}
                released = await node.call_method(ua.NodeId("Sessions.s.ReleaseInputs", ns))
                assert released == ["tank.inflow"]
                assert INFLOW in await session.forced()
                shown = client.get_node(ua.NodeId("Sessions.s.ForcedInputs", ns))
                await wait_for_value(shown, ["tank.inflow"])
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)


async def wait_for_value(node: object, expected: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await node.read_value()) != expected:  # type: ignore[attr-defined]
        assert asyncio.get_running_loop().time() < deadline, f"still {value!r}"
        await asyncio.sleep(0.1)
