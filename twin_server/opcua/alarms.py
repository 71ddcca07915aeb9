"""OPC UA Alarms & Conditions (Part 9) of the sessions' alarms (``engine/alarms.py``).

Each alarm of a served session is a condition object ``Sessions.<s>.Alarms.<name>``
of ExclusiveLimitAlarmType (a limit alarm, one limit state at a time),
NonExclusiveLimitAlarmType (``exclusive = false``) or OffNormalAlarmType (a
Boolean), with its variable as InputNode (and ``HasCondition`` from it), and the
standard fields as child nodes: EnabledState, ActiveState, AckedState,
ConfirmedState (each with its Id), Retain, Severity, Message, Time, Comment,
ClientUserId, an exclusive alarm's LimitState/CurrentState, and its limits.

Every transition the session reports (an ``alarm_<transition>`` SessionEvent
carrying the ``AlarmState``) writes those nodes and emits an event of the
condition's type (ConditionId = the condition's NodeId, SourceNode the session,
with the same fields) from the session node, Sessions, TwinServer and the Server
object, as the session log's events go (``events.py``). Each event carries what
Part 9 makes mandatory: BranchId null, LastSeverity (the severity before it), each
state's TransitionTime (when that state last changed), the SourceTimestamp of
Quality, LastSeverity and Comment, SuppressedOrShelved.

Shelving (Part 9 ShelvedStateMachineType; the engine's ``shelving``): each condition
has ShelvingState (an object of ShelvedStateMachineType with CurrentState and its
Id, LastTransition and its Id, UnshelveTime: the milliseconds left, kept current
about once a second while shelved), SuppressedOrShelved and MaxTimeShelved (ms).
ShelvingState references the standard TimedShelve(ShelvingTime, ms), OneShotShelve
and Unshelve (ShelvedStateMachineType's; AlarmConditionType's instance declarations
are bound too), which clients call with ShelvingState as the ObjectId (the condition
itself is taken as well): BadConditionAlreadyShelved, BadConditionNotShelved,
BadShelvingTimeOutOfRange (over MaxTimeShelved), BadConditionDisabled; an
operator's, as Acknowledge. A shelved condition's transitions still go out, with
SuppressedOrShelved true: a client's alarm list hides them (Part 9 leaves the
filtering to the client). The shelving's end by time is this module's: the server's
real clock (``run_shelving``, a task of the server's TaskGroup) calls the engine's
``expire_shelving`` once the ``unshelve_at`` a condition shows has passed; the
expiry lives in the condition, so a fork, a restored snapshot or a worker's
replacement re-arms it from the state it shows.

Methods: the standard ones of the condition types, called on the condition
(ObjectId) with the type's method (AcknowledgeableConditionType.Acknowledge and
.Confirm, ConditionType.AddComment, .Enable, .Disable; each condition references
them): the call goes to the session, whose engine checks the EventId and the
condition's state (``AlarmRefused``: BadEventIdUnknown, BadConditionBranchAlreadyAcked,
...); the comment and the calling user (ClientUserId) are kept. Roles
(``security/roles.py``): an operator's; a viewer gets BadUserAccessDenied.
ConditionRefresh and ConditionRefresh2 (on the server, replacing asyncua's,
which is unbound by default): RefreshStartEvent, the current event of every
retained condition, RefreshEndEvent, to the one subscription asked for.

A deleted session's retained conditions get a last event first (inactive, not
retained: "session deleted"), so that an alarm list drops them.

History: each event emitted for a transition (and each last one) is handed back
encoded (``event_fields.encode``), for the session's event history to keep with
the transition, so that HistoryReadEvents answers the same event, of the
condition's type with its fields (``history_read.py``). A ConditionRefresh's
repeats are not transitions and are not stored again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from asyncua import ua
from asyncua.common import event_objects

from twin_server.engine.alarms import (
    EXPIRE,
    LIMITS,
    ONE_SHOT_SHELVED,
    TIMED_SHELVED,
    UNSHELVED,
    AlarmDefinition,
    AlarmState,
    event_id,
)
from twin_server.errors import TwinServerError
from twin_server.opcua import event_fields
from twin_server.opcua.nodes import NodeBatch, add_reference
from twin_server.opcua.status import status_of
from twin_server.runtime import checks
from twin_server.runtime.host import HostedSession
from twin_server.security.guard import current_user_name

log = structlog.get_logger(__name__)

_ID = ua.ObjectIds
#: the standard methods a condition's clients call, by MethodId -> engine action
METHODS: dict[int, str] = {
    _ID.AcknowledgeableConditionType_Acknowledge: "acknowledge",
    _ID.AcknowledgeableConditionType_Confirm: "confirm",
    _ID.ConditionType_AddComment: "add_comment",
    _ID.ConditionType_Enable: "enable",
    _ID.ConditionType_Disable: "disable",
}
#: the shelving methods, by MethodId -> engine action: ShelvedStateMachineType's (what
#: ShelvingState references) and AlarmConditionType's instance declarations of them
SHELVE_METHODS: dict[int, str] = {
    _ID.ShelvedStateMachineType_TimedShelve: "timed_shelve",
    _ID.ShelvedStateMachineType_OneShotShelve: "one_shot_shelve",
    _ID.ShelvedStateMachineType_Unshelve: "unshelve",
    _ID.AlarmConditionType_ShelvingState_TimedShelve: "timed_shelve",
    _ID.AlarmConditionType_ShelvingState_OneShotShelve: "one_shot_shelve",
    _ID.AlarmConditionType_ShelvingState_Unshelve: "unshelve",
}
_SHELVING_BROWSE = {_ID.ShelvedStateMachineType_TimedShelve: "TimedShelve",
                    _ID.ShelvedStateMachineType_OneShotShelve: "OneShotShelve",
                    _ID.ShelvedStateMachineType_Unshelve: "Unshelve"}
_SHELVING_STATE_IDS = {
    UNSHELVED: _ID.ShelvedStateMachineType_Unshelved,
    TIMED_SHELVED: _ID.ShelvedStateMachineType_TimedShelved,
    ONE_SHOT_SHELVED: _ID.ShelvedStateMachineType_OneShotShelved,
}
_SHELVING_TRANSITION_IDS = {
    (UNSHELVED, TIMED_SHELVED): _ID.ShelvedStateMachineType_UnshelvedToTimedShelved,
    (UNSHELVED, ONE_SHOT_SHELVED): _ID.ShelvedStateMachineType_UnshelvedToOneShotShelved,
    (TIMED_SHELVED, UNSHELVED): _ID.ShelvedStateMachineType_TimedShelvedToUnshelved,
    (TIMED_SHELVED, ONE_SHOT_SHELVED):
        _ID.ShelvedStateMachineType_TimedShelvedToOneShotShelved,
    (ONE_SHOT_SHELVED, UNSHELVED): _ID.ShelvedStateMachineType_OneShotShelvedToUnshelved,
    (ONE_SHOT_SHELVED, TIMED_SHELVED):
        _ID.ShelvedStateMachineType_OneShotShelvedToTimedShelved,
}
#: how often UnshelveTime (the time left) is written while a condition is shelved, s
UNSHELVE_TIME_PERIOD = 1.0
REFRESH = (_ID.ConditionType_ConditionRefresh, _ID.ConditionType_ConditionRefresh2)
_HAS_COMPONENT = ua.NodeId(_ID.HasComponent)
_HAS_CONDITION = ua.NodeId(_ID.HasCondition)
_PROCESS_CLASS = ua.NodeId(_ID.ProcessConditionClassType)
_LIMIT_STATE_IDS = {
    "HighHigh": _ID.ExclusiveLimitStateMachineType_HighHigh,
    "High": _ID.ExclusiveLimitStateMachineType_High,
    "Low": _ID.ExclusiveLimitStateMachineType_Low,
    "LowLow": _ID.ExclusiveLimitStateMachineType_LowLow,
}
_VALUE = ua.AttributeIds.Value
_LT = ua.VariantType.LocalizedText


class LogEvent(Protocol):
    """Where the server hands every event it emits, for the history (the daemon's
    ``Recording.event``): an alarm's with its time and its ``event_fields``."""

    def __call__(self, session: str, kind: str, message: str, severity: int = 100, *,
                 fields: bytes | None = None, t: float | None = None) -> None: ...


def condition_type(definition: AlarmDefinition) -> ua.NodeId:
    if definition.kind == "off_normal":
        return ua.NodeId(_ID.OffNormalAlarmType)
    return ua.NodeId(_ID.ExclusiveLimitAlarmType if definition.exclusive
                     else _ID.NonExclusiveLimitAlarmType)


@dataclass(slots=True)
class _Condition:
    session: HostedSession
    definition: AlarmDefinition
    nodeid: ua.NodeId
    input_node: ua.NodeId
    #: the notifiers its events go out from: the session node first
    chain: tuple[ua.NodeId, ...]
    state: AlarmState
    #: child variable -> its NodeId (the nodes each transition writes)
    fields: dict[str, ua.NodeId] = field(default_factory=dict)
    when: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: the severity before the latest event's (its LastSeverity)
    last_severity: int = 0
    #: when each two-state variable (and Comment, Severity, Quality) last changed: the
    #: TransitionTime and SourceTimestamp fields of its events
    changed: dict[str, datetime] = field(default_factory=dict)
    #: its ShelvingState object, and the latest change of shelving (from, to)
    shelving_node: ua.NodeId | None = None
    last_shelving: tuple[str, str] | None = None

    def follow(self, state: AlarmState, when: datetime) -> None:
        """Take ``state`` (the condition after its latest transition) at ``when``."""
        before = self.state
        self.last_severity = before.severity
        if before.shelving != state.shelving:
            self.last_shelving = (before.shelving, state.shelving)
        for name, (old, new) in _tracked(before, state).items():
            if old != new or name not in self.changed:
                self.changed[name] = when
        self.state, self.when = state, when


def _tracked(before: AlarmState, after: AlarmState) -> dict[str, tuple[object, object]]:
    return {"EnabledState": (before.enabled, after.enabled),
            "ActiveState": (before.active, after.active),
            "AckedState": (before.acked, after.acked),
            "ConfirmedState": (before.confirmed, after.confirmed),
            "Comment": (before.comment, after.comment),
            "LastSeverity": (before.severity, after.severity),
            "ShelvingState": (before.shelving, after.shelving),
            "Quality": (None, None)}


class AlarmConditions:
    """Every served session's conditions, their events, methods and ConditionRefresh."""

    def __init__(self, iserver: Any, namespace: int, *,
                 after: Callable[[], Awaitable[None]] | None = None) -> None:
        self._iserver = iserver
        self.ns = namespace
        self._by_node: dict[ua.NodeId, _Condition] = {}
        self._by_session: dict[str, dict[str, _Condition]] = {}
        #: awaited after a method call: the call's event goes out before it returns
        self._after = after
        self.emitted = 0
        #: (session, alarm) -> when its shelving ends (wall clock), for ``run_shelving``
        self._expiries: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._by_shelving: dict[ua.NodeId, _Condition] = {}

    def install(self) -> None:
        """Bind the standard condition methods and ConditionRefresh(2) to us."""
        aspace = self._iserver.aspace
        for method in METHODS:
            aspace.add_method_callback(ua.NodeId(method), self._method(method))
        for method in SHELVE_METHODS:
            aspace.add_method_callback(ua.NodeId(method), self._shelving_method(method))
        for method in REFRESH:
            aspace.add_method_callback(ua.NodeId(method), self._refresh)

    # -- building ------------------------------------------------------------------------

    def build(self, batch: NodeBatch, session: HostedSession, root: ua.NodeId,
              chain: Sequence[ua.NodeId], definitions: Sequence[AlarmDefinition],
              states: Sequence[AlarmState],
              input_node: Callable[[AlarmDefinition], ua.NodeId]) -> list[_Condition]:
        """Collect ``Alarms/<name>`` below ``root`` into ``batch`` (``link`` after the
        commit adds the references)."""
        if not definitions:
            return []
        base = f"{root.Identifier}.Alarms"
        folder = batch.folder(root, base, "Alarms", "the session's alarms (Part 9 conditions)")
        made: list[_Condition] = []
        for definition, state in zip(definitions, states, strict=True):
            path = f"{base}.{definition.name}"
            nodeid = batch.object(folder, path, definition.name,
                                  definition.message or definition.name,
                                  typedef=condition_type(definition))
            cond = _Condition(session, definition, nodeid, input_node(definition),
                              tuple(chain), state, last_severity=state.severity)
            cond.follow(state, cond.when)
            cond.shelving_node = batch.object(
                nodeid, f"{path}.ShelvingState", "ShelvingState",
                "shelving: Unshelved, TimedShelved, OneShotShelved",
                typedef=ua.NodeId(_ID.ShelvedStateMachineType), namespace=0)
            cond.fields["ShelvingState"] = cond.shelving_node
            values = _node_values(cond)
            for name, (value, vtype) in values.items():
                parent, _, leaf = name.rpartition("/")
                owner = cond.fields[parent] if parent else nodeid
                child = f"{path}.{name.replace('/', '.')}"
                if leaf in ("Id", "Retain", "Severity", "Message", "Time", "InputNode",
                            "ConditionName", "ClientUserId", "SuppressedOrShelved",
                            "MaxTimeShelved", "UnshelveTime") or leaf.endswith("Limit"):
                    cond.fields[name] = batch.property(owner, child, leaf, value, vtype,
                                                       namespace=0)
                else:
                    cond.fields[name] = batch.variable(owner, child, leaf, value, vtype,
                                                       namespace=0)
            made.append(cond)
        return made

    def link(self, session: str, conditions: Sequence[_Condition]) -> None:
        """After the commit: the references to the standard methods and from the
        input variable, and the conditions known by NodeId."""
        aspace = self._iserver.aspace
        own = self._by_session.setdefault(session, {})
        for cond in conditions:
            for method in METHODS:  # forward only: the standard method nodes stay as they are
                aspace[cond.nodeid].references.append(ua.ReferenceDescription(
                    ReferenceTypeId=_HAS_COMPONENT, IsForward=True, NodeId=ua.NodeId(method),
                    NodeClass=ua.NodeClass.Method,
                    BrowseName=ua.QualifiedName(METHODS[method].title().replace("_", ""), 0),
                    DisplayName=ua.LocalizedText(METHODS[method].title().replace("_", "")),
                    TypeDefinition=ua.NodeId()))
            if cond.shelving_node is not None:
                for method, name in _SHELVING_BROWSE.items():
                    aspace[cond.shelving_node].references.append(ua.ReferenceDescription(
                        ReferenceTypeId=_HAS_COMPONENT, IsForward=True,
                        NodeId=ua.NodeId(method), NodeClass=ua.NodeClass.Method,
                        BrowseName=ua.QualifiedName(name, 0),
                        DisplayName=ua.LocalizedText(name), TypeDefinition=ua.NodeId()))
                self._by_shelving[cond.shelving_node] = cond
            if cond.input_node in aspace:
                add_reference(aspace, cond.input_node, cond.nodeid, _HAS_CONDITION)
            own[cond.definition.name] = cond
            self._by_node[cond.nodeid] = cond
            self._arm(session, cond.state)

    # -- transitions -----------------------------------------------------------------------

    async def transition(self, session: str, state: AlarmState,
                         when: datetime) -> bytes | None:
        """Show one transition: the condition's nodes, then its event; return that
        event's fields for the history (None: no such condition, nothing emitted)."""
        cond = self._by_session.get(session, {}).get(state.name)
        if cond is None:
            return None
        cond.follow(state, when)
        self._arm(session, state)
        await self._write(cond)
        return event_fields.encode(await self._emit(cond, cond.chain), self.ns)

    def differing(self, session: str, states: Sequence[AlarmState]) -> list[AlarmState]:
        """Those of ``states`` (a session's conditions as its engine holds them) that
        are not what the session's condition nodes show: another state, or a new
        EventId (``sequence``)."""
        own = self._by_session.get(session, {})
        return [s for s in states if (cond := own.get(s.name)) is not None and (
            s.sequence != cond.state.sequence or _shown(s) != _shown(cond.state))]

    async def remove_session(self, session: str, record: LogEvent | None) -> None:
        """A last event of each retained condition (inactive, not retained), each handed
        to ``record`` (the history) too, then forget the session's conditions."""
        conditions = self._by_session.pop(session, {})
        for cond in conditions.values():
            self._by_node.pop(cond.nodeid, None)
            if cond.shelving_node is not None:
                self._by_shelving.pop(cond.shelving_node, None)
            self._expiries.pop((session, cond.definition.name), None)
            state = cond.state
            if not state.retain and not state.active:
                continue
            text = f"alarm {state.name!r} cleared: session {session!r} deleted"
            cond.follow(AlarmState(
                name=state.name, enabled=state.enabled, active=False, limits=(),
                acked=True, confirmed=True, retain=False, severity=state.severity,
                message=text, time=state.time, active_time=state.time,
                sequence=state.sequence + 1, transition="deleted", tick=state.tick),
                datetime.now(UTC))
            event = await self._emit(cond, cond.chain)
            if record is not None:
                record(session, "alarm_deleted", text, state.severity,
                       fields=event_fields.encode(event, self.ns), t=cond.when.timestamp())

    # -- methods ---------------------------------------------------------------------------

    def _method(self, method: int) -> Callable[..., Awaitable[ua.StatusCode]]:
        action = METHODS[method]

        async def call(parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
            cond = self._by_node.get(parent)
            if cond is None:
                return ua.StatusCode(ua.StatusCodes.BadNodeIdInvalid)
            values = [a.Value if isinstance(a, ua.Variant) else a for a in args]
            wants = 2 if action in ("acknowledge", "confirm", "add_comment") else 0
            if len(values) < wants:
                return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing)
            if len(values) > wants:
                return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
            event = comment = None
            if wants:
                event, text = values
                if not isinstance(event, bytes) or not isinstance(
                        text, ua.LocalizedText | type(None)):
                    return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
                comment = text.Text if text is not None else None
            return await self._act(cond, action, event, comment or "")

        return call

    def _shelving_method(self, method: int) -> Callable[..., Awaitable[ua.StatusCode]]:
        action = SHELVE_METHODS[method]

        async def call(parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
            cond = self._by_shelving.get(parent) or self._by_node.get(parent)
            if cond is None:
                return ua.StatusCode(ua.StatusCodes.BadNodeIdInvalid)
            values = [a.Value if isinstance(a, ua.Variant) else a for a in args]
            wants = 1 if action == "timed_shelve" else 0
            if len(values) < wants:
                return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing)
            if len(values) > wants:
                return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
            seconds = 0.0
            if wants:
                (shelving_time,) = values  # a Duration: milliseconds
                if isinstance(shelving_time, bool) or not isinstance(shelving_time,
                                                                     int | float):
                    return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
                seconds = float(shelving_time) / 1000.0
            return await self._act(cond, action, None, "", seconds)

        return call

    async def _act(self, cond: _Condition, action: str, event: bytes | None, comment: str,
                   seconds: float = 0.0) -> ua.StatusCode:
        """A method's action on ``cond``, by the calling user, as the REST API's alarm
        calls do it (``runtime/checks.py``)."""
        try:
            await checks.alarm_method(cond.session, cond.definition.name, action, event,
                                      comment, current_user_name(), seconds)
        except TwinServerError as exc:
            return status_of(exc)
        if self._after is not None:
            await self._after()
        return ua.StatusCode(ua.StatusCodes.Good)

    # -- the shelving's end by time ----------------------------------------------------------

    def _arm(self, session: str, state: AlarmState) -> None:
        """Keep when ``state``'s shelving ends (wakes ``run_shelving`` only when that
        changed: a storm of transitions of unshelved alarms costs it nothing)."""
        key = (session, state.name)
        at = state.unshelve_at if state.shelved else 0.0
        if self._expiries.get(key, 0.0) == at:
            return
        if at > 0:
            self._expiries[key] = at
        else:
            del self._expiries[key]
        self._wake.set()

    async def run_shelving(self) -> None:
        """Until cancelled: end each shelving whose time has passed (the engine's
        ``expire_shelving``, an ``alarm_unshelved`` event), and keep the UnshelveTime of
        shelved conditions current."""
        while True:
            self._wake.clear()
            now = time.time()
            for key, at in list(self._expiries.items()):
                if at <= now:
                    await self._expire(key)
            await self._write_unshelve_times()
            wait = min((at for at in self._expiries.values()), default=None)
            timeout = None if wait is None else min(UNSHELVE_TIME_PERIOD,
                                                    max(0.0, wait - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # (never 3.11's wait_for: it can
                    await self._wake.wait()           # drop a cancellation)

    async def _expire(self, key: tuple[str, str]) -> None:
        session, alarm = key
        self._expiries.pop(key, None)
        cond = self._by_session.get(session, {}).get(alarm)
        if cond is None:
            return
        try:
            await checks.alarm_method(cond.session, alarm, EXPIRE, None, "", "")
        except TwinServerError as exc:  # (re-shelved meanwhile, or the session went)
            log.debug("shelving_expiry_refused", session=session, alarm=alarm,
                      reason=str(exc))
            return
        except Exception:  # a worker's pipe gone mid-call: the restored state re-arms
            log.exception("shelving_expiry_failed", session=session, alarm=alarm)
            return
        if self._after is not None:
            await self._after()

    async def _write_unshelve_times(self) -> None:
        aspace = self._iserver.aspace
        now = datetime.now(UTC)
        for session, alarm in list(self._expiries):
            cond = self._by_session.get(session, {}).get(alarm)
            if cond is None or not cond.state.shelved:
                continue
            nodeid = cond.fields.get("ShelvingState/UnshelveTime")
            if nodeid is None or nodeid not in aspace:
                continue
            await aspace.write_attribute_value(nodeid, _VALUE, ua.DataValue(
                ua.Variant(_unshelve_time(cond.state), ua.VariantType.Double),
                SourceTimestamp=now, ServerTimestamp=now))

    async def _refresh(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        values = [a.Value if isinstance(a, ua.Variant) else a for a in args]
        if not values or not isinstance(values[0], int):
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        subscription = int(values[0])
        service = self._iserver.subscription_service
        if subscription not in service.subscriptions:
            return ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid)
        conditions = [c for c in self._by_node.values() if c.state.retain]
        notifiers: dict[ua.NodeId, None] = {}
        for cond in self._by_node.values():
            notifiers.update(dict.fromkeys(cond.chain))
        notifiers.setdefault(ua.NodeId(_ID.Server), None)
        await self._system(_ID.RefreshStartEventType, notifiers, subscription)
        for cond in conditions:
            await self._emit(cond, cond.chain, subscription)
        await self._system(_ID.RefreshEndEventType, notifiers, subscription)
        return ua.StatusCode(ua.StatusCodes.Good)

    async def _system(self, etype: int, notifiers: dict[ua.NodeId, None],
                      subscription: int) -> None:
        event = event_objects.SystemEvent()
        event.EventType = ua.NodeId(etype)
        _stamp(event, ua.NodeId(_ID.Server), "Server", "", 1, datetime.now(UTC))
        service = self._iserver.subscription_service
        for node in notifiers:
            event.emitting_node = node
            await service.trigger_event(event, subscription)

    # -- helpers ---------------------------------------------------------------------------

    async def _write(self, cond: _Condition) -> None:
        aspace = self._iserver.aspace
        if cond.nodeid not in aspace:
            return
        now = datetime.now(UTC)
        for name, (value, vtype) in _node_values(cond).items():
            nodeid = cond.fields.get(name)
            if nodeid is None:
                continue
            await aspace.write_attribute_value(nodeid, _VALUE, ua.DataValue(
                ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now))

    async def _emit(self, cond: _Condition, chain: Sequence[ua.NodeId],
                    subscription: int | None = None) -> Any:
        """The condition's event, from each notifier of ``chain``; returns it."""
        event = _event(cond)
        service = self._iserver.subscription_service
        for node in chain:
            event.emitting_node = node
            await service.trigger_event(event, subscription)
        self.emitted += 1
        return event


def _shown(state: AlarmState) -> tuple[object, ...]:
    return (state.enabled, state.active, state.limits, state.acked, state.confirmed,
            state.retain, state.severity, state.comment, state.shelving, state.unshelve_at)


def _unshelve_time(state: AlarmState) -> float:
    """UnshelveTime: the milliseconds until the shelving ends by itself (0: unshelved)."""
    if not state.shelved:
        return 0.0
    return max(0.0, (state.unshelve_at - time.time()) * 1000.0)


def _two(flag: bool, true: str, false: str) -> tuple[ua.LocalizedText, bool]:
    return ua.LocalizedText(true if flag else false), flag


def _node_values(cond: _Condition) -> dict[str, tuple[Any, ua.VariantType]]:
    """The condition's fields as node values, by path below the condition."""
    s, d = cond.state, cond.definition
    values: dict[str, tuple[Any, ua.VariantType]] = {}
    for name, flag, true, false in (
            ("EnabledState", s.enabled, "Enabled", "Disabled"),
            ("ActiveState", s.active, _active_text(s), "Inactive"),
            ("AckedState", s.acked, "Acknowledged", "Unacknowledged"),
            ("ConfirmedState", s.confirmed, "Confirmed", "Unconfirmed")):
        text, _ = _two(flag, true, false)
        values[name] = (text, _LT)
        values[f"{name}/Id"] = (flag, ua.VariantType.Boolean)
    values["Retain"] = (s.retain, ua.VariantType.Boolean)
    values["Severity"] = (s.severity, ua.VariantType.UInt16)
    values["Message"] = (ua.LocalizedText(s.message), _LT)
    values["Time"] = (cond.when, ua.VariantType.DateTime)
    values["Comment"] = (ua.LocalizedText(s.comment), _LT)
    values["ClientUserId"] = (s.user, ua.VariantType.String)
    values["ConditionName"] = (d.name, ua.VariantType.String)
    values["InputNode"] = (cond.input_node, ua.VariantType.NodeId)
    values["SuppressedOrShelved"] = (s.shelved, ua.VariantType.Boolean)
    values["MaxTimeShelved"] = (d.max_time_shelved * 1000.0, ua.VariantType.Double)
    values["ShelvingState/CurrentState"] = (ua.LocalizedText(s.shelving), _LT)
    values["ShelvingState/CurrentState/Id"] = (
        ua.NodeId(_SHELVING_STATE_IDS.get(s.shelving, 0)), ua.VariantType.NodeId)
    last = cond.last_shelving
    values["ShelvingState/LastTransition"] = (
        ua.LocalizedText(f"{last[0]}To{last[1]}" if last else ""), _LT)
    values["ShelvingState/LastTransition/Id"] = (
        ua.NodeId(_SHELVING_TRANSITION_IDS.get(last, 0)) if last else ua.NodeId(),
        ua.VariantType.NodeId)
    values["ShelvingState/UnshelveTime"] = (_unshelve_time(s), ua.VariantType.Double)
    if d.kind == "limit":
        for limit, value, _ in d.limits:
            values[f"{limit}Limit"] = (value, ua.VariantType.Double)
        if d.exclusive:
            values["LimitState"] = (ua.LocalizedText(s.limit), _LT)
    return values


def _active_text(state: AlarmState) -> str:
    return f"{state.limit} active" if state.limit else "Active"


def _event(cond: _Condition) -> Any:
    s, d = cond.state, cond.definition
    if d.kind == "off_normal":
        event = event_objects.OffNormalAlarm()
    elif d.exclusive:
        event = event_objects.ExclusiveLimitAlarm()
    else:
        event = event_objects.NonExclusiveLimitAlarm()
    _stamp(event, cond.chain[0], cond.session.name, s.message, s.severity, cond.when)
    event.EventId = event_id(cond.session.name, s.name, s.sequence)
    event.add_property("NodeId", cond.nodeid, ua.VariantType.NodeId)  # the ConditionId
    event.ConditionClassId = _PROCESS_CLASS
    event.ConditionClassName = ua.LocalizedText("ProcessConditionClassType")
    event.ConditionName = d.name
    event.BranchId = ua.NodeId()
    event.Retain = s.retain
    event.Quality = ua.StatusCode(ua.StatusCodes.Good)
    event.LastSeverity = cond.last_severity
    event.Comment = ua.LocalizedText(s.comment)
    event.ClientUserId = s.user
    event.InputNode = cond.input_node
    for name, (value, vtype) in _node_values(cond).items():
        if name in ("Time", "Message", "Severity"):
            continue
        event.add_property(name, value, vtype)
    event.add_property("Transition", s.transition, ua.VariantType.String)
    if d.kind == "limit" and d.exclusive:
        event.add_property("LimitState/CurrentState", ua.LocalizedText(s.limit), _LT)
        event.add_property("LimitState/CurrentState/Id",
                           ua.NodeId(_LIMIT_STATE_IDS[s.limit]) if s.limit else ua.NodeId(),
                           ua.VariantType.NodeId)
    elif d.kind == "limit":
        for limit in LIMITS:
            on = limit in s.limits
            event.add_property(f"{limit}State", ua.LocalizedText(
                f"{limit} active" if on else f"{limit} inactive"), _LT)
            event.add_property(f"{limit}State/Id", on, ua.VariantType.Boolean)
    for state in ("EnabledState", "ActiveState", "AckedState", "ConfirmedState"):
        event.add_property(f"{state}/TransitionTime", cond.changed[state],
                           ua.VariantType.DateTime)
    event.add_property("ShelvingState/LastTransition/TransitionTime",
                       cond.changed["ShelvingState"], ua.VariantType.DateTime)
    for name in ("Comment", "LastSeverity", "Quality"):
        event.add_property(f"{name}/SourceTimestamp", cond.changed[name],
                           ua.VariantType.DateTime)
    return event


def _stamp(event: Any, source: ua.NodeId, source_name: str, message: str, severity: int,
           when: datetime) -> None:
    now = datetime.now(UTC)
    event.EventId = uuid.uuid4().bytes
    event.SourceNode = source
    event.SourceName = source_name
    event.Message = ua.LocalizedText(message)
    event.Severity = max(1, min(1000, int(severity)))
    event.Time = when
    event.ReceiveTime = now
    offset = time.localtime(when.timestamp())
    event.LocalTime = ua.TimeZoneDataType(Offset=offset.tm_gmtoff // 60,
                                          DaylightSavingInOffset=offset.tm_isdst > 0)
