"""``twin-server test``: run scenario files, print progress and a verdict per check.

    twin-server test SCENARIO... [--config CONFIG] [--seed N]     offline, in-process
    twin-server test SCENARIO... --endpoint URL [--session S]     live, against a daemon
                                 [--junit FILE] [--report DIR] [--quiet]

Exit status: 0 when every check passed, 1 when one failed (or a run broke off),
2 for bad input (a scenario or config with errors: every error printed with its
file and key; nothing is run then).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

from twin_server.errors import ConfigError, ConfigErrors
from twin_server.scenarios.results import ScenarioResult, Verdict
from twin_server.scenarios.runner import Progress
from twin_server.scenarios.schema import ScenarioFile, config_errors, read_scenario

EXIT_OK, EXIT_FAILURE, EXIT_INPUT = 0, 1, 2
_MARK = {Verdict.PASSED: "PASS", Verdict.FAILED: "FAIL", Verdict.ERROR: "ERROR",
         Verdict.SKIPPED: "SKIP"}


def add_parser(commands: Any) -> None:
    test = commands.add_parser(
        "test", help="run test scenarios (offline, or live against a daemon)",
        description="Run scenario files: offline on a fresh in-process session, faster "
                    "than real time (--config, or each scenario's [scenario] config), or "
                    "live over OPC UA against a running daemon (--endpoint), on a session "
                    "it creates or forks and deletes afterwards.")
    test.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    test.add_argument("--config", help="the config of the twins (offline runs)")
    test.add_argument("--endpoint", help="a running daemon's endpoint (live runs)")
    test.add_argument("--session", help="live runs: run on this session of the daemon, as it "
                                        "is (a HIL test: the session the PLC is bound to); "
                                        "default: a fork or a fresh session, deleted after")
    test.add_argument("--seed", type=int, default=None,
                      help="give every 'seed' parameter this value (default: the scenario's)")
    test.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    test.add_argument("--report", metavar="DIR", help="write a Markdown report with plots")
    test.add_argument("--quiet", action="store_true", help="print the verdicts only")
    test.add_argument("--timeout", type=float, default=10.0,
                      help="seconds per OPC UA request in live runs (default 10)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    scenarios: list[ScenarioFile] = []
    errors: list[ConfigError] = []
    for path in args.scenarios:
        try:
            scenarios.append(read_scenario(path))
        except ConfigErrors as exc:
            errors.extend(config_errors(exc))
    if errors:
        print(str(ConfigErrors(errors)), file=sys.stderr)
        print(f"twin-server test: {len(errors)} error(s) in the scenarios; nothing was run",
              file=sys.stderr)
        return EXIT_INPUT
    listener = None if args.quiet else _printer(out)
    results: list[ScenarioResult] = []
    try:
        if args.endpoint:
            from twin_server.scenarios.live import run_live

            results = asyncio.run(run_live(scenarios, args.endpoint, session=args.session,
                                           listener=listener,
                                           timeout=args.timeout, seed=args.seed))
        else:
            results = _offline(scenarios, args.config, args.seed, listener, out)
    except ConfigErrors as exc:
        print(str(exc), file=sys.stderr)
        print("twin-server test: bad input; nothing (more) was run", file=sys.stderr)
        return EXIT_INPUT
    except (OSError, TimeoutError) as exc:
        print(f"twin-server test: cannot reach {args.endpoint}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for result in results:
        print(result.summary(), file=out)
        if result.error:
            print(f"  broke off: {result.error}", file=out)
    if args.junit:
        from twin_server.scenarios.junit import write_junit

        write_junit(results, args.junit)
        print(f"JUnit report: {args.junit}", file=out)
    if args.report:
        from twin_server.scenarios.report import write_report

        print(f"report: {write_report(results, args.report)}", file=out)
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILURE


def _offline(scenarios: list[ScenarioFile], config: str | None, seed: int | None,
             listener: Any, out: TextIO) -> list[ScenarioResult]:
    from twin_server.runtime.compile import LoadedConfig, load_config
    from twin_server.scenarios.offline import Prepared, prepare, run_prepared

    loaded: dict[Path, LoadedConfig] = {}
    prepared: list[Prepared] = []
    errors: list[ConfigError] = []
    for scenario in scenarios:
        path = Path(config).resolve() if config else scenario.config_path
        if path is None:
            errors.append(ConfigError("no config to run on: give --config CONFIG or "
                                      "[scenario] config = 'path'", path="scenario",
                                      file=scenario.file))
            continue
        try:
            if path not in loaded:
                loaded[path] = load_config(path)
            prepared.append(prepare(scenario, loaded[path], seed=seed))
        except ConfigErrors as exc:
            errors.extend(config_errors(exc))
    if errors:
        for item in prepared:
            item.session.close()
        raise ConfigErrors(errors)
    results = []
    for item in prepared:
        if listener is not None:
            print(f"{item.scenario.name} ({item.scenario.file}): offline on session "
                  f"{item.session.twin.name!r}, seed {item.seed}", file=out)
        results.append(asyncio.run(run_prepared(item, listener=listener)))
    return results


def _printer(out: TextIO) -> Any:
    def tell(progress: Progress) -> None:
        check = progress.check
        if check is None:
            print(f"  [{progress.step.index + 1}/{progress.total}] {progress.step.label}",
                  file=out)
        else:
            print(f"    {_MARK[check.verdict]} {check.name}: {check.message} "
                  f"(t = {check.decided:.6g} s)", file=out)
        out.flush()
    return tell
