"""Campaigns on Dask: a real ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, an in-process cluster, the local cluster of the command; the same results on
every one, failed runs recorded among good ones, FMUs shipped to workers that cannot
see the file, and Ctrl-C keeping the finished runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from tests.campaigns.conftest import TANK, write
from tests.models.fmu import build
from tests.processes import children
from twin_server.campaigns.runner import local_cluster, run_campaign
from twin_server.campaigns.spec import load_campaign, plan_runs
from twin_server.campaigns.store import ResultStore
from twin_server.cli import main

ROOT = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")
CLI = [sys.executable, "-m", "twin_server"]


def _env(tmp: Path) -> dict[str, str]:
    """A worker's environment: twin-server importable from this checkout, its own tmp."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``dask scheduler`` and two ``dask worker`` processes (each in a folder and with a
    TMPDIR of its own); the scheduler's address and the workers' folders."""
    yield from _dask(tmp_path_factory.mktemp("dask"), nanny=False)
    assert children() == {}


@pytest.fixture
def nanny_scheduler(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Like ``scheduler``, with Dask's default nannies, which start a worker again
    after it died (as on a real cluster)."""
    yield from _dask(tmp_path, nanny=True)


def _dask(base: Path, *, nanny: bool) -> Iterator[dict[str, Any]]:
    info = base / "scheduler.json"
    procs = [subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(info)], cwd=base, env=_env(base),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    folders = []
    try:
        deadline = time.monotonic() + 60
        while not info.exists():
            assert procs[0].poll() is None, "dask scheduler ended"
            assert time.monotonic() < deadline, "dask scheduler did not start in 60 s"
            time.sleep(0.05)
        for i in range(2):
            folder = base / f"worker{i}"
            folder.mkdir()
            folders.append(folder)
            procs.append(subprocess.Popen(
                [str(DASK), "worker", "--scheduler-file", str(info), "--nthreads", "1",
                 "--nanny" if nanny else "--no-nanny", "--no-dashboard", "--name", f"w{i}"],
                cwd=folder,
                env=_env(folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(info.read_text())["address"]
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield {"address": address, "folders": folders}
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
    assert all(p.poll() is not None for p in procs)


def stored(folder: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The runs (without wall_s, the one figure that is not deterministic) and the
    trajectories of the results in ``folder``."""
    store = ResultStore.open(folder)
    try:
        columns = store.columns("runs")
        keep = [i for i, c in enumerate(columns) if c != "wall_s"]
        runs = [tuple(row[i] for i in keep) for row in store.rows("runs")]
        return runs, store.rows("trajectories")
    finally:
        store.close()


def run_on(client: Client, campaign_file: Path, out: Path) -> Any:
    campaign = load_campaign(campaign_file)
    plans = plan_runs(campaign)
    store = ResultStore.create(out, campaign, plans)
    try:
        return run_campaign(campaign, store, client, plans=plans)
    finally:
        store.close()


class TestDeterminism:
    def test_same_results_in_process_and_on_two_workers(
            self, scheduler: dict[str, Any], tank_campaign: Path, tmp_path: Path) -> None:
        """The tank campaign on one in-process worker thread and on two ``dask worker``
        processes stores the same runs and trajectories, bit for bit."""
        with local_cluster(1, processes=False) as client:
            one = run_on(client, tank_campaign, tmp_path / "one")
        with Client(scheduler["address"], timeout=30) as client:
            two = run_on(client, tank_campaign, tmp_path / "two")
        assert one.counts.ok == two.counts.ok == 8
        runs, trajectories = stored(tmp_path / "one")
        assert (runs, trajectories) == stored(tmp_path / "two")
        assert len(trajectories) == 8 * 21
        # only distributed's one offload pool (a daemon thread for the process's life)
        left = {t.name for t in threading.enumerate()} - {"MainThread", "Dask-Offload_0"}
        assert not {n for n in left if "Dask" in n or "IO loop" in n}, left


class TestFailuresAndFmus:
    def test_fmu_reaches_workers_and_failures_are_recorded(
            self, scheduler: dict[str, Any], lag_campaign: Path, tmp_path: Path) -> None:
        """With the FMU file deleted after loading, the workers run it from the bytes sent
        with the runs (written under their own TMPDIR); the runs whose FMU fails are
        recorded failed with its message, the others finish."""
        campaign = load_campaign(lag_campaign)
        (lag_campaign.parent / "lag2.fmu").unlink()
        plans = plan_runs(campaign)
        store = ResultStore.create(tmp_path / "out", campaign, plans)
        try:
            with Client(scheduler["address"], timeout=30) as client:
                outcome = run_campaign(campaign, store, client, plans=plans)
            statuses = [(r[0], r[1], r[2]) for r in store.rows("runs")]
        finally:
            store.close()
        assert (outcome.counts.ok, outcome.counts.failed) == (2, 2)
        assert [s[1] for s in statuses] == ["ok", "failed", "ok", "failed"]
        assert "lag2 fails on purpose" in statuses[1][2]
        landed = [p for f in scheduler["folders"]
                  for p in f.glob("twin-server-campaign-fmus-*/*.fmu")]
        assert landed, "no worker wrote the FMU under its own TMPDIR"


CRASH = """
[twins.crashing]
connections = ["source.output -> plant.u"]
[twins.crashing.components.source]
model = "constant"
parameters = { value = 1.0 }
[twins.crashing.components.plant]
model = "fmu"
options = { path = "crash2.fmu" }
parameters = { how = 0 }
"""

CRASH_CAMPAIGN = """
[campaign]
config = "crash.toml"
step_size = 0.01
duration = 0.3
[parameters]
"plant.crash_at" = { values = [1e30, 1e30, 0.105, 1e30, 1e30, 1e30] }
[summary."plant.y"]
"""


class TestCrash:
    def test_a_segfaulting_run_fails_alone(
            self, nanny_scheduler: dict[str, Any], tmp_path: Path) -> None:
        """A run whose FMU segfaults kills its worker once: it is recorded failed with a
        message that says so, every other run succeeds, the scheduler gives a task up
        at its first death, and both workers are there again afterwards."""
        fmu = build.build("crash2", tmp_path / "fmu")
        shutil.copy(fmu, tmp_path / "crash2.fmu")
        path = write(tmp_path, {"c.toml": CRASH_CAMPAIGN, "crash.toml": CRASH})
        with Client(nanny_scheduler["address"], timeout=30) as client:
            outcome = run_on(client, path, tmp_path / "out")
            limit = client.run_on_scheduler(_allowed_failures)
            client.wait_for_workers(2, timeout=60)
        assert (outcome.counts.ok, outcome.counts.failed) == (5, 1), outcome
        assert limit == 0
        store = ResultStore.open(tmp_path / "out")
        try:
            rows = {r[0]: r for r in store.rows("runs")}
        finally:
            store.close()
        assert rows[2][1] == "failed"
        assert "worker process died while running it" in rows[2][2]
        assert "segfault" in rows[2][2]


def _allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


class TestCommand:
    def test_run_show_export_on_a_scheduler(
            self, scheduler: dict[str, Any], tank_campaign: Path, tmp_path: Path,
            capsys: pytest.CaptureFixture[str]) -> None:
        """`campaign run --scheduler` stores every run and writes the CSV files; `show`
        summarises them; `export --to` writes the CSV files elsewhere."""
        out = tmp_path / "results"
        status = main(["campaign", "run", str(tank_campaign), "--scheduler",
                       scheduler["address"], "--out", str(out)])
        assert status == 0, capsys.readouterr().err
        assert "8/8 runs, 0 failed" in capsys.readouterr().err
        header = (out / "runs.csv").read_text().splitlines()[0]
        assert header.startswith("run,status,message,ticks,sim_time,wall_s,tank.area,")
        assert main(["campaign", "show", str(out)]) == 0
        shown = capsys.readouterr().out
        assert "finished" in shown and "8 ok, 0 failed" in shown
        assert "tank.level.time_above" in shown
        assert main(["campaign", "export", str(out), "--to", str(tmp_path / "csv")]) == 0
        assert (tmp_path / "csv" / "runs.csv").read_text() == (out / "runs.csv").read_text()

    def test_results_are_not_overwritten(self, tank_campaign: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        """A folder that holds results is refused unless --overwrite."""
        out = tmp_path / "results"
        write(out, {"results.sqlite": ""})
        assert main(["campaign", "run", str(tank_campaign), "--in-process",
                     "--out", str(out)]) == 1
        assert "--overwrite" in capsys.readouterr().err


LONG_CAMPAIGN = """
[campaign]
config = "tank.toml"
session = "tank"
step_size = 0.01
duration = 30.0
[parameters]
"tank.area" = { range = [0.3, 0.9], steps = 200 }
[summary."tank.level"]
"""


class TestLocalCluster:
    def test_ctrl_c_keeps_finished_runs(self, tmp_path: Path) -> None:
        """The command on its local cluster, sent SIGINT after some runs finished: it
        cancels the rest, keeps the finished ones (store and CSV), exits 130 and leaves
        no process behind."""
        campaign = write(tmp_path, {"long.toml": LONG_CAMPAIGN, "tank.toml": TANK})
        out = tmp_path / "results"
        mark = f"campaign-test-{uuid.uuid4().hex}"  # inherited by the cluster's processes
        proc = subprocess.Popen([*CLI, "campaign", "run", str(campaign), "--workers", "1",
                                 "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TWIN_SERVER_TEST_MARK": mark})
        try:
            deadline = time.monotonic() + 60
            while _ok_runs(out) < 2:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no run finished in 60 s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, err
        store = ResultStore.open(out)
        try:
            counts, state = store.counts(), store.meta()["state"]
        finally:
            store.close()
        assert state == "cancelled"
        assert counts.ok >= 2 and counts.cancelled > 0 and counts.pending == 0
        assert counts.ok + counts.failed + counts.cancelled == 200
        assert len((out / "runs.csv").read_text().splitlines()) == 201
        assert "cancelled" in err and "Traceback" not in err
        assert _marked(mark.encode()) == [], "a process of the local cluster outlived it"


def _marked(mark: bytes) -> list[int]:
    """Processes whose environment holds ``mark``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _ok_runs(out: Path) -> int:
    path = out / "results.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM runs WHERE status = 'ok'")
                       .fetchone()[0])
    except sqlite3.OperationalError:  # the tables are being created
        return 0
