"""A campaign's results: one SQLite file (stdlib ``sqlite3``), and CSV files exported
from it for people who open them directly (a spreadsheet, ``pandas.read_csv``).

Why SQLite and CSV: SQLite is written run by run as results arrive, so Ctrl-C or a
crash keeps every finished run, and it needs nothing outside Python's standard library;
CSV opens everywhere. (Parquet would need pyarrow, a large native dependency, for files
that at a few thousand runs are small anyway; ``pandas.read_sql`` reads the SQLite file
too.) Floats are written as ``repr`` in the CSV, which reads back bit for bit.

``DIR/results.sqlite``:

* ``campaign(key, value)``: name, campaign file and its text, state (``running``,
  ``finished``, ``cancelled``), run count, seed, step size, duration;
* ``runs``: one row per run: ``run``, ``status`` (``pending``, ``ok``, ``failed``,
  ``cancelled``), ``message``, ``ticks``, ``sim_time``, ``wall_s``, then one column per
  varied parameter (``tank.area``), one per figure (``tank.level.max``) and, with a
  scenario, its verdict columns (``scenario.verdict``, ``scenario.passed``, ...,
  ``check.<name>``); the campaign table's ``parameters``, ``figures`` and ``verdicts``
  list them (JSON);
* ``trajectories``: ``run``, ``time``, then one column per kept variable.

``DIR/runs.csv`` and ``DIR/trajectories.csv``: the same tables (``export``).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin_server.campaigns.run import RunResult
from twin_server.campaigns.spec import Campaign, RunPlan

DATABASE = "results.sqlite"
RUNS_CSV = "runs.csv"
TRAJECTORIES_CSV = "trajectories.csv"
#: the columns every run has, before its parameters and figures
FIXED = ("run", "status", "message", "ticks", "sim_time", "wall_s")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ResultsExist(Exception):
    """The results folder already holds a campaign's results."""


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    ok: int
    failed: int
    pending: int
    cancelled: int


class ResultStore:
    """The SQLite results of one campaign (module docstring). Not thread-safe: one writer."""

    def __init__(self, folder: Path, connection: sqlite3.Connection) -> None:
        self.folder = folder
        self._db = connection

    @classmethod
    def create(cls, folder: str | Path, campaign: Campaign, plans: Sequence[RunPlan], *,
               overwrite: bool = False) -> ResultStore:
        """A new store in ``folder`` with every planned run pending; ResultsExist if the
        folder holds results already (unless ``overwrite``)."""
        folder = Path(folder)
        cls.check_free(folder, overwrite=overwrite)
        for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", RUNS_CSV,
                     TRAJECTORIES_CSV):
            (folder / name).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(folder / DATABASE)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        store = cls(folder, db)
        params, figures = campaign.parameter_columns(), campaign.figure_columns()
        verdicts = campaign.verdict_columns()
        with db:
            db.execute("CREATE TABLE campaign (key TEXT PRIMARY KEY, value TEXT)")
            columns = ", ".join([
                "run INTEGER PRIMARY KEY", "status TEXT NOT NULL", "message TEXT",
                "ticks INTEGER", "sim_time REAL", "wall_s REAL",
                *(f"{_q(c)}" for c in params), *(f"{_q(c)} REAL" for c in figures),
                *(f"{_q(c)} {_verdict_type(c)}" for c in verdicts)])
            db.execute(f"CREATE TABLE runs ({columns})")
            kept = ", ".join(f"{_q(name)} REAL" for name, _ in campaign.kept)
            db.execute("CREATE TABLE trajectories (run INTEGER NOT NULL, time REAL NOT NULL"
                       + (f", {kept}" if kept else "") + ", PRIMARY KEY (run, time))")
            meta = {"name": campaign.name, "file": campaign.file, "text": campaign.text,
                    "state": "running", "runs": str(len(plans)), "seed": str(campaign.seed),
                    "step_size": repr(campaign.step_size), "duration": repr(campaign.duration),
                    "scenario": campaign.scenario or "",
                    "parameters": json.dumps(params), "figures": json.dumps(figures),
                    "verdicts": json.dumps(verdicts)}
            db.executemany("INSERT INTO campaign VALUES (?, ?)", meta.items())
            marks = ", ".join("?" * (2 + len(params)))
            names = ", ".join(["run", "status", *(_q(c) for c in params)])
            db.executemany(f"INSERT INTO runs ({names}) VALUES ({marks})",
                           ((p.index, "pending", *p.values) for p in plans))
        return store

    @staticmethod
    def check_free(folder: str | Path, *, overwrite: bool = False) -> None:
        """ResultsExist if ``folder`` holds a campaign's results (and not ``overwrite``)."""
        if (Path(folder) / DATABASE).exists() and not overwrite:
            raise ResultsExist(
                f"{str(folder)!r} already holds a campaign's results ({DATABASE}); "
                "choose another folder with --out, or pass --overwrite to replace them")

    @classmethod
    def open(cls, folder: str | Path) -> ResultStore:
        """The store in ``folder``; FileNotFoundError if there is none."""
        folder = Path(folder)
        path = folder / DATABASE
        if not path.is_file():
            raise FileNotFoundError(f"no campaign results in {str(folder)!r} (no {DATABASE})")
        return cls(folder, sqlite3.connect(path))

    def close(self) -> None:
        self._db.close()

    # -- writing ----------------------------------------------------------------------

    def record(self, result: RunResult) -> None:
        """Store one run's result (its row and its trajectory), in one transaction."""
        db = self._db
        with db:
            values: dict[str, Any] = {
                "status": "ok" if result.ok else "failed", "message": result.message,
                "ticks": result.ticks, "sim_time": result.sim_time, "wall_s": result.wall_s,
                **result.figures, **result.verdicts}
            sets = ", ".join(f"{_q(k)} = ?" for k in values)
            db.execute(f"UPDATE runs SET {sets} WHERE run = ?", (*values.values(), result.index))
            db.execute("DELETE FROM trajectories WHERE run = ?", (result.index,))
            if result.times:
                names = list(result.trajectories)
                cols = ", ".join(["run", "time", *(_q(n) for n in names)])
                marks = ", ".join("?" * (2 + len(names)))
                rows = zip(*(result.trajectories[n] for n in names), strict=True) \
                    if names else ((),) * len(result.times)
                db.executemany(f"INSERT INTO trajectories ({cols}) VALUES ({marks})",
                               ((result.index, t, *row)
                                for t, row in zip(result.times, rows, strict=False)))

    def record_failure(self, index: int, message: str) -> None:
        """A run that gave no result at all (its worker died, the task was lost)."""
        with self._db:
            self._db.execute("UPDATE runs SET status = 'failed', message = ? WHERE run = ?",
                             (message, index))

    def finish(self, state: str) -> None:
        """End the campaign as ``state`` (``finished`` or ``cancelled``): runs still
        pending become ``cancelled``."""
        with self._db:
            if state != "finished":
                self._db.execute("UPDATE runs SET status = 'cancelled' "
                                 "WHERE status = 'pending'")
            self._db.execute("UPDATE campaign SET value = ? WHERE key = 'state'", (state,))

    # -- reading ----------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM campaign").fetchall())

    def counts(self) -> Counts:
        found = dict(self._db.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        return Counts(sum(found.values()), found.get("ok", 0), found.get("failed", 0),
                      found.get("pending", 0), found.get("cancelled", 0))

    def columns(self, table: str) -> list[str]:
        return [row[1] for row in self._db.execute(f"PRAGMA table_info({_q(table)})")]

    def rows(self, table: str = "runs") -> list[tuple[Any, ...]]:
        order = "run" if table == "runs" else "run, time"
        return self._db.execute(f"SELECT * FROM {_q(table)} ORDER BY {order}").fetchall()

    def export(self, folder: str | Path | None = None) -> tuple[Path, Path]:
        """Write ``runs.csv`` and ``trajectories.csv`` (to ``folder``, else the store's)."""
        target = Path(folder) if folder is not None else self.folder
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for table, name in (("runs", RUNS_CSV), ("trajectories", TRAJECTORIES_CSV)):
            path = target / name
            _write_csv(path, self.columns(table), self.rows(table))
            paths.append(path)
        return paths[0], paths[1]


def _verdict_type(column: str) -> str:
    """INTEGER for a verdict count, TEXT for a verdict."""
    return "TEXT" if column == "scenario.verdict" or column.startswith("check.") else "INTEGER"


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    tmp = path.with_suffix(".csv.part")
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                             for v in row])
    tmp.replace(path)
