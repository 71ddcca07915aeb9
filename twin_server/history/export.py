"""CSV export of a session's history, for a spreadsheet or pandas.

Two layouts:

* ``wide`` (the default): one row per timestamp, one column per variable, the
  layout a spreadsheet plots directly. A session records all its variables at
  the same tick times, so rows line up; a variable without a sample at a row's
  time has an empty cell, and the n-th of several samples one variable has at
  the same time goes to the n-th row of that time.
* ``long``: one row per sample with its path, status and source; nothing is
  lost, and ``pandas.read_csv(...).pivot_table(...)`` reshapes it.

Every row starts with ``time`` (ISO 8601 UTC with microseconds and ``Z``, which
pandas parses with ``parse_dates=["time"]``), ``epoch_s`` (seconds since the
epoch with six decimals: exact, numeric, plots in any spreadsheet) and
``sim_time_s``, the session's simulated time of the samples (empty where the
store does not know it: samples recorded before schema v2). A session run
faster than real time is plotted against ``sim_time_s``; ``sim_start`` and
``sim_end`` keep only the samples whose simulated time lies in
``[sim_start, sim_end)`` (simulated time starts again at 0 on each Reset: the
wall-clock range picks the run). Values are
written in Python's shortest round-trip form, so a float read back is the float
recorded. The export reads through ``read_raw`` page by page: it is exactly
what a HistoryRead of the same range returns, in bounded memory.
"""

from __future__ import annotations

import csv
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO

from twin_server.errors import InvalidArgument
from twin_server.history.records import Sample, TimeArg, to_datetime
from twin_server.history.store import HistoryStore

PAGE = 10_000
LAYOUTS = ("wide", "long")


def format_time(t_us: int) -> tuple[str, str]:
    """(ISO 8601 UTC, epoch seconds with 6 decimals), both exact."""
    iso = to_datetime(t_us).isoformat(timespec="microseconds").replace("+00:00", "Z")
    sign = "-" if t_us < 0 else ""
    seconds, micros = divmod(abs(t_us), 1_000_000)
    return iso, f"{sign}{seconds}.{micros:06d}"


async def _samples(store: HistoryStore, session: str, path: str, start: TimeArg,
                   end: TimeArg) -> AsyncIterator[Sample]:
    token: bytes | None = None
    while True:
        page = await store.read_raw((session, path), start, end, max_values=PAGE,
                                    continuation=token)
        for sample in page.samples:
            yield sample
        token = page.continuation
        if token is None:
            return


def _sim_text(sim_t: float | None) -> str:
    return "" if sim_t is None else repr(sim_t)


async def _in_sim_range(samples: AsyncIterator[Sample], low: float | None,
                        high: float | None) -> AsyncIterator[Sample]:
    async for sample in samples:
        sim_t = sample.sim_t
        if low is not None and (sim_t is None or sim_t < low):
            continue
        if high is not None and (sim_t is None or sim_t >= high):
            continue
        yield sample


async def export_csv(store: HistoryStore, session: str, paths: Sequence[str] | None,
                     start: TimeArg, end: TimeArg, out: TextIO, *,
                     layout: str = "wide", sim_start: float | None = None,
                     sim_end: float | None = None) -> int:
    """Write ``session``'s samples of ``paths`` (None or empty: every recorded one) in
    ``[start, end)`` to ``out`` as CSV (with ``sim_start``/``sim_end``: only those of
    simulated time in ``[sim_start, sim_end)``); return the number of data rows written."""
    if layout not in LAYOUTS:
        raise InvalidArgument(f"CSV layout must be one of {', '.join(LAYOUTS)} "
                              f"(got {layout!r})")
    if start is None or end is None:
        raise InvalidArgument("an export needs a start and an end time")
    for name, bound in (("sim_start", sim_start), ("sim_end", sim_end)):
        if bound is not None and not math.isfinite(bound):
            raise InvalidArgument(f"{name} must be a finite number of seconds (got {bound!r})")
    if not paths:
        paths = [info.path for info in await store.list_series(session)]
        if not paths:
            raise InvalidArgument(f"session {session!r} has no recorded history in "
                                  f"{store.path}")
    paths = list(dict.fromkeys(paths))
    writer = csv.writer(out, lineterminator="\n")
    rows = 0

    def samples(path: str) -> AsyncIterator[Sample]:
        found = _samples(store, session, path, start, end)
        if sim_start is None and sim_end is None:
            return found
        return _in_sim_range(found, sim_start, sim_end)

    if layout == "long":
        writer.writerow(["time", "epoch_s", "sim_time_s", "path", "value", "status", "source"])
        for path in paths:
            async for s in samples(path):
                writer.writerow([*format_time(s.t_us), _sim_text(s.sim_t), path, s.value,
                                 s.status, s.source])
                rows += 1
        return rows

    writer.writerow(["time", "epoch_s", "sim_time_s", *paths])
    streams = [samples(path).__aiter__() for path in paths]
    heads: list[Sample | None] = [await anext(s, None) for s in streams]
    while True:
        times = [h.t_us for h in heads if h is not None]
        if not times:
            return rows
        now = min(times)
        row: list[Any] = [*format_time(now), None]
        sim_t: float | None = None
        for i, head in enumerate(heads):
            if head is not None and head.t_us == now:
                row.append(head.value)
                if sim_t is None:
                    sim_t = head.sim_t  # (one record's samples share it)
                heads[i] = await anext(streams[i], None)
            else:
                row.append(None)
        row[2] = _sim_text(sim_t)
        writer.writerow(row)
        rows += 1
