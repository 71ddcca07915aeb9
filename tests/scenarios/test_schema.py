"""The scenario file: every error at once, each with its file and key (and column)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios.conftest import HEADER
from twin_server.errors import ConfigErrors
from twin_server.runtime.compile import LoadedConfig
from twin_server.scenarios.offline import prepare
from twin_server.scenarios.schema import CheckStep, parse_scenario, read_scenario

EXAMPLES = Path(__file__).parents[2] / "configs" / "scenarios"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_scenario(text, file="s.toml")
    return [str(e) for e in caught.value.exceptions]


def bind_errors(loaded: LoadedConfig, text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        prepare(parse_scenario(text, file="s.toml"), loaded)
    return [str(e) for e in caught.value.exceptions]


class TestStructure:
    def test_every_error_at_once(self) -> None:
        """Errors of the header, of several steps and a stray key are reported together."""
        errors = errors_of("""
[scenario]
session = "plant"
timeout = -1
[[steps]]
wait = "long"
[[steps]]
check = "tank.level >"
[[steps]]
set = "tank.inflow"
[[steps]]
wiat = 3
[extra]
""")
        assert errors == [
            "s.toml: extra: unknown key 'extra' (allowed: scenario, plc, steps)",
            "s.toml: scenario.timeout: must be greater than 0 (got -1)",
            "s.toml: steps[0].wait: expected a number, got string 'long'",
            "s.toml: steps[1].check: column 13: expected a number, a name or '(', found the "
            "end of the condition\n    tank.level >\n                ^",
            "s.toml: steps[2]: missing required key 'value'",
            "s.toml: steps[3]: a step has exactly one action key: set, ramp, release, wait, "
            "wait_until, call, inject_fault, clear_fault, inject_link_fault, "
            "clear_link_fault, check (found none)",
        ]

    def test_parse_error_names_file_key_and_column(self) -> None:
        """A wait_until's bad condition is located by file, key and column."""
        (error,) = errors_of(HEADER + '[[steps]]\nwait_until = "a.b > 1 ±"\ntimeout = 1\n')
        assert error.startswith("s.toml: steps[0].wait_until: column 9: a tolerance (±) "
                                "follows '==' or '!='")

    def test_session_or_twin(self) -> None:
        """The header names exactly one of session and twin."""
        (error,) = errors_of('[scenario]\n[[steps]]\nwait = 1\n')
        assert "give exactly one of 'session'" in error

    def test_check_modes_exclusive(self) -> None:
        """A check is within a time or always, not both."""
        (error,) = errors_of(HEADER + '[[steps]]\ncheck = "a.b > 1"\nwithin = 1\nalways = 2\n')
        assert "not both" in error

    def test_link_fault_fields(self) -> None:
        """A link fault's kind, and delay (for kind delay alone), are checked at their keys."""
        errors = errors_of(HEADER + """
[[steps]]
inject_link_fault = "plc"
kind = "unplug"
[[steps]]
inject_link_fault = "plc"
kind = "delay"
[[steps]]
inject_link_fault = "plc"
kind = "cut"
delay = 0.5
[[steps]]
clear_link_fault = "plc"
bindings = "valve"
""")
        assert [e.split(":")[1].strip() for e in errors] == [
            "steps[0].kind", "steps[1].delay", "steps[2].delay", "steps[3].bindings"], errors
        assert "a delay link fault needs delay = S" in errors[1]
        assert "delay is for kind = 'delay' alone (got kind = 'cut')" in errors[2]

    def test_live_only(self) -> None:
        """A scenario with PLC nodes or link fault steps says it runs live alone (the
        pytest plugin skips it offline); one without says nothing."""
        link = parse_scenario(HEADER + '[[steps]]\nclear_link_fault = "plc"\n')
        plain = parse_scenario(HEADER + "[[steps]]\nwait = 1\n")
        assert (link.live_only, plain.live_only) == ("has link fault steps", "")
        assert read_scenario(EXAMPLES / "hil_interlock.toml").live_only == "reads PLC nodes"

    def test_unknown_step_key(self) -> None:
        """A misspelt key of a step is refused with the keys it allows."""
        (error,) = errors_of(HEADER + '[[steps]]\ncheck = "a.b > 1"\nwithn = 1\n')
        assert "steps[0]: unknown key 'withn'" in error and "did you mean 'within'" in error

    def test_modes(self) -> None:
        """now, within and always (for a time, or to the end) are told apart."""
        scenario = parse_scenario(HEADER + """
[[steps]]
check = "a.b > 1"
[[steps]]
check = "a.b > 1"
within = 2
[[steps]]
check = "a.b > 1"
always = 3
[[steps]]
check = "a.b > 1"
always = true
""")
        steps = [s.step for s in scenario.steps]
        assert all(isinstance(s, CheckStep) for s in steps)
        assert [(s.mode, s.duration) for s in steps if isinstance(s, CheckStep)] == [
            ("now", None), ("within", 2.0), ("always", 3.0), ("always", None)]

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing scenario file is one error naming it."""
        with pytest.raises(ConfigErrors) as caught:
            read_scenario(tmp_path / "nope.toml")
        assert "nope.toml: cannot read the scenario file" in str(caught.value)

    @pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
    def test_examples_are_valid(self, path: Path) -> None:
        """Every example scenario reads without an error."""
        assert read_scenario(path).steps


class TestNames:
    def test_unknown_names(self, loaded: LoadedConfig) -> None:
        """Unknown variables in conditions and steps are reported together, with a guess."""
        errors = bind_errors(loaded, HEADER + """
[[steps]]
check = "tank.levl > 1"
[[steps]]
set = "tank.outflow"
value = 1.0
[[steps]]
ramp = "tank.nothing"
to = 1
over = 1
""")
        assert errors == [
            "s.toml: steps[0].check: unknown name 'tank.levl': names are component.variable "
            "(or component.inputs|outputs|states|parameters.variable), 'time', or "
            "plc.<alias>; did you mean 'tank.level'?",
            "s.toml: steps[1].set: tank.outflow is an output: a scenario sets inputs, states "
            "and parameters",
            "s.toml: steps[2].ramp: unknown name 'tank.nothing': names are component.variable "
            "(or component.inputs|outputs|states|parameters.variable), 'time', or plc.<alias>"
            "; did you mean 'tank.height'?",
        ]

    def test_plc_names_need_a_live_run(self, loaded: LoadedConfig) -> None:
        """A PLC node is refused offline, and an undeclared one anywhere."""
        errors = bind_errors(loaded, HEADER + """
[plc.alarm]
peer = "plc"
node = "ns=2;s=PLC.HighAlarm"
[[steps]]
check = "plc.alarm or plc.other"
""")
        assert "steps[0].check: plc.alarm is a PLC node: it exists only in a live run" in errors[0]
        assert "no PLC node 'other'" in errors[1]

    def test_link_faults_need_a_live_run(self, loaded: LoadedConfig) -> None:
        """inject_link_fault and clear_link_fault are refused offline, each at its key."""
        errors = bind_errors(loaded, HEADER + """
[[steps]]
inject_link_fault = "plc"
kind = "cut"
[[steps]]
clear_link_fault = "plc"
""")
        assert errors == [
            "s.toml: steps[0].inject_link_fault: inject_link_fault acts on a HIL peer's link "
            "('plc'): it exists only in a live run (--endpoint URL against a daemon with that "
            "HIL peer)",
            "s.toml: steps[1].clear_link_fault: clear_link_fault acts on a HIL peer's link "
            "('plc'): it exists only in a live run (--endpoint URL against a daemon with that "
            "HIL peer)"]

    def test_unknown_session_and_parameter(self, loaded: LoadedConfig) -> None:
        """A session the config lacks, and a parameter the twin lacks, name their keys."""
        (error,) = bind_errors(loaded, '[scenario]\nsession = "plnt"\n[[steps]]\nwait = 1\n')
        assert error.startswith("s.toml: scenario.session: no session 'plnt'")
        assert "did you mean 'plant'" in error
        (error,) = bind_errors(loaded, HEADER + "parameters = { tank = { aera = 1 } }\n"
                                                "[[steps]]\nwait = 1\n")
        assert error.startswith("s.toml: scenario.parameters.tank.aera")

    def test_release_needs_an_input(self, loaded: LoadedConfig) -> None:
        """Only an input is released."""
        (error,) = bind_errors(loaded, HEADER + '[[steps]]\nrelease = "tank.area"\n')
        assert "tank.area is not an input" in error
