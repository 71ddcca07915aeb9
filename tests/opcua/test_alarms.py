"""Alarms as OPC UA Part 9 conditions, end to end through a daemon and asyncua clients:
an alarm's whole life, ConditionRefresh, the roles, event history, and the session's
Fork, Snapshot, Restore, Reset and deletion (``opcua/alarms.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from asyncua import Client, ua
from asyncua.common.events import Event, get_filter_from_event_type
from structlog.testing import capture_logs

from tests.events import RunEvents
from tests.opcua.conftest import (
    MODULE_LOOP,
    in_process,
    run_daemon,
    stop_daemon,
)
from twin_server.engine.session import Session
from twin_server.opcua.server import NAMESPACE_URI

pytestmark = MODULE_LOOP

CONFIG = """
[server.security]
policies = ["None"]
anonymous = "{role}"

[twins.t]
[twins.t.components.src]
model = "constant"
parameters = {{ value = 0.0 }}
[twins.t.alarms.Level]
variable = "src.output"
high = 1.0
high_high = 2.0
severity = 600
message = "Level high"
max_time_shelved = 60

[sessions.a]
twin = "t"
autostart = false
step_size = 0.1
"""

_ACK = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
_CONFIRM = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Confirm)
_REFRESH = ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh)
_SERVER = ua.NodeId(ua.ObjectIds.Server)
_TIMED_SHELVE = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_TimedShelve)
_ONE_SHOT_SHELVE = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_OneShotShelve)
_UNSHELVE = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_Unshelve)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Any]:
    daemon, task = await run_daemon(CONFIG.format(role="operator"))
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def client(daemon: Any) -> AsyncIterator[tuple[Client, int]]:
    async with Client(daemon.endpoint_url, timeout=10) as c:
        yield c, await c.get_namespace_index(NAMESPACE_URI)


async def _subscribe(client: Client, node: ua.NodeId) -> tuple[Any, RunEvents]:
    events = RunEvents()
    sub = await client.create_subscription(20, events)
    alarm_type = client.get_node(ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType))
    await sub.subscribe_events(client.get_node(node), alarm_type)
    return sub, events


def _drive(session: Session, *values: float) -> None:
    for value in values:
        session.set_parameters({"src": {"value": value}})
        session.step(1)


async def _call(client: Client, obj: ua.NodeId, method: ua.NodeId,
                *args: ua.Variant) -> ua.StatusCode:
    (result,) = await client.uaclient.call([ua.CallMethodRequest(
        ObjectId=obj, MethodId=method, InputArguments=list(args))])
    return result.StatusCode


def _args(event_id: bytes, comment: str) -> tuple[ua.Variant, ua.Variant]:
    return (ua.Variant(event_id, ua.VariantType.ByteString),
            ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText))


class TestLife:
    async def test_whole_life(self, daemon: Any, client: tuple[Client, int]) -> None:
        """Inactive, active High, acknowledged, confirmed, HighHigh, back to normal:
        each an ExclusiveLimitAlarm event on the Server object, nodes following."""
        c, ns = client
        session = in_process(daemon, "a")
        cond = ua.NodeId("Sessions.a.Alarms.Level", ns)
        assert await c.get_node(ua.NodeId("Sessions.a.Alarms.Level.ActiveState.Id", ns)
                                ).read_value() is False
        sub, events = await _subscribe(c, _SERVER)
        try:
            _drive(session, 1.5)
            (active,) = await events.wait(1)
            assert (active.ConditionName, getattr(active, "ActiveState/Id"),
                    getattr(active, "AckedState/Id"), active.Retain, active.Severity) == (
                "Level", True, False, True, 600)
            assert "High limit 1" in active.Message.Text
            status = await _call(c, cond, _ACK, *_args(active.EventId, "on my way"))
            assert status.is_good(), status
            acked = (await events.wait(2))[1]
            assert getattr(acked, "AckedState/Id") is True
            assert acked.Comment.Text == "on my way"
            assert acked.ClientUserId == "anonymous"
            status = await _call(c, cond, _CONFIRM, *_args(acked.EventId, ""))
            assert status.is_good(), status
            confirmed = (await events.wait(3))[2]
            assert getattr(confirmed, "ConfirmedState/Id") is True and confirmed.Retain
            _drive(session, 2.5)
            high_high = (await events.wait(4))[3]
            assert (getattr(high_high, "AckedState/Id"), high_high.Severity) == (False, 800)
            _drive(session, 0.0)
            normal = (await events.wait(5))[4]
            assert getattr(normal, "ActiveState/Id") is False and normal.Retain
            assert await c.get_node(ua.NodeId("Sessions.a.Alarms.Level.LimitState", ns)
                                    ).read_value() == ua.LocalizedText("")
            # a stale EventId is refused, nothing changes
            status = await _call(c, cond, _ACK, *_args(active.EventId, ""))
            assert status.value == ua.StatusCodes.BadEventIdUnknown
        finally:
            await sub.delete()
            session.reset()

    async def test_condition_refresh(self, daemon: Any, client: tuple[Client, int]) -> None:
        """ConditionRefresh sends RefreshStart, each retained condition, RefreshEnd."""
        c, _ns = client
        session = in_process(daemon, "a")
        _drive(session, 1.5)
        await daemon.server.flush_events()
        events = RunEvents()
        sub = await c.create_subscription(20, events)
        base = c.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
        await sub.subscribe_events(c.get_node(_SERVER), base)
        try:
            status = await _call(c, ua.NodeId(ua.ObjectIds.ConditionType), _REFRESH,
                                 ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
            assert status.is_good(), status
            got = await events.wait(3)
            assert [e.EventType for e in got] == [
                ua.NodeId(ua.ObjectIds.RefreshStartEventType),
                ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType),
                ua.NodeId(ua.ObjectIds.RefreshEndEventType)]
        finally:
            await sub.delete()
            session.reset()

    async def test_event_history(self, daemon: Any, client: tuple[Client, int]) -> None:
        """Active, acknowledged, inactive read back from the session's event history
        with an AlarmConditionType filter (its every field, where OfType): condition
        events of the alarm's type, field for field the events that went out live. An
        alarm event stored without fields (before schema v3), or with fields it cannot
        read (logged), is a session log event."""
        c, ns = client
        session = in_process(daemon, "a")
        await daemon.server.flush_events()  # (the earlier tests' resets)
        start = datetime.now(UTC)
        node = c.get_node(ua.NodeId("Sessions.a", ns))
        alarm_type = c.get_node(ua.NodeId(ua.ObjectIds.AlarmConditionType))
        evfilter = await get_filter_from_event_type([alarm_type], where_clause_generation=False)
        evfilter.WhereClause = ua.ContentFilter(Elements=[ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.OfType, FilterOperands=[
                ua.LiteralOperand(Value=ua.Variant(alarm_type.nodeid))])])
        events = RunEvents()
        sub = await c.create_subscription(20, events)
        try:
            await sub.subscribe_events(node, alarm_type, evfilter)
            _drive(session, 1.5)
            (active,) = await events.wait(1)
            status = await _call(c, ua.NodeId("Sessions.a.Alarms.Level", ns), _ACK,
                                 *_args(active.EventId, "seen"))
            assert status.is_good(), status
            await events.wait(2)
            _drive(session, 0.0)
            live = await events.wait(3)
        finally:
            await sub.delete()
        await daemon.server.flush_events()
        daemon.store.record_event("a", "alarm_active", "stored before v3", 600,
                                  datetime.now(UTC).timestamp())
        daemon.store.record_event("a", "alarm_active", "damaged", 600,
                                  datetime.now(UTC).timestamp(), b"\x07 not ours")
        await daemon.store.flush()
        end = datetime.now(UTC) + timedelta(seconds=1)
        with capture_logs() as logs:
            result = await node.history_read_events(ua.ReadEventDetails(
                StartTime=start, EndTime=end, NumValuesPerNode=0, Filter=evfilter))
        assert result.StatusCode.is_good(), result.StatusCode
        read = [Event.from_event_fields(evfilter.SelectClauses, e.EventFields)
                for e in result.HistoryData.Events]
        limit_alarm = ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)
        assert [(getattr(e, "ActiveState/Id"), getattr(e, "AckedState/Id"), e.Severity,
                 e.ConditionName, e.EventType, e.NodeId) for e in read] == [
            (True, False, 600, "Level", limit_alarm, ua.NodeId("Sessions.a.Alarms.Level", ns)),
            (True, True, 600, "Level", limit_alarm, ua.NodeId("Sessions.a.Alarms.Level", ns)),
            (False, True, 600, "Level", limit_alarm, ua.NodeId("Sessions.a.Alarms.Level", ns))]
        assert [e.get_event_props_as_fields_dict() for e in read] == [
            e.get_event_props_as_fields_dict() for e in live]
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "history_event_fields_unreadable"]
        logged = await node.read_event_history(
            start, end, evtypes=[c.get_node(ua.NodeId("TwinSessionEventType", ns))])
        assert [(e.Kind, e.Message.Text) for e in logged if e.Kind.startswith("alarm_")] == [
            ("alarm_active", "stored before v3"), ("alarm_active", "damaged")]
        session.reset()


def _ms(value: float) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Double)


class TestShelving:
    async def test_timed_shelve_then_unshelved_by_time(self, daemon: Any,
                                                        client: tuple[Client, int]) -> None:
        """TimedShelve on ShelvingState (1 s): an event saying who shelved it for how
        long, SuppressedOrShelved true, ShelvingState TimedShelved; a shelved alarm's
        transitions still go out (shelved), ConditionRefresh shows it shelved; once its
        time is up, an 'unshelved' event (TimedShelvedToUnshelved), in the history too."""
        c, ns = client
        session = in_process(daemon, "a")
        shelving = ua.NodeId("Sessions.a.Alarms.Level.ShelvingState", ns)
        start = datetime.now(UTC)
        sub, events = await _subscribe(c, _SERVER)
        try:
            _drive(session, 1.5)
            await events.wait(1)
            assert await c.get_node(ua.NodeId("Sessions.a.Alarms.Level.MaxTimeShelved", ns)
                                    ).read_value() == 60_000.0
            status = await _call(c, shelving, _TIMED_SHELVE, _ms(1000.0))
            assert status.is_good(), status
            shelved = (await events.wait(2))[1]
            assert (shelved.SuppressedOrShelved, getattr(shelved, "ActiveState/Id"),
                    shelved.ClientUserId) == (True, True, "anonymous")
            assert shelved.Message.Text == "Level high: shelved by anonymous for 1 s"
            current = c.get_node(ua.NodeId(
                "Sessions.a.Alarms.Level.ShelvingState.CurrentState.Id", ns))
            assert await current.read_value() == ua.NodeId(
                ua.ObjectIds.ShelvedStateMachineType_TimedShelved)
            left = await c.get_node(ua.NodeId(
                "Sessions.a.Alarms.Level.ShelvingState.UnshelveTime", ns)).read_value()
            assert 0 < left <= 1000.0
            _drive(session, 2.5)  # HighHigh while shelved: reported, shelved
            high_high = (await events.wait(3))[2]
            assert (high_high.Severity, high_high.SuppressedOrShelved) == (800, True)
            unshelved = (await events.wait(4))[3]
            assert (unshelved.SuppressedOrShelved, unshelved.ClientUserId) == (False, "")
            assert "shelving ended" in unshelved.Message.Text
            assert await current.read_value() == ua.NodeId(
                ua.ObjectIds.ShelvedStateMachineType_Unshelved)
            assert await c.get_node(ua.NodeId(
                "Sessions.a.Alarms.Level.ShelvingState.LastTransition.Id", ns)
            ).read_value() == ua.NodeId(
                ua.ObjectIds.ShelvedStateMachineType_TimedShelvedToUnshelved)
        finally:
            await sub.delete()
            session.reset()
        await daemon.server.flush_events()
        await daemon.store.flush()
        stored = await c.get_node(ua.NodeId("Sessions.a", ns)).read_event_history(
            start, datetime.now(UTC) + timedelta(seconds=1),
            evtypes=[c.get_node(ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType))])
        assert [(e.Message.Text, e.SuppressedOrShelved) for e in stored][1:4] == [
            (shelved.Message.Text, True), (high_high.Message.Text, True),
            (unshelved.Message.Text, False)]

    async def test_one_shot_refusals_and_refresh(self, daemon: Any,
                                                 client: tuple[Client, int]) -> None:
        """Refusals with Part 9's codes (Unshelve of an unshelved alarm, called on the
        condition with AlarmConditionType's ShelvingState.Unshelve; a ShelvingTime
        over MaxTimeShelved, OneShotShelve twice); ConditionRefresh shows the one-shot
        shelving; the alarm going inactive ends it (one event, SuppressedOrShelved
        false)."""
        c, ns = client
        session = in_process(daemon, "a")
        shelving = ua.NodeId("Sessions.a.Alarms.Level.ShelvingState", ns)
        sub, events = await _subscribe(c, _SERVER)
        try:
            _drive(session, 1.5)
            await events.wait(1)
            status = await _call(  # (AlarmConditionType's method, on the condition)
                c, ua.NodeId("Sessions.a.Alarms.Level", ns),
                ua.NodeId(ua.ObjectIds.AlarmConditionType_ShelvingState_Unshelve))
            assert status.value == ua.StatusCodes.BadConditionNotShelved
            status = await _call(c, shelving, _TIMED_SHELVE, _ms(60_001.0))
            assert status.value == ua.StatusCodes.BadShelvingTimeOutOfRange
            status = await _call(c, shelving, _ONE_SHOT_SHELVE)
            assert status.is_good(), status
            status = await _call(c, shelving, _ONE_SHOT_SHELVE)
            assert status.value == ua.StatusCodes.BadConditionAlreadyShelved
            shelved = (await events.wait(2))[1]
            assert (shelved.SuppressedOrShelved,
                    getattr(shelved, "ShelvingState/CurrentState").Text) == (
                True, "OneShotShelved")
            status = await _call(c, ua.NodeId(ua.ObjectIds.ConditionType), _REFRESH,
                                 ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
            assert status.is_good(), status
            refresh = await events.wait(5)  # RefreshStart, the condition, RefreshEnd
            assert (refresh[3].EventId, refresh[3].SuppressedOrShelved) == (
                shelved.EventId, True)
            _drive(session, 0.0)
            inactive = (await events.wait(6))[5]
            assert (getattr(inactive, "ActiveState/Id"), inactive.SuppressedOrShelved) == (
                False, False)
            assert len(events.items) == 6
        finally:
            await sub.delete()
            session.reset()


class TestSessions:
    async def test_fork_snapshot_restore_reset_delete(self, daemon: Any,
                                                       client: tuple[Client, int]) -> None:
        """A fork serves its source's condition; Restore brings back an acknowledgement;
        Reset clears; a deleted session's active condition ends with a last event."""
        c, ns = client
        session = in_process(daemon, "a")
        _drive(session, 1.5)
        session.alarm("Level", "acknowledge", None, "", "test")
        snap_id = await daemon.take_snapshot("a")
        await daemon.fork_session("a", "b", 0.0)
        acked = c.get_node(ua.NodeId("Sessions.b.Alarms.Level.AckedState.Id", ns))
        active = c.get_node(ua.NodeId("Sessions.b.Alarms.Level.ActiveState.Id", ns))
        assert (await active.read_value(), await acked.read_value()) == (True, True)
        session.reset()
        await daemon.server.flush_events()
        a_active = c.get_node(ua.NodeId("Sessions.a.Alarms.Level.ActiveState.Id", ns))
        assert await a_active.read_value() is False
        await daemon.restore_snapshot("a", snap_id)
        await daemon.server.flush_events()
        assert await a_active.read_value() is True
        sub, events = await _subscribe(c, _SERVER)
        try:
            await daemon.delete_session("b")
            (last,) = await events.wait(1)
            assert (last.SourceName, last.Retain, getattr(last, "ActiveState/Id")) == (
                "b", False, False)
            assert "deleted" in last.Message.Text
        finally:
            await sub.delete()
            session.reset()


class TestRoles:
    async def test_viewer_acknowledge_refused(self) -> None:
        """A viewer's Acknowledge and TimedShelve are BadUserAccessDenied; the condition
        stays unacknowledged and unshelved."""
        daemon, task = await run_daemon(CONFIG.format(role="viewer"))
        try:
            session = in_process(daemon, "a")
            _drive(session, 1.5)
            async with Client(daemon.endpoint_url, timeout=10) as c:
                ns = await c.get_namespace_index(NAMESPACE_URI)
                cond = ua.NodeId("Sessions.a.Alarms.Level", ns)
                status = await _call(c, cond, _ACK,
                                     *_args(session.alarms.event_id("Level"), ""))
                assert status.value == ua.StatusCodes.BadUserAccessDenied
                status = await _call(c, ua.NodeId("Sessions.a.Alarms.Level.ShelvingState",
                                                  ns), _TIMED_SHELVE, _ms(1000.0))
                assert status.value == ua.StatusCodes.BadUserAccessDenied
            assert not session.alarm_states()[0].acked
            assert not session.alarm_states()[0].shelved
        finally:
            await stop_daemon(daemon, task)

