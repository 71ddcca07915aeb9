"""``twin-server campaign show DIR``: a campaign's results in a few lines of text.

The campaign's state and counts; for each varied parameter the range it took; for each
figure its minimum, mean and maximum over the successful runs, and the run where each
extreme occurred (the first, on a tie); with a scenario, how many runs gave each
verdict and each check's verdicts; the failed runs with their messages (the first
``FAILED_SHOWN``).
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any

from twin_server.campaigns.store import FIXED, ResultStore

FAILED_SHOWN = 10


def summary(folder: str | Path) -> str:
    """The summary of the results in ``folder`` (FileNotFoundError if there are none)."""
    store = ResultStore.open(folder)
    try:
        meta = store.meta()
        counts = store.counts()
        columns = store.columns("runs")
        rows = store.rows("runs")
    finally:
        store.close()
    params, figures, verdicts = kinds(meta, columns)
    at = {c: i for i, c in enumerate(columns)}
    ok = [r for r in rows if r[at["status"]] == "ok"]
    scenario = meta.get("scenario")
    each = (f"scenario {scenario}" if scenario else
            f"{float(meta.get('duration', 'nan')):g} s")
    lines = [
        f"campaign {meta.get('name')!r} ({meta.get('file')}): {meta.get('state')}",
        f"  {counts.total} runs of {each} "
        f"(step {float(meta.get('step_size', 'nan')):g} s, seed {meta.get('seed')}): "
        f"{counts.ok} ok, {counts.failed} failed, {counts.cancelled} cancelled, "
        f"{counts.pending} pending",
    ]
    if params:
        lines.append("parameters:")
        width = max(len(p) for p in params)
        for p in params:
            values = sorted({r[at[p]] for r in rows}, key=_order)
            shown = (", ".join(_num(v) for v in values) if len(values) <= 6 else
                     f"{len(values)} values in [{_num(values[0])}, {_num(values[-1])}]")
            lines.append(f"  {p:<{width}}  {shown}")
    if figures and ok:
        lines.append(f"figures over the {len(ok)} ok runs:")
        width = max(len(f) for f in figures)
        lines.append(f"  {'':<{width}}  {'min':>12} {'(run)':>6}  {'mean':>12}  "
                     f"{'max':>12} {'(run)':>6}")
        for f in figures:
            pairs = [(r[at[f]], r[at["run"]]) for r in ok if r[at[f]] is not None]
            if not pairs:
                continue
            low = min(pairs, key=lambda p: p[0])
            high = max(pairs, key=lambda p: p[0])
            mean = math.fsum(p[0] for p in pairs) / len(pairs)
            lines.append(f"  {f:<{width}}  {_num(low[0]):>12} {low[1]:>6}  {_num(mean):>12}  "
                         f"{_num(high[0]):>12} {high[1]:>6}")
    if verdicts and ok:
        lines.append(f"scenario verdicts over the {len(ok)} ok runs:")
        width = max(len(v) for v in verdicts if v.startswith(("scenario.verdict", "check.")))
        for v in verdicts:
            if v == "scenario.verdict" or v.startswith("check."):
                tally = collections.Counter(str(r[at[v]]) for r in ok)
                shown = ", ".join(f"{n} {word}" for word, n in sorted(tally.items()))
                lines.append(f"  {v:<{width}}  {shown}")
    failed = [r for r in rows if r[at["status"]] == "failed"]
    if failed:
        lines.append("failed runs:")
        for r in failed[:FAILED_SHOWN]:
            lines.append(f"  run {r[at['run']]}: {r[at['message']]}")
        if len(failed) > FAILED_SHOWN:
            lines.append(f"  ... and {len(failed) - FAILED_SHOWN} more (runs.csv has them all)")
    return "\n".join(lines) + "\n"


def kinds(meta: dict[str, str], columns: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The parameter, figure and verdict columns of a store (its ``campaign`` table
    lists them; a store written before it did: by their dots)."""
    if "parameters" in meta:
        return (json.loads(meta["parameters"]), json.loads(meta["figures"]),
                json.loads(meta.get("verdicts", "[]")))
    names = [c for c in columns if c not in FIXED]
    return ([c for c in names if c.count(".") == 1], [c for c in names if c.count(".") >= 2],
            [])


def _order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _num(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
