"""Clock: pacing against absolute deadlines, overruns and both policies, lateness
statistics, re-anchoring, idling without spinning, and determinism whatever the
real-time factor. A fake wall clock (``FakeClock``) drives all but one short real-time
test."""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.engine.conftest import (
    Faulty,
    Gain,
    Script,
    TimeSource,
    bits,
    component,
    make_session,
    run_scripted,
    tank_pid_twin,
    twin,
)
from twin_server.engine.session import RunState, Session, VarKey
from twin_server.models.base import Kind
from twin_server.runtime.clock import (
    LATENESS_BUCKETS,
    LATENESS_EDGES,
    SHORT_WORK,
    Clock,
    ClockStatistics,
    Ticks,
)

DT = 0.01


def script_clock_ticks(session: Session, script: Script, stop_at: int) -> list[int]:
    """Make the clock's ``session.tick()`` apply ``script`` before each tick and Suspend
    after tick ``stop_at``; returns a list that collects the step counts ticked."""
    real_tick = session.tick
    ticked: list[int] = []

    def tick() -> None:
        for key, value in script.get(session.step_count, []):
            session.write(key, value)
        ticked.append(session.step_count)
        real_tick()
        if session.step_count == stop_at:
            session.suspend()

    session.tick = tick  # type: ignore[method-assign]
    return ticked


class FakeClock:
    """A wall clock that only moves when the code under test sleeps.

    ``sleep(d)`` advances the time by ``d`` plus ``oversleep`` (a fixed lag or a
    callable returning one), records the call, and yields to the real event loop
    once so that other tasks (the test) run.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []
        self.oversleep: Any = 0.0

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        lag = self.oversleep() if callable(self.oversleep) else self.oversleep
        if seconds > 0:
            self.time += seconds + lag
        await asyncio.sleep(0)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


async def until(predicate: Callable[[], bool], *, spins: int = 500_000) -> None:
    """Let the event loop run until ``predicate()`` holds (fail after ``spins`` turns)."""
    for _ in range(spins):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def spin(turns: int = 2000) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


class Running:
    """A clock task that is cancelled (and awaited) when the test ends."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.task = asyncio.ensure_future(clock.run())

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(clock: Clock) -> Running:
        r = Running(clock)
        started.append(r)
        return r

    yield start
    for r in started:
        if not r.task.done():
            await r.stop()


def timed_ticks(
    session: Session, fake: FakeClock, *, slow: dict[int, float] | None = None
) -> list[float]:
    """Record the fake time at which each tick starts; tick k takes ``slow[k]`` seconds."""
    real_tick = session.tick
    times: list[float] = []
    slow = slow or {}

    def tick() -> None:
        times.append(fake.now())
        k = session.step_count
        real_tick()
        fake.advance(slow.get(k, 0.0))

    session.tick = tick  # type: ignore[method-assign]
    return times


def counter_session(**settings: Any) -> Session:
    return make_session(
        twin("c", component("clock", TimeSource, options={"record": False})),
        step_size=DT,
        **settings,
    )


class TestPacing:
    async def test_deadlines_are_absolute(self, fake_clock: FakeClock, running: Any) -> None:
        """Over 10,000 jittered ticks each starts within the jitter of its own deadline."""
        rng = random.Random(7)
        fake_clock.oversleep = lambda: rng.uniform(0.0, 0.5 * DT)
        s = counter_session()
        times = timed_ticks(s, fake_clock)
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        t0 = fake_clock.now()
        s.start()
        await until(lambda: s.step_count >= 10_000)
        for k, started in enumerate(times[:10_000]):
            deadline = t0 + (k + 1) * DT
            assert deadline - 1e-9 <= started <= deadline + 0.5 * DT + 1e-9, k
        assert clock.statistics().overruns == 0
        assert s.sim_time == s.step_count * DT

    async def test_first_tick_one_period_after_start(
        self, fake_clock: FakeClock, running: Any
    ) -> None:
        """The first tick (t: 0 -> dt) runs when dt of wall time has passed since Start."""
        s = counter_session()
        times = timed_ticks(s, fake_clock)
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep))
        t0 = fake_clock.now()
        s.start()
        await until(lambda: s.step_count >= 3)
        assert times[:3] == pytest.approx([t0 + DT, t0 + 2 * DT, t0 + 3 * DT], abs=1e-12)

    @pytest.mark.parametrize(
        "factor",
        [
            pytest.param(2.0, id="twice-as-fast"),
            pytest.param(0.5, id="half-speed"),
        ],
    )
    async def test_realtime_factor_scales_period(
        self, fake_clock: FakeClock, running: Any, factor: float
    ) -> None:
        """Ticks are dt / realtime_factor of wall time apart."""
        s = counter_session(realtime_factor=factor)
        times = timed_ticks(s, fake_clock)
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep))
        s.start()
        await until(lambda: s.step_count >= 20)
        gaps = [b - a for a, b in itertools.pairwise(times[:20])]
        assert gaps == pytest.approx([DT / factor] * 19, abs=1e-9)

    async def test_suspended_clock_does_not_spin(self, fake_clock: FakeClock, running: Any) -> None:
        """A clock whose session is Ready, Suspended or Halted sleeps on events, never polls."""
        s = counter_session()
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep))
        await spin()
        assert fake_clock.sleeps == []
        script_clock_ticks(s, {}, stop_at=5)
        s.start()
        await until(lambda: s.state is RunState.SUSPENDED)
        calls = len(fake_clock.sleeps)
        await spin()
        assert len(fake_clock.sleeps) == calls
        s.halt()
        await spin()
        assert len(fake_clock.sleeps) == calls
        assert s.step_count == 5

    async def test_resume_reanchors(self, fake_clock: FakeClock, running: Any) -> None:
        """Resume after a long Suspend anchors afresh: no overrun, next tick a period later."""
        s = counter_session()
        script_clock_ticks(s, {}, stop_at=10)
        times = timed_ticks(s, fake_clock)
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        s.start()
        await until(lambda: s.state is RunState.SUSPENDED)
        fake_clock.advance(100.0)
        resumed = fake_clock.now()
        s.resume()
        await until(lambda: s.step_count >= 15)
        assert times[10:15] == pytest.approx([resumed + (i + 1) * DT for i in range(5)], abs=1e-9)
        stats = clock.statistics()
        assert stats.overruns == 0
        assert stats.lateness_max < 1e-9

    async def test_factor_change_reanchors(self, fake_clock: FakeClock, running: Any) -> None:
        """A new real-time factor re-anchors: no overrun, the new period from then on."""
        s = counter_session()
        times = timed_ticks(s, fake_clock)
        real_tick = s.tick

        def tick() -> None:
            real_tick()
            if s.step_count == 10:
                s.set_realtime_factor(4.0)

        s.tick = tick  # type: ignore[method-assign]
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        s.start()
        await until(lambda: s.step_count >= 20)
        gaps = [b - a for a, b in itertools.pairwise(times[:20])]
        assert gaps == pytest.approx([DT] * 9 + [DT / 4] * 10, abs=1e-9)
        assert clock.statistics().overruns == 0

    async def test_factor_change_ends_a_long_wait(
        self, fake_clock: FakeClock, running: Any
    ) -> None:
        """A slow-motion wait is cut short by a new real-time factor instead of running out."""
        hung = asyncio.Event()

        async def sleep(seconds: float) -> None:
            if seconds > 1.0:  # a real 100 s wait: never ends in this test
                hung.set()
                await asyncio.Event().wait()
            await fake_clock.sleep(seconds)

        s = counter_session(realtime_factor=0.0001)
        running(Clock(s, now=fake_clock.now, sleep=sleep))
        s.start()
        await until(hung.is_set)
        s.set_realtime_factor(0)
        await until(lambda: s.step_count >= 1000)

    async def test_halt_during_a_long_wait_stops_at_once(
        self, fake_clock: FakeClock, running: Any
    ) -> None:
        """Halt during a long wait leaves the clock idle at once, no tick taken."""
        cancelled = asyncio.Event()

        async def sleep(seconds: float) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        s = counter_session(realtime_factor=0.001)
        running(Clock(s, now=fake_clock.now, sleep=sleep))
        s.start()
        await spin(50)
        s.halt()
        await until(cancelled.is_set)
        assert s.step_count == 0


class TestOverruns:
    async def test_skip_drops_missed_deadlines(self, fake_clock: FakeClock, running: Any) -> None:
        """With "skip", a tick 2.5 periods late is one overrun; it re-anchors there."""
        s = counter_session(overrun_policy="skip")
        times = timed_ticks(s, fake_clock, slow={5: 3.5 * DT})
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        t0 = fake_clock.now()
        s.start()
        await until(lambda: s.step_count >= 12)
        assert times[6] == pytest.approx(t0 + 6 * DT + 3.5 * DT, abs=1e-9)
        gaps = [b - a for a, b in itertools.pairwise(times[6:12])]
        assert gaps == pytest.approx([DT] * 5, abs=1e-9)
        stats = clock.statistics()
        assert stats.overruns == 1
        assert stats.lateness_max == pytest.approx(2.5 * DT, abs=1e-9)
        assert s.sim_time == s.step_count * DT

    async def test_catch_up_runs_late_ticks_back_to_back(
        self, fake_clock: FakeClock, running: Any
    ) -> None:
        """With "catch_up", late ticks run back to back; each over a period late is an overrun."""
        s = counter_session(overrun_policy="catch_up")
        times = timed_ticks(s, fake_clock, slow={5: 3.5 * DT})
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        t0 = fake_clock.now()
        s.start()
        await until(lambda: s.step_count >= 12)
        late = t0 + 6 * DT + 3.5 * DT
        assert times[6:9] == pytest.approx([late] * 3, abs=1e-9)  # 2.5, 1.5, 0.5 periods late
        assert times[9:12] == pytest.approx([t0 + (k + 1) * DT for k in range(9, 12)], abs=1e-9)
        assert clock.statistics().overruns == 2

    async def test_catch_up_drops_a_long_backlog(self, fake_clock: FakeClock, running: Any) -> None:
        """A stall longer than max_backlog is dropped as with "skip" instead of stepped flat out."""
        s = counter_session(overrun_policy="catch_up")
        times = timed_ticks(s, fake_clock, slow={5: 5.0})
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, max_backlog=1.0)
        running(clock)
        s.start()
        await until(lambda: s.step_count >= 10)
        gaps = [b - a for a, b in itertools.pairwise(times[6:10])]
        assert gaps == pytest.approx([DT] * 3, abs=1e-9)
        assert clock.statistics().overruns == 1

    async def test_catch_up_yields_to_the_loop(self, fake_clock: FakeClock, running: Any) -> None:
        """Catching up a backlog yields to the event loop every few ticks."""
        s = counter_session(overrun_policy="catch_up")
        timed_ticks(s, fake_clock, slow={5: 0.5})  # a 50-tick backlog
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, yield_ticks=8))
        s.start()
        await until(lambda: s.step_count >= 60)
        assert fake_clock.sleeps.count(0) >= 50 // 8 - 1

    async def test_fault_stops_catch_up_at_once(self, fake_clock: FakeClock, running: Any) -> None:
        """A fault in the middle of a catch-up burst stops the ticking at the faulting tick."""
        s = make_session(
            twin(
                "f",
                component("src", TimeSource, options={"record": False}),
                component("bad", Faulty, parameters={"at": 8}),
            ),
            step_size=DT,
            overrun_policy="catch_up",
        )
        timed_ticks(s, fake_clock, slow={5: 0.3})
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        s.start()
        await until(lambda: s.state is RunState.HALTED)
        await spin(200)
        assert s.step_count == 8
        assert clock.statistics().ticks == 8


class TestStatistics:
    def test_empty(self) -> None:
        """A clock that has not ticked reports zeros."""
        assert Clock(counter_session()).statistics() == ClockStatistics(0, 0, 0.0, 0.0, 0.0)

    async def test_lateness_percentiles(self, fake_clock: FakeClock, running: Any) -> None:
        """Every tick 2 ms late gives p50 = p99 = max = 2 ms."""
        fake_clock.oversleep = 0.002
        s = counter_session()
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        s.start()
        await until(lambda: s.step_count >= 100)
        stats = clock.statistics()
        assert stats.ticks == s.step_count
        assert (stats.lateness_p50, stats.lateness_p99, stats.lateness_max) == pytest.approx(
            (0.002, 0.002, 0.002), abs=1e-9
        )

    async def test_window_keeps_recent_ticks(self, fake_clock: FakeClock, running: Any) -> None:
        """Statistics cover only the last ``window`` ticks."""
        fake_clock.oversleep = lambda: 0.004 if s.step_count >= 40 else 0.001
        s = counter_session()
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, window=16)
        running(clock)
        s.start()
        await until(lambda: s.step_count >= 70)
        stats = clock.statistics()
        assert stats.lateness_p50 == pytest.approx(0.004, abs=1e-9)
        assert stats.lateness_max == pytest.approx(0.004, abs=1e-9)

    async def test_percentiles_of_mixed_lateness(self, fake_clock: FakeClock, running: Any) -> None:
        """One late tick in a hundred shows in p99 and max, not in p50."""
        fake_clock.oversleep = lambda: 0.009 if s.step_count % 100 == 50 else 0.001
        s = counter_session()
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, window=1000)
        running(clock)
        s.start()
        await until(lambda: s.step_count >= 1000)
        stats = clock.statistics()
        assert stats.lateness_p50 == pytest.approx(0.001, abs=1e-9)
        assert stats.lateness_max == pytest.approx(0.009, abs=1e-9)
        assert 0.001 < stats.lateness_p99 <= 0.009
        assert stats.overruns == 0

    async def test_lateness_counts(self, fake_clock: FakeClock, running: Any) -> None:
        """Every tick is counted in its lateness bucket since the start, past the window."""
        fake_clock.oversleep = lambda: 0.009 if s.step_count % 10 == 5 else 0.001
        s = counter_session()
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, window=16)
        running(clock)
        s.start()
        await until(lambda: s.step_count >= 100)
        counts = clock.statistics().lateness_counts
        assert len(counts) == LATENESS_BUCKETS == len(LATENESS_EDGES) + 1
        assert sum(counts) == clock.statistics().ticks >= 100
        late = sum(counts[bisect.bisect_left(LATENESS_EDGES, 0.008):])
        assert counts[bisect.bisect_left(LATENESS_EDGES, 0.001)] == sum(counts) - late
        assert late in (sum(counts) // 10, sum(counts) // 10 + 1)

    def test_window_must_hold_a_tick(self) -> None:
        """A window of 0 is refused."""
        with pytest.raises(ValueError, match="at least 1"):
            Clock(counter_session(), window=0)


class TestFlatOut:
    async def test_factor_zero_never_waits(self, fake_clock: FakeClock, running: Any) -> None:
        """At factor 0 the clock only ever sleeps 0 (a yield), and other tasks keep running."""
        s = counter_session(realtime_factor=0.0)
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, yield_ticks=64))
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(other())
        s.start()
        await until(lambda: s.step_count >= 5000)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert set(fake_clock.sleeps) == {0}
        assert turns >= 5000 // 64 - 1

    async def test_yields_by_wall_time(self, fake_clock: FakeClock, running: Any) -> None:
        """At factor 0 the loop gets a turn once ticks have taken ``yield_interval`` of
        wall time, however many ticks that is."""
        s = counter_session(realtime_factor=0.0)
        real_tick = s.tick

        def tick() -> None:  # each tick takes 0.6 ms of (fake) wall time
            real_tick()
            fake_clock.advance(0.0006)

        s.tick = tick  # type: ignore[method-assign]
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep,
                      yield_interval=0.002, yield_ticks=10**9))
        runs: list[int] = []  # the ticks between two turns of another task

        async def watch() -> None:
            last = s.step_count
            while s.step_count < 2000:
                await asyncio.sleep(0)
                runs.append(s.step_count - last)
                last = s.step_count

        s.start()
        await asyncio.wait_for(watch(), timeout=10)
        assert max(runs) == 4  # the first 4 ticks to reach 2 ms: 2.4 ms
        assert set(fake_clock.sleeps) == {0}


SCRIPT: Script = {
    40: [(VarKey("pid", Kind.INPUT, "setpoint"), 1.4)],
    90: [(VarKey("pid", Kind.PARAMETER, "kp"), 1.5)],
    150: [(VarKey("tank", Kind.STATE, "level"), 0.7)],
    151: [(VarKey("pid", Kind.INPUT, "setpoint"), 0.9)],
}


class TestDeterminism:
    async def reference(self, ticks: int) -> dict[str, Any]:
        s = make_session(tank_pid_twin(), step_size=DT)
        run_scripted(s, ticks, SCRIPT)
        return bits(s.values())

    @pytest.mark.parametrize(
        ("factor", "policy", "jitter"),
        [
            pytest.param(1.0, "skip", 0.0, id="rt1"),
            pytest.param(1.0, "skip", 3.0, id="rt1-jitter-skip"),
            pytest.param(1.0, "catch_up", 3.0, id="rt1-jitter-catch-up"),
            pytest.param(10.0, "skip", 0.5, id="rt10"),
            pytest.param(0.0, "skip", 0.0, id="flat-out"),
        ],
    )
    async def test_bit_identical_across_factors(
        self, fake_clock: FakeClock, running: Any, factor: float, policy: str, jitter: float
    ) -> None:
        """Tank+PID with scripted writes ends bit-identical to step(n) at any factor or policy."""
        rng = random.Random(3)
        fake_clock.oversleep = lambda: rng.uniform(0, jitter * DT)
        s = make_session(
            tank_pid_twin(), step_size=DT, realtime_factor=factor, overrun_policy=policy
        )
        script_clock_ticks(s, SCRIPT, stop_at=200)
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep))
        s.start()
        await until(lambda: s.state is RunState.SUSPENDED)
        assert s.step_count == 200
        assert bits(s.values()) == await self.reference(200)

    async def test_bit_identical_in_real_time(self, running: Any) -> None:
        """A short real-time run (10 ms steps for 0.3 s) ends bit-identical to step(n)."""
        s = make_session(tank_pid_twin(), step_size=DT, realtime_factor=1.0)
        script = {k: v for k, v in SCRIPT.items() if k < 30} | {
            10: [(VarKey("pid", Kind.INPUT, "setpoint"), 1.4)],
            20: [(VarKey("pid", Kind.PARAMETER, "ki"), 0.5)],
        }
        script_clock_ticks(s, script, stop_at=30)
        clock = Clock(s)
        running(clock)
        began = time.monotonic()
        s.start()
        await asyncio.wait_for(
            until(lambda: s.state is RunState.SUSPENDED, spins=10**9), timeout=10
        )
        elapsed = time.monotonic() - began
        assert s.step_count == 30
        assert elapsed >= 30 * DT - 0.005
        reference = make_session(tank_pid_twin(), step_size=DT)
        run_scripted(reference, 30, script)
        assert bits(s.values()) == bits(reference.values())
        assert clock.statistics().ticks == 30


class TestLifecycle:
    async def test_cancel_unsubscribes(self, running: Any) -> None:
        """Cancelling run() removes the clock's listener from the session."""
        s = counter_session()
        r = running(Clock(s))
        await spin(10)
        assert len(s._listeners) == 1
        await r.stop()
        assert s._listeners == []

    async def test_reset_and_restart(self, fake_clock: FakeClock, running: Any) -> None:
        """After Halt, Reset and Start the clock paces the session again from t0."""
        s = make_session(twin("g", component("g", Gain, options={"record": False})), step_size=DT)
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        s.start()
        await until(lambda: s.step_count >= 5)
        s.halt()
        s.reset()
        await spin(50)
        assert s.step_count == 0
        s.start()
        await until(lambda: s.step_count >= 5)
        assert clock.statistics().overruns == 0


class TestCollector:
    """Garbage collection paced by the ticks (``Collector``)."""

    @pytest.fixture
    def collector(self) -> Any:
        from twin_server.runtime.clock import Collector

        enabled = gc.isenabled()
        gc.enable()
        yield Collector()
        if enabled:
            gc.enable()
        else:
            gc.disable()

    async def test_off_while_a_paced_clock_runs(
        self, collector: Any, fake_clock: FakeClock, running: Any
    ) -> None:
        """CPython's automatic collections are off while a clock paces its session
        and on again when the last such clock stops."""
        s = counter_session()
        r = running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, collector=collector))
        s.start()
        await until(lambda: s.step_count >= 3)
        assert not gc.isenabled()
        s.suspend()
        await spin(20)
        assert gc.isenabled()
        s.resume()
        await until(lambda: s.step_count >= 6)
        await r.stop()
        assert gc.isenabled()

    async def test_leaves_a_disabled_collector_off(
        self, collector: Any, fake_clock: FakeClock, running: Any
    ) -> None:
        """A collector that was off before the clock started stays off after it."""
        gc.disable()
        s = counter_session()
        r = running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, collector=collector))
        s.start()
        await until(lambda: s.step_count >= 3)
        await r.stop()
        assert not gc.isenabled()
        assert collector.collections == [0, 0, 0]

    def test_young_generations_after_a_tick(self, collector: Any) -> None:
        """After a tick the young generation is collected when its threshold is passed."""
        collector.enter()
        try:
            junk = [[] for _ in range(2 * gc.get_threshold()[0])]
            assert gc.get_count()[0] >= gc.get_threshold()[0]
            collector.after_tick(0.009)
            assert sum(collector.collections[:2]) == 1
            assert gc.get_count()[0] < gc.get_threshold()[0]
            del junk
        finally:
            collector.exit()

    def test_full_collection_only_in_slack(self, collector: Any) -> None:
        """A full collection runs when the slack exceeds the last one's duration, or
        when none ran for full_interval seconds; otherwise a young one runs."""
        threshold = gc.get_threshold()
        gc.set_threshold(10, 1, 1)
        collector.enter()
        try:
            collector.full_seconds = 0.05
            for slack, interval, full in ((0.01, 600.0, False), (1.0, 600.0, True),
                                          (0.0, 0.0, True)):
                collector.full_interval = interval
                junk = [[] for _ in range(100)]
                gc.collect(1)  # generation 2 is due after the next generation 1
                gc.collect(0)  # which is due next
                junk += [[] for _ in range(100)]
                before = collector.collections[2]
                collector.after_tick(slack)
                assert (collector.collections[2] > before) is full, (slack, interval)
                del junk
        finally:
            collector.exit()
            gc.set_threshold(*threshold)


class TestDueIn:
    async def test_seconds_to_the_next_tick(self, fake_clock: FakeClock, running: Any) -> None:
        """due_in is None until the clock paces a running session, then the time to
        the next deadline, and None again once suspended."""
        s = counter_session()
        clock = Clock(s, now=fake_clock.now, sleep=fake_clock.sleep)
        running(clock)
        await spin(10)
        assert clock.due_in() is None
        s.start()
        await until(lambda: s.step_count >= 3)
        due = clock.due_in()
        assert due is not None and 0.0 <= due <= DT + 1e-9
        s.suspend()
        await spin(20)
        assert clock.due_in() is None



class TestPhase:
    async def test_phase_shifts_every_deadline(self, fake_clock: FakeClock,
                                               running: Any) -> None:
        """A clock with phase 0.25 ticks a quarter period later than one without, every tick."""
        s = counter_session()
        times = timed_ticks(s, fake_clock)
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, phase=0.25))
        t0 = fake_clock.now()
        s.start()
        await until(lambda: s.step_count >= 3)
        assert times[:3] == pytest.approx(
            [t0 + 1.25 * DT, t0 + 2.25 * DT, t0 + 3.25 * DT], abs=1e-12)

    @pytest.mark.parametrize("phase", [pytest.param(-0.1, id="negative"),
                                       pytest.param(1.0, id="a-whole-period")])
    def test_phase_is_a_fraction_of_a_period(self, phase: float) -> None:
        """A phase outside [0, 1) is refused."""
        with pytest.raises(ValueError, match="fraction of a period"):
            Clock(counter_session(), phase=phase)


def deadline_at(when: float) -> Clock:
    """A clock pacing nothing, its next deadline at ``when`` (a tick that never comes)."""
    clock = Clock(counter_session())
    clock._deadline = when
    return clock


class TestTicks:
    """``Ticks``: work that can wait lets a tick about to fall due run first."""

    async def test_no_clock_no_wait(self) -> None:
        ticks = Ticks()
        await ticks.clear(10.0)
        assert ticks.due_in() is None and ticks.waits == 0

    async def test_far_tick_no_wait(self, fake_clock: FakeClock) -> None:
        """Work shorter than the time to the next tick goes on at once."""
        ticks = Ticks(now=fake_clock.now)
        ticks.enter(deadline_at(fake_clock.now() + 1.0))
        await ticks.clear(0.5)
        assert ticks.waits == 0

    async def test_waits_for_the_tick(self, fake_clock: FakeClock, running: Any) -> None:
        """Work that would overlap the next deadline resumes once that tick has run,
        and waits once only."""
        ticks = Ticks(now=fake_clock.now)
        s = counter_session()
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, ticks=ticks))
        s.start()
        await until(lambda: ticks.due_in() is not None)
        steps = s.step_count
        await ticks.clear(2 * DT)
        assert s.step_count == steps + 1 and ticks.waits == 1

    async def test_short_work_never_waits(self, fake_clock: FakeClock) -> None:
        """Work shorter than SHORT_WORK goes on even when a tick is late."""
        ticks = Ticks(now=fake_clock.now)
        ticks.enter(deadline_at(fake_clock.now() - 1.0))
        await ticks.clear(SHORT_WORK / 2, patience=60.0)
        assert ticks.waits == 0

    async def test_soonest_of_several_clocks(self, fake_clock: FakeClock) -> None:
        """due_in is the time to the soonest deadline of every pacing clock."""
        ticks = Ticks(now=fake_clock.now)
        now = fake_clock.now()
        later, sooner = deadline_at(now + 0.3), deadline_at(now + 0.1)
        ticks.enter(later)
        ticks.enter(sooner)
        assert ticks.due_in() == pytest.approx(0.1)
        ticks.exit(sooner)
        assert ticks.due_in() == pytest.approx(0.3)
        ticks.exit(later)
        assert ticks.due_in() is None

    async def test_only_pacing_clocks(self, fake_clock: FakeClock, running: Any) -> None:
        """A clock is in the schedule while it paces a running session."""
        ticks = Ticks(now=fake_clock.now)
        s = counter_session()
        running(Clock(s, now=fake_clock.now, sleep=fake_clock.sleep, ticks=ticks))
        await spin(10)
        assert ticks.due_in() is None
        s.start()
        await until(lambda: ticks.due_in() is not None)
        s.suspend()
        await until(lambda: ticks.due_in() is None)

    async def test_suspend_releases_waiting_work(self, fake_clock: FakeClock,
                                                 running: Any) -> None:
        """A clock that stops pacing lets the work waiting for its tick go on."""
        ticks = Ticks(now=fake_clock.now)
        stuck = deadline_at(fake_clock.now() - 1.0)  # late, and its tick never comes
        ticks.enter(stuck)
        waiter = asyncio.ensure_future(ticks.clear(0.01, patience=60.0))
        await spin(20)
        assert not waiter.done()
        ticks.exit(stuck)
        await asyncio.wait_for(waiter, 5)
        assert ticks.waits == 1

    async def test_patience(self, fake_clock: FakeClock) -> None:
        """A tick that does not come within ``patience`` of its deadline is not waited
        for any longer."""
        ticks = Ticks(now=fake_clock.now)
        ticks.enter(deadline_at(fake_clock.now()))
        started = time.monotonic()
        await ticks.clear(1.0, patience=0.02)
        assert 0.015 <= time.monotonic() - started < 2.0
