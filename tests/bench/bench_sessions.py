"""Sessions at run time, in a whole daemon:

* creating and deleting 100 sessions of the tank twin through the OPC UA
  methods CreateSession / DeleteSession (a real client over loopback), per
  session, beside the engine alone doing the same (``SessionManager.create`` /
  ``delete``: no address space, no client);
* 100 sessions of the tank twin stepping at 10 Hz (publishing at 10 Hz): clock
  lateness p99 across the sessions (the worst session's p99, and the median
  session's) beside 100 bare asyncio tasks pacing 10 Hz against absolute
  deadlines with no work; and the process's CPU (``time.process_time`` over wall
  time) beside the same daemon with the 100 sessions Suspended.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from asyncua import Client, ua

from twin_server.app import Daemon
from twin_server.config.loader import parse_config
from twin_server.engine.manager import SessionManager
from twin_server.engine.session import SessionSettings
from twin_server.opcua.server import NAMESPACE_URI

SESSIONS = 100
RUN_SECONDS = 8.0
IDLE_SECONDS = 3.0
PERIOD = 0.1

CONFIG = """
[server]
max_sessions = 200
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[twins.tank_level]
description = "Water tank with a PID level controller on the inflow valve"
connections = [
    "setpoint.output -> controller.setpoint",
    "tank.level -> controller.measurement",
    "controller.output -> tank.inflow",
]

[twins.tank_level.components.setpoint]
model = "square"
parameters = { offset = 1.0, amplitude = 0.3, period = 120.0, duty = 0.5 }

[twins.tank_level.components.tank]
model = "water_tank"
parameters = { area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }

[twins.tank_level.components.controller]
model = "pid"
parameters = { kp = 0.2, ki = 0.004, kd = 0.0, output_min = 0.0, output_max = 0.05 }
"""


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


async def _stepping(daemon: Daemon) -> dict[str, float]:
    """100 sessions at 10 Hz: per-session lateness p99s and CPU, then CPU suspended."""
    sessions = [await daemon.create_session("tank_level", f"run{i}", {})
                for i in range(SESSIONS)]
    for session in sessions:
        session.start()
    await asyncio.sleep(1.0)  # settle: every clock has taken its first ticks
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(RUN_SECONDS)
    running_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
    stats = [daemon.sessions[s.name].clock.statistics() for s in sessions]
    p99s = np.array([st.lateness_p99 for st in stats])
    overruns = sum(st.overruns for st in stats)
    ticks = sum(st.ticks for st in stats)
    for session in sessions:
        session.suspend()
    await asyncio.sleep(0.5)
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(IDLE_SECONDS)
    idle_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
    for session in sessions:
        await daemon.delete_session(session.name)
    return {"p99_max": float(p99s.max()), "p99_median": float(np.median(p99s)),
            "cpu": running_cpu * 100, "idle_cpu": idle_cpu * 100,
            "overruns": float(overruns), "ticks": float(ticks)}


async def _bare_tasks(seconds: float) -> np.ndarray:
    """Per-task lateness p99 of 100 bare tasks pacing 10 Hz with no work."""
    loop = asyncio.get_running_loop()

    async def pace() -> float:
        start = loop.time()
        lateness = []
        k = 1
        while k * PERIOD < seconds:
            deadline = start + k * PERIOD
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            lateness.append(loop.time() - deadline)
            k += 1
        return float(np.percentile(lateness, 99))

    return np.array(await asyncio.gather(*(pace() for _ in range(SESSIONS))))


async def run() -> list[dict[str, Any]]:
    daemon = Daemon(parse_config(CONFIG), endpoint="opc.tcp://127.0.0.1:0/twin-server")
    daemon.client_settings = SessionSettings(step_size=PERIOD, publish_rate=10.0)
    runner = asyncio.create_task(daemon.run())
    await daemon.wait_ready()
    try:
        create_ua, delete_ua = await _through_opcua(daemon)
        create_engine, delete_engine = _engine_only(daemon)
        stepping = await _stepping(daemon)
    finally:
        daemon.stop()
        await runner
    bare = await _bare_tasks(RUN_SECONDS / 2)
    return [
        {"figure": "CreateSession over OPC UA, tank twin", "value": create_ua * 1e3,
         "unit": "ms/session", "baseline": "SessionManager.create alone",
         "baseline_value": create_engine * 1e3, "target": "<= 20 ms",
         "higher_is_better": False},
        {"figure": "DeleteSession over OPC UA, tank twin", "value": delete_ua * 1e3,
         "unit": "ms/session", "baseline": "SessionManager.delete alone",
         "baseline_value": delete_engine * 1e3, "target": "<= 20 ms",
         "higher_is_better": False},
        {"figure": f"clock lateness p99, worst of {SESSIONS} tank sessions at 10 Hz",
         "value": stepping["p99_max"] * 1e3, "unit": "ms",
         "baseline": f"{SESSIONS} bare asyncio tasks at 10 Hz (worst p99)",
         "baseline_value": float(bare.max()) * 1e3, "target": "<= 10 ms",
         "higher_is_better": False},
        {"figure": f"clock lateness p99, median of {SESSIONS} tank sessions at 10 Hz",
         "value": stepping["p99_median"] * 1e3, "unit": "ms",
         "baseline": f"{SESSIONS} bare asyncio tasks at 10 Hz (median p99)",
         "baseline_value": float(np.median(bare)) * 1e3, "target": "",
         "higher_is_better": False},
        {"figure": f"process CPU, {SESSIONS} tank sessions at 10 Hz",
         "value": stepping["cpu"], "unit": "% of one core",
         "baseline": "the same sessions Suspended", "baseline_value": stepping["idle_cpu"],
         "target": "<= 50 %", "higher_is_better": False},
        {"figure": f"clock overruns, {SESSIONS} tank sessions at 10 Hz",
         "value": stepping["overruns"], "unit": f"of {stepping['ticks']:.0f} ticks",
         "target": "0", "higher_is_better": False},
    ]
