"""An FMU that asks to end the simulation, served by the daemon (in-process and in a
worker process): a real client sees its session Halted with no fault, a
``terminated`` event in its event history naming the FMU's request, and the
session beside it running on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models.fmu import conftest as fmu_conftest
from tests.test_failed_start import WORKERS, Nodes
from tests.test_worker_health import served

pytestmark = fmu_conftest.pytestmark

fmus = fmu_conftest.fmus
cache_dir = fmu_conftest.cache_dir

CONFIG = """
[server]
workers = {workers}
session_idle_timeout = 0
fmu_dirs = ["{fmu.parent}"]

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[twins.typed.components.plant]
model = "fmu"
options = {{ path = "{fmu}", cache_dir = "{cache}" }}
parameters = {{ stop_at = 0.3 }}

[twins.good.components.lag]
model = "first_order_lag"

[history]
batch_interval = 0.05

[sessions.ending]
twin = "typed"
step_size = 0.1

[sessions.other]
twin = "good"
step_size = 0.01
"""


class TestTermination:
    @pytest.mark.parametrize("workers", WORKERS)
    async def test_session_ends_halted_without_a_fault(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path,
            workers: int) -> None:
        """types3 asks to terminate at t = 0.3 s: its session is Halted at tick 3 with an
        empty Fault node and a terminated event saying so (no fault event); the other
        session runs on."""
        text = CONFIG.format(fmu=fmus["types3"], cache=cache_dir, workers=workers)
        async with served(text, tmp_path) as s:
            nodes = Nodes(s.client, s.ns)
            await nodes.ticking("other")
            await nodes.until("Sessions.ending.State", "Halted")
            assert await nodes.read("Sessions.ending.StepCount") == 3
            assert await nodes.read("Sessions.ending.Diagnostics.Fault") == ""
            messages = await nodes.event_messages("ending", "ended the simulation")
            (end,) = [m for m in messages if "ended the simulation" in m]
            assert ("FMU 'types3.fmu' asked to end the simulation at t=0.3 s (fmi3DoStep: "
                    "terminateSimulation)") in end
            assert "not on a fault" in end
            assert not [m for m in messages if "the session halted; fix the cause" in m]
            assert await nodes.read("Sessions.other.State") == "Running"
