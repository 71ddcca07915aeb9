"""Campaign files for the campaign tests: the demo's tank twin (``TANK``) and, where gcc
is installed, the test FMU lag2 (``lag_campaign``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bench.common import TANK_TWIN
from tests.models.fmu import build

#: the tank twin with a session whose step size is 0.1 s (short runs)
TANK = TANK_TWIN + """
[sessions.tank]
twin = "tank_level"
step_size = 0.1
parameters = { controller = { ki = 0.005 } }
"""

#: a small campaign of the tank: 2 x 2 grid x 2 samples = 8 runs of 20 s (200 ticks)
TANK_CAMPAIGN = """
[campaign]
config = "tank.toml"
session = "tank"
duration = 20.0
seed = 7
samples = 2

[parameters]
"tank.area" = { values = [0.4, 0.6] }
"controller.kp" = { range = [0.1, 0.3], steps = 2 }
"tank.initial_level" = { distribution = "uniform", low = 0.3, high = 0.7 }

[trajectories]
interval = 1.0
variables = ["tank.level", "controller.output"]

[summary."tank.level"]
above = 0.8

[summary."controller.output"]
figures = ["max", "mean"]
below = 0.01
"""

#: the lag2 FMU under a constant input; the run with fail_at = 0.05 fails in its 6th tick
LAG = """
[twins.lag]
[twins.lag.components.lag]
model = "fmu"
options = { path = "lag2.fmu" }
inputs = { u = 1.0 }
"""

LAG_CAMPAIGN = """
[campaign]
config = "lag.toml"
step_size = 0.01
duration = 0.2

[parameters]
"lag.k" = { values = [1.0, 2.0] }
"lag.fail_at" = { values = [1e30, 0.055] }

[trajectories]
interval = 0.05
variables = ["lag.y"]

[summary."lag.y"]
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (name -> text) into ``folder``; the path of the first one."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder / next(iter(files))


@pytest.fixture
def tank_campaign(tmp_path: Path) -> Path:
    return write(tmp_path, {"tank_sweep.toml": TANK_CAMPAIGN, "tank.toml": TANK})


@pytest.fixture(scope="session")
def lag_fmu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lag2 test FMU, compiled from tests/models/fmu/src (skips without gcc)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test FMU")
    return build.build("lag2", tmp_path_factory.mktemp("fmu"))


@pytest.fixture
def lag_campaign(tmp_path: Path, lag_fmu: Path) -> Path:
    """The lag campaign beside its own copy of the FMU (a test may delete it)."""
    shutil.copy(lag_fmu, tmp_path / "lag2.fmu")
    return write(tmp_path, {"lag_sweep.toml": LAG_CAMPAIGN, "lag.toml": LAG})
