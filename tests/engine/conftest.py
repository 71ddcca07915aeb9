"""Small test models and hand-built twins for the engine tests.

The models are deliberately tiny and exact (no floating-point surprises beyond
one multiply-add per tick) so that tests can state expected values outright.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from twin_server.engine.session import Session, SessionSettings, VarKey
from twin_server.engine.twin import ComponentDefinition, Connection, TwinDefinition
from twin_server.models.base import DataType, Kind, Model, Value, Variable
from twin_server.models.blocks import NoisySensor
from twin_server.models.pid import PID
from twin_server.models.water_tank import WaterTank

#: writes to apply before given ticks: {tick: [(key, value), ...]}
Script = dict[int, list[tuple[VarKey, Any]]]


class Recording(Model):
    """Base of the test models: keeps every (t, inputs) it was stepped with."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.record = bool(self.options.get("record", True))
        self.calls: list[tuple[float, dict[str, Value]]] = []

    def _seen(self, t: float, inputs: Mapping[str, Value]) -> None:
        if self.record:
            self.calls.append((t, dict(inputs)))


class Integrator(Recording):
    """x' = gain * u; y = x. No direct feedthrough: y is the state after the step."""

    direct_feedthrough = False
    variables = (
        Variable("u", Kind.INPUT, default=0.0),
        Variable("y", Kind.OUTPUT),
        Variable("x", Kind.STATE, low=-1e6, high=1e6),
        Variable("gain", Kind.PARAMETER, low=-100.0, high=100.0, default=1.0),
        Variable("x0", Kind.PARAMETER, low=-1e6, high=1e6, default=0.0, tunable=False),
    )

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        self.x = float(initial.get("x", parameters["x0"]))
        return {"y": self.x}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        self._seen(t, inputs)
        self.x += float(self.parameters["gain"]) * float(inputs["u"]) * dt
        return {"y": self.x}

    def get_states(self) -> dict[str, Value]:
        return {"x": self.x}

    def set_states(self, states: Mapping[str, Value]) -> None:
        if "x" in states:
            self.x = float(states["x"])


class Gain(Recording):
    """y = k * u + bias; direct feedthrough."""

    variables = (
        Variable("u", Kind.INPUT, default=0.0),
        Variable("y", Kind.OUTPUT),
        Variable("k", Kind.PARAMETER, low=-100.0, high=100.0, default=1.0),
        Variable("bias", Kind.PARAMETER, default=0.0),
    )

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {"y": float(self.parameters["bias"])}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        self._seen(t, inputs)
        p = self.parameters
        return {"y": float(p["k"]) * float(inputs["u"]) + float(p["bias"])}


class TimeSource(Recording):
    """Outputs the time at the end of the step, ``t + dt``; records the t it was given."""

    variables = (Variable("time", Kind.OUTPUT, unit="s"),)

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {"time": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        self._seen(t, inputs)
        return {"time": t + dt}


class Faulty(Recording):
    """Passes u through, but raises (mode 0) or returns NaN (mode 1) at tick ``at``."""

    variables = (
        Variable("u", Kind.INPUT, default=0.0),
        Variable("y", Kind.OUTPUT),
        Variable("at", Kind.PARAMETER, datatype=DataType.INT32, low=0, default=3),
        Variable("mode", Kind.PARAMETER, datatype=DataType.INT32, low=0, high=2, default=0),
    )

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        self.k = 0
        return {"y": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        self._seen(t, inputs)
        k, self.k = self.k, self.k + 1
        if k == self.parameters["at"]:
            mode = self.parameters["mode"]
            if mode == 0:
                raise ZeroDivisionError("boom")
            if mode == 1:
                return {"y": math.nan}
            return {}
        return {"y": float(inputs["u"])}


class Switch(Recording):
    """Typed variables: a Boolean input, an Int32 parameter, a String output."""

    variables = (
        Variable("on", Kind.INPUT, datatype=DataType.BOOLEAN, default=False),
        Variable("label", Kind.OUTPUT, datatype=DataType.STRING, default=""),
        Variable("count", Kind.OUTPUT, datatype=DataType.INT32, default=0),
        Variable("mode", Kind.PARAMETER, datatype=DataType.INT32, low=0, high=3, default=1),
    )

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        self.count = 0
        return {"label": "off", "count": 0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        self._seen(t, inputs)
        if inputs["on"]:
            self.count += int(self.parameters["mode"])
        return {"label": "on" if inputs["on"] else "off", "count": self.count}


def component(
    name: str,
    factory: type[Model],
    *,
    parameters: Mapping[str, Value] | None = None,
    initial: Mapping[str, Value] | None = None,
    inputs: Mapping[str, Value] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ComponentDefinition:
    """A ComponentDefinition with every parameter filled from the model's defaults."""
    params = {v.name: v.default for v in factory.variables if v.kind is Kind.PARAMETER}
    params.update(parameters or {})
    return ComponentDefinition(
        name=name,
        model=factory.__name__.lower(),
        factory=factory,
        parameters=params,
        initial=dict(initial or {}),
        inputs=dict(inputs or {}),
        options=dict(options or {}),
    )


def connect(spec: str) -> Connection:
    """``"a.y -> b.u"`` as a Connection."""
    left, right = (s.strip() for s in spec.split("->"))
    source, source_port = left.split(".")
    target, target_port = right.split(".")
    return Connection(source, source_port, target, target_port)


def twin(
    name: str, *components: ComponentDefinition, connections: tuple[str, ...] = ()
) -> TwinDefinition:
    return TwinDefinition(
        name=name, components=tuple(components), connections=tuple(connect(c) for c in connections)
    )


def loop_twin(*, record: bool = True) -> TwinDefinition:
    """src -> gain -> integ -> fb (gain) -> back into gain's ... a loop through an integrator.

    Order: src, integ, fb, sum. ``integ.u`` comes from ``sum.y`` (later in the order:
    previous tick), ``fb.u`` from ``integ.y`` (earlier: this tick), ``sum.u`` from
    ``fb.y`` (earlier: this tick).
    """
    opts = {"record": record}
    return twin(
        "loop",
        component("src", TimeSource, options=opts),
        component("integ", Integrator, parameters={"x0": 1.0}, options=opts),
        component("fb", Gain, parameters={"k": -0.5, "bias": 0.25}, options=opts),
        component("sum", Gain, parameters={"k": 2.0}, options=opts),
        connections=("sum.y -> integ.u", "integ.y -> fb.u", "fb.y -> sum.u"),
    )


def make_session(definition: TwinDefinition, name: str = "s", **settings: Any) -> Session:
    return Session(name, definition, SessionSettings(**settings))


@pytest.fixture
def loop_session() -> Session:
    return make_session(loop_twin(), step_size=0.1)


def tank_pid_twin() -> TwinDefinition:
    """A water tank under PID level control, built by hand: tank before pid in the
    order (the tank has no feedthrough), so the pid reads this tick's level and the
    tank the previous tick's valve command."""
    return twin(
        "tank_pid",
        component("tank", WaterTank, parameters={"area": 0.5, "initial_level": 0.2}),
        component(
            "pid",
            PID,
            parameters={
                "kp": 0.8,
                "ki": 0.2,
                "kd": 0.05,
                "derivative_filter_time": 0.5,
                "output_max": 0.5,
            },
            inputs={"setpoint": 1.0},
        ),
        connections=("tank.level -> pid.measurement", "pid.output -> tank.inflow"),
    )


def noisy_loop_twin() -> TwinDefinition:
    """The tank under PID control measured through a noisy sensor: tank, sensor, pid.
    The noise comes from a seeded numpy Generator, so snapshots must carry its state."""
    return twin(
        "noisy_loop",
        component("tank", WaterTank, parameters={"area": 0.5, "initial_level": 0.2}),
        component("sensor", NoisySensor, parameters={"noise_std": 0.02, "seed": 7}),
        component(
            "pid",
            PID,
            parameters={"kp": 0.8, "ki": 0.2, "kd": 0.05, "output_max": 0.5},
            inputs={"setpoint": 1.0},
        ),
        connections=(
            "tank.level -> sensor.input",
            "sensor.output -> pid.measurement",
            "pid.output -> tank.inflow",
        ),
    )


def faulting_twin(at: int, mode: int = 0, name: str = "faulting") -> TwinDefinition:
    """src -> bad (Faulty: raises at tick ``at`` with mode 0, NaN with mode 1) -> after."""
    return twin(
        name,
        component("src", TimeSource, options={"record": False}),
        component("bad", Faulty, parameters={"at": at, "mode": mode}, options={"record": False}),
        component("after", Gain, options={"record": False}),
        connections=("src.time -> bad.u", "bad.y -> after.u"),
    )


class Tracked(Gain):
    """A Gain that counts its instances and closes in ``Tracked.open`` (class-wide)."""

    open: ClassVar[set[int]] = set()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        Tracked.open.add(id(self))

    def close(self) -> None:
        Tracked.open.discard(id(self))


@pytest.fixture
def tracked() -> Iterator[set[int]]:
    """The ids of Tracked instances not yet closed (empty at the start of the test)."""
    Tracked.open.clear()
    yield Tracked.open
    Tracked.open.clear()


def run_scripted(s: Session, ticks: int, script: Script) -> None:
    """Step ``ticks`` ticks through step(n), applying ``script``'s writes before their tick."""
    k = 0
    for at in sorted({*script, ticks}):
        if at > ticks:
            break
        if at > k:
            s.step(at - k)
            k = at
        for key, value in script.get(at, []):
            s.write(key, value)


def bits(values: dict[VarKey, Any]) -> dict[str, Any]:
    return {k.path: v.hex() if isinstance(v, float) else v for k, v in values.items()}
