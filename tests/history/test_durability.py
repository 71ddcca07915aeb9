"""Durability: a kill -9 during heavy recording loses at most one batch interval."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from twin_server.history import HistoryStore

CHILD = Path(__file__).with_name("recorder_child.py")
INTERVAL = 0.25
#: beyond the batch interval: the time one batch takes to commit, and scheduling
#: jitter on a shared machine; a sample handed over longer ago than
#: INTERVAL + SLACK before the kill must be on disk
SLACK = 0.25


def report_lines(path: Path) -> list[tuple[int, int, float]]:
    lines = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            lines.append((int(parts[0]), int(parts[1]), float(parts[2])))
    return lines


class TestKill:
    async def test_kill_9_loses_at_most_one_batch_interval(self, tmp_path: Path) -> None:
        """After SIGKILL mid-recording the file checks ok and only the last batch is lost."""
        db, report = tmp_path / "history.db", tmp_path / "report.txt"
        report.touch()
        child = subprocess.Popen([sys.executable, str(CHILD), str(db), str(report),
                                  str(INTERVAL)])
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                lines = report_lines(report)
                if lines and lines[-1][0] >= 150_000:  # about 3 s of recording
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"the recorder child did not get going: {lines[-1:]}")
            killed_at = time.monotonic()
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        lines = report_lines(report)
        assert lines[-1][1] == 0, "the child dropped samples: the test would not be fair"

        with sqlite3.connect(db) as raw:  # a plain SQLite client recovers the WAL too
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        store = await HistoryStore.open(db)
        try:
            assert await store.integrity_check() == "ok"
            stored = 0
            for j in range(5):
                got = (await store.read_raw(("kill", f"v{j}"), 0.0, time.time() + 60)).samples
                # what survived is a prefix: nothing missing in the middle
                assert [s.value for s in got] == [float(k) for k in range(len(got))]
                stored += len(got)
        finally:
            await store.close()
        must_have = max((n for n, _, t in lines if t <= killed_at - INTERVAL - SLACK), default=0)
        handed = lines[-1][0]
        assert must_have <= stored <= handed
        lost_since = next((t for n, _, t in lines if n > stored), killed_at)
        print(f"kill -9: handed {handed}, stored {stored}, lost {handed - stored} samples "
              f"= the last {killed_at - lost_since:.3f} s (batch interval {INTERVAL} s)")
