"""Real-time scheduling of the worker processes (``runtime/scheduling.py``,
``server.worker_scheduling``): what the kernel reports for real workers, the
drop to normal scheduling while a worker runs flat out, the fallback where the
kernel refuses (this process run again without CAP_SYS_NICE, by ``setpriv``),
and a worker spinning at SCHED_FIFO on the very core of the main process's
event loop still killed by the hang watch.

The tests that need real-time scheduling skip where this process may not have
it (not root, no CAP_SYS_NICE, no RLIMIT_RTPRIO)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from tests.models.fmu import conftest as fmu_conftest
from tests.processes import children
from tests.runtime.conftest import DEMO, EventLog, child_processes, shm_blocks, wait_until
from tests.runtime.models import burn_twin
from tests.runtime.test_fmu_crash import (
    CRASH_TICK,
    HANG,
    HANG_TIMEOUT,
    TANK,
    TankWatch,
    crashing_twin,
    tank_and_fmu,
    tank_twin,
)
from twin_server.engine.session import SessionSettings
from twin_server.errors import ConfigErrors, WorkerCrashed
from twin_server.runtime import HostedSession, WorkerHost, scheduling
from twin_server.runtime.compile import load_config, parse_config
from twin_server.runtime.scheduling import Overload, OverloadGuard, Scheduler

ROOT = Path(__file__).resolve().parents[2]
FIFO = "SCHED_FIFO priority 10"
#: a normal worker's scheduling: the daemon's, here this process's (nice 0 but under
#: `nice make test`)
NORMAL = f"SCHED_OTHER nice {os.getpriority(os.PRIO_PROCESS, 0)}"

fmus = fmu_conftest.fmus
cache_dir = fmu_conftest.cache_dir


def may_realtime() -> bool:
    """Whether this process may take SCHED_FIFO (it gives it back at once)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


needs_realtime = pytest.mark.skipif(not may_realtime(),
                                    reason="this process may not take SCHED_FIFO")


def kernel_policy(pid: int) -> tuple[int, int]:
    """The policy (with its SCHED_RESET_ON_FORK flag) and priority the kernel has."""
    return os.sched_getscheduler(pid), os.sched_getparam(pid).sched_priority


@contextlib.asynccontextmanager
async def started(events: EventLog, asked: scheduling.Asked, *, workers: int = 1,
                  hang_timeout: float = 5.0) -> AsyncIterator[WorkerHost]:
    host = WorkerHost(events, workers=workers, scheduling=asked, hang_timeout=hang_timeout,
                      snapshot_interval=0.1)
    await host.start()
    try:
        yield host
    finally:
        await host.aclose()
        assert children() == {}
        assert shm_blocks() == set()


def policies(host: WorkerHost) -> dict[str, str]:
    return {w.name: w.policy for w in host.statistics().processes}


class TestRealtime:
    @needs_realtime
    async def test_every_worker_runs_sched_fifo(self, events: EventLog) -> None:
        """Asked for "realtime", each worker, the spare too, runs SCHED_FIFO at priority
        10 with SCHED_RESET_ON_FORK (a child it starts gets normal scheduling), as the
        kernel reports and the host's statistics say; the host's own process keeps
        normal scheduling."""
        async with started(events, "realtime", workers=2) as host:
            stats = host.statistics()
            assert (stats.scheduling, stats.scheduling_fallback) == ("realtime", "")
            assert policies(host) == {"w0": FIFO, "w1": FIFO, "spare0": FIFO}
            for info in stats.processes:
                assert kernel_policy(info.pid) == (
                    os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, 10)
            assert os.sched_getscheduler(0) == os.SCHED_OTHER

    async def test_normal_leaves_the_workers_as_any_process(self, events: EventLog) -> None:
        """Asked for "normal", the workers keep the daemon's scheduling: SCHED_OTHER at
        the nice value it was started with here."""
        async with started(events, "normal") as host:
            assert set(policies(host).values()) == {NORMAL}
            assert host.statistics().scheduling == "normal"
            for pid in host.worker_pids():
                assert kernel_policy(pid) == (os.SCHED_OTHER, 0)

    @needs_realtime
    async def test_flat_out_work_drops_to_normal_scheduling(self, events: EventLog) -> None:
        """A worker running a Step of many ticks, or a session at real-time factor 0,
        drops to normal scheduling meanwhile (it never sleeps: at SCHED_FIFO it would
        take a core from the server) and takes SCHED_FIFO back once it is paced only."""
        async with started(events, "realtime") as host:
            await host.create("tank", tank_twin(), TANK)
            tank = HostedSession(host, "tank")
            pid = host.worker_pid("tank")
            progress = await tank.step(10_000_000, wait=0)
            assert progress.running
            assert str(scheduling.current(pid)) == NORMAL
            await tank.suspend()  # (ends the Step)
            await wait_until(lambda: str(scheduling.current(pid)) == FIFO)
            await tank.set_realtime_factor(0.0)
            await tank.resume()
            await wait_until(lambda: tank.frame().step_count > 1000)
            assert str(scheduling.current(pid)) == NORMAL
            assert policies(host)["w0"] == NORMAL
            await tank.set_realtime_factor(1.0)
            assert str(scheduling.current(pid)) == FIFO
            await tank.halt()


#: CPU a tick of a 100 Hz session: 15 ms (more than its 10 ms period: overloaded),
#: 2 ms (20 % of a core: paced, never overloaded)
HOT, WARM = 0.015, 0.002
HUNDRED_HZ = SessionSettings(step_size=0.01)


class FakeThread:
    """The time and CPU use the guard reads, moved by the test: ``run(seconds, used,
    waited)`` passes ``seconds`` of wall time with those shares."""

    def __init__(self) -> None:
        self.now, self.ran, self.waited = 0.0, 0.0, 0.0

    def usage(self) -> tuple[float, float]:
        return self.ran, self.waited

    def run(self, guard: OverloadGuard, seconds: float, used: float,
            waited: float = 0.0) -> list[Overload]:
        """Sample every window while it passes; the changes the guard made."""
        changes = []
        for _ in range(round(seconds / scheduling.GUARD_WINDOW)):
            self.now += scheduling.GUARD_WINDOW
            self.ran += used * scheduling.GUARD_WINDOW
            self.waited += waited * scheduling.GUARD_WINDOW
            if (change := guard.sample()) is not None:
                changes.append(change)
        return changes


def realtime_scheduler() -> Scheduler:
    """The scheduler of a worker that got SCHED_FIFO (as the kernel is not asked here:
    the guard's decisions only, with a priority this process can take or not)."""
    fifo = scheduling.Policy("SCHED_FIFO", 10)
    return Scheduler(scheduling.Outcome("realtime", fifo, fifo))


@pytest.fixture
def guarded() -> tuple[OverloadGuard, FakeThread]:
    thread = FakeThread()
    scheduler = realtime_scheduler()
    scheduler._update = lambda: None  # type: ignore[method-assign]  # (no kernel call)
    return OverloadGuard(scheduler, now=lambda: thread.now, usage=thread.usage), thread


class TestOverloadGuard:
    def test_a_second_above_the_share_is_an_overload(
            self, guarded: tuple[OverloadGuard, FakeThread]) -> None:
        """CPU use at 95 % for a second drops the worker, with the share that did it;
        at 85 % for ever, or at 95 % for under a second, it does not."""
        guard, thread = guarded
        assert thread.run(guard, 10.0, used=0.85) == []
        assert thread.run(guard, scheduling.OVERLOAD_SECONDS - 0.25, used=0.95) == []
        assert thread.run(guard, 0.25, used=0.5) == []
        assert thread.run(guard, scheduling.OVERLOAD_SECONDS, used=0.95) == [
            Overload(True, pytest.approx(0.95))]
        assert guard.scheduler.overloaded

    def test_it_ends_only_after_staying_well_below(
            self, guarded: tuple[OverloadGuard, FakeThread]) -> None:
        """Overloaded, the worker takes real-time scheduling back after RECOVER_SECONDS
        busy under 70 %, not at 80 % (between the thresholds: no flapping), and not
        while it waits for its core most of the time though it runs little (at normal
        scheduling, sharing the core, the load is still there)."""
        guard, thread = guarded
        thread.run(guard, 2.0, used=1.0)
        assert guard.scheduler.overloaded
        assert thread.run(guard, 10.0, used=0.8) == []
        assert thread.run(guard, 10.0, used=0.4, waited=0.6) == []
        assert thread.run(guard, scheduling.RECOVER_SECONDS - 0.5, used=0.3) == []
        assert thread.run(guard, 0.5, used=0.3) == [Overload(False, pytest.approx(0.3))]
        assert not guard.scheduler.overloaded

    def test_flat_out_work_is_no_overload(
            self, guarded: tuple[OverloadGuard, FakeThread]) -> None:
        """A Step or a session at real-time factor 0 (dropped for it already) uses the
        whole core without counting as an overload, nor does a window with such work."""
        guard, thread = guarded
        guard.scheduler.flat_out(True)
        assert thread.run(guard, 5.0, used=1.0) == []
        guard.scheduler.flat_out(False)
        with guard.scheduler.normal():
            pass  # (a session created: seconds of CPU in no window at all)
        assert thread.run(guard, 0.75, used=1.0) == []
        assert not guard.scheduler.overloaded

    def test_workers_as_many_as_the_cores_leave_the_server_half_a_core(self) -> None:
        """Two SCHED_FIFO workers on two cores drop at 75 % each, not 90 % (at 85 %
        each, as measured with 145 paced sessions, the server got 0.3 of a core and a
        CreateSession took 20 s); one worker on two cores keeps 90 %; many workers on
        few cores are not driven below the floor."""
        assert scheduling.overload_share(2, 2) == pytest.approx(0.75)
        assert scheduling.overload_share(1, 2) == scheduling.OVERLOAD_SHARE
        assert scheduling.overload_share(1, 1) == pytest.approx(0.5)
        assert scheduling.overload_share(16, 2) == scheduling.MIN_OVERLOAD_SHARE
        thread = FakeThread()
        scheduler = realtime_scheduler()
        scheduler._update = lambda: None  # type: ignore[method-assign]  # (no kernel call)
        guard = OverloadGuard(scheduler, share=scheduling.overload_share(2, 2),
                              now=lambda: thread.now, usage=thread.usage)
        assert thread.run(guard, scheduling.OVERLOAD_SECONDS, used=0.85) == [
            Overload(True, pytest.approx(0.85))]
        assert thread.run(guard, 10.0, used=0.6) == []  # (not below 55 %: still dropped)
        assert thread.run(guard, scheduling.RECOVER_SECONDS, used=0.5) == [
            Overload(False, pytest.approx(0.5))]

    def test_the_host_gives_its_workers_their_share(self, events: EventLog) -> None:
        """A host of as many workers as the cores asks each for the shared share."""
        cores = os.cpu_count() or 1
        host = WorkerHost(events, workers=cores)
        assert host.overload_share == scheduling.overload_share(cores, cores)
        assert host.overload_share < scheduling.OVERLOAD_SHARE

    def test_a_worker_without_realtime_has_nothing_to_guard(self) -> None:
        """A worker at normal scheduling (asked, or fallen back) never counts."""
        thread = FakeThread()
        normal = Scheduler(scheduling.Outcome("normal", scheduling.NORMAL_POLICY,
                                              scheduling.NORMAL_POLICY))
        guard = OverloadGuard(normal, now=lambda: thread.now, usage=thread.usage)
        assert not guard.active
        assert thread.run(guard, 5.0, used=1.0) == []


class TestOverloadedWorker:
    @needs_realtime
    async def test_overloaded_fifo_worker_drops_to_normal_until_the_load_goes(
            self, events: EventLog) -> None:
        """A SCHED_FIFO worker stepping a 100 Hz session that burns 15 ms a tick drops
        to SCHED_OTHER within seconds, with one worker_overloaded event naming it, its
        session and its CPU share, and the host's statistics saying so; once the
        session is deleted it takes SCHED_FIFO back."""
        with structlog.testing.capture_logs() as logs:
            async with started(events, "realtime") as host:
                await host.create("hot", burn_twin(HOT), HUNDRED_HZ)
                hot = HostedSession(host, "hot")
                pid = host.worker_pid("hot")
                assert str(scheduling.current(pid)) == FIFO
                await hot.start()
                await wait_until(lambda: host.statistics().processes[0].overload > 0,
                                 timeout=15.0)
                assert str(scheduling.current(pid)) == NORMAL
                stats = host.statistics()
                assert policies(host)["w0"] == NORMAL
                assert stats.processes[0].overload >= scheduling.OVERLOAD_SHARE
                assert stats.scheduling_fallback.startswith(
                    "worker w0 is overloaded: its sessions (hot) kept it busy ")
                assert "server.workers" in stats.scheduling_fallback
                (event,) = [e for e in logs if e["event"] == "worker_overloaded"]
                assert (event["worker"], event["pid"], event["sessions"]) == (
                    "w0", pid, ["hot"])
                assert event["share"] >= scheduling.OVERLOAD_SHARE
                assert event["log_level"] == "warning"
                await host.delete("hot")
                await wait_until(lambda: str(scheduling.current(pid)) == FIFO,
                                 timeout=scheduling.RECOVER_SECONDS + 10.0)
                await wait_until(lambda: host.statistics().scheduling_fallback == "")
                assert host.statistics().processes[0].overload == 0.0
                assert [e["worker"] for e in logs
                        if e["event"] == "worker_overload_ended"] == ["w0"]
                assert len([e for e in logs if e["event"] == "worker_overloaded"]) == 1

    @needs_realtime
    async def test_a_paced_worker_keeps_sched_fifo(self, events: EventLog) -> None:
        """A worker whose 100 Hz session needs a fifth of its core stays at SCHED_FIFO."""
        async with started(events, "realtime") as host:
            await host.create("warm", burn_twin(WARM), HUNDRED_HZ)
            warm = HostedSession(host, "warm")
            pid = host.worker_pid("warm")
            await warm.start()
            await wait_until(lambda: warm.frame().step_count >= 300)
            assert str(scheduling.current(pid)) == FIFO
            assert host.statistics().processes[0].overload == 0.0
            await warm.halt()


FALLBACK = """
import asyncio, json
import structlog
from twin_server.runtime import WorkerHost

async def main() -> None:
    with structlog.testing.capture_logs() as logs:
        host = WorkerHost(lambda name, event: None, workers=2, scheduling="realtime")
        await host.start()
        stats = host.statistics()
        await host.aclose()
    print(json.dumps({
        "policies": [w.policy for w in stats.processes],
        "fallback": stats.scheduling_fallback,
        "events": [e for e in logs if e["event"].startswith("worker_scheduling")],
    }))

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.fixture
def without_sys_nice() -> list[str]:
    """The command prefix that runs a program without CAP_SYS_NICE (and RLIMIT_RTPRIO
    at its hard limit here, 0): a service's or container's lot."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    if os.geteuid() != 0 and not may_realtime():
        return []  # (already without it)
    if resource_rtprio() >= scheduling.DEFAULT_PRIORITY:
        pytest.skip("RLIMIT_RTPRIO here permits SCHED_FIFO without CAP_SYS_NICE")
    return [setpriv, "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"]


def resource_rtprio() -> int:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


class TestFallback:
    def test_a_niced_daemon_that_gets_fifo_did_not_fall_back(self) -> None:
        """SCHED_FIFO has no nice value: a worker of a daemon started at nice 10
        (systemd's Nice=) that got its priority got what it asked for."""
        fifo = scheduling.Policy("SCHED_FIFO", 10)
        assert not scheduling.Outcome("realtime", fifo, scheduling.Policy(
            "SCHED_FIFO", 10, nice=10)).fell_back
        assert scheduling.Outcome("realtime", fifo, scheduling.Policy(
            "SCHED_OTHER", 0, nice=10)).fell_back
        assert scheduling.Outcome("realtime", fifo, scheduling.Policy(
            "SCHED_FIFO", 5)).fell_back

    def test_refused_realtime_falls_back_with_one_event(
            self, tmp_path: Path, without_sys_nice: list[str]) -> None:
        """Where the kernel refuses SCHED_FIFO, the workers run at normal scheduling and
        the host logs one warning that says what was asked, what was got, why, and how
        to grant it; the statistics carry the same words."""
        script = tmp_path / "fallback.py"
        script.write_text(textwrap.dedent(FALLBACK))
        done = subprocess.run([*without_sys_nice, sys.executable, str(script)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout.splitlines()[-1])
        assert got["policies"] == [NORMAL] * 3
        warnings = [e for e in got["events"] if e["log_level"] == "warning"]
        assert len(warnings) == 1, got["events"]
        (event,) = warnings
        assert event["event"] == "worker_scheduling_fallback"
        assert (event["scheduling"], event["asked"], event["got"]) == (
            "realtime", FIFO, NORMAL)
        assert "no CAP_SYS_NICE" in event["reason"]
        assert "RLIMIT_RTPRIO" in event["reason"]
        for fix in ("LimitRTPRIO=10", "CAP_SYS_NICE", "--cap-add SYS_NICE",
                    'worker_scheduling = "normal"'):
            assert fix in event["fix"]
        assert got["fallback"].startswith(
            f"server.worker_scheduling = 'realtime' asked for {FIFO}, the workers got "
            f"{NORMAL}: ")
        assert event["fix"] in got["fallback"]


@contextlib.contextmanager
def one_core(pids: list[int], cpu: int) -> Iterator[None]:
    """This thread (the event loop's: the host's hang watch) and every thread of
    ``pids`` on core ``cpu`` alone, for the block."""
    mine = os.sched_getaffinity(0)
    threads = [int(t) for pid in pids for t in os.listdir(f"/proc/{pid}/task")]
    os.sched_setaffinity(0, {cpu})
    for tid in threads:
        os.sched_setaffinity(tid, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


class TestHungRealtimeWorker:
    @needs_realtime
    @fmu_conftest.pytestmark
    async def test_spinning_fifo_worker_on_the_loops_core_is_killed_and_replaced(
            self, events: EventLog, tmp_path: Path, fmus: dict[str, Path],
            cache_dir: Path) -> None:
        """An FMU spinning for ever in doStep, in a SCHED_FIFO worker that shares one core
        with the main process's event loop: the kernel still leaves the loop some time
        (RT throttling), so the hang watch kills the worker after the hang timeout
        (plus at most a couple of seconds), a new worker brings the session back
        Halted at SCHED_FIFO, and the tank in the other worker misses no tick."""
        twin = crashing_twin(tmp_path, fmus["crash2"], cache_dir, HANG)
        async with started(events, "realtime", hang_timeout=HANG_TIMEOUT) as host:
            tank, fmu = await tank_and_fmu(host, twin)
            pid = host.worker_pid("fmu")
            assert str(scheduling.current(pid)) == FIFO
            watch = TankWatch(tank)
            cpu = min(os.sched_getaffinity(0))
            with one_core([pid], cpu):
                await fmu.start()
                await wait_until(lambda: fmu.frame().step_count >= CRASH_TICK)
                stuck = time.monotonic()
                # the worker spins at SCHED_FIFO now (not dropped: it is paced)
                assert str(scheduling.current(pid)) == FIFO
                await events.wait("fmu", "fault", timeout=HANG_TIMEOUT + 10.0)
                waited = time.monotonic() - stuck
            assert waited <= HANG_TIMEOUT + 3.0
            fault = fmu.fault()
            assert isinstance(fault, WorkerCrashed)
            assert (fault.signal, fault.hung, fault.component, fault.pid) == (
                "SIGKILL", True, "plant", pid)
            await events.wait("fmu", "recovered", timeout=5.0)
            fresh = host.worker_pid("fmu")
            assert fresh not in (0, pid)
            assert str(scheduling.current(fresh)) == FIFO
            await wait_until(lambda: pid not in child_processes())
            await watch.none_missed()
            assert host.statistics().hangs == 1


class TestConfig:
    def test_default_is_realtime_at_priority_10(self) -> None:
        """A config that says nothing asks for real-time scheduling at priority 10."""
        server = load_config(DEMO).config.server
        assert (server.worker_scheduling, server.worker_priority) == ("realtime", 10)

    def test_normal_and_a_priority_are_taken(self) -> None:
        """``worker_scheduling = "normal"`` and a priority in 1..49 load as written."""
        server = parse_config('[server]\nworker_scheduling = "normal"\n'
                              'worker_priority = 49\n').config.server
        assert (server.worker_scheduling, server.worker_priority) == ("normal", 49)

    @pytest.mark.parametrize(("line", "key", "message"), [
        pytest.param('worker_scheduling = "fifo"', "worker_scheduling",
                     "must be 'realtime' or 'normal' (got 'fifo')", id="unknown"),
        pytest.param("worker_scheduling = true", "worker_scheduling",
                     "must be 'realtime' or 'normal' (got true)", id="boolean"),
        pytest.param("worker_priority = 0", "worker_priority",
                     "must be at least 1 (got 0)", id="priority-0"),
        pytest.param("worker_priority = 99", "worker_priority",
                     "must be at most 49 (got 99)", id="priority-99"),
    ])
    def test_a_bad_setting_is_named_with_its_key(self, line: str, key: str,
                                                 message: str) -> None:
        """A bad value is refused with the key path and what it must be."""
        with pytest.raises(ConfigErrors) as info:
            parse_config(f"[server]\n{line}\n")
        assert [(e.path, e.message) for e in info.value.exceptions] == [
            (f"server.{key}", message)]
