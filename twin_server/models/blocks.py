"""Signal blocks: gain, weighted sum, first-order lag and a noisy sensor.

Units are left empty: a block passes on whatever its input carries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from twin_server.models.base import DataType, Kind, Model, Value, Variable


class Gain(Model):
    """``output = gain * input``."""

    description = "Gain: output = gain * input"
    variables = (
        Variable("input", Kind.INPUT, default=0.0, description="signal to scale"),
        Variable("output", Kind.OUTPUT, default=0.0, description="gain * input"),
        Variable("gain", Kind.PARAMETER, default=1.0, description="factor"),
    )

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {"output": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        return {"output": float(self.parameters["gain"]) * float(inputs["input"])}


class Sum(Model):
    """``output = weight_a*a + weight_b*b + weight_c*c``.

    Weights rather than signs: a difference is ``weight_b = -1``, a mean of two is
    0.5 and 0.5, and an unconnected input (default 0) drops out.
    """

    description = "Weighted sum: output = weight_a*a + weight_b*b + weight_c*c"
    variables = (
        Variable("a", Kind.INPUT, default=0.0, description="first term"),
        Variable("b", Kind.INPUT, default=0.0, description="second term"),
        Variable("c", Kind.INPUT, default=0.0, description="third term"),
        Variable("output", Kind.OUTPUT, default=0.0, description="the weighted sum"),
        Variable("weight_a", Kind.PARAMETER, default=1.0, description="weight of a (-1 subtracts)"),
        Variable("weight_b", Kind.PARAMETER, default=1.0, description="weight of b (-1 subtracts)"),
        Variable("weight_c", Kind.PARAMETER, default=1.0, description="weight of c (-1 subtracts)"),
    )

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {"output": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        p = self.parameters
        return {"output": float(p["weight_a"]) * float(inputs["a"])
                + float(p["weight_b"]) * float(inputs["b"])
                + float(p["weight_c"]) * float(inputs["c"])}


class FirstOrderLag(Model):
    """PT1: ``time_constant * dy/dt = gain*u - y``, discretised exactly (input held).

    ``y(t+dt) = y + (gain*u - y) * (1 - exp(-dt/time_constant))``; the output
    depends only on the state carried in, so the lag breaks algebraic loops.
    """

    description = "First-order lag (PT1): time_constant * dy/dt = gain*input - y"
    direct_feedthrough = False
    variables = (
        Variable("input", Kind.INPUT, default=0.0, description="signal to follow"),
        Variable("output", Kind.OUTPUT, default=0.0, description="lagged signal"),
        Variable("output", Kind.STATE, default=0.0, description="lagged signal"),
        Variable("time_constant", Kind.PARAMETER, "s", low=1e-9, default=1.0,
                 description="time to reach 63 % of a step (> 0)"),
        Variable("gain", Kind.PARAMETER, default=1.0, description="steady-state gain"),
    )

    output: float

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        self.output = float(initial.get("output", 0.0))
        self._factors: dict[float, float] = {}
        return {"output": self.output}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        factor = self._factors.get(dt)
        if factor is None:
            tau = float(self.parameters["time_constant"])
            factor = self._factors[dt] = -math.expm1(-dt / tau)
        target = float(self.parameters["gain"]) * float(inputs["input"])
        self.output += (target - self.output) * factor
        return {"output": self.output}

    def set_parameter(self, name: str, value: Value) -> None:
        self.parameters[name] = value
        self._factors.clear()

    def get_states(self) -> dict[str, Value]:
        return {"output": self.output}

    def set_states(self, states: Mapping[str, Value]) -> None:
        if "output" in states:
            self.output = float(states["output"])


class NoisySensor(Model):
    """``output = input + noise_std * z``, z standard normal from a seeded numpy Generator.

    Deterministic for a seed: Reset reseeds, and snapshot/restore carry the
    generator's state, so a restored or forked session draws the same noise. One
    draw is taken per step whatever ``noise_std`` is (even 0), so retuning the
    noise scales the sequence without shifting it. Draws are taken in blocks
    (one numpy call per ``_BLOCK`` steps instead of one per step).
    """

    _BLOCK = 256

    description = "Sensor adding Gaussian noise: output = input + N(0, noise_std^2)"
    variables = (
        Variable("input", Kind.INPUT, default=0.0, description="true value"),
        Variable("output", Kind.OUTPUT, default=0.0, description="measured value"),
        Variable("noise_std", Kind.PARAMETER, low=0.0, default=0.01,
                 description="standard deviation of the noise, in the input's unit"),
        Variable("seed", Kind.PARAMETER, datatype=DataType.INT32, default=0, tunable=False,
                 description="seed of the noise generator; applies at Reset"),
    )

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        # numpy rejects negative seeds; map the Int32 range onto non-negative ones
        self._rng = np.random.default_rng(int(parameters["seed"]) & 0xFFFFFFFF)
        self._draws: list[float] = []
        self._next = 0
        return {"output": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        if self._next == len(self._draws):
            self._draws = self._rng.standard_normal(self._BLOCK).tolist()
            self._next = 0
        z = self._draws[self._next]
        self._next += 1
        return {"output": float(inputs["input"]) + float(self.parameters["noise_std"]) * z}
