"""The daemon as a service: systemd notify and watchdog, staged shutdown, reload."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.sync import Client as SyncClient
from asyncua.ua.uaerrors import BadConfigurationError

from twin_server.config.schema import ServerConfig
from twin_server.runtime import LocalHost
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import (
    SHUTDOWN_BUDGET,
    SHUTDOWN_LIMIT,
    SHUTDOWN_STAGES,
    STAGE_FLOOR,
    STAGE_TIMEOUT,
    Daemon,
    _stop_stage,
    _with_timeout,
    stage_timeout,
)
from twin_server.systemd import Notifier

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "configs" / "systemd" / "twin-server.service"

PLANT = """
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
state_dir = "{state_dir}"

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[twins.tank.components.tank]
model = "water_tank"

[twins.tank.components.feed]
model = "constant"
parameters = {{ value = 0.02 }}

[twins.tank]
connections = ["feed.output -> tank.inflow"]
{sessions}
"""


def plant(state_dir: Path, sessions: str) -> str:
    """The test config with its state under ``state_dir`` and these session tables."""
    return PLANT.format(state_dir=state_dir, sessions=sessions)


def session_table(name: str, rate: float = 0.05) -> str:
    return f'\n[sessions.{name}]\ntwin = "tank"\nstep_size = {rate}\npublish_rate = 20.0\n'


@contextlib.asynccontextmanager
async def served(config: Path) -> AsyncIterator[tuple[Daemon, Client, int, Node]]:
    """The daemon running ``config``, with a connected client: (daemon, client,
    namespace index, the TwinServer object)."""
    daemon = Daemon(load_config(config))
    runner = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.wait_ready(), 30)
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index("urn:twin-server")
            yield daemon, client, ns, client.get_node(ua.NodeId("TwinServer", ns))
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def messages(self, timeout: float) -> list[str]:
        """Everything that arrives within ``timeout`` seconds."""
        got = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return got

    def until(self, prefix: str, timeout: float) -> list[str]:
        """Messages up to and including the first that starts with ``prefix``."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {prefix} within {timeout} s; got {got}"
            self.sock.settimeout(left)
            got.append(self.sock.recv(4096).decode())
            if got[-1].startswith(prefix):
                return got


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path / "notify.sock")
    yield lst
    lst.sock.close()


class TestNotify:
    def test_ready_status_watchdog_stopping_in_order(self, tmp_path: Path,
                                                     listener: Listener) -> None:
        """A daemon under a fake systemd sends READY, STATUS, WATCHDOG, STOPPING, then exits 0."""
        config = tmp_path / "plant.toml"
        config.write_text(plant(tmp_path, session_table("main")))
        env = {**os.environ, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "400000"}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen([sys.executable, "-m", "twin_server", "run", str(config)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            first = listener.until("READY=1", timeout=30)
            assert first[-1].startswith("READY=1\nSTATUS=serving 1 sessions (1 running)")
            later = listener.until("WATCHDOG=1", timeout=5)
            assert any(m.startswith("STATUS=") for m in later + listener.messages(0.5))
            proc.send_signal(signal.SIGTERM)
            rest = listener.until("STOPPING=1", timeout=10)
            assert not any(m.startswith("READY") for m in rest)
            assert proc.wait(timeout=SHUTDOWN_LIMIT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    async def test_stalled_tick_loop_stops_the_pings(self, tmp_path: Path, listener: Listener,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        """A session that is Running but whose clock has stopped ticking withholds WATCHDOG=1."""
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        config = tmp_path / "plant.toml"
        # in-process sessions: a stalled clock there is this process's to report (a
        # worker's is its host's to replace: tests/test_workers.py)
        config.write_text(plant(tmp_path, session_table("main", rate=0.01)).replace(
            "[server]\n", "[server]\nworkers = 0\n"))
        daemon = Daemon(load_config(config), notifier=Notifier(listener.path))
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            pings = await asyncio.to_thread(listener.messages, 1.0)
            assert pings.count("WATCHDOG=1") >= 3
            assert isinstance(daemon.host, LocalHost)
            clock = daemon.host._get("main").task
            assert clock is not None
            clock.cancel()  # the tick loop dies; the session still says Running
            await asyncio.sleep(2.0)
            await asyncio.to_thread(listener.messages, 0.05)  # what was sent until now
            late = await asyncio.to_thread(listener.messages, 1.0)
            assert "WATCHDOG=1" not in late
            assert any(m.startswith("STATUS=") for m in late)  # alive, but not progressing
            assert any("session 'main' is Running" in r for r in daemon.stalled())
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)
            daemon.notifier.close()


    async def test_stalled_history_writer_stops_the_pings(
            self, tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
        """A history writer that stops passing withholds WATCHDOG=1 too."""
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        config = tmp_path / "plant.toml"
        config.write_text(plant(tmp_path, session_table("main")))
        daemon = Daemon(load_config(config), notifier=Notifier(listener.path))
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            assert daemon.stalled() == []
            writer = next(t for t in daemon._store_tasks if t.get_name() == "history-writer")
            writer.cancel()  # the writer dies; everything else runs on
            await asyncio.sleep(3.5)  # > 3 batch intervals of 1 s
            await asyncio.to_thread(listener.messages, 0.05)
            late = await asyncio.to_thread(listener.messages, 1.0)
            assert "WATCHDOG=1" not in late
            assert any("history writer" in r for r in daemon.stalled())
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)
            daemon.notifier.close()


class TestShutdown:
    def test_stages_fit_in_the_units_stop_timeout(self) -> None:
        """A shutdown whose every stage is stuck still ends before systemd's
        TimeoutStopSec: the stages share SHUTDOWN_BUDGET, each with at least
        STAGE_FLOOR, and room is left for a few more stages."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(UNIT)
        stop_timeout = float(unit["Service"]["TimeoutStopSec"].removesuffix("s"))
        assert SHUTDOWN_BUDGET + len(SHUTDOWN_STAGES) * STAGE_FLOOR == SHUTDOWN_LIMIT
        assert stop_timeout > SHUTDOWN_LIMIT + 10 * STAGE_FLOOR

    async def test_stuck_stages_share_the_budget(self) -> None:
        """With the budget nearly spent, a stuck stage waits what is left (or the
        floor), not STAGE_TIMEOUT; outside a shutdown a stage waits STAGE_TIMEOUT."""
        from twin_server.runtime import daemon as module

        assert stage_timeout() == STAGE_TIMEOUT
        loop = asyncio.get_running_loop()
        token = module._SHUTDOWN_DEADLINE.set(loop.time() + 0.3)
        try:
            assert 0.2 < stage_timeout() <= 0.3
            stuck = asyncio.ensure_future(asyncio.Event().wait())
            started = loop.time()
            await _with_timeout("stuck", stuck)  # (cancelled at its timeout)
            assert 0.2 < loop.time() - started < STAGE_TIMEOUT / 2
            started = loop.time()

            async def deaf() -> None:  # (ignores its first cancellation)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(10)
                await asyncio.sleep(10)

            task = asyncio.ensure_future(deaf())
            await _stop_stage("deaf", [task])  # the budget is spent: the floor
            assert loop.time() - started < STAGE_FLOOR + 1.0
            assert stage_timeout() == STAGE_FLOOR
        finally:
            module._SHUTDOWN_DEADLINE.reset(token)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def test_unit_file_has_the_hardening(self) -> None:
        """The unit is Type=notify with a watchdog and the sandbox the README promises."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read(UNIT)
        service = unit["Service"]
        assert service["Type"] == "notify"
        for key, value in {"WatchdogSec": "10s", "Restart": "on-failure",
                           "DynamicUser": "yes", "StateDirectory": "twin-server",
                           "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                           "CapabilityBoundingSet": "",
                           "SystemCallFilter": "@system-service"}.items():
            assert service[key] == value, key
        assert "AF_INET" in service["RestrictAddressFamilies"]

    def test_unit_file_lets_the_workers_take_their_realtime_priority(self) -> None:
        """The unprivileged service may give its workers SCHED_FIFO at the default
        server.worker_priority (LimitRTPRIO=, no RestrictRealtime=yes), with no
        capability."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read(UNIT)
        service = unit["Service"]
        priority = ServerConfig.model_fields["worker_priority"].default
        assert int(service["LimitRTPRIO"]) >= priority
        assert service.get("RestrictRealtime", "no") == "no"
        assert service["AmbientCapabilities"] == service["CapabilityBoundingSet"] == ""


class TestReload:
    async def test_reload_adds_and_removes_keeping_subscriptions(self, tmp_path: Path) -> None:
        """ReloadConfig starts new sessions, stops removed ones; a subscription on an
        untouched session keeps receiving; an invalid file changes nothing."""
        config = tmp_path / "plant.toml"
        config.write_text(plant(tmp_path, session_table("keep") + session_table("drop")))
        async with served(config) as (daemon, client, ns, root):
            changes = Counter()
            sub = await client.create_subscription(50, changes)
            await sub.subscribe_data_change(
                client.get_node(ua.NodeId("Sessions.keep.StepCount", ns)))
            await changes.wait_for(3)

            config.write_text(plant(tmp_path, session_table("keep")
                                           + session_table("added")))
            summary = await root.call_method(ua.NodeId("ReloadConfig", ns))
            assert summary == "stopped: drop; started: added; unchanged: keep"
            sessions = client.get_node(ua.NodeId("Sessions", ns))
            names = {(await n.read_browse_name()).Name for n in await sessions.get_children()}
            assert names == {"keep", "added"}
            before = changes.count
            await changes.wait_for(before + 3)
            added = client.get_node(ua.NodeId("Sessions.added.State", ns))
            assert await added.read_value() == "Running"

            config.write_text("[twins.broken]\n")
            with pytest.raises(BadConfigurationError):
                await root.call_method(ua.NodeId("ReloadConfig", ns))
            assert set(daemon.sessions) == {"keep", "added"}
            await changes.wait_for(changes.count + 3)

    async def test_reload_brings_back_a_deleted_config_session(self, tmp_path: Path) -> None:
        """A config session a client deleted is created again by a reload (the config
        still declares it); one whose name a client took since is left to the client."""
        config = tmp_path / "plant.toml"
        config.write_text(plant(tmp_path, session_table("main") + session_table("spare")))
        async with served(config) as (daemon, client, ns, root):
            for name in ("main", "spare"):
                await root.call_method(ua.NodeId("DeleteSession", ns), name)
            await root.call_method(ua.NodeId("CreateSession", ns), "tank", "spare", "")
            assert daemon.manager.origin("spare") == "client"
            summary = await root.call_method(ua.NodeId("ReloadConfig", ns))
            assert summary == "started: main"
            state = client.get_node(ua.NodeId("Sessions.main.State", ns))
            assert await state.read_value() == "Running"
            assert daemon.manager.origin("main") == "config"
            assert daemon.manager.origin("spare") == "client"

    def test_sighup_reloads(self, tmp_path: Path) -> None:
        """SIGHUP makes a running daemon apply its edited config file; a session it
        restarts under the same NodeIds keeps feeding the items that watched it (one
        BadNodeIdUnknown, then Good values), and the daemon prints no warning of a
        coroutine never awaited (issue #15)."""
        config = tmp_path / "plant.toml"
        config.write_text(plant(tmp_path, session_table("one")))
        proc = subprocess.Popen(
            [sys.executable, "-m", "twin_server", "run", str(config)], cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        printed: list[str] = []  # what the daemon wrote to stderr that is not an event
        try:
            assert proc.stderr is not None
            endpoint = str(_wait_for_event(proc, "daemon_ready", printed=printed)["endpoint"])
            with SyncClient(endpoint, timeout=10) as client:
                ns = client.get_namespace_index("urn:twin-server")
                seen = Statuses()
                sub = client.create_subscription(50, seen)
                sub.subscribe_data_change(client.get_node(ua.NodeId("Sessions.one.SimTime", ns)))
                seen.until(lambda: len(seen.names) >= 2)
                config.write_text(plant(tmp_path, session_table("one", rate=0.04)
                                        + session_table("two")))
                proc.send_signal(signal.SIGHUP)
                event = _wait_for_event(proc, "config_reloaded", printed=printed)
                assert event["summary"] == "started: two; restarted: one"
                seen.until(lambda: "BadNodeIdUnknown" in seen.names
                           and seen.names[-3:] == ["Good"] * 3)
                assert seen.names.count("BadNodeIdUnknown") == 1, seen.names
            health = subprocess.run([sys.executable, "-m", "twin_server", "health", endpoint],
                                    capture_output=True, text=True, timeout=30, check=False)
            assert "2 sessions" in health.stdout
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            printed += proc.stderr.read().splitlines()
            assert not [line for line in printed if "never awaited" in line], printed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


class Counter:
    """A data-change handler that counts notifications and lets a test await a count."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def datachange_notification(self, node: object, value: object, data: object) -> None:
        self.count += 1
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


class Statuses:
    """A subscription handler of asyncua's sync client (called in its thread): the
    status name of every notification."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._changed = threading.Event()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.names.append(data.monitored_item.Value.StatusCode.name)
        self._changed.set()

    def until(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"not within {timeout} s: {self.names}"
            self._changed.clear()
            self._changed.wait(0.5)


def _wait_for_event(proc: subprocess.Popen[str], name: str, timeout: float = 30.0,
                    printed: list[str] | None = None) -> dict[str, object]:
    """The next event ``name`` the daemon logs; the lines before it that are no
    event go to ``printed``."""
    import json

    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if printed is not None:
                printed.append(line)
            continue
        if event.get("event") == name:
            return dict(event)
    raise AssertionError(f"no {name} event from the daemon")
