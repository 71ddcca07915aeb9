"""Campaigns (issue #19): the 1,000-run sweep of the demo tank (60 simulated seconds
each, 6,000 ticks of 0.01 s) on a local Dask cluster of 1 worker process and of one per
core, beside the same runs executed in a plain loop in this process (``run.execute``,
no Dask): the speed-up of more workers (target: 0.8 x the cores) and Dask's overhead
per run. Cluster start-up is left out (paid once per campaign). ``BENCH_QUICK=1``
runs 120 runs of 20 s.

The machine is shared: the loop runs (on the first ``LOOP_RUNS`` runs) before and
after the clusters and its mean is the baseline. The workers run at normal priority
here (the command's run at nice 10, to leave live twins the CPU): on a loaded machine
a niced worker measures the load, not Dask.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.common import TANK_TWIN
from twin_server.campaigns.run import execute, spec_of
from twin_server.campaigns.runner import local_cluster, run_campaign
from twin_server.campaigns.spec import load_campaign, plan_runs
from twin_server.campaigns.store import ResultStore

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RUNS = 120 if QUICK else 1000
DURATION = 20.0 if QUICK else 60.0  # simulated seconds per run, at 0.01 s
LOOP_RUNS = 60 if QUICK else 100  # the plain loop's share, each time

CAMPAIGN = f"""
[campaign]
config = "tank.toml"
step_size = 0.01
duration = {DURATION}
[parameters]
"tank.area" = {{ range = [0.3, 0.9], steps = {RUNS} }}
[trajectories]
interval = 1.0
variables = ["tank.level"]
[summary."tank.level"]
above = 1.2
"""


def _loop(campaign: Any) -> float:
    """Runs per second of the plain loop (this process, no Dask)."""
    spec, plans = spec_of(campaign), plan_runs(campaign)[:LOOP_RUNS]
    started = time.perf_counter()
    for plan in plans:
        assert execute(spec, plan).ok
    return len(plans) / (time.perf_counter() - started)


def _cluster(campaign: Any, workers: int, out: Path) -> float:
    """Runs per second on a local cluster of ``workers`` processes (started beforehand)."""
    plans = plan_runs(campaign)
    with local_cluster(workers, niceness=0) as client:
        client.wait_for_workers(workers)
        store = ResultStore.create(out, campaign, plans)
        try:
            outcome = run_campaign(campaign, store, client, plans=plans)
        finally:
            store.close()
    assert outcome.counts.ok == len(plans)
    return len(plans) / outcome.elapsed


def run() -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-campaigns-") as tmp:
        folder = Path(tmp)
        (folder / "tank.toml").write_text(TANK_TWIN)
        (folder / "sweep.toml").write_text(CAMPAIGN)
        campaign = load_campaign(folder / "sweep.toml")
        before = _loop(campaign)
        one = _cluster(campaign, 1, folder / "one")
        many = _cluster(campaign, cores, folder / "many")
        after = _loop(campaign)
    loop = (before + after) / 2
    overhead_ms = (1 / one - 1 / loop) * 1000
    return [
        {"figure": f"campaign runs/s, 1 worker ({RUNS} tank runs of {DURATION:g} s)",
         "value": one, "unit": "runs/s", "baseline": "plain loop in-process",
         "baseline_value": loop, "target": ">= 0.8x baseline", "higher_is_better": True},
        {"figure": f"campaign runs/s, {cores} workers", "value": many, "unit": "runs/s",
         "baseline": "1 worker", "baseline_value": one,
         "target": f">= {0.8 * cores:g}x baseline", "higher_is_better": True},
        {"figure": "Dask overhead per run (1 worker vs plain loop)", "value": overhead_ms,
         "unit": "ms", "baseline": "", "baseline_value": None, "target": "",
         "higher_is_better": False},
    ]
