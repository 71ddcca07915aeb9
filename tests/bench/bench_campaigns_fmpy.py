"""Campaigns beside FMPy (issue #19): one parameter sweep of the lag2 test FMU (FMI 2.0
co-simulation, built from ``tests/models/fmu/src``; ``T dy/dt = k u - y`` with u = 1)
run three ways on the same number of worker processes (one per core):

* **campaign**: a twin-server campaign (the FMU as a twin's only component) on a local
  Dask cluster (``run_campaign``: results stored in SQLite as they arrive);
* **FMPy example**: FMPy's documented way, its ``fmpy/examples/parameter_variation.py``:
  ``dask.bag.from_sequence(indices, npartitions=10).map_partitions(simulate_fmu, ...)``
  with the example's worker (one ``FMU2Slave`` per chunk, ``reset`` between runs, a
  ``doStep`` loop reading the output each step), on dask's multiprocessing scheduler;
* **FMPy simulate_fmu**: ``dask.bag.from_sequence(...).map(fmpy.simulate_fmu wrapper)``,
  one ``simulate_fmu`` call per run (the FMU unpacked once, its model description read
  once per process).

The sweep: ``lag.T`` (the time constant) over ``RUNS`` values in [0.2, 2.0], each run
``DURATION`` simulated seconds in steps of 0.01 s (communication step = output interval
of ``simulate_fmu``), the output ``y`` read at every step for its final value, min, max
and mean, and kept every 1 s (61 samples) as a trajectory. Each way returns per run the
final and the mean of ``y``; the bench checks that all three agree within ``TOLERANCE``
(relative): the same binary takes the same steps, so the example's loop matches the
campaign bit for bit, and ``simulate_fmu`` (which computes each step as the difference of
two communication points) to rounding. Start-up (the cluster, the process pool, the
imports in the workers) is left out: each way runs a small warm-up sweep first.
``BENCH_QUICK=1`` runs 120 runs of 20 s.

What the ratio measures: a campaign run is a twin session, which per tick sets the
FMU's input, steps it and reads all three of its outputs (y, steps, above) into the
session's graph, where the example's loop sets the input once and reads y alone. So
the campaign runs at about the tick rate ``bench_fmu`` measures for a session, the
example's loop at about twice that: its loop is about the least a sweep of an FMU
costs, and Dask's share of either is small (``bench_campaigns``: a few ms a run). The
target (at least 0.25x the example) is a guard against a
regression of the per-tick cost of campaign runs, not a goal the session is tuned to.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tests.models.fmu import build
from twin_server.campaigns.runner import local_cluster, run_campaign
from twin_server.campaigns.spec import load_campaign, plan_runs
from twin_server.campaigns.store import ResultStore

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RUNS = 120 if QUICK else 1000
DURATION = 20.0 if QUICK else 60.0  # simulated seconds per run
STEP = 0.01  # communication step (s)
INTERVAL = 1.0  # the kept trajectory's interval (s)
T_RANGE = (0.2, 2.0)
CHUNKS = 10  # the example's n_chunks
WARMUP = 4  # runs of the warm-up sweep, each way
TOLERANCE = 1e-9  # relative, on the final and the mean of y

LAG = """
[twins.lag]
[twins.lag.components.lag]
model = "fmu"
options = { path = "lag2.fmu" }
inputs = { u = 1.0 }
"""


def _campaign_text(runs: int, duration: float) -> str:
    return f"""
[campaign]
config = "lag.toml"
step_size = {STEP}
duration = {duration}
[parameters]
"lag.T" = {{ range = [{T_RANGE[0]}, {T_RANGE[1]}], steps = {runs} }}
[trajectories]
interval = {INTERVAL}
variables = ["lag.y"]
[summary."lag.y"]
"""


#: per run: its figures of y (final, mean, min, max)
Figures = dict[int, tuple[float, ...]]
#: what an FMPy worker returns per run: its index, figures of y and kept trajectory
Row = tuple[int, tuple[float, ...], list[float]]


def _prepare(folder: Path, name: str, runs: int, duration: float) -> Any:
    """A campaign folder ``folder/name`` (the twin, the FMU, the sweep); its Campaign."""
    work = folder / name
    work.mkdir()
    shutil.copy(folder / "lag2.fmu", work / "lag2.fmu")
    (work / "lag.toml").write_text(LAG)
    (work / "sweep.toml").write_text(_campaign_text(runs, duration))
    return load_campaign(work / "sweep.toml")


def _values(campaign: Any) -> list[float]:
    """The swept T values by run, as the campaign plans them (its ``range``)."""
    return [float(p.values[0]) for p in sorted(plan_runs(campaign), key=lambda p: p.index)]


# -- (a) the campaign ------------------------------------------------------------------


def _campaign(client: Any, campaign: Any) -> tuple[float, Figures]:
    """Runs per second of ``campaign`` on ``client``'s cluster, and its figures of y
    per run."""
    plans = plan_runs(campaign)
    runs = len(plans)
    store = ResultStore.create(Path(campaign.file).parent / "results", campaign, plans)
    try:
        outcome = run_campaign(campaign, store, client, plans=plans)
        columns = store.columns("runs")
        run = columns.index("run")
        at = [columns.index(f"lag.y.{f}") for f in ("final", "mean", "min", "max")]
        found = {int(row[run]): tuple(float(row[i]) for i in at) for row in store.rows("runs")}
    finally:
        store.close()
    assert outcome.counts.ok == runs, f"{runs - outcome.counts.ok} campaign runs failed"
    return runs / outcome.elapsed, found


# -- (b) FMPy's way: its parameter_variation example -------------------------------------


def simulate_fmu(indices: Sequence[int], fmu_args: dict[str, str], start_vrs: list[int],
                 result_vrs: list[int], values: Sequence[float],
                 duration: float) -> list[Row]:
    """The example's worker (``parameter_variation.simulate_fmu``), for this sweep: one
    FMU instance per chunk, reset between runs, ``doStep`` reading y after each step.
    It counts steps rather than adding ``step_size`` to a float time until ``stop_time``
    (which may take one step more), so that it takes the campaign's steps; it frees the
    instance and the library as the example does."""
    import fmpy
    from fmpy.fmi2 import FMU2Slave

    ticks = round(duration / STEP)
    zipped = []
    fmu = FMU2Slave(**fmu_args)
    fmu.instantiate()
    for i in indices:
        fmu.reset()
        fmu.setupExperiment()
        fmu.setReal(vr=start_vrs, value=[values[i], 1.0])  # T and the input u
        fmu.enterInitializationMode()
        fmu.exitInitializationMode()
        ys = [fmu.getReal(result_vrs)[0]]
        for n in range(ticks):
            fmu.doStep(currentCommunicationPoint=n * STEP, communicationStepSize=STEP)
            ys.append(fmu.getReal(result_vrs)[0])
        zipped.append(_row(i, ys))
    fmu.terminate()
    fmu.fmi2FreeInstance(fmu.component)
    fmpy.freeLibrary(fmu.dll._handle)
    return zipped


def _row(i: int, ys: Sequence[float]) -> Row:
    """A run's figures of y as the campaign computes them (final, mean as ``math.fsum``
    of the N+1 samples / (N+1), min, max) and its trajectory kept every ``INTERVAL``."""
    figures = (ys[-1], math.fsum(ys) / len(ys), min(ys), max(ys))
    return i, figures, list(ys[::round(INTERVAL / STEP)])


def _example(pool: ProcessPoolExecutor, workers: int, unzipdir: str,
             values: Sequence[float], duration: float) -> tuple[float, Figures]:
    """Runs per second of the example's way on ``pool``, and the figures of y."""
    from dask import bag
    from fmpy import read_model_description

    md = read_model_description(unzipdir)
    vrs = {v.name: v.valueReference for v in md.modelVariables}
    fmu_args = {"guid": md.guid, "modelIdentifier": md.coSimulation.modelIdentifier,
                "unzipDirectory": unzipdir}
    runs = len(values)
    started = time.perf_counter()
    b = bag.from_sequence(range(runs), npartitions=min(CHUNKS, runs))
    results = b.map_partitions(simulate_fmu, fmu_args, [vrs["T"], vrs["u"]], [vrs["y"]],
                               list(values), duration).compute(
        scheduler="processes", num_workers=workers, pool=pool)
    elapsed = time.perf_counter() - started
    return runs / elapsed, {i: figures for i, figures, _ in results}


# -- (c) FMPy's simulate_fmu per run -----------------------------------------------------

#: the model description per unpacked FMU, read once per worker process
_descriptions: dict[str, Any] = {}


def simulate_one(i: int, unzipdir: str, value: float, duration: float) -> Row:
    """One run with ``fmpy.simulate_fmu`` (output interval = the step)."""
    from fmpy import read_model_description
    from fmpy import simulate_fmu as simulate

    md = _descriptions.get(unzipdir)
    if md is None:
        md = _descriptions[unzipdir] = read_model_description(unzipdir)
    result = simulate(unzipdir, stop_time=duration, output_interval=STEP,
                      start_values={"T": value, "u": 1.0}, output=["y"],
                      model_description=md)
    return _row(i, [float(y) for y in result["y"]])


def _simulate(pool: ProcessPoolExecutor, workers: int, unzipdir: str,
              values: Sequence[float], duration: float) -> tuple[float, Figures]:
    """Runs per second of one ``simulate_fmu`` per run on ``pool``, and the figures of y."""
    from dask import bag

    runs, swept = len(values), list(values)
    started = time.perf_counter()
    b = bag.from_sequence(range(runs), npartitions=min(CHUNKS, runs))
    results = b.map(lambda i: simulate_one(i, unzipdir, swept[i], duration)).compute(
        scheduler="processes", num_workers=workers, pool=pool)
    elapsed = time.perf_counter() - started
    return runs / elapsed, {i: figures for i, figures, _ in results}


def _deviation(a: Figures, b: Figures) -> float:
    """The largest relative difference of a figure of y over the runs."""
    assert a.keys() == b.keys(), f"the ways ran different runs: {sorted(a.keys() ^ b.keys())}"
    return max(abs(x - y) / max(abs(x), abs(y), 1e-300)
               for run in a for x, y in zip(a[run], b[run], strict=True))


def run() -> list[dict[str, Any]]:
    import fmpy

    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-campaigns-fmpy-") as tmp:
        folder = Path(tmp)
        fmu = build.build("lag2", folder / "fmu")
        shutil.copy(fmu, folder / "lag2.fmu")
        unzipdir = str(fmpy.extract(str(fmu), unzipdir=str(folder / "unzipped")))
        warmup = _prepare(folder, "warmup", WARMUP, 1.0)
        sweep = _prepare(folder, "sweep", RUNS, DURATION)
        values = _values(sweep)
        with local_cluster(workers, niceness=0) as client:
            client.wait_for_workers(workers)
            _campaign(client, warmup)
            campaign, by_campaign = _campaign(client, sweep)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                 ) as pool:
            _example(pool, workers, unzipdir, _values(warmup), 1.0)
            _simulate(pool, workers, unzipdir, _values(warmup), 1.0)
            example, by_example = _example(pool, workers, unzipdir, values, DURATION)
            simulated, by_simulate = _simulate(pool, workers, unzipdir, values, DURATION)
    off_example = _deviation(by_campaign, by_example)
    off_simulate = _deviation(by_campaign, by_simulate)
    # the exact final y: k u + (y0 - k u) exp(-t/T), k = 2, u = 1, y0 = 0.5
    off_exact = max(abs(by_campaign[i][0] - (2.0 - 1.5 * math.exp(-DURATION / t)))
                    / by_campaign[i][0] for i, t in enumerate(values))
    for name, off in (("the FMPy example's", off_example), ("simulate_fmu's", off_simulate),
                      ("the exact solution's", off_exact)):
        assert off <= TOLERANCE, (
            f"the campaign's figures of y differ from {name} by {off:.3g} (relative), more "
            f"than {TOLERANCE:g}: the ways did not simulate the same runs")
    return [
        {"figure": f"campaign runs/s ({RUNS} lag2 FMU runs of {DURATION:g} s, "
                   f"{workers} workers)", "value": campaign, "unit": "runs/s",
         "baseline": "FMPy parameter_variation example (dask.bag)",
         "baseline_value": example, "target": ">= 0.25x baseline", "higher_is_better": True},
        {"figure": "campaign runs/s vs one simulate_fmu per run", "value": campaign,
         "unit": "runs/s", "baseline": "dask.bag map over fmpy.simulate_fmu",
         "baseline_value": simulated, "target": "", "higher_is_better": True},
        {"figure": "y final/mean/min/max: campaign vs FMPy example (relative)",
         "value": off_example, "unit": "", "baseline": "", "baseline_value": None,
         "target": f"<= {TOLERANCE:g}", "higher_is_better": False},
        {"figure": "y final/mean/min/max: campaign vs simulate_fmu (relative)",
         "value": off_simulate, "unit": "", "baseline": "", "baseline_value": None,
         "target": f"<= {TOLERANCE:g}", "higher_is_better": False},
    ]
