"""RunCampaign beside live sessions: the tick lateness (p99) of the demo's tank session
in a worker process (the daemon's default) while a campaign runs on the server's local
Dask cluster (one worker process per core, at nice 10), beside the same session's
lateness in the seconds before; and the campaign's own pace meanwhile.

The session workers ask for real-time scheduling (``server.worker_scheduling``); where
the kernel refuses it they fall back to a lower nice value, still above the campaign's
workers. Either way the campaign must not make the live ticks late.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from tests.bench.bench_publish import _loop_run
from tests.bench.common import counts_between, quantile
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import Daemon

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SECONDS = 8.0

#: far more runs than fit in the measurement (it is halted afterwards)
CAMPAIGN = """
[campaign]
name = "bench"
config = "demo.toml"
session = "tank"
duration = 60.0
[parameters]
"tank.area" = { range = [0.3, 0.9], steps = 5000 }
[summary."tank.level"]
"""


async def _measure() -> tuple[float, float, float, int]:
    """(p99 while the campaign runs, p99 before, runs/s meanwhile, workers)."""
    with tempfile.TemporaryDirectory(prefix="bench-campaign-server-") as state:
        loaded = load_config(CONFIGS / "demo.toml")
        server = loaded.config.server.model_copy(update={
            "state_dir": state, "scenario_dirs": (str(CONFIGS),)})
        loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
            update={"server": server}))
        daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.create_task(daemon.run())
        try:
            await daemon.wait_ready()
            host = daemon.host
            await asyncio.sleep(3.0)  # (past the start-up's own hiccups)
            before = host.clock_statistics("tank")
            await asyncio.sleep(SECONDS)
            idle = host.clock_statistics("tank")
            async with Client(daemon.endpoint_url, timeout=60) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                (result,) = await client.uaclient.call([ua.CallMethodRequest(
                    ObjectId=ua.NodeId("TwinServer", ns), MethodId=ua.NodeId("RunCampaign", ns),
                    InputArguments=[ua.Variant(CAMPAIGN, ua.VariantType.String)])])
                assert result.StatusCode.is_good(), result
                run_id = result.OutputArguments[0].Value
                done = client.get_node(ua.NodeId(f"{run_id.Identifier}.Done", ns))
                async with asyncio.timeout(120):  # the cluster starts
                    while await done.read_value() < 1:
                        await asyncio.sleep(0.1)
                start, done0 = host.clock_statistics("tank"), await done.read_value()
                await asyncio.sleep(SECONDS)
                busy, done1 = host.clock_statistics("tank"), await done.read_value()
                await client.uaclient.call([ua.CallMethodRequest(
                    ObjectId=run_id, MethodId=ua.NodeId(f"{run_id.Identifier}.Halt", ns))])
                assert daemon.campaigns is not None
                record = daemon.campaigns.runs[str(run_id.Identifier).removeprefix(
                    "Campaigns.")]
                await record.ended.wait()
        finally:
            daemon.stop()
            await runner
    return (quantile(counts_between(start, busy), 0.99),
            quantile(counts_between(before, idle), 0.99), (done1 - done0) / SECONDS,
            server.campaign_workers or os.cpu_count() or 1)


def run() -> list[dict[str, Any]]:
    busy, idle, rate, workers = _loop_run(_measure())
    return [
        {"figure": "tick lateness p99 of the demo tank (worker process) while RunCampaign "
                   f"runs on {workers} niced Dask workers",
         "value": busy * 1e3, "unit": "ms",
         "baseline": "the same session before the campaign", "baseline_value": idle * 1e3,
         "target": "<= 1.5x baseline", "higher_is_better": False},
        {"figure": "  the campaign's pace meanwhile (demo tank, 60 s runs)", "value": rate,
         "unit": "runs/s", "baseline": "", "baseline_value": None, "target": "",
         "higher_is_better": True},
    ]
