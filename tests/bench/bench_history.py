"""History store: sustained recording rate and a read of 100,000 samples, each beside
asyncua's own ``HistorySQLite`` doing the same work in the same run.

asyncua's store commits once per sample, so it records a reduced count and its rate
is scaled (samples / elapsed); it fails on string NodeIds, so it gets numeric ones.
For the read, its table is filled in one transaction with the rows its own
``save_node_value`` would write (recording 100,000 through it takes minutes), then
read through its ``read_node_history``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.server.history_sql import HistorySQLite
from asyncua.ua.ua_binary import variant_to_binary

from twin_server.history import HistoryStore

T0 = 1_700_000_000.0
RECORD_SAMPLES = 1_000_000
SERIES = 100
CHUNK = 10_000  # samples handed to record() between yields, like a busy tick loop
READ_SAMPLES = 100_000
BASELINE_RECORD_SAMPLES = 3_000


async def _record_ours(path: Path) -> float:
    store = await HistoryStore.open(path, max_queue=RECORD_SAMPLES)
    names = [("bench", f"Components.c{j}.Outputs.y") for j in range(SERIES)]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(store.run())
        await asyncio.sleep(0)
        started = time.perf_counter()
        k = 0
        while k < RECORD_SAMPLES:
            for i in range(k, k + CHUNK):
                store.record(names[i % SERIES], T0 + (i // SERIES) * 1e-3, i * 0.5)
            k += CHUNK
            await asyncio.sleep(0)
        await store.flush()
        elapsed = time.perf_counter() - started
        stats = store.statistics()
        await store.close()
    assert stats.dropped == 0 and stats.written == RECORD_SAMPLES, stats
    return RECORD_SAMPLES / elapsed


async def _record_asyncua(path: Path) -> float:
    hist = HistorySQLite(str(path))
    await hist.init()
    nodes = [ua.NodeId(1000 + j, 2) for j in range(SERIES)]
    for node in nodes:
        await hist.new_historized_node(node, None, 0)
    base = datetime.fromtimestamp(T0, UTC).replace(tzinfo=None)  # asyncua stores naive UTC
    started = time.perf_counter()
    for i in range(BASELINE_RECORD_SAMPLES):
        t = base + timedelta(milliseconds=i // SERIES)
        dv = ua.DataValue(ua.Variant(i * 0.5, ua.VariantType.Double), SourceTimestamp=t,
                          ServerTimestamp=t)
        await hist.save_node_value(nodes[i % SERIES], dv)
    elapsed = time.perf_counter() - started
    await hist.stop()
    return BASELINE_RECORD_SAMPLES / elapsed


async def _read_ours(path: Path) -> tuple[float, float]:
    store = await HistoryStore.open(path, max_queue=READ_SAMPLES)
    for i in range(READ_SAMPLES):
        store.record("bench/Components.c.Outputs.y", T0 + i * 1e-3, i * 0.5)
    await store.flush()
    end = T0 + READ_SAMPLES * 1e-3
    whole = paged = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        result = await store.read_raw("bench/Components.c.Outputs.y", T0, end)
        whole = min(whole, time.perf_counter() - started)
        assert len(result.samples) == READ_SAMPLES
        started = time.perf_counter()
        token, count = None, 0
        while True:
            page = await store.read_raw("bench/Components.c.Outputs.y", T0, end,
                                        max_values=10_000, continuation=token)
            count += len(page.samples)
            token = page.continuation
            if token is None:
                break
        paged = min(paged, time.perf_counter() - started)
        assert count == READ_SAMPLES
    await store.close()
    return whole, paged


async def _read_asyncua(path: Path) -> float:
    hist = HistorySQLite(str(path), max_history_data_response_size=READ_SAMPLES + 1)
    await hist.init()
    node = ua.NodeId(1000, 2)
    await hist.new_historized_node(node, None, 0)
    base = datetime.fromtimestamp(T0, UTC).replace(tzinfo=None)  # asyncua stores naive UTC
    rows = []
    for i in range(READ_SAMPLES):
        t = base + timedelta(milliseconds=i)
        variant = ua.Variant(i * 0.5, ua.VariantType.Double)
        rows.append((t, t, 0, str(variant.Value), variant.VariantType.name,
                     sqlite3.Binary(variant_to_binary(variant))))
    table = hist._get_table_name(node)
    await hist._db.executemany(f'INSERT INTO "{table}" VALUES (NULL, ?, ?, ?, ?, ?, ?)', rows)
    await hist._db.commit()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        values, _cont = await hist.read_node_history(
            node, base, base + timedelta(milliseconds=READ_SAMPLES), 0)
        best = min(best, time.perf_counter() - started)
        assert len(values) == READ_SAMPLES, len(values)
    await hist.stop()
    return best


async def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        ours_rate = await _record_ours(here / "ours-record.db")
        their_rate = await _record_asyncua(here / "asyncua-record.db")
        ours_read, ours_paged = await _read_ours(here / "ours-read.db")
        their_read = await _read_asyncua(here / "asyncua-read.db")
    return [
        {"figure": f"history recording, sustained ({RECORD_SAMPLES:,} samples, "
                   f"{SERIES} series)", "value": ours_rate, "unit": "samples/s",
         "baseline": f"asyncua HistorySQLite ({BASELINE_RECORD_SAMPLES:,} samples, scaled)",
         "baseline_value": their_rate, "target": ">= 200,000 samples/s",
         "higher_is_better": True},
        {"figure": f"history read of {READ_SAMPLES:,} samples, one request",
         "value": ours_read, "unit": "s", "baseline": "asyncua HistorySQLite read_node_history",
         "baseline_value": their_read, "target": "< 0.5 s", "higher_is_better": False},
        {"figure": f"history read of {READ_SAMPLES:,} samples, pages of 10,000",
         "value": ours_paged, "unit": "s", "baseline": "asyncua HistorySQLite read_node_history",
         "baseline_value": their_read, "target": "< 0.5 s", "higher_is_better": False},
    ]
