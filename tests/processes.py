"""The test process's own children, read from /proc: the checks that nothing a test
started outlives it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def children() -> dict[int, str]:
    """Live children of this process (pid: command line), but multiprocessing's
    resource tracker (it lives as long as the process, by design)."""
    me = os.getpid()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me and fields[0] != "Z" and b"resource_tracker" not in cmdline:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def left_behind(before: set[int], grace: float = 5.0) -> dict[int, str]:
    """Children not in ``before`` that are still alive after ``grace`` seconds (one
    that was just killed takes a moment to go)."""
    deadline = time.monotonic() + grace
    while True:
        left = {pid: cmd for pid, cmd in children().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill(pids: set[int] | dict[int, str]) -> None:
    """SIGKILL each (and its process group, where it leads one) and reap it."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # (only where it leads a group of its own)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
