"""The campaign file: checked like a config (every error at once, with its file and key
path) and turned into a deterministic run list."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaigns.conftest import TANK, TANK_CAMPAIGN, write
from twin_server.campaigns.spec import load_campaign, parse_campaign, plan_runs
from twin_server.engine.state import VarKey
from twin_server.errors import ConfigErrors
from twin_server.models.base import Kind


def errors_of(folder: Path, campaign: str, config: str = TANK) -> list[str]:
    path = write(folder, {"c.toml": campaign, "tank.toml": config})
    with pytest.raises(ConfigErrors) as caught:
        load_campaign(path)
    return [str(e) for e in caught.value.exceptions]


class TestRunList:
    def test_grid_then_samples(self, tank_campaign: Path) -> None:
        """The grid is the product of the grid parameters in file order (the last varying
        fastest), each point taken `samples` times with fresh draws."""
        campaign = load_campaign(tank_campaign)
        plans = plan_runs(campaign)
        assert [p.index for p in plans] == list(range(8))
        assert [p.values[:2] for p in plans] == [
            (0.4, 0.1), (0.4, 0.1), (0.4, 0.3), (0.4, 0.3),
            (0.6, 0.1), (0.6, 0.1), (0.6, 0.3), (0.6, 0.3)]
        draws = [p.values[2] for p in plans]
        assert len(set(draws)) == 8 and all(0.3 <= d < 0.7 for d in draws)

    def test_same_seed_same_runs(self, tank_campaign: Path) -> None:
        """Two loads of one file give the same runs with the same values, bit for bit."""
        assert plan_runs(load_campaign(tank_campaign)) == plan_runs(load_campaign(tank_campaign))

    def test_other_seed_other_draws(self, tank_campaign: Path) -> None:
        """Another seed draws other values for the sampled parameter, the grid unchanged."""
        other = write(tank_campaign.parent, {
            "other.toml": TANK_CAMPAIGN.replace("seed = 7", "seed = 8")})
        a, b = plan_runs(load_campaign(tank_campaign)), plan_runs(load_campaign(other))
        assert [p.values[:2] for p in a] == [p.values[:2] for p in b]
        assert all(x.values[2] != y.values[2] for x, y in zip(a, b, strict=True))

    def test_resolved(self, tank_campaign: Path) -> None:
        """The session gives the step size and base parameters; variables resolve to an
        output before a state of the same name; ticks and interval are whole steps."""
        campaign = load_campaign(tank_campaign)
        assert campaign.step_size == 0.1 and campaign.ticks == 200 and campaign.every == 10
        assert campaign.base == {"controller": {"ki": 0.005}}
        assert dict(campaign.kept)["tank.level"] == VarKey("tank", Kind.OUTPUT, "level")
        assert campaign.figure_columns() == (
            "tank.level.final", "tank.level.min", "tank.level.max", "tank.level.mean",
            "tank.level.time_above", "controller.output.max", "controller.output.mean",
            "controller.output.time_below")


class TestErrors:
    def test_every_error_at_once(self, tmp_path: Path) -> None:
        """Unknown parameter, bad value, ambiguous spec, unknown variable, interval off the
        step grid and samples with nothing to draw: all reported, each with file and key."""
        found = errors_of(tmp_path, """
[campaign]
config = "tank.toml"
session = "tank"
duration = 10.0
samples = 3
[parameters]
"tank.aera" = { values = [1.0] }
"tank.area" = { values = [1.0, -2.0] }
"controller.kp" = { values = [0.1], range = [0.1, 0.2], steps = 2 }
[trajectories]
interval = 0.25
variables = ["tank.levle", "nope"]
""")
        file = str(tmp_path / "c.toml")
        assert all(e.startswith(file + ": ") for e in found), found
        text = "\n".join(found)
        assert "parameters.\"tank.aera\": unknown parameter 'aera'" in text
        assert "did you mean 'area'" in text
        assert "parameters.\"tank.area\".values[1]:" in text and "-2" in text
        assert "parameters.\"controller.kp\": give exactly one of" in text
        assert "trajectories.interval: must be a whole number of steps of 0.1 s" in text
        assert "trajectories.variables[0]: component 'tank' has no variable 'levle'" in text
        assert "trajectories.variables[1]: name a variable as 'component.variable'" in text
        assert "campaign.samples: samples = 3 draws nothing" in text
        assert len(found) == 7

    def test_structure_errors(self, tmp_path: Path) -> None:
        """An unknown key and a wrong type are named by their key path."""
        found = errors_of(tmp_path, """
[campaign]
config = "tank.toml"
duration = "long"
sead = 1
""")
        text = "\n".join(found)
        assert "campaign.duration: expected a number, got string 'long'" in text
        assert "campaign: unknown key 'sead'" in text and "did you mean 'seed'" in text

    def test_config_errors_named_with_their_file(self, tmp_path: Path) -> None:
        """The config's own errors come with the config file's name, beside the campaign's."""
        found = errors_of(tmp_path, '[campaign]\nconfig = "tank.toml"\n',
                          config=TANK.replace("area = 0.5", "area = -0.5"))
        assert any(e.startswith(str(tmp_path / "tank.toml")) and "area" in e for e in found)
        assert any(e.startswith(str(tmp_path / "c.toml") + ": campaign.config") for e in found)
        assert any("missing required key 'duration'" in e for e in found)

    def test_missing_scenario_file(self, tmp_path: Path) -> None:
        """A scenario file that is not there is named, with the campaign's key."""
        found = errors_of(tmp_path, '[campaign]\nconfig = "tank.toml"\nscenario = "s.toml"\n')
        assert any("cannot read the scenario file" in e for e in found), found
        assert any("campaign.scenario" in e for e in found), found

    def test_unknown_session(self, tmp_path: Path) -> None:
        """A session the config does not have is named with the ones it has."""
        found = errors_of(tmp_path, '[campaign]\nconfig = "tank.toml"\nsession = "tnak"\n'
                          'duration = 1.0\n')
        assert any("campaign.session: no session 'tnak'" in e and "did you mean 'tank'" in e
                   for e in found)


class TestExample:
    def test_readme_campaign_is_the_shipped_one(self) -> None:
        """The README's example campaign and configs/campaign-tank.toml are valid and give
        the same 60 runs."""
        import re

        root = Path(__file__).resolve().parents[2]
        readme = (root / "README.md").read_text()
        start = readme.index("## Campaigns")
        match = re.search(r"```toml\n(.*?)```", readme[start:], re.DOTALL)
        assert match is not None
        shown = parse_campaign(match.group(1), base_dir=root / "configs")
        shipped = load_campaign(root / "configs" / "campaign-tank.toml")
        assert len(plan_runs(shipped)) == 60
        assert plan_runs(shown) == plan_runs(shipped)
        assert shown.figure_columns() == shipped.figure_columns()
