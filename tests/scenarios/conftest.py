"""A small twin for the scenario tests: a tank whose inflow a scenario forces, read
through a seeded noisy sensor."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin_server.runtime.compile import LoadedConfig, parse_config
from twin_server.scenarios.offline import run_offline
from twin_server.scenarios.results import ScenarioResult
from twin_server.scenarios.schema import parse_scenario

CONFIG = """
[twins.plant]
connections = ["tank.level -> sensor.input"]

[twins.plant.components.tank]
model = "water_tank"
parameters = { area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }

[twins.plant.components.sensor]
model = "noisy_sensor"
parameters = { noise_std = 0.01, seed = 1 }

[sessions.plant]
twin = "plant"
step_size = 0.1
"""

HEADER = '[scenario]\nname = "t"\nsession = "plant"\n'
SCHEMA = Path(__file__).with_name("junit.xsd")


@pytest.fixture(scope="session")
def loaded() -> LoadedConfig:
    return parse_config(CONFIG, file="plant.toml")


def run_text(loaded: LoadedConfig, steps: str, *, header: str = HEADER,
             seed: int | None = None) -> ScenarioResult:
    """Run a scenario made of ``header`` and ``steps`` (TOML) offline on the plant."""
    return run_offline(parse_scenario(header + steps, file="t.toml"), loaded, seed=seed)
