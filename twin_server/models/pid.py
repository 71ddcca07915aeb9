"""A discrete PID controller as found in PLCs (position form, parallel gains).

Per step, with ``e = setpoint - measurement`` (``measurement - setpoint`` when
``reverse``, for a cooling valve or a drain pump) and ``sign`` = +1 (-1 reversed)::

    P = kp * e
    I = I + ki * e * dt                 (backward Euler, the integral term itself)
    D = -sign * kd * d(measurement)/dt  (optionally through a first-order filter)
    output = clamp(P + I + D, output_min, output_max)

Choices, and why:

* **Derivative on measurement**: a setpoint step does not kick the output; only
  a change of the measurement moves D. The first step after Reset has no previous
  measurement and takes D = 0 (no kick from the initial value either).
* **Derivative filter**: ``derivative_filter_time`` Tf > 0 passes the difference
  quotient through an exactly discretised first-order lag; 0 disables it.
* **Anti-windup by conditional integration (clamping)**: the integral is not
  advanced in a step where the output would saturate and the error drives it
  further into saturation; the integral term is also held within the output
  range. The output leaves saturation as soon as the error reverses. Back-
  calculation needs a tracking time constant that users would have to tune;
  conditional integration has none.
* **The state is the integral term** (in output units), not the integral of the
  error: a change of ``ki`` does not move the output, and writing the state
  preloads the controller (bumpless switch from manual).
* **Bumpless retuning**: while the integral is active (ki > 0), a change of
  ``kp``, ``kd`` or ``reverse`` adjusts the integral term so that the output
  of the last step would have been unchanged. With ki = 0 there is nothing that
  could absorb the change (it would stay as a permanent offset), so it shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from twin_server.errors import OutOfRange
from twin_server.models.base import DataType, Kind, Model, Value, Variable


class PID(Model):
    """PID controller: derivative on measurement, clamping anti-windup, reverse action."""

    description = "PID controller with derivative on measurement and anti-windup"
    direct_feedthrough = True
    variables = (
        Variable("setpoint", Kind.INPUT, default=0.0,
                 description="desired value of the measurement"),
        Variable("measurement", Kind.INPUT, default=0.0, description="controlled process value"),
        Variable("output", Kind.OUTPUT, default=0.0,
                 description="manipulated value, within [output_min, output_max]"),
        Variable("integral", Kind.STATE, default=0.0,
                 description="the integral term in output units (write to preload)"),
        Variable("kp", Kind.PARAMETER, low=0.0, default=1.0, description="proportional gain"),
        Variable("ki", Kind.PARAMETER, "1/s", low=0.0, default=0.1,
                 description="integral gain (kp/Ti); 0 disables the integral"),
        Variable("kd", Kind.PARAMETER, "s", low=0.0, default=0.0,
                 description="derivative gain (kp*Td); 0 disables the derivative"),
        Variable("derivative_filter_time", Kind.PARAMETER, "s", low=0.0, default=0.0,
                 description="time constant of the derivative's first-order filter; 0 = none"),
        Variable("output_min", Kind.PARAMETER, default=0.0, description="lower output limit"),
        Variable("output_max", Kind.PARAMETER, default=100.0, description="upper output limit"),
        Variable("reverse", Kind.PARAMETER, datatype=DataType.BOOLEAN, default=False,
                 description="reverse action: error = measurement - setpoint"),
    )

    integral: float

    @classmethod
    def ranges(cls, parameters: Mapping[str, Value]) -> dict[str, tuple[float, float]]:
        limits = (float(parameters["output_min"]), float(parameters["output_max"]))
        return {"output": limits, "integral": limits}  # the integral is clamped as well

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        _check_limits(float(parameters["output_min"]), float(parameters["output_max"]))
        self.parameters = dict(parameters)
        self._limits = (float(parameters["output_min"]), float(parameters["output_max"]))
        self.integral = _clamp(float(initial.get("integral", 0.0)), *self._limits)
        self._setpoint: float | None = None
        self._measurement: float | None = None
        self._rate = 0.0  # filtered d(measurement)/dt
        self._filter_factors: dict[float, float] = {}
        return {"output": self.integral}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        p = self.parameters
        setpoint = float(inputs["setpoint"])
        measurement = float(inputs["measurement"])
        if self._measurement is not None:
            raw = (measurement - self._measurement) / dt
            self._rate += (raw - self._rate) * self._filter_factor(dt)
        self._setpoint, self._measurement = setpoint, measurement
        low, high = self._limits
        proportional_and_derivative = self._p_plus_d(p)
        error = self._error(bool(p["reverse"]))
        advanced = self.integral + float(p["ki"]) * error * dt
        total = proportional_and_derivative + advanced
        winding_up = (total > high and error > 0.0) or (total < low and error < 0.0)
        if not winding_up:
            self.integral = _clamp(advanced, low, high)
        return {"output": _clamp(proportional_and_derivative + self.integral, low, high)}

    def set_parameter(self, name: str, value: Value) -> None:
        p = self.parameters
        if name in ("output_min", "output_max"):
            limits = {"output_min": self._limits[0], "output_max": self._limits[1], name: value}
            _check_limits(float(limits["output_min"]), float(limits["output_max"]))
            p[name] = value
            self._limits = (float(limits["output_min"]), float(limits["output_max"]))
            self.integral = _clamp(self.integral, *self._limits)
            return
        before = self._p_plus_d(p)
        p[name] = value
        if name == "derivative_filter_time":
            self._filter_factors.clear()
        elif name in ("kp", "kd", "reverse") and float(p["ki"]) > 0.0:
            self.integral = _clamp(self.integral + before - self._p_plus_d(p), *self._limits)

    def get_states(self) -> dict[str, Value]:
        return {"integral": self.integral}

    def set_states(self, states: Mapping[str, Value]) -> None:
        if "integral" in states:
            self.integral = _clamp(float(states["integral"]), *self._limits)

    # -- helpers -----------------------------------------------------------------------

    def _error(self, reverse: bool) -> float:
        if self._setpoint is None or self._measurement is None:
            return 0.0
        error = self._setpoint - self._measurement
        return -error if reverse else error

    def _p_plus_d(self, p: Mapping[str, Value]) -> float:
        """P + D at the last step's inputs under parameters ``p``."""
        reverse = bool(p["reverse"])
        sign = -1.0 if reverse else 1.0
        return float(p["kp"]) * self._error(reverse) - sign * float(p["kd"]) * self._rate

    def _filter_factor(self, dt: float) -> float:
        factor = self._filter_factors.get(dt)
        if factor is None:
            tf = float(self.parameters["derivative_filter_time"])
            factor = self._filter_factors[dt] = -math.expm1(-dt / tf) if tf > 0.0 else 1.0
        return factor


def _clamp(value: float, low: float, high: float) -> float:
    return high if value > high else low if value < low else value


def _check_limits(low: float, high: float) -> None:
    if low > high:
        raise OutOfRange(f"output_min must not exceed output_max (got output_min={low:g}, "
                         f"output_max={high:g}); lower output_min or raise output_max")
