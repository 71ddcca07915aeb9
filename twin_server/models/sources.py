"""Signal sources: outputs that are pure functions of simulation time.

Each source has no inputs and one output, ``output``. ``reset`` returns the value
at t = 0 and ``step(t, dt)`` the value at t + dt. The engine passes
``t = k*dt`` (counted, not accumulated); the end of the step is computed as
``(k+1)*dt`` rather than ``t + dt``, because e.g. ``0.9 + 0.1 < 1.0`` in floating
point and a step at 1.0 s would fire one tick late.

A source carries no state: its value at a time never depends on the past, so
snapshot, restore and forks are trivially exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from twin_server.models.base import Kind, Model, Value, Variable

_OUTPUT = Variable("output", Kind.OUTPUT, default=0.0, description="the signal")


def end_time(t: float, dt: float) -> float:
    """``t + dt``, as ``(k+1)*dt`` when ``t`` lies on the grid ``k*dt``."""
    k = round(t / dt)
    return (k + 1) * dt if k * dt == t else t + dt


class _Source(Model):
    """A model whose output is ``value(t)``; subclasses implement ``value``."""

    direct_feedthrough = False

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {"output": self.value(0.0)}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        return {"output": self.value(end_time(t, dt))}

    def value(self, t: float) -> float:
        raise NotImplementedError

    def _p(self, name: str) -> float:
        return float(self.parameters[name])


class Constant(_Source):
    """A constant value (tunable: a setpoint to write from a client)."""

    description = "Constant: output = value"
    variables = (
        _OUTPUT,
        Variable("value", Kind.PARAMETER, default=0.0, description="the output value"),
    )

    @classmethod
    def ranges(cls, parameters: Mapping[str, Value]) -> dict[str, tuple[float, float]]:
        return {"output": (float(parameters["value"]), float(parameters["value"]))}

    def value(self, t: float) -> float:
        return self._p("value")


class Step(_Source):
    """``initial`` before ``step_time``, ``final`` from ``step_time`` on."""

    description = "Step: initial before step_time, final from step_time on"
    variables = (
        _OUTPUT,
        Variable("initial", Kind.PARAMETER, default=0.0, description="value before step_time"),
        Variable("final", Kind.PARAMETER, default=1.0, description="value from step_time on"),
        Variable("step_time", Kind.PARAMETER, "s", low=0.0, default=1.0,
                 description="simulation time of the step"),
    )

    @classmethod
    def ranges(cls, parameters: Mapping[str, Value]) -> dict[str, tuple[float, float]]:
        ends = (float(parameters["initial"]), float(parameters["final"]))
        return {"output": (min(ends), max(ends))}

    def value(self, t: float) -> float:
        return self._p("final") if t >= self._p("step_time") else self._p("initial")


class Ramp(_Source):
    """``initial`` until ``start_time``, then rising by ``slope`` per second."""

    description = "Ramp: initial + slope * max(0, t - start_time)"
    variables = (
        _OUTPUT,
        Variable("initial", Kind.PARAMETER, default=0.0, description="value until start_time"),
        Variable("slope", Kind.PARAMETER, "1/s", default=1.0,
                 description="rate of change after start_time, output units per second"),
        Variable("start_time", Kind.PARAMETER, "s", low=0.0, default=0.0,
                 description="simulation time at which the ramp starts"),
    )

    def value(self, t: float) -> float:
        return self._p("initial") + self._p("slope") * max(0.0, t - self._p("start_time"))


class Sine(_Source):
    """``offset + amplitude * sin(2*pi*frequency*t + phase)``."""

    description = "Sine: offset + amplitude * sin(2*pi*frequency*t + phase)"
    variables = (
        _OUTPUT,
        Variable("amplitude", Kind.PARAMETER, default=1.0,
                 description="peak deviation from offset"),
        Variable("frequency", Kind.PARAMETER, "Hz", low=0.0, default=0.1,
                 description="oscillations per second"),
        Variable("phase", Kind.PARAMETER, "rad", default=0.0, description="phase at t = 0"),
        Variable("offset", Kind.PARAMETER, default=0.0, description="mean value"),
    )

    @classmethod
    def ranges(cls, parameters: Mapping[str, Value]) -> dict[str, tuple[float, float]]:
        return {"output": _around(parameters)}

    def value(self, t: float) -> float:
        angle = 2.0 * math.pi * self._p("frequency") * t + self._p("phase")
        return self._p("offset") + self._p("amplitude") * math.sin(angle)


class Square(_Source):
    """``offset + amplitude`` for the first ``duty`` of each period, ``offset - amplitude``
    for the rest (as ``scipy.signal.square``); the period starts at t = 0."""

    description = "Square wave: offset +/- amplitude, high for duty*period of each period"
    variables = (
        _OUTPUT,
        Variable("amplitude", Kind.PARAMETER, default=1.0, description="deviation from offset"),
        Variable("period", Kind.PARAMETER, "s", low=1e-9, default=10.0,
                 description="length of one period (> 0)"),
        Variable("duty", Kind.PARAMETER, low=0.0, high=1.0, default=0.5,
                 description="share of each period spent high"),
        Variable("offset", Kind.PARAMETER, default=0.0, description="middle value"),
    )

    @classmethod
    def ranges(cls, parameters: Mapping[str, Value]) -> dict[str, tuple[float, float]]:
        return {"output": _around(parameters)}

    def value(self, t: float) -> float:
        high = (t / self._p("period")) % 1.0 < self._p("duty")
        amplitude = self._p("amplitude")
        return self._p("offset") + (amplitude if high else -amplitude)


def _around(parameters: Mapping[str, Value]) -> tuple[float, float]:
    """offset -/+ |amplitude|: the range of a sine or square wave."""
    offset, amplitude = float(parameters["offset"]), abs(float(parameters["amplitude"]))
    return (offset - amplitude, offset + amplitude)
