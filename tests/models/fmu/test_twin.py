"""FMUs in twins: a config with an FMU connected to built-in models, compiled and
stepped by Sessions (co-simulation and model exchange, checked against FMPy's
simulate_fmu); faults of one session only; fixed vs tunable parameters."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import fmpy
import numpy as np
import pytest

from tests.engine.test_order import trajectory, twin_config
from twin_server.engine.session import RunState, Session, SessionSettings, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import ConfigErrors, FMIError, NotWritable, SessionFault
from twin_server.models.base import Kind
from twin_server.runtime.compile import load_config

CONFIG = """
[server]
fmu_dirs = ["{path.parent}"]  # FMUs load only from the folders the config allows

[twins.heater.components.source]
model = "step"
parameters = {{ initial = 0.0, final = 1.0, step_time = 0.1 }}

[twins.heater.components.plant]
model = "fmu"
options = {{ path = "{path}", cache_dir = "{cache}", states = "energy" }}
parameters = {{ k = 1.5, y0 = 0.0 }}

[twins.heater.components.sensor]
model = "gain"
parameters = {{ gain = 2.0 }}

[twins.heater]
connections = ["source.output -> plant.u", "plant.y -> sensor.input"]
"""


def load_twin(tmp_path: Path, fmu: Path, cache_dir: Path) -> TwinDefinition:
    config = tmp_path / "heater.toml"
    config.write_text(CONFIG.format(path=fmu, cache=cache_dir))
    return load_config(config).twins["heater"]


def key(component: str, kind: Kind, name: str) -> VarKey:
    return VarKey(component, kind, name)


class TestFMUInTwin:
    @pytest.mark.parametrize("name", ["lag2", "lag3"])
    def test_fmu_between_built_in_models(self, tmp_path: Path, fmus: dict[str, Path],
                                         cache_dir: Path, name: str) -> None:
        """A step source drives the FMU whose output feeds a gain, all stepped by a Session."""
        twin = load_twin(tmp_path, fmus[name], cache_dir)
        session = Session("s", twin, SessionSettings(step_size=0.01))
        ys, sensed = [], []
        for _ in range(300):
            session.step(1)
            ys.append(session.read(key("plant", Kind.OUTPUT, "y")))
            sensed.append(session.read(key("sensor", Kind.OUTPUT, "output")))
        assert session.fault is None
        assert sensed == [2.0 * y for y in ys]  # the gain runs after the FMU in each tick
        assert ys[5] == 0.0 and ys[-1] == pytest.approx(1.5, rel=1e-2)  # k * final, after 6 T
        assert session.read(key("plant", Kind.STATE, "energy")) > 0.0
        assert session.read(key("plant", Kind.OUTPUT, "steps")) == 300

    def test_sessions_of_one_twin_are_independent_and_deterministic(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Two sessions of one FMU twin hold separate instances and give identical results."""
        twin = load_twin(tmp_path, fmus["lag2"], cache_dir)
        a = Session("a", twin, SessionSettings(step_size=0.01))
        b = Session("b", twin, SessionSettings(step_size=0.01))
        a.step(50)
        assert b.read(key("plant", Kind.OUTPUT, "steps")) == 0
        b.step(50)
        assert a.values() == b.values()

    def test_fmi_error_faults_only_its_session(self, tmp_path: Path, fmus: dict[str, Path],
                                               cache_dir: Path) -> None:
        """An FMI Error halts that session with a fault naming the FMI call; others step on."""
        twin = load_twin(tmp_path, fmus["lag2"], cache_dir)
        bad = Session("bad", twin, SessionSettings(step_size=0.01,
                                                   parameters={"plant": {"fail_at": 0.2}}))
        good = Session("good", twin, SessionSettings(step_size=0.01))
        bad.step(100)
        good.step(100)
        assert bad.state is RunState.HALTED and bad.fault is not None
        assert "fmi2DoStep returned Error while stepping from t=0.2 s" in str(bad.fault)
        assert bad.fault.component == "plant"
        assert good.fault is None and good.read(key("plant", Kind.OUTPUT, "steps")) == 100

    def test_fixed_parameter_refused_while_running(self, tmp_path: Path, fmus: dict[str, Path],
                                                   cache_dir: Path) -> None:
        """A running session takes a tunable FMU parameter and refuses a fixed one."""
        twin = load_twin(tmp_path, fmus["lag2"], cache_dir)
        session = Session("s", twin, SessionSettings(step_size=0.01))
        session.start()
        session.write(key("plant", Kind.PARAMETER, "k"), 3.0)
        with pytest.raises(NotWritable, match="parameter 'T' of component 'plant' is fixed"):
            session.write(key("plant", Kind.PARAMETER, "T"), 1.0)
        session.tick()
        assert session.read(key("plant", Kind.PARAMETER, "k")) == 3.0

    def test_missing_fmu_is_a_config_error_at_its_key(self, tmp_path: Path,
                                                      cache_dir: Path) -> None:
        """A config naming a missing FMU fails to load with the file and the component's key."""
        with pytest.raises(ConfigErrors) as info:
            load_twin(tmp_path, tmp_path / "gone.fmu", cache_dir)
        text = str(info.value)
        assert "twins.heater.components.plant.options" in text
        assert f"FMU file '{tmp_path / 'gone.fmu'}' does not exist" in text


BALL_CONFIG = """
[server]
fmu_dirs = ["{path.parent}"]

[twins.drop.components.plant]
model = "fmu"
options = {{ path = "{path}", cache_dir = "{cache}", states = "{states}", tolerance = 1e-9 }}

[twins.drop.components.sensor]
model = "gain"
parameters = {{ gain = 2.0 }}

[twins.drop]
connections = ["plant.ball_h -> sensor.input"]
"""


def load_ball(tmp_path: Path, fmu: Path, cache_dir: Path, states: str = "resting"
              ) -> TwinDefinition:
    config = tmp_path / "drop.toml"
    config.write_text(BALL_CONFIG.format(path=fmu, cache=cache_dir, states=states))
    return load_config(config).twins["drop"]


class TestModelExchangeInTwin:
    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_agrees_with_simulate_fmu(self, tmp_path: Path, fmus: dict[str, Path],
                                      cache_dir: Path, name: str) -> None:
        """A Session stepping the ball FMU into a gain matches simulate_fmu (CVode, rtol 1e-9
        both) to 1e-5 m at every tick, events included."""
        ref = fmpy.simulate_fmu(str(fmus[name]), stop_time=2.0, output_interval=0.01,
                                relative_tolerance=1e-9, record_events=False,
                                output=["ball.h", "ticks"])
        session = Session("s", load_ball(tmp_path, fmus[name], cache_dir),
                          SessionSettings(step_size=0.01))
        hs, sensed, ticks = [], [], []
        for _ in range(200):
            session.step(1)
            hs.append(session.read(key("plant", Kind.OUTPUT, "ball_h")))
            sensed.append(session.read(key("sensor", Kind.OUTPUT, "output")))
            ticks.append(session.read(key("plant", Kind.OUTPUT, "ticks")))
        session.close()
        assert session.fault is None
        assert np.max(np.abs(np.array(hs) - ref["ball.h"][1:201])) < 1e-5
        assert sensed == [2.0 * h for h in hs]
        assert ticks == list(ref["ticks"][1:201])

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_fork_and_restore_are_exact(self, tmp_path: Path, fmus: dict[str, Path],
                                        cache_dir: Path, name: str) -> None:
        """A forked session and a restored one continue bit for bit, across bounces."""
        session = Session("s", load_ball(tmp_path, fmus[name], cache_dir),
                          SessionSettings(step_size=0.01))
        session.step(37)
        snap = session.snapshot()
        fork = session.fork("f")
        session.step(60)
        expected = session.values()
        fork.step(60)
        session.restore(snap)
        session.step(60)
        assert fork.values() == expected and session.values() == expected
        fork.close()
        session.close()

    def test_continuous_state_written_through_the_session(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Writing a continuous local state (ball3's x) moves it; it integrates on from there."""
        twin = load_ball(tmp_path, fmus["ball3"], cache_dir, states="ball.x, resting")
        session = Session("s", twin, SessionSettings(step_size=0.01))
        session.step(10)
        session.write(key("plant", Kind.STATE, "ball_x"), 5.0)
        session.step(20)
        assert session.fault is None
        assert session.read(key("plant", Kind.STATE, "ball_x")) == pytest.approx(5.1, abs=1e-9)
        session.close()

    def test_termination_halts_only_its_session(self, tmp_path: Path, fmus: dict[str, Path],
                                                cache_dir: Path) -> None:
        """An FMU asking to terminate (ball3 at rest) halts that session, with no fault;
        another session of the same twin steps on."""
        twin = load_ball(tmp_path, fmus["ball3"], cache_dir)
        settings = SessionSettings(step_size=0.01,
                                   parameters={"plant": {"e": 0.2, "stop_at_rest": True}})
        stopping = Session("stop", twin, settings)
        going = Session("go", twin, SessionSettings(step_size=0.01))
        stopping.step(100)
        going.step(100)
        assert stopping.state is RunState.HALTED and stopping.fault is None
        assert stopping.step_count == 67  # the tick that holds t = 0.668 s, the rest
        assert stopping.read(key("plant", Kind.OUTPUT, "ball_h")) == 0.0
        assert going.fault is None and going.read(key("plant", Kind.STATE, "resting")) is False
        stopping.close()
        going.close()

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_termination_at_reset(self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path,
                                  name: str) -> None:
        """A Reset whose first event iteration asks to terminate faults with that FMIError;
        Restore then steps on as before, and a Reset with another parameter value runs as
        a new session does."""
        twin = load_ball(tmp_path, fmus[name], cache_dir)
        session = Session("s", twin, SessionSettings(step_size=0.01))
        session.step(20)
        snap = session.snapshot()
        session.step(20)
        expected = session.values()
        with pytest.raises(SessionFault) as info:
            session.reset({"plant": {"stop_at": 0.0}})
        assert session.state is RunState.HALTED
        assert isinstance(info.value.cause, FMIError)
        assert info.value.cause.fmi_status == "terminateSimulation"
        session.restore(snap)
        session.step(20)
        assert session.fault is None and session.values() == expected
        session.reset({"plant": {"stop_at": 1e30}})
        session.step(60)
        fresh = Session("fresh", twin, SessionSettings(step_size=0.01))
        fresh.step(60)
        assert session.fault is None and session.values() == fresh.values()
        session.close()
        fresh.close()

    @pytest.mark.parametrize("name", ["ball2", "ball3"])
    def test_restore_after_a_fault_in_event_mode(self, tmp_path: Path, fmus: dict[str, Path],
                                                 cache_dir: Path, name: str) -> None:
        """A step that fails in Event Mode halts the session; Restore clears the fault and
        the session steps on bit for bit as before."""
        session = Session("s", load_ball(tmp_path, fmus[name], cache_dir),
                          SessionSettings(step_size=0.01))
        session.step(30)
        snap = session.snapshot()
        session.step(40)
        expected = session.values()
        session.restore(snap)
        session.write(key("plant", Kind.PARAMETER, "fail_at"), 0.0)
        session.step(1)
        assert session.state is RunState.HALTED and session.fault is not None
        assert "returned Error" in str(session.fault)
        session.restore(snap)
        session.step(40)
        assert session.fault is None and session.values() == expected
        session.close()


class TestFileOptions:
    def test_relative_path_and_default_cache(self, tmp_path: Path,
                                             fmus: dict[str, Path]) -> None:
        """An FMU path resolves against the config's folder; the cache goes under state_dir."""
        folder = tmp_path / "plant"
        (folder / "fmus").mkdir(parents=True)
        (folder / "fmus" / "lag.fmu").write_bytes(fmus["lag2"].read_bytes())
        state = tmp_path / "state"
        config = folder / "plant.toml"
        config.write_text(
            f'[server]\nstate_dir = "{state}"\n'
            '[twins.t.components.plant]\nmodel = "fmu"\noptions = { path = "fmus/lag.fmu" }\n')
        options = load_config(config).twins["t"].component("plant").options
        assert options["path"] == str(folder / "fmus" / "lag.fmu")
        assert options["cache_dir"] == str(state / "fmu-cache")

    def test_states_as_a_list(self, tmp_path: Path, fmus: dict[str, Path],
                              cache_dir: Path) -> None:
        """options.states may be a TOML array of local variable names."""
        config = tmp_path / "t.toml"
        config.write_text(
            f'[server]\nfmu_dirs = ["{fmus["lag2"].parent}"]\n'
            '[twins.t.components.plant]\nmodel = "fmu"\n'
            f'options = {{ path = "{fmus["lag2"]}", cache_dir = "{cache_dir}", '
            'states = ["energy"] }\n')
        twin = load_config(config).twins["t"]
        names = [v.name for v in twin.component("plant").declared() if v.kind is Kind.STATE]
        assert names == ["energy"]


class TestInspectCommand:
    def test_prints_variables(self, fmus: dict[str, Path], capsys: pytest.CaptureFixture[str]
                              ) -> None:
        """`twin-server fmu inspect FILE` prints the FMU's variables and exits 0."""
        from twin_server.cli import main

        assert main(["fmu", "inspect", str(fmus["lag2"])]) == 0
        out = capsys.readouterr().out
        assert "k" in out and "parameter" in out and "y" in out

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing FMU is named on stderr with exit status 2."""
        from twin_server.cli import main

        assert main(["fmu", "inspect", str(tmp_path / "none.fmu")]) == 2
        assert "none.fmu" in capsys.readouterr().err


class TestDeclarationOrder:
    def test_every_order_of_a_loop_with_fmus(self, fmus: dict[str, Path],
                                             cache_dir: Path) -> None:
        """A PID loop around a co-simulation FMU (lag2), beside a model-exchange FMU
        (vdp2) the PID drives, gives bit-identical trajectories for each of the 24
        orders of its components (the connections reversed in every other one)."""
        def fmu(name: str) -> dict[str, Any]:
            return {"model": "fmu",
                    "options": {"path": str(fmus[name]), "cache_dir": str(cache_dir)}}

        comps = {"sp": {"model": "step", "parameters": {"step_time": 0.2, "final": 3.0}},
                 "pid": {"model": "pid", "parameters": {"kp": 2.0, "ki": 1.0}},
                 "plant": fmu("lag2"), "osc": fmu("vdp2")}
        conns = ["sp.output -> pid.setpoint", "plant.y -> pid.measurement",
                 "pid.output -> plant.u", "pid.output -> osc.u"]
        reference = trajectory(twin_config(comps, conns), 0.05, 40)
        assert len(reference) == 40 and "fault" not in reference[-1]
        for n, order in enumerate(itertools.permutations(range(4))):
            wiring = [3, 2, 1, 0] if n % 2 else None
            assert trajectory(twin_config(comps, conns, order, wiring), 0.05, 40) == reference
