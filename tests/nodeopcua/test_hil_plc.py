"""The daemon's HIL mirror against a node-opcua soft PLC (``scripts/plc.js``), another
stack than the asyncua soft PLC of tests/hil: the loop closes, and HIL/<peer> shows
the intervals node-opcua revised (it raises anything below 50 ms to 50 ms)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

from asyncua import Client, ua

from tests.hil.conftest import LOOP, wait_for
from tests.nodeopcua import NodeOpcua
from twin_server.engine.session import VarKey
from twin_server.models.base import Kind
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon

#: the tank twin of tests/hil with the loop's bindings, an echo pair for the round trip,
#: and a publish rate of 50 Hz: the 20 ms publishing interval asked of the PLC is below
#: node-opcua's minimum
CONFIG = """
[server.security]
policies = ["None"]
anonymous = "admin"

[twins.tank]
connections = []
[twins.tank.components.tank]
model = "water_tank"
parameters = {{ area = 0.5, outflow_coefficient = 0.05, height = 2.0, initial_level = 0.5 }}
[twins.tank.components.src]
model = "constant"
[twins.tank.components.back]
model = "gain"

[sessions.s]
twin = "tank"
realtime_factor = 4.0
publish_rate = 50.0

[hil.plc]
endpoint = "{endpoint}"
session = "s"
reconnect_min = 0.2
reconnect_max = 1.0
""" + LOOP + """
[hil.plc.bindings.echo_out]
variable = "src.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoIn"

[hil.plc.bindings.echo_back]
variable = "back.input"
direction = "from_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoOut"
"""

LEVEL = VarKey("tank", Kind.OUTPUT, "level")
INFLOW = VarKey("tank", Kind.INPUT, "inflow")
SRC = VarKey("src", Kind.PARAMETER, "value")
BACK = VarKey("back", Kind.INPUT, "input")
ROUNDS = 20


async def _lines(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
    """Every JSON line the PLC prints after its ready line."""
    while line := await stream.readline():
        into.append(json.loads(line))


class TestNodeOpcuaPlc:
    async def test_loop_closes_and_revised_intervals_are_shown(
            self, nodeopcua: NodeOpcua) -> None:
        """Against a node-opcua PLC the link is Good, the level and the valve command
        flow, and HIL/plc shows exactly the intervals node-opcua revised ours to."""
        async with nodeopcua.spawn("plc.js", port=0, scan=10) as (plc, ready):
            assert plc.stdout is not None
            said: list[dict[str, Any]] = []
            reader = asyncio.create_task(_lines(plc.stdout, said))
            daemon = Daemon(parse_config(CONFIG.format(endpoint=ready["endpoint"])),
                            endpoint="opc.tcp://127.0.0.1:0/twin-server")
            runner = asyncio.create_task(daemon.run())
            try:
                await asyncio.wait_for(daemon.wait_ready(), 30)
                mirror = daemon.hil
                assert mirror is not None
                session = daemon.sessions["s"].session
                await wait_for(lambda: all(
                    mirror.statistics().peer("plc").binding(b).status == "Good"
                    for b in ("level", "valve", "echo_out", "echo_back")), 20)
                # the PLC's P controller (setpoint 1.0 m) drives the level up from 0.5 m
                await wait_for(lambda: float(session.values()[LEVEL]) > 0.6, timeout=20)
                # (the level rises meanwhile, and each value crosses the link a round
                # trip late, more on a busy machine: each PLC value is bracketed by the
                # twin's values a second before and just after it)
                before = session.values()
                await asyncio.sleep(1.0)
                async with Client(ready["endpoint"], timeout=10) as plc_client:
                    pns = await plc_client.get_namespace_index("urn:soft-plc")
                    plc_level = float(await plc_client.get_node(
                        ua.NodeId("PLC.Level", pns)).read_value())
                    plc_valve = float(await plc_client.get_node(
                        ua.NodeId("PLC.Valve", pns)).read_value())
                    after = session.values()
                levels = sorted(float(v[LEVEL]) for v in (before, after))
                inflows = sorted(float(v[INFLOW]) for v in (before, after))
                assert plc_level > 0.6
                assert levels[0] - 0.05 < plc_level < levels[1] + 0.05, (plc_level, levels)
                assert inflows[0] - 0.02 < plc_valve < inflows[1] + 0.02, (plc_valve, inflows)
                assert float(after[INFLOW]) < 0.05 + 0.2 * 0.5

                subscriptions = [s["subscription"] for s in said if "subscription" in s]
                items = [s["monitoredItem"] for s in said if "monitoredItem" in s]
                assert len(subscriptions) == 1, said
                revised_publishing = subscriptions[-1]["publishingInterval"]
                revised_sampling = {i["nodeId"]: i["samplingInterval"] for i in items}
                assert revised_publishing == ready["minimumPublishingInterval"] != 20.0
                async with Client(daemon.endpoint_url, timeout=10) as client:
                    ns = await client.get_namespace_index("urn:twin-server")

                    async def hil(path: str) -> object:
                        return await client.get_node(
                            ua.NodeId(f"HIL.plc.{path}", ns)).read_value()

                    assert await hil("RequestedPublishingInterval") == 20.0
                    assert await hil("PublishingInterval") == revised_publishing
                    valve_sampling = revised_sampling[f"ns={pns};s=PLC.Valve"]
                    assert valve_sampling == ready["minimumSamplingInterval"] != 20.0
                    assert await hil("Bindings.valve.SamplingInterval") == valve_sampling
                    assert await hil("Bindings.level.SamplingInterval") == 0.0

                # a rough round trip: twin output -> node-opcua PLC -> twin input
                samples = []
                for i in range(1, ROUNDS + 1):
                    await session.write(SRC, float(i))
                    started = time.perf_counter()
                    while float(session.values()[BACK]) != float(i):
                        assert time.perf_counter() - started < 5, f"round {i} lost"
                        await asyncio.sleep(0.001)
                    samples.append((time.perf_counter() - started) * 1e3)
                print(f"node-opcua PLC round trip (twin output -> PLC -> twin input, "
                      f"publish period 20 ms, revised to {revised_publishing:g} ms): "
                      f"p50 {statistics.median(samples):.0f} ms, max {max(samples):.0f} ms "
                      f"over {ROUNDS} rounds")
            finally:
                daemon.stop()
                await asyncio.wait_for(runner, 30)
                reader.cancel()
