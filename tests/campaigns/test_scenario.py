"""Campaigns whose runs are a scenario (issue #19 part 1 with #18): the scenario runs on
each run's session with the run's parameters, its verdicts become columns, and the
results equal the offline runner on a session built by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaigns.conftest import TANK, write
from twin_server.campaigns.report import summary
from twin_server.campaigns.run import execute, spec_of
from twin_server.campaigns.runner import local_cluster, run_campaign
from twin_server.campaigns.spec import load_campaign, plan_runs
from twin_server.campaigns.store import ResultStore
from twin_server.engine.session import Session, SessionSettings
from twin_server.errors import ConfigErrors
from twin_server.scenarios.offline import drive
from twin_server.scenarios.results import Verdict
from twin_server.scenarios.schema import read_scenario

#: the tank fills towards its setpoint (1.3 m at first): a small tank gets there in
#: 20 s, a large one does not; the level never overflows
SCENARIO = """
[scenario]
twin = "tank_level"
seed = 3
parameters = { tank = { initial_level = 0.4 } }

[[steps]]
name = "no overflow"
check = "tank.level < 1.9"
always = true

[[steps]]
set = "setpoint.offset"
value = 1.0

[[steps]]
name = "filled"
check = "tank.level > 0.9"
within = 20.0

[[steps]]
check = "tank.level > 0.0"
"""

CAMPAIGN = """
[campaign]
config = "tank.toml"
session = "tank"
scenario = "fill.toml"

[parameters]
"tank.area" = { values = [0.2, 2.0] }

[trajectories]
interval = 1.0
variables = ["tank.level"]

[summary."tank.level"]
figures = ["max", "final"]
"""


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    return write(tmp_path, {"c.toml": CAMPAIGN, "tank.toml": TANK, "fill.toml": SCENARIO})


class TestScenarioRuns:
    def test_verdicts_are_columns(self, campaign_file: Path) -> None:
        """Each run's verdict, counts and each check's verdict (by name, else its step)
        come back with the run: the small tank fills in time, the large one does not."""
        campaign = load_campaign(campaign_file)
        assert campaign.verdict_columns() == (
            "scenario.verdict", "scenario.passed", "scenario.failed", "scenario.errors",
            "scenario.skipped", "check.no overflow", "check.filled", "check.steps[3]")
        small, large = (execute(spec_of(campaign), p) for p in plan_runs(campaign))
        assert small.ok and large.ok
        assert small.verdicts == {
            "scenario.verdict": "passed", "scenario.passed": 3, "scenario.failed": 0,
            "scenario.errors": 0, "scenario.skipped": 0, "check.no overflow": "passed",
            "check.filled": "passed", "check.steps[3]": "passed"}
        assert large.verdicts["scenario.verdict"] == "failed"
        assert large.verdicts["check.filled"] == "failed"
        assert large.verdicts["scenario.failed"] == 1
        assert large.ticks == 200 and large.times[-1] == 20.0

    def test_same_as_the_scenario_on_a_session_built_by_hand(self, campaign_file: Path) -> None:
        """Figures, trajectory and verdicts equal, bit for bit, the offline runner on a
        plain session with the base, the scenario's and the run's parameters."""
        campaign = load_campaign(campaign_file)
        plan = plan_runs(campaign)[0]
        result = execute(spec_of(campaign), plan)
        scenario = read_scenario(campaign_file.parent / "fill.toml")
        parameters = {"controller": {"ki": 0.005},
                      "tank": {"initial_level": 0.4, "area": plan.values[0]}}
        session = Session("plain", campaign.twin,
                          SessionSettings(step_size=0.1, parameters=parameters))
        try:
            plain = drive(scenario, session, seed=3)
        finally:
            session.close()
        levels = plain.trace.values["tank.level"]
        assert plain.verdict is Verdict.PASSED
        assert result.trajectories["tank.level"] == tuple(levels[::10])
        assert result.figures["tank.level.max"] == max(levels)
        assert result.figures["tank.level.final"] == levels[-1]
        assert result.sim_time == plain.sim_time

    def test_stored_and_shown(self, campaign_file: Path, tmp_path: Path) -> None:
        """On a Dask cluster the verdicts land in their columns (counts as integers) and
        `campaign show` tallies them."""
        campaign = load_campaign(campaign_file)
        plans = plan_runs(campaign)
        out = tmp_path / "out"
        store = ResultStore.create(out, campaign, plans)
        try:
            with local_cluster(1, processes=False) as client:
                run_campaign(campaign, store, client, plans=plans)
            columns = store.columns("runs")
            rows = store.rows("runs")
        finally:
            store.close()
        at = {c: i for i, c in enumerate(columns)}
        assert [r[at["scenario.verdict"]] for r in rows] == ["passed", "failed"]
        assert [r[at["scenario.passed"]] for r in rows] == [3, 2]
        shown = summary(out)
        assert "runs of scenario fill.toml" in shown
        lines = {line.split()[0]: line for line in shown.splitlines() if line.strip()}
        assert lines["scenario.verdict"].endswith("1 failed, 1 passed")
        assert lines["check.filled"].endswith("1 failed, 1 passed")


class TestScenarioErrors:
    def test_scenario_names_are_checked_against_the_twin(self, tmp_path: Path) -> None:
        """A scenario naming a variable the twin lacks is refused when the campaign is
        read, with the scenario file's key."""
        bad = SCENARIO.replace('check = "tank.level > 0.0"', 'check = "tank.levle > 0.0"')
        path = write(tmp_path, {"c.toml": CAMPAIGN, "tank.toml": TANK, "fill.toml": bad})
        with pytest.raises(ConfigErrors) as caught:
            load_campaign(path)
        found = [str(e) for e in caught.value.exceptions]
        assert any("steps[3].check" in e and "levle" in e for e in found), found
        assert any("campaign.scenario" in e for e in found), found

    def test_duration_or_scenario(self, tmp_path: Path) -> None:
        """A campaign gives a duration or a scenario, not both."""
        both = CAMPAIGN.replace('scenario = "fill.toml"', 'scenario = "fill.toml"\nduration = 5.0')
        path = write(tmp_path, {"c.toml": both, "tank.toml": TANK, "fill.toml": SCENARIO})
        with pytest.raises(ConfigErrors) as caught:
            load_campaign(path)
        assert any("not both" in str(e) for e in caught.value.exceptions)

    def test_a_fault_fails_the_run(self, lag_campaign: Path) -> None:
        """A session halted on a model fault (the FMU's) during the scenario is a failed
        run with the fault's message and no verdicts; the other run passes."""
        folder = lag_campaign.parent
        write(folder, {"s.toml": LAG_SCENARIO, "c.toml": LAG_SCENARIO_CAMPAIGN})
        campaign = load_campaign(folder / "c.toml")
        good, bad = (execute(spec_of(campaign), p) for p in plan_runs(campaign))
        assert good.ok and good.verdicts["scenario.verdict"] == "passed"
        assert not bad.ok and bad.verdicts == {} and bad.figures == {}
        assert "lag2 fails on purpose" in bad.message


LAG_SCENARIO = """
[scenario]
twin = "lag"

[[steps]]
wait = 0.2

[[steps]]
check = "lag.y > 0.0"
"""

LAG_SCENARIO_CAMPAIGN = """
[campaign]
config = "lag.toml"
step_size = 0.01
scenario = "s.toml"

[parameters]
"lag.fail_at" = { values = [1e30, 0.055] }

[summary."lag.y"]
"""
