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

A run whose worker process dies (an FMU's native code segfaults or aborts) must not
take others down: Dask retries a task whose worker died up to the scheduler's
``allowed-failures`` times (default 3: one bad run could kill four workers), and
counts every task assigned to that worker as a suspect. So the runs are submitted a
few at a time, each to a worker with a free thread (``_free``: no run waits on a
worker behind another, so none is a bystander), and the scheduler gives a task up at the first death
(``allowed-failures`` 0: the local cluster is made so; on another scheduler
``run_campaign`` lowers its ``allowed_failures`` to ``ALLOWED_FAILURES`` and its worker
saturation to at most 1.0, settings of that scheduler for every client of it). Such a
run is recorded failed with a message that says its worker died. The spec is a task
(``_spec``), not scattered data, so that the scheduler computes it again if the
workers holding it died; a run that had finished on a worker that died before its
result was fetched is submitted again (``RESUBMITS`` times at most: it is
deterministic).

``local_cluster(workers)`` is the default cluster: one single-threaded worker process
per core, each at a lower CPU priority (nice 10) so that live twins on the same machine
keep their ticks on time; its processes ignore SIGINT (the terminal sends Ctrl-C to the
whole process group; the command alone decides what a Ctrl-C does).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
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
#: times a run whose result was lost with a worker (not one it killed) is submitted again
RESUBMITS = 2
#: deaths of a worker running a task before Dask gives the task up, on a scheduler
#: that is not ours (the local cluster's: 0)
ALLOWED_FAILURES = 0


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


def _spec(spec: RunSpec) -> RunSpec:
    """The task that holds a campaign's ``RunSpec`` on the cluster."""
    return spec


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
    from distributed import wait

    plans = plan_runs(campaign) if plans is None else plans
    stop = stop or threading.Event()
    bound = log.bind(campaign=campaign.name, runs=len(plans))
    started = time.monotonic()
    _limit_failures(client, bound)
    token = uuid.uuid4().hex[:8]  # two campaigns of one name on one scheduler stay apart
    # a task, not scattered data: the scheduler can compute it again if every worker
    # holding it died (scattered data would be lost, and every run waiting on it with it)
    spec = client.submit(_spec, spec_of(campaign), pure=False,
                         key=f"{campaign.name}-{token}-spec")
    queue = collections.deque(plans)
    by_index = {p.index: p for p in plans}
    flying: dict[str, Any] = {}  # key -> future of the runs submitted, not yet recorded
    index: dict[str, int] = {}
    again: dict[int, int] = {}  # run -> times submitted again (its result was lost)
    threads, looked = _threads(client), time.monotonic()
    on: dict[str, str] = {}  # key -> the worker it was sent to
    bound.info("campaign_started", workers=len(client.scheduler_info().get("workers", {})))
    done = failed = 0
    cancelled = False
    last = time.monotonic()
    try:
        while flying or queue:
            if stop.is_set():
                cancelled = True
                break
            if time.monotonic() - looked >= 1.0:  # workers come and go
                threads, looked = _threads(client), time.monotonic()
            while queue:
                worker = _free(threads, on.values())
                if worker is None:
                    break
                plan = queue.popleft()
                times = again.get(plan.index, 0)
                key = f"{campaign.name}-{token}-run-{plan.index}" + (f"-{times}" if times else "")
                flying[key] = client.submit(run_task, plan, spec=spec, pure=False, key=key,
                                            workers=[worker], allow_other_workers=True)
                index[key], on[key] = plan.index, worker
            with contextlib.suppress(TimeoutError):
                wait(list(flying.values()), timeout=_TICK, return_when="FIRST_COMPLETED")
            batch = [f for f in flying.values() if f.status != "pending"]
            for future in batch:
                del flying[future.key]
                del on[future.key]
                run = index.pop(future.key)
                try:
                    ok = _record(store, run, future, lost_too=again.get(run, 0) >= RESUBMITS)
                except _Lost:  # its result died with a worker: the run is run again
                    again[run] = again.get(run, 0) + 1
                    queue.appendleft(by_index[run])
                    bound.info("campaign_run_resubmitted", run=run, times=again[run])
                    continue
                finally:
                    future.release()
                done += 1
                failed += not ok
            now = time.monotonic()
            if on_progress is not None and (batch or now - last >= 1.0):
                on_progress(Progress(len(plans), done, failed, now - started))
                last = now
    finally:
        if flying:
            client.cancel(list(flying.values()))
        spec.release()
        store.finish("cancelled" if cancelled else "finished")
    elapsed = time.monotonic() - started
    counts = store.counts()
    bound.info("campaign_cancelled" if cancelled else "campaign_finished", ok=counts.ok,
               failed=counts.failed, cancelled=counts.cancelled, seconds=round(elapsed, 3))
    return Outcome(counts, cancelled, elapsed)


def _threads(client: Any) -> dict[str, int]:
    """The cluster's workers and their threads (empty if the scheduler does not say)."""
    try:
        return {str(k): int(v) for k, v in client.nthreads().items()}
    except Exception:  # (the scheduler is briefly unreachable)
        return {}


def _free(threads: dict[str, int], busy: Iterable[str]) -> str | None:
    """A worker with a thread no run of ours was sent to (module docstring: a run is
    sent to a worker when it can start there at once), else None."""
    used = collections.Counter(busy)
    for worker, count in threads.items():
        if used[worker] < count:
            return worker
    return None


def _limit_failures(client: Any, bound: Any) -> None:
    """Lower the scheduler's ``allowed_failures`` to ``ALLOWED_FAILURES`` (module
    docstring); a scheduler that refuses is logged, not fatal."""
    limit = ALLOWED_FAILURES

    def lower(dask_scheduler: Any) -> int:  # (pickled by value: runs on the scheduler)
        import math

        dask_scheduler.allowed_failures = min(dask_scheduler.allowed_failures, limit)
        saturation = dask_scheduler.WORKER_SATURATION
        if not math.isinf(saturation):  # (inf: no queuing, which a change would break)
            dask_scheduler.WORKER_SATURATION = min(saturation, 1.0)
        return int(dask_scheduler.allowed_failures)

    try:
        now = client.run_on_scheduler(lower)
    except Exception as exc:
        bound.warning("campaign_allowed_failures_unchanged", reason=str(exc),
                      hint="set distributed.scheduler.allowed-failures to 0 or 1 on the "
                           "scheduler: a run that crashes its worker is retried otherwise")
        return
    bound.debug("campaign_allowed_failures", allowed_failures=now)


class _Lost(Exception):
    """A run's result (or its task) was lost with a worker, not refused by the run."""


def _record(store: ResultStore, run: int, future: Any, *, lost_too: bool = False) -> bool:
    """Store ``future``'s result; True if the run succeeded. _Lost if its result was
    lost with a worker (unless ``lost_too``: then it is recorded failed)."""
    if future.status == "finished":
        try:
            result: RunResult = future.result()
        except Exception as err:  # finished on a worker that died before we had it
            if not lost_too:
                raise _Lost() from err
            message = (f"the run's result was lost with its worker {RESUBMITS + 1} times: "
                       f"{type(err).__name__}: {err}")
            store.record_failure(run, message)
            log.warning("campaign_task_failed", run=run, message=message)
            return False
        store.record(result)
        if not result.ok:
            log.info("campaign_run_failed", run=run, message=result.message)
        return result.ok
    try:
        exc = future.exception() if future.status == "error" else None
        if exc is None:  # lost with its worker (status "lost", "cancelled")
            raise _Lost(f"its future is {future.status}")
        if type(exc).__name__ == "KilledWorker":
            message = ("the run's worker process died while running it (a crash in an "
                       "FMU's native code, such as a segfault or an abort, or the worker ran "
                       "out of memory); the other runs go on. Run it alone with "
                       "'twin-server campaign run --in-process' to see where. Dask: "
                       f"{exc}")
        else:
            message = f"the run's task failed on the cluster: {type(exc).__name__}: {exc}"
    except Exception as err:  # cancelled by the scheduler (a lost worker, a closed client)
        if not lost_too:
            raise _Lost() from err
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
    import dask

    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.scheduler.worker-saturation": 1.0}):
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
                from twin_server.campaigns.plugin import Niceness

                client.register_plugin(Niceness(niceness))
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
