"""The pytest plugin (entry point ``pytest11``): scenario files as test items.

pytest collects, one test item per scenario file:

* every file named ``scenario_*.toml`` under the paths it is given, and
* every ``*.toml`` below the folders of the ini option ``scenario_dirs``
  (``[tool.pytest.ini_options] scenario_dirs = ["configs/scenarios"]``).

Each item runs its scenario offline (its ``[scenario] config``, or
``--scenario-config``), or live with ``--scenario-endpoint URL``; it fails with
the failure text of every check that failed (the condition, the values seen, the
simulated time). A scenario that reads PLC nodes (``[plc.*]``) or has link fault
steps needs a live run and is skipped offline. ``--scenario-junit``/``--junit-xml``
are independent: pytest's own JUnit report has one test case per scenario.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("twin-server scenarios")
    group.addoption("--scenario-config", default=None,
                    help="run scenarios on this config (default: each one's [scenario] config)")
    group.addoption("--scenario-endpoint", default=None,
                    help="run scenarios live against the daemon at this endpoint")
    group.addoption("--scenario-seed", type=int, default=None,
                    help="give every 'seed' parameter this value")
    parser.addini("scenario_dirs", type="paths", default=[],
                  help="folders whose *.toml files are all scenarios")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".toml":
        return None
    folders = parent.config.getini("scenario_dirs")
    if file_path.name.startswith("scenario_") or any(
            file_path.is_relative_to(Path(folder)) for folder in folders):
        return ScenarioCollector.from_parent(parent, path=file_path)
    return None


class ScenarioCollector(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        yield ScenarioItem.from_parent(self, name=self.path.stem)


class ScenarioFailed(Exception):
    """A scenario whose checks failed, or that could not run (its text is the report)."""


class ScenarioItem(pytest.Item):
    def runtest(self) -> None:
        from twin_server.errors import ConfigErrors
        from twin_server.scenarios.schema import read_scenario

        options = self.config.option
        try:
            scenario = read_scenario(self.path)
        except ConfigErrors as exc:
            raise ScenarioFailed(str(exc)) from None
        if options.scenario_endpoint:
            from twin_server.scenarios.live import run_live

            (result,) = asyncio.run(run_live([scenario], options.scenario_endpoint,
                                             seed=options.scenario_seed))
        else:
            if scenario.live_only:
                pytest.skip(f"{scenario.live_only}: needs a live run (--scenario-endpoint URL)")
            result = self._offline(scenario, options.scenario_config, options.scenario_seed)
        self.user_properties.append(("verdict", str(result.verdict)))
        if not result.passed:
            lines = [result.summary()]
            if result.error:
                lines.append(f"broke off: {result.error}")
            lines += [f"\n{c.name}\n{c.describe()}" for c in result.checks
                      if c.verdict.value in ("failed", "error")]
            raise ScenarioFailed("\n".join(lines))

    @staticmethod
    def _offline(scenario: Any, config: str | None, seed: int | None) -> Any:
        from twin_server.errors import ConfigError, ConfigErrors
        from twin_server.runtime.compile import load_config
        from twin_server.scenarios.offline import run_offline

        path = Path(config).resolve() if config else scenario.config_path
        if path is None:
            raise ScenarioFailed(str(ConfigError(
                "no config to run on: give --scenario-config CONFIG or [scenario] config",
                path="scenario", file=scenario.file)))
        try:
            return run_offline(scenario, load_config(path), seed=seed)
        except ConfigErrors as exc:
            raise ScenarioFailed(str(exc)) from None

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.name}"
