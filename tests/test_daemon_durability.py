"""The daemon's history under a real stop and a real crash: SIGTERM flushes
everything and exits 0; kill -9 loses at most about one batch interval, leaves a
sound database, and the session resumes where its last snapshot left it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asyncua import Client, ua

from twin_server.history import HistoryStore
from twin_server.persistence import load_state
from twin_server.runtime.daemon import SHUTDOWN_LIMIT

BATCH = 0.25
CONFIG = f"""
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
batch_interval = {BATCH}
snapshot_interval = 0.5

[twins.tank.components.tank]
model = "water_tank"
parameters = {{ area = 0.2, initial_level = 0.1 }}

[twins.tank.components.feed]
model = "sine"
parameters = {{ offset = 0.05, amplitude = 0.04, frequency = 0.5 }}

[twins.tank]
connections = ["feed.output -> tank.inflow"]

[sessions.main]
twin = "tank"
step_size = 0.01
realtime_factor = 5.0
publish_rate = 50.0
"""
SERIES = ("main", "Components.tank.Outputs.level")


def start(folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "twin_server", "run", str(folder / "plant.toml")],
        cwd=folder, env={**os.environ, "STATE_DIRECTORY": str(folder / "state")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, object]:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "daemon_ready":
            return dict(event)
    raise AssertionError("the daemon never became ready")


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


async def last_sample_time(db: Path) -> float:
    store = await HistoryStore.open(db)
    try:
        assert await store.integrity_check() == "ok"
        result = await store.read_raw(SERIES, time.time() + 60, 0, max_values=1)
        return result.samples[0].t
    finally:
        await store.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "plant.toml").write_text(CONFIG)
    return tmp_path


class TestStop:
    @pytest.mark.timeout(90)
    async def test_sigterm_flushes_and_exits_0(self, folder: Path) -> None:
        """After SIGTERM the last recorded sample is from the last moments, exit status 0."""
        proc = start(folder)
        try:
            await asyncio.to_thread(wait_ready, proc)
            await asyncio.sleep(1.5)
            stopped = time.time()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, SHUTDOWN_LIMIT)
            assert code == 0
        finally:
            finish(proc)
        last = await last_sample_time(folder / "state" / "history.db")
        assert stopped - last < 0.2  # nothing of the last batch interval was lost


class TestCrash:
    @pytest.mark.timeout(120)
    async def test_kill_9_loses_at_most_a_batch_and_resumes(self, folder: Path) -> None:
        """kill -9 mid-recording: integrity holds, about one batch interval is lost at
        most, and a restart resumes the session from its last snapshot."""
        proc = start(folder)
        try:
            await asyncio.to_thread(wait_ready, proc)
            await asyncio.sleep(2.0)
            killed = time.time()
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        finally:
            finish(proc)
        db = folder / "state" / "history.db"
        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        last = await last_sample_time(db)
        # a batch in flight plus its commit and the scheduling of a loaded machine
        assert killed - last < BATCH + 0.35

        store = await HistoryStore.open(db)
        try:
            saved = (await load_state(store)).sessions["main"]
        finally:
            await store.close()
        assert saved.step_count > 0

        proc = start(folder)
        try:
            ready = await asyncio.to_thread(wait_ready, proc)
            assert ready["sessions"] == 1
            async with Client(str(ready["endpoint"]), timeout=10) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                count = await client.get_node(ua.NodeId("Sessions.main.StepCount", ns)
                                              ).read_value()
            assert count >= saved.step_count  # resumed, not restarted at tick 0
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
            finish(proc)
