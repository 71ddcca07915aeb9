"""Faults over the wire (asyncua): InjectFault, ClearFault, ClearFaults, the Faults
nodes, the events on the session and the Server object, the event history, a
dropout's BadSensorFailure in reads and in the value history, and a config fault
that Reset brings back. One daemon with history for the module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.opcua.conftest import (
    MODULE_LOOP,
    PLANT,
    Connected,
    message,
    run_daemon,
    s,
    stop_daemon,
)
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.security.roles import Role, method_role

pytestmark = MODULE_LOOP

CONFIG = PLANT + """
[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
batch_interval = 0.05

[sessions.main]
twin = "plant"
step_size = 0.01
autostart = false
publish_rate = 50.0

[sessions.main.history]
variables = ["tank.level"]

[[sessions.main.faults]]
id = "configured"
target = "controller.Inputs.setpoint"
kind = "offset"
parameters = { offset = 0.25 }
"""

SESSION = "Sessions.main"
LEVEL = f"{SESSION}.Components.tank.Outputs.level"


def d(value: float) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Double)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wire(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Connected]:
    state: Path = tmp_path_factory.mktemp("faults")
    daemon, task = await run_daemon(CONFIG, state_dir=state)
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Connected(daemon, client, ns)
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def main(wire: Connected) -> AsyncIterator[Connected]:
    """The session, Reset (so that only the configured fault is active) and after the
    test cleared again."""
    result = await wire.session_call("main", "Reset")
    assert result.StatusCode.is_good(), message(result)
    yield wire
    await wire.session_call("main", "Reset")


async def inject(c: Connected, *args: Any) -> ua.CallMethodResult:
    variants = [a if isinstance(a, ua.Variant) else s(a) if isinstance(a, str) else d(a)
                for a in args]
    return await c.session_call("main", "InjectFault", *variants)


async def children(c: Connected, path: str) -> list[str]:
    nodes = await c.node(path).get_children()
    return sorted([(await n.read_browse_name()).Name for n in nodes])


class Events:
    """A subscription to the events of one notifier."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def kind(self, kind: str, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.queue.get()
                if getattr(event, "Kind", None) == kind:
                    return event


class TestMethods:
    async def test_inject_shows_a_fault_node_and_the_value(self, main: Connected) -> None:
        """InjectFault returns its id, Faults/<id> describes it, the level reads the
        stuck value; ClearFault takes the node away and the value back."""
        result = await inject(main, "tank.Outputs.level", "stuck", '{"value": 1.75}', 0.0,
                              "stuckLevel")
        assert result.StatusCode.is_good(), message(result)
        assert result.OutputArguments[0].Value == "stuckLevel"
        assert await children(main, f"{SESSION}.Faults") == ["configured", "stuckLevel"]
        node = f"{SESSION}.Faults.stuckLevel"
        assert await main.node(f"{node}.Kind").read_value() == "stuck"
        assert await main.node(f"{node}.Target").read_value() == "tank.Outputs.level"
        assert await main.node(f"{node}.TargetNode").read_value() == ua.NodeId(LEVEL, main.ns)
        assert await main.node(f"{node}.Parameters").read_value() == '{"value": 1.75}'
        assert await main.node(f"{node}.Remaining").read_value() == -1.0
        assert await main.node(LEVEL).read_value() == 1.75
        result = await main.session_call("main", "ClearFault", s("stuckLevel"))
        assert result.StatusCode.is_good(), message(result)
        assert await children(main, f"{SESSION}.Faults") == ["configured"]
        assert await main.node(LEVEL).read_value() != 1.75

    async def test_a_duration_counts_down_and_ends(self, main: Connected) -> None:
        """A fault with a Duration shows Remaining and is gone once Step passes it."""
        result = await inject(main, "tank.Outputs.level", "offset", '{"offset": 1}', 0.5)
        assert result.StatusCode.is_good(), message(result)
        fault_id = result.OutputArguments[0].Value
        assert fault_id == "f1"
        remaining = main.node(f"{SESSION}.Faults.f1.Remaining")
        assert await remaining.read_value() == pytest.approx(0.5)
        await main.session_call("main", "Step", ua.Variant(20, ua.VariantType.UInt32))
        assert await remaining.read_value() == pytest.approx(0.3)
        await main.session_call("main", "Step", ua.Variant(30, ua.VariantType.UInt32))
        assert await children(main, f"{SESSION}.Faults") == ["configured"]

    async def test_clear_faults_ends_them_all(self, main: Connected) -> None:
        """ClearFaults returns the ids it ended, the configured one too."""
        result = await inject(main, "tank.Inputs.inflow", "dropout", "")
        assert result.StatusCode.is_good(), message(result)
        result = await main.session_call("main", "ClearFaults")
        assert result.StatusCode.is_good(), message(result)
        assert result.OutputArguments[0].Value == ["configured", "f1"]
        assert await children(main, f"{SESSION}.Faults") == []

    async def test_reset_brings_back_the_configured_fault(self, main: Connected) -> None:
        """The config's fault acts from the start; Reset clears the others, not it."""
        setpoint = main.node(f"{SESSION}.Components.controller.Inputs.setpoint")
        before = await setpoint.read_value()
        await main.session_call("main", "ClearFaults")
        assert await setpoint.read_value() == pytest.approx(before - 0.25)
        await inject(main, "tank.Outputs.level", "dropout", "")
        await main.session_call("main", "Reset")
        assert await children(main, f"{SESSION}.Faults") == ["configured"]
        assert await setpoint.read_value() == pytest.approx(before)

    @pytest.mark.parametrize(("args", "status", "index", "words"), [
        pytest.param(("tank.Outputs.level", "melt", ""), "BadInvalidArgument", 1,
                     "not a kind of fault", id="kind"),
        pytest.param(("tank.level", "dropout", ""), "BadInvalidArgument", 0,
                     "component.Inputs.name", id="target"),
        pytest.param(("pump.Outputs.level", "dropout", ""), "BadNotFound", 0,
                     "no component 'pump'", id="component"),
        pytest.param(("tank.Outputs.level", "noise", '{"sigma": -1}'), "BadInvalidArgument",
                     2, "must be >= 0", id="parameter"),
        pytest.param(("tank.Outputs.level", "noise", "{sigma"), "BadInvalidArgument", 2,
                     "not JSON", id="json"),
        pytest.param(("tank.Outputs.level", "dropout", "", -1.0), "BadInvalidArgument", 3,
                     "duration", id="duration"),
        pytest.param(("tank.Outputs.level", "dropout", "", 0.0, "a b"),
                     "BadInvalidArgument", 4, "id", id="id"),
        pytest.param(("tank.Outputs.level", "dropout", "", 0.0, "configured"),
                     "BadBrowseNameDuplicated", 4, "active fault 'configured'", id="taken"),
    ])
    async def test_bad_arguments_are_refused_by_name(
            self, main: Connected, args: tuple[Any, ...], status: str, index: int,
            words: str) -> None:
        """A bad argument: its status on the call and on that argument, with a message,
        and no fault added."""
        result = await inject(main, *args)
        assert result.StatusCode.name == status
        code = result.InputArgumentResults[index]
        assert not code.is_good()
        assert words in message(result)
        assert await children(main, f"{SESSION}.Faults") == ["configured"]

    async def test_clearing_an_unknown_fault(self, main: Connected) -> None:
        """ClearFault of an id not active: BadNotFound naming the active ones."""
        result = await main.session_call("main", "ClearFault", s("nope"))
        assert result.StatusCode.name == "BadNotFound"
        assert "active: configured" in message(result)

    async def test_the_methods_are_an_operators(self) -> None:
        """InjectFault, ClearFault and ClearFaults need the operator role, as writes."""
        for name in ("InjectFault", "ClearFault", "ClearFaults"):
            assert method_role(ua.NodeId(f"Sessions.main.{name}", 2), 2) is Role.OPERATOR


class TestDropout:
    async def test_a_dropout_is_bad_to_clients_and_in_history(self, main: Connected) -> None:
        """A dropout: the level reads BadSensorFailure (its value null, as Part 4 wants
        of a Bad value), the controller gets the held value, the value history records
        the status, and Good comes back when it clears."""
        level = main.node(LEVEL)
        before = await level.read_value()
        result = await inject(main, "tank.Outputs.level", "dropout", "", 0.0, "gone")
        assert result.StatusCode.is_good(), message(result)
        started = datetime.now(UTC)
        await main.session_call("main", "Step", ua.Variant(10, ua.VariantType.UInt32))
        value = await level.read_data_value(raise_on_bad_status=False)
        assert value.StatusCode.name == "BadSensorFailure"
        assert value.Value.Value is None
        measured = main.node(f"{SESSION}.Components.controller.Inputs.measurement")
        assert await measured.read_value() == before
        for _ in range(50):  # (the recorder's batch interval is 0.05 s)
            now = datetime.now(UTC)
            history = await level.read_raw_history(started - timedelta(seconds=1), now)
            if any(v.StatusCode.name == "BadSensorFailure" for v in history):
                break
            await asyncio.sleep(0.1)
        assert any(v.StatusCode.name == "BadSensorFailure" for v in history)
        await main.session_call("main", "ClearFault", s("gone"))
        value = await level.read_data_value()
        assert value.StatusCode.is_good()


class TestEvents:
    @pytest.mark.parametrize("notifier", [SESSION, "Server"])
    async def test_start_and_end_are_events(self, main: Connected, notifier: str) -> None:
        """fault_injected and fault_cleared reach a subscriber of the session or Server."""
        handler = Events()
        subscription = await main.client.create_subscription(20, handler)
        node = (main.client.get_node(ua.ObjectIds.Server) if notifier == "Server"
                else main.node(notifier))
        event_type = main.node("TwinSessionEventType")
        await subscription.subscribe_events(node, event_type)
        try:
            await inject(main, "tank.Outputs.level", "noise", '{"sigma": 0.1}', 0.0, "hiss")
            started = await handler.kind("fault_injected")
            assert "fault 'hiss' injected: noise (sigma=0.1, seed=0)" in started.Message.Text
            assert started.Severity == 500
            await main.session_call("main", "ClearFault", s("hiss"))
            ended = await handler.kind("fault_cleared")
            assert "cleared by ClearFault" in ended.Message.Text
        finally:
            await subscription.delete()

    async def test_the_events_are_in_the_event_history(self, main: Connected) -> None:
        """The start and end of a fault are read back through HistoryReadEvents."""
        since = datetime.now(UTC) - timedelta(seconds=1)
        await inject(main, "tank.Inputs.inflow", "quantise", '{"step": 0.01}', 0.0, "steps")
        await main.session_call("main", "ClearFault", s("steps"))
        session = main.node(SESSION)
        for _ in range(50):
            now = datetime.now(UTC)
            events = await session.read_event_history(since, now)
            texts = [e.Message.Text for e in events]
            if any("fault 'steps' (quantise" in t for t in texts):
                break
            await asyncio.sleep(0.1)
        assert any("fault 'steps' injected" in t for t in texts), texts
        assert any("fault 'steps' (quantise" in t and "cleared" in t for t in texts), texts
