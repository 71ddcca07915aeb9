"""OPC UA events: the session log and GeneralModelChangeEvents.

Session log
    Every ``SessionEvent`` of a served session (created, started, suspended,
    resumed, halted, reset, step_started, step_completed, step_cancelled,
    parameter_changed, restored, fault, ...),
    the server's own ``deleted`` and ``expired``, and the edges of Boolean
    outputs (``alarm`` / ``alarm_cleared``, e.g. a tank's ``overflow``) become
    events of ``TwinSessionEventType`` (ns;s=TwinSessionEventType, a subtype of
    BaseEventType) with the standard fields (SourceNode = the session node,
    SourceName = the session name, Message, Severity 1..1000, Time) and three of
    its own: ``Kind`` (String, the SessionEvent kind), ``SimTime`` (Double, s)
    and ``StepCount`` (UInt64) at the moment of the event.

Model changes
    Adding or removing a session or a twin emits a GeneralModelChangeEvent
    whose Changes name the subtree's root (NodeAdded / NodeDeleted, with its type)
    and its folder (ReferenceAdded / ReferenceDeleted), so that browsers refresh.

Notifiers
    asyncua delivers an event only to monitored items on the node it is emitted
    from, so each event is emitted from every notifier above its source: a
    session's from the session node, Sessions, TwinServer and the standard
    Server object; a model change from its folder (Sessions or Twins),
    TwinServer and Server. All of these have EventNotifier SubscribeToEvents,
    and ``Server --HasNotifier--> TwinServer`` links our tree into the
    standard notifier hierarchy. (No HasNotifier from the folders to each
    session: it is a hierarchical reference, so a browse would list every
    session twice, beside its Organizes.) A client subscribes on the session
    (its own events), on Sessions (every session's), on TwinServer or on
    Server (everything); it gets each event once per monitored item.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import BaseEvent

#: browse name (in our namespace) and string NodeId of the session event type
SESSION_EVENT_TYPE = "TwinSessionEventType"

SERVER_OBJECT = ua.NodeId(ua.ObjectIds.Server)
_BASE_EVENT_TYPE = ua.NodeId(ua.ObjectIds.BaseEventType)
_GENERAL_MODEL_CHANGE = ua.NodeId(ua.ObjectIds.GeneralModelChangeEventType)

NODE_ADDED = ua.ModelChangeStructureVerbMask.NodeAdded.value
NODE_DELETED = ua.ModelChangeStructureVerbMask.NodeDeleted.value
REFERENCE_ADDED = ua.ModelChangeStructureVerbMask.ReferenceAdded.value
REFERENCE_DELETED = ua.ModelChangeStructureVerbMask.ReferenceDeleted.value

#: severities of the events the OPC UA layer itself adds (SessionEvents carry theirs)
SEVERITY_LIFECYCLE = 100
SEVERITY_EXPIRED = 300
SEVERITY_ALARM = 700
SEVERITY_ALARM_CLEARED = 300
SEVERITY_MODEL_CHANGE = 50


async def register_event_type(server: Server, namespace: int) -> ua.NodeId:
    """Add TwinSessionEventType (Kind, SimTime, StepCount) below BaseEventType."""
    base = server.get_node(_BASE_EVENT_TYPE)
    etype = await base.add_object_type(ua.NodeId(SESSION_EVENT_TYPE, namespace),
                                       ua.QualifiedName(SESSION_EVENT_TYPE, namespace))
    for name, vtype in (("Kind", ua.VariantType.String), ("SimTime", ua.VariantType.Double),
                        ("StepCount", ua.VariantType.UInt64)):
        await etype.add_property(ua.NodeId(f"{SESSION_EVENT_TYPE}.{name}", namespace),
                                 ua.QualifiedName(name, namespace),
                                 ua.get_default_value(vtype), varianttype=vtype)
    return etype.nodeid


class _SessionLogEvent(BaseEvent):  # type: ignore[misc]  # asyncua: untyped to mypy
    def __init__(self, event_type: ua.NodeId) -> None:
        super().__init__()
        self.EventType = event_type
        self.add_property("Kind", "", ua.VariantType.String)
        self.add_property("SimTime", 0.0, ua.VariantType.Double)
        self.add_property("StepCount", 0, ua.VariantType.UInt64)


class _ModelChangeEvent(BaseEvent):  # type: ignore[misc]  # asyncua: untyped to mypy
    def __init__(self) -> None:
        super().__init__()
        self.EventType = _GENERAL_MODEL_CHANGE
        # asyncua's GeneralModelChangeEvent declares Changes with a DataType NodeId
        # where a VariantType belongs, which fails when the field is encoded
        self.add_property("Changes", [], ua.VariantType.ExtensionObject)


class Emitter:
    """Sends events into asyncua's subscription service, from each notifier."""

    def __init__(self, server: Server, event_type: ua.NodeId) -> None:
        self._subscriptions = server.iserver.subscription_service
        self._event_type = event_type
        self.emitted = 0

    async def session_event(
        self, chain: Sequence[ua.NodeId], source_name: str, kind: str, message: str,
        severity: int, sim_time: float, step_count: int, when: datetime | None = None,
    ) -> None:
        """One session log event; ``chain[0]`` is the session node (its SourceNode)."""
        event = _SessionLogEvent(self._event_type)
        event.Kind = kind
        event.SimTime = float(sim_time)
        event.StepCount = int(step_count)
        await self._emit(event, chain, source_name, message, severity, when)

    async def model_change(self, chain: Sequence[ua.NodeId], source_name: str,
                           changes: Sequence[tuple[ua.NodeId, ua.NodeId, int]],
                           message: str) -> None:
        """A GeneralModelChangeEvent with (affected, affected type, verb) changes;
        ``chain[0]`` (the folder that changed) is its SourceNode."""
        event = _ModelChangeEvent()
        event.Changes = [ua.ModelChangeStructureDataType(Affected=a, AffectedType=t, Verb=v)
                         for a, t, v in changes]
        await self._emit(event, chain, source_name, message, SEVERITY_MODEL_CHANGE, None)

    async def emit(self, event: Any, chain: Sequence[ua.NodeId], source_name: str,
                   message: str, severity: int) -> None:
        """An event of another type (``scenario_nodes``), its standard fields filled
        in here; ``chain[0]`` is its SourceNode."""
        await self._emit(event, chain, source_name, message, severity, None)

    async def _emit(self, event: Any, chain: Sequence[ua.NodeId], source_name: str,
                    message: str, severity: int, when: datetime | None) -> None:
        now = datetime.now(UTC)
        event.EventId = uuid.uuid4().bytes
        event.SourceNode = chain[0]
        event.SourceName = source_name
        event.Message = ua.LocalizedText(message)
        event.Severity = max(1, min(1000, int(severity)))
        event.Time = when or now
        event.ReceiveTime = now
        offset = time.localtime(event.Time.timestamp())
        event.LocalTime = ua.TimeZoneDataType(Offset=offset.tm_gmtoff // 60,
                                              DaylightSavingInOffset=offset.tm_isdst > 0)
        # one event, delivered to the monitored items of each notifier in turn
        # (the fields are copied into each notification when it is queued)
        for node in chain:
            event.emitting_node = node
            await self._subscriptions.trigger_event(event)
        self.emitted += 1
