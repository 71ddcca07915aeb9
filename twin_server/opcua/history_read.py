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
  event filter's WhereClause (as subscriptions' filters: ``patches/events.py``), with
  the fields its SelectClauses name. A log event is a TwinSessionEventType event:
  EventId, EventType, SourceNode, SourceName, Time, ReceiveTime, Message, Severity
  and our ``Kind``; fields not stored (``SimTime``, ``StepCount``) are null. An
  alarm transition stored with the fields of the event that went out (schema v3,
  ``event_fields.py``) is that event again, of its condition's type with every
  field it carried (ConditionId as the NodeId of an empty browse path, ActiveState/Id,
  AckedState/Id, LimitState/CurrentState, ...), so ``OfType(AlarmConditionType)``
  admits it; it carries ``Kind`` too, so a filter on ``Kind`` finds it as before.
  One stored before v3 (no fields) is a TwinSessionEventType event.

Limits (``HistoryLimits``, from ``[server.limits]``), so that no client, of any
role, can make one request cost more than a bounded amount of time and memory:

* A request names at most ``nodes`` nodes; more is refused as a whole with
  BadTooManyOperations (advertised as OperationLimits MaxNodesPerHistoryReadData
  and MaxNodesPerHistoryReadEvents).
* A request answers at most ``values`` values (samples, intervals, or events read)
  over all its nodes together. Each node in turn gets an equal share of what the
  nodes before it left (``remaining // nodes left``, at least 1 since ``nodes <=
  values``), further bounded by its NumValuesPerNode; a node with more than its
  share gets what fits and a continuation point. The per-node figures
  MaxReturnDataValues and MaxReturnEventValues advertise the same number (no
  standard property names a cap over a whole request).
* Continuation points are handles held per client session (``history_points``):
  at most ``continuation_points`` per session (ServerCapabilities
  MaxHistoryContinuationPoints), freed when read on from, released
  (ReleaseContinuationPoints), freed for a later request of the same session, or
  when the session closes. A point used from another session, twice, or for
  another node or kind of read answers BadContinuationPointInvalid. Behind a
  handle is the read's position: the store's key of the last value returned (or
  the next interval's index), so pages never repeat or drop a sample.

The work is bounded in time as well as size: the store is read ``CHUNK`` values
at a time, and building and encoding the response runs in slices of a few ms
that make way for the sessions' ticks (``history_wire``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common.events import Event as UaEvent
from asyncua.server.address_space import AddressSpace, AttributeValue
from asyncua.server.history import HistoryManager

from twin_server.config.security import LimitsConfig
from twin_server.errors import InvalidArgument
from twin_server.history import (
    Event,
    HistoryStore,
    InvalidContinuation,
    StoreError,
    to_datetime,
)
from twin_server.opcua import event_fields
from twin_server.opcua.history_points import ContinuationPoints
from twin_server.opcua.history_wire import Slices, encode_results
from twin_server.opcua.patches import internals
from twin_server.opcua.patches.events import EventWhere
from twin_server.security.history_sessions import route_history_reads

log = structlog.get_logger(__name__)

SESSIONS_PREFIX = "Sessions."
#: most values (samples, intervals or events) one request answers, by default
MAX_VALUES = 10_000
#: values read from the store at a time (turning rows into samples holds the loop)
CHUNK = 500


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """What one HistoryRead request may cost (see the module docstring)."""

    values: int = MAX_VALUES  # values answered per request, all nodes together
    nodes: int = 100  # nodes named per request
    continuation_points: int = 200  # held per client session

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= self.values:
            raise InvalidArgument(f"HistoryRead limits: need 1 <= nodes <= values (got nodes="
                                  f"{self.nodes}, values={self.values})")
        if self.continuation_points < 1:
            raise InvalidArgument(f"HistoryRead limits: continuation_points must be >= 1 "
                                  f"(got {self.continuation_points})")

    @classmethod
    def of(cls, limits: LimitsConfig) -> HistoryLimits:
        return cls(values=limits.max_history_values_per_request,
                   nodes=limits.max_history_nodes_per_request,
                   continuation_points=limits.max_history_continuation_points)

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


_NO_SUCH_POINT = ("no such continuation point in this session: it was used or released "
                  "already, freed for a later request of the session (more than "
                  "MaxHistoryContinuationPoints were needed), or comes from another session "
                  "or node; repeat the read without it")


class _Refused(Exception):
    """One node's read refused with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(slots=True)
class _Request:
    """One HistoryRead request as it is served: whose it is and what is left of it."""

    session: Hashable
    number: int  # ContinuationPoints.next_request
    slices: Slices
    remaining: int  # values this request may still answer
    nodes_left: int  # nodes of ours still to read

    def share(self) -> int:
        """The next node's share of what is left (>= 1 while nodes <= values)."""
        share = self.remaining // max(self.nodes_left, 1)
        self.nodes_left -= 1
        return max(share, 1)


class TwinHistoryManager(HistoryManager):  # type: ignore[misc]  # asyncua: untyped to mypy
    """asyncua's HistoryManager with reads of our sessions served from ``store``."""

    def __init__(self, iserver: Any, store: HistoryStore, namespace: int, *,
                 previous: HistoryManager | None = None, event_type: ua.NodeId | None = None,
                 limits: HistoryLimits | None = None,
                 on_activity: Callable[[str], None] | None = None, chunk: int = CHUNK) -> None:
        super().__init__(iserver)
        if previous is not None:  # keep what asyncua's manager historizes itself
            internals.keep_history_of(self, previous)
        self.store = store
        self.namespace = namespace
        self.aspace: AddressSpace = iserver.aspace
        self.event_type = event_type or ua.NodeId(ua.ObjectIds.BaseEventType)
        self.limits = limits or HistoryLimits()
        self.points = ContinuationPoints(self.limits.continuation_points)
        if chunk < 1:
            raise InvalidArgument(f"chunk must be >= 1 (got {chunk})")
        #: values read from the store at a time
        self.chunk = chunk
        #: told the session of every history read (the daemon's expiry)
        self.on_activity = on_activity
        self.reads = 0
        self.refused = 0
        #: how often the requests served so far let the event loop run between two
        #: slices of their work (``history_wire.Slices``)
        self.yields = 0
        self._vtypes: dict[ua.NodeId, ua.VariantType | None] = {}
        self._evaluator_log = logging.getLogger("asyncua.server.history")
        #: stored events whose fields could not be read (served as log events)
        self.unreadable = 0
        self._unreadable_error = ""

    @property
    def max_values(self) -> int:
        return self.limits.values

    # -- dispatch ---------------------------------------------------------------------

    async def read_history(self, params: ua.HistoryReadParameters, session: Hashable = None,
                           *, wire: bool = False) -> list[ua.HistoryReadResult]:
        """Serve one HistoryRead of client session ``session`` (None: the server's
        own). ``wire``: the results go straight into a response, so they come back
        encoded (``history_wire``)."""
        details = params.HistoryReadDetails
        nodes = params.NodesToRead or []
        if len(nodes) > self.limits.nodes:
            self.refused += 1
            log.info("history_read_refused", status="BadTooManyOperations", nodes=len(nodes),
                     limit=self.limits.nodes,
                     reason="more nodes in one request than MaxNodesPerHistoryReadData; "
                            "split the request (server.limits.max_history_nodes_per_request)")
            raise ua.uaerrors.BadTooManyOperations()
        targets = [self._target(rv.NodeId) for rv in nodes]
        request = _Request(session, self.points.next_request(), Slices(),
                           self.limits.values, sum(t is not None for t in targets))
        await request.slices.start()
        results: list[ua.HistoryReadResult] = []
        for index, (rv, target) in enumerate(zip(nodes, targets, strict=True)):
            if target is None:
                results.append(await self._read_history(details, rv))
                continue
            result = ua.HistoryReadResult()
            try:
                if params.ReleaseContinuationPoints:
                    if rv.ContinuationPoint and not self.points.release(session,
                                                                        rv.ContinuationPoint):
                        raise _Refused(_SC.BadContinuationPointInvalid, _NO_SUCH_POINT)
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
                    share = request.share()
                    used, position = await self._read_ours(details, rv, target, index, params,
                                                           result, share, request)
                    request.remaining -= used
                    if position is not None:
                        handle = self.points.issue(session, rv.NodeId, position, request.number)
                        if handle is None:
                            raise _Refused(_SC.BadNoContinuationPoints,
                                           f"this request needs more than "
                                           f"{self.limits.continuation_points} continuation "
                                           "points (MaxHistoryContinuationPoints); name fewer "
                                           "nodes or ask for fewer values per node")
                        result.ContinuationPoint = handle
            except _Refused as exc:
                self.refused += 1
                result = ua.HistoryReadResult(StatusCode=ua.StatusCode(exc.code))
                log.info("history_read_refused", node=_excerpt(rv.NodeId),
                         status=ua.StatusCode(exc.code).name, reason=str(exc))
            except StoreError as exc:
                self.refused += 1
                result = ua.HistoryReadResult(StatusCode=ua.StatusCode(_SC.BadInternalError))
                log.error("history_read_failed", node=_excerpt(rv.NodeId), error=str(exc))
            results.append(result)
        if wire:
            await encode_results(results, request.slices)
        self.yields += request.slices.yields
        return results

    def session_closed(self, session: Hashable) -> None:
        """Free the continuation points of a client session that closed."""
        freed = self.points.close(session)
        if freed:
            log.debug("history_continuation_points_freed", freed=freed)

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
                         params: ua.HistoryReadParameters, result: ua.HistoryReadResult,
                         share: int, request: _Request) -> tuple[int, bytes | None]:
        """Fill ``result`` with at most ``share`` values; (values used of the request's
        budget, the position to continue from or None)."""
        nodeid = rv.NodeId
        if nodeid not in self.aspace:
            raise _Refused(_SC.BadNodeIdUnknown, "no such node")
        session, path = target
        if isinstance(details, ua.ReadEventDetails):
            if path or not self._has_bit(nodeid, _A.EventNotifier, _EVENT_HISTORY_READ):
                raise _Refused(_SC.BadHistoryOperationUnsupported,
                               "event history is kept on session nodes only")
            cp = self._position(request, rv)
            events, used, cont = await self._events(session, nodeid, details, cp, share,
                                                    request.slices)
            result.HistoryData = ua.HistoryEvent(Events=events)
            return used, cont
        if isinstance(details, ua.ReadRawModifiedDetails | ua.ReadProcessedDetails):
            if not path or not self._has_bit(nodeid, _A.AccessLevel, _HISTORY_READ):
                raise _Refused(_SC.BadHistoryOperationUnsupported,
                               "this node does not historize its values")
            cp = self._position(request, rv)
            if isinstance(details, ua.ReadProcessedDetails):
                values, cont = await self._processed(f"{session}/{path}", nodeid, details,
                                                     index, len(params.NodesToRead), cp,
                                                     share, request.slices)
                result.HistoryData = ua.HistoryData(DataValues=values)
            elif details.IsReadModified:
                values, cont = [], None  # nothing is ever modified
                result.HistoryData = ua.HistoryModifiedData(DataValues=[])
            else:
                values, cont = await self._raw(f"{session}/{path}", nodeid, details, cp,
                                               params.TimestampsToReturn, share,
                                               request.slices)
                result.HistoryData = ua.HistoryData(DataValues=values)
            if not values and cont is None:
                result.StatusCode = ua.StatusCode(_SC.GoodNoData)
            return len(values), cont
        raise _Refused(_SC.BadHistoryOperationUnsupported,
                       f"{type(details).__name__} is not supported (raw, processed "
                       "and event reads are)")

    def _position(self, request: _Request, rv: ua.HistoryReadValueId) -> bytes | None:
        """Where the read of ``rv`` goes on from: None to start, else what its
        continuation point stands for (taking the point)."""
        if not rv.ContinuationPoint:
            return None
        position = self.points.take(request.session, rv.ContinuationPoint, rv.NodeId)
        if position is None:
            raise _Refused(_SC.BadContinuationPointInvalid, _NO_SUCH_POINT)
        return position

    # -- raw ------------------------------------------------------------------------------

    async def _raw(self, series: str, nodeid: ua.NodeId, details: ua.ReadRawModifiedDetails,
                   cp: bytes | None, timestamps: ua.TimestampsToReturn, share: int,
                   slices: Slices) -> tuple[list[ua.DataValue], bytes | None]:
        start, end = _time(details.StartTime), _time(details.EndTime)
        if start is None and end is None:
            raise _Refused(_SC.BadInvalidTimestampArgument,
                           "a raw read needs a StartTime, an EndTime or both")
        want = self._page(details.NumValuesPerNode, share)
        token = _unwrap(cp, _RAW)
        vtype = self._vtype(nodeid)
        source = timestamps in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Both)
        server = timestamps in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both)
        values: list[ua.DataValue] = []
        while True:
            try:
                found = await self.store.read_raw(series, start, end,
                                                  max_values=min(self.chunk, want - len(values)),
                                                  continuation=token,
                                                  return_bounds=bool(details.ReturnBounds))
            except InvalidContinuation as exc:
                raise _Refused(_SC.BadContinuationPointInvalid, str(exc)) from None
            except InvalidArgument as exc:
                raise _Refused(_SC.BadInvalidArgument, str(exc)) from None
            await slices.start()
            for s in found.samples:
                if slices.spent():
                    await slices.next()
                when = to_datetime(s.t_us)
                if s.value is None:
                    variant = ua.Variant()
                else:
                    variant = ua.Variant(s.value, vtype or _vtype_of(s.value))
                values.append(ua.DataValue(
                    variant, StatusCode=ua.StatusCode(s.status or _SC.Good),
                    SourceTimestamp=when if source else None,
                    ServerTimestamp=when if server else None))
            token = found.continuation
            if token is None or len(values) >= want:
                break
        return values, None if token is None else _RAW + token

    # -- processed --------------------------------------------------------------------------

    async def _processed(self, series: str, nodeid: ua.NodeId,
                         details: ua.ReadProcessedDetails, index: int, count: int,
                         cp: bytes | None, share: int, slices: Slices
                         ) -> tuple[list[ua.DataValue], bytes | None]:
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
        last = min(total, first + share)
        sign = 1 if end_us > start_us else -1
        vtype = self._vtype(nodeid)
        values: list[ua.DataValue] = []
        for lo in range(first, last, self.chunk):
            hi = min(last, lo + self.chunk)
            page_start = start_us + sign * lo * interval
            page_end = start_us + sign * hi * interval
            if sign * (page_end - end_us) > 0:
                page_end = end_us
            try:
                found = await self.store.read_processed(series, to_datetime(page_start),
                                                        to_datetime(page_end), interval / 1e6,
                                                        aggregate)
            except InvalidArgument as exc:
                raise _Refused(_SC.BadAggregateInvalidInputs, str(exc)) from None
            await slices.start()
            for p in found:
                if slices.spent():
                    await slices.next()
                values.append(_aggregate_value(p.t_us, p.value, p.status, aggregate, vtype))
        cont = (None if last >= total
                else _PROCESSED + _PROCESSED_TOKEN.pack(last, start_us, interval))
        return values, cont

    # -- events -----------------------------------------------------------------------------

    async def _events(self, session: str, nodeid: ua.NodeId, details: ua.ReadEventDetails,
                      cp: bytes | None, share: int, slices: Slices
                      ) -> tuple[list[ua.HistoryEventFieldList], int, bytes | None]:
        """The events that pass the filter, how many were read, where to go on."""
        start, end = _time(details.StartTime), _time(details.EndTime)
        if start is None and end is None:
            raise _Refused(_SC.BadInvalidTimestampArgument,
                           "an event read needs a StartTime, an EndTime or both")
        evfilter = details.Filter or ua.EventFilter()
        want = self._page(details.NumValuesPerNode, share)
        token = _unwrap(cp, _EVENTS)
        evaluator = EventWhere(self.aspace, evfilter.WhereClause, self._evaluator_log)
        fields: list[ua.HistoryEventFieldList] = []
        read = 0
        unreadable = self.unreadable
        while True:
            try:
                found = await self.store.read_events(session, start, end,
                                                     min(self.chunk, want - read), token)
            except InvalidContinuation as exc:
                raise _Refused(_SC.BadContinuationPointInvalid, str(exc)) from None
            except InvalidArgument as exc:
                raise _Refused(_SC.BadInvalidArgument, str(exc)) from None
            await slices.start()
            for stored in found.events:
                if slices.spent():
                    await slices.next()
                event = self._event(session, nodeid, stored)
                if evaluator.eval(event):
                    fields.append(ua.HistoryEventFieldList(
                        EventFields=event.to_event_fields(evfilter.SelectClauses or [])))
            read += len(found.events)
            token = found.continuation
            if token is None or read >= want:
                break
        if self.unreadable > unreadable:  # once a request: a damaged file has many
            log.warning("history_event_fields_unreadable", session=session,
                        events=self.unreadable - unreadable, error=self._unreadable_error)
        return fields, read, None if token is None else _EVENTS + token

    def _event(self, session: str, nodeid: ua.NodeId, stored: Event) -> UaEvent:
        if stored.fields is not None:
            try:
                event = event_fields.decode(stored.fields, self.namespace)
            except event_fields.BadFields as exc:
                self.unreadable += 1
                self._unreadable_error = str(exc)
            else:
                if not hasattr(event, "Kind"):
                    event.add_property("Kind", stored.kind, ua.VariantType.String)
                return event
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

    @staticmethod
    def _page(requested: int | None, share: int) -> int:
        """NumValuesPerNode (0: all) within the node's share of the request."""
        requested = int(requested or 0)
        return share if requested <= 0 else min(requested, share)

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
            limits: HistoryLimits | None = None, event_type: ua.NodeId | None = None,
            on_activity: Callable[[str], None] | None = None) -> TwinHistoryManager:
    """Serve HistoryRead of ``namespace``'s session nodes from ``store`` (after
    ``server.init()``), within ``limits``; advertise it under
    HistoryServerCapabilities, the limits under ServerCapabilities and its
    OperationLimits. Every client session created from now on reads with its own
    continuation points (``security.history_sessions``). Returns the manager (its
    ``reads`` / ``refused`` count requests, ``yields`` the slices they were served in)."""
    iserver = server.iserver
    if event_type is None:
        candidate = ua.NodeId("TwinSessionEventType", namespace)
        event_type = candidate if candidate in iserver.aspace else None
    limits = limits or HistoryLimits()
    manager = TwinHistoryManager(iserver, store, namespace, previous=iserver.history_manager,
                                 event_type=event_type, limits=limits, on_activity=on_activity)
    iserver.history_manager = manager
    route_history_reads(iserver, manager)
    _advertise(iserver.aspace, limits)
    log.info("history_read_installed", namespace=namespace, max_values=limits.values,
             max_nodes=limits.nodes, max_continuation_points=limits.continuation_points)
    return manager


def _advertise(aspace: AddressSpace, limits: HistoryLimits) -> None:
    """HistoryServerCapabilities: what we serve, and the aggregates we compute;
    ServerCapabilities and OperationLimits: the limits of a request."""
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
    u32 = ua.VariantType.UInt32
    values += [
        (ids.HistoryServerCapabilities_MaxReturnDataValues, ua.Variant(limits.values, u32)),
        (ids.HistoryServerCapabilities_MaxReturnEventValues, ua.Variant(limits.values, u32)),
        (ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadData,
         ua.Variant(limits.nodes, u32)),
        (ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadEvents,
         ua.Variant(limits.nodes, u32)),
        (ids.Server_ServerCapabilities_MaxHistoryContinuationPoints,
         ua.Variant(limits.continuation_points, ua.VariantType.UInt16)),
    ]
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


def _aggregate_value(t_us: int, value: Any, status: int, aggregate: str,
                     vtype: ua.VariantType | None) -> ua.DataValue:
    """One interval's aggregate as a DataValue stamped at the interval's start."""
    when = to_datetime(t_us)
    if value is None:
        variant = ua.Variant()
    else:
        status = GOOD_CALCULATED
        if aggregate == "Count":
            variant = ua.Variant(int(value), ua.VariantType.Int32)
        elif aggregate == "Average":
            variant = ua.Variant(float(value), ua.VariantType.Double)
        else:
            variant = ua.Variant(value, vtype or _vtype_of(value))
    return ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=when,
                        ServerTimestamp=when)


def _excerpt(nodeid: ua.NodeId) -> str:
    """A client's NodeId for the log, at most 120 characters."""
    text = str(nodeid.to_string())
    return text if len(text) <= 120 else text[:117] + "..."


def _vtype_of(value: Any) -> ua.VariantType:
    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, int):
        return ua.VariantType.Int64
    if isinstance(value, str):
        return ua.VariantType.String
    return ua.VariantType.Double


__all__ = ["AGGREGATE_IDS", "CHUNK", "GOOD_CALCULATED", "MAX_VALUES", "HistoryLimits",
           "TwinHistoryManager", "install", "mark_event_history", "mark_historizing"]
