"""Roles enforced on twin-server's own OPC UA server: writes and method calls by
anonymous clients, viewers and operators.

Until ``OpcUaServer.start`` calls ``configure_security`` itself, ``wire`` does it
from the test, at the same point (just before asyncua's ``Server.start``); once
the wiring is in, ``wire`` sees ``server.security`` set and does nothing.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.security.conftest import MODULE_LOOP
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.engine.session import Session, SessionSettings, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.models.base import Kind
from twin_server.opcua.server import NAMESPACE_URI, OpcUaServer
from twin_server.runtime import HostedSession, LocalHost
from twin_server.runtime.compile import parse_config
from twin_server.runtime.sinks import Pacer
from twin_server.security import configure_security
from twin_server.security.roles import Role
from twin_server.security.users import add_user

pytestmark = MODULE_LOOP

PLANT = """
[twins.plant]
connections = ["tank.level -> controller.measurement", "controller.output -> tank.inflow"]

[twins.plant.components.tank]
model = "water_tank"
parameters = { area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }

[twins.plant.components.controller]
model = "pid"
parameters = { kp = 0.2, ki = 0.004, output_min = 0.0, output_max = 0.05 }
inputs = { setpoint = 1.0 }
"""
SETPOINT = "Components.controller.Inputs.setpoint"
SETPOINT_KEY = VarKey("controller", Kind.INPUT, "setpoint")
KP = "Components.controller.Parameters.kp"
LEVEL = "Components.tank.Outputs.level"
PASSWORD = "a long enough password"


@functools.cache
def plant() -> TwinDefinition:
    return parse_config(PLANT).twins["plant"]


def wire(server: OpcUaServer, state_dir: Path) -> None:
    """Call configure_security where OpcUaServer.start will: before asyncua's start."""
    inner = server.asyncua.start

    async def start() -> None:
        if getattr(server, "security", None) is None:
            server.security = await configure_security(  # type: ignore[attr-defined]
                server.asyncua, server.config, state_dir)
        await inner()

    server.asyncua.start = start  # type: ignore[method-assign]


@dataclass
class Served:
    server: OpcUaServer
    session: Session
    url: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    state = tmp_path_factory.mktemp("state")
    users = state / "users.json"
    add_user(users, "vera", Role.VIEWER, PASSWORD)
    add_user(users, "otto", Role.OPERATOR, PASSWORD)
    config = ServerConfig(
        endpoint="opc.tcp://127.0.0.1:0/twin-server", state_dir=str(state),
        # the None endpoint keeps this module fast; roles do not depend on the channel
        security=SecurityConfig(policies=("None",), anonymous="viewer"))
    server = OpcUaServer(config)
    wire(server, state)
    await server.start()
    await server.add_twin(plant())
    host = LocalHost(server.session_event, clocks=False)
    await host.create("tank", plant(), SessionSettings(step_size=0.01, autostart=False))
    hosted = HostedSession(host, "tank")
    await server.add_session(hosted, plant(), pacer=Pacer(hosted, (server.publisher,)))
    try:
        yield Served(server, host.session("tank"), server.endpoint_url)
    finally:
        await server.stop()
        await host.aclose()


def client(served: Served, user: str | None = None) -> Client:
    c = Client(served.url, timeout=5)
    if user is not None:
        c.set_user(user)
        c.set_password(PASSWORD)
    return c


async def write(c: Client, served: Served, path: str, value: float) -> ua.StatusCode:
    ns = await c.get_namespace_index(NAMESPACE_URI)
    nodeid = ua.NodeId(f"Sessions.{served.session.name}.{path}", ns)
    params = ua.WriteParameters(NodesToWrite=[ua.WriteValue(
        NodeId=nodeid, AttributeId=ua.AttributeIds.Value,
        Value=ua.DataValue(ua.Variant(value, ua.VariantType.Double)))])
    try:
        return (await c.uaclient.write(params))[0]
    except ua.UaStatusCodeError as exc:  # the whole request refused
        return ua.StatusCode(exc.code)


async def call(c: Client, served: Served, method: str) -> ua.StatusCode:
    ns = await c.get_namespace_index(NAMESPACE_URI)
    request = ua.CallMethodRequest(
        ObjectId=ua.NodeId(f"Sessions.{served.session.name}", ns),
        MethodId=ua.NodeId(f"Sessions.{served.session.name}.{method}", ns), InputArguments=[])
    return (await c.uaclient.call([request]))[0].StatusCode


class TestAnonymousViewer:
    async def test_reads(self, served: Served) -> None:
        """An anonymous client reads an output."""
        async with client(served) as c:
            ns = await c.get_namespace_index(NAMESPACE_URI)
            level = c.get_node(ua.NodeId(f"Sessions.tank.{LEVEL}", ns))
            assert await level.read_value() == pytest.approx(0.5)

    async def test_write_refused(self, served: Served) -> None:
        """An anonymous write to an input is refused with BadUserAccessDenied and
        changes nothing."""
        before = served.session.read(SETPOINT_KEY)
        async with client(served) as c:
            status = await write(c, served, SETPOINT, 1.7)
        assert status.value == ua.StatusCodes.BadUserAccessDenied
        assert served.session.read(SETPOINT_KEY) == before

    async def test_call_refused(self, served: Served) -> None:
        """An anonymous Start is refused with BadUserAccessDenied; the session stays Ready."""
        async with client(served) as c:
            status = await call(c, served, "Start")
        assert status.value == ua.StatusCodes.BadUserAccessDenied
        assert str(served.session.state) == "Ready"

    async def test_user_access_level(self, served: Served) -> None:
        """UserAccessLevel of an input shows no write access to an anonymous client."""
        async with client(served) as c:
            ns = await c.get_namespace_index(NAMESPACE_URI)
            node = c.get_node(ua.NodeId(f"Sessions.tank.{SETPOINT}", ns))
            assert ua.AccessLevel.CurrentWrite not in await node.get_user_access_level()
            assert ua.AccessLevel.CurrentWrite in await node.get_access_level()


class TestViewer:
    async def test_write_and_call_refused(self, served: Served) -> None:
        """A logged-in viewer may neither write an input nor call Start."""
        async with client(served, "vera") as c:
            assert (await write(c, served, SETPOINT, 1.2)).value == \
                ua.StatusCodes.BadUserAccessDenied
            assert (await call(c, served, "Start")).value == ua.StatusCodes.BadUserAccessDenied


class TestOperator:
    async def test_writes_inputs_and_parameters(self, served: Served) -> None:
        """An operator writes an input and a parameter."""
        async with client(served, "otto") as c:
            assert (await write(c, served, SETPOINT, 1.25)).is_good()
            assert (await write(c, served, KP, 0.3)).is_good()
        assert served.session.read(SETPOINT_KEY) == 1.25

    async def test_output_still_not_writable(self, served: Served) -> None:
        """An operator's write to an output gets BadNotWritable from the write path."""
        async with client(served, "otto") as c:
            assert (await write(c, served, LEVEL, 1.0)).value == ua.StatusCodes.BadNotWritable

    async def test_runs_the_session(self, served: Served) -> None:
        """An operator starts and halts the session."""
        async with client(served, "otto") as c:
            assert (await call(c, served, "Start")).is_good()
            assert str(served.session.state) == "Running"
            assert (await call(c, served, "Halt")).is_good()
            assert (await call(c, served, "Reset")).is_good()

    async def test_admin_methods_refused(self, served: Served) -> None:
        """An operator may not call an admin method (Fork creates a session)."""
        async with client(served, "otto") as c:
            assert (await call(c, served, "Fork")).value == ua.StatusCodes.BadUserAccessDenied

    async def test_server_nodes_refused(self, served: Served) -> None:
        """An operator may not write the server's own (namespace 0) nodes."""
        async with client(served, "otto") as c:
            node = c.get_node(ua.NodeId(ua.ObjectIds.Server_ServiceLevel))
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await node.write_value(ua.Variant(1, ua.VariantType.Byte))
        assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
