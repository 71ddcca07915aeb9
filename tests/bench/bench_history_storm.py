"""Tick lateness of a 100 Hz session while a viewer storms HistoryRead (issue 13, part 2).

The server, its store of 12,000 samples and the session's clock share one event
loop, as in the daemon; the storming client is another process (as an attacker
on the network would be: its decoding is not the server's work, nor does it take
the server's GIL) and sends, again and again, one HistoryRead naming the
recorded node 100 times with no NumValuesPerNode, releasing what it gets.

Baselines from the same run: the session's lateness with the server idle, and one
such request with the request cap lifted (``max_history_values_per_request =
1,000,000``: 1,000,000 values, as before the cap; the response is still built in
slices, so this shows what the cap adds to them).

    python -m tests.bench.bench_history_storm URL NODEID SECONDS   # the client alone
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Client, ua

from tests.bench.common import lateness_samples
from tests.opcua.conftest import plant
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig
from twin_server.engine.session import Session, SessionSettings
from twin_server.history import HistoryStore
from twin_server.opcua.server import OpcUaServer
from twin_server.runtime.clock import Clock

T0 = 1_700_000_000.0
SAMPLES = 12_000
LEVEL = "Components.tank.Outputs.level"
STORM = 100
STORM_SECONDS = 5.0
CAPPED = LimitsConfig()
UNCAPPED = LimitsConfig(max_history_values_per_request=1_000_000)


@contextlib.asynccontextmanager
async def _served(state: Path, limits: LimitsConfig) -> AsyncIterator[tuple[OpcUaServer, Clock]]:
    store = await HistoryStore.open(state / "history.db", max_queue=SAMPLES)
    if not (await store.read_raw(f"tank/{LEVEL}", T0, T0 + SAMPLES, max_values=1)).samples:
        for k in range(SAMPLES):
            store.record(f"tank/{LEVEL}", T0 + k * 0.01, float(k))
        await store.flush()
    security = SecurityConfig(policies=("None",), anonymous="viewer")
    server = OpcUaServer(ServerConfig(security=security, limits=limits, state_dir=str(state)),
                         endpoint="opc.tcp://127.0.0.1:0/twin-server")
    await server.start()
    await server.add_twin(plant())
    server.install_history(store)
    session = Session("tank", plant(), SessionSettings(step_size=0.01, realtime_factor=1.0))
    clock = Clock(session)
    await server.add_session(session, clock, historized=[LEVEL])
    session.start()
    ticking = asyncio.create_task(clock.run())
    try:
        yield server, clock
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)
        await server.stop()
        await store.close()


async def _storm(url: str, nodeid: ua.NodeId, seconds: float) -> int:
    """Storm from another process for ``seconds`` (at least one request); values
    received."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.bench_history_storm", url, nodeid.to_string(),
        str(seconds), stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the storming client failed (exit {process.returncode})")
    return int(out.split()[-1])


def _client(url: str, nodeid: ua.NodeId, seconds: float) -> int:
    """The storming client: values received."""

    async def main() -> int:
        details = ua.ReadRawModifiedDetails(
            IsReadModified=False, StartTime=datetime.fromtimestamp(T0 - 1, UTC),
            EndTime=datetime.fromtimestamp(T0 + SAMPLES, UTC), NumValuesPerNode=0,
            ReturnBounds=False)
        received = 0
        async with Client(url, timeout=120, watchdog_intervall=60.0) as client:
            until = time.monotonic() + seconds
            while True:
                params = ua.HistoryReadParameters(
                    HistoryReadDetails=details, ReleaseContinuationPoints=False,
                    TimestampsToReturn=ua.TimestampsToReturn.Source,
                    NodesToRead=[ua.HistoryReadValueId(NodeId=nodeid)] * STORM)
                try:
                    results = await client.uaclient.history_read(params)
                except (ua.UaStatusCodeError, ConnectionError, TimeoutError):
                    return received  # uncapped: the 1,000,000-value answer passes 4 MiB
                received += sum(len(r.HistoryData.DataValues) for r in results)
                cps = [r.ContinuationPoint for r in results if r.ContinuationPoint]
                if cps:
                    params.ReleaseContinuationPoints = True
                    params.NodesToRead = [ua.HistoryReadValueId(NodeId=nodeid,
                                                                ContinuationPoint=cp)
                                          for cp in cps]
                    await client.uaclient.history_read(params)
                if time.monotonic() >= until:
                    return received

    return asyncio.run(main())


async def _lateness(state: Path, limits: LimitsConfig | None, seconds: float
                    ) -> tuple[list[float], int]:
    """The session's tick lateness (s) over ``seconds`` of storm (None: idle)."""
    async with _served(state, limits or CAPPED) as (server, clock):
        await asyncio.sleep(0.5)  # past the start-up
        first = clock.statistics().ticks
        if limits is None:
            await asyncio.sleep(seconds)
            received = 0
        else:
            received = await _storm(server.endpoint_url, server.session_nodeid("tank", LEVEL),
                                    seconds)
        ticks = clock.statistics().ticks - first
        return lateness_samples(clock)[-ticks:] if ticks else [], received


async def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        idle, _ = await _lateness(state, None, STORM_SECONDS)
        capped, values = await _lateness(state, CAPPED, STORM_SECONDS)
        uncapped, _ = await _lateness(state, UNCAPPED, 0.0)  # one request: ~1,000,000 values
    ms = [1000.0 * x for x in capped]
    idle_ms, uncapped_ms = [1000.0 * x for x in idle], [1000.0 * x for x in uncapped]
    return [
        {"figure": f"tick lateness max, 100 Hz session, {STORM}-node HistoryRead storm "
                   f"({values:,} values in {STORM_SECONDS:.0f} s)", "value": max(ms, default=0.0),
         "unit": "ms", "baseline": "one such request, request cap lifted (1,000,000 values)",
         "baseline_value": max(uncapped_ms, default=0.0), "target": "<= 50 ms",
         "higher_is_better": False, "samples": ms, "baseline_samples": uncapped_ms},
        {"figure": "tick lateness p99, 100 Hz session, HistoryRead storm",
         "value": float(np.percentile(ms, 99)) if ms else 0.0, "unit": "ms",
         "baseline": "same session, server idle",
         "baseline_value": float(np.percentile(idle_ms, 99)) if idle_ms else 0.0,
         "target": "<= 5 ms", "higher_is_better": False,
         "samples": ms, "baseline_samples": idle_ms},
    ]


if __name__ == "__main__":
    print(_client(sys.argv[1], ua.NodeId.from_string(sys.argv[2]), float(sys.argv[3])))
