"""The pytest plugin, run in a subprocess on the examples: one item per scenario."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "configs" / "scenarios"


def _plugin_args() -> list[str]:
    """-p the plugin unless its entry point is installed (an install of this checkout)."""
    installed = any(e.value == "twin_server.scenarios.plugin"
                    for e in entry_points(group="pytest11"))
    return [] if installed else ["-p", "twin_server.scenarios.plugin"]


class TestPlugin:
    def test_collects_and_runs_the_examples(self, tmp_path: Path) -> None:
        """pytest collects every scenario of scenario_dirs, runs them offline, fails the
        failing one with its check's failure text and skips the live-only one."""
        (tmp_path / "pytest.ini").write_text(f"[pytest]\nscenario_dirs = {EXAMPLES}\n")
        junit = tmp_path / "junit.xml"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *_plugin_args(), "-p", "no:cacheprovider",
             "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-rs",
             f"--junit-xml={junit}", str(EXAMPLES)],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        out = done.stdout
        assert done.returncode == 1, out + done.stderr
        assert "1 failed, 2 passed, 1 skipped" in out
        assert "tank_fails_on_purpose" in out and "did not hold within 10 s" in out
        assert "values seen: tank.level in [" in out
        assert "needs a live run" in out
        assert junit.exists()

    def test_entry_point_declared(self) -> None:
        """pyproject.toml declares the plugin under pytest11."""
        text = (ROOT / "pyproject.toml").read_text()
        assert '[project.entry-points.pytest11]\ntwin_server_scenarios = ' \
               '"twin_server.scenarios.plugin"' in text
