"""``[[sessions.<s>.faults]]``: checked against the twin when the config compiles,
each error with its file and key path; a sound one reaches the session's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.test_real_models import PLANT, write
from twin_server.engine.faults import FaultSpec
from twin_server.errors import ConfigErrors
from twin_server.runtime.compile import fault_specs, load_config

FAULT = """
[[sessions.tank.faults]]
id = "lag"
target = "controller.Inputs.measurement"
kind = "delay"
parameters = { delay = 0.5 }
duration = 10
"""


class TestFaultConfig:
    def test_a_sound_fault_becomes_a_spec(self, tmp_path: Path) -> None:
        """A configured fault is the engine's FaultSpec of the session."""
        loaded = load_config(write(tmp_path, PLANT + FAULT))
        assert fault_specs(loaded.config.sessions["tank"]) == (
            FaultSpec("controller.Inputs.measurement", "delay", {"delay": 0.5}, 10.0, "lag"),)

    @pytest.mark.parametrize(("old", "new", "key", "words"), [
        pytest.param('kind = "delay"', 'kind = "lag"', "kind", "must be 'stuck', 'offset'",
                     id="kind"),
        pytest.param("delay = 0.5", "sigma = 0.5", "parameters",
                     "a delay fault has no parameter 'sigma'", id="parameter"),
        pytest.param('target = "controller.Inputs.measurement"',
                     'target = "controller.Inputs.measurment"', "target",
                     "component 'controller' has no input 'measurment'", id="variable"),
        pytest.param('target = "controller.Inputs.measurement"',
                     'target = "valve.Inputs.u"', "target", "no component 'valve'",
                     id="component"),
        pytest.param("duration = 10", "duration = -1", "duration",
                     "must be at least 0 (got -1)", id="duration"),
    ])
    def test_errors_name_the_file_and_key(self, tmp_path: Path, old: str, new: str,
                                          key: str, words: str) -> None:
        """A bad fault is refused at sessions.<s>.faults[i].<key>, in its file."""
        path = write(tmp_path, PLANT + FAULT.replace(old, new))
        with pytest.raises(ConfigErrors) as info:
            load_config(path)
        (error,) = info.value.exceptions
        assert error.path == f"sessions.tank.faults[0].{key}"
        assert words in error.message
        assert str(path) in str(error) or error.file == str(path)
