"""Fault injection in the pure engine (``engine.faults``): each kind against its
definition, durations, events, Reset, Snapshot, Restore and Fork."""

from __future__ import annotations

import math
import pickle
import zlib

import pytest
from asyncua import ua

from tests.engine.conftest import Gain, Integrator, Switch, TimeSource, component, twin
from twin_server.engine import faults
from twin_server.engine.faults import FaultSpec
from twin_server.engine.session import Session, SessionEvent, SessionSettings, VarKey
from twin_server.engine.snapshot import SessionSnapshot
from twin_server.errors import AlreadyExists, InvalidArgument, NotFound
from twin_server.models.base import Kind

DT = 0.1
TIME = VarKey("src", Kind.OUTPUT, "time")
G_U = VarKey("g", Kind.INPUT, "u")
G_Y = VarKey("g", Kind.OUTPUT, "y")
INTEG_U = VarKey("integ", Kind.INPUT, "u")


def chain() -> object:
    """src.time -> g.u (k=1); g.y -> integ.u: a source, a feedthrough and a state."""
    return twin(
        "chain",
        component("src", TimeSource),
        component("g", Gain),
        component("integ", Integrator),
        component("sw", Switch),
        connections=("src.time -> g.u", "g.y -> integ.u"),
    )


def session(name: str = "s", **settings: object) -> Session:
    return Session(name, chain(), SessionSettings(step_size=DT, **settings))  # type: ignore[arg-type]


def series(s: Session, key: VarKey, ticks: int) -> list[object]:
    values = []
    for _ in range(ticks):
        s.step(1)
        values.append(s.read(key))
    return values


def events(s: Session) -> list[SessionEvent]:
    seen: list[SessionEvent] = []
    s.subscribe(seen.append)
    return seen


def salt(target: str) -> int:
    return zlib.crc32(target.encode())


class TestKinds:
    def test_stuck_holds_its_value_downstream(self) -> None:
        """A stuck output shows its value, and the component fed by it gets that value."""
        s = session()
        s.step(5)
        s.inject_fault(FaultSpec("src.Outputs.time", "stuck", {"value": 7.5}))
        assert s.read(TIME) == 7.5
        assert series(s, G_Y, 5) == [7.5] * 5

    def test_stuck_without_a_value_holds_the_one_it_had(self) -> None:
        """Stuck without a value freezes the value at the start."""
        s = session()
        s.step(3)
        before = s.read(TIME)
        s.inject_fault(FaultSpec("src.Outputs.time", "stuck"))
        assert series(s, TIME, 4) == [before] * 4
        assert s.faults()[0].parameters["value"] == before

    def test_offset_adds_to_the_true_value(self) -> None:
        """offset: x + offset at every tick."""
        ref, s = session(), session()
        s.inject_fault(FaultSpec("src.Outputs.time", "offset", {"offset": 2.0}))
        assert series(s, TIME, 10) == [x + 2.0 for x in series(ref, TIME, 10)]

    def test_drift_grows_at_its_rate(self) -> None:
        """drift: x + rate * (j - s) * dt."""
        ref, s = session(), session()
        ref.step(4)
        s.step(4)
        s.inject_fault(FaultSpec("src.Outputs.time", "drift", {"rate": 0.5}))
        got = series(s, TIME, 10)
        want = [x + 0.5 * (j * DT) for j, x in enumerate(series(ref, TIME, 10), start=1)]
        assert got == want

    def test_noise_is_the_seeded_normal_draw(self) -> None:
        """noise: x + sigma * N(seed, target, j), exactly; mean ~0, std ~sigma."""
        ref, s = session(), session()
        s.inject_fault(FaultSpec("src.Outputs.time", "noise", {"sigma": 0.2, "seed": 11}))
        got = series(s, TIME, 2000)
        true = series(ref, TIME, 2000)
        noise = [g - t for g, t in zip(got, true, strict=True)]
        want = [t + 0.2 * faults.normal(11, salt("src.Outputs.time"), j)
                for j, t in enumerate(true, start=1)]
        assert got == want
        mean = sum(noise) / len(noise)
        std = math.sqrt(sum((n - mean) ** 2 for n in noise) / len(noise))
        assert abs(mean) < 0.02 and 0.18 < std < 0.22

    def test_spikes_add_their_amplitude_at_their_rate(self) -> None:
        """spike: x + amplitude on about rate * dt of the ticks, else x."""
        ref, s = session(), session()
        s.inject_fault(FaultSpec("src.Outputs.time", "spike",
                                 {"amplitude": 5.0, "rate": 1.0, "seed": 3}))
        got, true = series(s, TIME, 3000), series(ref, TIME, 3000)
        spiked = [g != t for g, t in zip(got, true, strict=True)]
        assert all(g in (t, t + 5.0) for g, t in zip(got, true, strict=True))
        assert 0.07 < sum(spiked) / len(spiked) < 0.13  # rate * dt = 0.1

    def test_quantise_rounds_to_its_step(self) -> None:
        """quantise: step * floor(x / step + 1/2)."""
        ref, s = session(), session()
        s.inject_fault(FaultSpec("src.Outputs.time", "quantise", {"step": 0.25}))
        want = [0.25 * math.floor(x / 0.25 + 0.5) for x in series(ref, TIME, 20)]
        assert series(s, TIME, 20) == want

    def test_delay_shows_the_value_of_earlier_ticks(self) -> None:
        """delay: the value round(delay / dt) ticks earlier (the start value before)."""
        ref, s = session(), session()
        ref.step(5)
        s.step(5)
        start = s.read(TIME)
        s.inject_fault(FaultSpec("src.Outputs.time", "delay", {"delay": 0.3}))
        true = series(ref, TIME, 12)
        assert series(s, TIME, 12) == [start] * 3 + true[:9]

    def test_dropout_holds_the_value_with_a_bad_status(self) -> None:
        """dropout: the value is held (downstream too) and its status is BadSensorFailure."""
        s = session()
        s.step(4)
        held = s.read(TIME)
        s.inject_fault(FaultSpec("src.Outputs.time", "dropout", id="lost"))
        index = [key for key, _ in s.variables()].index(TIME)
        assert s.quality() == {index: faults.BAD_SENSOR_FAILURE}
        assert series(s, G_Y, 3) == [held] * 3
        s.clear_fault("lost")
        assert s.quality() == {}
        assert s.read(TIME) != held

    def test_bad_sensor_failure_is_opc_uas_code(self) -> None:
        """The dropout status is OPC UA's Bad_SensorFailure."""
        assert ua.StatusCodes.BadSensorFailure == faults.BAD_SENSOR_FAILURE

    def test_an_input_fault_changes_what_the_component_gets(self) -> None:
        """A fault on an input: the component steps with the faulted value, its
        source's output stays true."""
        ref, s = session(), session()
        s.inject_fault(FaultSpec("g.Inputs.u", "offset", {"offset": 1.0}))
        got = series(s, G_Y, 5)
        true = series(ref, G_Y, 5)
        assert got == [t + 1.0 for t in true]
        assert s.read(TIME) == ref.read(TIME)
        assert s.read(G_U) == ref.read(G_U) + 1.0

    def test_an_input_fault_on_a_component_with_state(self) -> None:
        """A stateful component's faulted input is what it integrates."""
        s = session()
        s.inject_fault(FaultSpec("integ.Inputs.u", "stuck", {"value": 2.0}))
        s.step(10)
        assert s.read(VarKey("integ", Kind.STATE, "x")) == pytest.approx(2.0 * 10 * DT)

    def test_faults_on_one_variable_apply_in_order(self) -> None:
        """Two faults on one variable: the second acts on the first's result."""
        ref, s = session(), session()
        s.inject_fault(FaultSpec("src.Outputs.time", "offset", {"offset": 0.3}))
        s.inject_fault(FaultSpec("src.Outputs.time", "quantise", {"step": 1.0}))
        want = [math.floor(x + 0.3 + 0.5) * 1.0 for x in series(ref, TIME, 10)]
        assert series(s, TIME, 10) == want

    def test_a_stuck_boolean(self) -> None:
        """stuck applies to a Boolean input (0 or 1)."""
        s = session()
        s.inject_fault(FaultSpec("sw.Inputs.on", "stuck", {"value": 1}))
        s.step(1)
        assert s.read(VarKey("sw", Kind.OUTPUT, "label")) == "on"


class TestLifetime:
    def test_a_duration_ends_the_fault_after_whole_ticks(self) -> None:
        """A 0.3 s fault acts on three ticks, then ends with a fault_cleared event."""
        s = session()
        seen = events(s)
        s.inject_fault(FaultSpec("src.Outputs.time", "stuck", {"value": -1.0}, duration=0.3))
        assert s.faults()[0].remaining == pytest.approx(0.3)
        values = series(s, TIME, 4)
        assert values[:2] == [-1.0, -1.0] and values[2] > 0
        assert s.faults() == []
        assert [e.kind for e in seen] == ["fault_injected", "step_started", "step_completed",
                                          "step_started", "step_completed", "step_started",
                                          "fault_cleared", "step_completed",
                                          "step_started", "step_completed"]
        assert "ended after its 0.3 s at t=0.3 s (tick 3)" in seen[6].message

    def test_events_name_the_fault(self) -> None:
        """fault_injected and fault_cleared say which fault, what and when."""
        s = session()
        seen = events(s)
        s.inject_fault(FaultSpec("src.Outputs.time", "noise", {"sigma": 0.1}, id="n"))
        s.clear_fault("n")
        assert [e.kind for e in seen] == ["fault_injected", "fault_cleared"]
        assert seen[0].message == ("fault 'n' injected: noise (sigma=0.1, seed=0) on "
                                   "src.Outputs.time until cleared at t=0 s (tick 0)")
        assert seen[1].message.startswith("fault 'n' (noise")
        assert "cleared by ClearFault" in seen[1].message

    def test_clear_brings_back_the_true_value(self) -> None:
        """Clearing an output fault shows the model's own value at once."""
        ref, s = session(), session()
        s.inject_fault(FaultSpec("src.Outputs.time", "offset", {"offset": 9.0}))
        s.step(3)
        ref.step(3)
        assert s.clear_faults() == ["f1"]
        assert s.read(TIME) == ref.read(TIME)
        assert s.read(G_U) == ref.read(G_U)

    def test_reset_clears_injected_faults_and_reapplies_configured_ones(self) -> None:
        """Reset: injected faults end, the config's start again at tick 0."""
        configured = FaultSpec("src.Outputs.time", "offset", {"offset": 1.0}, id="cfg")
        s = session(faults=(configured,))
        assert [f.id for f in s.faults()] == ["cfg"] and s.faults()[0].from_config
        s.inject_fault(FaultSpec("g.Inputs.u", "stuck", {"value": 3.0}, id="mine"))
        s.step(5)
        seen = events(s)
        s.reset()
        assert [f.id for f in s.faults()] == ["cfg"]
        assert s.read(TIME) == 1.0
        assert [e.kind for e in seen] == ["reset", "fault_cleared", "fault_cleared",
                                          "fault_injected"]


class TestRefusals:
    @pytest.mark.parametrize(("spec", "error", "words"), [
        pytest.param(FaultSpec("src.Outputs.time", "melt"), InvalidArgument,
                     "not a kind of fault", id="kind"),
        pytest.param(FaultSpec("src.time", "stuck"), InvalidArgument,
                     "component.Inputs.name", id="target"),
        pytest.param(FaultSpec("nope.Outputs.time", "stuck"), NotFound, "no component",
                     id="component"),
        pytest.param(FaultSpec("src.Outputs.nope", "stuck"), NotFound, "no output", id="var"),
        pytest.param(FaultSpec("src.Outputs.time", "offset"), InvalidArgument,
                     "needs its parameter 'offset'", id="missing"),
        pytest.param(FaultSpec("src.Outputs.time", "noise", {"sigma": -1}), InvalidArgument,
                     "must be >= 0", id="negative"),
        pytest.param(FaultSpec("src.Outputs.time", "noise", {"sigma": 1, "mu": 2}),
                     InvalidArgument, "no parameter 'mu'", id="unknown"),
        pytest.param(FaultSpec("src.Outputs.time", "dropout", duration=-1), InvalidArgument,
                     "duration", id="duration"),
        pytest.param(FaultSpec("src.Outputs.time", "dropout", id="a.b"), InvalidArgument,
                     "id", id="id"),
        pytest.param(FaultSpec("sw.Inputs.on", "offset", {"offset": 1}), InvalidArgument,
                     "Double or Int32", id="type"),
        pytest.param(FaultSpec("g.Inputs.u", "stuck", {"value": math.inf}), InvalidArgument,
                     "finite", id="inf"),
    ])
    def test_bad_specs_change_nothing(self, spec: FaultSpec, error: type[Exception],
                                      words: str) -> None:
        """A bad spec is refused with what is wrong, and nothing changes."""
        s = session()
        seen = events(s)
        version = s.version
        with pytest.raises(error, match=words):
            s.inject_fault(spec)
        assert s.faults() == [] and s.version == version and seen == []

    def test_a_taken_id_is_refused(self) -> None:
        """An id in use: AlreadyExists naming it."""
        s = session()
        s.inject_fault(FaultSpec("src.Outputs.time", "dropout", id="x"))
        with pytest.raises(AlreadyExists, match="'x'"):
            s.inject_fault(FaultSpec("g.Inputs.u", "dropout", id="x"))

    def test_clearing_an_unknown_fault(self) -> None:
        """ClearFault of an id not active: NotFound listing the active ones."""
        s = session()
        s.inject_fault(FaultSpec("src.Outputs.time", "dropout"))
        with pytest.raises(NotFound, match=r"active: f1"):
            s.clear_fault("f9")


def _run(s: Session, ticks: int) -> list[object]:
    return [tuple(series(s, key, 1)[0] for key in (TIME, G_Y, INTEG_U)) for _ in range(ticks)]


def _faulted() -> Session:
    s = session()
    s.inject_fault(FaultSpec("src.Outputs.time", "noise", {"sigma": 0.5, "seed": 9}))
    s.inject_fault(FaultSpec("g.Inputs.u", "delay", {"delay": 0.5}))
    s.inject_fault(FaultSpec("integ.Inputs.u", "spike", {"amplitude": 3.0, "rate": 2.0}))
    s.inject_fault(FaultSpec("g.Outputs.y", "dropout", duration=2.0))
    s.step(7)
    return s


class TestDeterminism:
    def test_restore_repeats_a_seeded_run_bit_for_bit(self) -> None:
        """Snapshot, run on, Restore, run again: the same bits, faults included."""
        s = _faulted()
        snap = s.snapshot()
        first = _run(s, 40)
        s.restore(snap)
        assert _run(s, 40) == first
        assert [f.id for f in s.faults()] == ["f1", "f2", "f3"]  # (the dropout ended)

    def test_a_fork_carries_the_faults(self) -> None:
        """A Fork has the faults and their state, and goes on as its source does."""
        s = _faulted()
        child = s.fork("child")
        assert child.faults() == s.faults()
        assert _run(child, 30) == _run(s, 30)

    def test_two_runs_are_identical(self) -> None:
        """The same faults on two sessions give the same bits."""
        assert _run(_faulted(), 30) == _run(_faulted(), 30)

    def test_a_snapshot_survives_its_bytes(self) -> None:
        """Faults travel through to_bytes / from_bytes (the store, a worker)."""
        s = _faulted()
        snap = SessionSnapshot.from_bytes(s.snapshot().to_bytes())
        first = _run(s, 20)
        other = session("other")
        other.restore(snap)
        assert _run(other, 20) == first
        assert pickle.loads(pickle.dumps(snap)).faults == snap.faults

    def test_restore_ends_faults_the_snapshot_does_not_have(self) -> None:
        """Restore to a snapshot from before a fault: it ends, with an event."""
        s = session()
        snap = s.snapshot()
        s.inject_fault(FaultSpec("src.Outputs.time", "dropout"))
        seen = events(s)
        s.restore(snap)
        assert s.faults() == [] and s.quality() == {}
        assert [e.kind for e in seen] == ["restored", "fault_cleared"]
