"""How fast the address space takes value changes from sessions.

Ours: a session of 500 sine sources (500 outputs, every one changing each tick)
is stepped and published through the server's publish path (only changed values,
``write_attribute_value`` with prepared DataValues), timing the publishing alone.
Baseline: a plain asyncua server with 500 Double variables updated by a
``Node.write_value`` loop, the way most asyncua examples do it, in the same run.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from asyncua import Server

from twin_server.config.loader import parse_config
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.engine.session import Session, SessionSettings
from twin_server.opcua.server import OpcUaServer

#: the None endpoint, anonymous may do everything (security is tested in tests/security)
OPEN = SecurityConfig(policies=("None",), anonymous="admin")

COMPONENTS = 500
SECONDS = 3.0
ENDPOINT = "opc.tcp://127.0.0.1:0/bench"


def _twin_text(n: int) -> str:
    lines = ["[twins.wave]"]
    for i in range(n):
        lines += [f"[twins.wave.components.s{i}]", 'model = "sine"',
                  f"parameters = {{ frequency = {0.5 + i / n}, amplitude = 1.0 }}"]
    return "\n".join(lines) + "\n"


async def _ours() -> tuple[float, int]:
    loaded = parse_config(_twin_text(COMPONENTS))
    twin = loaded.twins["wave"]
    server = OpcUaServer(ServerConfig(endpoint=ENDPOINT, security=OPEN))
    await server.start()
    try:
        await server.add_twin(twin)
        session = Session("bench", twin, SessionSettings(step_size=0.01))
        await server.add_session(session)
        values = 0
        busy = 0.0
        while busy < SECONDS:
            session.step(1)
            started = time.perf_counter()
            values += await server.publish("bench")
            busy += time.perf_counter() - started
        return values / busy, values
    finally:
        await server.stop()


async def _plain() -> tuple[float, int]:
    server = Server()
    await server.init()
    server.set_endpoint(ENDPOINT)
    ns = await server.register_namespace("urn:bench")
    folder = await server.nodes.objects.add_folder(ns, "Bench")
    nodes = [await folder.add_variable(ns, f"v{i}", 0.0) for i in range(COMPONENTS)]
    await server.start()
    try:
        values = 0
        k = 0
        started = time.perf_counter()
        while time.perf_counter() - started < SECONDS:
            k += 1
            for i, node in enumerate(nodes):
                await node.write_value(math.sin(k * 0.01 + i))
            values += len(nodes)
        return values / (time.perf_counter() - started), values
    finally:
        await server.stop()


async def run() -> list[dict[str, Any]]:
    ours, n_ours = await _ours()
    await asyncio.sleep(0.2)
    plain, _ = await _plain()
    return [{"figure": f"address space updates from a session ({COMPONENTS} changing outputs)",
             "value": ours, "unit": "values/s", "baseline": "asyncua Node.write_value loop",
             "baseline_value": plain, "target": "faster than baseline",
             "higher_is_better": True}]
