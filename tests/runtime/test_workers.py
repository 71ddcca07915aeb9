"""Worker processes: a crash or a hang halts only the sessions of that worker, names
the signal, tick and component, and a new worker takes over within a second;
placement and isolation; nothing left behind."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

import pytest

from tests.processes import children
from tests.runtime.conftest import EventLog, child_processes, shm_blocks, wait_until
from tests.runtime.models import crash_twin, echo_twin
from twin_server.engine.session import RunState, SessionSettings, VarKey
from twin_server.errors import InvalidState, WorkerCrashed
from twin_server.models.base import Kind
from twin_server.runtime import HostedSession, WorkerHost

PACED = SessionSettings(step_size=0.01)  # 100 Hz, real time


async def ticking(host: WorkerHost, name: str, *, isolate: bool = False) -> HostedSession:
    """A running echo session that has ticked."""
    await host.create(name, echo_twin(), PACED, isolate=isolate)
    session = HostedSession(host, name)
    await session.start()
    await wait_until(lambda: session.frame().step_count >= 2)
    return session


async def keeps_ticking(session: HostedSession, ticks: int = 20) -> None:
    start = session.frame().step_count
    await wait_until(lambda: session.frame().step_count >= start + ticks)
    assert session.frame().state is RunState.RUNNING and session.frame().good


class TestCrash:
    @pytest.mark.parametrize(("mode", "name"), [
        pytest.param(0, "SIGSEGV", id="segfault"),
        pytest.param(1, "SIGABRT", id="abort"),
    ])
    async def test_crash_in_a_model_halts_its_session_only(
            self, workers: WorkerHost, events: EventLog, mode: int, name: str) -> None:
        """A model that kills its worker halts its session with the signal, tick and
        component named; a session on another worker keeps ticking; a new worker
        serves the halted session within a second."""
        good = await ticking(workers, "good")
        await workers.create("bad", crash_twin(at=30, mode=mode), PACED, isolate=True)
        bad = HostedSession(workers, "bad")
        pid = workers.worker_pid("bad")
        # the isolated session took the spare worker: the host's steady state has one
        # ready again, which is what replaces a worker within a second
        await wait_until(lambda: workers.statistics().spares == 1)
        await bad.start()
        await events.wait("bad", "fault")
        noticed = time.monotonic()
        fault = bad.fault()
        assert isinstance(fault, WorkerCrashed)
        assert (fault.signal, fault.component, fault.tick, fault.pid) == (name, "crash", 30, pid)
        assert fault.exit_code == -getattr(signal, name)
        assert f"died of {name}" in str(fault)
        assert "in tick 30 (t=0.3 s) while stepping component 'crash'" in str(fault)
        frame = bad.frame()
        assert (frame.state, frame.good, frame.step_count) == (RunState.HALTED, False, 30)
        await events.wait("bad", "recovered", timeout=5.0)
        assert time.monotonic() - noticed < 1.0 + 0.5  # (the event's own delivery: margin)
        assert workers.statistics().last_replacement_seconds < 1.0
        assert workers.worker_pid("bad") not in (0, pid)
        frame = bad.frame()
        assert (frame.state, frame.good) == (RunState.HALTED, True)
        await keeps_ticking(good)
        assert workers.fault("good") is None

    async def test_sigkill_restores_the_last_snapshot_halted(
            self, workers: WorkerHost, events: EventLog) -> None:
        """A worker killed from outside: its sessions come back from their last
        snapshot, Halted on a fault naming SIGKILL; Reset lets them run again."""
        victim = await ticking(workers, "victim", isolate=True)
        bystander = await ticking(workers, "bystander")
        await victim.suspend()
        await victim.write(VarKey("echo", Kind.INPUT, "u"), 7.0)
        snap = await victim.snapshot()
        assert workers.recovery_snapshot("victim") is snap
        await victim.resume()

        def newer() -> bool:  # the worker sends one every snapshot_interval (0.2 s here)
            latest = workers.recovery_snapshot("victim")
            return latest is not None and latest.step_count > snap.step_count + 5

        await wait_until(newer)
        latest = workers.recovery_snapshot("victim")
        assert latest is not None
        os.kill(workers.worker_pid("victim"), signal.SIGKILL)
        await events.wait("victim", "fault")
        fault = victim.fault()
        assert isinstance(fault, WorkerCrashed) and fault.signal == "SIGKILL"
        assert fault.tick >= latest.step_count
        await events.wait("victim", "recovered", timeout=5.0)
        frame = victim.frame()
        assert (frame.state, frame.good) == (RunState.HALTED, True)
        assert latest.step_count <= frame.step_count <= fault.tick
        assert victim.values()[VarKey("echo", Kind.INPUT, "u")] == 7.0
        assert victim.values()[VarKey("echo", Kind.OUTPUT, "y")] == 7.0
        with pytest.raises(InvalidState, match="in state Halted"):
            await victim.start()  # Halted on its fault: Reset first
        await victim.reset()
        await victim.start()
        await keeps_ticking(victim)
        await keeps_ticking(bystander)

    async def test_crash_of_a_shared_worker_halts_each_of_its_sessions(
            self, events: EventLog) -> None:
        """Every session of the dead worker is halted and brought back; the fault of
        the one not being stepped says which session was."""
        async with WorkerHost(events, workers=1) as host:
            calm = await ticking(host, "calm")
            await host.create("bad", crash_twin(at=10), PACED)
            await host.call("bad", "start")
            await events.wait("calm", "fault")
            fault = calm.fault()
            assert isinstance(fault, WorkerCrashed) and fault.signal == "SIGSEGV"
            assert fault.component == ""
            assert "while stepping session 'bad'" in str(fault)
            await events.wait("calm", "recovered")
            await events.wait("bad", "recovered")
            assert host.statistics().crashes == 1
        assert children() == {}
        assert shm_blocks() == set()

    async def test_a_snapshot_that_crashes_on_restore_is_given_up(
            self, workers: WorkerHost, events: EventLog) -> None:
        """A session whose snapshot kills the worker again when restored is brought back
        afresh at the next attempt: no crash loop."""
        await workers.create("fragile", crash_twin(at=10**6, crash_on_restore=True), PACED,
                             isolate=True)
        fragile = HostedSession(workers, "fragile")
        await fragile.step(5)
        await fragile.snapshot()
        os.kill(workers.worker_pid("fragile"), signal.SIGKILL)
        recovered = await events.wait("fragile", "recovered", timeout=15.0)
        assert "from a fresh start" in recovered.message
        faults = [e for n, e in events.events if n == "fragile" and e.kind == "fault"]
        assert len(faults) == 2  # the kill, then the restore's own segfault
        assert "died of SIGSEGV" in faults[1].message
        frame = fragile.frame()
        assert (frame.state, frame.step_count, frame.good) == (RunState.HALTED, 0, True)
        await fragile.reset()
        await fragile.step(3)
        assert fragile.frame().step_count == 3


class TestHang:
    async def test_a_hung_worker_is_killed_and_replaced(
            self, workers: WorkerHost, events: EventLog) -> None:
        """A running session that stops ticking gets its worker killed after the hang
        timeout; the fault says it hung; the other worker's session ticks on."""
        good = await ticking(workers, "good")
        await workers.create("stuck", crash_twin(at=5, mode=2), PACED, isolate=True)
        await workers.call("stuck", "start")
        await events.wait("stuck", "fault", timeout=10.0)
        fault = workers.fault("stuck")
        assert isinstance(fault, WorkerCrashed)
        assert (fault.signal, fault.hung, fault.component, fault.tick) == (
            "SIGKILL", True, "crash", 5)
        assert "took no tick for" in str(fault)
        assert workers.statistics().hangs == 1
        await events.wait("stuck", "recovered")
        await keeps_ticking(good)


class TestLongStep:
    async def test_a_long_step_holds_no_other_session_up(self, events: EventLog) -> None:
        """Step(1,000,000) of one session on a worker: the other session on the same
        worker ticks on time, and commands to either are answered at once meanwhile."""
        host = WorkerHost(events, workers=1, spares=0)
        await host.start()
        try:
            paced = await ticking(host, "paced")
            await host.create("long", echo_twin(), PACED)
            long = HostedSession(host, "long")
            assert host.worker_pid("long") == host.worker_pid("paced")
            assert (await long.step(1_000_000, wait=0)).running
            await wait_until(lambda: long.frame().step_count > 1000)
            lateness = await paced.statistics()  # (a command round trip meanwhile)
            slowest = 0.0
            for _ in range(20):
                started = time.perf_counter()
                await paced.statistics()
                await long.statistics()
                slowest = max(slowest, time.perf_counter() - started)
                await asyncio.sleep(0.01)
            await keeps_ticking(paced)
            assert long.frame().steps_remaining > 0  # it was stepping all along
            # a slice is 2 ms; generous bounds for a busy machine (in one piece, the
            # Step would hold the worker for about 40 s)
            assert slowest < 0.5
            assert paced.clock_statistics().lateness_max < 0.5, lateness
            await long.suspend()
        finally:
            await host.aclose()


class TestPlacement:
    async def test_sessions_spread_and_isolate(self, workers: WorkerHost) -> None:
        """Two sessions go to the two shared workers; an isolated one gets a third,
        which ends with its session."""
        await workers.create("a", echo_twin(), PACED)
        await workers.create("b", echo_twin(), PACED)
        shared = {workers.worker_pid("a"), workers.worker_pid("b")}
        assert len(shared) == 2
        await workers.create("alone", echo_twin(), PACED, isolate=True)
        alone = workers.worker_pid("alone")
        assert alone not in shared
        assert len(workers.worker_pids()) == 3
        await workers.delete("alone")
        assert sorted(workers.worker_pids()) == sorted(shared)
        await asyncio.sleep(0)
        assert alone not in child_processes()

    async def test_a_command_round_trip_is_quick(self, workers: WorkerHost) -> None:
        """A command is answered in well under a millisecond on average (the bench
        measures it precisely; here only a generous bound on a busy machine)."""
        await workers.create("s", echo_twin(), PACED)
        await workers.call("s", "statistics")
        started = time.perf_counter()
        for _ in range(200):
            await workers.call("s", "statistics")
        assert (time.perf_counter() - started) / 200 < 0.005


class TestCleanup:
    async def test_close_leaves_no_process_and_no_shared_memory(self, events: EventLog) -> None:
        """Closing a host with running, isolated and crashed sessions, a spare starting,
        ends every worker and unlinks every block."""
        host = WorkerHost(events, workers=2, spares=1)
        await host.start()
        try:
            await ticking(host, "a")
            await ticking(host, "b", isolate=True)  # takes the spare: another starts
            os.kill(host.worker_pid("a"), signal.SIGKILL)
            await events.wait("a", "fault")
            assert len(shm_blocks()) >= 2
            assert len(child_processes()) >= 2
        finally:
            await host.aclose()
        assert children() == {}
        assert shm_blocks() == set()
        assert host.statistics().workers == 0

    async def test_close_while_a_spare_is_starting_is_bounded(self, events: EventLog) -> None:
        """Closing a host while the spare that replaces a dead worker's is still starting
        (held stopped before its hello, as a loaded machine can hold one for seconds)
        returns within a bound, the starting worker killed."""
        host = WorkerHost(events, workers=1, spares=1)
        await host.start()
        try:
            await ticking(host, "a")
            known = {w.pid for w in host.statistics().processes}
            os.kill(host.worker_pid("a"), signal.SIGKILL)
            starting = await new_child(known)  # the spare started in the taken one's place
            os.kill(starting, signal.SIGSTOP)
            await events.wait("a", "recovered", timeout=10.0)
        finally:
            began = time.monotonic()
            await host.aclose()
            took = time.monotonic() - began
        assert took < CLOSE_BOUND, f"close took {took:.1f} s"
        assert children() == {}
        assert shm_blocks() == set()

    async def test_close_while_a_replacement_is_starting_is_bounded(
            self, events: EventLog) -> None:
        """Closing a host while a dead worker's replacement has not answered yet (its
        spare held stopped) returns within a bound, every worker killed."""
        host = WorkerHost(events, workers=1, spares=1)
        await host.start()
        try:
            await ticking(host, "a")
            (spare,) = [w.pid for w in host.statistics().processes if w.role == "spare"]
            os.kill(spare, signal.SIGSTOP)
            known = {w.pid for w in host.statistics().processes}
            os.kill(host.worker_pid("a"), signal.SIGKILL)
            await events.wait("a", "fault")
            os.kill(await new_child(known), signal.SIGSTOP)  # and the spare after it
        finally:
            began = time.monotonic()
            await host.aclose()
            took = time.monotonic() - began
        assert took < CLOSE_BOUND, f"close took {took:.1f} s"
        assert children() == {}
        assert shm_blocks() == set()


#: what closing a host may take at most, whatever its workers do (the daemon's
#: shutdown stage for it allows 5 s)
CLOSE_BOUND = 4.5


async def new_child(known: set[int], timeout: float = 10.0) -> int:
    """The pid of a worker process not in ``known``, once started (its interpreter
    running, importing: it has not said hello yet)."""
    async with asyncio.timeout(timeout):
        while not (new := {p.pid for p in multiprocessing.active_children()
                           if p.name.startswith("twin-worker")} - known):
            await asyncio.sleep(0.005)
    (pid,) = new
    assert pid is not None
    return pid
