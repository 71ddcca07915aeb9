"""Running a campaign on Dask (``dask.distributed``): every run a task, results stored
as they arrive.

``run_campaign(campaign, store, client)`` sends the campaign's ``RunSpec`` (the twin
and its FMUs' bytes) to the cluster once (``Client.scatter``), submits one task per run
(``run.execute``), and records each result in the store as it completes, in whatever
order: the store keys them by run, so the results are the same on any worker count. A
run that fails in its session (a model fault, an FMU error) comes back as a failed
``RunResult`` with its message; a task that fails outside it (its worker died in an
FMU's native code, twin-server is missing on the worker) is recorded failed with Dask's
error. Neither stops the other runs.

``stop`` (a ``threading.Event``, set by the command's SIGINT handler) cancels the runs
not finished: they are cancelled on the cluster, left ``cancelled`` in the store, and
every finished one is kept. The wait for results is sliced (``_TICK``) so that a stop
is seen at once and a SQLite write is never interrupted halfway.

``local_cluster(workers)`` is the default cluster: one single-threaded worker process
per core, each at a lower CPU priority (nice 10) so that live twins on the same machine
keep their ticks on time; its processes ignore SIGINT (the terminal sends Ctrl-C to the
whole process group; the command alone decides what a Ctrl-C does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from twin_server.campaigns.run import RunResult, RunSpec, execute, spec_of
from twin_server.campaigns.spec import Campaign, RunPlan, plan_runs
from twin_server.campaigns.store import Counts, ResultStore

log = structlog.get_logger(__name__)

#: seconds between two looks for results and for a stop
_TICK = 0.1
#: the CPU priority of the local cluster's workers (live twins come first)
WORKER_NICENESS = 10


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a campaign stands: what the progress bar shows."""

    total: int
    done: int  # ok or failed
    failed: int
    elapsed: float  # seconds since the runs were submitted

    @property
    def left(self) -> float | None:
        """Seconds left, estimated from the pace so far (None before the first run)."""
        if not self.done:
            return None
        return self.elapsed / self.done * (self.total - self.done)


@dataclass(frozen=True, slots=True)
class Outcome:
    counts: Counts
    cancelled: bool
    elapsed: float


def run_task(plan: RunPlan, spec: RunSpec) -> RunResult:
    """The task each run is (module-level so that workers unpickle it by name)."""
    return execute(spec, plan)


def run_campaign(campaign: Campaign, store: ResultStore, client: Any, *,
                 plans: list[RunPlan] | None = None,
                 stop: threading.Event | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> Outcome:
    """Run every plan of ``campaign`` (``plan_runs`` by default) on ``client``'s
    cluster, recording each result in ``store``; returns the counts when all are done
    or ``stop`` is set (then the rest is cancelled)."""
    from distributed import as_completed

    plans = plan_runs(campaign) if plans is None else plans
    stop = stop or threading.Event()
    bound = log.bind(campaign=campaign.name, runs=len(plans))
    started = time.monotonic()
    [spec] = client.scatter([spec_of(campaign)], hash=False)
    token = uuid.uuid4().hex[:8]  # two campaigns of one name on one scheduler stay apart
    futures = client.map(run_task, plans, spec=spec, pure=False,
                         key=[f"{campaign.name}-{token}-run-{p.index}" for p in plans])
    index = {f.key: p.index for f, p in zip(futures, plans, strict=True)}
    bound.info("campaign_started", workers=len(client.scheduler_info().get("workers", {})))
    done = failed = 0
    pending = as_completed(futures)
    cancelled = False
    last = time.monotonic()
    try:
        while not pending.is_empty():
            if stop.is_set():
                cancelled = True
                break
            batch = pending.next_batch(block=False)
            for future in batch:
                ok = _record(store, index[future.key], future)
                future.release()
                done += 1
                failed += not ok
            now = time.monotonic()
            if on_progress is not None and (batch or now - last >= 1.0):
                on_progress(Progress(len(plans), done, failed, now - started))
                last = now
            if not batch:
                stop.wait(_TICK)
    finally:
        left = [f for f in futures if f.status == "pending"]
        if left:
            client.cancel(left)
        store.finish("cancelled" if cancelled else "finished")
    elapsed = time.monotonic() - started
    counts = store.counts()
    bound.info("campaign_cancelled" if cancelled else "campaign_finished", ok=counts.ok,
               failed=counts.failed, cancelled=counts.cancelled, seconds=round(elapsed, 3))
    return Outcome(counts, cancelled, elapsed)


def _record(store: ResultStore, run: int, future: Any) -> bool:
    """Store ``future``'s result; True if the run succeeded."""
    if future.status == "finished":
        result: RunResult = future.result()
        store.record(result)
        if not result.ok:
            log.info("campaign_run_failed", run=run, message=result.message)
        return result.ok
    try:
        exc = future.exception()
        message = f"the run's task failed on the cluster: {type(exc).__name__}: {exc}"
    except Exception as err:  # cancelled by the scheduler (a lost worker, a closed client)
        message = f"the run's task was lost on the cluster: {type(err).__name__}: {err}"
    store.record_failure(run, message)
    log.warning("campaign_task_failed", run=run, message=message)
    return False


@contextlib.contextmanager
def local_cluster(workers: int | None = None, *, processes: bool = True,
                  niceness: int = WORKER_NICENESS) -> Iterator[Any]:
    """A ``LocalCluster`` and its client: ``workers`` single-threaded workers (default:
    one per core), processes at a lower priority (``niceness``) that ignore SIGINT
    (module docstring); ``processes=False`` runs the workers as threads of this process
    (tests, debugging)."""
    from distributed import Client, LocalCluster

    count = workers or os.cpu_count() or 1
    previous = signal.getsignal(signal.SIGINT) if processes else None
    in_main = threading.current_thread() is threading.main_thread()
    if processes and in_main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the spawned workers
    try:
        cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=processes,
                               dashboard_address="127.0.0.1:0",  # (its HTTP server always
                               # listens: on a free port, not 8787, which may be taken)
                               worker_dashboard_address=None,
                               silence_logs=logging.ERROR)
    finally:
        if processes and in_main:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    try:
        client = Client(cluster)
        try:
            if processes and niceness:
                client.run(os.nice, niceness)
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@contextlib.contextmanager
def remote_cluster(address: str, *, timeout: float = 10.0) -> Iterator[Any]:
    """A client of the Dask scheduler at ``address`` (``tcp://HOST:PORT``)."""
    from distributed import Client

    client = Client(address, timeout=timeout)
    try:
        yield client
    finally:
        client.close()
