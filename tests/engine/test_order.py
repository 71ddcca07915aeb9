"""Declaration order: a twin's results never depend on the order its components and
connections are written in (DESIGN.md, stepping semantics, point 4).

A component with state takes its inputs at t_k (the outputs before the tick), a
feedthrough component those of this tick; feedback loops are cut at the inputs of
components with state, a rule on the graph. Twins are compiled from configs with
the built-in models, as the daemon does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin_server.config.loader import read_config
from twin_server.config.schema import TwinConfig
from twin_server.engine.session import Session, SessionSettings, VarKey
from twin_server.engine.twin import compile_twin
from twin_server.models import registry
from twin_server.models.base import DataType, Kind

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"

#: built-in models of the random twins (their ports are all Double)
RANDOM_MODELS = (
    "constant", "step", "ramp", "sine", "square", "first_order_lag",
    "gain", "sum", "noisy_sensor", "pid",
)


def twin_config(
    components: Mapping[str, Mapping[str, Any]],
    connections: Sequence[str],
    order: Sequence[int] | None = None,
    wiring: Sequence[int] | None = None,
) -> TwinConfig:
    """A TwinConfig with its components (and connections) in the given orders."""
    names = list(components)
    conns = list(connections)
    if order is not None:
        names = [names[i] for i in order]
    if wiring is not None:
        conns = [conns[i] for i in wiring]
    return TwinConfig.model_validate(
        {"components": {n: dict(components[n]) for n in names}, "connections": conns}
    )


def trajectory(config: TwinConfig, step_size: float, ticks: int) -> list[dict[str, Any]]:
    """Every variable of a session of ``config`` after each tick, floats as hex, keyed
    by path (so that two orders compare name by name); a fault ends it with its tick
    and component."""
    session = Session("s", compile_twin("t", config), SessionSettings(step_size=step_size))
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(ticks):
            session.step(1)
            if session.fault is not None:
                rows.append({"fault": (session.fault.tick, session.fault.component)})
                break
            rows.append({k.path: _bits(v) for k, v in session.values().items()})
    finally:
        session.close()
    return rows


def _bits(value: Any) -> Any:
    return value.hex() if isinstance(value, float) else value


def lag_output(config: TwinConfig, step_size: float, ticks: int) -> list[float]:
    session = Session("s", compile_twin("t", config), SessionSettings(step_size=step_size))
    values = []
    for _ in range(ticks):
        session.step(1)
        values.append(float(session.read(VarKey("lag", Kind.OUTPUT, "output"))))
    return values


STEP_INTO_LAG = {
    "src": {"model": "step", "parameters": {"step_time": 1.0}},
    "lag": {"model": "first_order_lag", "parameters": {"time_constant": 1.0}},
}


class TestSourceIntoState:
    @pytest.mark.parametrize("order", [[0, 1], [1, 0]], ids=["source_first", "lag_first"])
    def test_step_into_lag_is_the_exact_held_input_response(self, order: list[int]) -> None:
        """A step source feeding a lag gives the exact response to the input held at
        t_k, whichever is declared first (the lag no longer sees the step a tick early)."""
        dt, tau = 0.5, 1.0
        config = twin_config(STEP_INTO_LAG, ["src.output -> lag.input"], order)
        got = lag_output(config, dt, 10)
        for k, y in enumerate(got, start=1):  # y at t = k*dt; u(t_j) = 1 from t_j = 1 s on
            held = max(0, k - 2)  # ticks taken with the input at 1
            assert y == pytest.approx(-math.expm1(-held * dt / tau), abs=1e-15), k

    def test_two_lags_in_a_loop_read_each_other_before_the_tick(self) -> None:
        """Two components with state feeding each other both take the other's output
        at t_k, in both orders (the loop is cut at both inputs, not by the order)."""
        comps = {
            "a": {"model": "first_order_lag", "initial": {"output": 1.0}},
            "b": {"model": "first_order_lag", "parameters": {"gain": -1.0}},
        }
        conns = ["a.output -> b.input", "b.output -> a.input"]
        runs = [trajectory(twin_config(comps, conns, o), 0.1, 20) for o in ([0, 1], [1, 0])]
        assert runs[0] == runs[1]
        f = -math.expm1(-0.1)
        a, b = 1.0, 0.0
        for row in runs[0]:
            a, b = a + (b - a) * f, b + (-a - b) * f  # both from the values before
            assert row["Components.a.Outputs.output"] == a.hex()
            assert row["Components.b.Outputs.output"] == b.hex()

    def test_feedthrough_declared_first_reads_this_ticks_state(self) -> None:
        """A gain declared before the lag feeding it shows gain * the lag's new output
        after every tick (a feedthrough input takes this tick's value)."""
        comps = {
            "g": {"model": "gain", "parameters": {"gain": 3.0}},
            "lag": {"model": "first_order_lag"},
            "one": {"model": "constant", "parameters": {"value": 1.0}},
        }
        config = twin_config(comps, ["lag.output -> g.input", "one.output -> lag.input"])
        session = Session("s", compile_twin("t", config), SessionSettings(step_size=0.2))
        for _ in range(5):
            session.step(1)
            lag = float(session.read(VarKey("lag", Kind.OUTPUT, "output")))
            assert session.read(VarKey("g", Kind.OUTPUT, "output")) == 3.0 * lag


def _demo_twins() -> dict[str, TwinConfig]:
    return dict(read_config(DEMO).twins)


_STEP = {"tank_level": (0.05, 400), "heated_room": (0.5, 200)}


class TestAnyPermutation:
    @pytest.mark.parametrize("name", ["tank_level", "heated_room"])
    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def test_demo_twin(self, name: str, data: st.DataObject) -> None:
        """Any permutation of a demo twin's components and connections gives
        bit-identical trajectories."""
        config = _demo_twins()[name]
        comps = {n: c.model_dump(exclude_defaults=True) for n, c in config.components.items()}
        conns = [str(c) for c in config.connections]
        order = data.draw(st.permutations(range(len(comps))), label="components")
        wiring = data.draw(st.permutations(range(len(conns))), label="connections")
        dt, ticks = _STEP[name]
        reference = trajectory(twin_config(comps, conns), dt, ticks)
        assert reference and "fault" not in reference[-1]
        assert trajectory(twin_config(comps, conns, order, wiring), dt, ticks) == reference

    @settings(max_examples=150, deadline=None)
    @given(data=st.data())
    def test_random_twin_of_built_in_blocks(self, data: st.DataObject) -> None:
        """A random twin of built-in blocks (chains, fan-outs and feedback loops through
        components with state) gives bit-identical trajectories in any order."""
        comps, conns = data.draw(_random_twin(), label="twin")
        order = data.draw(st.permutations(range(len(comps))), label="components")
        wiring = data.draw(st.permutations(range(len(conns))), label="connections")
        reference = trajectory(twin_config(comps, conns), 0.1, 30)
        assert trajectory(twin_config(comps, conns, order, wiring), 0.1, 30) == reference


@st.composite
def _random_twin(draw: st.DrawFn) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Components ``c0..cn`` of RANDOM_MODELS; each input fed by some output or left
    open. A feedthrough input is fed only by a component with state or a feedthrough
    one drawn earlier, so that no loop is algebraic; loops through state are common."""
    models = draw(st.lists(st.sampled_from(RANDOM_MODELS), min_size=2, max_size=7))
    classes = [registry.get(m) for m in models]
    comps: dict[str, dict[str, Any]] = {}
    for i, model in enumerate(models):
        spec: dict[str, Any] = {"model": model}
        if model == "gain":
            spec["parameters"] = {"gain": draw(st.sampled_from([-0.5, 0.25, 0.9, 1.5]))}
        elif model == "noisy_sensor":
            spec["parameters"] = {"seed": draw(st.integers(0, 9)), "noise_std": 0.1}
        elif model == "first_order_lag":
            spec["parameters"] = {"time_constant": draw(st.sampled_from([0.05, 0.3, 2.0]))}
        comps[f"c{i}"] = spec
    outputs = [
        [v.name for v in cls.variables if v.kind is Kind.OUTPUT and v.datatype is DataType.DOUBLE]
        for cls in classes
    ]
    conns: list[str] = []
    for i, cls in enumerate(classes):
        for port in (v.name for v in cls.variables if v.kind is Kind.INPUT):
            sources = [
                j for j, other in enumerate(classes)
                if outputs[j] and (not cls.direct_feedthrough
                                   or not other.direct_feedthrough or j < i)
            ]
            j = draw(st.none() | st.sampled_from(sources)) if sources else None
            if j is not None:
                conns.append(f"c{j}.{draw(st.sampled_from(outputs[j]))} -> c{i}.{port}")
    return comps, conns
