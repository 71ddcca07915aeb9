"""Subscriptions and forced inputs as node-opcua, an independent stack, meets them
(issue #15, items 1-3): a monitored item that outlives its session's nodes, revised
sampling intervals and throttled notifications, PercentDeadband accepted or refused
item by item, and ReleaseInput(s) and ForcedInputs through node-opcua's call and read.
node-opcua subscribes (``scripts/monitor.js``, which stays subscribed and prints each
notification); an asyncua client drives the daemon meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest_asyncio
from asyncua import Client, ua

from tests.nodeopcua import NodeOpcua
from tests.opcua.conftest import MODULE_LOOP, PLANT, Connected, message, run_daemon, s, stop_daemon
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

#: the plant, and a square wave whose duty (a tunable parameter, EURange 0..1) a
#: test writes step by step
CONFIG = PLANT + """
[twins.plant.components.pulse]
model = "square"

[server]
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.main]
twin = "plant"
publish_rate = 20.0
autostart = true
"""

DUTY = "Sessions.main.Components.pulse.Parameters.duty"

#: one item created at 0 ms, modified to 480 ms (queue 5), then to a PercentDeadband
MODIFY = """
const { main, withSession, twinNamespace } = require("./lib");
main(async (args, opcua) => withSession(args, async (session) => {
    const ns = await twinNamespace(session);
    const subscription = await session.createSubscription2({
        requestedPublishingInterval: 100, publishingEnabled: true });
    const item = await subscription.monitor(
        { nodeId: ns(args.node), attributeId: opcua.AttributeIds.Value },
        { samplingInterval: 0, queueSize: 1 }, opcua.TimestampsToReturn.Both);
    const modified = await item.modify({ samplingInterval: 480, queueSize: 5 });
    const percent = await item.modify({ samplingInterval: 0, queueSize: 1,
        filter: new opcua.DataChangeFilter({ deadbandType: opcua.DeadbandType.Percent,
                                             deadbandValue: 10 }) })
        .then((result) => result.statusCode.name, (err) => err.message);
    return { created: item.result.revisedSamplingInterval,
             modified: { status: modified.statusCode,
                         revisedSamplingInterval: modified.revisedSamplingInterval,
                         revisedQueueSize: modified.revisedQueueSize },
             percent };
}));
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def driver(daemon: Daemon) -> AsyncIterator[Connected]:
    """An asyncua client that drives the daemon; the sessions it created go after."""
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            yield Connected(daemon, client, await client.get_namespace_index(NAMESPACE_URI))
    finally:
        for name in list(daemon.manager.sessions):
            if daemon.manager.origin(name) == "client":
                await daemon.delete_session(name)


@dataclass
class Notification:
    """One notification node-opcua was given: its item's index in the request, the
    status's name, the value and its SourceTimestamp."""

    item: int
    status: str
    value: Any
    source: datetime | None


@dataclass
class Monitor:
    """What node-opcua's CreateMonitoredItems answered, and every notification since."""

    answer: dict[str, Any]
    notifications: list[Notification] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, item: int) -> list[Notification]:
        return [n for n in self.notifications if n.item == item]

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``check()``; fail with the notifications seen after ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout} s; node-opcua was notified of "
                                 f"{self.notifications[-40:]}") from None


@contextlib.asynccontextmanager
async def monitor(nodeopcua: NodeOpcua, daemon: Daemon, items: list[dict[str, Any]],
                  publishing: float = 50.0) -> AsyncIterator[Monitor]:
    """node-opcua subscribed to ``items`` (``scripts/monitor.js``) while in the block."""
    async with nodeopcua.spawn("monitor.js", endpoint=daemon.endpoint_url, items=items,
                               publishingInterval=publishing) as (process, answer):
        watching = Monitor(answer)
        assert process.stdout is not None

        async def read() -> None:
            async for line in process.stdout:  # type: ignore[union-attr]
                if line.strip():
                    out = json.loads(line)
                    stamp = out.get("sourceTimestamp")
                    watching.notifications.append(Notification(
                        out["item"], out["status"], out["value"],
                        datetime.fromisoformat(stamp) if stamp else None))
                    watching.changed.set()

        reader = asyncio.create_task(read())
        try:
            yield watching
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


class TestNodeComesBack:
    async def test_deleted_then_created_again(self, nodeopcua: NodeOpcua, daemon: Daemon,
                                              driver: Connected) -> None:
        """node-opcua's items on a deleted session get one BadNodeIdUnknown with no
        value; after CreateSession of the same name the same items deliver Good
        values again, advancing."""
        await driver.create("again")
        items = [{"node": "Sessions.again.SimTime"},
                 {"node": "Sessions.again.Components.tank.Outputs.level"}]
        async with monitor(nodeopcua, daemon, items) as seen:
            assert [i["status"] for i in seen.answer["items"]] == ["Good", "Good"]
            await seen.until(lambda: all(seen.of(i) for i in (0, 1)))
            result = await driver.server_call("DeleteSession", s("again"))
            assert result.StatusCode.is_good(), message(result)
            await seen.until(lambda: all(
                any(n.status == "BadNodeIdUnknown" for n in seen.of(i)) for i in (0, 1)))
            for i in (0, 1):
                gone = [n for n in seen.of(i) if n.status == "BadNodeIdUnknown"]
                assert len(gone) == 1 and gone[0].value is None, gone
            await driver.create("again")
            result = await driver.session_call("again", "Start")
            assert result.StatusCode.is_good(), message(result)

            def back(i: int) -> list[Notification]:
                after = seen.of(i)
                return after[[n.status for n in after].index("BadNodeIdUnknown") + 1:]

            def running() -> bool:
                times = back(0)
                return len(times) >= 3 and times[-1].value > times[0].value and bool(back(1))

            await seen.until(running)
            assert all(n.status == "Good" for i in (0, 1) for n in back(i))
            assert isinstance(back(1)[-1].value, float)


class TestSamplingInterval:
    async def test_revised_as_the_client_sees_it(self, nodeopcua: NodeOpcua,
                                                 daemon: Daemon) -> None:
        """node-opcua's CreateMonitoredItems result shows each requested interval
        revised only to what the 20 Hz session gives (whole 50 ms periods)."""
        requested = [1000.0, 0.0, 120.0, -1.0]
        items = [{"node": "Sessions.main.SimTime", "samplingInterval": r} for r in requested]
        async with monitor(nodeopcua, daemon, items, publishing=100.0) as seen:
            assert seen.answer["publishingInterval"] == 100.0
            revised = [(i["status"], i["revisedSamplingInterval"])
                       for i in seen.answer["items"]]
        assert revised == [("Good", 1000.0), ("Good", 50.0), ("Good", 150.0),
                           ("Good", 100.0)]

    async def test_modify_revises(self, nodeopcua: NodeOpcua, daemon: Daemon) -> None:
        """node-opcua's ModifyMonitoredItems gets 480 ms revised to 500 ms and the
        queue size it asked for; a PercentDeadband on SimTime (no finite EURange)
        is refused with BadDeadbandFilterInvalid."""
        out = await nodeopcua.run(MODIFY, daemon.endpoint_url, node="Sessions.main.SimTime")
        assert out["created"] == 50.0
        assert out["modified"] == {"status": "Good", "revisedSamplingInterval": 500.0,
                                   "revisedQueueSize": 5}
        assert "BadDeadbandFilterInvalid" in out["percent"]

    async def test_notifications_throttled(self, nodeopcua: NodeOpcua,
                                           daemon: Daemon) -> None:
        """A 1,000 ms item gets one notification a second, the first at its creation
        and each next 0.9 s or more after it, while a 0 ms item on the same
        subscription gets every change (20 a second)."""
        items = [{"node": "Sessions.main.SimTime", "samplingInterval": 1000.0},
                 {"node": "Sessions.main.SimTime", "samplingInterval": 0.0}]
        async with monitor(nodeopcua, daemon, items) as seen:
            await seen.until(lambda: len(seen.of(0)) >= 4, timeout=15)
            slow, fast = seen.of(0), seen.of(1)
        stamps = [n.source for n in slow]
        assert None not in stamps
        gaps = [(b - a).total_seconds()  # type: ignore[operator]
                for a, b in itertools.pairwise(stamps)]
        assert all(gap >= 0.9 for gap in gaps), gaps
        assert len(fast) >= 10 * (len(slow) - 1), (len(fast), len(slow))


class TestPercentDeadband:
    async def test_accepted_and_honoured(self, nodeopcua: NodeOpcua, daemon: Daemon,
                                         driver: Connected) -> None:
        """A 10 % PercentDeadband on the duty (EURange 0..1) reports only a value
        more than 0.1 from the one reported last."""
        node = driver.node(DUTY)
        await node.write_value(ua.Variant(0.5, ua.VariantType.Double))
        items = [{"node": DUTY, "deadband": {"type": "Percent", "value": 10.0}}]
        async with monitor(nodeopcua, daemon, items) as seen:
            assert seen.answer["items"][0]["status"] == "Good"
            await seen.until(lambda: bool(seen.of(0)))
            for value in (0.55, 0.58, 0.65, 0.7, 0.52, 0.45, 0.4):
                await node.write_value(ua.Variant(value, ua.VariantType.Double))
                async with asyncio.timeout(5):  # (published: the item has seen it)
                    while await node.read_value() != value:
                        await asyncio.sleep(0.02)
            await seen.until(lambda: seen.of(0)[-1].value == 0.4)
            await asyncio.sleep(0.3)  # (nothing else comes)
            values = [n.value for n in seen.of(0)]
        assert values == [0.5, 0.65, 0.52, 0.4]
        await node.write_value(ua.Variant(0.5, ua.VariantType.Double))

    async def test_refused_per_item(self, nodeopcua: NodeOpcua, daemon: Daemon) -> None:
        """A 10 % PercentDeadband on variables without a finite EURange is refused
        with BadDeadbandFilterInvalid, item by item (a deadband on a value that is
        not numeric with BadFilterNotAllowed); the other items of the same request
        are created and deliver values."""
        percent: dict[str, Any] = {"type": "Percent", "value": 10.0}
        items: list[dict[str, Any]] = [
            {"node": "Sessions.main.Components.controller.Inputs.setpoint", "deadband": percent},
            {"node": "Sessions.main.SimTime"},
            {"node": "Sessions.main.StepCount", "deadband": percent},
            {"node": DUTY, "deadband": percent},
            {"node": "Sessions.main.State", "deadband": {"type": "Absolute", "value": 1}}]
        async with monitor(nodeopcua, daemon, items) as seen:
            statuses = [i["status"] for i in seen.answer["items"]]
            assert statuses == ["BadDeadbandFilterInvalid", "Good",
                                "BadDeadbandFilterInvalid", "Good", "BadFilterNotAllowed"]
            await seen.until(lambda: len(seen.of(1)) >= 3 and bool(seen.of(3)))
            assert not seen.of(0) and not seen.of(2) and not seen.of(4)


class TestForcedInputs:
    async def test_release_through_node_opcua(self, nodeopcua: NodeOpcua,
                                              daemon: Daemon) -> None:
        """node-opcua's writes force two inputs, ForcedInputs reads as a String
        array naming them, ReleaseInput(Name) releases one and ReleaseInputs()
        answers the rest as a String array; ForcedInputs reads empty."""
        out = await nodeopcua.run(
            "forces.js", daemon.endpoint_url, session="main", release="tank.inflow",
            inputs={"tank.inflow": 0.01, "controller.setpoint": 1.5})
        assert out["written"] == ["Good", "Good"]
        assert out["arguments"] == {"ReleaseInput": {"inputs": ["Name"], "outputs": []},
                                    "ReleaseInputs": {"inputs": [], "outputs": ["Released"]}}
        assert out["forced"] == {"status": "Good", "dataType": "String", "arrayType": "Array",
                                 "value": ["tank.inflow", "controller.setpoint"]}
        assert out["releaseInput"]["status"] == "Good"
        assert out["afterReleaseInput"]["value"] == ["controller.setpoint"]
        released = out["releaseInputs"]
        assert released["status"] == "Good"
        assert released["outputArguments"] == [
            {"dataType": "String", "arrayType": "Array", "value": ["controller.setpoint"]}]
        assert out["afterReleaseInputs"]["status"] == "Good"
        assert out["afterReleaseInputs"]["arrayType"] == "Array"
        assert list(out["afterReleaseInputs"]["value"]) == []
