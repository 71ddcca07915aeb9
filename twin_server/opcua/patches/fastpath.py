"""A lighter path through asyncua's server for value changes to subscribers.

asyncua 2.1 takes each value change to each monitored item like this:
``AddressSpace.write_attribute_value`` awaits every data-change callback of the
node (a coroutine per item per change); ``MonitoredItemService.datachange_callback``
*deep-copies* the DataValue to compare it with the previous one (~30 us, three
quarters of the whole cost), builds a ``MonitoredItemNotification`` and awaits
``InternalSubscription.enqueue_datachange_event``; at the publishing interval the
notifications are encoded by asyncua's generic, reflective encoder (~5 us each).
That caps a plain asyncua server near 10,000 delivered changes a second.

This module does the same work with less, on *one server's instances only*: no
asyncua class or module function is modified, so another asyncua server in the
same process (the benchmark's baseline, the HIL soft PLC in the tests) is untouched.

1. ``install(aspace)`` wraps that address space's ``add_datachange_callback``: the
   callback a ``MonitoredItemService`` registers for a data-change item is replaced
   by a ``_Watch`` that does what ``datachange_callback`` does (Disabled items,
   the trigger and deadband filter with asyncua's own checks, the queue size with
   the oldest discarded, an immediate publish for 0 ms subscriptions) without the
   deep copy: a DataValue whose Variant holds an immutable scalar is kept by
   reference (nobody can change it in place), any other is still copied.
2. ``write_values(aspace, changes)`` is the publisher's batched write: it stores
   each prepared DataValue and hands it to the ``_Watch``es in a plain loop, with
   no coroutine per value or per item. What needs asyncua's full path (a node with
   a value setter, a bad status, another kind of callback) takes it.
3. The data changes of each subscription a ``_Watch`` feeds are encoded when they
   are popped for a PublishResponse, by ``encode_data_changes``: a direct encoder
   for scalar DataValues, asyncua's own for anything else, the result sent as an
   ExtensionObject holding the encoded DataChangeNotification (what asyncua's
   encoder would have produced, byte for byte). Subscriptions of the server's own
   internal session get notification objects, as before.
4. With ``install(aspace, ticks)``, each of those subscriptions' publishes (its
   ``publish_results``, replaced on the instance) first waits for a clock tick
   that would fall due while it runs (``runtime.clock.Ticks``): a PublishResponse
   of 1,000 changes takes about a ms to pop, encode and send.

Each change is pinned by ``tests/opcua/test_fastpath.py`` against the asyncua
internals it relies on, so that an asyncua upgrade that moves them fails a test
instead of silently falling back or misbehaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as _dt
import heapq
import itertools
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemService
from asyncua.ua.ua_binary import struct_to_binary, variant_to_binary

from twin_server.runtime.clock import Ticks

_VALUE = ua.AttributeIds.Value
_DISABLED = ua.MonitoringMode.Disabled
_DEADBAND_NONE = ua.DeadbandType.None_
_STATUS_VALUE = ua.DataChangeTrigger.StatusValue
_DATACHANGE_TYPEID = ua.NodeId(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary)
_ORIGINAL_CALLBACK = MonitoredItemService.datachange_callback
_MARK = "_twin_server_fastpath"
_TICKS_MARK = "_twin_server_ticks"
_SAMPLER = "_twin_server_sampler"

#: values nobody can change in place: a DataValue holding one is kept by reference
_IMMUTABLE = frozenset((bool, int, float, str, bytes, _dt.datetime, uuid.UUID, type(None)))
_Notification = ua.MonitoredItemNotification
_DataValue, _Variant = ua.DataValue, ua.Variant


def install(aspace: AddressSpace, ticks: Ticks | None = None) -> None:
    """Route data-change monitored items created from now on in ``aspace`` through
    the lighter path (idempotent; items that already exist keep asyncua's). With
    ``ticks``, their subscriptions publish around the clocks' ticks."""
    if getattr(aspace, _MARK, False):
        return
    original = aspace.add_datachange_callback
    sampler = Sampler()
    setattr(aspace, _SAMPLER, sampler)

    def add_datachange_callback(nodeid: ua.NodeId, attr: ua.AttributeIds,
                                callback: Callable[..., Any]) -> tuple[ua.StatusCode, int]:
        service = getattr(callback, "__self__", None)
        if (isinstance(service, MonitoredItemService)
                and getattr(callback, "__func__", None) is _ORIGINAL_CALLBACK):
            callback = _Watch(service, sampler)
            _encode_on_pop(service.isub)
            if ticks is not None:
                _publish_around_ticks(service.isub, ticks)
        result: tuple[ua.StatusCode, int] = original(nodeid, attr, callback)
        return result

    aspace.add_datachange_callback = add_datachange_callback
    setattr(aspace, _MARK, True)


def sampler(aspace: AddressSpace) -> Sampler | None:
    """The sampler of ``aspace``'s items with a sampling interval (``install``): its
    ``run`` must run for their samples to be taken."""
    found: Sampler | None = getattr(aspace, _SAMPLER, None)
    return found


def watch_of(callback: Any) -> _Watch | None:
    """``callback`` when it is one of ours."""
    return callback if type(callback) is _Watch else None


def installed(aspace: AddressSpace) -> bool:
    return bool(getattr(aspace, _MARK, False))


def uninstall(aspace: AddressSpace) -> None:
    """Items created from now on take asyncua's path again (those created meanwhile
    keep ours)."""
    if installed(aspace):
        del aspace.add_datachange_callback
        delattr(aspace, _MARK)


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """How one data-change monitored item samples and filters, where asyncua's own
    path would not do it right (``monitoring.py`` sets it on the item when it is
    created or modified).

    ``interval``: seconds between two samples, when that is longer than the rate
    its node's value can change at (0: every change is a sample). ``trigger``: the
    DataChangeFilter's trigger. ``deadband``: the absolute deadband, a
    PercentDeadband already turned into one over the node's EURange (None: none).
    A sample is reported when it differs from the value *last reported* by the
    trigger and beyond the deadband (Part 4, 7.22.2), not from the sample before."""

    interval: float = 0.0
    trigger: ua.DataChangeTrigger = ua.DataChangeTrigger.StatusValue
    deadband: float | None = None


#: the attribute of asyncua's ``MonitoredItemData`` that holds our ``ItemSpec``
SPEC = "_twin_server_spec"


def spec_of(mdata: Any) -> ItemSpec | None:
    spec: ItemSpec | None = getattr(mdata, SPEC, None)
    return spec


def set_spec(mdata: Any, spec: ItemSpec | None) -> None:
    setattr(mdata, SPEC, spec)


class _Item:
    """What a ``_Watch`` keeps of one monitored item."""

    __slots__ = ("due", "filter", "mdata", "mid", "pending", "plain", "scheduled", "spec")

    def __init__(self, mid: int, mdata: Any, spec: ItemSpec | None) -> None:
        self.mid = mid
        self.mdata = mdata
        self.filter = mdata.filter
        self.spec = spec
        flt = self.filter
        #: asyncua's own StatusValue comparison with the previous value will do
        self.plain = spec is None and (not flt or (flt.Trigger == _STATUS_VALUE
                                                   and flt.DeadbandType == _DEADBAND_NONE))
        #: when the next sample is due (time.monotonic), for an item with an interval:
        #: one interval on where the item has reported a value already (its first, at
        #: its creation, before its interval was set: the next is a sample later),
        #: else now
        self.due = 0.0
        if spec is not None and spec.interval and _reported(mdata):
            self.due = time.monotonic() + spec.interval
        #: the latest value not sampled yet (it came before ``due``)
        self.pending: ua.DataValue | None = None
        self.scheduled = False


def _reported(mdata: Any) -> bool:
    """Whether the item reported a value of its node last (not none, nor a Bad
    status without a value: a node that was deleted, ``_Watch.gone``)."""
    last = mdata.mvalue.current_dvalue
    return last is not None and last.Value is not None and last.Value.Value is not None


class _Watch:
    """One monitored item's data-change callback (asyncua keys items by handle)."""

    __slots__ = ("_items", "isub", "sampler", "service")

    def __init__(self, service: MonitoredItemService, sampler: Sampler | None = None) -> None:
        self.service = service
        self.isub = service.isub
        self.sampler = sampler
        self._items: dict[int, _Item] = {}

    async def __call__(self, handle: int, value: ua.DataValue,
                       error: ua.StatusCode | None = None) -> None:
        """asyncua's signature: ``write_attribute_value`` awaits this per item."""
        if error:
            if self.gone(handle, error):
                await self.isub._trigger_publish()
        elif self.notify(handle, value):
            await self.isub._trigger_publish()

    def alive(self, handle: int) -> bool:
        """Whether the monitored item still exists (its client may have deleted it)."""
        return handle in self.service._monitored_datachange

    def _item(self, handle: int) -> _Item | None:
        mid = self.service._monitored_datachange.get(handle)
        if mid is None:
            self._items.pop(handle, None)
            return None  # deleted meanwhile
        mdata = self.service._monitored_items[mid]
        item = self._items[handle] = _Item(mid, mdata, spec_of(mdata))
        return item

    def _current(self, handle: int) -> _Item | None:
        item = self._items.get(handle)
        if item is None or item.mdata.filter is not item.filter \
                or spec_of(item.mdata) is not item.spec:
            item = self._item(handle)
        return item

    def notify(self, handle: int, value: ua.DataValue) -> bool:
        """Filter and queue one change; True when it opened a new item queue (then a
        0 ms subscription must be told to publish, ``_trigger_publish``)."""
        # (a deleted item's callback is gone from the node: handles are never reused)
        item = self._current(handle)
        if item is None or item.mdata.mode == _DISABLED:
            return False
        if item.plain:
            return self._plain(item, value)
        spec = item.spec
        if spec is not None and spec.interval:
            now = time.monotonic()
            if now < item.due:  # not due yet: the sample at ``due`` takes the latest
                item.pending = value
                if not item.scheduled and self.sampler is not None:
                    item.scheduled = True
                    self.sampler.schedule(item.due, self, handle)
                return False
            item.pending = None
            item.due = now + spec.interval
        return self._report(item, value)

    def sample(self, handle: int, now: float) -> bool:
        """The sampler's call at an item's due time: report the value that came since
        the last sample, if one did; True as ``notify``."""
        item = self._current(handle)
        if item is None:
            return False
        item.scheduled = False
        value, item.pending = item.pending, None
        if value is None or item.mdata.mode == _DISABLED or item.spec is None:
            return False
        item.due = now + item.spec.interval
        return self._report(item, value)

    def gone(self, handle: int, status: ua.StatusCode) -> bool:
        """The item's node was deleted: report a value of ``status`` (BadNodeIdUnknown)
        now, past any filter or sampling interval; True as ``notify``."""
        item = self._current(handle)
        if item is None or item.mdata.mode == _DISABLED:
            return False
        item.pending = None
        item.due = 0.0  # the node's next value (should it come back) is reported at once
        value = ua.DataValue(StatusCode=status, ServerTimestamp=_dt.datetime.now(_dt.UTC))
        mvalue = item.mdata.mvalue
        mvalue.old_dvalue, mvalue.current_dvalue = mvalue.current_dvalue, value
        return self._queue(item, value)

    def _plain(self, item: _Item, value: ua.DataValue) -> bool:
        mvalue = item.mdata.mvalue
        old = mvalue.current_dvalue
        mvalue.old_dvalue = old
        variant = value.Value
        if variant is not None and not variant.is_array and type(variant.Value) in _IMMUTABLE:
            mvalue.current_dvalue = value
        else:
            mvalue.current_dvalue = copy.deepcopy(value)
        # MonitoredItemService._is_data_changed with StatusValue, inlined
        if old is not None:
            before, status = old.Value, value.StatusCode
            if type(before) is _Variant and type(variant) is _Variant:
                same = before is variant or (before.Value == variant.Value
                                             and before.VariantType == variant.VariantType)
            else:
                same = before == variant
            if same and (old.StatusCode is status or old.StatusCode == status):
                return False
        return self._queue(item, value)

    def _report(self, item: _Item, value: ua.DataValue) -> bool:
        """Queue ``value`` if it passes the item's filter against the value reported
        last (``mvalue.current_dvalue``, which it then becomes)."""
        mvalue = item.mdata.mvalue
        last = mvalue.current_dvalue
        if last is not None:
            spec = item.spec
            if spec is not None:
                if not _passes(last, value, spec):
                    return False
            else:  # asyncua's trigger and deadband checks, against the value reported last
                mvalue.old_dvalue, mvalue.current_dvalue = last, value
                try:
                    if not (MonitoredItemService._is_data_changed(mvalue, item.filter.Trigger)
                            and self.service._is_deadband_exceeded(mvalue, item.filter)):
                        return False
                finally:
                    mvalue.current_dvalue = last
        variant = value.Value
        mvalue.old_dvalue = last
        if variant is not None and not variant.is_array and type(variant.Value) in _IMMUTABLE:
            mvalue.current_dvalue = value
        else:
            mvalue.current_dvalue = copy.deepcopy(value)
        return self._queue(item, value)

    def _queue(self, item: _Item, value: ua.DataValue) -> bool:
        # InternalSubscription._enqueue_event, inlined; a client's subscription queues
        # the notification encoded (bytes: nothing for the garbage collector to scan)
        mdata = item.mdata
        isub = self.isub
        queued: Any = (_Notification(mdata.client_handle, value)
                       if isub.pub_request_callback is None
                       else encode_value(mdata.client_handle, value))
        queue = isub._triggered_datachanges
        items = queue.get(item.mid)
        if items is None:
            queue[item.mid] = [queued]
            return True
        size = mdata.queue_size
        if size and len(items) >= size:
            del items[0]
        items.append(queued)
        return False


_NUMERIC = (int, float)


def _passes(last: ua.DataValue, new: ua.DataValue, spec: ItemSpec) -> bool:
    """Whether ``new`` is to be reported after ``last`` under ``spec`` (Part 4, 7.22.2)."""
    if last.StatusCode != new.StatusCode:
        return True
    if spec.trigger == ua.DataChangeTrigger.Status:
        return False
    before = last.Value.Value if last.Value is not None else None
    after = new.Value.Value if new.Value is not None else None
    if before != after or (last.Value is not None and new.Value is not None
                           and last.Value.VariantType != new.Value.VariantType):
        if spec.deadband is None or type(before) is bool or type(after) is bool \
                or not isinstance(before, _NUMERIC) or not isinstance(after, _NUMERIC):
            return True
        if abs(after - before) > spec.deadband:
            return True
    return bool(spec.trigger == ua.DataChangeTrigger.StatusValueTimestamp
            and (last.SourceTimestamp != new.SourceTimestamp
                 or last.SourcePicoseconds != new.SourcePicoseconds))


class Sampler:
    """Takes each sampled item's sample when it falls due (``_Watch.sample``): a value
    that came between two samples is reported at the next, even when no other
    follows it. One task (``run``, the OPC UA server's) for all items."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Watch, int]] = []
        self._count = itertools.count()
        self._wake = asyncio.Event()

    def schedule(self, due: float, watch: _Watch, handle: int) -> None:
        first = not self._due or due < self._due[0][0]
        heapq.heappush(self._due, (due, next(self._count), watch, handle))
        if first:
            self._wake.set()

    def __len__(self) -> int:
        return len(self._due)

    async def run(self) -> None:
        """Take the samples as they fall due, until cancelled. (Its waits are
        ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11, a wait_for
        whose awaited event comes in the instant its task is cancelled returns, and the
        cancellation is lost: the daemon's stop then waited for this task for ever.)"""
        due = self._due
        while True:
            self._wake.clear()
            if not due:
                await self._wake.wait()
                continue
            wait = due[0][0] - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            now = time.monotonic()
            publish: set[InternalSubscription] = set()
            while due and due[0][0] <= now:
                _, _, watch, handle = heapq.heappop(due)
                if watch.sample(handle, now):
                    publish.add(watch.isub)
            for isub in publish:
                await isub._trigger_publish()


async def write_values(aspace: AddressSpace,
                       changes: Iterable[tuple[ua.NodeId, ua.DataValue]]) -> None:
    """Store each ``(nodeid, datavalue)`` as the node's Value and notify its monitored
    items; the DataValues must carry the node's own Variant type (the publisher's
    prepared ones do: the type check of ``write_attribute_value`` is skipped)."""
    nodes = aspace._nodes
    pending: list[Awaitable[Any]] = []
    publish: set[InternalSubscription] = set()
    for nodeid, value in changes:
        node = nodes.get(nodeid)
        attval = node.attributes.get(_VALUE) if node is not None else None
        status = value.StatusCode
        if (attval is None or attval.value_setter is not None
                or (status is not GOOD and status is not None and status.is_bad())):
            pending.append(aspace.write_attribute_value(nodeid, _VALUE, value))
            continue
        attval.value = value
        attval.value_callback = None
        callbacks = attval.datachange_callbacks
        if not callbacks:
            continue
        for handle, callback in callbacks.items():
            if type(callback) is _Watch:
                if callback.notify(handle, value):
                    publish.add(callback.isub)
            else:
                pending.append(_guarded(callback(handle, value)))
    for awaitable in pending:
        await awaitable
    for isub in publish:
        await isub._trigger_publish()


async def _guarded(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # as write_attribute_value: one callback never fails the write
        import logging
        logging.getLogger(__name__).exception("datachange callback failed")


# -- encoding ----------------------------------------------------------------------


def _encode_on_pop(isub: InternalSubscription) -> None:
    """Make ``isub`` hand its data changes to clients encoded by ours."""
    if getattr(isub, _MARK, False):
        return
    original = isub._pop_triggered_datachanges

    def pop(result: ua.PublishResult) -> None:
        queue = isub._triggered_datachanges
        if not queue or isub.pub_request_callback is None:
            original(result)  # the server's own subscriptions decode nothing
            return
        isub._triggered_datachanges = {}
        items = [item for sublist in queue.values() for item in sublist]
        result.NotificationMessage.NotificationData.append(
            ua.ExtensionObject(TypeId=_DATACHANGE_TYPEID, Body=encode_data_changes(items)))

    isub._pop_triggered_datachanges = pop
    setattr(isub, _MARK, True)


def _publish_around_ticks(isub: InternalSubscription, ticks: Ticks) -> None:
    """Make ``isub``'s publishes (a PublishResponse of up to thousands of changes, its
    pop, encoding and send: ~1 ms) wait for a clock tick that would fall due while
    one runs, the way the publisher's chunks do (``runtime.clock.Ticks``): ten such
    subscriptions fire ten times a second each. Its publishing loop calls
    ``self.publish_results()``, which finds this instance attribute first."""
    if getattr(isub, _TICKS_MARK, False):
        return
    original = isub.publish_results
    last = [0.0]  # how long the previous publish took

    async def publish_results(requestdata: Any = None) -> bool:
        await ticks.clear(1.5 * last[0])  # (a margin: the next may take longer)
        started = time.perf_counter()
        try:
            published: bool = await original(requestdata)
        finally:
            last[0] = time.perf_counter() - started
        return published

    isub.publish_results = publish_results
    setattr(isub, _TICKS_MARK, True)


_INT32 = struct.Struct("<i")
_EMPTY_LIST = _INT32.pack(0)
_HEAD = struct.Struct("<IB")  # ClientHandle, DataValue encoding mask
_UINT32 = struct.Struct("<I")
_INT64 = struct.Struct("<q")
_UINT16 = struct.Struct("<H")
#: Variant encodings of the scalar types a twin's variables take
_SCALARS: dict[Any, tuple[struct.Struct, tuple[type, ...]]] = {
    ua.VariantType.Double: (struct.Struct("<Bd"), (float, int)),
    ua.VariantType.Float: (struct.Struct("<Bf"), (float, int)),
    ua.VariantType.Int32: (struct.Struct("<Bi"), (int,)),
    ua.VariantType.UInt32: (struct.Struct("<BI"), (int,)),
    ua.VariantType.Int64: (struct.Struct("<Bq"), (int,)),
    ua.VariantType.UInt64: (struct.Struct("<BQ"), (int,)),
    ua.VariantType.Int16: (struct.Struct("<Bh"), (int,)),
    ua.VariantType.Boolean: (struct.Struct("<B?"), (bool,)),
}
#: the common case in one pack: Double value, status, source and server timestamps
_DOUBLE_FULL = struct.Struct("<IBBdIqq")
_DOUBLE = ua.VariantType.Double


class _Timestamps:
    """DateTime encodings of the last few timestamps (a publish stamps all its values
    with one)."""

    def __init__(self) -> None:
        self._cache: dict[_dt.datetime, int] = {}
        self._last: _dt.datetime | None = None
        self._last_ticks = 0

    def ticks(self, when: _dt.datetime) -> int:
        if when is self._last:
            return self._last_ticks
        cached = self._cache.get(when)
        if cached is None:
            if len(self._cache) > 64:
                self._cache.clear()
            cached = self._cache[when] = ua.datetime_to_win_epoch(when)
        self._last, self._last_ticks = when, cached
        return cached


_stamps = _Timestamps()


def _variant(variant: ua.Variant) -> bytes:
    if not variant.is_array and variant.Dimensions is None:
        scalar = _SCALARS.get(variant.VariantType)
        if scalar is not None and type(variant.Value) in scalar[1]:
            return scalar[0].pack(variant.VariantType.value, variant.Value)
    encoded: bytes = variant_to_binary(variant)
    return encoded


def encode_item(item: ua.MonitoredItemNotification) -> bytes:
    """One MonitoredItemNotification, as ``struct_to_binary`` encodes it."""
    if type(item) is not _Notification or type(item.Value) is not ua.DataValue:
        encoded: bytes = struct_to_binary(item)
        return encoded
    return encode_value(item.ClientHandle, item.Value)


def encode_value(client_handle: int, dv: ua.DataValue) -> bytes:
    """The MonitoredItemNotification of ``client_handle`` and ``dv``, encoded."""
    variant, status = dv.Value, dv.StatusCode
    src, srv = dv.SourceTimestamp, dv.ServerTimestamp
    if (variant is not None and status is not None and src is not None and srv is not None
            and dv.SourcePicoseconds is None and dv.ServerPicoseconds is None
            and variant.VariantType is _DOUBLE and type(variant.Value) is float
            and not variant.is_array and variant.Dimensions is None):
        ticks = _stamps.ticks(src)
        return _DOUBLE_FULL.pack(client_handle, 0x0F, 11, variant.Value, status.value, ticks,
                                 ticks if srv is src else _stamps.ticks(srv))
    if type(dv) is not ua.DataValue or (variant is not None and type(variant) is not ua.Variant):
        encoded: bytes = struct_to_binary(_Notification(client_handle, dv))
        return encoded
    mask = 0
    parts = [b""]
    if variant is not None:
        mask |= 0x01
        parts.append(_variant(variant))
    if status is not None:
        mask |= 0x02
        parts.append(_UINT32.pack(status.value))
    if src is not None:
        mask |= 0x04
        parts.append(_INT64.pack(_stamps.ticks(src)))
    if srv is not None:
        mask |= 0x08
        parts.append(_INT64.pack(_stamps.ticks(srv)))
    if dv.SourcePicoseconds is not None:
        mask |= 0x10
        parts.append(_UINT16.pack(dv.SourcePicoseconds))
    if dv.ServerPicoseconds is not None:
        mask |= 0x20
        parts.append(_UINT16.pack(dv.ServerPicoseconds))
    parts[0] = _HEAD.pack(client_handle, mask)
    return b"".join(parts)


def encode_data_changes(items: list[ua.MonitoredItemNotification | bytes]) -> bytes:
    """The body of a DataChangeNotification of ``items`` (no DiagnosticInfos), as
    asyncua's encoder writes it; an item may be encoded already (``encode_item``)."""
    return b"".join((_INT32.pack(len(items)),
                     *(item if type(item) is bytes else encode_item(item) for item in items),
                     _EMPTY_LIST))


# -- prepared values ---------------------------------------------------------------

#: one Good status shared by every prepared DataValue (asyncua never changes one
#: in place; the default would build one per value)
GOOD = ua.StatusCode()
_DATAVALUE_SLOTS = ("Encoding", "Value", "StatusCode", "SourceTimestamp", "ServerTimestamp",
                    "SourcePicoseconds", "ServerPicoseconds")
_VARIANT_SLOTS = ("Value", "VariantType", "Dimensions", "is_array")
#: the direct build below sets every field of these slotted dataclasses; it is used
#: only while they have exactly these fields (else the constructors are)
DIRECT_BUILD = (tuple(getattr(ua.DataValue, "__slots__", ())) == _DATAVALUE_SLOTS
                and tuple(getattr(ua.Variant, "__slots__", ())) == _VARIANT_SLOTS)
_new = object.__new__


def data_value(value: Any, vtype: ua.VariantType, when: _dt.datetime) -> ua.DataValue:
    """A Good DataValue of a scalar ``value`` of type ``vtype``, Source- and
    ServerTimestamp ``when``: what ``DataValue(Variant(value, vtype), ...)`` builds,
    in a quarter of the time (no ``__post_init__`` guessing, one shared status)."""
    if not DIRECT_BUILD or isinstance(value, list | tuple) or value is None:
        return _DataValue(_Variant(value, vtype), GOOD, when, when)
    variant = _new(_Variant)
    variant.Value = value
    variant.VariantType = vtype
    variant.Dimensions = None
    variant.is_array = False
    dv = _new(_DataValue)
    dv.Encoding = 0
    dv.Value = variant
    dv.StatusCode = GOOD
    dv.SourceTimestamp = when
    dv.ServerTimestamp = when
    dv.SourcePicoseconds = None
    dv.ServerPicoseconds = None
    return dv
