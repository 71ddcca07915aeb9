"""A heated room as one thermal mass: ``dT/dt = (eta*P - (T - T_amb)/R) / C``.

The ODE is linear with the inputs held over a step, so it is advanced by its
exact zero-order-hold discretisation::

    T(t+dt) = T_ss + (T - T_ss) * exp(-dt/tau),   T_ss = T_amb + eta*P*R,   tau = R*C

written as ``T + (T_ss - T) * -expm1(-dt/tau)`` so that short steps lose no
precision. The factor depends only on dt, R and C and is cached: a step costs a
few float operations and is bit-stable.

Defaults: R = 0.005 K/W (200 W/K of losses), C = 1e6 J/K (air, walls' inner
layer and furniture of a ~30 m^2 room), tau = 5000 s (~83 min); a 2 kW heater
lifts the room 10 K above ambient and warms it at ~0.12 K/min at first: slow
like a real room yet visible within a minute on a trend.

``too_cold`` (Boolean) is true while the temperature is below ``comfort_min``: the
input of the demo room's off-normal alarm (README, Alarms and conditions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from twin_server.models.base import DataType, Kind, Model, Value, Variable

ABSOLUTE_ZERO = -273.15


class RoomTemperature(Model):
    """A room with a heater, losing heat to the ambient through one thermal resistance."""

    description = "Heated room: dT/dt = (efficiency*P - (T - T_amb)/R) / C"
    direct_feedthrough = False
    variables = (
        Variable("heater_power", Kind.INPUT, "W", low=0.0, default=0.0,
                 description="electrical power drawn by the heater"),
        Variable("ambient_temperature", Kind.INPUT, "degC", low=ABSOLUTE_ZERO, default=10.0,
                 description="temperature outside the room"),
        Variable("temperature", Kind.OUTPUT, "degC", low=ABSOLUTE_ZERO, default=20.0,
                 description="room temperature"),
        Variable("too_cold", Kind.OUTPUT, datatype=DataType.BOOLEAN, default=False,
                 description="temperature below comfort_min (an off-normal alarm's input)"),
        Variable("temperature", Kind.STATE, "degC", low=ABSOLUTE_ZERO, default=20.0,
                 description="room temperature"),
        Variable("thermal_resistance", Kind.PARAMETER, "K/W", low=1e-9, default=0.005,
                 description="resistance to heat flow from the room to the ambient (> 0)"),
        Variable("thermal_capacitance", Kind.PARAMETER, "J/K", low=1e-9, default=1e6,
                 description="heat capacity of the room (> 0)"),
        Variable("efficiency", Kind.PARAMETER, "", low=0.0, high=1.0, default=1.0,
                 description="share of the heater power that heats the room"),
        Variable("comfort_min", Kind.PARAMETER, "degC", low=ABSOLUTE_ZERO, default=18.0,
                 description="too_cold is true below this temperature"),
        Variable("initial_temperature", Kind.PARAMETER, "degC", low=ABSOLUTE_ZERO, default=20.0,
                 tunable=False,
                 description="temperature at Reset (an initial value for the state wins)"),
    )

    temperature: float

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        self.temperature = float(initial.get("temperature", parameters["initial_temperature"]))
        self._factors: dict[float, float] = {}
        return self._outputs()

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        p = self.parameters
        factor = self._factors.get(dt)
        if factor is None:
            tau = float(p["thermal_resistance"]) * float(p["thermal_capacitance"])
            factor = self._factors[dt] = -math.expm1(-dt / tau)
        steady = (float(inputs["ambient_temperature"])
                  + float(p["efficiency"]) * float(inputs["heater_power"])
                  * float(p["thermal_resistance"]))
        self.temperature += (steady - self.temperature) * factor
        return self._outputs()

    def _outputs(self) -> dict[str, Value]:
        return {"temperature": self.temperature,
                "too_cold": self.temperature < float(self.parameters["comfort_min"])}

    def set_parameter(self, name: str, value: Value) -> None:
        self.parameters[name] = value
        self._factors.clear()

    def get_states(self) -> dict[str, Value]:
        return {"temperature": self.temperature}

    def set_states(self, states: Mapping[str, Value]) -> None:
        if "temperature" in states:
            self.temperature = float(states["temperature"])
