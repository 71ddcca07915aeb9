"""The limits ServerCapabilities advertise are the ones enforced (issue #15): a request
with more operations than ``max_nodes_per_request`` (the OperationLimits) is refused
whole with BadTooManyOperations before any of it runs, one at the limit is served;
the server-wide subscription and monitored-item limits hold across client sessions,
and a queue size is revised to MaxMonitoredItemsQueueSize."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.security.conftest import ENDPOINT, MODULE_LOOP, Secured, secured_server
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig

pytestmark = MODULE_LOOP

LIMIT = 5


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[Client, Secured]]:
    config = ServerConfig(endpoint=ENDPOINT,
                          security=SecurityConfig(policies=("None",), anonymous="admin"),
                          limits=LimitsConfig(max_nodes_per_request=LIMIT, max_subscriptions=3,
                                              max_monitored_items=12,
                                              max_monitored_item_queue_size=50))
    async with secured_server(config, tmp_path_factory.mktemp("state"), ("a",)) as srv, \
            Client(srv.url, timeout=10) as connected:
        yield connected, srv


def _variable(secured: Secured) -> ua.NodeId:
    return ua.NodeId("a", secured.ns)


async def _read(c: Client, s: Secured, n: int) -> Any:
    return await c.read_values([c.get_node(_variable(s))] * n)


async def _write(c: Client, s: Secured, n: int) -> Any:
    return await c.write_values([c.get_node(_variable(s))] * n, [1.0] * n)


async def _browse(c: Client, s: Secured, n: int) -> Any:
    description = ua.BrowseDescription(NodeId=ua.NodeId(ua.ObjectIds.ObjectsFolder),
                                       ResultMask=ua.BrowseResultMask.All)
    return await c.uaclient.browse(ua.BrowseParameters(
        View=ua.ViewDescription(ViewId=ua.NodeId("a view", s.ns)),  # (a String NodeId)
        NodesToBrowse=[description] * n))


async def _call(c: Client, s: Secured, n: int) -> Any:
    call = ua.CallMethodRequest(ObjectId=ua.NodeId(ua.ObjectIds.Server),
                                MethodId=ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems),
                                InputArguments=[ua.Variant(0, ua.VariantType.UInt32)])
    return await c.uaclient.call([call] * n)


async def _monitor(c: Client, s: Secured, n: int) -> Any:
    sub = await c.create_subscription(100, None)
    try:
        return await sub.subscribe_data_change([c.get_node(_variable(s))] * n)
    finally:
        await sub.delete()


@pytest.mark.parametrize("service", [
    pytest.param(_read, id="Read"), pytest.param(_write, id="Write"),
    pytest.param(_browse, id="Browse"), pytest.param(_call, id="Call"),
    pytest.param(_monitor, id="CreateMonitoredItems"),
])
async def test_over_the_limit_is_refused_whole(
        client: tuple[Client, Secured],
        service: Callable[[Client, Secured, int], Awaitable[Any]]) -> None:
    """LIMIT operations in one request are served; LIMIT + 1 get BadTooManyOperations."""
    c, secured = client
    assert len(await service(c, secured, LIMIT)) == LIMIT
    with pytest.raises(ua.uaerrors.BadTooManyOperations):
        await service(c, secured, LIMIT + 1)
    assert await c.get_node(_variable(secured)).read_value() in (0.0, 1.0)  # still served


async def test_server_wide_limits_across_sessions(client: tuple[Client, Secured]) -> None:
    """MaxSubscriptions (3) and MaxMonitoredItems (12) count every client session's."""
    c, secured = client
    node = c.get_node(_variable(secured))
    async with Client(secured.url, timeout=10) as other:
        mine = [await c.create_subscription(100, None) for _ in range(2)]
        theirs = await other.create_subscription(100, None)
        with pytest.raises(ua.uaerrors.BadTooManySubscriptions):
            await other.create_subscription(100, None)
        await mine[0].subscribe_data_change([node] * 5)
        await mine[1].subscribe_data_change([node] * 5)
        await theirs.subscribe_data_change([node] * 2)
        with pytest.raises(ua.uaerrors.BadTooManyMonitoredItems):
            await theirs.subscribe_data_change([other.get_node(_variable(secured))])
        for sub in (*mine, theirs):
            await sub.delete()


async def test_queue_size_revised(client: tuple[Client, Secured]) -> None:
    """A queue of a million is revised to MaxMonitoredItemsQueueSize (50)."""
    c, secured = client
    sub = await c.create_subscription(100, None)
    try:
        parameters = ua.MonitoringParameters(ClientHandle=1, SamplingInterval=100,
                                             QueueSize=1_000_000, DiscardOldest=True)
        (result,) = await c.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
            SubscriptionId=sub.subscription_id,
            TimestampsToReturn=ua.TimestampsToReturn.Both,
            ItemsToCreate=[ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=_variable(secured),
                                             AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=parameters)]))
        assert result.StatusCode.is_good() and result.RevisedQueueSize == 50
    finally:
        await sub.delete()
