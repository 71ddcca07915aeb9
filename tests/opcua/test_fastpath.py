"""The lighter monitored-item path (``twin_server.opcua.patches.fastpath``): it must behave as
asyncua's own path does, leave other servers alone, and encode what asyncua would.

Every test here compares against asyncua itself (items created before ``install``
keep asyncua's path; ``struct_to_binary`` is the reference encoder), and
``TestAsyncuaInternals`` names each internal the module relies on, so that an
asyncua upgrade that changes them fails here rather than in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Server, ua
from asyncua.server.address_space import AddressSpace, AttributeValue
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import (
    MonitoredItemData,
    MonitoredItemService,
    MonitoredItemValues,
)
from asyncua.ua.ua_binary import extensionobject_to_binary, struct_to_binary

from twin_server.opcua.patches import fastpath
from twin_server.runtime.clock import Ticks

#: the async tests share the module's loop (and its one asyncua server)
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
DOUBLE = ua.VariantType.Double


@dataclasses.dataclass
class Plain:
    server: Server
    ns: int
    nodes: list[ua.NodeId]

    @property
    def aspace(self) -> AddressSpace:
        return self.server.iserver.aspace  # type: ignore[no-any-return]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plain() -> AsyncIterator[Plain]:
    """A plain asyncua server with a few Double variables (not yet installed)."""
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/fastpath")
    ns = await server.register_namespace("urn:fastpath-test")
    folder = await server.nodes.objects.add_folder(ns, "F")
    nodes = [(await folder.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", 0.0)).nodeid
             for i in range(6)]
    await server.start()
    try:
        yield Plain(server, ns, nodes)
    finally:
        await server.stop()


async def subscription(p: Plain, *, client: bool = True) -> InternalSubscription:
    """A server-side subscription; ``client``: one whose results go to a client (it
    has a publish-request callback that never has a request, so nothing is popped)."""
    service = p.server.iserver.subscription_service
    params = ua.CreateSubscriptionParameters(RequestedPublishingInterval=3_600_000,
                                             RequestedLifetimeCount=10_000,
                                             RequestedMaxKeepAliveCount=10_000)

    async def ignore(*_: Any) -> None:
        return None

    result = await service.create_subscription(
        params, ignore, ua.NodeId(1, 0), request_callback=(lambda _: None) if client else None)
    return service.subscriptions[result.SubscriptionId]  # type: ignore[no-any-return]


def item(nodeid: ua.NodeId, handle: int, *, flt: Any = None, queue: int = 0,
         mode: ua.MonitoringMode = ua.MonitoringMode.Reporting) -> ua.MonitoredItemCreateRequest:
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=nodeid, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=mode,
        RequestedParameters=ua.MonitoringParameters(ClientHandle=handle, QueueSize=queue,
                                                    Filter=flt))


#: (filter, queue size, mode) of the items compared: every branch of asyncua's
#: datachange_callback
KINDS: list[tuple[Any, int, ua.MonitoringMode]] = [
    (None, 0, ua.MonitoringMode.Reporting),
    (None, 2, ua.MonitoringMode.Reporting),
    (ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue), 0,
     ua.MonitoringMode.Reporting),
    (ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp), 0,
     ua.MonitoringMode.Reporting),
    (ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.Status), 0, ua.MonitoringMode.Reporting),
    (ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                         DeadbandType=ua.DeadbandType.Absolute, DeadbandValue=0.5), 0,
     ua.MonitoringMode.Reporting),
    (None, 0, ua.MonitoringMode.Disabled),
]


def dv(value: float, *, when: datetime = NOW, status: int = ua.StatusCodes.Good) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, DOUBLE), ua.StatusCode(status), when, when)


#: a sequence of writes: repeats, small and large steps, a new timestamp only, a status
WRITES = [dv(1.0), dv(1.0), dv(1.2), dv(2.0), dv(2.0, when=NOW + timedelta(seconds=1)),
          dv(2.0, status=ua.StatusCodes.Uncertain), dv(2.1), dv(5.0), dv(5.0), dv(-3.0)]


def queued(isub: InternalSubscription) -> list[bytes]:
    """Every queued notification, encoded (asyncua's queue objects or our bytes)."""
    out = []
    for items in isub._triggered_datachanges.values():
        out += [x if isinstance(x, bytes) else struct_to_binary(x) for x in items]
    isub._triggered_datachanges = {}
    return out


async def make_items(isub: InternalSubscription, nodeid: ua.NodeId) -> None:
    results = await isub.monitored_item_srv.create_monitored_items(
        ua.CreateMonitoredItemsParameters(ItemsToCreate=[
            item(nodeid, 100 + k, flt=flt, queue=queue, mode=mode)
            for k, (flt, queue, mode) in enumerate(KINDS)]))
    assert all(r.StatusCode.is_good() for r in results)


@MODULE_LOOP
class TestSameNotifications:
    """The same writes queue the same notifications through both paths."""

    @pytest.mark.parametrize("client", [pytest.param(True, id="client"),
                                        pytest.param(False, id="internal")])
    @pytest.mark.parametrize("through", ["write_attribute_value", "write_values"])
    async def test_against_asyncua(self, plain: Plain, client: bool, through: str) -> None:
        """Items created before install (asyncua's path) and after (ours) see the same
        notifications for every filter, queue size and mode."""
        nodeid = plain.nodes[2 * (through == "write_values") + client]
        aspace = plain.aspace
        fastpath.uninstall(aspace)
        theirs = await subscription(plain, client=client)
        await make_items(theirs, nodeid)
        fastpath.install(aspace)
        ours = await subscription(plain, client=client)
        await make_items(ours, nodeid)
        assert queued(theirs) == queued(ours)  # the initial values
        seen = 0
        for value in WRITES:
            if through == "write_values":
                await fastpath.write_values(aspace, [(nodeid, value)])
            else:
                await aspace.write_attribute_value(nodeid, ua.AttributeIds.Value, value)
            expected = queued(theirs)
            assert expected == queued(ours), value
            seen += len(expected)
        assert 20 < seen < len(WRITES) * len(KINDS)  # some filtered, most not
        kinds = {type(cb) for cb in aspace._nodes[nodeid].attributes[
            ua.AttributeIds.Value].datachange_callbacks.values()}
        assert kinds == {fastpath._Watch, type(theirs.monitored_item_srv.datachange_callback)}

    async def test_values_are_stored(self, plain: Plain) -> None:
        """write_values leaves the node's value as write_attribute_value would."""
        fastpath.install(plain.aspace)
        value = dv(42.0)
        await fastpath.write_values(plain.aspace, [(plain.nodes[5], value)])
        assert plain.aspace.read_attribute_value(plain.nodes[5], ua.AttributeIds.Value) == value

    async def test_value_setter_takes_asyncua_path(self, plain: Plain) -> None:
        """A node with a value setter, or a bad status, goes through write_attribute_value."""
        fastpath.install(plain.aspace)
        seen: list[ua.DataValue] = []
        attval = plain.aspace._nodes[plain.nodes[4]].attributes[ua.AttributeIds.Value]
        attval.value_setter = lambda node, attr, value: seen.append(value)
        try:
            await fastpath.write_values(plain.aspace, [(plain.nodes[4], dv(7.0))])
        finally:
            attval.value_setter = None
        assert seen == [dv(7.0)]
        await fastpath.write_values(plain.aspace,
                                    [(plain.nodes[4], dv(1.0, status=ua.StatusCodes.BadNoData))])
        stored = plain.aspace.read_attribute_value(plain.nodes[4], ua.AttributeIds.Value)
        assert stored.Value == ua.Variant(None, ua.VariantType.Null)  # asyncua's rule


@MODULE_LOOP
class TestOtherServersUntouched:
    async def test_install_is_per_address_space(self, plain: Plain) -> None:
        """Installing on one server leaves asyncua's classes as they were."""
        fastpath.install(plain.aspace)
        other = AddressSpace()
        assert not fastpath.installed(other)
        assert other.add_datachange_callback.__func__ is AddressSpace.add_datachange_callback  # type: ignore[attr-defined]
        assert "datachange_callback" not in vars(InternalSubscription)
        assert InternalSubscription._pop_triggered_datachanges.__qualname__.startswith(
            "InternalSubscription.")


class TestEncoding:
    """``encode_data_changes`` writes what asyncua's encoder writes, byte for byte."""

    @pytest.mark.parametrize("value", [
        pytest.param(dv(1.5), id="double"),
        pytest.param(ua.DataValue(ua.Variant(3, DOUBLE), ua.StatusCode(), NOW, NOW),
                     id="int-as-double"),
        pytest.param(ua.DataValue(ua.Variant(-7, ua.VariantType.Int32), ua.StatusCode(), NOW, NOW),
                     id="int32"),
        pytest.param(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean),
                                  SourceTimestamp=NOW), id="boolean-source-only"),
        pytest.param(ua.DataValue(ua.Variant("ä b", ua.VariantType.String), ua.StatusCode(),
                                  NOW, NOW + timedelta(microseconds=1)), id="string"),
        pytest.param(ua.DataValue(ua.Variant([1.0, 2.0], DOUBLE), ua.StatusCode(), NOW, NOW),
                     id="array"),
        pytest.param(ua.DataValue(ua.Variant(2.5, ua.VariantType.Float), ua.StatusCode(
            ua.StatusCodes.UncertainLastUsableValue), NOW, NOW, 5, 6), id="float-picoseconds"),
        pytest.param(ua.DataValue(ua.Variant(None, ua.VariantType.Null),
                                  ua.StatusCode(ua.StatusCodes.BadNoData)), id="bad-null"),
        pytest.param(ua.DataValue(ua.Variant(1.0, DOUBLE), None, datetime(2026, 1, 1), None),
                     id="naive-no-status"),
        pytest.param(ua.DataValue(ua.Variant(2**40, ua.VariantType.Int64)), id="int64-bare"),
        pytest.param(ua.DataValue(ua.Variant(ua.LocalizedText("x"), ua.VariantType.LocalizedText)),
                     id="localized-text"),
    ])
    def test_item(self, value: ua.DataValue) -> None:
        """One item of each kind a twin or asyncua may write."""
        item = ua.MonitoredItemNotification(ClientHandle=12345, Value=value)
        assert fastpath.encode_item(item) == struct_to_binary(item)
        assert fastpath.encode_value(12345, value) == struct_to_binary(item)

    def test_notification(self) -> None:
        """A whole DataChangeNotification, sent as an ExtensionObject, is the bytes
        asyncua sends for the notification object."""
        items = [ua.MonitoredItemNotification(ClientHandle=i, Value=dv(i * 0.5))
                 for i in range(50)]
        mixed: list[Any] = [fastpath.encode_item(x) if i % 2 else x for i, x in enumerate(items)]
        body = fastpath.encode_data_changes(mixed)
        assert body == struct_to_binary(ua.DataChangeNotification(MonitoredItems=items))
        ours = ua.ExtensionObject(TypeId=fastpath._DATACHANGE_TYPEID, Body=body)
        assert extensionobject_to_binary(ours) == extensionobject_to_binary(
            ua.DataChangeNotification(MonitoredItems=items))


class TestDataValue:
    @pytest.mark.parametrize(("value", "vtype"), [
        (1.25, DOUBLE), (7, ua.VariantType.Int32), (False, ua.VariantType.Boolean),
        ("text", ua.VariantType.String), ([1.0, 2.0], DOUBLE), (None, ua.VariantType.String)])
    def test_as_constructed(self, value: Any, vtype: ua.VariantType) -> None:
        """``data_value`` equals (and encodes as) what asyncua's constructors build."""
        built = fastpath.data_value(value, vtype, NOW)
        reference = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=NOW,
                                 ServerTimestamp=NOW)
        assert built == reference
        assert struct_to_binary(built) == struct_to_binary(reference)
        for name in fastpath._DATAVALUE_SLOTS:
            assert getattr(built, name) == getattr(reference, name)

    def test_direct_build_in_use(self) -> None:
        """asyncua's DataValue and Variant still have the fields the direct build sets
        (if this fails after an upgrade, update ``_DATAVALUE_SLOTS`` / ``_VARIANT_SLOTS``
        to the new fields and check ``data_value``)."""
        assert fastpath.DIRECT_BUILD
        assert [f.name for f in dataclasses.fields(ua.DataValue)] == list(
            fastpath._DATAVALUE_SLOTS)
        assert [f.name for f in dataclasses.fields(ua.Variant)] == list(fastpath._VARIANT_SLOTS)


class TestAsyncuaInternals:
    """What fastpath reads or replaces in asyncua 2.1; each a reason to re-check the
    module when it fails."""

    def test_monitored_item_service(self) -> None:
        """The callback asyncua registers, and the members our _Watch uses."""
        source = inspect.getsource(MonitoredItemService._create_data_change_monitored_item)
        assert "add_datachange_callback(" in source and "self.datachange_callback" in source
        assert fastpath._ORIGINAL_CALLBACK is MonitoredItemService.datachange_callback
        callback = inspect.getsource(MonitoredItemService.datachange_callback)
        for used in ("_monitored_datachange[handle]", "_monitored_items[mid]",
                     "MonitoringMode.Disabled", "set_current_datavalue",
                     "_is_data_changed", "_is_deadband_exceeded", "DataChangeTrigger.StatusValue",
                     "enqueue_datachange_event(mid, event, mdata.queue_size)",
                     "trigger_statuschange(error)"):
            assert used in callback, used
        data, values = MonitoredItemData(), MonitoredItemValues()
        for name in ("client_handle", "mode", "filter", "mvalue", "queue_size"):
            assert hasattr(data, name), name
        for name in ("current_dvalue", "old_dvalue"):
            assert hasattr(values, name), name

    def test_internal_subscription(self) -> None:
        """The queue our _Watch fills and the pop our encoder replaces."""
        enqueue = inspect.getsource(InternalSubscription._enqueue_event)
        for used in ("queue[mid] = [eventdata]", "await self._trigger_publish()",
                     "queue[mid].pop(0)", "queue[mid].append(eventdata)"):
            assert used in enqueue, used
        pop = inspect.getsource(InternalSubscription._pop_publish_result)
        assert "self._pop_triggered_datachanges(result)" in pop
        assert "_triggered_datachanges" in inspect.getsource(InternalSubscription.__init__)

    def test_subscription_loop(self) -> None:
        """Its publishing loop calls the instance's publish_results (which
        ``_publish_around_ticks`` replaces on the instance)."""
        loop = inspect.getsource(InternalSubscription._subscription_loop)
        assert loop.count("await self.publish_results()") >= 1
        assert "pub_request_callback" in inspect.getsource(InternalSubscription.__init__)

    def test_address_space(self) -> None:
        """write_attribute_value's steps that write_values repeats."""
        source = inspect.getsource(AddressSpace.write_attribute_value)
        for used in ("self._nodes.get(nodeid", "value_setter", "attval.value = value",
                     "attval.value_callback = None", "datachange_callbacks.items()",
                     "await v(k, value)", "is_bad()"):
            assert used in source, used
        attval = AttributeValue(ua.DataValue())
        for name in ("value", "value_callback", "value_setter", "datachange_callbacks"):
            assert hasattr(attval, name), name


@MODULE_LOOP
class TestThroughAClient:
    async def test_publishes_ask_the_tick_schedule(self, plain: Plain) -> None:
        """With a tick schedule, a client subscription's publishes go through
        ``Ticks.clear`` with the time the previous publish took, and still arrive."""
        asked: list[float] = []

        class Recording(Ticks):
            async def clear(self, seconds: float, patience: float = 0.05) -> None:
                asked.append(seconds)
                await super().clear(seconds, patience)

        fastpath.uninstall(plain.aspace)
        fastpath.install(plain.aspace, Recording())
        port = plain.server.bserver._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        queue: asyncio.Queue[Any] = asyncio.Queue()

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                queue.put_nowait(val)

        nodeid = plain.nodes[1]
        try:
            async with Client(f"opc.tcp://127.0.0.1:{port}/fastpath", timeout=10) as client:
                sub = await client.create_subscription(20, Handler())
                await sub.subscribe_data_change(client.get_node(nodeid))
                await asyncio.wait_for(queue.get(), 5)  # the initial value
                for k in range(1, 4):
                    value = fastpath.data_value(k * 2.5, DOUBLE, NOW)
                    await fastpath.write_values(plain.aspace, [(nodeid, value)])
                    assert await asyncio.wait_for(queue.get(), 5) == k * 2.5
        finally:
            fastpath.uninstall(plain.aspace)
        assert len(asked) >= 4 and max(asked) > 0.0  # a publish's own duration

    async def test_client_receives_values(self, plain: Plain) -> None:
        """A real client subscribed to installed items receives what write_values
        writes, decoded from our encoding, with 0 ms and 50 ms publishing intervals."""
        fastpath.install(plain.aspace)
        port = plain.server.bserver._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        got: dict[int, asyncio.Queue[tuple[Any, Any]]] = {0: asyncio.Queue(), 50: asyncio.Queue()}

        class Handler:
            def __init__(self, queue: asyncio.Queue[tuple[Any, Any]]) -> None:
                self.queue = queue

            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                self.queue.put_nowait((val, data.monitored_item.Value.SourceTimestamp))

        nodeid = plain.nodes[3]
        async with Client(f"opc.tcp://127.0.0.1:{port}/fastpath", timeout=10) as client:
            for interval, queue in got.items():
                sub = await client.create_subscription(interval, Handler(queue))
                await sub.subscribe_data_change(client.get_node(nodeid))
            for queue in got.values():
                await asyncio.wait_for(queue.get(), 5)  # the initial value
            for k in range(1, 4):
                when = NOW + timedelta(seconds=k)
                await fastpath.write_values(plain.aspace,
                                            [(nodeid, fastpath.data_value(k * 1.5, DOUBLE, when))])
                for queue in got.values():
                    assert await asyncio.wait_for(queue.get(), 5) == (k * 1.5, when)
