"""HistoryRead from our SQLite store: raw, processed and event history (OPC UA Part 11).

asyncua's ``HistoryManager`` hands each request's details and a continuation
point to a ``HistoryStorageInterface`` that pages by timestamp (so it repeats or
drops samples that share one), knows no ReturnBounds, no processed reads and no
ReleaseContinuationPoints. So ``install`` replaces the server's
``iserver.history_manager`` (which ``InternalSession.history_read`` looks up on
every request) with ``TwinHistoryManager``: requests for string NodeIds of our
namespace below ``Sessions.`` are served from ``HistoryStore``; everything else
goes to asyncua's own manager as before.

NodeIds and series: the variable ``Sessions.<s>.<path>`` is the series
``"<s>/<path>"``; the session object ``Sessions.<s>`` holds ``<s>``'s log
events. A variable answers HistoryRead once it is marked Historizing with the
HistoryRead bit in its AccessLevel (``mark_historizing``), a session node once
its EventNotifier has the HistoryRead bit (``mark_event_history``); other nodes
of ours answer BadHistoryOperationUnsupported, unknown ones BadNodeIdUnknown.

What is served:

* ``ReadRawModifiedDetails`` (raw): forward and backward per Part 11's
  start/end rules, ``NumValuesPerNode``, ``ReturnBounds`` (a missing bound is a
  null value with BadBoundNotFound at that time). Modified values: none exist
  (history is never rewritten), so ReadModified answers GoodNoData.
* ``ReadProcessedDetails``: Average, Minimum, Maximum and Count (the standard
  aggregate NodeIds, also listed under HistoryServerCapabilities) per
  ``ProcessingInterval`` ms, over Good raw samples, each value stamped with its
  interval's start, status Good with the Calculated historian bit, BadNoData
  for an interval without data (Count: 0). Average is Part 13's simple mean of
  the raw values, not a time-weighted one.
* ``ReadEventDetails`` on a session node: its stored log events, filtered by the
  event filter's WhereClause (as asyncua evaluates subscriptions' filters), with
  the fields its SelectClauses name: EventId, EventType, SourceNode,
  SourceName, Time, ReceiveTime, Message, Severity and our ``Kind``; fields not
  stored (``SimTime``, ``StepCount``) are null.

Continuation points are stateless: the store's key of the last value returned
(or the next interval's index), prefixed by the kind of read. Nothing is held
per client, so ReleaseContinuationPoints has nothing to free and answers Good
with no data; a point from another read answers BadContinuationPointInvalid. A
page holds at most ``max_values`` values (also advertised as MaxReturnDataValues
and MaxReturnEventValues) however many the client asks for.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common.events import Event as UaEvent
from asyncua.server.address_space import AddressSpace, AttributeValue
from asyncua.server.history import HistoryManager
from asyncua.server.monitored_item_service import WhereClauseEvaluator

from twin_server.errors import InvalidArgument
from twin_server.history import (
    Event,
    HistoryStore,
    InvalidContinuation,
    StoreError,
    to_datetime,
)

log = structlog.get_logger(__name__)

SESSIONS_PREFIX = "Sessions."
#: most values (samples, intervals or events) one page holds
MAX_VALUES = 10_000

AGGREGATE_IDS: dict[ua.NodeId, str] = {
    ua.NodeId(ua.ObjectIds.AggregateFunction_Average): "Average",
    ua.NodeId(ua.ObjectIds.AggregateFunction_Minimum): "Minimum",
    ua.NodeId(ua.ObjectIds.AggregateFunction_Maximum): "Maximum",
    ua.NodeId(ua.ObjectIds.AggregateFunction_Count): "Count",
}

_A = ua.AttributeIds
_SC = ua.StatusCodes
_HISTORY_READ = ua.AccessLevel.HistoryRead.mask
_EVENT_HISTORY_READ = ua.EventNotifier.HistoryRead.mask
#: Good with the historian bits saying "Calculated" (InfoType DataValue | Calculated)
GOOD_CALCULATED = 0x00000400 | 0x00000001
_WIN_EPOCH = ua.get_win_epoch()

#: continuation points: kind byte, then the store's token or our own fields
_RAW, _PROCESSED, _EVENTS = b"R", b"P", b"E"
_PROCESSED_TOKEN = struct.Struct("<qqq")  # next interval index, start us, interval us

_VARIANT_OF_DATATYPE: dict[int, ua.VariantType] = {
    ua.ObjectIds.Boolean: ua.VariantType.Boolean,
    ua.ObjectIds.SByte: ua.VariantType.SByte,
    ua.ObjectIds.Byte: ua.VariantType.Byte,
    ua.ObjectIds.Int16: ua.VariantType.Int16,
    ua.ObjectIds.UInt16: ua.VariantType.UInt16,
    ua.ObjectIds.Int32: ua.VariantType.Int32,
    ua.ObjectIds.UInt32: ua.VariantType.UInt32,
    ua.ObjectIds.Int64: ua.VariantType.Int64,
    ua.ObjectIds.UInt64: ua.VariantType.UInt64,
    ua.ObjectIds.Float: ua.VariantType.Float,
    ua.ObjectIds.Double: ua.VariantType.Double,
    ua.ObjectIds.String: ua.VariantType.String,
}

#: (name, VariantType) of each field of a stored event, as an event filter selects them
_EVENT_FIELDS = (("EventId", ua.VariantType.ByteString), ("EventType", ua.VariantType.NodeId),
                 ("SourceNode", ua.VariantType.NodeId), ("SourceName", ua.VariantType.String),
                 ("Time", ua.VariantType.DateTime), ("ReceiveTime", ua.VariantType.DateTime),
                 ("Message", ua.VariantType.LocalizedText),
                 ("Severity", ua.VariantType.UInt16), ("Kind", ua.VariantType.String),
                 ("SimTime", ua.VariantType.Double), ("StepCount", ua.VariantType.UInt64))


class _Refused(Exception):
    """One node's read refused with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class TwinHistoryManager(HistoryManager):  # type: ignore[misc]  # asyncua: untyped to mypy
    """asyncua's HistoryManager with reads of our sessions served from ``store``."""

    def __init__(self, iserver: Any, store: HistoryStore, namespace: int, *,
                 previous: HistoryManager | None = None, event_type: ua.NodeId | None = None,
                 max_values: int = MAX_VALUES,
                 on_activity: Callable[[str], None] | None = None) -> None:
        super().__init__(iserver)
        if previous is not None:  # keep what asyncua's manager historizes itself
            self.storage = previous.storage
            self._sub = previous._sub
            self._handlers = previous._handlers
        if max_values < 1:
            raise InvalidArgument(f"max_values must be >= 1 (got {max_values})")
        self.store = store
        self.namespace = namespace
        self.aspace: AddressSpace = iserver.aspace
        self.event_type = event_type or ua.NodeId(ua.ObjectIds.BaseEventType)
        self.max_values = max_values
        #: told the session of every history read (the daemon's expiry)
        self.on_activity = on_activity
        self.reads = 0
        self.refused = 0
        self._vtypes: dict[ua.NodeId, ua.VariantType | None] = {}
        self._evaluator_log = logging.getLogger("asyncua.server.history")

    # -- dispatch ---------------------------------------------------------------------

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        details = params.HistoryReadDetails
        results: list[ua.HistoryReadResult] = []
        for index, rv in enumerate(params.NodesToRead):
            target = self._target(rv.NodeId)
            if target is None:
                results.append(await self._read_history(details, rv))
                continue
            result = ua.HistoryReadResult()
            try:
                if params.ReleaseContinuationPoints:
                    pass  # stateless points: nothing to release
                elif params.TimestampsToReturn not in (ua.TimestampsToReturn.Source,
                                                       ua.TimestampsToReturn.Server,
                                                       ua.TimestampsToReturn.Both):
                    raise _Refused(_SC.BadTimestampsToReturnInvalid,
                                   f"TimestampsToReturn {params.TimestampsToReturn!r}: history "
                                   "values have a source and a server timestamp (not Neither)")
                else:
                    self.reads += 1
                    if self.on_activity is not None:
                        self.on_activity(target[0])
                    await self._read_ours(details, rv, target, index, params, result)
            except _Refused as exc:
                self.refused += 1
                result = ua.HistoryReadResult(StatusCode=ua.StatusCode(exc.code))
                log.info("history_read_refused", node=rv.NodeId.to_string(),
                         status=ua.StatusCode(exc.code).name, reason=str(exc))
            except StoreError as exc:
                self.refused += 1
                result = ua.HistoryReadResult(StatusCode=ua.StatusCode(_SC.BadInternalError))
                log.error("history_read_failed", node=rv.NodeId.to_string(), error=str(exc))
            results.append(result)
        return results

    def _target(self, nodeid: ua.NodeId) -> tuple[str, str] | None:
        """(session, path) for a NodeId of ours below Sessions ("" path: the session)."""
        if nodeid.NamespaceIndex != self.namespace:
            return None
        ident = nodeid.Identifier
        if not isinstance(ident, str) or not ident.startswith(SESSIONS_PREFIX):
            return None
        session, _, path = ident[len(SESSIONS_PREFIX):].partition(".")
        return (session, path) if session else None

    async def _read_ours(self, details: Any, rv: ua.HistoryReadValueId,
                         target: tuple[str, str], index: int,
                         params: ua.HistoryReadParameters, result: ua.HistoryReadResult) -> None:
        nodeid = rv.NodeId
        if nodeid not in self.aspace:
            raise _Refused(_SC.BadNodeIdUnknown, "no such node")
        session, path = target
        cp = rv.ContinuationPoint or None
        if isinstance(details, ua.ReadEventDetails):
            if path or not self._has_bit(nodeid, _A.EventNotifier, _EVENT_HISTORY_READ):
                raise _Refused(_SC.BadHistoryOperationUnsupported,
                               "event history is kept on session nodes only")
            events, cont = await self._events(session, nodeid, details, cp)
            result.HistoryData = ua.HistoryEvent(Events=events)
            result.ContinuationPoint = cont
        elif isinstance(details, ua.ReadRawModifiedDetails | ua.ReadProcessedDetails):
            if not path or not self._has_bit(nodeid, _A.AccessLevel, _HISTORY_READ):
                raise _Refused(_SC.BadHistoryOperationUnsupported,
                               "this node does not historize its values")
            if isinstance(details, ua.ReadProcessedDetails):
                values, cont = await self._processed(f"{session}/{path}", nodeid, details,
                                                     index, len(params.NodesToRead), cp)
                result.HistoryData = ua.HistoryData(DataValues=values)
            elif details.IsReadModified:
                values, cont = [], None  # nothing is ever modified
                result.HistoryData = ua.HistoryModifiedData(DataValues=[])
            else:
                values, cont = await self._raw(f"{session}/{path}", nodeid, details, cp,
                                               params.TimestampsToReturn)
                result.HistoryData = ua.HistoryData(DataValues=values)
            result.ContinuationPoint = cont
            if not values and cont is None:
                result.StatusCode = ua.StatusCode(_SC.GoodNoData)
        else:
            raise _Refused(_SC.BadHistoryOperationUnsupported,
                           f"{type(details).__name__} is not supported (raw, processed "
                           "and event reads are)")

    # -- raw ------------------------------------------------------------------------------

    async def _raw(self, series: str, nodeid: ua.NodeId, details: ua.ReadRawModifiedDetails,
                   cp: bytes | None, timestamps: ua.TimestampsToReturn
                   ) -> tuple[list[ua.DataValue], bytes | None]:
        start, end = _time(details.StartTime), _time(details.EndTime)
        if start is None and end is None:
            raise _Refused(_SC.BadInvalidTimestampArgument,
                           "a raw read needs a StartTime, an EndTime or both")
        page = self._page(details.NumValuesPerNode)
        token = _unwrap(cp, _RAW)
        try:
            found = await self.store.read_raw(series, start, end, max_values=page,
                                              continuation=token,
                                              return_bounds=bool(details.ReturnBounds))
        except InvalidContinuation as exc:
            raise _Refused(_SC.BadContinuationPointInvalid, str(exc)) from None
        except InvalidArgument as exc:
            raise _Refused(_SC.BadInvalidArgument, str(exc)) from None
        vtype = self._vtype(nodeid)
        source = timestamps in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Both)
        server = timestamps in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both)
        values = []
        for s in found.samples:
            when = to_datetime(s.t_us)
            if s.value is None:
                variant = ua.Variant()
            else:
                variant = ua.Variant(s.value, vtype or _vtype_of(s.value))
            values.append(ua.DataValue(
                variant, StatusCode=ua.StatusCode(s.status or _SC.Good),
                SourceTimestamp=when if source else None,
                ServerTimestamp=when if server else None))
        cont = None if found.continuation is None else _RAW + found.continuation
        return values, cont

    # -- processed --------------------------------------------------------------------------

    async def _processed(self, series: str, nodeid: ua.NodeId,
                         details: ua.ReadProcessedDetails, index: int, count: int,
                         cp: bytes | None) -> tuple[list[ua.DataValue], bytes | None]:
        aggregates = details.AggregateType or []
        if len(aggregates) != count:
            raise _Refused(_SC.BadAggregateListMismatch,
                           f"{len(aggregates)} aggregates for {count} nodes: give one per node")
        aggregate = AGGREGATE_IDS.get(aggregates[index])
        if aggregate is None:
            raise _Refused(_SC.BadAggregateNotSupported,
                           f"aggregate {aggregates[index].to_string()} is not supported "
                           f"(Average, Minimum, Maximum, Count are)")
        start, end = _time(details.StartTime), _time(details.EndTime)
        if start is None or end is None or start == end:
            raise _Refused(_SC.BadInvalidTimestampArgument,
                           "a processed read needs a StartTime and a different EndTime")
        interval_ms = float(details.ProcessingInterval or 0.0)
        if not math.isfinite(interval_ms) or interval_ms < 0:
            raise _Refused(_SC.BadInvalidArgument,
                           f"ProcessingInterval must be >= 0 ms (got {interval_ms})")
        start_us, end_us = _us(start), _us(end)
        span = abs(end_us - start_us)
        interval = round(interval_ms * 1000) or span
        total = -(-span // interval)
        first = 0
        if cp is not None:
            raw = _unwrap(cp, _PROCESSED)
            try:
                first, t0, step = _PROCESSED_TOKEN.unpack(raw or b"")
            except struct.error:
                raise _Refused(_SC.BadContinuationPointInvalid,
                               "not a continuation point of a processed read") from None
            if (t0, step) != (start_us, interval) or not 0 < first < total:
                raise _Refused(_SC.BadContinuationPointInvalid,
                               "this continuation point belongs to another processed read")
        last = min(total, first + self.max_values)
        sign = 1 if end_us > start_us else -1
        page_start = start_us + sign * first * interval
        page_end = start_us + sign * last * interval
        if sign * (page_end - end_us) > 0:
            page_end = end_us
        try:
            found = await self.store.read_processed(series, to_datetime(page_start),
                                                    to_datetime(page_end), interval / 1e6,
                                                    aggregate)
        except InvalidArgument as exc:
            raise _Refused(_SC.BadAggregateInvalidInputs, str(exc)) from None
        vtype = self._vtype(nodeid)
        values = []
        for p in found:
            when = to_datetime(p.t_us)
            if p.value is None:
                variant = ua.Variant()
                status = p.status
            elif aggregate == "Count":
                variant = ua.Variant(int(p.value), ua.VariantType.Int32)
                status = GOOD_CALCULATED
            elif aggregate == "Average":
                variant = ua.Variant(float(p.value), ua.VariantType.Double)
                status = GOOD_CALCULATED
            else:
                variant = ua.Variant(p.value, vtype or _vtype_of(p.value))
                status = GOOD_CALCULATED
            values.append(ua.DataValue(variant, StatusCode=ua.StatusCode(status),
                                       SourceTimestamp=when, ServerTimestamp=when))
        cont = (None if last >= total
                else _PROCESSED + _PROCESSED_TOKEN.pack(last, start_us, interval))
        return values, cont

    # -- events -----------------------------------------------------------------------------

    async def _events(self, session: str, nodeid: ua.NodeId, details: ua.ReadEventDetails,
                      cp: bytes | None) -> tuple[list[ua.HistoryEventFieldList], bytes | None]:
        start, end = _time(details.StartTime), _time(details.EndTime)
        if start is None and end is None:
            raise _Refused(_SC.BadInvalidTimestampArgument,
                           "an event read needs a StartTime, an EndTime or both")
        evfilter = details.Filter or ua.EventFilter()
        page = self._page(details.NumValuesPerNode)
        try:
            found = await self.store.read_events(session, start, end, page, _unwrap(cp, _EVENTS))
        except InvalidContinuation as exc:
            raise _Refused(_SC.BadContinuationPointInvalid, str(exc)) from None
        except InvalidArgument as exc:
            raise _Refused(_SC.BadInvalidArgument, str(exc)) from None
        evaluator = WhereClauseEvaluator(self._evaluator_log, self.aspace,
                                         evfilter.WhereClause or ua.ContentFilter())
        fields = []
        for stored in found.events:
            event = self._event(session, nodeid, stored)
            if evaluator.eval(event):
                fields.append(ua.HistoryEventFieldList(
                    EventFields=event.to_event_fields(evfilter.SelectClauses or [])))
        cont = None if found.continuation is None else _EVENTS + found.continuation
        return fields, cont

    def _event(self, session: str, nodeid: ua.NodeId, stored: Event) -> UaEvent:
        when = to_datetime(stored.t_us)
        digest = hashlib.sha256(f"{session}\0{stored.t_us}\0{stored.kind}\0"
                                f"{stored.message}".encode()).digest()[:16]
        values = (digest, self.event_type, nodeid, session, when, when,
                  ua.LocalizedText(stored.message), max(1, min(1000, stored.severity)),
                  stored.kind, None, None)
        event = UaEvent()
        for (name, vtype), value in zip(_EVENT_FIELDS, values, strict=True):
            event.add_property(name, value, vtype)
        return event

    # -- helpers ----------------------------------------------------------------------------

    def _page(self, requested: int | None) -> int:
        requested = int(requested or 0)
        return self.max_values if requested <= 0 else min(requested, self.max_values)

    def _has_bit(self, nodeid: ua.NodeId, attribute: ua.AttributeIds, mask: int) -> bool:
        dv = self.aspace.read_attribute_value(nodeid, attribute)
        value = dv.Value.Value if dv.Value is not None else None
        return isinstance(value, int) and bool(value & mask)

    def _vtype(self, nodeid: ua.NodeId) -> ua.VariantType | None:
        """The VariantType the node's DataType says (None: decide by the value)."""
        if nodeid not in self._vtypes:
            dv = self.aspace.read_attribute_value(nodeid, _A.DataType)
            datatype = dv.Value.Value if dv.Value is not None else None
            vtype = None
            if isinstance(datatype, ua.NodeId) and datatype.NamespaceIndex == 0 \
                    and isinstance(datatype.Identifier, int):
                vtype = _VARIANT_OF_DATATYPE.get(datatype.Identifier)
            self._vtypes[nodeid] = vtype
        return self._vtypes[nodeid]

    def forget(self, nodeids: Iterable[ua.NodeId]) -> None:
        """Drop cached data types of deleted nodes (a session of the same name may come
        back with another twin)."""
        for nodeid in nodeids:
            self._vtypes.pop(nodeid, None)


# -- installing and marking ----------------------------------------------------------------


def install(server: Server, store: HistoryStore, namespace: int, *,
            max_values: int = MAX_VALUES, event_type: ua.NodeId | None = None,
            on_activity: Callable[[str], None] | None = None) -> TwinHistoryManager:
    """Serve HistoryRead of ``namespace``'s session nodes from ``store`` (after
    ``server.init()``); advertise it under HistoryServerCapabilities. Returns the
    manager (its ``reads`` / ``refused`` count requests)."""
    iserver = server.iserver
    if event_type is None:
        candidate = ua.NodeId("TwinSessionEventType", namespace)
        event_type = candidate if candidate in iserver.aspace else None
    manager = TwinHistoryManager(iserver, store, namespace, previous=iserver.history_manager,
                                 event_type=event_type, max_values=max_values,
                                 on_activity=on_activity)
    iserver.history_manager = manager
    _advertise(iserver.aspace, max_values)
    log.info("history_read_installed", namespace=namespace, max_values=max_values)
    return manager


def _advertise(aspace: AddressSpace, max_values: int) -> None:
    """HistoryServerCapabilities: what we serve, and the aggregates we compute."""
    ids = ua.ObjectIds
    flags = {
        ids.HistoryServerCapabilities_AccessHistoryDataCapability: True,
        ids.HistoryServerCapabilities_AccessHistoryEventsCapability: True,
        ids.HistoryServerCapabilities_InsertDataCapability: False,
        ids.HistoryServerCapabilities_ReplaceDataCapability: False,
        ids.HistoryServerCapabilities_UpdateDataCapability: False,
        ids.HistoryServerCapabilities_DeleteRawCapability: False,
        ids.HistoryServerCapabilities_DeleteAtTimeCapability: False,
        ids.HistoryServerCapabilities_InsertAnnotationCapability: False,
        ids.HistoryServerCapabilities_InsertEventCapability: False,
        ids.HistoryServerCapabilities_ReplaceEventCapability: False,
        ids.HistoryServerCapabilities_UpdateEventCapability: False,
        ids.HistoryServerCapabilities_DeleteEventCapability: False,
        ids.HistoryServerCapabilities_ServerTimestampSupported: True,
    }
    values: list[tuple[int, ua.Variant]] = [
        (ident, ua.Variant(flag, ua.VariantType.Boolean)) for ident, flag in flags.items()]
    values += [(ids.HistoryServerCapabilities_MaxReturnDataValues,
                ua.Variant(max_values, ua.VariantType.UInt32)),
               (ids.HistoryServerCapabilities_MaxReturnEventValues,
                ua.Variant(max_values, ua.VariantType.UInt32))]
    for ident, variant in values:
        nodeid = ua.NodeId(ident)
        if nodeid in aspace:
            aspace[nodeid].attributes[_A.Value] = AttributeValue(ua.DataValue(variant))
    for folder in (ua.NodeId(ids.HistoryServerCapabilities_AggregateFunctions),
                   ua.NodeId(ids.Server_ServerCapabilities_AggregateFunctions)):
        if folder not in aspace:
            continue
        present = {r.NodeId for r in aspace[folder].references if r.IsForward}
        for aggregate, name in AGGREGATE_IDS.items():
            if aggregate in present or aggregate not in aspace:
                continue
            aspace[folder].references.append(ua.ReferenceDescription(
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.Organizes), IsForward=True,
                NodeId=aggregate, NodeClass=ua.NodeClass.Object,
                BrowseName=ua.QualifiedName(name, 0), DisplayName=ua.LocalizedText(name),
                TypeDefinition=ua.NodeId(ua.ObjectIds.AggregateFunctionType)))


_BYTES: dict[int, AttributeValue] = {}
_HISTORIZING = AttributeValue(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))


def _byte(value: int) -> AttributeValue:
    # one AttributeValue per distinct level, shared (as nodes.py shares them: never written)
    found = _BYTES.get(value)
    if found is None:
        found = _BYTES[value] = AttributeValue(ua.DataValue(ua.Variant(value,
                                                                       ua.VariantType.Byte)))
    return found


def _or_bit(aspace: AddressSpace, nodeid: ua.NodeId, attribute: ua.AttributeIds,
            mask: int) -> None:
    attributes = aspace[nodeid].attributes
    current = attributes.get(attribute)
    value = current.value.Value.Value if current is not None and current.value is not None \
        and current.value.Value is not None else 0
    # replace, never mutate: nodes.py shares one AttributeValue among many nodes
    attributes[attribute] = _byte(int(value or 0) | mask)


def mark_historizing(aspace: AddressSpace, nodeids: Iterable[ua.NodeId]) -> int:
    """Set Historizing and the HistoryRead bit of AccessLevel and UserAccessLevel of
    each existing variable; return how many were marked."""
    marked = 0
    for nodeid in nodeids:
        if nodeid not in aspace:
            continue
        for attribute in (_A.AccessLevel, _A.UserAccessLevel):
            _or_bit(aspace, nodeid, attribute, _HISTORY_READ)
        aspace[nodeid].attributes[_A.Historizing] = _HISTORIZING
        marked += 1
    return marked


def mark_event_history(aspace: AddressSpace, nodeids: Iterable[ua.NodeId]) -> int:
    """Add the HistoryRead bit to the EventNotifier of each existing object (the
    session nodes, whose log events are stored); return how many were marked."""
    marked = 0
    for nodeid in nodeids:
        if nodeid in aspace:
            _or_bit(aspace, nodeid, _A.EventNotifier, _EVENT_HISTORY_READ)
            marked += 1
    return marked


def _time(value: datetime | None) -> datetime | None:
    """A request's time, None if unspecified (DateTime.MinValue: the 1601 epoch)."""
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None if aware <= _WIN_EPOCH.replace(tzinfo=UTC) else aware


def _us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _unwrap(cp: bytes | None, kind: bytes) -> bytes | None:
    if cp is None:
        return None
    if cp[:1] != kind:
        raise _Refused(_SC.BadContinuationPointInvalid,
                       "this continuation point belongs to another kind of read")
    return cp[1:]


def _vtype_of(value: Any) -> ua.VariantType:
    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, int):
        return ua.VariantType.Int64
    if isinstance(value, str):
        return ua.VariantType.String
    return ua.VariantType.Double


__all__ = ["AGGREGATE_IDS", "GOOD_CALCULATED", "MAX_VALUES",
           "TwinHistoryManager", "install", "mark_event_history", "mark_historizing"]
