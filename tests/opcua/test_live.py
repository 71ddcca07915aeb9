"""The address space follows the sessions live: the Program state machine, the
session log as OPC UA events, GeneralModelChangeEvents, and subscriptions that
survive other sessions coming and going."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua

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
from twin_server.engine.session import SEVERITY_HALT, SEVERITY_INFO
from twin_server.opcua import events as ev
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

CONFIG = PLANT + """
[server]
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.main]
twin = "plant"
autostart = false
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def ua_client(daemon: Daemon) -> AsyncIterator[Connected]:
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Connected(daemon, client, ns)
    finally:
        for name in list(daemon.manager.sessions):
            if daemon.manager.origin(name) == "client":
                await daemon.delete_session(name)
        main = in_process(daemon, "main")
        main.reset()


class _Handler:
    """Queues data changes and events."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.put_nowait(val)

    def event_notification(self, event: Any) -> None:
        self.events.put_nowait(event)

    async def event(self, kind: str | None = None, timeout: float = 5.0) -> Any:
        """The next event (of ``kind``, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if kind is None or getattr(event, "Kind", None) == kind:
                    return event


async def _subscribe_events(c: Connected, source: Node, etype: Any) -> _Handler:
    handler = _Handler()
    sub = await c.client.create_subscription(10, handler)
    await sub.subscribe_events(source, etype)
    return handler


def _session_event_type(c: Connected) -> Node:
    return c.node(ev.SESSION_EVENT_TYPE)


class TestProgramStateMachine:
    async def test_typed_as_program(self, ua_client: Connected) -> None:
        """A session object is a ProgramStateMachineType, an event notifier."""
        node = ua_client.node("Sessions.main")
        assert await node.read_type_definition() == ua.NodeId(
            ua.ObjectIds.ProgramStateMachineType)
        notifier = await node.read_attribute(ua.AttributeIds.EventNotifier)
        assert notifier.Value.Value & ua.EventNotifier.SubscribeToEvents.mask

    @pytest.mark.parametrize(("calls", "state", "state_id", "transition", "transition_id"), [
        pytest.param((), "Ready", ua.ObjectIds.ProgramStateMachineType_Ready, None, None,
                     id="ready"),
        pytest.param(("Start",), "Running", ua.ObjectIds.ProgramStateMachineType_Running,
                     "ReadyToRunning", ua.ObjectIds.ProgramStateMachineType_ReadyToRunning,
                     id="start"),
        pytest.param(("Start", "Suspend"), "Suspended",
                     ua.ObjectIds.ProgramStateMachineType_Suspended, "RunningToSuspended",
                     ua.ObjectIds.ProgramStateMachineType_RunningToSuspended, id="suspend"),
        pytest.param(("Start", "Halt"), "Halted", ua.ObjectIds.ProgramStateMachineType_Halted,
                     "RunningToHalted", ua.ObjectIds.ProgramStateMachineType_RunningToHalted,
                     id="halt"),
        pytest.param(("Start", "Halt", "Reset"), "Ready",
                     ua.ObjectIds.ProgramStateMachineType_Ready, "HaltedToReady",
                     ua.ObjectIds.ProgramStateMachineType_HaltedToReady, id="reset"),
    ])
    async def test_current_state(self, ua_client: Connected, calls: tuple[str, ...],
                                 state: str, state_id: int, transition: str | None,
                                 transition_id: int | None) -> None:
        """CurrentState and LastTransition name the standard Part 10 nodes."""
        for call in calls:
            assert (await ua_client.session_call("main", call)).StatusCode.is_good()
        current = ua_client.node("Sessions.main.CurrentState")
        assert (await current.read_value()).Text == state
        assert await ua_client.node("Sessions.main.CurrentState.Id").read_value() == \
            ua.NodeId(state_id)
        last = await ua_client.node("Sessions.main.LastTransition").read_value()
        assert last.Text == transition
        if transition_id is not None:
            assert await ua_client.node("Sessions.main.LastTransition.Id").read_value() == \
                ua.NodeId(transition_id)
            assert await ua_client.node(
                "Sessions.main.LastTransition.TransitionTime").read_value() is not None
        assert await ua_client.node("Sessions.main.State").read_value() == state

    async def test_wrong_state_names_it(self, ua_client: Connected) -> None:
        """Start while Running: BadInvalidState and a message naming the state."""
        await ua_client.session_call("main", "Start")
        result = await ua_client.session_call("main", "Start")
        assert result.StatusCode.name == "BadInvalidState"
        assert "in state Running" in message(result)

    async def test_recycle_count(self, ua_client: Connected) -> None:
        """RecycleCount counts Resets."""
        node = ua_client.node("Sessions.main.RecycleCount")
        before = await node.read_value()
        await ua_client.session_call("main", "Reset")
        await ua_client.session_call("main", "Reset")
        assert await node.read_value() == before + 2


class TestSessionEvents:
    async def test_lifecycle_events(self, ua_client: Connected) -> None:
        """Start and Halt arrive as events from the session node, with its name and
        the session's severities."""
        node = ua_client.node("Sessions.main")
        handler = await _subscribe_events(ua_client, node, _session_event_type(ua_client))
        await ua_client.session_call("main", "Start")
        started = await handler.event("started")
        assert started.SourceNode == node.nodeid
        assert started.SourceName == "main"
        assert started.Severity == SEVERITY_INFO
        assert "started at t=0 s" in started.Message.Text
        await ua_client.session_call("main", "Halt")
        halted = await handler.event("halted")
        assert halted.Severity == SEVERITY_HALT
        assert halted.StepCount >= 0 and halted.SimTime >= 0.0

    async def test_events_on_server_object(self, ua_client: Connected) -> None:
        """The standard Server object relays every session's events."""
        handler = await _subscribe_events(ua_client, ua_client.client.nodes.server,
                                          _session_event_type(ua_client))
        await ua_client.create("watched")
        created = await handler.event("created")
        assert created.SourceName == "watched"
        assert created.SourceNode == ua.NodeId("Sessions.watched", ua_client.ns)
        await ua_client.server_call("DeleteSession", s("watched"))
        deleted = await handler.event("deleted")
        assert deleted.SourceName == "watched"
        assert "deleted by a client" in deleted.Message.Text

    async def test_parameter_changed(self, ua_client: Connected) -> None:
        """SetParameters emits parameter_changed naming the parameter and value."""
        handler = await _subscribe_events(ua_client, ua_client.node("Sessions.main"),
                                          _session_event_type(ua_client))
        await ua_client.session_call("main", "SetParameters", s('{"tank": {"area": 0.75}}'))
        event = await handler.event("parameter_changed")
        assert "'area'" in event.Message.Text and "0.75" in event.Message.Text
        await ua_client.session_call("main", "SetParameters", s('{"tank": {"area": 0.5}}'))

    async def test_overflow_alarm(self, ua_client: Connected) -> None:
        """The tank's overflow output turning true and false again raises and clears
        an alarm event."""
        handler = await _subscribe_events(ua_client, ua_client.node("Sessions.main"),
                                          _session_event_type(ua_client))
        level = ua_client.node("Sessions.main.Components.tank.States.level")
        inflow = ua_client.node("Sessions.main.Components.tank.Inputs.inflow")
        await level.write_value(ua.Variant(2.0, ua.VariantType.Double))
        await inflow.write_value(ua.Variant(0.05, ua.VariantType.Double))
        await ua_client.session_call("main", "Step", ua.Variant(1, ua.VariantType.UInt32))
        alarm = await handler.event("alarm")
        assert alarm.Severity == ev.SEVERITY_ALARM
        assert "'overflow'" in alarm.Message.Text and "'tank'" in alarm.Message.Text
        await level.write_value(ua.Variant(1.0, ua.VariantType.Double))
        await ua_client.session_call("main", "Step", ua.Variant(1, ua.VariantType.UInt32))
        cleared = await handler.event("alarm_cleared")
        assert cleared.Severity == ev.SEVERITY_ALARM_CLEARED


class TestFaults:
    async def test_fault_event_names_component_and_tick(self, ua_client: Connected) -> None:
        """A model producing infinity halts its own session with a fault event (severity
        900) naming the component and the tick; the other session is untouched."""
        daemon = ua_client.daemon
        await daemon.define_twin(
            "[twins.blowup.components.big]\nmodel = \"constant\"\n"
            "parameters = { value = 1e308 }\n"
            "[twins.blowup.components.amp]\nmodel = \"gain\"\nparameters = { gain = 10.0 }\n"
            "[twins.blowup]\nconnections = [\"big.output -> amp.input\"]\n")
        try:
            await daemon.create_session("blowup", "doomed", {})
            handler = await _subscribe_events(ua_client, ua_client.node("Sessions.doomed"),
                                              _session_event_type(ua_client))
            await ua_client.session_call("doomed", "Start")
            fault = await handler.event("fault")
            assert fault.Severity == 900
            assert "'amp'" in fault.Message.Text and "tick" in fault.Message.Text
            state = ua_client.node("Sessions.doomed.State")
            async with asyncio.timeout(5):
                while await state.read_value() != "Halted":
                    await asyncio.sleep(0.05)
            assert in_process(daemon, "main").fault is None
        finally:
            if "doomed" in daemon.manager.sessions:
                await daemon.delete_session("doomed")
            await daemon.remove_twin("blowup")


class TestModelChanges:
    async def test_create_and_delete(self, ua_client: Connected) -> None:
        """Creating and deleting a session emit GeneralModelChangeEvents from Sessions."""
        sessions = ua_client.node("Sessions")
        handler = await _subscribe_events(ua_client, sessions,
                                          ua.ObjectIds.GeneralModelChangeEventType)
        root = await ua_client.create("flux")
        added = await handler.event()
        verbs = {c.Affected: c.Verb for c in added.Changes}
        assert verbs == {root: ev.NODE_ADDED, sessions.nodeid: ev.REFERENCE_ADDED}
        assert added.SourceNode == sessions.nodeid
        await ua_client.server_call("DeleteSession", s("flux"))
        deleted = await handler.event()
        verbs = {c.Affected: c.Verb for c in deleted.Changes}
        assert verbs == {root: ev.NODE_DELETED, sessions.nodeid: ev.REFERENCE_DELETED}

    async def test_subscriptions_survive_others(self, ua_client: Connected) -> None:
        """A subscription on one session keeps delivering while others are created,
        forked and deleted."""
        handler = _Handler()
        sub = await ua_client.client.create_subscription(10, handler)
        await sub.subscribe_data_change(ua_client.node("Sessions.main.StepCount"))
        await ua_client.session_call("main", "Start")
        for i in range(3):
            await ua_client.create(f"other{i}")
        await ua_client.session_call("main", "Fork", s("twin_of_main"),
                                     ua.Variant(1.0, ua.VariantType.Double))
        for i in range(3):
            await ua_client.server_call("DeleteSession", s(f"other{i}"))
        await ua_client.server_call("DeleteSession", s("twin_of_main"))
        while not handler.values.empty():
            handler.values.get_nowait()
        seen = set()
        async with asyncio.timeout(5):
            while len(seen) < 3:
                seen.add(await handler.values.get())
        assert max(seen) > 0
