"""Alarms of a session that steps in a worker process (``[server] workers = 1``), over
127.0.0.1 with an asyncua client: transitions evaluated in the worker reach the
client as Part 9 events, Acknowledge, Confirm and TimedShelve cross the pipe, and the
condition comes back with its session after the worker is killed (from the snapshot the
worker sent last); the event history holds each transition as the event that went out."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from asyncua import Client, ua

from tests.events import RunEvents
from tests.opcua.conftest import MODULE_LOOP, run_daemon, stop_daemon
from tests.opcua.test_alarms import _ACK, _CONFIRM, _SERVER, _args, _call
from twin_server.engine.session import RunState
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime import WorkerHost
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

CONFIG = """
[server]
workers = 1
session_idle_timeout = 0

[server.security]
policies = ["None"]
anonymous = "admin"

[history]
snapshot_interval = 0.2

[twins.t.components.src]
model = "constant"
parameters = { value = 0.0 }

[twins.t.alarms.Level]
variable = "src.output"
high = 1.0
high_high = 2.0
severity = 600
message = "Level high"

[sessions.a]
twin = "t"
step_size = 0.05
"""

_COMMENT = ua.NodeId(ua.ObjectIds.ConditionType_AddComment)
_TIMED_SHELVE = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_TimedShelve)
_REFRESH = ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


async def _until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


class TestInAWorker:
    async def test_life_and_a_killed_worker(self, daemon: Daemon) -> None:
        """A write makes the worker's alarm active (an event on Server); Acknowledge,
        Confirm and TimedShelve of the suspended session through the pipe are Good and
        in the worker's next periodic snapshot; killed, the worker's session comes back
        with the condition active, acknowledged, confirmed and still shelved for the
        rest of its time (a 'restored' event with a new EventId), and
        ConditionRefresh's EventId is the one AddComment takes."""
        host = daemon.host
        assert isinstance(host, WorkerHost)
        async with Client(daemon.endpoint_url, timeout=10) as c:
            ns = await c.get_namespace_index(NAMESPACE_URI)
            cond = ua.NodeId("Sessions.a.Alarms.Level", ns)
            began = datetime.now(UTC)
            events = RunEvents()
            sub = await c.create_subscription(20, events)
            base = c.get_node(ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType))
            await sub.subscribe_events(c.get_node(_SERVER), base)
            value = c.get_node(ua.NodeId("Sessions.a.Components.src.Parameters.value", ns))
            await value.write_value(ua.Variant(1.5, ua.VariantType.Double))
            (active,) = await events.wait(1)
            assert (getattr(active, "ActiveState/Id"), active.Severity) == (True, 600)
            # suspended: from here on only the alarm methods change the session
            session_node = c.get_node(ua.NodeId("Sessions.a", ns))
            await session_node.call_method(ua.NodeId("Sessions.a.Suspend", ns))
            await _until(lambda: getattr(host.recovery_snapshot("a"), "state", None)
                         is RunState.SUSPENDED)
            status = await _call(c, cond, _ACK, *_args(active.EventId, "seen"))
            assert status.is_good(), status
            acked = (await events.wait(2))[1]
            assert (getattr(acked, "AckedState/Id"), acked.Comment.Text) == (True, "seen")
            status = await _call(c, cond, _CONFIRM, *_args(acked.EventId, ""))
            assert status.is_good(), status
            confirmed = (await events.wait(3))[2]
            assert getattr(confirmed, "ConfirmedState/Id") is True
            status = await _call(c, ua.NodeId("Sessions.a.Alarms.Level.ShelvingState", ns),
                                 _TIMED_SHELVE, ua.Variant(600_000.0, ua.VariantType.Double))
            assert status.is_good(), status
            shelved = (await events.wait(4))[3]
            assert shelved.SuppressedOrShelved is True

            def held() -> bool:  # the worker's periodic snapshot has the confirmation
                snap = host.recovery_snapshot("a")
                alarms = getattr(snap, "alarms", None)
                state = None if alarms is None else alarms.states[0][1]
                return (state is not None and state.active and state.confirmed
                        and state.shelved)

            await _until(held)
            pid = host.worker_pid("a")
            os.kill(pid, signal.SIGKILL)
            restored = (await events.wait(5, timeout=20))[4]
            assert (getattr(restored, "ActiveState/Id"), getattr(restored, "AckedState/Id"),
                    getattr(restored, "ConfirmedState/Id"), restored.SuppressedOrShelved) == (
                True, True, True, True)
            assert getattr(restored, "ShelvingState/UnshelveTime") > 500_000
            assert restored.EventId != shelved.EventId
            assert host.worker_pid("a") not in (0, pid)
            acked_node = c.get_node(ua.NodeId("Sessions.a.Alarms.Level.AckedState.Id", ns))
            assert await acked_node.read_value() is True
            # a SCADA reconnecting after the crash: ConditionRefresh, then answer its event
            status = await _call(c, ua.NodeId(ua.ObjectIds.ConditionType), _REFRESH,
                                 ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
            assert status.is_good(), status
            start, refreshed, end = (await events.wait(8))[5:8]
            assert (start.EventType, end.EventType) == (  # (they pass every filter)
                ua.NodeId(ua.ObjectIds.RefreshStartEventType),
                ua.NodeId(ua.ObjectIds.RefreshEndEventType))
            assert refreshed.EventId == restored.EventId
            status = await _call(c, cond, _COMMENT, *_args(refreshed.EventId, "after crash"))
            assert status.is_good(), status
            commented = (await events.wait(9))[8]
            assert commented.Comment.Text == "after crash"
            await sub.delete()
            # the event history holds each transition as the event that went out
            assert daemon.server is not None and daemon.store is not None
            await daemon.server.flush_events()
            await daemon.store.flush()
            history = await session_node.read_event_history(
                began, datetime.now(UTC) + timedelta(seconds=1), evtypes=[base])
            assert [e.get_event_props_as_fields_dict() for e in history] == [
                e.get_event_props_as_fields_dict()
                for e in (active, acked, confirmed, shelved, restored, commented)]
