"""Worker processes (``twin_server.runtime``): the round trip of a command to a
session in a worker, beside a plain pipe echo to a child process in the same run
(the floor any process boundary costs); the time from a worker's SIGKILL to its
session served again by the replacement (its ``recovered`` event, then a command
answered there), over ``CRASHES`` kills, beside starting a worker host from
nothing; and reading a frame of the demo tank from shared memory, beside
``Session.value_list()`` in-process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.bench_publish import _loop_run
from twin_server.engine.session import Session, SessionEvent, SessionSettings
from twin_server.runtime import WorkerHost
from twin_server.runtime.compile import load_config

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
ROUND_TRIPS = 3000
CRASHES = 8
READS = 20000


def _echo(conn: Connection) -> None:
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(message)


def _pipe_echo() -> np.ndarray:
    """Round trips of a small message to a child that echoes it (blocking, no loop)."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_echo, args=(theirs,))
    child.start()
    theirs.close()
    try:
        payload = b"x" * 64
        for _ in range(200):
            ours.send_bytes(payload)
            ours.recv_bytes()
        samples = np.empty(ROUND_TRIPS)
        for i in range(ROUND_TRIPS):
            started = time.perf_counter()
            ours.send_bytes(payload)
            ours.recv_bytes()
            samples[i] = time.perf_counter() - started
        return samples
    finally:
        ours.close()
        child.join(5)


async def _workers() -> dict[str, Any]:
    twin = load_config(DEMO).twins["tank_level"]
    recovered = asyncio.Event()

    def on_event(name: str, event: SessionEvent) -> None:
        if event.kind == "recovered":
            recovered.set()

    host = WorkerHost(on_event, workers=1, spares=1)
    started = time.perf_counter()
    await host.start()
    start_seconds = time.perf_counter() - started
    try:
        await host.create("tank", twin, SessionSettings(step_size=0.01))
        await host.call("tank", "start")
        for _ in range(200):
            await host.call("tank", "statistics")
        calls = np.empty(ROUND_TRIPS)
        for i in range(ROUND_TRIPS):
            began = time.perf_counter()
            await host.call("tank", "statistics")
            calls[i] = time.perf_counter() - began
        reads = np.empty(READS)
        for i in range(READS):
            began = time.perf_counter()
            host._records["tank"].frame_seq = -1  # (force a copy: no cached frame)
            host.frame("tank")
            reads[i] = time.perf_counter() - began
        replacements = []
        for _ in range(CRASHES):
            while host.statistics().spares < 1:
                await asyncio.sleep(0.05)
            recovered.clear()
            dead = host.worker_pid("tank")
            began = time.perf_counter()
            os.kill(dead, signal.SIGKILL)
            await asyncio.wait_for(recovered.wait(), 30)
            # serving again: the replacement answers a command for the session
            await host.call("tank", "statistics")
            replacements.append(time.perf_counter() - began)
            assert host.worker_pid("tank") not in (0, dead)
            await host.call("tank", "reset")
            await host.call("tank", "start")
    finally:
        await host.aclose()
    return {"calls": calls, "reads": reads, "replacements": np.asarray(replacements),
            "start": start_seconds}


def _in_process_reads() -> np.ndarray:
    session = Session("tank", load_config(DEMO).twins["tank_level"], SessionSettings())
    session.step(100)
    reads = np.empty(READS)
    for i in range(READS):
        began = time.perf_counter()
        tuple(session.value_list())
        reads[i] = time.perf_counter() - began
    return reads


def run() -> list[dict[str, Any]]:
    echo = _pipe_echo()
    ours = _loop_run(_workers())  # type: ignore[arg-type]
    local = _in_process_reads()
    calls, reads, crashes = ours["calls"], ours["reads"], ours["replacements"]
    ms = 1e3
    return [
        {"figure": "worker command round trip p50", "value": float(np.percentile(calls, 50)) * ms,
         "unit": "ms", "baseline": "plain pipe echo to a child process, p50",
         "baseline_value": float(np.percentile(echo, 50)) * ms,
         "target": "<= 0.5 ms", "higher_is_better": False,
         "samples": list(calls * ms), "baseline_samples": list(echo * ms)},
        {"figure": "worker command round trip p99", "value": float(np.percentile(calls, 99)) * ms,
         "unit": "ms", "baseline": "plain pipe echo to a child process, p99",
         "baseline_value": float(np.percentile(echo, 99)) * ms,
         # (the tail is the machine's scheduling, shared by the echo: compare with it)
         "target": "<= 2x baseline", "higher_is_better": False},
        {"figure": f"worker SIGKILLed to its session served again by the replacement "
                   f"(worst of {len(crashes)})",
         "value": float(crashes.max()), "unit": "s",
         "baseline": "starting a worker host from nothing (1 worker + 1 spare)",
         "baseline_value": float(ours["start"]), "target": "< 1 s",
         "higher_is_better": False},
        {"figure": f"  the same, median of {len(crashes)}", "value": float(np.median(crashes)),
         "unit": "s", "target": "", "higher_is_better": False},
        {"figure": "frame read from shared memory, demo tank p50",
         "value": float(np.percentile(reads, 50)) * 1e6, "unit": "us",
         "baseline": "Session.value_list() in-process, p50",
         "baseline_value": float(np.percentile(local, 50)) * 1e6, "target": "",
         "higher_is_better": False},
    ]
