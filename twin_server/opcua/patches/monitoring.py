"""Monitored items as OPC UA Part 4 and Part 8 describe them, where asyncua 2.1 does not.

**Sampling intervals.** asyncua revises every item's SamplingInterval to its
subscription's publishing interval and reports every change: a client asking for
1,000 ms on a 100 ms subscription got ten notifications a second. Here the
requested interval is revised only to what the node's value can give: at least
the node's MinimumSamplingInterval (a session variable's is its session's publish
period: its value changes at most once per period) and ``MIN_SAMPLING_INTERVAL``,
rounded up to a whole number of the node's period; a negative request (-1: "as
the publishing interval") takes the subscription's publishing interval, and
nothing is revised above ``MAX_SAMPLING_INTERVAL``. An item whose interval is
longer than its node's period is *sampled*: at most one sample per interval, the
latest value at each (``fastpath.Sampler`` takes a value that came between two
samples when the next falls due, even if none follows).

**Deadbands.** asyncua accepts a PercentDeadband and ignores it ("DeadbandType
Percent is not implemented"), and compares an AbsoluteDeadband with the previous
value rather than the one last reported (a slow ramp never reports). Here both
compare with the value last reported (Part 4, 7.22.2); a PercentDeadband is
``DeadbandValue / 100 * (EURange.High - EURange.Low)`` of the node's EURange
(Part 8, 6.2). Refused, each item alone with its own status (Part 4, 7.22.2 and
5.12.2): a PercentDeadband on a node without a finite EURange, or a deadband
value outside 0..100 (percent) or below 0, BadDeadbandFilterInvalid; a deadband
on a value that is not numeric, or a DataChangeFilter on another attribute than
Value, BadFilterNotAllowed; an unknown DeadbandType, BadMonitoredItemFilterUnsupported.

**Event filters.** An event item's WhereClause is evaluated by ``events.EventWhere``
(OfType with subtypes, whole browse paths, refresh events always delivered).

**Items that outlive their node.** asyncua's ``delete_nodes`` calls each data-change
callback of a deleted node without awaiting it (the coroutine is never run:
"coroutine '_Watch.__call__' was never awaited") and drops it, so the items hear
nothing again, even when a node of the same NodeId comes back (a session deleted
and created again, or restarted by ReloadConfig). ``detach`` (before the nodes are
deleted) tells each item a BadNodeIdUnknown value and keeps its callback aside by
NodeId; ``reattach`` (after nodes are added) puts the callbacks of a NodeId that
exists again back onto its node and gives each item the node's current value. An
item its client deletes meanwhile is forgotten (``delete_datachange_callback``).

asyncua 2.1 internals relied on: ``SubscriptionService.create_monitored_items`` /
``modify_monitored_items`` and ``subscriptions`` (wrapped on the instance; the
results' ``MonitoredItemId``, ``RevisedSamplingInterval``), each subscription's
``data.RevisedPublishingInterval`` and ``monitored_item_srv`` (its
``_monitored_items``, ``_monitored_datachange``); ``AddressSpace._nodes``,
``_handle_to_attribute_map``, each ``AttributeValue.datachange_callbacks``, and
``delete_datachange_callback`` (wrapped on the instance).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from asyncua import ua
from asyncua.server.address_space import AddressSpace

from twin_server.opcua.patches import events, fastpath
from twin_server.opcua.patches.fastpath import ItemSpec

log = structlog.get_logger(__name__)

#: the shortest sampling interval (ms) of a node with no rate of its own
MIN_SAMPLING_INTERVAL = 10.0
#: the longest sampling interval (ms) a request is revised to
MAX_SAMPLING_INTERVAL = 3_600_000.0

_VALUE = ua.AttributeIds.Value
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_GONE = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
_NUMERIC = frozenset({
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
    ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64,
    ua.VariantType.Float, ua.VariantType.Double,
})
_MARK = "_twin_server_monitoring"
_ORPHANS = "_twin_server_orphans"


class Refused(Exception):
    """A monitored item's request that is refused alone, with its status."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = ua.StatusCode(getattr(ua.StatusCodes, status))


# -- sampling intervals and filters ------------------------------------------------------


def revise(requested: float, publishing: float, minimum: float) -> float:
    """The sampling interval (ms) an item gets: ``requested``, or ``publishing`` (the
    subscription's publishing interval) for a negative one; at least ``minimum``
    (the node's MinimumSamplingInterval) and MIN_SAMPLING_INTERVAL, a whole number
    of ``minimum`` where it is positive; at most MAX_SAMPLING_INTERVAL."""
    if math.isnan(requested) or requested < 0:
        requested = publishing
    minimum = minimum if math.isfinite(minimum) and minimum > 0 else 0.0
    revised = min(max(requested, minimum, MIN_SAMPLING_INTERVAL), MAX_SAMPLING_INTERVAL)
    if minimum:
        revised = math.ceil(revised / minimum - 1e-9) * minimum
    return float(revised)


def _minimum(aspace: AddressSpace, nodeid: ua.NodeId) -> float:
    """The node's MinimumSamplingInterval (ms; 0 where it has none)."""
    dv = aspace.read_attribute_value(nodeid, ua.AttributeIds.MinimumSamplingInterval)
    value = dv.Value.Value if dv.Value is not None else None
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


def eu_range(aspace: AddressSpace, nodeid: ua.NodeId) -> Any:
    """The node's EURange property (a ``ua.Range``, Part 8), None where it has none."""
    node = aspace.get(nodeid)
    if node is None:
        return None
    for ref in node.references:
        if (ref.IsForward and ref.ReferenceTypeId == _HAS_PROPERTY
                and ref.BrowseName.Name == "EURange"):
            dv = aspace.read_attribute_value(ref.NodeId, _VALUE)
            value = dv.Value.Value if dv.Value is not None else None
            return value if hasattr(value, "Low") and hasattr(value, "High") else None
    return None


def item_spec(aspace: AddressSpace, rvid: ua.ReadValueId, flt: Any,
              interval: float, minimum: float) -> ItemSpec | None:
    """The ``ItemSpec`` of an item on ``rvid`` with filter ``flt`` and sampling
    ``interval`` (ms, revised) on a node of MinimumSamplingInterval ``minimum``;
    None where asyncua's own path does it right. Refused for a filter the node
    cannot take."""
    sampled = interval > max(minimum, MIN_SAMPLING_INTERVAL) + 1e-6
    seconds = interval / 1000.0 if sampled else 0.0
    if flt is None:
        return ItemSpec(seconds) if sampled else None
    # (by its fields: the decoder may hold another class of that name than ua's, one
    # asyncua makes again when it loads the server's data type definitions)
    if not (hasattr(flt, "DeadbandType") and hasattr(flt, "Trigger")):
        return ItemSpec(seconds) if sampled else None  # (an event filter: asyncua's own)
    if rvid.AttributeId != _VALUE:
        raise Refused("BadFilterNotAllowed",
                      "a DataChangeFilter applies to the Value attribute only")
    kind, value = flt.DeadbandType, flt.DeadbandValue
    if kind == ua.DeadbandType.None_:
        return ItemSpec(seconds, flt.Trigger)
    if kind not in (ua.DeadbandType.Absolute, ua.DeadbandType.Percent):
        raise Refused("BadMonitoredItemFilterUnsupported",
                      f"DeadbandType {kind} is none of None (0), Absolute (1), Percent (2)")
    current = aspace.read_attribute_value(rvid.NodeId, _VALUE).Value
    if current is None or current.VariantType not in _NUMERIC:
        got = current.VariantType.name if current is not None else "no value"
        raise Refused("BadFilterNotAllowed", f"a deadband needs a numeric value (got {got})")
    if not math.isfinite(value) or value < 0:
        raise Refused("BadDeadbandFilterInvalid", f"DeadbandValue must be >= 0 (got {value})")
    if kind == ua.DeadbandType.Absolute:
        return ItemSpec(seconds, flt.Trigger, float(value))
    if value > 100:
        raise Refused("BadDeadbandFilterInvalid",
                      f"a PercentDeadband is 0..100 % of the EURange (got {value})")
    span = eu_range(aspace, rvid.NodeId)
    if span is None or not (math.isfinite(span.Low) and math.isfinite(span.High)) \
            or span.High <= span.Low:
        raise Refused("BadDeadbandFilterInvalid",
                      "a PercentDeadband needs a finite EURange on the node; it has "
                      + ("none" if span is None else f"{span.Low}..{span.High}")
                      + "; use an AbsoluteDeadband")
    return ItemSpec(seconds, flt.Trigger, value / 100.0 * (span.High - span.Low))


def install(iserver: Any) -> None:
    """Make ``iserver``'s subscription service revise sampling intervals, check and
    apply deadbands, and let items outlive their node (module docstring);
    idempotent."""
    service = iserver.subscription_service
    aspace = iserver.aspace
    if getattr(service, _MARK, False):
        return
    create = service.create_monitored_items
    modify = service.modify_monitored_items

    async def create_monitored_items(params: ua.CreateMonitoredItemsParameters
                                     ) -> list[ua.MonitoredItemCreateResult]:
        sub = service.subscriptions.get(params.SubscriptionId)
        if sub is None:
            refusal: list[ua.MonitoredItemCreateResult] = await create(params)
            return refusal  # (asyncua's)
        refused: dict[int, ua.MonitoredItemCreateResult] = {}
        planned: list[tuple[float, float, ItemSpec | None]] = []
        accepted: list[ua.MonitoredItemCreateRequest] = []
        publishing = sub.data.RevisedPublishingInterval
        for index, request in enumerate(params.ItemsToCreate):
            rvid = request.ItemToMonitor
            minimum = _minimum(aspace, rvid.NodeId) if rvid.NodeId in aspace else 0.0
            interval = revise(request.RequestedParameters.SamplingInterval, publishing,
                              minimum)
            try:
                spec = item_spec(aspace, rvid, request.RequestedParameters.Filter,
                                 interval, minimum) if rvid.NodeId in aspace else None
            except Refused as exc:
                refused[index] = ua.MonitoredItemCreateResult(StatusCode=exc.status)
                log.info("monitored_item_refused", node=rvid.NodeId.to_string(),
                         status=exc.status.name, reason=str(exc))
                continue
            accepted.append(request)
            planned.append((interval, minimum, spec))
        results = await create(dataclasses.replace(params, ItemsToCreate=accepted)) \
            if accepted else []
        items = sub.monitored_item_srv._monitored_items
        merged: list[ua.MonitoredItemCreateResult] = []
        done = iter(zip(results, planned, strict=True))
        for index in range(len(params.ItemsToCreate)):
            if index in refused:
                merged.append(refused[index])
                continue
            result, (interval, _minimum_ms, spec) = next(done)
            if result.StatusCode.is_good():
                result.RevisedSamplingInterval = interval
                mdata = items.get(result.MonitoredItemId)
                if mdata is not None and mdata.callback_handle is not None:
                    fastpath.set_spec(mdata, spec)
                if mdata is not None:
                    events.refit(aspace, mdata)  # (an event item: Part 4's WhereClause)
            merged.append(result)
        return merged

    def modify_monitored_items(params: ua.ModifyMonitoredItemsParameters
                               ) -> list[ua.MonitoredItemModifyResult]:
        sub = service.subscriptions.get(params.SubscriptionId)
        if sub is None:
            return modify(params)  # type: ignore[no-any-return]
        items = sub.monitored_item_srv._monitored_items
        publishing = sub.data.RevisedPublishingInterval
        merged: list[ua.MonitoredItemModifyResult] = []
        for request in params.ItemsToModify:
            mdata = items.get(request.MonitoredItemId)
            if mdata is None or mdata.read_value_id is None:
                merged.append(ua.MonitoredItemModifyResult(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadMonitoredItemIdInvalid)))
                continue
            rvid = mdata.read_value_id
            wanted = request.RequestedParameters
            minimum = _minimum(aspace, rvid.NodeId) if rvid.NodeId in aspace else 0.0
            interval = revise(wanted.SamplingInterval, publishing, minimum)
            flt = wanted.Filter if wanted.Filter is not None else mdata.filter
            try:
                spec = item_spec(aspace, rvid, flt, interval, minimum) \
                    if rvid.NodeId in aspace else fastpath.spec_of(mdata)
            except Refused as exc:
                merged.append(ua.MonitoredItemModifyResult(StatusCode=exc.status))
                log.info("monitored_item_refused", node=rvid.NodeId.to_string(),
                         status=exc.status.name, reason=str(exc))
                continue
            (result,) = modify(dataclasses.replace(params, ItemsToModify=[request]))
            if result.StatusCode.is_good():
                result.RevisedSamplingInterval = interval
                result.RevisedQueueSize = mdata.queue_size = \
                    sub.monitored_item_srv._revise_queue_size(wanted.QueueSize)
                if mdata.callback_handle is not None:
                    fastpath.set_spec(mdata, spec)
                events.refit(aspace, mdata)
            merged.append(result)
        return merged

    service.create_monitored_items = create_monitored_items
    service.modify_monitored_items = modify_monitored_items
    _keep_orphans(aspace)
    setattr(service, _MARK, True)


# -- items that outlive their node --------------------------------------------------------

#: a callback kept aside while its node is gone: (attribute, callback)
Orphan = tuple[ua.AttributeIds, Callable[..., Any]]


class _Orphans:
    """The callbacks kept aside, by NodeId and by handle."""

    def __init__(self) -> None:
        self.by_node: dict[ua.NodeId, dict[int, Orphan]] = {}
        self.where: dict[int, ua.NodeId] = {}

    def keep(self, nodeid: ua.NodeId, handle: int, orphan: Orphan) -> None:
        self.by_node.setdefault(nodeid, {})[handle] = orphan
        self.where[handle] = nodeid

    def drop(self, handle: int) -> bool:
        nodeid = self.where.pop(handle, None)
        if nodeid is None:
            return False
        kept = self.by_node.get(nodeid)
        if kept is not None:
            kept.pop(handle, None)
            if not kept:
                del self.by_node[nodeid]
        return True


def _orphans(aspace: AddressSpace) -> _Orphans:
    found: _Orphans | None = getattr(aspace, _ORPHANS, None)
    if found is None:
        found = _Orphans()
        setattr(aspace, _ORPHANS, found)
    return found


def _keep_orphans(aspace: AddressSpace) -> None:
    """Make ``delete_datachange_callback`` (an item deleted, or its subscription)
    forget a callback kept aside too."""
    orphans = _orphans(aspace)
    delete = aspace.delete_datachange_callback

    def delete_datachange_callback(handle: int) -> None:
        if not orphans.drop(handle):
            delete(handle)

    aspace.delete_datachange_callback = delete_datachange_callback


def orphaned(aspace: AddressSpace) -> int:
    """How many items wait for their node to come back."""
    return len(_orphans(aspace).where)


def _alive(callback: Any, handle: int) -> bool:
    watch = fastpath.watch_of(callback)
    if watch is not None:
        return watch.alive(handle)
    service = getattr(callback, "__self__", None)
    datachange = getattr(service, "_monitored_datachange", None)
    return isinstance(datachange, dict) and handle in datachange


async def detach(aspace: AddressSpace, nodeids: Iterable[ua.NodeId]) -> int:
    """Before ``nodeids`` are deleted: tell every item on them a BadNodeIdUnknown
    value and keep its callback aside (``reattach``); how many there were."""
    targets = set(nodeids)
    handles = aspace._handle_to_attribute_map
    found = [(handle, nodeid, attr) for handle, (nodeid, attr) in handles.items()
             if nodeid in targets]
    if not found:
        return 0
    orphans = _orphans(aspace)
    nodes = aspace._nodes
    publish: set[Any] = set()
    pending: list[Any] = []
    for handle, nodeid, attr in found:
        del handles[handle]
        node = nodes.get(nodeid)
        attval = node.attributes.get(attr) if node is not None else None
        callback = attval.datachange_callbacks.pop(handle, None) if attval is not None else None
        if callback is None or not _alive(callback, handle):
            continue
        orphans.keep(nodeid, handle, (attr, callback))
        watch = fastpath.watch_of(callback)
        if watch is not None:
            if watch.gone(handle, _GONE):
                publish.add(watch.isub)
        else:
            pending.append((callback, handle))
    for callback, handle in pending:
        await _guarded(callback(handle, ua.DataValue(
            StatusCode=_GONE, ServerTimestamp=_dt.datetime.now(_dt.UTC))))
    for isub in publish:
        await isub._trigger_publish()
    return len(found)


async def reattach(aspace: AddressSpace, nodeids: Iterable[ua.NodeId]) -> int:
    """After ``nodeids`` were added: the items kept aside for any of them watch the
    new node and get its current value; how many came back."""
    orphans = _orphans(aspace)
    if not orphans.by_node:
        return 0
    back = orphans.by_node.keys() & set(nodeids)
    if not back:
        return 0
    handles = aspace._handle_to_attribute_map
    nodes = aspace._nodes
    count = 0
    calls: list[tuple[Any, int, ua.DataValue]] = []
    for nodeid in back:
        node = nodes.get(nodeid)
        for handle, (attr, callback) in list(orphans.by_node[nodeid].items()):
            attval = node.attributes.get(attr) if node is not None else None
            if attval is None:
                continue  # (the new node lacks that attribute: it waits on)
            orphans.drop(handle)
            if not _alive(callback, handle):
                continue
            attval.datachange_callbacks[handle] = callback
            handles[handle] = (nodeid, attr)
            calls.append((callback, handle, aspace.read_attribute_value(nodeid, attr)))
            count += 1
    for callback, handle, value in calls:
        await _guarded(callback(handle, value))
    return count


async def _guarded(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:  # as write_attribute_value: one callback never fails the others
        log.exception("datachange_callback_failed")
