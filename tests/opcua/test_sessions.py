"""Sessions as OPC UA objects, driven by a real client against a whole daemon:
CreateSession, DeleteSession, DefineTwin, RemoveTwin, SetParameters, Reset,
Snapshot, Restore and Fork, with their refusals and exact status codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadNodeIdUnknown

from tests.opcua.conftest import (
    MODULE_LOOP,
    PLANT,
    Connected,
    in_process,
    message,
    run_daemon,
    s,
    stop_daemon,
)
from twin_server.engine.session import RunState, VarKey
from twin_server.models.base import Kind
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime import LocalHost
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

MAX_SESSIONS = 6
CONFIG = PLANT + f"""
[server]
max_sessions = {MAX_SESSIONS}
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.main]
twin = "plant"
autostart = false
"""

TANK_TWIN = """
[twins.lonely_tank]
description = "One tank, filled at a constant rate"
[twins.lonely_tank.components.tank]
model = "water_tank"
parameters = { area = 2.0 }
inputs = { inflow = 0.01 }
"""

LEVEL = VarKey("tank", Kind.OUTPUT, "level")
AREA = VarKey("tank", Kind.PARAMETER, "area")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def ua_client(daemon: Daemon) -> AsyncIterator[Connected]:
    """A connected client; afterwards the daemon holds only its config session, Ready
    with its initial parameters."""
    initial = _main(daemon).snapshot()
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Connected(daemon, client, ns)
    finally:
        for name in list(daemon.manager.sessions):
            if daemon.manager.origin(name) == "client":
                await daemon.delete_session(name)
        for name in list(daemon.manager.twins):
            if daemon.manager.twin_origin(name) == "client":
                await daemon.remove_twin(name)
        main = _main(daemon)
        if main.state is RunState.RUNNING:
            main.suspend()
        main.restore(initial)


def _main(daemon: Daemon):  # type: ignore[no-untyped-def]
    return in_process(daemon, "main")


class TestCreateSession:
    async def test_create(self, ua_client: Connected) -> None:
        """CreateSession returns the new session's NodeId; it is Ready with its parameters."""
        nodeid = await ua_client.create("s1", '{"tank": {"area": 2.0}}')
        assert nodeid == ua.NodeId("Sessions.s1", ua_client.ns)
        assert await ua_client.node("Sessions.s1.State").read_value() == "Ready"
        area = ua_client.node("Sessions.s1.Components.tank.Parameters.area")
        assert await area.read_value() == 2.0
        assert ua_client.daemon.manager.origin("s1") == "client"

    async def test_flat_parameters_and_empty(self, ua_client: Connected) -> None:
        """Flat "component.parameter" keys work, and an empty string means none."""
        await ua_client.create("flat", '{"tank.area": 3.0}')
        await ua_client.create("plain", "")
        daemon = ua_client.daemon
        assert in_process(daemon, "flat").read(AREA) == 3.0
        assert in_process(daemon, "plain").read(AREA) == 0.5

    @pytest.mark.parametrize(("twin", "name", "parameters", "status", "index", "text"), [
        pytest.param("nope", "x", "", "BadNotFound", 0, "no twin named 'nope'",
                     id="unknown-twin"),
        pytest.param("plant", "x", '{"tank": {"area": 2.0', "BadInvalidArgument", 2,
                     "line 1, column", id="malformed-json"),
        pytest.param("plant", "x", '[1, 2]', "BadInvalidArgument", 2, "JSON object",
                     id="not-an-object"),
        pytest.param("plant", "x", '{"tank": {"volume": 2.0}}', "BadNotFound", 2,
                     "volume", id="unknown-parameter"),
        pytest.param("plant", "x", '{"pump": {"area": 2.0}}', "BadNotFound", 2,
                     "pump", id="unknown-component"),
        pytest.param("plant", "x", '{"tank": {"area": -1.0}}', "BadOutOfRange", 2,
                     "area", id="out-of-range"),
        pytest.param("plant", "x", '{"tank": {"area": "big"}}', "BadInvalidArgument", 2,
                     "area", id="wrong-type"),
        pytest.param("plant", "main", "", "BadBrowseNameDuplicated", 1, "exists already",
                     id="duplicate-name"),
        pytest.param("plant", "1st", "", "BadInvalidArgument", 1, "cannot be a session name",
                     id="bad-name"),
        pytest.param("plant", "a.b", "", "BadInvalidArgument", 1, "cannot be a session name",
                     id="dotted-name"),
    ])
    async def test_refused(self, ua_client: Connected, twin: str, name: str, parameters: str,
                           status: str, index: int, text: str) -> None:
        """Bad input gets its precise status, the message on its argument, and changes
        nothing."""
        before = list(ua_client.daemon.manager.sessions)
        result = await ua_client.server_call("CreateSession", s(twin), s(name), s(parameters))
        assert result.StatusCode.name == status
        assert result.InputArgumentResults[index].name in (status, "BadTypeMismatch")
        assert text in result.InputArgumentDiagnosticInfos[index].AdditionalInfo
        assert list(ua_client.daemon.manager.sessions) == before
        if name not in before:
            with pytest.raises(BadNodeIdUnknown):
                await ua_client.node(f"Sessions.{name}").read_browse_name()

    async def test_too_many(self, ua_client: Connected) -> None:
        """Beyond server.max_sessions: BadResourceUnavailable with the limit named."""
        for i in range(MAX_SESSIONS - 1):
            await ua_client.create(f"many{i}")
        result = await ua_client.server_call("CreateSession", s("plant"), s("onemore"), s(""))
        assert result.StatusCode.name == "BadResourceUnavailable"
        assert "max_sessions = 6" in message(result)
        assert len(ua_client.daemon.manager.sessions) == MAX_SESSIONS

    async def test_wrong_argument_type(self, ua_client: Connected) -> None:
        """A non-String argument: BadInvalidArgument, that argument BadTypeMismatch."""
        result = await ua_client.server_call("CreateSession", s("plant"),
                                             ua.Variant(5, ua.VariantType.Int32), s(""))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert [r.name for r in result.InputArgumentResults] == [
            "Good", "BadTypeMismatch", "Good"]


class TestDeleteSession:
    async def test_delete(self, ua_client: Connected) -> None:
        """DeleteSession stops the clock, removes the nodes and frees the session."""
        await ua_client.create("doomed")
        level = ua_client.node("Sessions.doomed.Components.tank.Outputs.level")
        assert await level.read_value() == 0.5
        session = in_process(ua_client.daemon, "doomed")
        result = await ua_client.server_call("DeleteSession", s("doomed"))
        assert result.StatusCode.is_good()
        with pytest.raises(BadNodeIdUnknown):
            await level.read_value()
        assert "doomed" not in ua_client.daemon.sessions
        assert session.closed

    async def test_delete_unknown(self, ua_client: Connected) -> None:
        """An unknown name: BadNotFound naming the sessions there are."""
        result = await ua_client.server_call("DeleteSession", s("ghost"))
        assert result.StatusCode.name == "BadNotFound"
        assert result.InputArgumentResults[0].name == "BadNotFound"
        assert "main" in message(result)

    async def test_same_nodeid_again(self, ua_client: Connected) -> None:
        """A session created again under the same name gets the same NodeIds."""
        first = await ua_client.create("again")
        await ua_client.server_call("DeleteSession", s("again"))
        assert await ua_client.create("again") == first


class TestTwins:
    async def test_define_use_remove(self, ua_client: Connected) -> None:
        """DefineTwin serves Twins.<name>; sessions of it run; RemoveTwin removes it."""
        result = await ua_client.server_call("DefineTwin", s(TANK_TWIN))
        assert result.StatusCode.is_good(), message(result)
        assert result.OutputArguments[0].Value == ua.NodeId("Twins.lonely_tank", ua_client.ns)
        description = ua_client.node("Twins.lonely_tank.Description")
        assert await description.read_value() == "One tank, filled at a constant rate"
        await ua_client.create("lonely", twin="lonely_tank")
        refused = await ua_client.server_call("RemoveTwin", s("lonely_tank"))
        assert refused.StatusCode.name == "BadInvalidState"
        assert "lonely" in message(refused)
        await ua_client.server_call("DeleteSession", s("lonely"))
        removed = await ua_client.server_call("RemoveTwin", s("lonely_tank"))
        assert removed.StatusCode.is_good()
        with pytest.raises(BadNodeIdUnknown):
            await description.read_value()

    async def test_invalid_definition(self, ua_client: Connected) -> None:
        """An invalid twin: BadConfigurationError with every error in the message."""
        bad = ('[twins.broken.components.tank]\nmodel = "water_tank"\n'
               'parameters = { area = -1.0 }\n'
               '[twins.broken.components.pump]\nmodel = "no_such_model"\n')
        result = await ua_client.server_call("DefineTwin", s(bad))
        assert result.StatusCode.name == "BadConfigurationError"
        assert result.InputArgumentResults[0].name == "BadConfigurationError"
        text = message(result)
        assert "twins.broken.components.tank.parameters.area" in text
        assert "no_such_model" in text
        assert "broken" not in ua_client.daemon.manager.twins

    @pytest.mark.parametrize(("definition", "status"), [
        pytest.param("[twins.plant.components.t]\nmodel = \"water_tank\"\n",
                     "BadBrowseNameDuplicated", id="taken-name"),
        pytest.param("this is not toml", "BadConfigurationError", id="not-toml"),
        pytest.param("", "BadInvalidArgument", id="empty"),
    ])
    async def test_define_refused(self, ua_client: Connected, definition: str,
                                  status: str) -> None:
        """A taken name, bad TOML or an empty text is refused with its status."""
        result = await ua_client.server_call("DefineTwin", s(definition))
        assert result.StatusCode.name == status
        assert message(result)

    async def test_remove_unknown(self, ua_client: Connected) -> None:
        """RemoveTwin of an unknown twin: BadNotFound."""
        result = await ua_client.server_call("RemoveTwin", s("ghost"))
        assert result.StatusCode.name == "BadNotFound"


class TestParameters:
    async def test_set_parameters(self, ua_client: Connected) -> None:
        """SetParameters changes several parameters at once; the nodes show them."""
        result = await ua_client.session_call(
            "main", "SetParameters", s('{"tank": {"area": 1.5}, "controller.kp": 0.3}'))
        assert result.StatusCode.is_good(), message(result)
        main = _main(ua_client.daemon)
        assert main.read(AREA) == 1.5
        assert await ua_client.node("Sessions.main.Components.tank.Parameters.area"
                                    ).read_value() == 1.5

    @pytest.mark.parametrize(("parameters", "status"), [
        pytest.param('{"tank": {"area": 1.5, "height": -2.0}}', "BadOutOfRange",
                     id="one-out-of-range"),
        pytest.param('{"tank": {"area": 1.5, "nope": 1}}', "BadNotFound", id="one-unknown"),
        pytest.param('{"tank": {"area": 1.5}', "BadInvalidArgument", id="malformed"),
    ])
    async def test_all_or_none(self, ua_client: Connected, parameters: str, status: str) -> None:
        """One bad value refuses the whole call: nothing changes."""
        result = await ua_client.session_call("main", "SetParameters", s(parameters))
        assert result.StatusCode.name == status
        assert result.InputArgumentResults[0].name in (status, "BadInvalidArgument")
        assert message(result)
        assert _main(ua_client.daemon).read(AREA) == 0.5

    async def test_fixed_parameter_while_running(self, ua_client: Connected) -> None:
        """A fixed parameter while Running: BadNotWritable, nothing changed."""
        await ua_client.session_call("main", "Start")
        result = await ua_client.session_call(
            "main", "SetParameters", s('{"tank": {"area": 1.5, "initial_level": 1.0}}'))
        assert result.StatusCode.name == "BadNotWritable"
        assert "initial_level" in message(result)
        assert _main(ua_client.daemon).read(AREA) == 0.5

    async def test_reset_with_parameters(self, ua_client: Connected) -> None:
        """Reset(json) returns to t0 with the new parameters applied."""
        await ua_client.session_call("main", "Step", ua.Variant(10, ua.VariantType.UInt32))
        result = await ua_client.session_call(
            "main", "Reset", s('{"tank": {"initial_level": 1.25}}'))
        assert result.StatusCode.is_good(), message(result)
        main = _main(ua_client.daemon)
        assert main.step_count == 0 and main.state is RunState.READY
        assert main.read(LEVEL) == 1.25

    @pytest.mark.parametrize("args", [
        pytest.param((), id="no-argument"),
        pytest.param((s(""),), id="empty-string"),
    ])
    async def test_reset_without_parameters(self, ua_client: Connected,
                                            args: tuple[ua.Variant, ...]) -> None:
        """Reset with no argument or an empty one resets without new parameters."""
        await ua_client.session_call("main", "Step", ua.Variant(3, ua.VariantType.UInt32))
        result = await ua_client.session_call("main", "Reset", *args)
        assert result.StatusCode.is_good()
        assert _main(ua_client.daemon).step_count == 0

    async def test_reset_refused(self, ua_client: Connected) -> None:
        """Reset with a bad parameter changes nothing (not even the step count)."""
        await ua_client.session_call("main", "Step", ua.Variant(3, ua.VariantType.UInt32))
        result = await ua_client.session_call("main", "Reset", s('{"tank": {"area": 0}}'))
        assert result.StatusCode.name == "BadOutOfRange"
        assert _main(ua_client.daemon).step_count == 3


class TestSnapshots:
    async def test_snapshot_restore_exact(self, ua_client: Connected) -> None:
        """Restore returns the session to exactly the state Snapshot recorded."""
        main = _main(ua_client.daemon)
        await ua_client.session_call("main", "Step", ua.Variant(70, ua.VariantType.UInt32))
        taken = await ua_client.session_call("main", "Snapshot")
        assert taken.StatusCode.is_good()
        snapshot_id = taken.OutputArguments[0].Value
        assert isinstance(snapshot_id, str) and snapshot_id
        recorded = main.values()
        await ua_client.session_call("main", "Step", ua.Variant(500, ua.VariantType.UInt32))
        assert main.values() != recorded
        result = await ua_client.session_call("main", "Restore", s(snapshot_id))
        assert result.StatusCode.is_good(), message(result)
        assert main.step_count == 70
        assert main.values() == recorded
        assert await ua_client.node("Sessions.main.StepCount").read_value() == 70
        level = ua_client.node("Sessions.main.Components.tank.Outputs.level")
        assert await level.read_value() == recorded[LEVEL]

    async def test_restore_unknown(self, ua_client: Connected) -> None:
        """An unknown snapshot id: BadNotFound on the argument, nothing changed."""
        await ua_client.session_call("main", "Step", ua.Variant(5, ua.VariantType.UInt32))
        result = await ua_client.session_call("main", "Restore", s("99"))
        assert result.StatusCode.name == "BadNotFound"
        assert result.InputArgumentResults[0].name == "BadNotFound"
        assert _main(ua_client.daemon).step_count == 5

    async def test_restore_while_running(self, ua_client: Connected) -> None:
        """Restore while Running: BadInvalidState naming the state."""
        snapshot_id = (await ua_client.session_call("main", "Snapshot")).OutputArguments[0].Value
        await ua_client.session_call("main", "Start")
        result = await ua_client.session_call("main", "Restore", s(snapshot_id))
        assert result.StatusCode.name == "BadInvalidState"
        assert "Running" in message(result)


class TestFork:
    async def test_fork_matches_bit_for_bit(self, ua_client: Connected) -> None:
        """A fork's first steps equal its source's exactly, given the same inputs."""
        main = _main(ua_client.daemon)
        await ua_client.session_call("main", "Start")
        await asyncio.sleep(0.2)
        await ua_client.session_call("main", "Suspend")
        result = await ua_client.session_call(
            "main", "Fork", s("ahead"), ua.Variant(0.0, ua.VariantType.Double))
        assert result.StatusCode.is_good(), message(result)
        assert result.OutputArguments[0].Value == ua.NodeId("Sessions.ahead", ua_client.ns)
        fork = in_process(ua_client.daemon, "ahead")
        assert fork.state is RunState.SUSPENDED
        assert fork.step_count == main.step_count
        assert fork.values() == main.values()
        for _ in range(5):
            await ua_client.session_call("main", "Step", ua.Variant(40, ua.VariantType.UInt32))
            await ua_client.session_call("ahead", "Step", ua.Variant(40, ua.VariantType.UInt32))
            assert fork.values() == main.values()  # == on floats: bit for bit
        assert fork.realtime_factor == 0.0

    async def test_fork_of_running_runs(self, ua_client: Connected) -> None:
        """The fork of a Running session runs, on its own clock, at its own factor."""
        await ua_client.session_call("main", "Start")
        await ua_client.session_call("main", "Fork", s("racer"),
                                     ua.Variant(10.0, ua.VariantType.Double))
        racer = in_process(ua_client.daemon, "racer")
        assert racer.state is RunState.RUNNING
        assert racer.realtime_factor == 10.0
        host = ua_client.daemon.host
        assert isinstance(host, LocalHost)
        assert host.clock("racer").session is racer
        assert host.clock("racer") is not host.clock("main")
        # the pace a factor sets is tests/runtime/test_clock.py's (a fake clock) and the benches':
        # here, its ticks arrive (50: 0.05 s unloaded)
        start = racer.step_count
        async with asyncio.timeout(10):
            while racer.step_count < start + 50:
                await asyncio.sleep(0.01)

    @pytest.mark.parametrize(("name", "factor", "status", "index"), [
        pytest.param("main", 1.0, "BadBrowseNameDuplicated", 0, id="taken-name"),
        pytest.param("no way", 1.0, "BadInvalidArgument", 0, id="bad-name"),
        pytest.param("f", -1.0, "BadOutOfRange", 1, id="negative-factor"),
        pytest.param("f", 5000.0, "BadOutOfRange", 1, id="factor-too-high"),
    ])
    async def test_fork_refused(self, ua_client: Connected, name: str, factor: float,
                                status: str, index: int) -> None:
        """A bad name or factor: its status on its argument, no session made."""
        before = list(ua_client.daemon.manager.sessions)
        result = await ua_client.session_call("main", "Fork", s(name),
                                              ua.Variant(factor, ua.VariantType.Double))
        assert result.StatusCode.name == status
        assert result.InputArgumentResults[index].name == status
        assert list(ua_client.daemon.manager.sessions) == before
