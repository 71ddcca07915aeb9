"""The publisher: values reach subscribed clients, only changed ones are written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncua import ua

from tests.opcua.conftest import MODULE_LOOP, Served, serve, unserve
from twin_server.engine.session import SessionSettings
from twin_server.opcua.tree import scalar_values
from twin_server.runtime import LocalHost
from twin_server.runtime.clock import Ticks

pytestmark = MODULE_LOOP


class _Changes:
    """A subscription handler that queues every data change."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.put_nowait(val)


class TestSubscription:
    async def test_output_changes_while_running(self, running: Served) -> None:
        """A client subscribed to an output sees it change while the session runs."""
        handler = _Changes()
        subscription = await running.client.create_subscription(20, handler)
        try:
            await subscription.subscribe_data_change(
                running.var("Components.controller.Outputs.output"))
            first = await asyncio.wait_for(handler.values.get(), 5)
            await running.var("").call_method(running.var("Start").nodeid)
            seen = {first}
            async with asyncio.timeout(10):
                while len(seen) < 3:
                    seen.add(await handler.values.get())
        finally:
            await subscription.delete()

    async def test_diagnostics_follow_the_clock(self, running: Served) -> None:
        """Diagnostics.Ticks and StepCount advance while the clock runs the session."""
        running.session.start()
        ticks = running.var("Diagnostics.Ticks")
        async with asyncio.timeout(10):
            while await ticks.read_value() < 10:
                await asyncio.sleep(0.05)
        assert await running.var("StepCount").read_value() >= 10
        assert await running.var("State").read_value() == "Running"

    async def test_values_carry_timestamps(self, running: Served) -> None:
        """Published values carry a source and a server timestamp."""
        running.session.start()
        node = running.var("SimTime")
        async with asyncio.timeout(10):
            while await node.read_value() == 0.0:
                await asyncio.sleep(0.05)
        dv = await node.read_data_value()
        assert dv.SourceTimestamp is not None
        assert dv.ServerTimestamp is not None


class TestChangedOnly:
    async def test_only_changed_values_are_written(self, served: Served) -> None:
        """A publish writes exactly the values that changed since the previous one."""
        session, server = served.session, served.server
        assert await server.publish("tank") == 0  # add_session published everything
        values_before = session.values()
        hosted = served.hosted
        scalars_before = scalar_values(hosted.frame(), session.step_size, served.clock.statistics())
        session.step(1)
        values_after = session.values()
        scalars_after = scalar_values(hosted.frame(), session.step_size, served.clock.statistics())
        expected = sum(values_before[k] != v for k, v in values_after.items()) + sum(
            a != b for a, b in zip(scalars_before, scalars_after, strict=True))
        published = server.statistics().values_published
        assert await server.publish("tank") == expected
        assert server.statistics().values_published - published == expected
        assert 0 < expected < len(values_after) + len(scalars_after)

    async def test_unchanged_session_is_skipped(self, served: Served) -> None:
        """A session whose version did not move writes nothing and counts a skipped cycle."""
        server = served.server
        before = server.statistics().publisher
        assert await server.publish("tank") == 0
        after = server.statistics().publisher
        assert after.publish_cycles - before.publish_cycles == 1
        assert after.skipped_cycles - before.skipped_cycles == 1

    async def test_state_change_without_version(self, served: Served) -> None:
        """State is compared on every publish, so a bare state change still shows."""
        served.session.start()
        await served.server.publish("tank")
        assert await served.var("State").read_value() == "Running"

    async def test_client_write_is_not_republished(self, served: Served) -> None:
        """A value a client wrote is already in its node: the next publish skips it."""
        await served.var("Components.tank.Parameters.area").write_value(
            ua.DataValue(ua.Variant(0.7, ua.VariantType.Double)))
        assert await served.server.publish("tank") == 0


    async def test_client_write_during_a_publish_wins(self, served: Served,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """A publish that pauses between chunks leaves alone a variable a client
        wrote meanwhile: the node keeps the client's value, not the older one the
        publish read before the write."""
        from twin_server.opcua import publisher as publisher_module
        from twin_server.runtime.clock import Ticks

        server, session = served.server, served.session
        pub = server._publisher
        assert pub is not None
        target = pub.target("tank")
        keys = [key for key, _, _ in target.nodes.variables]
        area = next(i for i, k in enumerate(keys) if k.name == "area")
        assert area > 0
        monkeypatch.setattr(publisher_module, "CHUNK", 1)
        paused, resume = asyncio.Event(), asyncio.Event()

        asked: list[float] = []

        class Held(Ticks):  # holds the publish before its second chunk
            async def clear(self, seconds: float, patience: float = 0.05) -> None:
                asked.append(seconds)
                if len(asked) == 1:  # inside the publish, before it reads the session:
                    # have it write every variable (whatever the background publisher
                    # sent meanwhile), area in a later chunk than the first
                    target.sent_values[:] = [publisher_module._UNSENT] * len(keys)
                if len(asked) == 2:
                    paused.set()
                    await resume.wait()

        monkeypatch.setattr(pub, "_ticks", Held())
        session.write(keys[area], 0.5)  # what this publish will read, and write late
        publishing = asyncio.ensure_future(server.publish("tank"))
        await asyncio.wait_for(paused.wait(), 5)
        node = served.var("Components.tank.Parameters.area")
        await node.write_value(ua.DataValue(ua.Variant(0.9, ua.VariantType.Double)))
        resume.set()
        await asyncio.wait_for(publishing, 5)
        assert session.read(keys[area]) == 0.9
        assert await node.read_value() == 0.9
        assert target.overwritten is None

    async def test_session_deleted_during_a_publish(self, served: Served,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """A publish waiting for a clock tick while its session is deleted (removed,
        then closed) stops there: no read of the closed session, no error."""
        server = served.server
        pub = server._publisher
        assert pub is not None
        host = served.hosted.host
        assert isinstance(host, LocalHost)
        doomed = await serve(server, host, "doomed")
        doomed.step(1)  # something to publish
        waiting, resume = asyncio.Event(), asyncio.Event()

        class Held(Ticks):  # holds the publish before it reads the session
            async def clear(self, seconds: float, patience: float = 0.05) -> None:
                waiting.set()
                await resume.wait()

        monkeypatch.setattr(pub, "_ticks", Held())
        publishing = asyncio.ensure_future(server.publish("doomed"))
        await asyncio.wait_for(waiting.wait(), 5)
        monkeypatch.undo()  # (remove_session flushes events, which may publish)
        await unserve(server, host, "doomed")
        resume.set()
        assert await asyncio.wait_for(publishing, 5) == 0


class TestRate:
    @pytest.fixture
    def settings(self) -> SessionSettings:
        return SessionSettings(step_size=0.01, realtime_factor=1.0, publish_rate=20.0)

    async def test_publishes_at_the_session_rate(self, running: Served) -> None:
        """publish_forever publishes a session about publish_rate times a second."""
        before = running.server.statistics().publish_cycles
        await asyncio.sleep(1.0)
        cycles = running.server.statistics().publish_cycles - before
        assert 12 <= cycles <= 25
