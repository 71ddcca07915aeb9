"""Alarms and conditions as node-opcua, an independent stack, meets them (issue #17):
an alarm's whole life through node-opcua's own Part 9 event filter (the fields of
ExclusiveLimitAlarmType as its extractConditionFields finds them, where OfType
AcknowledgeableConditionType) on the Server object, its Acknowledge and Confirm
(``acknowledgeCondition``, ``confirmCondition``), a viewer's Acknowledge,
ConditionRefresh, and the event history through HistoryReadEvents (with a filter on
Kind, and with node-opcua's own AlarmConditionType filter). One run of
``scripts/alarm_life.js`` against one daemon; each test checks one part of it."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.nodeopcua import NodeOpcua
from tests.opcua.conftest import MODULE_LOOP, run_daemon, stop_daemon
from twin_server.runtime.daemon import Daemon
from twin_server.security.roles import Role
from twin_server.security.users import add_user

pytestmark = MODULE_LOOP

PASSWORD = "a long enough password"

#: a tank without an outlet (its level holds when the inflow stops) and the demo's
#: kind of level alarm, at limits the test reaches in a few seconds
CONFIG = """
[server]
session_idle_timeout = 0

[server.security]
policies = ["None"]
anonymous = "operator"

[twins.tank_level.components.tank]
model = "water_tank"
parameters = { area = 1.0, outflow_coefficient = 0.0, height = 2.0, initial_level = 0.5 }

[twins.tank_level.alarms.HighLevel]
variable = "tank.level"
high = 1.0
high_high = 1.5
deadband = 0.02
on_delay = 0.1
severity = 600
severity_high_high = 900
message = "Tank level high"

[sessions.tank]
twin = "tank_level"
step_size = 0.05
publish_rate = 20.0
autostart = true
"""

CONDITION = "Sessions.tank.Alarms.HighLevel"

#: HistoryReadEvents on the session node, three times: where Kind is Like 'alarm_%',
#: where Severity >= 900, and with node-opcua's own Part 9 filter (every field of
#: AlarmConditionType as its extractConditionFields finds them, where OfType
#: AlarmConditionType), each event then flat as alarm_life.js keeps them (non-null
#: fields by their dotted names); args: node, start (ISO), ns
HISTORY = """
const { main, withSession, plain } = require("./lib");
main(async (args, opcua) => withSession(args, async (session) => {
    const select = ["EventType", "Kind", "Severity", "Message", "SourceName"];
    const field = (name) => new opcua.SimpleAttributeOperand({
        typeDefinitionId: opcua.resolveNodeId("BaseEventType"),
        browsePath: [{ namespaceIndex: name === "Kind" ? args.ns : 0, name }],
        attributeId: opcua.AttributeIds.Value });
    const where = (operator, name, dataType, value) => new opcua.ContentFilter({ elements: [
        new opcua.ContentFilterElement({ filterOperator: opcua.FilterOperator[operator],
            filterOperands: [field(name), new opcua.LiteralOperand({
                value: new opcua.Variant({ dataType: opcua.DataType[dataType], value }) })] })] });
    async function read(whereClause, names = select, filter = new opcua.EventFilter({
        selectClauses: names.map(field), whereClause })) {
        const response = await session.historyRead(new opcua.HistoryReadRequest({
            historyReadDetails: new opcua.ReadEventDetails({
                startTime: new Date(args.start), endTime: new Date(Date.now() + 1000),
                numValuesPerNode: 0, filter }),
            timestampsToReturn: opcua.TimestampsToReturn.Both,
            nodesToRead: [{ nodeId: args.node }] }));
        const result = response.results[0];
        return { status: result.statusCode.name,
                 events: (result.historyData.events || []).map((e) => Object.fromEntries(
                     names.map((name, i) => [name, e.eventFields[i]])
                         .filter(([, v]) => v && v.dataType !== opcua.DataType.Null)
                         .map(([name, v]) => [name, plain(v.value)]))) };
    }
    const fields = await opcua.extractConditionFields(session, "AlarmConditionType");
    return { like: await read(where("Like", "Kind", "String", "alarm_%")),
             severe: await read(where("GreaterThanOrEqual", "Severity", "UInt16", 900)),
             alarms: await read(null, fields, opcua.constructEventFilter(
                 fields, opcua.ofType("AlarmConditionType"))) };
}));
"""


@dataclass
class Life:
    """What alarm_life.js saw, and the daemon it saw it on."""

    daemon: Daemon
    ns: int
    out: dict[str, Any]
    history: dict[str, Any]

    def step(self, name: str) -> str:
        """The status the server answered to the script's step ``name``."""
        return next(s["status"] for s in self.out["steps"] if s["step"] == name)

    def alarm_events(self) -> list[dict[str, Any]]:
        return [e for e in self.out["events"] if e.get("ConditionName") == "HighLevel"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def life(nodeopcua: NodeOpcua) -> AsyncIterator[Life]:
    state = Path(tempfile.mkdtemp(prefix="twin-server-alarms-"))
    add_user(state / "users.json", "vera", Role.VIEWER, PASSWORD)
    daemon, task = await run_daemon(CONFIG, state)
    try:
        url = daemon.endpoint_url
        start = datetime.now(UTC) - timedelta(seconds=1)
        out = await nodeopcua.run("alarm_life.js", url, timeout=60.0, session="tank",
                                  alarm="HighLevel",
                                  viewer={"user": "vera", "password": PASSWORD})
        assert daemon.server is not None and daemon.store is not None
        ns = daemon.server.namespace
        await daemon.server.flush_events()
        await daemon.store.flush()
        history = await nodeopcua.run(HISTORY, url, node=f"ns={ns};s=Sessions.tank",
                                      start=start.isoformat(), ns=ns)
        yield Life(daemon, ns, out, history)
    finally:
        await stop_daemon(daemon, task)


class TestLife:
    async def test_high_is_an_exclusive_limit_alarm(self, life: Life) -> None:
        """The level over 1.0 m: an ExclusiveLimitAlarmType event whose ConditionId is
        the condition's node, BranchId null, ActiveState 'High active' (Id true),
        LimitState High, unacknowledged, unconfirmed, retained, severity 600."""
        high = life.out["high"]
        assert high["EventType"] == "ns=0;i=9341"
        assert high["ConditionId"] == f"ns={life.ns};s={CONDITION}"
        assert high["BranchId"] == "ns=0;i=0"  # null: the condition itself, no branch
        assert high["SourceName"] == "tank"
        assert (high["ActiveState"], high["ActiveState.Id"]) == ("High active", True)
        assert high["LimitState.CurrentState"] == "High"
        assert high["LimitState.CurrentState.Id"] == "ns=0;i=9331"
        assert (high["AckedState.Id"], high["ConfirmedState.Id"], high["Retain"]) == (
            False, False, True)
        assert (high["Severity"], high["EnabledState.Id"]) == (600, True)
        assert high["Message"].startswith("Tank level high: tank.level = ")
        assert (high["HighLimit"], high["HighHighLimit"]) == (1.0, 1.5)
        assert high["InputNode"] == f"ns={life.ns};s=Sessions.tank.Components.tank.Outputs.level"

    async def test_acknowledge_and_confirm(self, life: Life) -> None:
        """node-opcua's acknowledgeCondition and confirmCondition with the EventId of
        the event answered: Good, each an event with the comment and the user; a
        second Acknowledge is BadConditionBranchAlreadyAcked, one with an older
        EventId BadEventIdUnknown."""
        assert life.step("Acknowledge") == "Good"
        assert life.step("Confirm") == "Good"
        assert life.step("Acknowledge again") == "BadConditionBranchAlreadyAcked"
        assert life.step("Acknowledge with a stale EventId") == "BadEventIdUnknown"
        acked = next(e for e in life.alarm_events() if e.get("Comment") == "on my way")
        assert (acked["AckedState.Id"], acked["ConfirmedState.Id"]) == (True, False)
        assert acked["ClientUserId"] == "anonymous"
        confirmed = life.out["confirmed"]
        assert (confirmed["Comment"], confirmed["ConfirmedState.Id"], confirmed["Retain"]) == (
            "checked", True, True)

    async def test_methods_and_comment(self, life: Life) -> None:
        """node-opcua finds the condition's five methods by browse name from the
        condition (the standard MethodIds: i=9027, 9028, 9029, 9111, 9113), and its
        addCommentCondition is Good, an event with the comment and the user."""
        assert life.out["methods"] == {
            "Enable": "ns=0;i=9027", "Disable": "ns=0;i=9028", "AddComment": "ns=0;i=9029",
            "Acknowledge": "ns=0;i=9111", "Confirm": "ns=0;i=9113"}
        assert life.step("AddComment") == "Good"
        commented = life.out["commented"]
        assert (commented["ClientUserId"], commented["AckedState.Id"]) == ("anonymous", True)

    async def test_part9_fields(self, life: Life) -> None:
        """The mandatory fields node-opcua selects are there: each state's
        TransitionTime (when that state last changed), SourceTimestamp of Quality,
        LastSeverity and Comment, SuppressedOrShelved; LastSeverity is the severity
        before the event (HighHigh's: 600)."""
        high, high_high = life.out["high"], life.out["highHigh"]
        for name in ("Quality.SourceTimestamp", "LastSeverity.SourceTimestamp",
                     "Comment.SourceTimestamp", "EnabledState.TransitionTime",
                     "ActiveState.TransitionTime", "AckedState.TransitionTime"):
            assert name in high, name
        assert high["SuppressedOrShelved"] is False
        assert (high_high["Severity"], high_high["LastSeverity"]) == (900, 600)
        confirmed = life.out["confirmed"]
        assert confirmed["ActiveState.TransitionTime"] == high["ActiveState.TransitionTime"]
        assert confirmed["ConfirmedState.TransitionTime"] > high["Time"]

    async def test_viewer_refused(self, life: Life) -> None:
        """A viewer's Acknowledge is BadUserAccessDenied; the operator's after it is Good."""
        assert life.step("viewer Acknowledge") == "BadUserAccessDenied"
        assert not any(e.get("Comment") == "viewer" for e in life.alarm_events())

    async def test_high_high_then_normal(self, life: Life) -> None:
        """HighHigh is a new alarm to acknowledge (severity 900); back below the limits
        it stays retained until acknowledged and confirmed, then Retain goes false."""
        high_high = life.out["highHigh"]
        assert (high_high["ActiveState"], high_high["AckedState.Id"],
                high_high["ConfirmedState.Id"], high_high["Severity"]) == (
            "HighHigh active", False, False, 900)
        assert life.step("Acknowledge (normal)") == "Good"
        assert life.step("Confirm (normal)") == "Good"
        last = life.alarm_events()[-1]
        assert (last["ActiveState.Id"], last["AckedState.Id"], last["ConfirmedState.Id"],
                last["Retain"]) == (False, True, True, False)
        assert last.get("LimitState.CurrentState", "") == ""

    async def test_condition_refresh(self, life: Life) -> None:
        """ConditionRefresh through node-opcua's callConditionRefresh: RefreshStart, the
        retained condition as it is, RefreshEnd, though the where-clause admits only
        conditions (Part 9: refresh events pass every filter); with nothing retained,
        RefreshStart and RefreshEnd alone."""
        assert life.step("ConditionRefresh (active)") == "Good"
        kinds = [e["EventType"] for e in life.out["refreshed"]]
        assert kinds == ["ns=0;i=2787", "ns=0;i=9341", "ns=0;i=2788"], kinds
        start, refreshed, end = life.out["refreshed"]
        assert start["EventId"] == start["EventId"] and end["EventId"] != start["EventId"]
        assert (refreshed["ConfirmedState.Id"], refreshed["Retain"]) == (True, True)
        assert refreshed["Comment"] == "level sensor checked"
        assert [e["EventType"] for e in life.out["refreshedNormal"]] == [
            "ns=0;i=2787", "ns=0;i=2788"]


class TestShelving:
    async def test_timed_shelve_and_unshelve(self, life: Life) -> None:
        """ShelvingState's TimedShelve and Unshelve as node-opcua finds them (a browse
        from ShelvingState: the standard i=2949, 2947): over MaxTimeShelved
        BadShelvingTimeOutOfRange, then Good (an event with SuppressedOrShelved and
        ShelvingState TimedShelved, CurrentState read so), again
        BadConditionAlreadyShelved; Unshelve Good (SuppressedOrShelved false), again
        BadConditionNotShelved."""
        assert life.out["shelvingMethods"] == {
            "TimedShelve": "ns=0;i=2949", "OneShotShelve": "ns=0;i=2948",
            "Unshelve": "ns=0;i=2947"}
        assert life.step("TimedShelve over MaxTimeShelved") == "BadShelvingTimeOutOfRange"
        assert life.step("TimedShelve") == "Good"
        assert life.step("TimedShelve again") == "BadConditionAlreadyShelved"
        assert life.step("Unshelve") == "Good"
        assert life.step("Unshelve again") == "BadConditionNotShelved"
        shelved, unshelved = life.out["shelved"], life.out["unshelved"]
        assert (shelved["ShelvingState.CurrentState"], shelved["ShelvingState.CurrentState.Id"],
                shelved["ClientUserId"]) == ("TimedShelved", "ns=0;i=2932", "anonymous")
        assert 0 < shelved["ShelvingState.UnshelveTime"] <= 60000
        assert shelved["Message"] == "Tank level high: shelved by anonymous for 1 min"
        assert (unshelved["ShelvingState.CurrentState"],
                unshelved["ShelvingState.LastTransition.Id"]) == ("Unshelved", "ns=0;i=2940")
        assert (life.out["shelvingRead"], life.out["shelvingReadAfter"]) == (
            "TimedShelved", "Unshelved")


class TestHistory:
    async def test_read_events_with_a_where_filter(self, life: Life) -> None:
        """node-opcua's HistoryReadEvents on the session node: a where-filter Kind Like
        'alarm_%' finds every transition in order (condition events that also carry
        the Kind naming the transition), and Severity >= 900 the HighHigh alone."""
        like, severe = life.history["like"], life.history["severe"]
        assert (like["status"], severe["status"]) == ("Good", "Good")
        kinds = [e["Kind"] for e in like["events"]]
        assert kinds == ["alarm_active", "alarm_acknowledged", "alarm_confirmed",
                         "alarm_comment", "alarm_limit", "alarm_inactive",
                         "alarm_acknowledged", "alarm_confirmed", "alarm_shelved",
                         "alarm_unshelved"], kinds
        assert all(e["SourceName"] == "tank" for e in like["events"])
        assert [(e["Kind"], e["Severity"]) for e in severe["events"]] == [("alarm_limit", 900)]
        assert "above the HighHigh limit 1.5" in severe["events"][0]["Message"]

    async def test_read_alarm_events_with_a_part9_filter(self, life: Life) -> None:
        """node-opcua's HistoryReadEvents with its own AlarmConditionType filter (every
        field, where OfType AlarmConditionType): each transition an
        ExclusiveLimitAlarmType event of the condition, every field node-opcua selects
        as the live event had it (matched by EventId)."""
        alarms = life.history["alarms"]
        assert alarms["status"] == "Good"
        read = alarms["events"]
        assert [(e["EventType"], e["ConditionId"], e["ConditionName"]) for e in read] == [
            ("ns=0;i=9341", f"ns={life.ns};s={CONDITION}", "HighLevel")] * 10
        assert [(e["ActiveState.Id"], e["AckedState.Id"], e["ConfirmedState.Id"],
                 e["Severity"]) for e in read] == [
            (True, False, False, 600), (True, True, False, 600), (True, True, True, 600),
            (True, True, True, 600), (True, False, False, 900), (False, False, False, 600),
            (False, True, False, 600), (False, True, True, 600), (False, True, True, 600),
            (False, True, True, 600)]
        assert [e["SuppressedOrShelved"] for e in read] == [False] * 8 + [True, False]
        live: dict[str, dict[str, Any]] = {}
        for event in life.alarm_events():  # the first of each EventId (not a refresh's)
            live.setdefault(str(event["EventId"]), event)
        for event in read:
            went_out = live[str(event["EventId"])]
            assert len(event) > 30 and event.keys() <= went_out.keys(), event
            assert {k: went_out[k] for k in event} == event
