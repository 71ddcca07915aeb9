"""Both hosts behave alike: bit-identical results to the engine alone, a write's
effect at the next tick, the engine's exceptions with their fields, the events."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.engine.conftest import faulting_twin, noisy_loop_twin
from tests.runtime.conftest import DEMO, EventLog, wait_until
from tests.runtime.models import echo_twin
from twin_server.engine.session import RunState, Session, SessionSettings, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    InvalidArgument,
    InvalidState,
    NotFound,
    OutOfRange,
    SessionFault,
    TypeMismatch,
)
from twin_server.models.base import Kind
from twin_server.runtime import HostedSession, LocalHost, WorkerHost, local
from twin_server.runtime.compile import load_config

Host = LocalHost | WorkerHost
U = VarKey("echo", Kind.INPUT, "u")
Y = VarKey("echo", Kind.OUTPUT, "y")


def bits(values: Any) -> list[Any]:
    """Values as their exact bits: two lists are equal only if every float is."""
    return [(type(v).__name__, struct.pack("<d", v) if isinstance(v, float) else v)
            for v in values]


def engine_alone(definition: TwinDefinition, settings: SessionSettings, ticks: int) -> list[Any]:
    session = Session("reference", definition, settings)
    session.step(ticks)
    return bits(session.value_list())


def demo_twins() -> dict[str, TwinDefinition]:
    return dict(load_config(DEMO).twins)


class TestDeterminism:
    @pytest.mark.parametrize("twin_name", ["tank_level", "heated_room"])
    async def test_stepped_values_are_bit_identical(self, host: Host, twin_name: str) -> None:
        """Step(n) in the host gives exactly the engine's own values, every variable."""
        definition = demo_twins()[twin_name]
        settings = SessionSettings(step_size=0.01)
        await host.create("s", definition, settings)
        session = HostedSession(host, "s")
        await session.step(1500)
        await session.step(500)
        frame = session.frame()
        assert frame.step_count == 2000
        assert frame.sim_time == 2000 * 0.01
        assert bits(frame.values) == engine_alone(definition, settings, 2000)

    async def test_clock_driven_values_are_bit_identical(self, host: Host) -> None:
        """Ticks the clock takes (flat out, then suspended) give the engine's values at
        whatever tick it stopped."""
        definition = noisy_loop_twin()
        settings = SessionSettings(step_size=0.01, realtime_factor=0.0)
        await host.create("s", definition, settings)
        session = HostedSession(host, "s")
        await session.start()
        await wait_until(lambda: session.frame().step_count >= 300)
        await session.suspend()
        frame = session.frame()
        assert frame.state is RunState.SUSPENDED
        assert bits(frame.values) == engine_alone(definition, settings, frame.step_count)

    async def test_restore_across_hosts_continues_identically(self, host: Host) -> None:
        """A snapshot taken in one session and restored into another continues exactly."""
        definition = noisy_loop_twin()
        settings = SessionSettings(step_size=0.01)
        await host.create("a", definition, settings)
        a = HostedSession(host, "a")
        await a.step(200)
        snap = await a.snapshot()
        await host.create("b", definition, settings, snapshot=snap)
        b = HostedSession(host, "b")
        assert b.frame().step_count == 200
        await a.step(300)
        await b.step(300)
        assert bits(a.frame().values) == bits(b.frame().values)
        assert bits(b.frame().values) == engine_alone(definition, settings, 500)


class TestCommands:
    async def test_write_reaches_the_model_at_the_next_tick(self, host: Host) -> None:
        """A forced input shows at once; the output it drives changes with the next tick."""
        await host.create("s", echo_twin(), SessionSettings(step_size=0.01))
        session = HostedSession(host, "s")
        await session.start()
        await wait_until(lambda: session.frame().step_count >= 3)
        assert await session.write(U, 5) == 5.0
        written = session.values()
        assert (written[U], written[Y]) == (5.0, 0.0)
        before = session.frame().step_count
        await wait_until(lambda: session.frame().step_count > before)
        assert session.values()[Y] == 5.0

    async def test_parameters_reset_and_release(self, host: Host) -> None:
        """set_parameters answers the coerced values; reset brings t back to 0."""
        await host.create("s", faulting_twin(100), SessionSettings(step_size=0.5))
        session = HostedSession(host, "s")
        assert await session.set_parameters({"after": {"k": 3}}) == {"after": {"k": 3.0}}
        await session.step(4)
        assert session.frame().step_count == 4
        await session.reset()
        frame = session.frame()
        assert (frame.step_count, frame.state) == (0, RunState.READY)
        await session.set_realtime_factor(2.5)
        assert session.frame().realtime_factor == 2.5

    async def test_clock_counts_ticks_by_lateness(self, host: Host) -> None:
        """The clock's ticks by lateness reach the main process, every tick counted once
        (the one being taken as the statistics were written, too)."""
        await host.create("s", echo_twin(), SessionSettings(step_size=0.01))
        await host.call("s", "start")
        await wait_until(lambda: host.clock_statistics("s").ticks >= 20)
        stats = host.clock_statistics("s")
        assert stats.ticks <= sum(stats.lateness_counts) <= stats.ticks + 1

    async def test_statistics_and_layout(self, host: Host) -> None:
        """The layout lists the session's variables; statistics count its ticks."""
        layout = await host.create("s", echo_twin(), SessionSettings(step_size=0.01))
        assert [key for key, _ in layout.variables] == [U, Y]
        session = HostedSession(host, "s")
        await session.step(7)
        stats = await session.statistics()
        assert (stats.step_count, stats.state) == (7, RunState.SUSPENDED)


class TestErrors:
    async def test_out_of_range_write(self, host: Host) -> None:
        """A write out of range raises OutOfRange with the engine's message; nothing changed."""
        await host.create("s", echo_twin(), SessionSettings())
        with pytest.raises(OutOfRange) as caught:
            await host.call("s", "write", U, 500.0)
        assert str(caught.value) == (
            "input 'u' of component 'echo' must be within [-100, 100] (got 500.0)")
        assert caught.value.status == "BadOutOfRange"
        assert HostedSession(host, "s").values()[U] == 0.0

    async def test_invalid_state_keeps_its_fields(self, host: Host) -> None:
        """InvalidState crosses with its session and state fields."""
        await host.create("s", echo_twin(), SessionSettings())
        with pytest.raises(InvalidState) as caught:
            await host.call("s", "resume")
        assert (caught.value.session, caught.value.state) == ("s", "Ready")
        assert "cannot Resume session 's' in state Ready" in str(caught.value)

    @pytest.mark.parametrize(("command", "args", "error"), [
        pytest.param("write", (VarKey("nope", Kind.INPUT, "u"), 1.0), NotFound, id="no-component"),
        pytest.param("write", (U, "text"), TypeMismatch, id="wrong-type"),
        pytest.param("step", (0,), InvalidArgument, id="bad-count"),
        pytest.param("launch", (), InvalidArgument, id="no-such-command"),
    ])
    async def test_refusals(self, host: Host, command: str, args: tuple[Any, ...],
                            error: type[Exception]) -> None:
        """Each refusal is the engine's own exception class."""
        await host.create("s", echo_twin(), SessionSettings())
        with pytest.raises(error):
            await host.call("s", command, *args)

    async def test_model_fault_is_reported_with_its_fields(self, host: Host,
                                                           events: EventLog) -> None:
        """A model's fault halts the session; the host holds it with component and tick."""
        await host.create("s", faulting_twin(3), SessionSettings(step_size=0.5))
        await host.call("s", "step", 10)
        fault = host.fault("s")
        assert isinstance(fault, SessionFault)
        assert (fault.session, fault.component, fault.tick) == ("s", "bad", 3)
        assert isinstance(fault.cause, ZeroDivisionError)
        assert host.frame("s").state is RunState.HALTED
        assert (await events.wait("s", "fault")).message == str(fault)
        await host.call("s", "reset")
        assert host.fault("s") is None

    async def test_unknown_session(self, host: Host) -> None:
        """A session the host does not hold is NotFound, for calls and reads alike."""
        with pytest.raises(NotFound):
            await host.call("ghost", "start")
        with pytest.raises(NotFound):
            host.frame("ghost")


class TestEvents:
    async def test_events_in_order(self, host: Host, events: EventLog) -> None:
        """The session's events reach the listener in order, the closing one included."""
        await host.create("s", echo_twin(), SessionSettings())
        for command in ("start", "suspend", "resume", "halt", "reset"):
            await host.call("s", command)
        await host.call("s", "emit", "created", "made by a test", 100)
        await host.delete("s")
        await asyncio.sleep(0)
        assert events.kinds("s") == ["started", "suspended", "resumed", "halted", "reset",
                                     "created", "closed"]
        assert host.names() == []


class TestStepInTheBackground:
    async def test_a_long_step_answers_at_once_and_runs_on(self, host: Host,
                                                           events: EventLog) -> None:
        """Step(n) with no wait answers at once, Running in the background: the frame
        counts its steps down, ticks advance, and it is announced as started."""
        await host.create("s", demo_twins()["tank_level"], SessionSettings(step_size=0.01))
        session = HostedSession(host, "s")
        progress = await session.step(1_000_000, wait=0)
        assert progress.running and progress.count == 1_000_000
        assert session.frame().state is RunState.SUSPENDED
        await wait_until(lambda: session.frame().step_count > 0)
        frame = session.frame()
        assert frame.steps_remaining == 1_000_000 - frame.step_count > 0
        await events.wait("s", "step_started")
        await session.halt()  # (cancels it)

    async def test_refusals_name_the_running_step(self, host: Host) -> None:
        """While a Step runs, Start, Resume and another Step are refused with
        InvalidState naming it; nothing changes."""
        await host.create("s", demo_twins()["tank_level"], SessionSettings(step_size=0.01))
        session = HostedSession(host, "s")
        await session.step(1_000_000, wait=0)
        for refused in (session.start(), session.resume(), session.step(5)):
            with pytest.raises(InvalidState, match=r"its Step\(1000000\) is running"):
                await refused
        assert session.frame().state is RunState.SUSPENDED
        await session.halt()

    @pytest.mark.parametrize(("command", "state"), [
        pytest.param("suspend", RunState.SUSPENDED, id="suspend"),
        pytest.param("halt", RunState.HALTED, id="halt"),
        pytest.param("reset", RunState.READY, id="reset"),
    ])
    async def test_suspend_halt_reset_cancel_it(self, host: Host, events: EventLog,
                                                command: str, state: RunState) -> None:
        """Suspend, Halt and Reset cancel a running Step (step_cancelled, saying which
        and how far it got); the session takes no more of its ticks."""
        await host.create("s", demo_twins()["tank_level"], SessionSettings(step_size=0.01))
        session = HostedSession(host, "s")
        await session.step(1_000_000, wait=0)
        await wait_until(lambda: session.frame().step_count > 100)
        await host.call("s", command)
        cancelled = await events.wait("s", "step_cancelled")
        assert f"cancelled by {command.capitalize()}" in cancelled.message
        frame = session.frame()
        assert (frame.state, frame.steps_remaining) == (state, 0)
        await asyncio.sleep(0.05)  # (ticks that must not come have no event to await)
        assert session.frame().step_count == frame.step_count

    async def test_a_step_answers_when_done_with_its_event(self, host: Host,
                                                           events: EventLog) -> None:
        """Waited for, a Step answers once its ticks are taken, exactly as many as asked,
        after its step_completed event (which names the count)."""
        await host.create("s", demo_twins()["tank_level"], SessionSettings(step_size=0.01))
        session = HostedSession(host, "s")
        progress = await session.step(3_000)
        assert (progress.running, progress.taken, progress.remaining) == (False, 3_000, 0)
        assert (session.frame().step_count, session.frame().steps_remaining) == (3_000, 0)
        completed = await events.wait("s", "step_completed", timeout=1.0)
        assert "Step(3000) completed: 3000 ticks taken" in completed.message
        kinds = events.kinds("s")
        assert kinds.index("step_started") < kinds.index("step_completed")

    async def test_a_waiting_step_answers_after_its_wait(self, host: Host) -> None:
        """A Step that takes longer than its wait answers after about that wait, still
        running."""
        await host.create("s", demo_twins()["tank_level"], SessionSettings(step_size=0.01))
        session = HostedSession(host, "s")
        started = asyncio.get_running_loop().time()
        progress = await session.step(1_000_000, wait=0.3)
        waited = asyncio.get_running_loop().time() - started
        assert progress.running and 0 < progress.taken < 1_000_000
        assert 0.25 <= waited < 1.5
        await session.halt()

    async def test_a_fault_ends_the_step(self, host: Host, events: EventLog) -> None:
        """A model's fault during a background Step halts the session and ends the Step
        (no completion); the Step's answer says it is not running."""
        await host.create("s", faulting_twin(5_000), SessionSettings(step_size=0.01))
        session = HostedSession(host, "s")
        progress = await session.step(100_000)
        assert not progress.running and progress.taken == 5_000
        await events.wait("s", "fault")
        frame = session.frame()
        assert (frame.state, frame.steps_remaining) == (RunState.HALTED, 0)
        assert "step_completed" not in events.kinds("s")


async def _deaf_clock(session: Session) -> None:
    """A clock that does not take its cancellation (what a lost cancellation looked
    like): it ticks flat out while the session runs."""
    while session.state is RunState.RUNNING:
        try:
            session.tick()
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            continue


class TestLocalDelete:
    async def test_a_clock_that_does_not_end_is_reported_and_the_delete_ends(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Deleting a session whose clock task ignores its cancellation ends within the
        stop timeout: the error names the session and where its clock was, and the
        closed session stops ticking."""
        monkeypatch.setattr(local, "CLOCK_STOP_TIMEOUT", 0.5)
        events = EventLog()
        host = LocalHost(events, clocks=False)
        definition = noisy_loop_twin()
        await host.create("s", definition, SessionSettings(step_size=0.01, realtime_factor=0.0))
        session = host.session("s")
        session.start()
        deaf = asyncio.create_task(_deaf_clock(session))
        host._sessions["s"].task = deaf
        await wait_until(lambda: session.step_count > 100)
        with capture_logs() as logs:
            async with asyncio.timeout(20):
                await host.delete("s")
        [stop] = [e for e in logs if e["event"] == "clock_stop_timeout"]
        assert stop["session"] == "s" and "_deaf_clock" in stop["stack"]
        async with asyncio.timeout(5):
            await deaf  # (it ended: the closed session no longer runs)
        assert session.closed
        await host.aclose()

    async def test_stopping_the_clocks_is_bounded_too(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The daemon's shutdown stage that stops the clocks ends within the stop
        timeout when a clock ignores its cancellation, and names it."""
        monkeypatch.setattr(local, "CLOCK_STOP_TIMEOUT", 0.5)
        host = LocalHost(EventLog(), clocks=False)
        await host.create("s", noisy_loop_twin(),
                          SessionSettings(step_size=0.01, realtime_factor=0.0))
        session = host.session("s")
        session.start()
        deaf = asyncio.create_task(_deaf_clock(session))
        host._sessions["s"].task = deaf
        await wait_until(lambda: session.step_count > 100)
        with capture_logs() as logs:
            async with asyncio.timeout(20):
                await host.stop_clocks()
        assert [e["session"] for e in logs if e["event"] == "clock_stop_timeout"] == ["s"]
        await host.aclose()  # (closes the session: the deaf clock stops ticking)
        async with asyncio.timeout(5):
            await deaf
