"""The ``twin-server`` command.

    twin-server run CONFIG [--endpoint URL] [--web-port PORT] [--log-level LEVEL]
    twin-server check CONFIG [CONFIG ...]
    twin-server health [ENDPOINT] [--timeout SECONDS]
    twin-server history export DATABASE --session S --start T --end T [--path P ...]
                               [--sim-start S] [--sim-end S] [-o FILE]
    twin-server fmu inspect FILE
    twin-server test SCENARIO... [--config CONFIG | --endpoint URL] [--junit FILE] [--report DIR]
    twin-server user add|passwd|role|remove|list NAME [--role ROLE] [--config CONFIG]
    twin-server pki trust|untrust|list|hil-client [FILE-OR-THUMBPRINT] [--config CONFIG]
    twin-server campaign check|run|show|export ...   (twin_server/campaigns/cli.py)

Exit status: 0 on success or a clean stop, 2 for an invalid config (every error
printed, each with its file and key path), 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from twin_server import __version__, logs
from twin_server.errors import ConfigErrors

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twin-server",
        description="OPC UA digital twin runtime: config-defined twins stepped in real time.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve the twins of CONFIG over OPC UA (foreground)")
    run.add_argument("config", help="path of the TOML config file")
    run.add_argument("--endpoint", help="override server.endpoint, e.g. opc.tcp://0.0.0.0:4840/twin-server")
    run.add_argument("--web-port", type=int, metavar="PORT",
                     help="override web.port (0: any free port; the log's web_server_started "
                          "says which)")
    run.add_argument("--log-level", choices=sorted(logs.LEVELS),
                     help="log level; else $TWIN_SERVER_LOG_LEVEL, else server.log_level")

    check = commands.add_parser("check", help="validate config files and print every error")
    check.add_argument("configs", nargs="+", metavar="CONFIG")

    health = commands.add_parser(
        "health", help="check that a daemon serves at an endpoint (exit 0 if so, 1 if not)")
    health.add_argument("endpoint", nargs="?", default="opc.tcp://127.0.0.1:4840/twin-server")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")

    history = commands.add_parser("history", help="work with the history database")
    history_commands = history.add_subparsers(dest="history_command", required=True,
                                              metavar="COMMAND")
    export = history_commands.add_parser(
        "export", help="write a session's recorded samples as CSV",
        description="Write a session's samples in [START, END) as CSV, for a spreadsheet "
                    "or pandas (pandas.read_csv(f, parse_dates=['time'])).")
    export.add_argument("database", type=Path, help="the history SQLite file")
    export.add_argument("--session", required=True, help="the session whose history to export")
    export.add_argument("--path", dest="paths", action="append", default=[], metavar="PATH",
                        help="a variable below the session, e.g. Components.tank.Outputs.level "
                             "(repeat for several; default: every recorded variable)")
    export.add_argument("--start", required=True, type=_history_time,
                        help="ISO 8601 (UTC unless an offset is given) or epoch seconds")
    export.add_argument("--end", required=True, type=_history_time, help="as --start; excluded")
    export.add_argument("--sim-start", type=float, default=None, metavar="SECONDS",
                        help="keep only samples at simulated time >= SECONDS (every row has "
                             "its simulated time in the sim_time_s column)")
    export.add_argument("--sim-end", type=float, default=None, metavar="SECONDS",
                        help="keep only samples at simulated time < SECONDS")
    export.add_argument("--layout", choices=("wide", "long"), default="wide",
                        help="wide: a column per variable (default); long: a row per sample "
                             "with path, status and source")
    export.add_argument("-o", "--output", default="-", help="the CSV file, or - for stdout")

    from twin_server.security import cli as security_cli

    security_cli.add_parsers(commands)

    from twin_server.campaigns import cli as campaign_cli

    campaign_cli.add_parsers(commands)

    fmu = commands.add_parser("fmu", help="work with FMU files")
    fmu_commands = fmu.add_subparsers(dest="fmu_command", required=True, metavar="COMMAND")
    inspect = fmu_commands.add_parser(
        "inspect", help="print an FMU's variables (causality, type, unit, range, start)")
    inspect.add_argument("file", help="path of the .fmu file")

    from twin_server.scenarios import command as scenario_command

    scenario_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # keep stdout for the command's output (CSV, tables)
        logs.configure("warning")
    if args.command == "check":
        return _check(args.configs)
    if args.command == "fmu":
        return _fmu_inspect(args.file)
    if args.command == "health":
        return _health(args.endpoint, args.timeout)
    if args.command in ("user", "pki"):
        from twin_server.security import cli as security_cli

        return security_cli.run(args)
    if args.command == "campaign":
        from twin_server.campaigns import cli as campaign_cli

        return campaign_cli.run(args)
    if args.command == "history":
        return asyncio.run(_history_export(args))
    if args.command == "test":
        from twin_server.scenarios import command as scenario_command

        return scenario_command.run(args)
    return _run(args)


def _check(paths: Sequence[str]) -> int:
    from twin_server.runtime.compile import load_config

    status = EXIT_OK
    for path in paths:
        try:
            loaded = load_config(path)
        except ConfigErrors as errors:
            print(str(errors), file=sys.stderr)
            print(f"{path}: {errors.message}", file=sys.stderr)
            status = EXIT_CONFIG
            continue
        if loaded.config.faces:  # their NodeSets loaded, their bindings resolved
            from twin_server.faces.serve import check_faces

            found = asyncio.run(check_faces(
                loaded.config, loaded.twins, base=Path(path).resolve().parent,
                file=loaded.file))
            if found:
                group = ConfigErrors(found)
                print(str(group), file=sys.stderr)
                print(f"{path}: {group.message}", file=sys.stderr)
                status = EXIT_CONFIG
                continue
        for warning in loaded.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        warned = len(loaded.warnings)
        notes = f", {warned} warning{'s' if warned > 1 else ''}" if warned else ""
        count = len(loaded.config.faces)
        faces = f", {count} face{'s' if count > 1 else ''}" if count else ""
        print(f"{path}: ok ({len(loaded.twins)} twins, {len(loaded.config.sessions)} "
              f"sessions{faces}{notes})")
    return status


def _history_time(text: str) -> datetime | float:
    """A command-line time: ISO 8601 (UTC unless it has an offset) or epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO 8601 such as 2024-05-01T12:00:00Z, "
            "or seconds since the epoch)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def _history_export(args: argparse.Namespace) -> int:
    from twin_server.history import HistoryStore, export_csv

    if not args.database.is_file():
        print(f"twin-server: no history database at {args.database}", file=sys.stderr)
        return EXIT_CONFIG
    store = await HistoryStore.open(args.database)
    try:
        if args.output == "-":
            rows = await export_csv(store, args.session, args.paths, args.start, args.end,
                                    sys.stdout, layout=args.layout,
                                    sim_start=args.sim_start, sim_end=args.sim_end)
        else:
            with open(args.output, "w", newline="", encoding="utf-8") as out:
                rows = await export_csv(store, args.session, args.paths, args.start, args.end,
                                        out, layout=args.layout,
                                        sim_start=args.sim_start, sim_end=args.sim_end)
    finally:
        await store.close()
    print(f"{rows} rows written", file=sys.stderr)
    return EXIT_OK


def _health(endpoint: str, timeout: float) -> int:
    from twin_server.health import check

    result = asyncio.run(check(endpoint, timeout))
    print(result.message, file=sys.stdout if result.ok else sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILURE


def _fmu_inspect(path: str) -> int:
    from twin_server.errors import ConfigError
    from twin_server.models.fmu import inspect_fmu

    try:
        print(inspect_fmu(path))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from twin_server.runtime.compile import load_config

    try:
        loaded = load_config(args.config)
    except ConfigErrors as errors:
        print(str(errors), file=sys.stderr)
        print(f"{args.config}: {errors.message}; not started", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(args.log_level, default=loaded.config.server.log_level)
    for warning in loaded.warnings:
        structlog.get_logger(__name__).warning(
            "config_warning", file=warning.file, path=warning.path,
            message=warning.message)

    from twin_server.opcua.patches import UntestedAsyncua, check_asyncua

    try:
        check_asyncua()
    except UntestedAsyncua as exc:
        print(f"{exc}; not started", file=sys.stderr)
        return EXIT_FAILURE

    from twin_server.runtime.daemon import Daemon

    if args.web_port is not None:
        web = loaded.config.web.model_copy(update={"port": args.web_port})
        loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
            update={"web": web}))
    daemon = Daemon(loaded, endpoint=args.endpoint)
    try:
        _run_loop(daemon.run(install_signal_handlers=True))
    except OSError as exc:  # the endpoint could not be bound: say which and why
        structlog.get_logger(__name__).error("daemon_failed", error=str(exc))
        return EXIT_FAILURE
    return EXIT_OK


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (faster socket I/O), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
