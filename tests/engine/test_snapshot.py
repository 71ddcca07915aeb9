"""Session snapshot, restore, fork, set_parameters, atomic reset and close: exact
futures after restore and fork, the run states they allow, and every refusal."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.conftest import (
    Gain,
    Script,
    TimeSource,
    Tracked,
    bits,
    component,
    faulting_twin,
    loop_twin,
    make_session,
    noisy_loop_twin,
    tank_pid_twin,
    twin,
)
from tests.models.fmu import conftest as fmu_conftest
from twin_server.engine.session import (
    SNAPSHOT_FORMAT,
    RunState,
    Session,
    SessionEvent,
    SessionSettings,
    SessionSnapshot,
    VarKey,
)
from twin_server.errors import (
    InvalidArgument,
    InvalidState,
    NotFound,
    NotSupported,
    NotWritable,
    OutOfRange,
    TypeMismatch,
)
from twin_server.models.base import Kind
from twin_server.models.fmu import FMU

# the FMUs compiled once per test session (tests/models/fmu/conftest.py)
fmus = fmu_conftest.fmus
cache_dir = fmu_conftest.cache_dir

SETPOINT = VarKey("pid", Kind.INPUT, "setpoint")
LEVEL = VarKey("tank", Kind.STATE, "level")
KP = VarKey("pid", Kind.PARAMETER, "kp")
NOISE = VarKey("sensor", Kind.PARAMETER, "noise_std")
INITIAL_LEVEL = VarKey("tank", Kind.PARAMETER, "initial_level")


def trace(s: Session, ticks: int, script: Script | None = None) -> list[dict[str, Any]]:
    """Step ``ticks`` single ticks, applying ``script`` (offsets from now) before its
    ticks; every value, floats as hex, after each tick."""
    script = script or {}
    seen = []
    for k in range(ticks):
        for key, value in script.get(k, []):
            s.write(key, value)
        s.step(1)
        seen.append(bits(s.values()))
    return seen


def noisy(name: str = "s", **settings_: Any) -> Session:
    return make_session(noisy_loop_twin(), name, step_size=0.1, **settings_)


def events(s: Session) -> list[SessionEvent]:
    seen: list[SessionEvent] = []
    s.subscribe(seen.append)
    return seen


#: writes a client could make between ticks: (key, value strategy)
_WRITES = [
    (SETPOINT, st.floats(0.0, 1.5)),
    (KP, st.floats(0.0, 2.0)),
    (NOISE, st.floats(0.0, 0.1)),
    (LEVEL, st.floats(0.0, 1.9)),
]
scripts = st.dictionaries(
    st.integers(0, 59),
    st.lists(st.one_of(*(st.tuples(st.just(k), v) for k, v in _WRITES)), max_size=2),
    max_size=6,
)


class TestSnapshotRestore:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(at=st.integers(0, 300), script=scripts)
    def test_restore_gives_bit_identical_future(self, at: int, script: Script) -> None:
        """After Restore, the same writes give the same values, bit for bit, as after
        the snapshot (tank, PID and a noisy sensor whose draws cross a block)."""
        s = noisy()
        if at:
            s.step(at)
        at_snapshot = bits(s.values())
        snap = s.snapshot()
        first = trace(s, 60, script)
        s.restore(snap)
        assert bits(s.values()) == at_snapshot
        assert s.step_count == at
        assert trace(s, 60, script) == first

    def test_restore_undoes_writes_of_every_kind(self) -> None:
        """Forced inputs, states, tunable and pending fixed parameters all return."""
        s = noisy()
        s.step(20)
        before, forced = bits(s.values()), s.forced()
        snap = s.snapshot()
        s.write(SETPOINT, 0.3)
        s.write(LEVEL, 1.5)
        s.write(KP, 0.1)
        s.write(INITIAL_LEVEL, 0.9)
        s.step(5)
        s.restore(snap)
        assert bits(s.values()) == before
        assert s.forced() == forced
        s.reset()
        assert s.read(LEVEL) == 0.2  # the pending initial level did not survive Restore

    def test_forced_input_at_snapshot_is_restored(self) -> None:
        """An input forced when the snapshot was taken is forced again after Restore."""
        s = noisy()
        s.write(SETPOINT, 0.7)
        s.step(3)
        snap = s.snapshot()
        s.release(SETPOINT)
        s.restore(snap)
        assert s.forced() == {SETPOINT: 0.7}

    def test_realtime_factor_is_restored(self) -> None:
        """The real-time factor is part of the snapshot."""
        s = noisy(realtime_factor=2.0)
        snap = s.snapshot()
        s.set_realtime_factor(5.0)
        s.restore(snap)
        assert s.realtime_factor == 2.0

    def test_one_snapshot_restores_many_times(self) -> None:
        """Restoring copies out of the snapshot: a second Restore gives the same future."""
        s = noisy()
        s.step(10)
        snap = s.snapshot()
        first = trace(s, 30)
        for _ in range(2):
            s.restore(snap)
            assert trace(s, 30) == first

    def test_restore_into_another_session_of_the_twin(self) -> None:
        """A snapshot restores into any session of the same twin and step size."""
        a, b = noisy("a"), noisy("b")
        a.step(42)
        snap = a.snapshot()
        b.restore(snap)
        assert trace(b, 40) == trace(a, 40)

    @pytest.mark.parametrize(
        ("setup", "ends"),
        [
            pytest.param(lambda s: None, RunState.READY, id="ready-from-ready"),
            pytest.param(lambda s: s.step(3), RunState.SUSPENDED, id="suspended"),
            pytest.param(lambda s: (s.start(), s.halt()), RunState.SUSPENDED, id="halted"),
        ],
    )
    def test_allowed_run_states(self, setup: Any, ends: RunState) -> None:
        """Restore works from Ready, Suspended and Halted; it ends Suspended, or Ready
        for a snapshot taken in Ready."""
        s = noisy()
        setup(s)
        snap = s.snapshot()
        s.reset()
        s.restore(snap)
        assert s.state is ends

    def test_snapshot_of_running_session_restores_suspended(self) -> None:
        """A snapshot taken while Running restores Suspended; ``state`` records Running."""
        s = noisy()
        s.start()
        s.tick()
        snap = s.snapshot()
        assert snap.state is RunState.RUNNING
        s.suspend()
        s.restore(snap)
        assert (s.state, s.step_count) == (RunState.SUSPENDED, 1)

    def test_restore_clears_a_fault(self) -> None:
        """Restore leaves a fault's Halted state like Reset does."""
        s = make_session(faulting_twin(5))
        s.step(2)
        snap = s.snapshot()
        s.step(10)
        assert s.fault is not None
        s.restore(snap)
        assert s.fault is None
        assert (s.state, s.step_count) == (RunState.SUSPENDED, 2)

    def test_restore_emits_event(self) -> None:
        """Restore emits ``restored`` naming the tick and the state."""
        s = noisy()
        s.step(4)
        snap = s.snapshot()
        s.step(4)
        seen = events(s)
        s.restore(snap)
        assert [(e.kind, e.message) for e in seen] == [
            (
                "restored",
                "restored to tick 4 (t=0.4 s) from a snapshot taken in state "
                "Suspended; now Suspended",
            ),
        ]

    def test_restore_refused_while_running(self) -> None:
        """Restore of a Running session is InvalidState and changes nothing."""
        s = noisy()
        s.step(3)
        snap = s.snapshot()
        s.resume()
        s.tick()
        before = bits(s.values())
        with pytest.raises(InvalidState, match=r"in state Running .*Suspend it first"):
            s.restore(snap)
        assert bits(s.values()) == before
        assert (s.state, s.step_count) == (RunState.RUNNING, 4)

    @pytest.mark.parametrize(
        ("other", "message"),
        [
            pytest.param(
                lambda: make_session(tank_pid_twin(), step_size=0.1),
                r"from a snapshot of twin 'tank_pid' taken in session 's'",
                id="other-twin",
            ),
            pytest.param(
                lambda: make_session(noisy_loop_twin(), step_size=0.05),
                r"step size 0.1 s\) from a snapshot taken at step size 0.05 s",
                id="other-step-size",
            ),
            pytest.param(
                lambda: make_session(twin("noisy_loop", component("tank", Gain)), step_size=0.1),
                r"a different definition of twin 'noisy_loop' \(its components: tank \(gain\)\)",
                id="redefined-twin",
            ),
        ],
    )
    def test_snapshot_of_another_kind_refused(self, other: Any, message: str) -> None:
        """A snapshot of another twin, layout or step size is InvalidArgument."""
        s = noisy()
        snap = other().snapshot()
        s.step(2)
        before = bits(s.values())
        with pytest.raises(InvalidArgument, match=message):
            s.restore(snap)
        assert bits(s.values()) == before

    def test_restore_of_non_snapshot_refused(self) -> None:
        """Anything but a SessionSnapshot is InvalidArgument."""
        with pytest.raises(InvalidArgument, match="expected a SessionSnapshot"):
            noisy().restore({"step_count": 3})  # type: ignore[arg-type]

    def test_snapshot_after_fault_refused(self) -> None:
        """Snapshot of a session halted on a fault is InvalidState naming the fault."""
        s = make_session(faulting_twin(2))
        s.step(5)
        with pytest.raises(
            InvalidState, match=r"halted on a fault at tick 2 \(component 'bad'\).*Reset it first"
        ):
            s.snapshot()

    def test_model_that_cannot_snapshot(self) -> None:
        """A model's NotSupported names the component."""

        class NoState(Gain):
            def snapshot(self) -> Any:
                raise NotSupported("no get/set state")

        s = make_session(twin("t", component("src", TimeSource), component("ns", NoState)))
        with pytest.raises(
            NotSupported, match="component 'ns' cannot be snapshotted: no get/set state"
        ):
            s.snapshot()

    def test_failing_model_restore_halts_with_fault(self) -> None:
        """A model that fails to restore leaves the session Halted with a fault naming it."""

        class BadRestore(Gain):
            def restore(self, snapshot: Any) -> None:
                raise NotSupported("not this state")

        s = make_session(twin("t", component("g", BadRestore)))
        snap = s.snapshot()
        with pytest.raises(NotSupported, match="component 'g' cannot be restored: not this state"):
            s.restore(snap)
        assert s.state is RunState.HALTED
        assert s.fault is not None and s.fault.component == "g"


class TestSerialisation:
    def test_bytes_round_trip_gives_identical_future(self) -> None:
        """to_bytes/from_bytes keeps everything: the restored future is bit-identical."""
        s = noisy()
        s.step(100)
        data = s.snapshot().to_bytes()
        expected = trace(s, 50)
        other = noisy("other")
        other.restore(SessionSnapshot.from_bytes(data))
        assert trace(other, 50) == expected

    def test_format_version_written(self) -> None:
        """The bytes start with a header and the format version."""
        data = noisy().snapshot().to_bytes()
        assert data.startswith(b"twin-server snapshot\n" + bytes([SNAPSHOT_FORMAT]))

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            pytest.param(b"", "not a twin-server session snapshot", id="empty"),
            pytest.param(pickle.dumps(1), "not a twin-server session snapshot", id="bare-pickle"),
            pytest.param(b"twin-server snapshot\n", "format none cannot be read", id="no-version"),
            pytest.param(
                b"twin-server snapshot\n\x09...",
                r"format 9 cannot be read by this version of twin-server \(it reads format 1\)",
                id="newer-format",
            ),
            pytest.param(b"twin-server snapshot\n\x01garbage", "is damaged", id="damaged"),
            pytest.param(
                b"twin-server snapshot\n\x01" + pickle.dumps([1]),
                "holds a list, not a snapshot",
                id="not-a-snapshot",
            ),
        ],
    )
    def test_bad_bytes_refused(self, data: bytes, message: str) -> None:
        """Bytes that are not a snapshot of this format are InvalidArgument."""
        with pytest.raises(InvalidArgument, match=message):
            SessionSnapshot.from_bytes(data)

    def test_state_that_cannot_pickle_names_component(self) -> None:
        """A model state that cannot be serialised is NotSupported naming the component."""

        class Unpicklable(Gain):
            def reset(self, parameters: Any, initial: Any) -> dict[str, Any]:
                self.fn = lambda: 0.0
                return super().reset(parameters, initial)

        s = make_session(twin("t", component("src", TimeSource), component("u", Unpicklable)))
        snap = s.snapshot()
        with pytest.raises(NotSupported, match="session 's' cannot be saved: component 'u'"):
            snap.to_bytes()


class TestFork:
    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(at=st.integers(0, 300), script=scripts)
    def test_fork_matches_original_bit_for_bit(self, at: int, script: Script) -> None:
        """Given the same writes, a fork steps exactly as its source does."""
        s = noisy()
        if at:
            s.step(at)
        fork = s.fork("f")
        assert bits(fork.values()) == bits(s.values())
        assert trace(fork, 60, script) == trace(s, 60, script)

    def test_fork_is_independent(self) -> None:
        """Writes to and steps of the fork leave the source alone, and the reverse."""
        s = noisy()
        s.step(10)
        fork = s.fork("f")
        reference = noisy("ref")
        reference.step(10)
        fork.write(KP, 0.0)
        fork.step(20)
        assert trace(s, 5) == trace(reference, 5)
        assert fork.read(KP) == 0.0

    @pytest.mark.parametrize(
        ("setup", "state"),
        [
            pytest.param(lambda s: None, RunState.READY, id="ready"),
            pytest.param(lambda s: s.step(2), RunState.SUSPENDED, id="suspended"),
            pytest.param(lambda s: s.start(), RunState.SUSPENDED, id="running"),
        ],
    )
    def test_fork_run_state(self, setup: Any, state: RunState) -> None:
        """Session.fork ends Suspended (Ready from a Ready source); the manager resumes it."""
        s = noisy()
        setup(s)
        assert s.fork("f").state is state

    def test_fork_takes_settings(self) -> None:
        """The fork's real-time factor and name come from its own settings."""
        s = noisy(realtime_factor=1.0)
        fork = s.fork("f", SessionSettings(step_size=0.1, realtime_factor=0.0))
        assert (fork.name, fork.realtime_factor, s.realtime_factor) == ("f", 0.0, 1.0)

    def test_fork_with_other_step_size_refused(self) -> None:
        """A fork steps as its source does: another step size is InvalidArgument."""
        with pytest.raises(InvalidArgument, match=r"a fork steps as its source does \(0.1 s\)"):
            noisy().fork("f", SessionSettings(step_size=0.2))

    def test_fork_emits_event_on_source(self) -> None:
        """The source logs ``forked`` naming the fork and the tick."""
        s = noisy()
        s.step(3)
        seen = events(s)
        s.fork("ahead")
        assert [(e.kind, e.message) for e in seen] == [
            ("forked", "forked into session 'ahead' at tick 3 (t=0.3 s)")
        ]

    def test_fork_failure_frees_the_new_models(self, tracked: set[int]) -> None:
        """A model that cannot move its state fails the fork, naming it; nothing leaks."""

        class NoMove(Tracked):
            def restore(self, snapshot: Any) -> None:
                raise NotSupported("state stays in its instance")

        s = make_session(twin("t", component("n", NoMove)))
        assert len(tracked) == 1
        with pytest.raises(NotSupported, match="component 'n' cannot be restored"):
            s.fork("f")
        assert len(tracked) == 1  # only the source's instance


class TestSetParameters:
    def test_applies_all_with_one_event_each(self) -> None:
        """Tunable parameters apply at the next tick; fixed ones are pending; one event each."""
        s = noisy()
        s.step(2)
        seen = events(s)
        result = s.set_parameters({"pid": {"kp": 2, "ki": 0.5}, "tank": {"initial_level": 0.4}})
        assert result == {"pid": {"kp": 2.0, "ki": 0.5}, "tank": {"initial_level": 0.4}}
        assert s.read(KP) == 2.0
        assert s.components()["pid"].parameters["kp"] == 2.0
        assert [e.message for e in seen] == [
            "parameter 'kp' of component 'pid' set to 2.0",
            "parameter 'ki' of component 'pid' set to 0.5 1/s",
            "parameter 'initial_level' of component 'tank' set to 0.4 m; "
            "it applies at the next Reset",
        ]
        s.reset()
        assert s.read(LEVEL) == 0.4

    def test_same_result_as_single_writes(self) -> None:
        """set_parameters and the same writes one by one give bit-identical futures."""
        a, b = noisy("a"), noisy("b")
        for s in (a, b):
            s.step(30)
        a.set_parameters({"pid": {"kp": 1.3}, "sensor": {"noise_std": 0.05}})
        b.write(KP, 1.3)
        b.write(NOISE, 0.05)
        assert trace(a, 40) == trace(b, 40)

    @pytest.mark.parametrize(
        ("overrides", "error", "message"),
        [
            pytest.param(
                {"pid": {"kp": 1.0, "ki": -1.0}},
                OutOfRange,
                "parameter 'ki' of component 'pid' must be",
                id="out-of-range",
            ),
            pytest.param(
                {"pid": {"kp": 1.0}, "tank": {"volume": 1.0}},
                NotFound,
                "component 'tank' has no parameter 'volume'",
                id="unknown-parameter",
            ),
            pytest.param(
                {"pid": {"kp": 1.0}, "pump": {"speed": 1.0}},
                NotFound,
                "has no component 'pump'",
                id="unknown-component",
            ),
            pytest.param(
                {"pid": {"kp": 1.0, "reverse": "yes"}},
                TypeMismatch,
                "parameter 'reverse' of component 'pid'",
                id="type-mismatch",
            ),
            pytest.param(
                {"pid": {"kp": 1.0}, "tank": 3.0},
                InvalidArgument,
                "the parameters of component 'tank' must map parameter -> value",
                id="not-a-mapping",
            ),
            pytest.param(
                {"pid": {"output_min": 0.6}},
                OutOfRange,
                "output_min must not exceed output_max.*nothing was changed",
                id="model-refuses",
            ),
        ],
    )
    def test_one_bad_value_applies_nothing(
        self, overrides: Any, error: type[Exception], message: str
    ) -> None:
        """One refused value refuses the whole call; values and the future are unchanged."""
        s, reference = noisy("s"), noisy("ref")
        for x in (s, reference):
            x.step(25)
        seen = events(s)
        with pytest.raises(error, match=message):
            s.set_parameters({"sensor": {"noise_std": 0.09}, **overrides})
        assert seen == []
        assert bits(s.values()) == bits(reference.values())
        assert trace(s, 20) == trace(reference, 20)

    def test_fixed_parameter_refused_while_running(self) -> None:
        """A fixed parameter while Running refuses the whole call, naming every one."""
        s = noisy()
        s.start()
        with pytest.raises(
            NotWritable,
            match=r"parameters tank.initial_level, sensor.seed are fixed while the session runs",
        ):
            s.set_parameters(
                {"pid": {"kp": 0.1}, "tank": {"initial_level": 0.1}, "sensor": {"seed": 3}}
            )
        assert s.read(KP) == 0.8

    def test_limits_moved_together(self) -> None:
        """Both PID limits moved past each other apply whatever order they are given in."""
        s = noisy()
        s.set_parameters({"pid": {"output_min": 2.0, "output_max": 3.0}})
        assert s.components()["pid"].parameters["output_min"] == 2.0
        s.set_parameters({"pid": {"output_max": 0.5, "output_min": 0.0}})
        assert s.read(VarKey("pid", Kind.PARAMETER, "output_max")) == 0.5

    def test_empty_changes_nothing(self) -> None:
        """No overrides: nothing happens, no version bump."""
        s = noisy()
        version = s.version
        assert s.set_parameters({}) == {}
        assert s.version == version


class TestAtomicReset:
    def test_model_refusal_at_reset_changes_nothing(self) -> None:
        """Reset with parameters a model refuses (initial level above the rim) is the
        model's OutOfRange naming the component, and the session is untouched."""
        s = noisy()
        s.step(15)
        before = bits(s.values())
        with pytest.raises(
            OutOfRange, match="component 'tank' refuses these parameters at Reset: initial level"
        ):
            s.reset({"tank": {"initial_level": 1.9, "height": 1.0}})
        assert (s.state, s.step_count, s.fault) == (RunState.SUSPENDED, 15, None)
        assert bits(s.values()) == before

    def test_bad_override_changes_nothing(self) -> None:
        """A bad override leaves pending parameters pending and the state as it was."""
        s = noisy()
        s.write(INITIAL_LEVEL, 0.7)
        s.step(5)
        with pytest.raises(NotFound):
            s.reset({"tank": {"initial_level": 0.3}, "nope": {"x": 1}})
        assert s.step_count == 5
        s.reset()
        assert s.read(LEVEL) == 0.7


class TestClose:
    def test_close_frees_every_model_once(self, tracked: set[int]) -> None:
        """close() closes every model; a second close does nothing."""
        s = make_session(twin("t", component("a", Tracked), component("b", Tracked)))
        assert len(tracked) == 2
        s.close()
        s.close()
        assert tracked == set()
        assert s.closed

    def test_close_halts_and_emits(self) -> None:
        """A Running session ends Halted (an attached clock stops) with a ``closed`` event."""
        s = noisy()
        s.start()
        s.tick()
        seen = events(s)
        s.close()
        assert s.state is RunState.HALTED
        assert [(e.kind, e.message) for e in seen] == [("closed", "closed (was Running at tick 1)")]

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda s: s.start(), id="start"),
            pytest.param(lambda s: s.reset(), id="reset"),
            pytest.param(lambda s: s.step(1), id="step"),
            pytest.param(lambda s: s.tick(), id="tick"),
            pytest.param(lambda s: s.read(KP), id="read"),
            pytest.param(lambda s: s.values(), id="values"),
            pytest.param(lambda s: s.write(KP, 1.0), id="write"),
            pytest.param(lambda s: s.release(SETPOINT), id="release"),
            pytest.param(lambda s: s.set_parameters({"pid": {"kp": 1.0}}), id="set_parameters"),
            pytest.param(lambda s: s.set_realtime_factor(2.0), id="realtime_factor"),
            pytest.param(lambda s: s.snapshot(), id="snapshot"),
            pytest.param(lambda s: s.restore(noisy("x").snapshot()), id="restore"),
            pytest.param(lambda s: s.fork("f"), id="fork"),
        ],
    )
    def test_closed_session_refuses_everything(self, call: Any) -> None:
        """Every call on a closed session is InvalidState."""
        s = noisy()
        s.close()
        with pytest.raises(InvalidState, match="session 's'"):
            call(s)

    def test_failed_construction_frees_models(self, tracked: set[int]) -> None:
        """A session whose parameters are refused at construction closes what it built."""
        with pytest.raises(OutOfRange):
            make_session(
                twin("t", component("a", Tracked), component("b", Tracked)),
                parameters={"b": {"k": 1000.0}},
            )
        assert tracked == set()


class TestLoopTwin:
    def test_snapshot_carries_previous_tick_outputs(self) -> None:
        """In a loop the next tick reads last tick's outputs: Restore brings them back."""
        s = make_session(loop_twin(record=False), step_size=0.1)
        s.step(7)
        snap = s.snapshot()
        expected = trace(s, 10)
        s.write(VarKey("integ", Kind.STATE, "x"), 99.0)
        s.step(3)
        s.restore(snap)
        assert trace(s, 10) == expected


def fmu_session(fmus: dict[str, Path], cache_dir: Path, which: str, name: str = "s") -> Session:
    """A time source feeding the FMU ``which`` (lag2 variants: into its input u)."""
    options = {"path": str(fmus[which]), "cache_dir": str(cache_dir)}
    components = [component("plant", FMU, options=options)]
    connections: tuple[str, ...] = ()
    if which.startswith("lag2"):
        components.insert(0, component("src", TimeSource, options={"record": False}))
        connections = ("src.time -> plant.u",)
    return make_session(twin(which, *components, connections=connections), name, step_size=0.05)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build FMUs")
class TestFMU:
    @pytest.mark.parametrize("which", ["lag2", "ball2", "lag3", "ball3"])
    def test_fork_and_restore_are_exact(
        self, fmus: dict[str, Path], cache_dir: Path, which: str
    ) -> None:
        """FMUs that serialise their state fork and restore bit for bit (CS and ME)."""
        s = fmu_session(fmus, cache_dir, which)
        s.step(17)
        snap = s.snapshot()
        fork = s.fork("f")
        expected = trace(s, 30)
        assert trace(fork, 30) == expected
        s.restore(snap)
        assert trace(s, 30) == expected
        other = fmu_session(fmus, cache_dir, which, "other")
        other.restore(SessionSnapshot.from_bytes(snap.to_bytes()))
        assert trace(other, 30) == expected
        for x in (s, fork, other):
            x.close()

    def test_no_state_cannot_snapshot(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """An FMU without canGetAndSetFMUstate: Snapshot and Fork are NotSupported naming it."""
        s = fmu_session(fmus, cache_dir, "lag2_nostate")
        s.step(2)
        for call in (s.snapshot, lambda: s.fork("f")):
            with pytest.raises(NotSupported, match="component 'plant' cannot be snapshotted"):
                call()
        s.close()

    def test_no_serialize_restores_only_in_place(
        self, fmus: dict[str, Path], cache_dir: Path
    ) -> None:
        """Without canSerializeFMUstate a snapshot restores in its own session only; Fork
        and to_bytes are NotSupported naming the component."""
        s = fmu_session(fmus, cache_dir, "lag2_noserialize")
        s.step(5)
        snap = s.snapshot()
        expected = trace(s, 10)
        s.restore(snap)
        assert trace(s, 10) == expected
        with pytest.raises(NotSupported, match="component 'plant' cannot be restored"):
            s.fork("f")
        with pytest.raises(
            NotSupported, match="component 'plant': its FMU cannot serialize its state"
        ):
            snap.to_bytes()
        s.close()

    def test_close_frees_the_instances(self, fmus: dict[str, Path], cache_dir: Path) -> None:
        """close() frees the FMU instance of every FMU component."""
        s = fmu_session(fmus, cache_dir, "lag2")
        plant = s.components()["plant"]
        assert isinstance(plant, FMU)
        assert not plant.closed
        s.close()
        assert plant.closed
