"""A child process that records heavily into a history file until it is killed.

``python recorder_child.py DB REPORT INTERVAL``: records SERIES series at RATE
samples/s in total, each series counting 0, 1, 2, ...; after every chunk handed to
``record()`` it appends ``<samples handed> <dropped> <time.monotonic()> <samples
committed>`` to REPORT with an unbuffered write, so the parent knows what was handed
over, when, and what the store had committed by then.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from twin_server.history import HistoryStore

SERIES = 5
RATE = 50_000
CHUNK_PERIOD = 0.005


async def main(db: str, report: str, interval: float) -> None:
    store = await HistoryStore.open(db, batch_interval=interval)
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    per_chunk = int(RATE * CHUNK_PERIOD) // SERIES
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(store.run())
        k = 0
        start = loop.time()
        chunk = 0
        while True:
            now = time.time()
            for _ in range(per_chunk):
                for j in range(SERIES):
                    store.record(("kill", f"v{j}"), now, float(k))
                k += 1
            stats = store.statistics()
            os.write(fd, f"{k * SERIES} {stats.dropped} {time.monotonic():.6f} "
                         f"{stats.written}\n".encode())
            chunk += 1
            await asyncio.sleep(max(0.0, start + chunk * CHUNK_PERIOD - loop.time()))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
