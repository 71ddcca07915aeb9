"""Campaigns on the daemon (``RunCampaign``): each in a thread of its own that drives a
Dask cluster, so that the daemon's loop never waits for one.

The cluster is a ``LocalCluster`` (``runner.local_cluster``) of
``server.campaign_workers`` worker processes (default: one per core) at a lower CPU
priority (nice ``runner.WORKER_NICENESS``) than the daemon's session workers, which
run at real-time priority where the kernel grants it: live sessions keep their ticks
on time while a campaign runs (``tests/bench/bench_campaign_server.py`` measures it).
With ``server.campaign_scheduler`` (``tcp://HOST:PORT``) the campaign runs on that
Dask cluster instead. Its results go to ``<state_dir>/campaigns/<run>/`` (the
command's files: ``results.sqlite``, ``runs.csv``, ``trajectories.csv``,
``report/index.md``).

The campaign is TOML text or the name of a campaign file under the scenario folders
(``server.scenario_dirs``, the same rules as RunScenario's: ``..``, absolute paths
and symlinks out are refused); the config and scenario files it names must be inside
them too. Text resolves its ``config`` against the first folder.

Dask is optional (``pip install 'twin-server[campaigns]'``): without it RunCampaign
answers BadNotSupported naming the extra (``require_dask``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import re
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from twin_server.campaigns.plots import write_report
from twin_server.campaigns.runner import (
    WORKER_NICENESS,
    Progress,
    local_cluster,
    remote_cluster,
    run_campaign,
)
from twin_server.campaigns.spec import Campaign, RunPlan, parse_campaign, plan_runs
from twin_server.campaigns.store import ResultStore
from twin_server.errors import (
    ConfigError,
    ConfigErrors,
    InvalidArgument,
    InvalidState,
    NotFound,
    NotSupported,
    ResourceExhausted,
    TwinServerError,
)
from twin_server.runtime.compile import LoadedConfig
from twin_server.scenarios.service import ScenarioFolders

log = structlog.get_logger(__name__)

#: campaigns at once; more are refused (BadResourceUnavailable)
MAX_RUNNING = 1
#: what RunCampaign says without Dask
NO_DASK = ("RunCampaign needs Dask, which is not installed with this twin-server: "
           "pip install 'twin-server[campaigns]' (the optional extra 'campaigns') and "
           "restart the daemon")


def require_dask() -> None:
    """NotSupported naming the extra when ``distributed`` cannot be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise NotSupported(NO_DASK) from None


class Daemonish(Protocol):
    @property
    def loaded(self) -> LoadedConfig: ...


@dataclass(slots=True)
class CampaignRun:
    """One campaign on the server: what its nodes show. The thread writes the counts;
    the loop reads them (an int at a time)."""

    name: str
    campaign: Campaign
    plans: list[RunPlan]
    results: Path
    where: str  # "a local cluster of N workers" or the scheduler's address
    started: float = field(default_factory=time.time)
    state: str = "running"  # running, finished, cancelled, error
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    error: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        return len(self.plans)

    @property
    def progress(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def running(self) -> bool:
        return self.state == "running"

    def halt(self) -> None:
        """Cancel the runs not finished (the finished ones are kept); InvalidState once
        the campaign has ended."""
        if not self.running or self.stop.is_set():
            raise InvalidState(f"campaign run {self.name!r} has ended already "
                               f"({self.state}); nothing to halt")
        self.stop.set()

    def summary(self) -> str:
        return (f"campaign {self.campaign.name!r} ({self.name}): {self.state}: "
                f"{self.done - self.failed} ok, {self.failed} failed, {self.cancelled} "
                f"cancelled of {self.total}; results in {self.results}"
                + (f"; {self.error}" if self.error else ""))


Listener = Callable[[CampaignRun], Awaitable[None]]


class CampaignService:
    """Starts, runs and keeps campaign runs (``serve`` owns their tasks)."""

    def __init__(self, daemon: Daemonish, *, keep: int = 20) -> None:
        self._daemon = daemon
        self.keep = keep
        self.runs: collections.OrderedDict[str, CampaignRun] = collections.OrderedDict()
        self._numbers = itertools.count(1)
        self._tasks: asyncio.TaskGroup | None = None
        self.on_started: list[Listener] = []
        self.on_finished: list[Listener] = []
        self.on_removed: list[Listener] = []

    def folders(self) -> ScenarioFolders:
        loaded = self._daemon.loaded
        return ScenarioFolders.of(loaded.config.server,
                                  loaded.path.parent if loaded.path is not None else None)

    @property
    def running(self) -> list[CampaignRun]:
        return [r for r in self.runs.values() if r.running]

    def results_root(self) -> Path:
        return Path(self._daemon.loaded.config.server.state_dir).absolute() / "campaigns"

    async def serve(self) -> None:
        """Own the runs' tasks until cancelled; a cancellation cancels the campaigns."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                await asyncio.Event().wait()
        finally:
            self._tasks = None
            for run in self.runs.values():
                run.stop.set()

    def read(self, text: str) -> Campaign:
        """RunCampaign's Campaign argument: TOML text (it has a newline or a '[') or a
        file name below the folders; InvalidArgument with every error."""
        folders = self.folders()
        if "\n" in text or "[" in text:
            file, source, base = "RunCampaign", text, (folders.folders or (Path.cwd(),))[0]
            name = "campaign"
        else:
            if not text.strip():
                raise InvalidArgument("RunCampaign Campaign is a campaign in TOML, or the "
                                      "name of a campaign file below the scenario folders")
            path = folders.find(text.strip())
            file, base, name = text.strip(), path.parent, path.stem
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidArgument(f"campaign file {file!r} cannot be read: {exc}") from None
        _check_paths(source, base, folders)
        try:
            return parse_campaign(source, file=file, base_dir=base, name=name)
        except ConfigErrors as group:
            errors = [e for e in group.exceptions if isinstance(e, ConfigError)]
            raise InvalidArgument(f"{len(errors)} error(s) in the campaign:\n"
                                  + "\n".join(str(e) for e in errors)) from None

    async def run_campaign(self, text: str) -> CampaignRun:
        """RunCampaign's work, for every front (OPC UA's method, the REST API): Dask
        first (NotSupported, whatever the text), then the Campaign argument read off the
        loop (``read``: InvalidArgument, NotFound), then ``start``."""
        require_dask()
        campaign = await asyncio.to_thread(self.read, text)
        return await self.start(campaign)

    def get(self, name: str) -> CampaignRun:
        """The run ``name``; NotFound naming the runs kept."""
        run = self.runs.get(name)
        if run is None:
            raise NotFound(f"no campaign run {name[:80]!r} on the server (it keeps the "
                           f"running one and the last {self.keep} finished: "
                           f"{', '.join(self.runs) or 'none yet'})")
        return run

    async def start(self, campaign: Campaign) -> CampaignRun:
        """Start ``campaign`` in the background; its run (its nodes are built by the
        ``on_started`` listeners before this returns)."""
        require_dask()
        if len(self.running) >= MAX_RUNNING:
            raise ResourceExhausted(
                f"a campaign is running already ({', '.join(r.name for r in self.running)}): "
                "campaigns run one at a time on the server; wait for it or Halt it")
        if self._tasks is None:
            raise TwinServerError("campaigns are not served (the daemon is not running)")
        server = self._daemon.loaded.config.server
        name = f"{_slug(campaign.name)}_{next(self._numbers)}_{time.strftime('%Y%m%dT%H%M%S')}"
        results = self.results_root() / name
        plans = plan_runs(campaign)
        where = (server.campaign_scheduler or
                 f"a local cluster of {server.campaign_workers or os.cpu_count() or 1} "
                 f"worker processes at nice {WORKER_NICENESS}")
        run = CampaignRun(name, campaign, plans, results, where)
        self.runs[name] = run
        for listener in self.on_started:
            await listener(run)
        self._tasks.create_task(self._run(run), name=f"campaign-{name}")
        log.info("server_campaign_started", run=name, campaign=campaign.name, runs=run.total,
                 on=where, results=str(results))
        return run

    async def _run(self, run: CampaignRun) -> None:
        server = self._daemon.loaded.config.server
        thread = asyncio.ensure_future(asyncio.to_thread(
            _run_in_thread, run, server.campaign_scheduler, server.campaign_workers))
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            run.stop.set()  # the thread stops at its next look (runner._TICK)
            with contextlib.suppress(Exception):
                await thread
            raise
        except Exception as exc:
            log.exception("server_campaign_failed", run=run.name)
            run.state, run.error = "error", f"{type(exc).__name__}: {exc}"
        run.ended.set()
        log.info("server_campaign_finished", run=run.name, state=run.state, done=run.done,
                 failed=run.failed, cancelled=run.cancelled)
        for listener in self.on_finished:
            await listener(run)
        finished = [r for r in self.runs.values() if not r.running]
        for old in finished[:max(len(finished) - self.keep, 0)]:
            del self.runs[old.name]
            for listener in self.on_removed:
                await listener(old)

    def __iter__(self) -> Iterator[CampaignRun]:
        return iter(list(self.runs.values()))


def _run_in_thread(run: CampaignRun, scheduler: str | None, workers: int | None) -> None:
    def progress(p: Progress) -> None:
        run.done, run.failed = p.done, p.failed

    try:
        cluster = (remote_cluster(scheduler) if scheduler else local_cluster(workers))
        with cluster as client:
            if run.stop.is_set():
                run.state = "cancelled"
                return
            store = ResultStore.create(run.results, run.campaign, run.plans)
            try:
                outcome = run_campaign(run.campaign, store, client, plans=run.plans,
                                       stop=run.stop, on_progress=progress)
                store.export()
            finally:
                store.close()
    except OSError as exc:  # the scheduler could not be reached, or was lost
        run.state, run.error = "error", f"no Dask cluster at {scheduler or 'local'}: {exc}"
        return
    write_report(run.results)
    counts = outcome.counts
    run.done, run.failed, run.cancelled = counts.ok + counts.failed, counts.failed, \
        counts.cancelled
    run.state = "cancelled" if outcome.cancelled else "finished"


def _check_paths(source: str, base: Path, folders: ScenarioFolders) -> None:
    """The config and scenario files a campaign names must be inside the folders (as a
    file name given to RunCampaign must): InvalidArgument for one that is not."""
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError:
        return  # (parse_campaign says what is wrong)
    head = raw.get("campaign")
    if not isinstance(head, Mapping):
        return
    tops = []
    for folder in folders.folders:
        with contextlib.suppress(OSError, RuntimeError):
            tops.append(folder.resolve(strict=True))
    for key in ("config", "scenario"):
        value: Any = head.get(key)
        if not isinstance(value, str):
            continue
        real = (base / value).resolve()
        if not any(real.is_relative_to(top) for top in tops):
            raise InvalidArgument(
                f"campaign.{key} = {value!r} resolves to {str(real)!r}, outside the "
                f"scenario folders ({folders.describe()}): RunCampaign reads files only "
                "inside them")


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "campaign"
    return ("c_" + slug if slug[0].isdigit() else slug)[:40]
