"""Session: stepping order, forced inputs, writes and refusals, run states, reset,
faults, events and determinism, on small hand-built twins (see conftest)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine.conftest import (
    Faulty,
    Gain,
    Integrator,
    Script,
    Switch,
    TimeSource,
    Tracked,
    bits,
    component,
    loop_twin,
    make_session,
    run_scripted,
    tank_pid_twin,
    twin,
)
from twin_server.engine.session import (
    RunState,
    Session,
    SessionEvent,
    SessionSettings,
    VarKey,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    ConfigError,
    InvalidArgument,
    InvalidState,
    NotFound,
    NotWritable,
    OutOfRange,
    SessionFault,
    TypeMismatch,
)
from twin_server.models.base import Kind


def inp(c: str, n: str) -> VarKey:
    return VarKey(c, Kind.INPUT, n)


def out(c: str, n: str) -> VarKey:
    return VarKey(c, Kind.OUTPUT, n)


def state(c: str, n: str) -> VarKey:
    return VarKey(c, Kind.STATE, n)


def par(c: str, n: str) -> VarKey:
    return VarKey(c, Kind.PARAMETER, n)


def reference_loop(ticks: int, dt: float) -> list[tuple[float, float, float]]:
    """The loop twin computed by hand: (integ.u, fb.u, sum.u) seen at each tick."""
    x, sum_y = 1.0, 0.0
    seen = []
    for _ in range(ticks):
        integ_u = sum_y  # previous tick's: sum runs after integ
        x += 1.0 * integ_u * dt
        fb_u = x  # this tick's
        fb_y = -0.5 * fb_u + 0.25
        sum_u = fb_y  # this tick's
        sum_y = 2.0 * sum_u
        seen.append((integ_u, fb_u, sum_u))
    return seen


def model(session: Session, name: str) -> Any:
    return session.components()[name]


class TestStepping:
    def test_loop_through_integrator_uses_this_and_previous_tick(
        self, loop_session: Session
    ) -> None:
        """An input sees an earlier component's output of this tick, a later one's of the last."""
        loop_session.step(5)
        seen = [
            (
                model(loop_session, "integ").calls[k][1]["u"],
                model(loop_session, "fb").calls[k][1]["u"],
                model(loop_session, "sum").calls[k][1]["u"],
            )
            for k in range(5)
        ]
        assert seen == reference_loop(5, 0.1)

    def test_components_run_in_definition_order(self, loop_session: Session) -> None:
        """components() lists the models in evaluation order."""
        assert list(loop_session.components()) == ["src", "integ", "fb", "sum"]

    def test_first_tick_sees_initial_outputs(self, loop_session: Session) -> None:
        """Before any tick, inputs read what the first tick will give them (initial outputs)."""
        assert loop_session.read(inp("integ", "u")) == 0.0
        assert loop_session.read(inp("fb", "u")) == 1.0  # integ's initial y = x0
        assert loop_session.read(inp("sum", "u")) == 0.25

    @pytest.mark.parametrize(
        ("configured", "expected"),
        [
            pytest.param({}, 0.0, id="variable-default"),
            pytest.param({"u": 3.5}, 3.5, id="configured-default"),
        ],
    )
    def test_unconnected_input_takes_default(
        self, configured: dict[str, float], expected: float
    ) -> None:
        """An unconnected input takes the configured default, else the variable's default."""
        s = make_session(twin("t", component("g", Gain, inputs=configured)))
        s.step(2)
        assert [c[1]["u"] for c in model(s, "g").calls] == [expected, expected]
        assert s.read(out("g", "y")) == expected

    def test_outputs_after_each_tick(self, loop_session: Session) -> None:
        """read() returns the outputs of the last tick."""
        loop_session.step(3)
        _, fb_u, sum_u = reference_loop(3, 0.1)[-1]
        assert loop_session.read(out("fb", "y")) == -0.5 * fb_u + 0.25
        assert loop_session.read(out("sum", "y")) == 2.0 * sum_u
        assert loop_session.read(state("integ", "x")) == fb_u

    @settings(max_examples=60, deadline=None)
    @given(
        dt=st.floats(min_value=1e-6, max_value=1e3, allow_nan=False, allow_infinity=False),
        ticks=st.integers(min_value=1, max_value=300),
    )
    def test_time_is_counted_not_accumulated(self, dt: float, ticks: int) -> None:
        """Every tick k steps from t == k*dt exactly, and sim_time == k*dt."""
        s = make_session(twin("t", component("clock", TimeSource)), step_size=dt)
        s.step(ticks)
        assert [t for t, _ in model(s, "clock").calls] == [k * dt for k in range(ticks)]
        assert s.sim_time == ticks * dt
        assert s.step_count == ticks

    def test_version_bumps_every_tick(self, loop_session: Session) -> None:
        """version grows with every tick."""
        before = loop_session.version
        loop_session.step(3)
        assert loop_session.version >= before + 3

    def test_unknown_connection_port_is_a_config_error(self) -> None:
        """A hand-built twin connecting an unknown port is refused with the connection named."""
        bad = twin("t", component("a", Gain), component("b", Gain), connections=("a.nope -> b.u",))
        with pytest.raises(ConfigError, match=r"a\.nope -> b\.u"):
            make_session(bad)


class TestForcedInputs:
    def test_forced_input_wins_over_connection(self, loop_session: Session) -> None:
        """A forced input takes its forced value every tick, not the connected output."""
        loop_session.write(inp("fb", "u"), 4.0)
        loop_session.step(3)
        assert [c[1]["u"] for c in model(loop_session, "fb").calls] == [4.0] * 3
        assert loop_session.read(out("fb", "y")) == -0.5 * 4.0 + 0.25
        assert loop_session.forced() == {inp("fb", "u"): 4.0}

    def test_reforcing_updates_value(self, loop_session: Session) -> None:
        """Writing a forced input again changes the value the next tick uses."""
        loop_session.write(inp("fb", "u"), 4.0)
        loop_session.step(1)
        loop_session.write(inp("fb", "u"), 6.0)
        loop_session.step(1)
        assert [c[1]["u"] for c in model(loop_session, "fb").calls] == [4.0, 6.0]

    def test_release_follows_connection_again(self, loop_session: Session) -> None:
        """After release the input reads the connected output at once and follows it next tick."""
        loop_session.write(inp("fb", "u"), 4.0)
        loop_session.step(2)
        loop_session.release(inp("fb", "u"))
        assert loop_session.read(inp("fb", "u")) == loop_session.read(out("integ", "y"))
        loop_session.step(1)
        calls = model(loop_session, "fb").calls
        assert calls[-1][1]["u"] == loop_session.read(out("integ", "y"))
        assert loop_session.forced() == {}

    def test_release_unconnected_returns_to_default(self) -> None:
        """Releasing an unconnected input brings back its configured default."""
        s = make_session(twin("t", component("g", Gain, inputs={"u": 2.0})))
        s.write(inp("g", "u"), 9.0)
        s.release(inp("g", "u"))
        assert s.read(inp("g", "u")) == 2.0

    def test_reset_releases_forced_inputs(self, loop_session: Session) -> None:
        """Reset returns the session to its defined state: no input stays forced (a HIL
        binding forces its own again, told by the daemon)."""
        loop_session.write(inp("integ", "u"), 1.5)
        loop_session.step(2)
        events: list[SessionEvent] = []
        loop_session.subscribe(events.append)
        loop_session.reset()
        assert loop_session.forced() == {}
        loop_session.step(1)
        assert model(loop_session, "integ").calls[-1][1]["u"] != 1.5
        (reset,) = [e for e in events if e.kind == "reset"]
        assert "forced inputs released: integ.u" in reset.message

    def test_release_all(self, loop_session: Session) -> None:
        """release_all releases every forced input and names them, in component order."""
        loop_session.write(inp("fb", "u"), 4.0)
        loop_session.write(inp("integ", "u"), 1.5)
        assert loop_session.release_all() == [inp("integ", "u"), inp("fb", "u")]
        assert loop_session.forced() == {}
        assert loop_session.read(inp("fb", "u")) == loop_session.read(out("integ", "y"))
        assert loop_session.release_all() == []

    def test_forces_counter_moves_with_the_set(self, loop_session: Session) -> None:
        """``forces`` moves when the set of forced inputs changes, not when a forced
        input's value does (a HIL binding rewrites its inputs every cycle)."""
        before = loop_session.forces
        loop_session.write(inp("fb", "u"), 4.0)
        forced = loop_session.forces
        assert forced != before
        loop_session.write(inp("fb", "u"), 5.0)
        assert loop_session.forces == forced
        loop_session.release(inp("fb", "u"))
        assert loop_session.forces != forced

    def test_release_of_unforced_input_is_harmless(self, loop_session: Session) -> None:
        """Releasing an input that is not forced changes nothing."""
        before = loop_session.version
        assert loop_session.release(inp("fb", "u")) is False
        assert loop_session.version == before

    def test_release_of_non_input_is_refused(self, loop_session: Session) -> None:
        """Only inputs can be released."""
        with pytest.raises(InvalidArgument, match="only inputs"):
            loop_session.release(out("fb", "y"))


REFUSALS = [
    pytest.param(out("fb", "y"), 1.0, NotWritable, "output 'y' of component 'fb'", id="output"),
    pytest.param(
        par("integ", "gain"),
        1000,
        OutOfRange,
        r"parameter 'gain' of component 'integ' must be within \[-100, 100\] \(got 1000",
        id="out-of-range",
    ),
    pytest.param(
        inp("integ", "u"), math.nan, OutOfRange, "input 'u' of component 'integ'", id="nan"
    ),
    pytest.param(
        inp("integ", "u"),
        "1.0",
        TypeMismatch,
        "input 'u' of component 'integ' takes a Double",
        id="string-for-double",
    ),
    pytest.param(inp("integ", "u"), True, TypeMismatch, "takes a Double", id="bool-for-double"),
    pytest.param(
        inp("sw", "on"),
        1,
        TypeMismatch,
        "input 'on' of component 'sw' takes a Boolean",
        id="int-for-boolean",
    ),
    pytest.param(par("sw", "mode"), 1.5, TypeMismatch, "takes an Int32", id="fraction-for-int32"),
    pytest.param(
        par("sw", "mode"), 7, OutOfRange, r"within \[0, 3\] \(got 7\)", id="int32-out-of-range"
    ),
    pytest.param(
        VarKey("nope", Kind.INPUT, "u"),
        1.0,
        NotFound,
        "has no component 'nope' .*integ",
        id="unknown-component",
    ),
    pytest.param(
        inp("integ", "nope"),
        1.0,
        NotFound,
        "component 'integ' has no input 'nope' \\(its inputs: u\\)",
        id="unknown-variable",
    ),
    pytest.param(
        state("fb", "x"), 1.0, NotFound, "component 'fb' has no state 'x'", id="no-such-state"
    ),
    pytest.param(
        state("integ", "x"),
        1e9,
        OutOfRange,
        "state 'x' of component 'integ'",
        id="state-out-of-range",
    ),
]


def typed_twin_session() -> Session:
    definition = loop_twin()
    definition = twin(
        "loop",
        *definition.components,
        component("sw", Switch),
        connections=tuple(str(c) for c in definition.connections),
    )
    return make_session(definition, step_size=0.1)


class TestWrites:
    @pytest.mark.parametrize(("key", "value", "error", "message"), REFUSALS)
    def test_refused_write_changes_nothing(
        self, key: VarKey, value: Any, error: type[Exception], message: str
    ) -> None:
        """A refused write raises the matching error, says what was wrong, and changes nothing."""
        s = typed_twin_session()
        s.step(2)
        before, version = s.values(), s.version
        with pytest.raises(error, match=message):
            s.write(key, value)
        assert s.values() == before
        assert s.version == version
        assert s.forced() == {}

    def test_input_write_returns_coerced_value(self) -> None:
        """An int written to a Double input is stored (and returned) as a float."""
        s = typed_twin_session()
        assert s.write(inp("integ", "u"), 2) == 2.0
        assert isinstance(s.read(inp("integ", "u")), float)

    def test_int32_parameter_accepts_integral_float(self) -> None:
        """An integral float written to an Int32 parameter becomes an int."""
        s = typed_twin_session()
        assert s.write(par("sw", "mode"), 2.0) == 2
        s.write(inp("sw", "on"), True)
        s.step(2)
        assert s.read(out("sw", "count")) == 4
        assert s.read(out("sw", "label")) == "on"

    def test_state_write_applies_from_next_tick(self, loop_session: Session) -> None:
        """A written state is what the next tick advances from."""
        loop_session.step(2)
        loop_session.write(inp("integ", "u"), 1.0)
        loop_session.write(state("integ", "x"), 10.0)
        assert loop_session.read(state("integ", "x")) == 10.0
        loop_session.step(1)
        assert loop_session.read(out("integ", "y")) == 10.0 + 1.0 * 1.0 * 0.1

    def test_tunable_parameter_applies_at_next_tick_while_running(
        self, loop_session: Session
    ) -> None:
        """A tunable parameter written while Running takes effect at the next tick."""
        loop_session.write(inp("integ", "u"), 1.0)
        loop_session.start()
        loop_session.tick()
        x = loop_session.read(state("integ", "x"))
        loop_session.write(par("integ", "gain"), 3.0)
        assert loop_session.read(par("integ", "gain")) == 3.0
        loop_session.tick()
        assert loop_session.read(state("integ", "x")) == x + 3.0 * 1.0 * 0.1

    def test_fixed_parameter_refused_while_running(self, loop_session: Session) -> None:
        """A fixed parameter is refused while Running; the message says what to do."""
        loop_session.start()
        with pytest.raises(NotWritable) as info:
            loop_session.write(par("integ", "x0"), 5.0)
        assert str(info.value) == (
            "parameter 'x0' of component 'integ' is fixed while the session runs; "
            "suspend or halt it, write it, then Reset"
        )
        assert loop_session.read(par("integ", "x0")) == 1.0

    @pytest.mark.parametrize(
        "setup",
        [
            pytest.param(lambda s: None, id="ready"),
            pytest.param(lambda s: s.step(2), id="suspended"),
            pytest.param(lambda s: (s.start(), s.halt()), id="halted"),
        ],
    )
    def test_fixed_parameter_pending_until_reset(self, loop_session: Session, setup: Any) -> None:
        """A fixed parameter written while not running reads back at once and applies at Reset."""
        setup(loop_session)
        y_before = loop_session.read(out("integ", "y"))
        loop_session.write(par("integ", "x0"), 5.0)
        assert loop_session.read(par("integ", "x0")) == 5.0
        assert model(loop_session, "integ").parameters["x0"] == 1.0
        assert loop_session.read(out("integ", "y")) == y_before
        loop_session.reset()
        assert loop_session.read(state("integ", "x")) == 5.0
        assert loop_session.read(par("integ", "x0")) == 5.0
        assert model(loop_session, "integ").parameters["x0"] == 5.0

    def test_parameter_write_emits_event(self, loop_session: Session) -> None:
        """A parameter write is logged as a parameter_changed event naming it."""
        events: list[SessionEvent] = []
        loop_session.subscribe(events.append)
        loop_session.write(par("fb", "k"), 2.0)
        loop_session.write(par("integ", "x0"), 2.0)
        assert [e.kind for e in events] == ["parameter_changed", "parameter_changed"]
        assert "parameter 'k' of component 'fb' set to 2.0" in events[0].message
        assert "applies at the next Reset" in events[1].message

    def test_writes_bump_version(self, loop_session: Session) -> None:
        """Every accepted write bumps version."""
        v0 = loop_session.version
        loop_session.write(inp("fb", "u"), 1.0)
        loop_session.write(par("fb", "k"), 1.0)
        loop_session.write(state("integ", "x"), 1.0)
        assert loop_session.version == v0 + 3

    def test_variable_kind_given_as_string(self, loop_session: Session) -> None:
        """A VarKey whose kind is the plain string still finds the variable."""
        assert loop_session.read(VarKey("fb", "parameter", "k")) == -0.5  # type: ignore[arg-type]
        with pytest.raises(NotFound, match="not a kind"):
            loop_session.read(VarKey("fb", "bogus", "k"))  # type: ignore[arg-type]


ALL_STATES = [RunState.READY, RunState.RUNNING, RunState.SUSPENDED, RunState.HALTED]


def bring_to(s: Session, target: RunState) -> None:
    if target is RunState.RUNNING:
        s.start()
    elif target is RunState.SUSPENDED:
        s.step(1)
    elif target is RunState.HALTED:
        s.start()
        s.halt()


TRANSITIONS = {
    # method: {from-state: to-state}; any other from-state raises InvalidState
    "start": {RunState.READY: RunState.RUNNING},
    "suspend": {RunState.RUNNING: RunState.SUSPENDED},
    "resume": {RunState.SUSPENDED: RunState.RUNNING},
    "halt": {RunState.RUNNING: RunState.HALTED, RunState.SUSPENDED: RunState.HALTED},
    "step": {RunState.READY: RunState.SUSPENDED, RunState.SUSPENDED: RunState.SUSPENDED},
    "reset": {s: RunState.READY for s in ALL_STATES},
}
CASES = [
    pytest.param(
        method, start, TRANSITIONS[method].get(start), id=f"{method}-from-{start.value.lower()}"
    )
    for method in TRANSITIONS
    for start in ALL_STATES
]


class TestRunStates:
    @pytest.mark.parametrize(("method", "start", "expected"), CASES)
    def test_transition(
        self, loop_session: Session, method: str, start: RunState, expected: RunState | None
    ) -> None:
        """Each method moves between run states as the Program state machine says, or refuses."""
        bring_to(loop_session, start)
        assert loop_session.state is start
        if expected is None:
            with pytest.raises(InvalidState) as info:
                getattr(loop_session, method)()
            assert str(info.value).startswith(
                f"cannot {method.capitalize()} session 's' in state {start.value}"
            )
            assert info.value.session == "s"
            assert info.value.state == start.value
            assert loop_session.state is start
        else:
            getattr(loop_session, method)()
            assert loop_session.state is expected

    def test_invalid_state_text(self, loop_session: Session) -> None:
        """The refusal names the method, the session and its current state."""
        s = make_session(loop_twin(), name="tank")
        s.start()
        with pytest.raises(InvalidState, match=r"^cannot Resume session 'tank' in state Running"):
            s.resume()

    def test_events_for_transitions(self, loop_session: Session) -> None:
        """start/suspend/resume/halt/reset/step each emit their event."""
        events: list[SessionEvent] = []
        loop_session.subscribe(events.append)
        loop_session.step(2)
        loop_session.resume()
        loop_session.suspend()
        loop_session.halt()
        loop_session.reset()
        loop_session.start()
        assert [e.kind for e in events] == [
            "step_started",
            "step_completed",
            "resumed",
            "suspended",
            "halted",
            "reset",
            "started",
        ]
        assert events[1].message == "Step(2) completed: 2 ticks taken, now at t=0.2 s (tick 2)"

    def test_tick_only_while_running(self, loop_session: Session) -> None:
        """tick() refuses a session that is not Running (the clock must Step it instead)."""
        with pytest.raises(InvalidState, match="cannot tick session 's' in state Ready"):
            loop_session.tick()
        assert loop_session.step_count == 0

    @pytest.mark.parametrize(
        "count",
        [
            pytest.param(0, id="zero"),
            pytest.param(-1, id="negative"),
            pytest.param(1.5, id="fraction"),
            pytest.param(True, id="bool"),
        ],
    )
    def test_step_count_must_be_positive_int(self, loop_session: Session, count: Any) -> None:
        """Step(n) takes a whole number of ticks >= 1."""
        with pytest.raises(InvalidArgument, match="whole number of ticks"):
            loop_session.step(count)
        assert loop_session.state is RunState.READY

    @pytest.mark.parametrize(
        "factor",
        [
            pytest.param(-1.0, id="negative"),
            pytest.param(math.inf, id="inf"),
            pytest.param(math.nan, id="nan"),
        ],
    )
    def test_bad_realtime_factor_refused(self, loop_session: Session, factor: float) -> None:
        """The real-time factor must be finite and >= 0."""
        with pytest.raises(InvalidArgument, match="real-time factor"):
            loop_session.set_realtime_factor(factor)
        assert loop_session.realtime_factor == 1.0

    def test_realtime_factor_change_emits_event(self, loop_session: Session) -> None:
        """Changing the real-time factor is an event (the clock re-anchors on it)."""
        events: list[SessionEvent] = []
        loop_session.subscribe(events.append)
        loop_session.set_realtime_factor(0)
        assert loop_session.realtime_factor == 0.0
        assert [e.kind for e in events] == ["realtime_factor_changed"]


class TestStepInSlices:
    def test_slices_give_the_same_values_as_one_step(self) -> None:
        """begin_step then continue_step in uneven slices ends bit-identical to step(n)."""
        whole = make_session(loop_twin(), name="whole")
        whole.step(100)
        sliced = make_session(loop_twin(), name="sliced")
        sliced.begin_step(100)
        for limit in (1, 7, 30, 1000):
            sliced.continue_step(limit)
        assert sliced.steps_remaining == 0 and sliced.step_count == 100
        assert bits(sliced.values()) == bits(whole.values())

    def test_progress_and_events(self, loop_session: Session) -> None:
        """A Step counts its ticks down, ends Suspended, and is announced when it starts
        and when it completes, with its count."""
        events: list[SessionEvent] = []
        loop_session.subscribe(events.append)
        loop_session.begin_step(10)
        assert loop_session.state is RunState.SUSPENDED
        assert loop_session.continue_step(4) == 4
        assert loop_session.steps_remaining == 6
        progress = loop_session.step_progress()
        assert (progress.count, progress.taken, progress.running, progress.remaining) == (
            10, 4, True, 6)
        assert loop_session.continue_step(100) == 6
        assert loop_session.continue_step(100) == 0
        assert [e.kind for e in events] == ["step_started", "step_completed"]
        assert events[0].message == "Step(10) started at t=0 s (tick 0)"
        assert events[1].message == "Step(10) completed: 10 ticks taken, now at t=1 s (tick 10)"

    @pytest.mark.parametrize("method", ["start", "resume", "step", "begin_step"])
    def test_refused_while_a_step_runs(self, loop_session: Session, method: str) -> None:
        """Start, Resume and another Step are refused while a Step runs, naming it."""
        loop_session.begin_step(50)
        loop_session.continue_step(20)
        args = (1,) if "step" in method else ()
        with pytest.raises(InvalidState, match=r"its Step\(50\) is running \(20 of 50 ticks "
                           r"taken\); wait for its step_completed event, or Suspend"):
            getattr(loop_session, method)(*args)
        assert loop_session.steps_remaining == 30 and loop_session.step_count == 20

    @pytest.mark.parametrize(("method", "state"), [
        pytest.param("suspend", RunState.SUSPENDED, id="suspend"),
        pytest.param("halt", RunState.HALTED, id="halt"),
        pytest.param("reset", RunState.READY, id="reset"),
    ])
    def test_cancelled_by(self, loop_session: Session, method: str, state: RunState) -> None:
        """Suspend, Halt and Reset cancel a running Step: step_cancelled says how far it
        got; no more of its ticks are taken."""
        events: list[SessionEvent] = []
        loop_session.begin_step(50)
        loop_session.continue_step(20)
        loop_session.subscribe(events.append)
        getattr(loop_session, method)()
        assert events[0].kind == "step_cancelled"
        assert events[0].message.startswith(
            f"Step(50) cancelled by {method.capitalize()} after 20 of 50 ticks")
        assert loop_session.state is state and loop_session.steps_remaining == 0
        assert loop_session.continue_step(100) == 0

    def test_restore_cancels_it(self, loop_session: Session) -> None:
        """Restore cancels a running Step; a refused Restore does not."""
        snap = loop_session.snapshot()
        loop_session.begin_step(50)
        loop_session.continue_step(5)
        other = make_session(tank_pid_twin(), name="other")
        with pytest.raises(InvalidArgument):
            loop_session.restore(other.snapshot())
        assert loop_session.steps_remaining == 45
        loop_session.restore(snap)
        assert loop_session.steps_remaining == 0 and loop_session.step_count == 0

    def test_a_fault_ends_it(self) -> None:
        """A fault in a Step's tick halts the session and ends the Step, no completion."""
        s = make_session(faulty_twin(at=3, mode=0))
        events: list[SessionEvent] = []
        s.subscribe(events.append)
        s.begin_step(10)
        assert s.continue_step(10) == 3
        progress = s.step_progress()
        assert (progress.taken, progress.running) == (3, False)
        assert s.state is RunState.HALTED and s.steps_remaining == 0
        assert [e.kind for e in events] == ["step_started", "fault"]


class TestReset:
    def test_reset_restores_initial_state_and_time(self, loop_session: Session) -> None:
        """Reset returns to t0, tick 0, initial states and initial outputs."""
        initial = loop_session.values()
        loop_session.step(4)
        loop_session.reset()
        assert loop_session.step_count == 0
        assert loop_session.sim_time == 0.0
        assert loop_session.state is RunState.READY
        assert loop_session.values() == initial

    def test_reset_keeps_tuned_parameters(self, loop_session: Session) -> None:
        """A tuned parameter keeps its value across Reset (parameters belong to the session)."""
        loop_session.write(par("fb", "k"), 3.0)
        loop_session.reset()
        assert loop_session.read(par("fb", "k")) == 3.0
        assert model(loop_session, "fb").parameters["k"] == 3.0

    def test_reset_applies_overrides(self, loop_session: Session) -> None:
        """Overrides given to Reset apply, fixed ones included."""
        loop_session.step(2)
        loop_session.reset({"integ": {"x0": 2.0, "gain": 4}, "fb": {"bias": 1.0}})
        assert loop_session.read(state("integ", "x")) == 2.0
        assert loop_session.read(par("integ", "gain")) == 4.0
        assert loop_session.read(out("fb", "y")) == 1.0

    @pytest.mark.parametrize(
        ("overrides", "error"),
        [
            pytest.param({"integ": {"x0": 2.0, "gain": 1000.0}}, OutOfRange, id="out-of-range"),
            pytest.param(
                {"integ": {"x0": 2.0}, "nope": {"k": 1.0}}, NotFound, id="unknown-component"
            ),
            pytest.param({"integ": {"x0": 2.0, "nope": 1.0}}, NotFound, id="unknown-parameter"),
            pytest.param({"integ": {"x0": "two"}}, TypeMismatch, id="wrong-type"),
        ],
    )
    def test_reset_overrides_all_or_none(
        self, loop_session: Session, overrides: dict[str, dict[str, Any]], error: type[Exception]
    ) -> None:
        """One bad override refuses the whole Reset: state, time and parameters stay."""
        loop_session.step(3)
        before = loop_session.values()
        with pytest.raises(error):
            loop_session.reset(overrides)
        assert loop_session.values() == before
        assert loop_session.step_count == 3
        assert loop_session.state is RunState.SUSPENDED

    def test_settings_overrides_apply_at_construction(self) -> None:
        """SessionSettings.parameters layer on top of the twin's values, coerced."""
        s = Session("s", loop_twin(), SessionSettings(parameters={"integ": {"x0": 3}}))
        assert s.read(par("integ", "x0")) == 3.0
        assert s.read(state("integ", "x")) == 3.0

    def test_bad_settings_override_refused(self) -> None:
        """A bad override in the settings refuses the session, naming the parameter."""
        with pytest.raises(OutOfRange, match="parameter 'gain' of component 'integ'"):
            Session("s", loop_twin(), SessionSettings(parameters={"integ": {"gain": -500}}))

    @pytest.mark.parametrize(
        ("settings_", "message"),
        [
            pytest.param(SessionSettings(step_size=0.0), "step_size", id="zero-step"),
            pytest.param(SessionSettings(overrun_policy="wait"), "overrun_policy", id="policy"),
            pytest.param(SessionSettings(realtime_factor=-1.0), "real-time factor", id="factor"),
        ],
    )
    def test_bad_settings_refused(self, settings_: SessionSettings, message: str) -> None:
        """Impossible settings are refused when the session is made."""
        with pytest.raises(InvalidArgument, match=message):
            Session("s", loop_twin(), settings_)


def faulty_twin(at: int, mode: int) -> Any:
    return twin(
        "f",
        component("src", TimeSource),
        component("bad", Faulty, parameters={"at": at, "mode": mode}),
        component("after", Gain),
        connections=("src.time -> bad.u", "bad.y -> after.u"),
    )


class TestFaults:
    @pytest.mark.parametrize(
        ("mode", "what"),
        [
            pytest.param(0, "raised ZeroDivisionError: boom", id="raises"),
            pytest.param(1, "returned a non-finite output 'y' = nan", id="nan"),
            pytest.param(2, "returned no value for its output 'y'", id="missing-output"),
        ],
    )
    def test_fault_halts_and_names_component_and_tick(self, mode: int, what: str) -> None:
        """A raise, NaN or missing output halts the session; the fault names component and tick."""
        s = make_session(faulty_twin(3, mode), name="plant", step_size=0.5)
        events: list[SessionEvent] = []
        s.subscribe(events.append)
        s.start()
        for _ in range(5):
            if s.state is RunState.RUNNING:
                s.tick()
        assert s.state is RunState.HALTED
        assert s.step_count == 3
        fault = s.fault
        assert isinstance(fault, SessionFault)
        assert (fault.session, fault.component, fault.tick) == ("plant", "bad", 3)
        assert str(fault) == (
            f"session 'plant': component 'bad' {what} in tick 3 (t=1.5 s); "
            f"the session halted; fix the cause, then Reset it"
        )
        assert events[-1].kind == "fault"
        assert events[-1].severity >= 900
        assert events[-1].message == str(fault)
        assert len(model(s, "after").calls) == 3  # the faulting tick went no further

    def test_fault_keeps_cause(self) -> None:
        """The model's exception is kept as the fault's cause."""
        s = make_session(faulty_twin(0, 0))
        s.step(1)
        assert s.fault is not None
        assert isinstance(s.fault.cause, ZeroDivisionError)

    def test_step_stops_at_fault_without_raising(self) -> None:
        """Step(n) stops at a fault and returns; the session is Halted."""
        s = make_session(faulty_twin(2, 0))
        s.step(10)
        assert s.state is RunState.HALTED
        assert s.step_count == 2

    def test_fault_halts_only_its_session(self) -> None:
        """A fault in one session leaves another session of the same twin stepping."""
        bad = make_session(faulty_twin(1, 0), name="bad")
        good = make_session(faulty_twin(100, 0), name="good")
        for s in (bad, good):
            s.start()
        for _ in range(5):
            for s in (bad, good):
                if s.state is RunState.RUNNING:
                    s.tick()
        assert bad.state is RunState.HALTED
        assert good.state is RunState.RUNNING
        assert good.step_count == 5
        assert good.fault is None

    def test_reset_clears_fault(self) -> None:
        """Reset after a fault returns to Ready with no fault."""
        s = make_session(faulty_twin(1, 1))
        s.step(3)
        assert s.fault is not None
        s.reset()
        assert s.fault is None
        assert s.state is RunState.READY
        s.step(1)
        assert s.state is RunState.SUSPENDED

    def test_failing_reset_at_construction(self) -> None:
        """A model whose reset fails makes construction raise a SessionFault naming it."""

        class BadReset(Gain):
            def reset(self, parameters: Any, initial: Any) -> dict[str, Any]:
                raise ValueError("no good")

        with pytest.raises(SessionFault, match="component 'g' raised ValueError: no good in reset"):
            make_session(twin("t", component("g", BadReset)))


class RefusesStart(Integrator):
    """An Integrator whose reset fails while its parameter ``gain`` is 13 (tunable)."""

    def reset(self, parameters: Any, initial: Any) -> dict[str, Any]:
        if parameters["gain"] == 13.0:
            raise RuntimeError("cannot start with gain 13")
        return super().reset(parameters, initial)


def refusing_twin() -> TwinDefinition:
    """src (reset fine) -> plant (RefusesStart, gain 13) -> after (an Integrator, x=5)."""
    return twin(
        "refusing",
        component("src", TimeSource, options={"record": False}),
        component("plant", RefusesStart, parameters={"gain": 13.0}, options={"record": False}),
        component("after", Integrator, initial={"x": 5.0}, options={"record": False}),
        connections=("src.time -> plant.u", "plant.y -> after.u"),
    )


class TestFailedStart:
    def test_kept_halted_on_the_fault(self) -> None:
        """With keep_faulted, a first Reset that fails leaves the session built, Halted on
        a fault naming the component, instead of raising."""
        s = Session("s", refusing_twin(), SessionSettings(), keep_faulted=True)
        assert s.state is RunState.HALTED
        assert s.fault is not None
        assert (s.fault.component, s.fault.tick) == ("plant", 0)
        assert str(s.fault) == (
            "session 's': component 'plant' raised RuntimeError: cannot start with gain 13 "
            "in reset; the session halted; fix the cause, then Reset it")
        with pytest.raises(InvalidState, match="needs Ready"):
            s.start()

    def test_models_not_reset_show_their_declared_values(self) -> None:
        """Every read answers: the components from the failing one on show their
        declared outputs and states (configured initial ones first), those before it
        their reset outputs."""
        s = Session("s", refusing_twin(), SessionSettings(), keep_faulted=True)
        values = s.values()
        assert values[out("src", "time")] == 0.0
        assert values[out("plant", "y")] == 0.0 and values[state("plant", "x")] == 0.0
        assert values[state("after", "x")] == 5.0
        assert values[inp("after", "u")] == 0.0
        assert len(s.value_list()) == len(s.variables())
        assert s.read(state("after", "x")) == 5.0

    def test_fix_the_parameter_then_reset(self) -> None:
        """A tunable parameter of a model that did not reset waits for Reset (nothing
        calls the model meanwhile); a state write is refused; Reset with the fix starts."""
        s = Session("s", refusing_twin(), SessionSettings(step_size=0.5), keep_faulted=True)
        s.write(par("plant", "gain"), 2.0)
        assert s.read(par("plant", "gain")) == 2.0
        with pytest.raises(InvalidState, match="did not reset"):
            s.write(state("after", "x"), 1.0)
        s.reset()
        assert (s.state, s.fault) == (RunState.READY, None)
        s.step(2)
        assert s.read(state("plant", "x")) == 2.0 * 0.5 * 0.5  # u = t: 0 then 0.5
        assert s.read(state("after", "x")) == 5.0 + 0.0 + 0.0  # plant.y at t0, t1: 0, 0

    def test_without_keep_faulted_it_raises_and_frees_the_models(
            self, tracked: set[int]) -> None:
        """By default the first Reset's fault is raised and every model built is closed."""
        definition = twin(
            "t", component("a", Tracked),
            component("plant", RefusesStart, parameters={"gain": 13.0}))
        with pytest.raises(SessionFault, match="cannot start with gain 13"):
            Session("s", definition, SessionSettings())
        assert tracked == set()


class TestHostHooks:
    def test_progress_names_the_component_being_stepped(self) -> None:
        """The progress slot holds the index of the component whose step is running."""
        seen: list[int] = []
        progress = [-1]

        class Peek(Gain):
            def step(self, t: float, dt: float, inputs: Any) -> dict[str, Any]:
                seen.append(progress[0])
                return super().step(t, dt, inputs)

        definition = twin("t", component("a", Peek), component("b", Peek),
                          connections=("a.y -> b.u",))
        s = Session("s", definition, SessionSettings(), progress=progress)
        s.step(2)
        assert seen == [0, 1, 0, 1]
        assert progress[0] == 1  # the engine leaves it; the host clears it between ticks

    def test_progress_stops_at_the_faulting_component(self) -> None:
        """After a fault the progress slot names the component that faulted."""
        progress = [-1]
        s = Session("s", faulty_twin(2, 0), SessionSettings(), progress=progress)
        s.step(5)
        assert [c for c in s.components()][progress[0]] == "bad"

    @pytest.mark.parametrize("before", ["ready", "running", "suspended"])
    def test_halt_on_fault_from_any_state(self, before: str) -> None:
        """A fault from outside halts the session with it set and emits a fault event."""
        s = make_session(faulty_twin(100, 0))
        if before != "ready":
            s.start()
        if before == "suspended":
            s.suspend()
        events: list[SessionEvent] = []
        s.subscribe(events.append)
        fault = SessionFault("worker died", session="s", component="bad", tick=0)
        s.halt_on_fault(fault)
        assert (s.state, s.fault) == (RunState.HALTED, fault)
        assert [(e.kind, e.message) for e in events] == [("fault", "worker died")]
        with pytest.raises(InvalidState):
            s.start()
        s.reset()
        assert (s.state, s.fault) == (RunState.READY, None)


class TestObservation:
    def test_unsubscribe(self, loop_session: Session) -> None:
        """After unsubscribing, a listener gets no more events; unsubscribing twice is harmless."""
        events: list[SessionEvent] = []
        unsubscribe = loop_session.subscribe(events.append)
        loop_session.start()
        unsubscribe()
        unsubscribe()
        loop_session.suspend()
        assert [e.kind for e in events] == ["started"]

    def test_raising_listener_does_not_break_session(self, loop_session: Session) -> None:
        """A raising listener is logged and skipped; the session and other listeners carry on."""
        events: list[SessionEvent] = []

        def broken(event: SessionEvent) -> None:
            raise RuntimeError("listener bug")

        loop_session.subscribe(broken)
        loop_session.subscribe(events.append)
        with structlog.testing.capture_logs() as logs:
            loop_session.start()
        assert loop_session.state is RunState.RUNNING
        assert [e.kind for e in events] == ["started"]
        assert logs[0]["event"] == "session_listener_failed"
        assert logs[0]["session"] == "s"

    def test_statistics(self, loop_session: Session) -> None:
        """statistics() reports tick count, time, state and the wall time of model work."""
        empty = loop_session.statistics()
        assert (empty.step_count, empty.step_duration_mean, empty.step_duration_max) == (
            0,
            0.0,
            0.0,
        )
        loop_session.step(20)
        stats = loop_session.statistics()
        assert stats.step_count == 20
        assert stats.sim_time == 20 * 0.1
        assert stats.state is RunState.SUSPENDED
        assert 0.0 < stats.step_duration_mean <= stats.step_duration_max < 1.0

    def test_variables_stable_order(self, loop_session: Session) -> None:
        """variables() lists components in order, then inputs, outputs, states, parameters."""
        paths = [key.path for key, _ in loop_session.variables()]
        assert paths[:7] == [
            "Components.src.Outputs.time",
            "Components.integ.Inputs.u",
            "Components.integ.Outputs.y",
            "Components.integ.States.x",
            "Components.integ.Parameters.gain",
            "Components.integ.Parameters.x0",
            "Components.fb.Inputs.u",
        ]
        assert list(loop_session.values()) == [key for key, _ in loop_session.variables()]

    def test_values_is_a_fresh_dict(self, loop_session: Session) -> None:
        """values() returns a copy: changing it changes nothing in the session."""
        values = loop_session.values()
        values[out("fb", "y")] = 99.0
        assert loop_session.read(out("fb", "y")) == 0.25


class TestDeterminism:
    SCRIPT: ClassVar[Script] = {
        50: [(inp("pid", "setpoint"), 1.5)],
        120: [(par("pid", "kp"), 1.2)],
        200: [(state("tank", "level"), 0.9)],
    }

    def test_step_and_tick_agree(self) -> None:
        """step(n) in chunks and tick() one at a time end bit-identical."""
        a = make_session(tank_pid_twin(), step_size=0.05)
        b = make_session(tank_pid_twin(), step_size=0.05)
        run_scripted(a, 300, self.SCRIPT)
        b.start()
        for k in range(300):
            for key, value in self.SCRIPT.get(k, []):
                b.write(key, value)
            b.tick()
        assert bits(a.values()) == bits(b.values())
        assert a.read(out("tank", "level")) != 0.2  # it did something

    def test_reset_replays_identically(self) -> None:
        """A run after Reset repeats the first run bit for bit."""
        s = make_session(tank_pid_twin(), step_size=0.05)
        run_scripted(s, 300, {50: [(inp("pid", "setpoint"), 1.5)]})
        first = bits(s.values())
        s.reset()
        s.write(inp("pid", "setpoint"), 1.0)  # back to the configured value, but forced
        s.release(inp("pid", "setpoint"))
        run_scripted(s, 300, {50: [(inp("pid", "setpoint"), 1.5)]})
        assert bits(s.values()) == first


class TestValueList:
    def test_value_list_is_values_in_variables_order(self) -> None:
        """value_list() holds exactly what values() holds, in the order of variables()."""
        s = make_session(tank_pid_twin())
        s.write(VarKey("tank", Kind.PARAMETER, "initial_level"), 0.7)  # a pending fixed one
        for _ in range(3):
            s.step(5)
            values = s.values()
            assert s.value_list() == [values[key] for key, _ in s.variables()]
        assert len(s.value_list()) == len(s.variables())
