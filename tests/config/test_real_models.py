"""Config files using the real model library, through the entry-point registry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from twin_server.errors import ConfigErrors
from twin_server.models.pid import PID
from twin_server.models.water_tank import WaterTank
from twin_server.runtime.compile import load_config

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"

PLANT = """
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"

[twins.tank_level]
description = "tank under PID level control, setpoint stepping at t = 5 s"
connections = [
    "setpoint.output -> controller.setpoint",
    "tank.level -> controller.measurement",
    "controller.output -> tank.inflow",
]

[twins.tank_level.components.controller]
model = "pid"
parameters = { kp = 2, ki = 0.1, output_max = 0.05 }

[twins.tank_level.components.tank]
model = "water_tank"
parameters = { area = 0.5, initial_level = 0.2 }

[twins.tank_level.components.setpoint]
model = "step"
parameters = { initial = 0.5, final = 1.0, step_time = 5 }

[twins.room.components.weather]
model = "sine"
parameters = { amplitude = 5, frequency = 0.001, offset = 8 }

[twins.room.components.room]
model = "room_temperature"
inputs = { heater_power = 500 }

[twins.room]
connections = ["weather.output -> room.ambient_temperature"]

[sessions.tank]
twin = "tank_level"
step_size = 0.01
realtime_factor = 0
overrun_policy = "catch_up"
parameters = { tank = { area = 0.75 } }

[sessions.room]
twin = "room"
autostart = false
step_size = 1
publish_rate = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plant.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


class TestRealModels:
    def test_plant_file(self, tmp_path: Path) -> None:
        """A file with water_tank, pid, step, sine and room_temperature loads and compiles."""
        loaded = load_config(write(tmp_path, PLANT))
        tank = loaded.twins["tank_level"]
        # the tank has no feedthrough, so it and the step source run before the PID
        assert [c.name for c in tank.components] == ["tank", "setpoint", "controller"]
        controller = tank.component("controller")
        assert controller.factory is PID
        assert controller.parameters["kp"] == 2.0
        assert controller.parameters["kd"] == 0.0  # filled from the default
        assert tank.component("tank").factory is WaterTank
        room = loaded.twins["room"]
        assert [c.name for c in room.components] == ["weather", "room"]
        assert room.component("room").inputs["heater_power"] == 500.0
        assert loaded.session_parameters == {"tank": {"tank": {"area": 0.75}}, "room": {}}
        assert loaded.config.sessions["room"].autostart is False
        assert loaded.config.sessions["tank"].overrun_policy == "catch_up"

    def test_demo_config(self) -> None:
        """The shipped demo config is valid."""
        loaded = load_config(DEMO)
        assert set(loaded.twins) == set(loaded.config.twins)
        for session in loaded.config.sessions.values():
            assert session.twin in loaded.twins

    @pytest.mark.parametrize(
        ("old", "new", "path", "message"),
        [
            pytest.param(
                "area = 0.5",
                "area = -1",
                "twins.tank_level.components.tank.parameters.area",
                "parameter 'area' must be within [1e-06, inf] m^2 (got -1.0)",
                id="negative-area",
            ),
            pytest.param(
                'model = "sine"',
                'model = "sinus"',
                "twins.room.components.weather.model",
                "unknown model 'sinus' (known models: ",
                id="unknown-model-lists-known",
            ),
            pytest.param(
                '"tank.level -> controller.measurement"',
                '"tank.height -> controller.measurement"',
                "twins.tank_level.connections[1]",
                "tank.height is a parameter, not an output, "
                "in 'tank.height -> controller.measurement'",
                id="parameter-as-source",
            ),
            pytest.param(
                "area = 0.75",
                "aera = 0.75",
                "sessions.tank.parameters.tank.aera",
                "unknown parameter 'aera' of model 'water_tank'",
                id="session-override",
            ),
        ],
    )
    def test_errors(self, tmp_path: Path, old: str, new: str, path: str, message: str) -> None:
        """Errors against the real models name the model's own variables."""
        assert old in PLANT
        with pytest.raises(ConfigErrors) as info:
            load_config(write(tmp_path, PLANT.replace(old, new, 1)))
        (error,) = info.value.exceptions
        assert error.path == path
        assert error.message.startswith(message)

    def test_algebraic_loop_of_gains(self, tmp_path: Path) -> None:
        """A loop of real feedthrough blocks (gain, sum) is an algebraic loop."""
        text = """
        [twins.loop]
        connections = ["k.output -> s.a", "s.output -> k.input"]
        [twins.loop.components.k]
        model = "gain"
        [twins.loop.components.s]
        model = "sum"
        """
        with pytest.raises(ConfigErrors) as info:
            load_config(write(tmp_path, text))
        assert str(info.value).startswith(
            f"{tmp_path / 'plant.toml'}: twins.loop.connections: "
            "algebraic loop: k.output -> s.a -> s.output -> k.input"
        )
