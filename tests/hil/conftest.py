"""A soft PLC in a subprocess, and a water-tank twin with a HIL peer bound to it.

The PLC (``tests/hil/soft_plc.py``) is a real asyncua server on 127.0.0.1 that
prints its port; tests that kill, stop or restart it get their own, the others
share one per module.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from twin_server.engine.session import Session, SessionSettings
from twin_server.runtime import HostedSession, LocalHost
from twin_server.runtime.clock import Clock
from twin_server.runtime.compile import LoadedConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]


class SoftPlc:
    """The soft PLC subprocess: start, kill, pause (SIGSTOP) and restart on its port."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/plc"

    def start(self) -> SoftPlc:
        argv = [sys.executable, "-m", "tests.hil.soft_plc", "--port", str(self.port), *self.args]
        self.process = process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert process.stdout is not None
        # the pipe's bytes as they come (os.read), not readline(): a line that came
        # with the one before it (the address-space cache's log line, on a loaded
        # machine) waits in readline's buffer, where select() does not see it, and
        # the start timed out with PORT read
        fd = process.stdout.fileno()
        said = b""
        deadline = time.monotonic() + 40  # (a loaded machine takes 25 s to start one)
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # it ended
                break
            said += chunk
            for line in said.split(b"\n")[:-1]:
                if line.startswith(b"PORT "):
                    self.port = int(line.split()[1])
                    return self
        self.kill()
        raise RuntimeError(f"the soft PLC did not start ({argv})")

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def shared_plc() -> Iterator[SoftPlc]:
    plc = SoftPlc("--max-nodes-per-write", "2").start()
    try:
        yield plc
    finally:
        plc.kill()


@pytest.fixture
def own_plc() -> Iterator[SoftPlc]:
    plc = SoftPlc().start()
    try:
        yield plc
    finally:
        plc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TWIN = """
[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[twins.tank]
connections = []

[twins.tank.components.tank]
model = "water_tank"
parameters = {{ area = 0.5, outflow_coefficient = 0.05, height = 2.0, initial_level = {level} }}

[twins.tank.components.small]
model = "constant"
parameters = {{ value = 12.6 }}

[twins.tank.components.big]
model = "constant"
parameters = {{ value = 40000.0 }}

[twins.tank.components.negative]
model = "constant"
parameters = {{ value = -3.4 }}

[twins.tank.components.scaled]
model = "gain"

[sessions.s]
twin = "tank"
realtime_factor = {rtf}
publish_rate = 20.0

[hil.plc]
endpoint = "{endpoint}"
session = "s"
reconnect_min = 0.2
reconnect_max = 1.0
{peer}
"""

#: the tank loop: level out as Float, valve command in (by browse path, namespace URI)
LOOP = """
[hil.plc.bindings.level]
variable = "tank.level"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.Level"

[hil.plc.bindings.valve]
variable = "tank.inflow"
direction = "from_plc"
browse_path = "0:Objects/urn:soft-plc:PLC/urn:soft-plc:Valve"
"""

#: casts: Float, Int16 (rounded, clamped), UInt16 (clamped), Boolean; Int16 into a Double
CASTS = """
[hil.plc.bindings.small]
variable = "small.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.LevelMm"

[hil.plc.bindings.big]
variable = "big.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.Count"

[hil.plc.bindings.negative]
variable = "negative.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.Word"

[hil.plc.bindings.overflow]
variable = "tank.overflow"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.Overflow"

[hil.plc.bindings.valve_mm]
variable = "scaled.input"
direction = "from_plc"
node = "nsu=urn:soft-plc;s=PLC.ValveMm"
"""


def load(endpoint: str, peer: str, *, rtf: float = 4.0, level: float = 0.5) -> LoadedConfig:
    """The tank twin (its level starting at ``level`` m) with peer ``plc`` serving
    session ``s`` at ``endpoint`` with the bindings ``peer``."""
    return parse_config(TWIN.format(endpoint=endpoint, peer=peer, rtf=rtf, level=level))


async def hosted_of(host: LocalHost, loaded: LoadedConfig) -> HostedSession:
    """Session "s" of the config, created in ``host`` (its clock not started)."""
    cfg = loaded.config.sessions["s"]
    await host.create("s", loaded.twins[cfg.twin], SessionSettings(
        step_size=cfg.step_size, realtime_factor=cfg.realtime_factor,
        publish_rate=cfg.publish_rate))
    return HostedSession(host, "s")


def quiet_host() -> LocalHost:
    """An in-process host whose events go nowhere and whose clocks a test starts."""
    return LocalHost(lambda name, event: None, clocks=False)


async def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Wait until ``condition()`` holds; return the seconds it took (fail after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - started


async def cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start_clock(session: Session) -> asyncio.Task[None]:
    session.start()
    return asyncio.create_task(Clock(session).run())


Runner = Callable[[], Awaitable[None]]
