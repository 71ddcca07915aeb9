"""A compiled FMU whose native code segfaults, aborts or hangs in doStep (``crash2``,
tests/models/fmu/src/crash2.c), beside the demo's tank at 100 Hz: in a worker of its
own it halts its session alone, named, and comes back Halted in a new worker while
the tank misses no tick; in-process (LocalHost) it takes the whole process down."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.models.fmu import conftest as fmu_conftest
from tests.processes import children
from tests.runtime.conftest import DEMO, EventLog, child_processes, shm_blocks, wait_until
from twin_server.engine.session import RunState, SessionSettings, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import WorkerCrashed
from twin_server.models.base import Kind
from twin_server.runtime import HostedSession, WorkerHost
from twin_server.runtime.compile import load_config

pytestmark = fmu_conftest.pytestmark  # (gcc builds the FMUs)

# the FMUs compiled once per test session (tests/models/fmu/conftest.py)
fmus = fmu_conftest.fmus
cache_dir = fmu_conftest.cache_dir

ROOT = Path(__file__).resolve().parents[2]
PACED = SessionSettings(step_size=0.01)  # 100 Hz, real time
#: the tank takes every tick: a late one (the machine is busy) is caught up at once, so
#: a tick counts as missed only if the tank stalled (its worker or clock stopped)
TANK = SessionSettings(step_size=0.01, overrun_policy="catch_up")
#: lateness that would mean the tank stalled (ticks a few periods late happen when busy)
STALL = 0.25
#: crash2 misbehaves in the doStep (CS) or derivative evaluation (ME) past crash_at:
#: mid-tick 30 means in tick 30, 0.3 s after Start
CRASH_TICK = 30
CRASH_AT = (CRASH_TICK + 0.5) * PACED.step_size
HANG_TIMEOUT = 1.0
SEGFAULT, ABORT, HANG = 0, 1, 2
STEPS = VarKey("plant", Kind.OUTPUT, "steps")

CONFIG = """
[server]
fmu_dirs = ["{fmu.parent}"]

[twins.crashing.components.source]
model = "constant"
parameters = {{ value = 1.0 }}

[twins.crashing.components.plant]
model = "fmu"
options = {{ path = "{fmu}", cache_dir = "{cache}", interface = "{interface}" }}
parameters = {{ crash_at = {crash_at!r}, how = {how} }}

[twins.crashing.components.sensor]
model = "gain"
parameters = {{ gain = 2.0 }}

[twins.crashing]
connections = ["source.output -> plant.u", "plant.y -> sensor.input"]
"""


def crashing_twin(tmp_path: Path, fmu: Path, cache: Path, how: int, *,
                  interface: str = "co-simulation") -> TwinDefinition:
    """A source, the crash2 FMU (``plant``) misbehaving in tick 30, a gain after it:
    loaded from a config as a user's would be."""
    config = tmp_path / "crashing.toml"
    config.write_text(CONFIG.format(fmu=fmu, cache=cache, interface=interface,
                                    crash_at=CRASH_AT, how=how))
    return load_config(config).twins["crashing"]


def tank_twin() -> TwinDefinition:
    return load_config(DEMO).twins["tank_level"]


@pytest.fixture
async def host(events: EventLog) -> AsyncIterator[WorkerHost]:
    """One shared worker (and the spare that replaces a dead one); a short hang timeout."""
    workers = WorkerHost(events, workers=1, hang_timeout=HANG_TIMEOUT, snapshot_interval=0.1)
    await workers.start()
    try:
        yield workers
    finally:
        await workers.aclose()
        assert children() == {}
        assert shm_blocks() == set()


async def tank_and_fmu(host: WorkerHost, twin: TwinDefinition) -> tuple[HostedSession,
                                                                         HostedSession]:
    """The tank ticking at 100 Hz on the shared worker; the FMU session created in a
    worker of its own (the daemon isolates FMU twins by default), not started."""
    await host.create("tank", tank_twin(), TANK)
    tank = HostedSession(host, "tank")
    await tank.start()
    await wait_until(lambda: tank.frame().step_count >= 10)
    await host.create("fmu", twin, PACED, isolate=True)
    fmu = HostedSession(host, "fmu")
    assert host.worker_pid("fmu") not in (0, host.worker_pid("tank"))
    # the FMU took the spare; the next one, ready, is what replaces a worker at once
    await wait_until(lambda: host.statistics().spares == 1, timeout=15.0)
    return tank, fmu


class TankWatch:
    """The tank's ticks against the wall clock from now on."""

    def __init__(self, tank: HostedSession) -> None:
        self.tank = tank
        self.since = time.monotonic()
        self.first = tank.frame().step_count

    def behind(self) -> float:
        """Ticks due by the wall clock that the tank has not taken."""
        due = (time.monotonic() - self.since) / TANK.step_size
        return due - (self.tank.frame().step_count - self.first)

    async def none_missed(self) -> None:
        """Every tick due since then was taken: a late one is caught up at once (the
        tank's overrun policy), a dropped one never is (it would stall the tank more
        than a second); the tank is Running, good, with no fault."""
        await wait_until(lambda: self.behind() < 2, timeout=1.0)
        frame = self.tank.frame()
        assert (frame.state, frame.good) == (RunState.RUNNING, True)
        assert self.tank.fault() is None
        # generous: on a loaded 2-core machine ticks start a few periods late at times
        # (overruns, counted, and caught up); a stall of the tank would be far longer
        assert self.tank.clock_statistics().lateness_max < STALL


async def stays_halted(host: WorkerHost, events: EventLog, fmu: HostedSession,
                       seconds: float = 0.5) -> None:
    """Brought back Halted, the FMU session does not crash again by itself: its
    worker lives and it takes no tick until a client acts."""
    pid, ticks = host.worker_pid("fmu"), fmu.frame().step_count
    await asyncio.sleep(seconds)  # (what must not happen has no event to await)
    frame = fmu.frame()
    assert (frame.state, frame.good, frame.step_count) == (RunState.HALTED, True, ticks)
    assert host.worker_pid("fmu") == pid != 0
    assert events.kinds("fmu").count("fault") == 1


class TestCrashingFMU:
    @pytest.mark.parametrize(("how", "interface", "name"), [
        pytest.param(SEGFAULT, "co-simulation", "SIGSEGV", id="segfault"),
        pytest.param(ABORT, "co-simulation", "SIGABRT", id="abort"),
        pytest.param(SEGFAULT, "model-exchange", "SIGSEGV", id="segfault-me"),
    ])
    async def test_crash_halts_the_fmu_session_alone(
            self, host: WorkerHost, events: EventLog, tmp_path: Path, fmus: dict[str, Path],
            cache_dir: Path, how: int, interface: str, name: str) -> None:
        """The FMU's crash in tick 30 halts its session with a fault naming the signal,
        the FMU component and the tick; the tank misses no tick; a new worker brings
        the session back Halted from its last snapshot, where it stays until a client
        resets and starts it."""
        twin = crashing_twin(tmp_path, fmus["crash2"], cache_dir, how, interface=interface)
        tank, fmu = await tank_and_fmu(host, twin)
        pid = host.worker_pid("fmu")
        watch = TankWatch(tank)
        await fmu.start()
        await events.wait("fmu", "fault")
        fault = fmu.fault()
        assert isinstance(fault, WorkerCrashed)
        assert (fault.signal, fault.exit_code, fault.hung) == (
            name, -getattr(signal, name), False)
        assert (fault.session, fault.component, fault.tick, fault.pid) == (
            "fmu", "plant", CRASH_TICK, pid)
        assert f"died of {name}" in str(fault)
        assert "in tick 30 (t=0.3 s) while stepping component 'plant'" in str(fault)
        frame = fmu.frame()
        assert (frame.state, frame.good) == (RunState.HALTED, False)
        assert frame.step_count <= CRASH_TICK
        assert host.fault("tank") is None
        await events.wait("fmu", "recovered", timeout=5.0)
        assert host.worker_pid("fmu") not in (0, pid, host.worker_pid("tank"))
        snapshot = host.recovery_snapshot("fmu")
        assert snapshot is not None and 0 < snapshot.step_count <= CRASH_TICK
        frame = fmu.frame()
        assert (frame.state, frame.good, frame.step_count) == (
            RunState.HALTED, True, snapshot.step_count)
        if interface == "co-simulation":  # the FMU's own state came back with it
            assert fmu.values()[STEPS] == snapshot.step_count
        await stays_halted(host, events, fmu)
        await watch.none_missed()
        assert (await tank.statistics()).state is RunState.RUNNING  # the host still serves
        stats = host.statistics()
        assert (stats.crashes, stats.hangs, stats.replacements) == (1, 0, 1)
        crash = stats.last_crash
        assert crash is not None
        assert (crash.worker, crash.pid, crash.signal, crash.exit_code, crash.hung,
                crash.session, crash.component, crash.tick, crash.sessions) == (
            "isolated-fmu", pid, name, -getattr(signal, name), False, "fmu", "plant",
            CRASH_TICK, ("fmu",))
        assert crash.message == str(fault) and abs(crash.time - time.time()) < 60
        placed = stats.worker_of("fmu")
        assert placed is not None and (placed.pid, placed.role) == (
            host.worker_pid("fmu"), "isolated")
        # a client decides: Reset with the crash switched off, Start, and it runs
        await fmu.reset({"plant": {"crash_at": 1e30}})
        await fmu.start()
        await wait_until(lambda: fmu.frame().step_count > CRASH_TICK + 10)
        assert fmu.frame().state is RunState.RUNNING and fmu.fault() is None


class TestHangingFMU:
    async def test_hang_is_detected_killed_and_replaced(
            self, host: WorkerHost, events: EventLog, tmp_path: Path, fmus: dict[str, Path],
            cache_dir: Path) -> None:
        """An FMU spinning in doStep from tick 30 on: its worker is killed once the
        session took no tick for the hang timeout, the fault says it hung, a new
        worker brings the session back Halted, and the tank misses no tick."""
        twin = crashing_twin(tmp_path, fmus["crash2"], cache_dir, HANG)
        tank, fmu = await tank_and_fmu(host, twin)
        pid = host.worker_pid("fmu")
        watch = TankWatch(tank)
        await fmu.start()
        await wait_until(lambda: fmu.frame().step_count >= CRASH_TICK)
        stuck = time.monotonic()  # (at most a poll after its last tick)
        await events.wait("fmu", "fault", timeout=HANG_TIMEOUT + 5.0)
        waited = time.monotonic() - stuck
        assert HANG_TIMEOUT * 0.9 <= waited <= HANG_TIMEOUT + 1.5
        fault = fmu.fault()
        assert isinstance(fault, WorkerCrashed)
        assert (fault.signal, fault.hung, fault.component, fault.tick, fault.pid) == (
            "SIGKILL", True, "plant", CRASH_TICK, pid)
        assert "while stepping component 'plant'" in str(fault)
        assert "took no tick for" in str(fault)
        assert f"hang_timeout {HANG_TIMEOUT:g} s" in str(fault)
        assert fmu.frame().state is RunState.HALTED
        await events.wait("fmu", "recovered", timeout=5.0)
        assert host.worker_pid("fmu") not in (0, pid)
        await wait_until(lambda: pid not in child_processes())
        await stays_halted(host, events, fmu)
        await watch.none_missed()
        stats = host.statistics()
        assert (stats.crashes, stats.hangs, stats.replacements) == (1, 1, 1)
        crash = stats.last_crash
        assert crash is not None
        assert (crash.signal, crash.hung, crash.session, crash.component, crash.tick) == (
            "SIGKILL", True, "fmu", "plant", CRASH_TICK)
        assert "took no tick for" in crash.message


    async def test_hang_inside_a_step_is_detected(
            self, host: WorkerHost, events: EventLog, tmp_path: Path, fmus: dict[str, Path],
            cache_dir: Path) -> None:
        """The same FMU in a Step(1000) of a session that is not Running: the Step, in
        the background, stops advancing at tick 30 and is treated as a hang (killed,
        Halted with a fault that says so, brought back), the tank missing no tick."""
        twin = crashing_twin(tmp_path, fmus["crash2"], cache_dir, HANG)
        tank, fmu = await tank_and_fmu(host, twin)
        pid = host.worker_pid("fmu")
        watch = TankWatch(tank)
        progress = await fmu.step(1000, wait=0)
        assert progress.running and fmu.frame().state is RunState.SUSPENDED
        await events.wait("fmu", "fault", timeout=HANG_TIMEOUT + 5.0)
        fault = fmu.fault()
        assert isinstance(fault, WorkerCrashed)
        assert (fault.signal, fault.hung, fault.component, fault.tick, fault.pid) == (
            "SIGKILL", True, "plant", CRASH_TICK, pid)
        assert "took no tick for" in str(fault) and "in a Step (" in str(fault)
        await events.wait("fmu", "recovered", timeout=5.0)
        frame = fmu.frame()
        assert (frame.state, frame.steps_remaining) == (RunState.HALTED, 0)
        await stays_halted(host, events, fmu)
        await watch.none_missed()
        assert host.statistics().hangs == 1


IN_PROCESS = """
import asyncio, sys
from twin_server.runtime.compile import load_config
from twin_server.engine.session import SessionSettings
from twin_server.runtime import LocalHost

async def main() -> None:
    twin = load_config(sys.argv[1]).twins["crashing"]
    host = LocalHost(lambda name, event: None)
    await host.create("fmu", twin, SessionSettings(step_size=0.01))
    await host.call("fmu", "start")
    print("started", flush=True)
    await asyncio.sleep(5.0)
    print("survived", host.frame("fmu").step_count, flush=True)

asyncio.run(main())
"""


class TestInProcess:
    @pytest.mark.parametrize(("how", "name"), [
        pytest.param(SEGFAULT, "SIGSEGV", id="segfault"),
        pytest.param(ABORT, "SIGABRT", id="abort"),
    ])
    def test_in_process_the_fmu_takes_the_whole_process_down(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path, how: int,
            name: str) -> None:
        """With the in-process host (workers = 0) the same FMU kills the process that
        serves every session: why sessions with FMUs step in workers."""
        crashing_twin(tmp_path, fmus["crash2"], cache_dir, how)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(IN_PROCESS), str(tmp_path / "crashing.toml")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=15)
        assert done.stdout == "started\n", done.stderr
        assert done.returncode == -getattr(signal, name)
