"""The campaign's report: Markdown with hand-drawn SVG plots (a histogram per figure,
each figure against each varied parameter, the verdicts), written by `campaign run`
and `campaign report`, named by `campaign show`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from twin_server.campaigns.plots import histogram, write_report
from twin_server.campaigns.run import execute, spec_of
from twin_server.campaigns.spec import load_campaign, plan_runs
from twin_server.campaigns.store import ResultStore
from twin_server.cli import main

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def results(tank_campaign: Path, tmp_path: Path) -> Path:
    """The tank campaign's results, its runs executed in this process."""
    campaign = load_campaign(tank_campaign)
    plans = plan_runs(campaign)
    out = tmp_path / "results"
    store = ResultStore.create(out, campaign, plans)
    try:
        spec = spec_of(campaign)
        for plan in plans:
            store.record(execute(spec, plan))
        store.finish("finished")
    finally:
        store.close()
    return out


class TestReport:
    def test_plots_per_figure_and_parameter(self, results: Path) -> None:
        """A histogram per figure and a scatter plot of it against each of the three
        varied parameters, each valid SVG, linked from index.md."""
        index = write_report(results)
        svgs = sorted(p.name for p in index.parent.glob("*.svg"))
        figures = 8  # tank.level: 4 + time_above; controller.output: 2 + time_below
        assert len(svgs) == figures * (1 + 3)
        assert "tank.level.max.svg" in svgs and "tank.level.max-vs-tank.area.svg" in svgs
        text = index.read_text()
        assert all(f"({name})" in text for name in svgs)
        assert "8 ok, 0 failed" in text
        scatter = ET.parse(index.parent / "tank.level.max-vs-controller.kp.svg").getroot()
        assert len(scatter.findall(f"{SVG}circle")) == 8

    def test_histogram_counts_every_run(self) -> None:
        """The bars of a histogram add up to the runs, the largest value in the last bin."""
        svg = ET.fromstring(histogram("x", [0.0, 0.1, 0.1, 0.5, 1.0], bins=4))
        bars = [r for r in svg.findall(f"{SVG}rect") if r.get("fill") == "#1f77b4"]
        heights = [float(r.get("height", 0)) for r in bars]
        assert len(bars) == 3  # [0, .25): 3 runs, [.5, .75): 1, [.75, 1]: 1
        assert heights[0] == pytest.approx(3 * heights[1])

    def test_commands(self, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`campaign show` says where the report is, or how to write it; `campaign
        report` writes it."""
        assert main(["campaign", "show", str(results)]) == 0
        assert f"campaign report {results}" in capsys.readouterr().out
        assert main(["campaign", "report", str(results)]) == 0
        index = Path(capsys.readouterr().out.strip())
        assert index == results / "report" / "index.md" and index.is_file()
        assert main(["campaign", "show", str(results)]) == 0
        assert f"report: {index}" in capsys.readouterr().out
