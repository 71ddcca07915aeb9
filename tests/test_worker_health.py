"""What a user sees when a worker dies or hangs, against the real daemon with worker
processes and a real client over 127.0.0.1: the health nodes (``Diagnostics.Workers``,
``Sessions.<s>.Diagnostics``), the Bad status of the lost session's values while
its worker is replaced, the systemd watchdog fed all along, and a crashed session
that stays Halted across a restart of the daemon.

The gap between a worker's death and its replacement lasts milliseconds when a
spare is ready; these tests hold it open deterministically by stopping the spare
(SIGSTOP) before the death: the host hands the session to the spare, which cannot
answer until it gets SIGCONT."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua

from tests.models.fmu import conftest as fmu_conftest
from tests.opcua.conftest import PLANT, start_daemon
from tests.runtime.models import burn_twin
from tests.runtime.test_scheduling import HOT, may_realtime, one_core
from tests.test_operations import Listener
from twin_server import health
from twin_server.engine.twin import TwinDefinition
from twin_server.opcua import events as ev
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime import WorkerHost, scheduling
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon
from twin_server.systemd import Notifier

pytestmark = fmu_conftest.pytestmark  # (gcc builds the crashing FMU)

fmus = fmu_conftest.fmus
cache_dir = fmu_conftest.cache_dir

ROOT = Path(__file__).resolve().parents[1]
LEVEL = "Components.tank.Outputs.level"
#: the watchdog's interval is half of it: a ping every 0.1 s
WATCHDOG_USEC = "200000"
#: crash2 misbehaves in tick 30 of a 100 Hz session (tests/runtime/test_fmu_crash.py)
CRASH_TICK = 30
SEGFAULT, HANG = 0, 2
HANG_TIMEOUT = 1.0

OPEN = """
[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"
"""

TANKS = PLANT + """
[server]
workers = 1
session_idle_timeout = 0
""" + OPEN + """
[sessions.steady]
twin = "plant"
step_size = 0.01
publish_rate = 20.0

[sessions.victim]
twin = "plant"
step_size = 0.01
publish_rate = 20.0
isolate = true
"""

CRASHING = """
[server]
workers = 1
session_idle_timeout = 0
hang_timeout = {hang_timeout}
fmu_dirs = ["{fmu.parent}"]
""" + OPEN + """
[twins.crashing.components.source]
model = "constant"
parameters = {{ value = 1.0 }}

[twins.crashing.components.plant]
model = "fmu"
options = {{ path = "{fmu}", cache_dir = "{cache}" }}
parameters = {{ crash_at = {crash_at!r}, how = {how} }}

[twins.crashing]
connections = ["source.output -> plant.u"]

[sessions.fmu]
twin = "crashing"
step_size = 0.01
autostart = {autostart}
publish_rate = {publish_rate!r}

[history]
snapshot_interval = {snapshot_interval}
"""


def crashing(fmu: Path, cache: Path, how: int, *, autostart: bool = False,
             snapshot_interval: float = 5.0, publish_rate: float = 10.0) -> str:
    """A config serving session ``fmu``: the crash2 FMU misbehaving in tick 30."""
    return CRASHING.format(fmu=fmu, cache=cache, how=how, crash_at=(CRASH_TICK + 0.5) * 0.01,
                           hang_timeout=HANG_TIMEOUT, autostart=str(autostart).lower(),
                           snapshot_interval=snapshot_interval, publish_rate=publish_rate)


@dataclasses.dataclass
class Served:
    """A daemon, its host, and a client connected to it."""

    daemon: Daemon
    client: Client
    ns: int

    @property
    def host(self) -> WorkerHost:
        assert isinstance(self.daemon.host, WorkerHost)
        return self.daemon.host

    def node(self, path: str) -> Node:
        return self.client.get_node(ua.NodeId(path, self.ns))

    async def read(self, path: str) -> Any:
        return await self.node(path).read_value()

    async def until(self, path: str, expected: Any, timeout: float = 10.0) -> None:
        """Poll node ``path`` until it reads ``expected`` (the health nodes change every
        half second: there is no event to await)."""
        value = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (value := await self.read(path)) != expected:
                    await asyncio.sleep(0.05)
        assert value == expected, f"{path} is {value!r}, expected {expected!r}"

    async def call(self, session: str, method: str) -> None:
        result = await self.client.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId(f"Sessions.{session}", self.ns),
            MethodId=ua.NodeId(f"Sessions.{session}.{method}", self.ns))])
        assert result[0].StatusCode.is_good(), result[0].StatusCode


@contextlib.asynccontextmanager
async def served(config: str, state_dir: Path, notifier: Notifier | None = None, *,
                 twins: Mapping[str, TwinDefinition] | None = None) -> AsyncIterator[Served]:
    """The daemon serving ``config`` with its state in ``state_dir``, on a free port,
    with a connected client; stopped (gracefully) at the end. ``twins`` adds twins
    made in code (of test models: no config can name them)."""
    loaded = parse_config(config)
    server = loaded.config.server.model_copy(update={"state_dir": str(state_dir)})
    loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
        update={"server": server}), twins={**loaded.twins, **(twins or {})})
    daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server",
                    **({"notifier": notifier} if notifier is not None else {}))
    runner = await start_daemon(daemon)
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Served(daemon, client, ns)
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)


class Changes:
    """A subscription's data changes (value and status) and events, to await."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[ua.DataValue] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.put_nowait(data.monitored_item.Value)

    def event_notification(self, event: Any) -> None:
        self.events.put_nowait(event)

    async def status(self, good: bool, timeout: float = 10.0) -> ua.DataValue:
        """The next data change whose status is Good (``good``) or not."""
        async with asyncio.timeout(timeout):
            while True:
                value = await self.values.get()
                status = value.StatusCode or ua.StatusCode()
                if status.is_good() == good:
                    return value

    async def event(self, kind: str, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if getattr(event, "Kind", None) == kind:
                    return event


async def watch(served: Served, session: str, value: str | None = None) -> Changes:
    """Subscribe to ``session``'s events and, given, to its variable ``value``."""
    changes = Changes()
    sub = await served.client.create_subscription(10, changes)
    await sub.subscribe_events(served.node(f"Sessions.{session}"),
                               served.node(ev.SESSION_EVENT_TYPE))
    if value is not None:
        await sub.subscribe_data_change(served.node(f"Sessions.{session}.{value}"))
    return changes


@contextlib.contextmanager
def stopped_spare(host: WorkerHost) -> Iterator[int]:
    """The host's ready spare worker, stopped (SIGSTOP) until the block ends: a dead
    worker's sessions, handed to it, wait until then (the replacement gap held open)."""
    (spare,) = [w.pid for w in host.statistics().processes if w.role == "spare"]
    os.kill(spare, signal.SIGSTOP)
    try:
        yield spare
    finally:
        os.kill(spare, signal.SIGCONT)


async def spare_ready(host: WorkerHost, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while host.statistics().spares < 1:
            await asyncio.sleep(0.02)


def pings(messages: list[str]) -> int:
    return messages.count("WATCHDOG=1")


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A datagram socket standing in for systemd's, with the watchdog on (0.1 s)."""
    monkeypatch.setenv("WATCHDOG_USEC", WATCHDOG_USEC)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    lst = Listener(tmp_path / "notify.sock")
    yield lst
    lst.sock.close()


def timed(listener: Listener, seconds: float) -> list[tuple[float, str]]:
    """Every message that arrives within ``seconds``, with when it arrived."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        listener.sock.settimeout(left)
        try:
            got.append((time.monotonic(), listener.sock.recv(4096).decode()))
        except TimeoutError:
            break
    return got


def assert_fed(messages: list[tuple[float, str]], start: float, end: float) -> None:
    """WATCHDOG=1 arrived all through [start, end]: never more than MAX_GAP apart (the
    interval is 0.1 s; a watchdog withheld for a dead worker's session would leave a
    gap as long as the window)."""
    times = [start, *(t for t, m in messages if m == "WATCHDOG=1"), end]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) - 2 >= (end - start) / 0.1 / 3, messages
    assert max(gaps) < MAX_GAP, f"no WATCHDOG=1 for {max(gaps):.2f} s: {messages}"


#: the longest pause between two pings that still counts as fed (the interval is 0.1 s;
#: generous: the machine is noisy)
MAX_GAP = 0.6


async def until(condition: Any, timeout: float = 15.0) -> None:
    """Poll ``condition`` (a host's frame or fault: no event to await) until it holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


class TestHealthNodes:
    async def test_nodes_name_the_workers_and_where_each_session_steps(
            self, tmp_path: Path) -> None:
        """Diagnostics.Workers lists every worker (name, role, pid, its sessions) as the
        host has them, with no crash yet; each session's Diagnostics names its worker and
        says its values are live."""
        async with served(TANKS, tmp_path) as s:
            await spare_ready(s.host)
            stats = s.host.statistics()
            await s.until("Diagnostics.Workers.Names", [w.name for w in stats.processes])
            workers = "Diagnostics.Workers"
            assert await s.read(f"{workers}.Host") == "workers"
            assert await s.read(f"{workers}.Roles") == ["shared", "isolated", "spare"]
            assert await s.read(f"{workers}.Pids") == [w.pid for w in stats.processes]
            assert await s.read(f"{workers}.SessionCounts") == [1, 1, 0]
            assert (await s.read(f"{workers}.Workers"), await s.read(f"{workers}.SparesReady"),
                    await s.read(f"{workers}.Sessions")) == (3, 1, 2)
            assert [await s.read(f"{workers}.{n}") for n in ("Crashes", "Hangs",
                                                             "Replacements")] == [0, 0, 0]
            assert (await s.read(f"{workers}.LastCrash.Time")).year == 1601  # none yet
            assert await s.read(f"{workers}.LastCrash.Signal") == ""
            for name, worker in (("steady", "w0"), ("victim", "isolated-victim")):
                await s.until(f"Sessions.{name}.Diagnostics.Worker", worker)
                assert await s.read(f"Sessions.{name}.Diagnostics.WorkerPid") == \
                    s.host.worker_pid(name)
                assert await s.read(f"Sessions.{name}.Diagnostics.Live") is True
                assert await s.read(f"Sessions.{name}.Diagnostics.Fault") == ""

    async def test_nodes_show_the_scheduling_each_worker_got(self, tmp_path: Path) -> None:
        """Diagnostics.Workers says what the workers ask for (the default, "realtime") and
        each worker's policy as the kernel has it: SCHED_FIFO where this process may
        grant it (root here), else normal with the fallback's words in
        SchedulingFallback."""
        async with served(TANKS, tmp_path) as s:
            await spare_ready(s.host)
            workers = "Diagnostics.Workers"
            stats = s.host.statistics()
            await s.until(f"{workers}.Policies", [w.policy for w in stats.processes])
            assert await s.read(f"{workers}.Scheduling") == "realtime"
            fallback = await s.read(f"{workers}.SchedulingFallback")
            if may_realtime():
                assert [w.policy for w in stats.processes] == ["SCHED_FIFO priority 10"] * 3
                assert fallback == ""
            else:
                assert {w.policy for w in stats.processes} != {"SCHED_FIFO priority 10"}
                assert "LimitRTPRIO=10" in fallback

    async def test_in_process_sessions_name_the_daemon_itself(self, tmp_path: Path) -> None:
        """With workers = 0 the nodes say so: no worker process, each session stepping
        in the daemon's own process."""
        async with served(TANKS.replace("workers = 1", "workers = 0"), tmp_path) as s:
            await s.until("Sessions.victim.Diagnostics.Worker", "in-process")
            assert await s.read("Sessions.victim.Diagnostics.WorkerPid") == os.getpid()
            assert await s.read("Diagnostics.Workers.Host") == "in-process"
            assert await s.read("Diagnostics.Workers.Workers") == 0
            assert await s.read("Diagnostics.Workers.Sessions") == 2
            report = await health.check(s.daemon.endpoint_url)
            assert report.ok and report.message.endswith(
                "Running, 2 sessions (in-process, no worker processes)")


class TestReplacementGap:
    async def test_values_are_bad_and_the_watchdog_fed_until_the_worker_is_back(
            self, tmp_path: Path, listener: Listener) -> None:
        """A worker killed while the spare that replaces it is held stopped: a subscribed
        client sees the session's values turn BadCommunicationError and its health nodes
        say it is not live, WATCHDOG=1 keeps arriving all through the gap while the other
        session ticks on; once the spare runs, the session is back on it, Halted, its
        values Good and live."""
        async with served(TANKS, tmp_path, Notifier(listener.path)) as s:
            host = s.host
            await spare_ready(host)
            changes = await watch(s, "victim", LEVEL)
            await changes.status(good=True)  # (the value when subscribed)
            victim = host.worker_pid("victim")
            with stopped_spare(host) as spare:
                os.kill(victim, signal.SIGKILL)
                fault = await changes.event("fault")
                assert "SIGKILL" in fault.Message.Text
                bad = await changes.status(good=False)
                assert bad.StatusCode.value == ua.StatusCodes.BadCommunicationError
                await s.until("Sessions.victim.Diagnostics.Live", False)
                assert await s.read("Sessions.victim.Diagnostics.Worker") == ""
                assert await s.read("Sessions.victim.Diagnostics.WorkerPid") == 0
                assert "SIGKILL" in await s.read("Sessions.victim.Diagnostics.Fault")
                await s.until("Diagnostics.Workers.Crashes", 1)
                assert await s.read("Diagnostics.Workers.LastCrash.Sessions") == ["victim"]
                assert await s.read("Diagnostics.Workers.Replacements") == 0
                # the gap is open: the main process feeds the watchdog all along
                steady = host.frame("steady").step_count
                await asyncio.to_thread(listener.messages, 0.05)  # (sent until now)
                start = time.monotonic()
                during = await asyncio.to_thread(timed, listener, 1.0)
                assert_fed(during, start, time.monotonic())
                assert s.daemon.stalled() == []
                assert not host.frame("victim").good  # (still in the gap)
                assert host.frame("steady").step_count > steady + 30
            await changes.event("recovered")
            good = await changes.status(good=True)
            assert good.Value.Value == host.frame("victim").values[
                [k.path for k, _ in host.layout("victim").variables].index(LEVEL)]
            await s.until("Sessions.victim.Diagnostics.Live", True)
            assert await s.read("Sessions.victim.Diagnostics.WorkerPid") == spare
            assert await s.read("Sessions.victim.State") == "Halted"
            await s.until("Diagnostics.Workers.Replacements", 1)


class TestCrashOnTheNodes:
    async def test_the_nodes_show_a_fault_and_a_return_before_their_events(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """A client that gets the fault event reads the session Halted with Bad values,
        and, at the recovered event, Halted with Good values: the nodes show what an
        event changed before the event goes out, even with a publish period (here 2 s)
        far longer than the crash and the return take."""
        config = crashing(fmus["crash2"], cache_dir, SEGFAULT, publish_rate=0.5)
        async with served(config, tmp_path) as s:
            changes = await watch(s, "fmu")
            output = s.node("Sessions.fmu.Components.plant.Outputs.y")
            await s.call("fmu", "Start")
            assert await s.read("Sessions.fmu.State") == "Running"
            await changes.event("fault")
            assert await s.read("Sessions.fmu.State") == "Halted"
            dv = await output.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode.value == ua.StatusCodes.BadCommunicationError
            await changes.event("recovered")
            assert await s.read("Sessions.fmu.State") == "Halted"
            dv = await output.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode.is_good()

    async def test_segfault_names_signal_session_component_and_tick(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """An FMU's segfault in tick 30 shows on Diagnostics.Workers.LastCrash (SIGSEGV,
        the session, the FMU component, the tick, the worker) and on the session's
        Fault; the session comes back Halted and live in a new worker."""
        async with served(crashing(fmus["crash2"], cache_dir, SEGFAULT), tmp_path) as s:
            pid = s.host.worker_pid("fmu")
            changes = await watch(s, "fmu")
            await s.call("fmu", "Start")
            await changes.event("fault")
            await changes.event("recovered")
            crash = "Diagnostics.Workers.LastCrash"
            await s.until(f"{crash}.Signal", "SIGSEGV")
            assert [await s.read(f"{crash}.{n}") for n in (
                "Session", "Component", "Tick", "Hung", "Pid", "Worker", "ExitCode")] == [
                "fmu", "plant", CRASH_TICK, False, pid, "isolated-fmu", -signal.SIGSEGV]
            assert "while stepping component 'plant'" in await s.read(f"{crash}.Message")
            when: datetime = await s.read(f"{crash}.Time")
            assert abs(when.timestamp() - time.time()) < 60
            await s.until("Sessions.fmu.Diagnostics.Live", True)
            assert "died of SIGSEGV" in await s.read("Sessions.fmu.Diagnostics.Fault")
            assert await s.read("Sessions.fmu.Diagnostics.WorkerPid") not in (0, pid)
            assert await s.read("Sessions.fmu.State") == "Halted"
            await s.until("Diagnostics.Workers.Replacements", 1)
            assert (await s.read("Diagnostics.Workers.Crashes"),
                    await s.read("Diagnostics.Workers.Hangs")) == (1, 0)
            # `twin-server health`: healthy (the daemon recovered), and it says what happened
            report = await health.check(s.daemon.endpoint_url)
            assert report.ok, report.message
            assert ", 1 worker crash (0 hung); the last: session 'fmu'" in report.message
            assert "died of SIGSEGV" in report.message


class TestHungWorker:
    async def test_hung_fmu_is_killed_reported_and_the_watchdog_fed(
            self, tmp_path: Path, listener: Listener, fmus: dict[str, Path],
            cache_dir: Path) -> None:
        """An FMU spinning in doStep from tick 30: its worker is killed after
        hang_timeout, the session's fault event and the health nodes say it hung
        (SIGKILL, the component, the tick), and WATCHDOG=1 kept arriving all along."""
        config = crashing(fmus["crash2"], cache_dir, HANG)
        async with served(config, tmp_path, Notifier(listener.path)) as s:
            changes = await watch(s, "fmu")
            await s.call("fmu", "Start")
            await until(lambda: s.host.frame("fmu").step_count >= CRASH_TICK)
            await asyncio.to_thread(listener.messages, 0.05)  # (sent until now)
            start = time.monotonic()
            # hung from now on: killed after HANG_TIMEOUT, then replaced
            collecting = asyncio.ensure_future(
                asyncio.to_thread(timed, listener, HANG_TIMEOUT + 1.5))
            fault = await changes.event("fault", timeout=HANG_TIMEOUT + 5.0)
            await changes.event("recovered")
            messages = await collecting
            assert_fed(messages, start, time.monotonic())
            text = fault.Message.Text
            assert "took no tick for" in text and f"hang_timeout {HANG_TIMEOUT:g} s" in text
            crash = "Diagnostics.Workers.LastCrash"
            await s.until(f"{crash}.Hung", True)
            assert [await s.read(f"{crash}.{n}") for n in (
                "Signal", "Session", "Component", "Tick")] == [
                "SIGKILL", "fmu", "plant", CRASH_TICK]
            assert "took no tick for" in await s.read(f"{crash}.Message")
            assert (await s.read("Diagnostics.Workers.Hangs"),
                    await s.read("Diagnostics.Workers.Crashes")) == (1, 1)
            assert "took no tick for" in await s.read("Sessions.fmu.Diagnostics.Fault")
            assert await s.read("Sessions.fmu.State") == "Halted"


class TestNoCrashLoop:
    async def test_crashed_session_stays_halted_across_a_restart(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """A config session with autostart whose FMU crashed its worker comes back, after
        a restart of the daemon on the same state, Halted on that fault instead of
        running into the crash again; a client's Reset (the crash switched off) and
        Start run it."""
        config = crashing(fmus["crash2"], cache_dir, SEGFAULT, autostart=True,
                          snapshot_interval=0.1)
        async with served(config, tmp_path) as s:
            host = s.host
            await until(lambda: host.fault("fmu") is not None and host.frame("fmu").good)
        async with served(config, tmp_path) as s:
            host = s.host
            assert await s.read("Sessions.fmu.State") == "Halted"
            fault = await s.read("Sessions.fmu.Diagnostics.Fault")
            assert "died of SIGSEGV" in fault and "before the daemon restarted" in fault
            ticks = host.frame("fmu").step_count
            assert ticks <= CRASH_TICK
            await asyncio.sleep(1.0)  # (past tick 30 if it ran: no event to await)
            assert host.statistics().crashes == 0
            assert (host.frame("fmu").step_count, await s.read("Sessions.fmu.State")) == (
                ticks, "Halted")
            result = await s.client.uaclient.call([ua.CallMethodRequest(
                ObjectId=ua.NodeId("Sessions.fmu", s.ns),
                MethodId=ua.NodeId("Sessions.fmu.Reset", s.ns),
                InputArguments=[ua.Variant('{"plant": {"crash_at": 1e30}}',
                                           ua.VariantType.String)])])
            assert result[0].StatusCode.is_good()
            await s.until("Sessions.fmu.Diagnostics.Fault", "")
            await s.call("fmu", "Start")
            await until(lambda: host.frame("fmu").step_count > CRASH_TICK + 10)
            assert host.fault("fmu") is None

    async def test_crashed_session_stays_halted_after_the_daemon_is_killed(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """The daemon saves a session the moment it halts on its worker's crash: killed
        (SIGKILL) right after, long before its next periodic save, the daemon started
        again on the same state finds the session Halted on that fault, not Running into
        the crash again."""
        config = crashing(fmus["crash2"], cache_dir, SEGFAULT, autostart=True,
                          snapshot_interval=60.0)
        path = tmp_path / "crashing.toml"
        path.write_text(config.replace("[server]\n", f'[server]\nstate_dir = "{tmp_path}"\n'
                                       'endpoint = "opc.tcp://127.0.0.1:0/twin-server"\n'))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("NOTIFY_SOCKET", None)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "twin_server", "run", str(path), cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert daemon.stderr is not None
            async with asyncio.timeout(30):
                while b'"session_saved"' not in (line := await daemon.stderr.readline()):
                    assert line, "the daemon ended before it saved the crashed session"
        finally:
            daemon.kill()
            await daemon.wait()
        async with served(config, tmp_path) as s:
            assert await s.read("Sessions.fmu.State") == "Halted"
            fault = await s.read("Sessions.fmu.Diagnostics.Fault")
            assert "died of SIGSEGV" in fault and "before the daemon restarted" in fault
            await asyncio.sleep(1.0)  # (past tick 30 if it ran: no event to await)
            assert s.host.statistics().crashes == 0
            assert await s.read("Sessions.fmu.State") == "Halted"


class TestOverload:
    @pytest.mark.skipif(not may_realtime(), reason="this process may not take SCHED_FIFO")
    async def test_overloaded_worker_on_the_servers_core_leaves_the_server_answering(
            self, tmp_path: Path) -> None:
        """A SCHED_FIFO worker given more than its core (a 100 Hz session burning 15 ms a
        tick) on the one core the server's event loop has: it drops to normal
        scheduling, Diagnostics.Workers says so (its policy, and SchedulingFallback
        naming it, its session and what to do), and meanwhile every read a client makes
        is answered within half a second (at SCHED_FIFO the worker would leave the
        server 50 ms a second)."""
        async with served(TANKS, tmp_path, twins={"burn": burn_twin(HOT)}) as s:
            await spare_ready(s.host)
            await s.daemon.create_session("burn", "hot", {})
            pid = s.host.worker_pid("hot")
            assert str(scheduling.current(pid)) == "SCHED_FIFO priority 10"
            workers = "Diagnostics.Workers"
            with one_core([pid], min(os.sched_getaffinity(0))):
                await s.call("hot", "Start")
                async with asyncio.timeout(20.0):
                    while not (said := await s.read(f"{workers}.SchedulingFallback")):
                        await asyncio.sleep(0.05)
                assert said.startswith("worker w0 is overloaded: its sessions (steady, hot) ")
                assert "isolate = true" in said
                names = await s.read(f"{workers}.Names")
                assert (await s.read(f"{workers}.Policies"))[names.index("w0")] == \
                    f"SCHED_OTHER nice {os.getpriority(os.PRIO_PROCESS, 0)}"
                slowest = 0.0
                for _ in range(30):
                    began = time.monotonic()
                    await asyncio.sleep(0.05)
                    await s.read(f"{workers}.Crashes")
                    slowest = max(slowest, time.monotonic() - began)
                assert slowest < 0.5, f"a read took {slowest:.3f} s"
                assert s.host.worker_pid("hot") == pid  # (not killed: it kept ticking)
