"""The daemon with history: recording, HistoryRead and a restart that resumes sessions
and run-time twins where they stopped (a real store under a temporary state_dir)."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from tests.opcua.conftest import MODULE_LOOP, PLANT, in_process, run_daemon, stop_daemon
from twin_server.engine.session import RunState, Session, SessionSettings, VarKey
from twin_server.history import HistoryStore
from twin_server.models.base import Kind
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.persistence import load_state
from twin_server.runtime.compile import parse_config

pytestmark = MODULE_LOOP

CONFIG = PLANT + """
[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
batch_interval = 0.05
snapshot_interval = 0.2

[sessions.main]
twin = "plant"
step_size = 0.01
realtime_factor = 20.0
publish_rate = 20.0

[sessions.main.history]
variables = ["tank.level", "controller.setpoint"]
"""

EXTRA = """
[twins.extra]
[twins.extra.components.tank]
model = "water_tank"
"""

LEVEL = "Sessions.main.Components.tank.Outputs.level"


async def call(client: Client, ns: int, obj: str, method: str, *args: ua.Variant) -> Any:
    result = await client.uaclient.call([ua.CallMethodRequest(
        ObjectId=ua.NodeId(obj, ns), MethodId=ua.NodeId(method, ns),
        InputArguments=list(args))])
    result[0].StatusCode.check()
    return result[0].OutputArguments


class TestDaemonHistory:
    async def test_unrecorded_write_is_in_the_event_history(self, tmp_path: Path) -> None:
        """A client forcing an input whose history is not recorded leaves a
        value_written event (Severity 200) in the session's event history."""
        daemon, task = await run_daemon(CONFIG, state_dir=tmp_path)
        try:
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index(NAMESPACE_URI)
                inflow = client.get_node(ua.NodeId(
                    "Sessions.main.Components.tank.Inputs.inflow", ns))
                await inflow.write_value(ua.Variant(0.01, ua.VariantType.Double))
                wanted = "input 'inflow' of component 'tank' forced to 0.01 by a client"
                session = client.get_node(ua.NodeId("Sessions.main", ns))
                for _ in range(50):  # the recorder's batch interval is 0.05 s
                    now = datetime.now(UTC)
                    events = await session.read_event_history(now - timedelta(minutes=1),
                                                              now)
                    found = [e for e in events if e.Message.Text == wanted]
                    if found:
                        break
                    await asyncio.sleep(0.1)
                assert found, [e.Message.Text for e in events]
                assert found[0].Severity == 200
        finally:
            await stop_daemon(daemon, task)

    async def test_record_read_and_resume_after_restart(self, tmp_path: Path) -> None:
        """Values and events are readable over HistoryRead; after a restart the config
        session resumes from where it stopped, the client session and the run-time twin
        come back."""
        daemon, task = await run_daemon(CONFIG, state_dir=tmp_path)
        try:
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index(NAMESPACE_URI)
                level = client.get_node(ua.NodeId(LEVEL, ns))
                assert (await level.read_attribute(ua.AttributeIds.Historizing)).Value.Value
                setpoint = client.get_node(ua.NodeId(
                    "Sessions.main.Components.controller.Inputs.setpoint", ns))
                await setpoint.write_value(ua.Variant(1.5, ua.VariantType.Double))
                await call(client, ns, "TwinServer", "DefineTwin",
                           ua.Variant(EXTRA, ua.VariantType.String))
                await call(client, ns, "TwinServer", "CreateSession",
                           ua.Variant("extra", ua.VariantType.String),
                           ua.Variant("mine", ua.VariantType.String),
                           ua.Variant("", ua.VariantType.String))
                await asyncio.sleep(0.6)
                now = datetime.now(UTC)
                values = await level.read_raw_history(now - timedelta(minutes=1), now)
                assert len(values) >= 5
                events = await client.get_node(ua.NodeId("Sessions.main", ns)) \
                    .read_event_history(now - timedelta(minutes=1), now)
                messages = [e.Message.Text for e in events]
                assert any("created from the config" in m for m in messages)
                assert any(m.startswith("started") for m in messages)
            main = in_process(daemon, "main")
        finally:
            await stop_daemon(daemon, task)
        stopped_at = (main.step_count,)
        async with await HistoryStore.open(tmp_path / "history.db") as store:
            written = (await store.read_raw(
                "main/Components.controller.Inputs.setpoint", 0.0, None)).samples
            assert [(s.value, s.source) for s in written][-1] == (1.5, "client")
            assert sorted(await store.load_snapshots()) == ["main", "mine"]
            assert list(await store.load_twins()) == ["extra"]
            saved = (await load_state(store)).sessions["main"]
        assert saved.step_count == stopped_at[0]  # the snapshot at stop: nothing lost
        assert saved.state is RunState.RUNNING

        again, task = await run_daemon(CONFIG, state_dir=tmp_path)
        try:
            main = in_process(again, "main")
            assert main.state is RunState.RUNNING
            assert main.step_count >= stopped_at[0]
            assert in_process(again, "mine").twin.name == "extra"
            assert again.manager.origin("mine") == "client"
            assert "extra" in again.manager.twins
        finally:
            await stop_daemon(again, task)


LIVE = PLANT + """
[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
batch_interval = 0.05

[sessions.live]
twin = "plant"
step_size = 0.01
publish_rate = 20.0

[sessions.live.history]
variables = ["tank.level"]
"""

LIVE_LEVEL = "Sessions.live.Components.tank.Outputs.level"


class _Received:
    """A subscription handler keeping (SourceTimestamp, value) of every notification."""

    def __init__(self, wanted: int) -> None:
        self.samples: list[tuple[datetime, float]] = []
        self.wanted = wanted
        self.enough = asyncio.Event()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        stamp = data.monitored_item.Value.SourceTimestamp
        self.samples.append((stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp, val))
        if len(self.samples) >= self.wanted:
            self.enough.set()


class TestLiveMatchesHistory:
    @pytest.mark.parametrize("workers", [pytest.param(0, id="in-process"),
                                         pytest.param(1, id="worker")])
    async def test_history_holds_what_subscribers_received(self, tmp_path: Path,
                                                           workers: int) -> None:
        """Over ~50 publishes, HistoryRead returns exactly the values and SourceTimestamps
        a subscriber at the publish rate received: none missing, none moved in time."""
        daemon, task = await run_daemon(LIVE + f"\n[server]\nworkers = {workers}\n",
                                        state_dir=tmp_path)
        try:
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index(NAMESPACE_URI)
                level = client.get_node(ua.NodeId(LIVE_LEVEL, ns))
                received = _Received(52)
                subscription = await client.create_subscription(
                    ua.CreateSubscriptionParameters(
                        RequestedPublishingInterval=50.0, RequestedLifetimeCount=1000,
                        RequestedMaxKeepAliveCount=10, MaxNotificationsPerPublish=0,
                        PublishingEnabled=True, Priority=0), received)
                await subscription.subscribe_data_change(level, queuesize=100,
                                                         sampling_interval=0.0)
                await asyncio.wait_for(received.enough.wait(), 15)
                await subscription.delete()
                assert daemon.store is not None
                await daemon.store.flush()
                # (the first notification is the node's value when subscribed)
                live = received.samples[1:]
                first, last = live[0][0], live[-1][0]
                stored = await level.read_raw_history(first, last, numvalues=0)
        finally:
            await stop_daemon(daemon, task)
        history = [(dv.SourceTimestamp.replace(tzinfo=UTC), dv.Value.Value) for dv in stored]
        missing = [s for s in live if s not in history]
        assert not missing, (f"{len(missing)} of {len(live)} live values are not in history "
                             f"at their SourceTimestamp: {missing[:5]}; history: {history[:5]}")
        assert history == live


FLAT_OUT = PLANT + """
[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
batch_interval = 0.05

[sessions.fast]
twin = "plant"
step_size = 0.01
realtime_factor = 0.0
publish_rate = 20.0

[sessions.fast.history]
variables = ["tank.level"]
"""

FAST_LEVEL = "Sessions.fast.Components.tank.Outputs.level"


class TestSimulatedTime:
    @pytest.mark.parametrize("workers", [pytest.param(0, id="in-process"),
                                         pytest.param(1, id="worker")])
    async def test_flat_out_session_rebuilt_in_simulated_time(self, tmp_path: Path,
                                                              workers: int) -> None:
        """A session at real-time factor 0 covers far more simulated than wall time;
        HistoryRead of a variable and of SimTime, paired by SourceTimestamp, and the
        CSV export's sim_time_s column both give each recorded level its simulated
        time, and a fresh offline session stepped to that time has the same level,
        bit for bit."""
        from twin_server.cli import main as cli_main

        daemon, task = await run_daemon(FLAT_OUT + f"\n[server]\nworkers = {workers}\n",
                                        state_dir=tmp_path)
        try:
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index(NAMESPACE_URI)
                count = client.get_node(ua.NodeId("Sessions.fast.StepCount", ns))
                started = datetime.now(UTC)
                async with asyncio.timeout(15):
                    while await count.read_value() < 20_000:  # 200 s simulated
                        await asyncio.sleep(0.05)
                await call(client, ns, "Sessions.fast", "Sessions.fast.Suspend")
                assert daemon.store is not None
                await daemon.store.flush()
                wall = datetime.now(UTC) - started
                level = client.get_node(ua.NodeId(FAST_LEVEL, ns))
                sim = client.get_node(ua.NodeId("Sessions.fast.SimTime", ns))
                assert (await sim.read_attribute(ua.AttributeIds.Historizing)).Value.Value
                levels = await level.read_raw_history(started - timedelta(seconds=5),
                                                      datetime.now(UTC), numvalues=0)
                times = await sim.read_raw_history(started - timedelta(seconds=5),
                                                   datetime.now(UTC), numvalues=0)
        finally:
            await stop_daemon(daemon, task)
        times = [dv for dv in times if dv.StatusCode.is_good()]  # (not the bounds)
        levels = [dv for dv in levels if dv.StatusCode.is_good()]
        at = {dv.SourceTimestamp: dv.Value.Value for dv in times}
        assert [dv.SourceTimestamp for dv in levels] == list(at)  # stamped alike, one each
        pairs = [(at[dv.SourceTimestamp], dv.Value.Value) for dv in levels]
        assert len(pairs) >= 5
        span = pairs[-1][0] - pairs[0][0]
        assert span >= 100.0 and span > 10 * wall.total_seconds()

        out = tmp_path / "fast.csv"
        code = await asyncio.to_thread(cli_main, [
            "history", "export", str(tmp_path / "history.db"), "--session", "fast",
            "--start", (started - timedelta(seconds=5)).isoformat(),
            "--end", datetime.now(UTC).isoformat(), "-o", str(out)])
        assert code == 0
        rows = list(csv.DictReader(out.read_text().splitlines()))
        exported = [(float(r["sim_time_s"]), float(r["Components.tank.Outputs.level"]))
                    for r in rows if r["Components.tank.Outputs.level"]]
        assert exported == pairs

        offline = Session("offline", parse_config(FLAT_OUT).twins["plant"],
                          SessionSettings(step_size=0.01))
        key = VarKey("tank", Kind.OUTPUT, "level")
        for sim_t, value in pairs:
            k = round(sim_t / 0.01)
            assert k * 0.01 == sim_t  # counted time: t = k*dt exactly
            if k > offline.step_count:
                offline.step(k - offline.step_count)
            assert offline.step_count == k
            assert offline.read(key) == value, (sim_t, value)
