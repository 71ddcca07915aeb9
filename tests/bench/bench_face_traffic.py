"""A machine face under client traffic: tick lateness while a client browses the face
and while its bound values publish.

The daemon (``workers = 0``: the clock shares the loop with the server) serves the
demo's tank twin stepping at 100 Hz (published at 10 Hz) and a face of ~50,000
nodes (``tests/faces/generated.py``: 250 machines of 66 AnalogItems) on its
endpoint, ``BOUND`` of whose variables are bound to the tank's level (every one
changes every tick). For ``SECONDS`` (20 s; ``BENCH_QUICK=1`` runs 6 s) a client
in a subprocess browses the face (each machine's children, their DisplayNames and
values read, machine after machine) and subscribes to the bound variables at
100 ms.

Figures: the clock's lateness p50 / p99 / max and missed ticks, beside the same
daemon with the same face and no client (run for a third of the time), and with
the client subscribed only (the bound values publishing, no browsing); browse
requests answered and data changes received per second.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.bench_publish import _loop_run
from tests.bench.common import TANK_TWIN
from tests.faces.generated import URI, write_nodeset

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("BENCH_FACE_SECONDS", "6" if QUICK else "20"))
MACHINES, VARIABLES = 250, 66
BOUND = 200
WARMUP = 2.0

#: browses the face and subscribes to its bound variables; prints {"browses", "changes"}
CLIENT = r"""
import asyncio, json, sys, time
from asyncua import Client, ua
url, uri, machines, bound, seconds, warmup = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                              int(sys.argv[4]), float(sys.argv[5]),
                                              float(sys.argv[6]))
browse = sys.argv[7] == "1"
counts = {"browses": 0, "changes": 0}
class Handler:
    def datachange_notification(self, node, val, data):
        counts["changes"] += 1
async def main():
    async with Client(url, timeout=30) as client:
        ns = await client.get_namespace_index(uri)
        objects = client.nodes.objects
        handles = []
        sub = await client.create_subscription(100, Handler())
        nodes = []
        for m in range(machines):
            machine = await objects.get_child(f"{ns}:Machine{m}")
            for c in await machine.get_children():
                nodes.append(c)
                if len(nodes) >= bound:
                    break
            if len(nodes) >= bound:
                break
        await sub.subscribe_data_change(nodes)
        await asyncio.sleep(warmup)
        counts["changes"] = 0
        stop = time.monotonic() + seconds
        m = 0
        while not browse and time.monotonic() < stop:
            await asyncio.sleep(0.1)
        while time.monotonic() < stop:
            machine = client.get_node(ua.NodeId(1000 + m * (3 * 66 + 1), ns))
            children = await machine.get_children()
            await client.read_attributes(children,
                                         ua.AttributeIds.DisplayName)
            await client.read_values(children)
            counts["browses"] += 1
            m = (m + 1) % machines
        await sub.delete()
    print(json.dumps(counts))
asyncio.run(main())
"""


def _config(state: str, nodeset: Path) -> str:
    bindings = "\n".join(
        f'"Machine{i // VARIABLES}/Value{i % VARIABLES}" = "tank.level"' for i in range(BOUND))
    return f"""
[server]
endpoint = "opc.tcp://127.0.0.1:0/bench"
state_dir = "{state}"
workers = 0

[server.security]
policies = ["None"]
anonymous = "admin"

[history]
enabled = false

{TANK_TWIN}
[sessions.tank]
twin = "tank_level"
step_size = 0.01
publish_rate = 10.0

[faces.machines]
nodesets = ["{nodeset}"]
session = "tank"

[faces.machines.bindings]
{bindings}
"""


async def _run(client: bool, seconds: float, nodeset: Path,
               browse: bool = True) -> dict[str, float]:
    from twin_server.runtime.compile import parse_config
    from twin_server.runtime.daemon import Daemon

    with tempfile.TemporaryDirectory() as state:
        daemon = Daemon(parse_config(_config(state, nodeset)))
        runner = asyncio.ensure_future(daemon.run())
        await daemon.wait_ready()
        try:
            clock = daemon.host.clock("tank")  # type: ignore[union-attr]  # (workers = 0)
            lateness: list[float] = []
            recording = False
            record = clock._record

            def recorded(late: float) -> None:
                if recording:
                    lateness.append(late)
                record(late)

            clock._record = recorded  # type: ignore[method-assign]
            counts = {"browses": 0.0, "changes": 0.0}
            if client:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", CLIENT, daemon.endpoint_url, URI, str(MACHINES),
                    str(BOUND), str(seconds), str(WARMUP), "1" if browse else "0",
                    stdout=subprocess.PIPE)
                await asyncio.sleep(WARMUP + 3.0)  # (its connection and subscription)
            overruns = clock.statistics().overruns
            recording = True
            if client:
                out, _ = await proc.communicate()
                counts = json.loads(out)
            else:
                await asyncio.sleep(seconds)
            recording = False
            overruns = clock.statistics().overruns - overruns
        finally:
            daemon.stop()
            await runner
    late = np.asarray(lateness) * 1e3
    return {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)),
            "max": float(late.max()), "overruns": float(overruns), "ticks": float(len(late)),
            "browses": counts["browses"] / seconds, "changes": counts["changes"] / seconds}


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        nodeset = Path(folder) / "machines.NodeSet2.xml"
        nodes = write_nodeset(nodeset, MACHINES, VARIABLES)
        loaded = _loop_run(_run(True, SECONDS, nodeset))  # type: ignore[arg-type]
        print(f"  browsed and subscribed: {loaded}", file=sys.stderr)
        time.sleep(0.5)
        subscribed = _loop_run(_run(True, SECONDS, nodeset, browse=False))  # type: ignore[arg-type]
        print(f"  subscribed only: {subscribed}", file=sys.stderr)
        time.sleep(0.5)
        quiet = _loop_run(_run(False, max(4.0, SECONDS / 3), nodeset))  # type: ignore[arg-type]
        print(f"  no client: {quiet}", file=sys.stderr)
    what = (f"tank at 100 Hz behind a face of {nodes:,} nodes ({BOUND} bound), a client "
            f"browsing it and subscribed")
    base = "the same, no client"
    figures = [
        {"figure": f"clock lateness {q}, {what}", "value": loaded[q], "unit": "ms",
         "baseline": base, "baseline_value": quiet[q],
         "target": "<= 2 ms" if q == "p99" else "", "higher_is_better": False}
        for q in ("p50", "p99", "max")]
    alone = (f"tank at 100 Hz behind a face of {nodes:,} nodes ({BOUND} bound), a client "
             f"subscribed to the bound values only")
    figures += [
        {"figure": f"clock lateness {q}, {alone}", "value": subscribed[q], "unit": "ms",
         "baseline": base, "baseline_value": quiet[q],
         "target": "<= 2 ms" if q == "p99" else "", "higher_is_better": False}
        for q in ("p50", "p99", "max")]
    figures += [
        {"figure": f"missed ticks, {what}", "value": loaded["overruns"],
         "unit": f"of {loaded['ticks']:.0f} ticks", "baseline": base,
         "baseline_value": quiet["overruns"], "target": "0", "higher_is_better": False},
        {"figure": f"face browses answered, {what}", "value": loaded["browses"],
         "unit": "machines/s (66 children: browse + 2 reads)", "baseline": "",
         "baseline_value": None, "target": "", "higher_is_better": True},
        {"figure": f"bound data changes received, {what}", "value": loaded["changes"],
         "unit": f"changes/s (of {BOUND * 10}/s published)", "baseline": "",
         "baseline_value": None, "target": f">= {0.9 * BOUND * 10:.0f}",
         "higher_is_better": True},
    ]
    return figures
