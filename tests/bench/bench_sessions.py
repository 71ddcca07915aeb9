"""Sessions at run time, in a whole daemon: creating and deleting 100 sessions of
the tank twin through the OPC UA methods CreateSession / DeleteSession (a real
client over loopback), per session, beside the engine alone doing the same
(``SessionManager.create`` / ``delete``: no address space, no client).

100 such sessions stepping at 10 Hz (lateness, CPU, memory) are ``bench_scale``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from asyncua import Client, ua

from tests.bench.common import TANK_TWIN
from twin_server.engine.manager import SessionManager
from twin_server.engine.session import SessionSettings
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon

SESSIONS = 100
PERIOD = 0.1

CONFIG = """
[server]
state_dir = "{state}"
max_sessions = 200
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

""" + TANK_TWIN


def _string(text: str) -> ua.Variant:
    return ua.Variant(text, ua.VariantType.String)


async def _call(client: Client, ns: int, method: str, *args: ua.Variant) -> ua.CallMethodResult:
    request = ua.CallMethodRequest(ObjectId=ua.NodeId("TwinServer", ns),
                                   MethodId=ua.NodeId(method, ns), InputArguments=list(args))
    (result,) = await client.uaclient.call([request])
    if not result.StatusCode.is_good():
        raise RuntimeError(f"{method}: {result.StatusCode.name}")
    return result


async def _through_opcua(daemon: Daemon) -> tuple[float, float]:
    """Seconds per CreateSession and per DeleteSession, over a real client."""
    async with Client(daemon.endpoint_url, timeout=30) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        started = time.perf_counter()
        for i in range(SESSIONS):
            await _call(client, ns, "CreateSession", _string("tank_level"), _string(f"s{i}"),
                        _string('{"tank": {"area": 0.6}}'))
        created = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(SESSIONS):
            await _call(client, ns, "DeleteSession", _string(f"s{i}"))
        deleted = time.perf_counter() - started
    return created / SESSIONS, deleted / SESSIONS


def _engine_only(daemon: Daemon) -> tuple[float, float]:
    """The same through SessionManager alone: the floor set by the engine."""
    manager = SessionManager(daemon.manager.twins, max_sessions=200, idle_timeout=0)
    settings = daemon.client_settings
    started = time.perf_counter()
    for i in range(SESSIONS):
        manager.create("tank_level", f"e{i}", {"tank": {"area": 0.6}}, settings)
    created = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(SESSIONS):
        manager.delete(f"e{i}")
    deleted = time.perf_counter() - started
    return created / SESSIONS, deleted / SESSIONS


async def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as state:
        return await _run(state)


async def _run(state: str) -> list[dict[str, Any]]:
    daemon = Daemon(parse_config(CONFIG.replace("{state}", state)),
                    endpoint="opc.tcp://127.0.0.1:0/twin-server")
    daemon.client_settings = SessionSettings(step_size=PERIOD, publish_rate=10.0)
    runner = asyncio.create_task(daemon.run())
    await daemon.wait_ready()
    try:
        create_ua, delete_ua = await _through_opcua(daemon)
        create_engine, delete_engine = _engine_only(daemon)
    finally:
        daemon.stop()
        await runner
    return [
        {"figure": "CreateSession over OPC UA, tank twin", "value": create_ua * 1e3,
         "unit": "ms/session", "baseline": "SessionManager.create alone",
         "baseline_value": create_engine * 1e3, "target": "<= 20 ms",
         "higher_is_better": False},
        {"figure": "DeleteSession over OPC UA, tank twin", "value": delete_ua * 1e3,
         "unit": "ms/session", "baseline": "SessionManager.delete alone",
         "baseline_value": delete_engine * 1e3, "target": "<= 20 ms",
         "higher_is_better": False},
    ]
