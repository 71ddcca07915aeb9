"""One run, in this process: a fresh session stepped flat out, the same as stepping a
plain session by hand; a failed run says why; FMUs travel as bytes."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.campaigns.conftest import LAG, write
from tests.models.fmu import build
from twin_server.campaigns.run import execute, land, spec_of
from twin_server.campaigns.spec import load_campaign, plan_runs
from twin_server.engine.session import Session, SessionSettings
from twin_server.engine.state import VarKey
from twin_server.models.base import Kind

#: crash2 asking to terminate (how = 3) in the doStep past crash_at: never, or at 0.045 s
ENDS_CAMPAIGN = """
[campaign]
config = "ends.toml"
step_size = 0.01
duration = 0.1

[parameters]
"lag.crash_at" = { values = [1e30, 0.045] }

[summary."lag.y"]
"""


class TestRun:
    def test_bit_identical_to_a_plain_session(self, tank_campaign: Path) -> None:
        """Figures and trajectories equal, bit for bit, a session stepped by hand with the
        run's parameters."""
        campaign = load_campaign(tank_campaign)
        plan = plan_runs(campaign)[5]
        result = execute(spec_of(campaign), plan)
        assert result.ok and result.ticks == 200 and result.sim_time == 20.0

        area, kp, level0 = plan.values
        parameters = {"tank": {"area": area, "initial_level": level0},
                      "controller": {"kp": kp, "ki": 0.005}}
        session = Session("plain", campaign.twin,
                          SessionSettings(step_size=0.1, parameters=parameters))
        level = VarKey("tank", Kind.OUTPUT, "level")
        levels = [session.read(level)]
        for _ in range(200):
            session.step(1)
            levels.append(session.read(level))
        assert result.trajectories["tank.level"] == tuple(levels[::10])
        assert result.times == tuple(k * 0.1 for k in range(0, 201, 10))
        assert result.figures["tank.level.final"] == levels[-1]
        assert result.figures["tank.level.max"] == max(levels)
        assert result.figures["tank.level.mean"] == math.fsum(levels) / 201
        assert result.figures["tank.level.time_above"] == sum(
            v > 0.8 for v in levels[:-1]) * 0.1

    def test_failed_fmu_run_says_why(self, lag_campaign: Path) -> None:
        """An FMU error halts the run: not ok, the FMU's message, the trajectory up to the
        fault and no figures."""
        campaign = load_campaign(lag_campaign)
        results = [execute(spec_of(campaign), plan) for plan in plan_runs(campaign)]
        assert [r.ok for r in results] == [True, False, True, False]
        failed = results[1]
        assert "lag2 fails on purpose" in failed.message and "fail_at=0.055" in failed.message
        assert failed.ticks == 6 and failed.figures == {}
        assert failed.times == (0.0, 0.05)
        assert results[0].figures["lag.y.final"] == results[0].trajectories["lag.y"][-1]

    def test_an_fmu_ending_the_simulation_early_says_so(
            self, lag_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
        """An FMU asking to terminate before the campaign's duration (crash2, how = 3)
        ends its run as failed with the FMU's own words, not 'the session halted'."""
        folder = lag_campaign.parent
        build.build("crash2", folder)
        write(folder, {"ends.toml": LAG.replace("lag2.fmu", "crash2.fmu").replace(
                           "inputs = { u = 1.0 }", "parameters = { how = 3 }"),
                       "ends_sweep.toml": ENDS_CAMPAIGN})
        campaign = load_campaign(folder / "ends_sweep.toml")
        results = [execute(spec_of(campaign), plan) for plan in plan_runs(campaign)]
        assert [r.ok for r in results] == [True, False]
        message = results[1].message
        assert "asked to end the simulation at t=0.04 s" in message, message
        assert "not on a fault" in message and "before the campaign's duration" in message

    def test_fmu_lands_from_bytes(self, lag_campaign: Path, tmp_path: Path) -> None:
        """A shipped twin names its FMU by sha-256; landing it writes the bytes where this
        process can read them, with the original file gone."""
        campaign = load_campaign(lag_campaign)
        spec = spec_of(campaign)
        shipped = spec.twin.component("lag").options["path"]
        assert shipped.startswith("sha256:") and "cache_dir" not in spec.twin.component(
            "lag").options
        (lag_campaign.parent / "lag2.fmu").unlink()
        landed = Path(land(spec.twin, spec.fmus).component("lag").options["path"])
        assert landed.read_bytes() == spec.fmus[shipped.removeprefix("sha256:")]
        assert execute(spec, plan_runs(campaign)[0]).ok


class TestFMPyTwin:
    def test_same_figures_as_fmpy_example_loop(self, lag_fmu: Path, tmp_path: Path) -> None:
        """The FMU bench's two ways agree: campaign runs of the lag FMU give the figures
        of FMPy's parameter_variation loop on the same FMU, bit for bit."""
        import fmpy
        from fmpy import read_model_description

        from tests.bench import bench_campaigns_fmpy as bench

        shutil.copy(lag_fmu, tmp_path / "lag2.fmu")
        campaign = bench._prepare(tmp_path, "sweep", 3, 0.2)
        spec, plans = spec_of(campaign), plan_runs(campaign)
        ours = {p.index: execute(spec, p) for p in plans}
        unzipdir = str(fmpy.extract(str(lag_fmu), unzipdir=str(tmp_path / "unzipped")))
        md = read_model_description(unzipdir)
        vrs = {v.name: v.valueReference for v in md.modelVariables}
        fmu_args = {"guid": md.guid, "modelIdentifier": md.coSimulation.modelIdentifier,
                    "unzipDirectory": unzipdir}
        rows = bench.simulate_fmu(range(3), fmu_args, [vrs["T"], vrs["u"]], [vrs["y"]],
                                  bench._values(campaign), 0.2)
        assert len(rows) == 3
        for i, figures, kept in rows:
            result = ours[i]
            assert result.ok and result.ticks == 20
            assert figures == tuple(result.figures[f"lag.y.{f}"]
                                    for f in ("final", "mean", "min", "max"))
            assert tuple(kept) == result.trajectories["lag.y"]
