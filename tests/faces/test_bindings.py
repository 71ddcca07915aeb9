"""A face bound to a session, served by a real daemon and read, written and called by
real asyncua clients over 127.0.0.1: on the daemon's endpoint and on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from structlog.testing import capture_logs

from tests.faces.conftest import DI, TANK, TANK_FACE, TANK_URI
from twin_server.faces.loader import INITIAL
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import Daemon

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
MACHINE_URI = "urn:example:tank-machine"
LEVEL, INFLOW, OUTFLOW, OVERFLOW, VALVE, SETPOINT, TEMPERATURE = (
    6001, 6011, 6021, 6031, 6041, 6051, 6061)
START, STOP, RESET = 7001, 7002, 7003

CONFIG = TANK_FACE + """\
"nsu={uri};i=6011" = "tank.inflow"
"DeviceSet/Tank1/Outflow" = "tank.outflow"
"DeviceSet/Tank1/Overflow" = "tank.overflow"
"DeviceSet/Tank1/OutletValve" = "tank.outflow_coefficient"
"DeviceSet/Tank1/LevelSetpoint" = "source.value"

[faces.machine.methods]
"DeviceSet/Tank1/Start" = "Start"
"DeviceSet/Tank1/Stop" = "Suspend"
"DeviceSet/Tank1/Reset" = "Reset"

[faces.remote]
nodesets = ["{di}", "{tank}"]
session = "tank"
endpoint = "opc.tcp://127.0.0.1:0/machine"
application_uri = "{machine}"
application_name = "Tank machine"

[faces.remote.bindings]
"DeviceSet/Tank1/Level" = "tank.level"
"DeviceSet/Tank1/OutletValve" = "tank.outflow_coefficient"
"""


def write_config(folder: Path, **changes: str) -> Path:
    text = CONFIG.format(state=folder / "state", tank=TANK, di=DI, uri=TANK_URI,
                         machine=MACHINE_URI)
    for old, new in changes.items():
        text = text.replace(old, new)
    path = folder / "twin.toml"
    path.write_text(text)
    return path


class Served:
    """The daemon, a client of its endpoint and one of the face's own."""

    def __init__(self, daemon: Daemon, client: Client, machine: Client, ns: int,
                 twins: int) -> None:
        self.daemon, self.client, self.machine = daemon, client, machine
        self.ns, self.twins = ns, twins

    def face(self, ident: int) -> Any:
        return self.client.get_node(ua.NodeId(ident, self.ns))

    def twin(self, path: str) -> Any:
        return self.client.get_node(ua.NodeId(f"Sessions.tank.{path}", self.twins))

    async def publish(self) -> None:
        """Deliver the session's frame to every sink now and let the faces write it."""
        record = self.daemon.sessions["tank"]
        record.pacer.pulse()
        assert self.daemon.faces is not None
        await self.daemon.faces.sink.publish_now("tank")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """One daemon with the tank face on its endpoint and on one of its own."""
    folder = tmp_path_factory.mktemp("bound")
    daemon = Daemon(load_config(write_config(folder)))
    runner = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.wait_ready(), 30)
        assert daemon.faces is not None
        own = daemon.faces.endpoints["remote"].endpoint_url
        async with Client(daemon.endpoint_url, timeout=10) as client, \
                Client(own, timeout=10) as machine:
            yield Served(daemon, client, machine,
                         await client.get_namespace_index(TANK_URI),
                         await client.get_namespace_index("urn:twin-server"))
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)


async def _status(node: Any, value: Any, vtype: ua.VariantType) -> ua.StatusCode:
    """The status of writing ``value`` to ``node`` (Good or the refusal)."""
    try:
        await node.write_value(ua.DataValue(ua.Variant(value, vtype)))
    except ua.UaStatusCodeError as exc:
        return ua.StatusCode(exc.code)
    return ua.StatusCode(ua.StatusCodes.Good)


@MODULE_LOOP
class TestFaceWard:
    async def test_bound_variable_good_with_twin_value(self, served: Served) -> None:
        """A bound variable shows the session's value, Good, not the NodeSet's."""
        dv = await served.face(LEVEL).read_data_value()
        assert dv.StatusCode.is_good()
        assert dv.Value.Value == await served.twin("Components.tank.Outputs.level").read_value()
        assert dv.Value.VariantType is ua.VariantType.Double

    async def test_units_converted(self, served: Served) -> None:
        """The face's l/min show the twin's m^3/s times 60,000."""
        await served.publish()
        outflow = await served.twin("Components.tank.Outputs.outflow").read_value()
        face = await served.face(OUTFLOW).read_value()
        assert outflow > 0 and face == pytest.approx(outflow * 60_000, rel=1e-12)
        inflow = await served.face(INFLOW).read_value()
        assert inflow == pytest.approx(0.01 * 60_000)

    async def test_boolean_bound(self, served: Served) -> None:
        """A Boolean output feeds a Boolean face variable."""
        dv = await served.face(OVERFLOW).read_data_value()
        assert dv.StatusCode.is_good() and dv.Value.Value is False

    async def test_values_flow_while_running(self, served: Served) -> None:
        """Started through the face's Start, the session's level reaches a subscriber of
        the face's Level as it moves."""
        changes: asyncio.Queue[float] = asyncio.Queue()
        states: asyncio.Queue[str] = asyncio.Queue()
        state = served.twin("State")

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                (states if node == state else changes).put_nowait(val)

        async def reaches(wanted: str) -> None:
            # (the State node shows a change at the session's next publish, not at once)
            async with asyncio.timeout(10):
                while await states.get() != wanted:
                    pass

        sub = await served.client.create_subscription(50, Handler())
        try:
            await sub.subscribe_data_change([served.face(LEVEL), state])
            first = await asyncio.wait_for(changes.get(), 10)
            tank = served.face(5001)
            await tank.call_method(ua.NodeId(START, served.ns))
            await reaches("Running")
            moved = first
            async with asyncio.timeout(10):
                while moved == first:
                    moved = await changes.get()
            await tank.call_method(ua.NodeId(STOP, served.ns))
            await reaches("Suspended")
        finally:
            await sub.delete()


@MODULE_LOOP
class TestTwinWard:
    async def test_write_reaches_parameter(self, served: Served) -> None:
        """A write of the face's OutletValve is the twin's outflow_coefficient, shown on
        both sides."""
        valve = served.face(VALVE)
        assert (await _status(valve, 0.03, ua.VariantType.Double)).is_good()
        parameter = served.twin("Components.tank.Parameters.outflow_coefficient")
        assert await parameter.read_value() == 0.03
        assert await valve.read_value() == 0.03

    async def test_outside_eu_range_refused(self, served: Served) -> None:
        """A value outside the face's EURange is BadOutOfRange and changes nothing."""
        parameter = served.twin("Components.source.Parameters.value")
        before = await parameter.read_value()
        with capture_logs() as logs:
            status = await _status(served.face(SETPOINT), 1.9, ua.VariantType.Double)
        assert status.value == ua.StatusCodes.BadOutOfRange
        assert await parameter.read_value() == before
        refused = [e for e in logs if e["event"] == "write_refused"]
        assert "EURange [0.3, 1.7] m (got 1.9 m)" in refused[0]["reason"]

    async def test_wrong_type_refused(self, served: Served) -> None:
        """A Float written to a Double face variable is BadTypeMismatch."""
        status = await _status(served.face(VALVE), 0.01, ua.VariantType.Float)
        assert status.value == ua.StatusCodes.BadTypeMismatch

    async def test_output_not_writable(self, served: Served) -> None:
        """A face variable bound to an output is BadNotWritable, with the reason logged."""
        with capture_logs() as logs:
            status = await _status(served.face(LEVEL), 1.0, ua.VariantType.Double)
        assert status.value == ua.StatusCodes.BadNotWritable
        refused = [e for e in logs if e["event"] == "write_refused"]
        assert "shows the output tank.level" in refused[0]["reason"]

    async def test_setpoint_write(self, served: Served) -> None:
        """A write within the EURange reaches the bound parameter of another component."""
        assert (await _status(served.face(SETPOINT), 1.2, ua.VariantType.Double)).is_good()
        assert await served.twin("Components.source.Parameters.value").read_value() == 1.2

    async def test_method_refusal_passed_on(self, served: Served) -> None:
        """A bound method the session refuses (Start while Running) answers the session's
        status; Reset takes it back to Ready."""
        tank = served.face(5001)
        await tank.call_method(ua.NodeId(RESET, served.ns))
        assert await served.twin("State").read_value() == "Ready"
        await tank.call_method(ua.NodeId(START, served.ns))
        try:
            with pytest.raises(ua.UaStatusCodeError) as caught:
                await tank.call_method(ua.NodeId(START, served.ns))
            assert caught.value.code == ua.StatusCodes.BadInvalidState
        finally:
            await tank.call_method(ua.NodeId(RESET, served.ns))
        assert await served.twin("State").read_value() == "Ready"


@MODULE_LOOP
class TestUnbound:
    async def test_unbound_uncertain(self, served: Served) -> None:
        """An unbound measured value keeps the NodeSet's value, UncertainInitialValue."""
        dv = await served.face(TEMPERATURE).read_data_value(raise_on_bad_status=False)
        assert dv.Value.Value == 15.0 and dv.StatusCode == INITIAL

    async def test_unbound_read_only(self, served: Served) -> None:
        """Writing an unbound measured value is BadNotWritable with the reason logged."""
        with capture_logs() as logs:
            status = await _status(served.face(TEMPERATURE), 20.0, ua.VariantType.Double)
        assert status.value == ua.StatusCodes.BadNotWritable
        refused = [e for e in logs if e["event"] == "write_refused"]
        assert "no binding feeds" in refused[0]["reason"]


@MODULE_LOOP
class TestOwnEndpoint:
    async def test_application_uri(self, served: Served) -> None:
        """The face's endpoint announces the machine's ApplicationUri and name."""
        assert served.daemon.faces is not None
        url = served.daemon.faces.endpoints["remote"].endpoint_url
        assert url != served.daemon.endpoint_url
        endpoints = await served.machine.get_endpoints()
        assert {e.Server.ApplicationUri for e in endpoints} == {MACHINE_URI}
        assert endpoints[0].Server.ApplicationName.Text == "Tank machine"

    async def test_models_after_server_uri(self, served: Served) -> None:
        """The NamespaceArray lists the face's models right after the server's URI."""
        array = await served.machine.get_namespace_array()
        assert array[1] == MACHINE_URI
        assert array[2:4] == ["http://opcfoundation.org/UA/DI/", TANK_URI]

    async def test_twin_tree_not_there(self, served: Served) -> None:
        """The twin tree stays on the daemon's endpoint."""
        objects = served.machine.nodes.objects
        names = {(await c.read_browse_name()).Name for c in await objects.get_children()}
        assert "DeviceSet" in names and "TwinServer" not in names

    async def test_values_and_writes(self, served: Served) -> None:
        """The own endpoint's face shows the session's values and takes writes."""
        ns = await served.machine.get_namespace_index(TANK_URI)
        level = await served.machine.get_node(ua.NodeId(LEVEL, ns)).read_data_value()
        assert level.StatusCode.is_good()
        valve = served.machine.get_node(ua.NodeId(VALVE, ns))
        assert (await _status(valve, 0.025, ua.VariantType.Double)).is_good()
        parameter = served.twin("Components.tank.Parameters.outflow_coefficient")
        assert await parameter.read_value() == 0.025
        status = await _status(valve, 0.5, ua.VariantType.Double)
        assert status.value == ua.StatusCodes.BadOutOfRange

    async def test_own_pki(self, served: Served) -> None:
        """The face's certificate lives in a PKI folder of its own."""
        assert served.daemon.faces is not None
        security = served.daemon.faces.endpoints["remote"].security
        assert security is not None
        assert security.pki.root.parts[-2:] == ("faces", "remote")
