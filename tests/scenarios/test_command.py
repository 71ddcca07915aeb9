"""``twin-server test`` offline: progress, verdicts, exit codes, JUnit (against its XSD)
and the Markdown report, on the examples in configs/scenarios/."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from tests.scenarios.conftest import SCHEMA
from twin_server.cli import main

EXAMPLES = Path(__file__).parents[2] / "configs" / "scenarios"
PASSING = [EXAMPLES / "tank_setpoint_step.toml", EXAMPLES / "room_band.toml"]
FAILING = EXAMPLES / "tank_fails_on_purpose.toml"


def valid_junit(path: Path) -> etree._ElementTree:
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    document = etree.parse(str(path))
    assert schema.validate(document), schema.error_log
    return document


class TestCommand:
    def test_examples_pass(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """The demo's examples pass: exit 0, progress and a verdict per check printed."""
        junit = tmp_path / "junit.xml"
        assert main(["test", *map(str, PASSING), "--junit", str(junit)]) == 0
        out = capsys.readouterr().out
        assert "[3/5] wait until 'setpoint.output < 1.0'" in out
        assert "PASS the level settles at the new setpoint: held after" in out
        assert "tank_setpoint_step: PASSED (4 passed;" in out
        document = valid_junit(junit)
        suites = document.getroot().findall("testsuite")
        assert [s.get("name") for s in suites] == ["tank_setpoint_step", "room_band"]
        assert [s.get("tests") for s in suites] == ["4", "3"]
        assert document.getroot().get("failures") == "0"

    def test_failure(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """A failing scenario exits 1; its JUnit failure holds the condition, the values
        seen and the simulated time; the report has a plot per check."""
        junit, report = tmp_path / "junit.xml", tmp_path / "report"
        assert main(["test", str(FAILING), "--junit", str(junit), "--report", str(report),
                     "--quiet"]) == 1
        assert "tank_fails_on_purpose: FAILED (2 failed;" in capsys.readouterr().out
        suite = valid_junit(junit).getroot().find("testsuite")
        assert suite is not None and suite.get("failures") == "2"
        failure = suite.find("testcase/failure")
        assert failure is not None and failure.text is not None
        assert failure.get("message") == ("tank.level == 1.3 ± 0.05: did not hold within 10 s")
        assert "at t = 10 s (checked from t = 0 s)" in failure.text
        assert "values seen: tank.level in [0.4997" in failure.text
        text = (report / "tank_fails_on_purpose.md").read_text()
        assert "# tank_fails_on_purpose: FAILED" in text
        assert "![the level reaches 1.3 m in 10 s (it cannot)](tank_fails_on_purpose-step0.svg)" \
            in text
        svg = etree.parse(str(report / "tank_fails_on_purpose-step2.svg")).getroot()
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert svg.find("{http://www.w3.org/2000/svg}polyline") is not None
        assert "**FAILED**" in (report / "index.md").read_text()

    def test_bad_input_exits_2(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """A scenario with errors exits 2 with every error, and nothing runs."""
        bad = tmp_path / "bad.toml"
        bad.write_text('[scenario]\nconfig = "x.toml"\ntwin = "t"\n[[steps]]\n'
                       'check = "a >"\n[[steps]]\nwait = -1\n')
        assert main(["test", str(bad), str(PASSING[0])]) == 2
        captured = capsys.readouterr()
        assert f"{bad}: steps[0].check: column 4:" in captured.err
        assert f"{bad}: steps[1].wait: must be at least 0" in captured.err
        assert "PASSED" not in captured.out

    def test_unknown_name_exits_2(self, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
        """A name the twin lacks is bad input too (exit 2), found before anything runs."""
        bad = tmp_path / "bad.toml"
        bad.write_text('[scenario]\nsession = "tank"\n[[steps]]\ncheck = "tank.lvl > 1"\n')
        config = EXAMPLES.parent / "demo.toml"
        assert main(["test", str(bad), "--config", str(config)]) == 2
        assert "steps[0].check: unknown name 'tank.lvl'" in capsys.readouterr().err

    def test_no_config(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """Without --config and [scenario] config, the run is refused with exit 2."""
        bad = tmp_path / "bad.toml"
        bad.write_text('[scenario]\nsession = "tank"\n[[steps]]\nwait = 1\n')
        assert main(["test", str(bad)]) == 2
        assert "no config to run on" in capsys.readouterr().err
