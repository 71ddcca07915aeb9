"""Monitored items through a real asyncua client against a whole daemon: items that
outlive their node (DeleteSession, CreateSession again, ReloadConfig restarting a
session), sampling intervals that are honoured and notifications that are really
throttled, and PercentDeadband over a variable's EURange."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua
from asyncua.common.subscription import Subscription

from tests.engine.conftest import component, twin
from tests.opcua.conftest import MODULE_LOOP, PLANT, serve, unserve
from tests.runtime.models import Echo
from twin_server.engine.session import SessionSettings
from twin_server.engine.twin import TwinDefinition
from twin_server.models.sources import Sine
from twin_server.opcua.patches import monitoring
from twin_server.opcua.server import NAMESPACE_URI, OpcUaServer
from twin_server.runtime import HostedSession, LocalHost
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import Daemon
from twin_server.runtime.sinks import Pacer

pytestmark = MODULE_LOOP

CONFIG = PLANT + """
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
state_dir = "{state}"
workers = 0
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.main]
twin = "plant"
publish_rate = 20.0
autostart = true
{main}
"""

GONE = ua.StatusCodes.BadNodeIdUnknown


def config(state: Path, main: str = "") -> str:
    return CONFIG.replace("{state}", str(state)).replace("{main}", main)


class Feed:
    """A subscription handler: every DataValue each node was notified, awaitable."""

    def __init__(self) -> None:
        self.values: dict[str, list[ua.DataValue]] = collections.defaultdict(list)
        self._changed = asyncio.Event()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values[str(node.nodeid.Identifier)].append(data.monitored_item.Value)
        self._changed.set()

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    def statuses(self, path: str) -> list[int]:
        return [dv.StatusCode.value for dv in self.values[path]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    folder = tmp_path_factory.mktemp("subscriptions")
    path = folder / "plant.toml"
    path.write_text(config(folder))
    daemon = Daemon(load_config(path))
    runner = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.wait_ready(), 30)
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)


@pytest_asyncio.fixture(loop_scope="module")
async def client(daemon: Daemon) -> AsyncIterator[tuple[Client, int]]:
    try:
        async with Client(daemon.endpoint_url, timeout=10) as connected:
            yield connected, await connected.get_namespace_index(NAMESPACE_URI)
    finally:
        for name in list(daemon.manager.sessions):
            if daemon.manager.origin(name) == "client":
                await daemon.delete_session(name)


async def call(client: Client, ns: int, method: str, *args: str) -> Any:
    root = client.get_node(ua.NodeId("TwinServer", ns))
    return await root.call_method(ua.NodeId(method, ns), *args)


async def session_call(client: Client, ns: int, session: str, method: str) -> Any:
    node = client.get_node(ua.NodeId(f"Sessions.{session}", ns))
    return await node.call_method(ua.NodeId(f"Sessions.{session}.{method}", ns))


def _never_awaited(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


class TestItemsOutliveTheirNode:
    async def test_deleted_session_reports_bad_node_id_unknown(
            self, client: tuple[Client, int]) -> None:
        """Items on a deleted session's nodes get a BadNodeIdUnknown value, no warning."""
        ua_client, ns = client
        await call(ua_client, ns, "CreateSession", "plant", "doomed", "")
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        paths = ["Sessions.doomed.SimTime", "Sessions.doomed.Components.tank.Outputs.level"]
        await sub.subscribe_data_change([ua_client.get_node(ua.NodeId(p, ns)) for p in paths])
        await feed.until(lambda: all(feed.values[p] for p in paths))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await call(ua_client, ns, "DeleteSession", "doomed")
            await feed.until(lambda: all(GONE in feed.statuses(p) for p in paths))
            gc.collect()
        assert not _never_awaited(caught)
        for path in paths:
            last = feed.values[path][-1]
            assert last.StatusCode.value == GONE and (last.Value is None
                                                      or last.Value.Value is None)

    async def test_session_created_again_feeds_old_items(
            self, client: tuple[Client, int]) -> None:
        """An item made before DeleteSession gets the new session's values after a
        CreateSession of the same name, Good, as they change."""
        ua_client, ns = client
        await call(ua_client, ns, "CreateSession", "plant", "again", "")
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        path = "Sessions.again.SimTime"
        await sub.subscribe_data_change(ua_client.get_node(ua.NodeId(path, ns)))
        await feed.until(lambda: bool(feed.values[path]))
        await call(ua_client, ns, "DeleteSession", "again")
        await feed.until(lambda: GONE in feed.statuses(path))
        await call(ua_client, ns, "CreateSession", "plant", "again", "")
        await session_call(ua_client, ns, "again", "Start")
        gone = feed.statuses(path).index(GONE)

        def running() -> bool:
            after = [dv for dv in feed.values[path][gone + 1:] if dv.StatusCode.is_good()]
            return len(after) >= 3 and after[-1].Value.Value > after[0].Value.Value

        await feed.until(running)

    async def test_reload_restart_feeds_old_items(self, daemon: Daemon,
                                                   client: tuple[Client, int]) -> None:
        """ReloadConfig restarting a changed session under the same NodeIds keeps
        feeding the items that watched the old one."""
        ua_client, ns = client
        assert daemon.loaded.path is not None
        state = Path(daemon.loaded.config.server.state_dir)
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        path = "Sessions.main.SimTime"
        await sub.subscribe_data_change(ua_client.get_node(ua.NodeId(path, ns)))
        await feed.until(lambda: len(feed.values[path]) >= 3)
        daemon.loaded.path.write_text(config(state, "parameters = { tank = { area = 0.6 } }"))
        try:
            summary = await call(ua_client, ns, "ReloadConfig")
            assert "main" in summary and "restarted" in summary, summary
            await feed.until(lambda: GONE in feed.statuses(path))
            gone = feed.statuses(path).index(GONE)
            await feed.until(lambda: sum(dv.StatusCode.is_good()
                                         for dv in feed.values[path][gone:]) >= 3)
        finally:
            daemon.loaded.path.write_text(config(state))
            await call(ua_client, ns, "ReloadConfig")

    async def test_items_deleted_meanwhile_are_forgotten(
            self, daemon: Daemon, client: tuple[Client, int]) -> None:
        """An item its client deletes while its node is gone is not kept for its return."""
        ua_client, ns = client
        assert daemon.server is not None
        aspace = daemon.server.asyncua.iserver.aspace
        await call(ua_client, ns, "CreateSession", "plant", "brief", "")
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        path = "Sessions.brief.StepCount"
        handle = await sub.subscribe_data_change(ua_client.get_node(ua.NodeId(path, ns)))
        await feed.until(lambda: bool(feed.values[path]))
        before = monitoring.orphaned(aspace)
        await call(ua_client, ns, "DeleteSession", "brief")
        await feed.until(lambda: GONE in feed.statuses(path))
        assert monitoring.orphaned(aspace) == before + 1
        await sub.unsubscribe(handle)
        assert monitoring.orphaned(aspace) == before
        await sub.delete()


async def created(sub: Subscription, requests: list[ua.MonitoredItemCreateRequest]
                  ) -> list[ua.MonitoredItemCreateResult]:
    """``sub.create_monitored_items(requests)``, answered with the server's results."""
    results: list[ua.MonitoredItemCreateResult] = []
    original = sub.server.create_monitored_items

    async def capture(params: ua.CreateMonitoredItemsParameters) -> Any:
        answer = await original(params)
        results.extend(answer)
        return answer

    sub.server.create_monitored_items = capture  # type: ignore[method-assign]
    try:
        await sub.create_monitored_items(requests)
    finally:
        del sub.server.create_monitored_items
    return results


def request(node: Node, interval: float, flt: ua.DataChangeFilter | None = None,
            handle: int = 0) -> ua.MonitoredItemCreateRequest:
    parameters = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=interval,
                                         QueueSize=1, DiscardOldest=True, Filter=flt)
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=parameters)


def deadband(kind: ua.DeadbandType, value: float) -> ua.DataChangeFilter:
    return ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                               DeadbandType=kind, DeadbandValue=value)


class TestSamplingInterval:
    @pytest.mark.parametrize(("requested", "revised"), [
        pytest.param(1000.0, 1000.0, id="honoured"),
        pytest.param(0.0, 50.0, id="fastest-is-the-publish-period"),
        pytest.param(120.0, 150.0, id="a-whole-number-of-periods"),
        pytest.param(-1.0, 100.0, id="publishing-interval"),
    ])
    async def test_revised(self, client: tuple[Client, int], requested: float,
                           revised: float) -> None:
        """A requested interval is revised only to what the session's publish rate
        (20 Hz: 50 ms) can give."""
        ua_client, ns = client
        sub = await ua_client.create_subscription(100, Feed())
        node = ua_client.get_node(ua.NodeId("Sessions.main.SimTime", ns))
        (result,) = await created(sub, [request(node, requested, handle=1)])
        assert result.StatusCode.is_good()
        assert result.RevisedSamplingInterval == pytest.approx(revised)
        assert await node.read_attribute(ua.AttributeIds.MinimumSamplingInterval) \
            and (await node.read_attribute(
                ua.AttributeIds.MinimumSamplingInterval)).Value.Value == pytest.approx(50.0)

    async def test_modify_revises(self, client: tuple[Client, int]) -> None:
        """ModifyMonitoredItems revises the new interval the same way."""
        ua_client, ns = client
        sub = await ua_client.create_subscription(100, Feed())
        handle = await sub.subscribe_data_change(
            ua_client.get_node(ua.NodeId("Sessions.main.SimTime", ns)), sampling_interval=0)
        (result,) = await sub.modify_monitored_item(handle, 480.0)
        assert result.StatusCode.is_good()
        assert result.RevisedSamplingInterval == pytest.approx(500.0)

    async def test_notifications_are_throttled(self, client: tuple[Client, int]) -> None:
        """An item sampled every 1,000 ms gets about one notification a second, the
        second a second after its first, while one at the publish period gets every
        change."""
        ua_client, ns = client
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        fast = ua_client.get_node(ua.NodeId("Sessions.main.SimTime", ns))
        slow = ua_client.get_node(ua.NodeId("Sessions.main.Components.tank.Outputs.level", ns))
        await sub.subscribe_data_change(fast, sampling_interval=0)
        await sub.subscribe_data_change(slow, sampling_interval=1000)
        await feed.until(lambda: bool(feed.values[str(slow.nodeid.Identifier)]))
        started = time.monotonic()
        await asyncio.sleep(3.0)
        elapsed = time.monotonic() - started
        fast_count = len(feed.values[str(fast.nodeid.Identifier)])
        slow_values = feed.values[str(slow.nodeid.Identifier)]
        assert fast_count >= 8 * elapsed, fast_count  # ~20 a second
        assert 2 <= len(slow_values) <= elapsed + 2, [dv.SourceTimestamp for dv in slow_values]
        stamps = [dv.SourceTimestamp for dv in slow_values]  # (the first too: #15)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        assert all(gap >= 0.9 for gap in gaps), gaps

    async def test_last_change_is_sampled(self, client: tuple[Client, int]) -> None:
        """A value that changed between two samples is reported at the next one, even
        when nothing changes after it."""
        ua_client, ns = client
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        node = ua_client.get_node(ua.NodeId("Sessions.main.SimTime", ns))
        path = str(node.nodeid.Identifier)
        await sub.subscribe_data_change(node, sampling_interval=2000)
        await feed.until(lambda: bool(feed.values[path]))
        await asyncio.sleep(0.3)
        await session_call(ua_client, ns, "main", "Suspend")
        try:
            final = await node.read_value()
            await feed.until(lambda: feed.values[path][-1].Value.Value == final, timeout=5)
        finally:
            await session_call(ua_client, ns, "main", "Resume")


# -- deadbands: a session of the OPC UA server alone, a sine into an input with an EURange


def wave() -> TwinDefinition:
    return twin("wave", component("sine", Sine, parameters={"amplitude": 50.0,
                                                            "frequency": 0.5}),
                component("echo", Echo), connections=("sine.output -> echo.u",))


@pytest_asyncio.fixture(loop_scope="module")
async def waving(server: OpcUaServer, host: LocalHost) -> AsyncIterator[tuple[Client, int]]:
    """A running session ``wave`` (20 Hz publishing) and a client of the server."""
    settings = SessionSettings(step_size=0.01, publish_rate=20.0)
    hosted = HostedSession(host, "wave")
    pacer = Pacer(hosted, (server.publisher,))
    session = await serve(server, host, "wave", settings, twin=wave(), pacer=pacer)
    session.start()
    tasks = [asyncio.create_task(host.clock("wave").run()), asyncio.create_task(pacer.run()),
             asyncio.create_task(server.publish_forever())]
    try:
        async with Client(server.endpoint_url, timeout=10) as ua_client:
            yield ua_client, await ua_client.get_namespace_index(NAMESPACE_URI)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await unserve(server, host, "wave")


U = "Sessions.wave.Components.echo.Inputs.u"


class TestDeadband:
    async def test_percent_over_eurange(self, waving: tuple[Client, int]) -> None:
        """A 10 % PercentDeadband on an input of EURange -100..100 reports a value only
        when it is more than 20 from the one reported last."""
        ua_client, ns = waving
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        node = ua_client.get_node(ua.NodeId(U, ns))
        (result,) = await created(sub, [request(node, 0, deadband(ua.DeadbandType.Percent, 10),
                                                handle=101)])
        assert result.StatusCode.is_good(), result.StatusCode
        await feed.until(lambda: len(feed.values[U]) >= 6, timeout=15)
        values = [dv.Value.Value for dv in feed.values[U]]
        assert all(abs(b - a) > 20.0 for a, b in itertools.pairwise(values)), values

    async def test_absolute_against_last_reported(self, waving: tuple[Client, int]) -> None:
        """An AbsoluteDeadband compares with the value reported last, not the previous
        sample (each publish moves the sine less than the deadband)."""
        ua_client, ns = waving
        feed = Feed()
        sub = await ua_client.create_subscription(50, feed)
        node = ua_client.get_node(ua.NodeId(U, ns))
        await sub.deadband_monitor(node, 30.0, ua.DeadbandType.Absolute)
        await feed.until(lambda: len(feed.values[U]) >= 4, timeout=15)
        values = [dv.Value.Value for dv in feed.values[U]]
        assert all(abs(b - a) > 30.0 for a, b in itertools.pairwise(values)), values

    @pytest.mark.parametrize(("path", "kind", "value", "status"), [
        pytest.param("Sessions.wave.SimTime", ua.DeadbandType.Percent, 10.0,
                     "BadDeadbandFilterInvalid", id="percent-without-finite-eurange"),
        pytest.param("Sessions.wave.StepCount", ua.DeadbandType.Percent, 10.0,
                     "BadDeadbandFilterInvalid", id="percent-without-eurange"),
        pytest.param(U, ua.DeadbandType.Percent, 150.0, "BadDeadbandFilterInvalid",
                     id="percent-above-100"),
        pytest.param(U, ua.DeadbandType.Absolute, -1.0, "BadDeadbandFilterInvalid",
                     id="negative"),
        pytest.param("Sessions.wave.State", ua.DeadbandType.Absolute, 1.0,
                     "BadFilterNotAllowed", id="not-numeric"),
    ])
    async def test_refused(self, waving: tuple[Client, int], path: str,
                           kind: ua.DeadbandType, value: float, status: str) -> None:
        """A deadband the node cannot take is refused for that item alone; the other
        item of the request is created."""
        ua_client, ns = waving
        sub = await ua_client.create_subscription(100, Feed())
        bad = request(ua_client.get_node(ua.NodeId(path, ns)), 0, deadband(kind, value),
                      handle=201)
        good = request(ua_client.get_node(ua.NodeId(U, ns)), 0, handle=202)
        refused, accepted = await created(sub, [bad, good])
        assert refused.StatusCode.name == status
        assert accepted.StatusCode.is_good()
