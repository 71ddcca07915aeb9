"""Machine faces: loading a generated NodeSet2 file of ~50,000 nodes (``faces/loader.py``).

Ours: ``faces.loader.load`` of ``tests/faces/generated.py``'s file (250 objects of
66 AnalogItems with EURange and EngineeringUnits: 49,750 nodes) into a fresh
asyncua server, the collector paused as the daemon pauses it at start-up; the
median of ``RUNS`` runs.

Baseline, in the same run: asyncua's own ``Server.import_xml`` (``XmlImporter``)
of the same shape cut to ``BASELINE_NODES`` nodes (it adds node by node through
``add_nodes``), scaled per node to the full count (it would take minutes).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from asyncua import Server

from tests.faces.generated import write_nodeset
from twin_server.faces.loader import load
from twin_server.runtime.collector import collector_paused

RUNS = 3
MACHINES, VARIABLES = 250, 66
BASELINE_NODES = 2_000


async def _ours(path: Path) -> float:
    server = Server()
    await server.init()
    started = time.perf_counter()
    with collector_paused():
        await load(server, [path], loaded_models={})
    return time.perf_counter() - started


async def _theirs(path: Path) -> float:
    server = Server()
    await server.init()
    started = time.perf_counter()
    await server.import_xml(str(path))
    return time.perf_counter() - started


async def run() -> list[dict[str, Any]]:
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        big = Path(folder) / "big.NodeSet2.xml"
        count = write_nodeset(big, MACHINES, VARIABLES)
        small = Path(folder) / "small.NodeSet2.xml"
        small_count = write_nodeset(small, BASELINE_NODES // (3 * VARIABLES + 1), VARIABLES)
        ours = [await _ours(big) for _ in range(RUNS)]
        theirs = await _theirs(small) * count / small_count
    median = statistics.median(ours)
    return [{
        "figure": f"load a NodeSet2 file of {count:,} nodes", "value": median, "unit": "s",
        "baseline": f"asyncua import_xml ({small_count:,} nodes, scaled)",
        "baseline_value": theirs, "target": "<= 5 s and <= 0.1x baseline",  # (10 times faster)
        "higher_is_better": False, "samples": ours,
    }]


if __name__ == "__main__":
    for row in asyncio.run(run()):
        print(row)
