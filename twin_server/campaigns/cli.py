"""The ``campaign`` subcommands of ``twin-server``.

    twin-server campaign check CAMPAIGN      validate; print the number of runs
    twin-server campaign run CAMPAIGN [--out DIR] [--overwrite]
                             [--scheduler tcp://HOST:PORT | --workers N | --in-process]
    twin-server campaign show DIR            the summary of a campaign's results
    twin-server campaign report DIR          its report with plots (DIR/report) again
    twin-server campaign export DIR [--to FOLDER]   runs.csv and trajectories.csv again

``run`` starts a local Dask cluster sized to the machine (``--workers N`` to choose)
unless ``--scheduler`` names an existing one; it prints a progress bar on stderr (runs
done, failed, time left) and writes ``DIR`` (default ``<campaign name>-results``):
``results.sqlite``, ``runs.csv``, ``trajectories.csv`` (``campaigns.store``) and
``report/index.md`` with its SVG plots (``campaigns.plots``). Ctrl-C
cancels the runs not finished and keeps the finished ones.

Exit status: 0 when every run succeeded, 1 when some failed (or the cluster could not
be reached), 2 for an invalid campaign file, 130 when cancelled by Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from twin_server.errors import ConfigErrors

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_CANCELLED = 130


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``campaign`` to the ``twin-server`` subcommands."""
    campaign = commands.add_parser("campaign", help="run many what-if runs of a twin on Dask")
    verbs = campaign.add_subparsers(dest="campaign_command", required=True, metavar="COMMAND")
    check = verbs.add_parser("check", help="validate a campaign file; print its run count")
    check.add_argument("campaign", help="the campaign's TOML file")
    run = verbs.add_parser(
        "run", help="run a campaign on a local Dask cluster or at --scheduler",
        description="Run every run of CAMPAIGN as fast as possible on Dask workers and "
                    "store the results in DIR (results.sqlite, runs.csv, trajectories.csv). "
                    "Ctrl-C cancels what has not finished and keeps what has.")
    run.add_argument("campaign", help="the campaign's TOML file")
    run.add_argument("--out", type=Path, help="the results folder "
                     "(default: <campaign name>-results in the current folder)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the results already in the folder")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="an existing Dask scheduler (its workers need twin-server "
                            "installed; FMUs travel with the runs)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="worker processes of the local cluster (default: one per core)")
    where.add_argument("--in-process", action="store_true",
                       help="run on one worker thread of this process (debugging)")
    show = verbs.add_parser("show", help="print the summary of a campaign's results")
    show.add_argument("dir", type=Path, help="the results folder")
    report = verbs.add_parser("report", help="write the report with plots (DIR/report) again")
    report.add_argument("dir", type=Path, help="the results folder")
    export = verbs.add_parser("export", help="write runs.csv and trajectories.csv again")
    export.add_argument("dir", type=Path, help="the results folder")
    export.add_argument("--to", type=Path, help="another folder for the CSV files")


def run(args: argparse.Namespace) -> int:
    command = args.campaign_command
    if command == "show":
        return _show(args.dir, sys.stdout)
    if command == "export":
        return _export(args.dir, args.to)
    if command == "report":
        return _report(args.dir)
    from twin_server.campaigns.spec import load_campaign, plan_runs

    try:
        campaign = load_campaign(args.campaign)
    except ConfigErrors as errors:
        print(str(errors), file=sys.stderr)
        print(f"{args.campaign}: {errors.message}", file=sys.stderr)
        return EXIT_CONFIG
    plans = plan_runs(campaign)
    if command == "check":
        each = (f"scenario {campaign.scenario}" if campaign.scenario else
                f"{campaign.duration:g} s")
        ticks = "" if campaign.scenario else f", {campaign.ticks} ticks each"
        print(f"{args.campaign}: ok ({len(plans)} runs of {each} of twin "
              f"{campaign.twin.name!r}{ticks})")
        return EXIT_OK
    return _run(args, campaign, plans)


def _run(args: argparse.Namespace, campaign: Any, plans: list[Any]) -> int:
    from twin_server.campaigns import runner
    from twin_server.campaigns.store import ResultsExist, ResultStore

    try:
        import distributed  # noqa: F401  (only to say what is missing)
    except ImportError:
        print("twin-server campaign run needs Dask: pip install 'twin-server[campaigns]'",
              file=sys.stderr)
        return EXIT_FAILURE
    out = args.out or Path(f"{campaign.name}-results")
    try:  # before any cluster starts; the store itself once one is there
        ResultStore.check_free(out, overwrite=args.overwrite)
    except ResultsExist as exc:
        print(f"twin-server: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    stop = threading.Event()

    def interrupted(signum: int, frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting for the cluster to close
            signal.default_int_handler(signum, frame)
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    # distributed logs every worker's start and stop at INFO: the progress bar says enough
    logging.getLogger("distributed").setLevel(logging.WARNING)
    bar = ProgressBar(len(plans), sys.stderr)
    if args.scheduler:
        cluster = runner.remote_cluster(args.scheduler)
    else:
        cluster = runner.local_cluster(1 if args.in_process else args.workers,
                                       processes=not args.in_process)
    try:
        with cluster as client:
            where = args.scheduler or ("in-process" if args.in_process else "a local cluster")
            workers = len(client.scheduler_info().get("workers", {}))
            print(f"{campaign.name}: {len(plans)} runs on {where} ({workers} workers); "
                  f"results in {out}", file=sys.stderr)
            store = ResultStore.create(out, campaign, plans, overwrite=args.overwrite)
            try:
                outcome = runner.run_campaign(campaign, store, client, plans=plans, stop=stop,
                                              on_progress=bar.update)
                bar.close()
                store.export()
            finally:
                store.close()
    except OSError as exc:  # the scheduler could not be reached, or was lost
        print(f"\ntwin-server: no Dask cluster: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGINT, previous)
    from twin_server.campaigns.plots import write_report

    report = write_report(out)
    counts = outcome.counts
    state = "cancelled" if outcome.cancelled else "finished"
    print(f"{campaign.name}: {state} in {outcome.elapsed:.1f} s: {counts.ok} ok, "
          f"{counts.failed} failed, {counts.cancelled} cancelled; results in {out}, "
          f"report {report}", file=sys.stderr)
    if outcome.cancelled:
        return EXIT_CANCELLED
    return EXIT_FAILURE if counts.failed else EXIT_OK


class ProgressBar:
    """``[#####.....] 37/100 runs, 2 failed, 4.1 runs/s, ~15 s left`` on ``stream``:
    redrawn in place on a terminal, a line at most every 5 s elsewhere (a log)."""

    WIDTH = 30

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0
        self._drawn = False

    def update(self, progress: Any) -> None:
        now = time.monotonic()
        final = progress.done == progress.total
        if not self.tty and not final and now - self._last < 5.0:
            return
        self._last = now
        self.stream.write(("\r" if self.tty else "") + self.line(progress)
                          + ("" if self.tty else "\n"))
        self.stream.flush()
        self._drawn = True

    def line(self, progress: Any) -> str:
        filled = self.WIDTH * progress.done // max(progress.total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        rate = progress.done / progress.elapsed if progress.elapsed > 0 else 0.0
        left = progress.left
        eta = "" if left is None else f", ~{_duration(left)} left"
        return (f"[{bar}] {progress.done}/{progress.total} runs, {progress.failed} failed, "
                f"{rate:.1f} runs/s{eta}   ")

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _show(folder: Path, out: IO[str]) -> int:
    from twin_server.campaigns.report import summary

    try:
        text = summary(folder)
    except FileNotFoundError as exc:
        print(f"twin-server: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    out.write(text)
    report = folder / "report" / "index.md"
    out.write(f"report: {report}\n" if report.is_file() else
              f"report: none yet (twin-server campaign report {folder} writes it)\n")
    return EXIT_OK


def _report(folder: Path) -> int:
    from twin_server.campaigns.plots import write_report

    try:
        index = write_report(folder)
    except FileNotFoundError as exc:
        print(f"twin-server: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(index)
    return EXIT_OK


def _export(folder: Path, to: Path | None) -> int:
    from twin_server.campaigns.store import ResultStore

    try:
        store = ResultStore.open(folder)
    except FileNotFoundError as exc:
        print(f"twin-server: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        runs, trajectories = store.export(to)
    finally:
        store.close()
    print(f"{runs}\n{trajectories}")
    return EXIT_OK
