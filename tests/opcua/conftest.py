"""A real server on 127.0.0.1 (port 0), a real session of a tank-under-PID twin,
and a real asyncua client connected to it.

asyncua's Server.init loads the standard address space in seconds, so one server
serves a whole test module (its tests run in the module's event loop: each
module sets ``pytestmark = MODULE_LOOP``), with one in-process session host
(``LocalHost``, its clocks not started: a test ticks by hand or runs the clock
with ``running``); every test gets a fresh session, added before and removed
after it, with its pacer (feeding the server's publisher alone; ``running`` runs
it), and its own client connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua

from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.engine.session import Session, SessionSettings
from twin_server.engine.twin import TwinDefinition
from twin_server.opcua.server import NAMESPACE_URI, OpcUaServer
from twin_server.runtime import HostedSession, LocalHost
from twin_server.runtime.clock import Clock
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon
from twin_server.runtime.sinks import Pacer

#: the None endpoint, anonymous may do everything (security is tested in tests/security)
OPEN = SecurityConfig(policies=("None",), anonymous="admin")

PLANT = """
[twins.plant]
description = "Water tank with a PID level controller"
connections = [
    "setpoint.output -> controller.setpoint",
    "tank.level -> controller.measurement",
    "controller.output -> tank.inflow",
]

[twins.plant.components.setpoint]
model = "step"
description = "Level setpoint"
parameters = { initial = 0.5, final = 1.0, step_time = 0.5 }

[twins.plant.components.tank]
model = "water_tank"
parameters = { area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }

[twins.plant.components.controller]
model = "pid"
parameters = { kp = 0.2, ki = 0.004, output_min = 0.0, output_max = 0.05 }
"""


MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@functools.cache
def plant() -> TwinDefinition:
    return parse_config(PLANT).twins["plant"]


@dataclass
class Served:
    """What a test talks to: the server, the session behind it (the in-process
    ``Session`` itself, its clock, and its handle in the host) and a connected client."""

    server: OpcUaServer
    session: Session
    clock: Clock
    client: Client
    ns: int
    hosted: HostedSession
    pacer: Pacer

    def node(self, path: str) -> Node:
        """The client node of a dotted path below TwinServer."""
        return self.client.get_node(ua.NodeId(path, self.ns))

    def var(self, path: str) -> Node:
        """A node of the served session: ``var("Components.tank.Outputs.level")``;
        ``var("")`` is the session object itself."""
        return self.node(".".join(p for p in ("Sessions", self.session.name, path) if p))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[OpcUaServer]:
    srv = OpcUaServer(ServerConfig(security=OPEN), endpoint="opc.tcp://127.0.0.1:0/twin-server")
    await srv.start()
    await srv.add_twin(plant())
    try:
        yield srv
    finally:
        await srv.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host(server: OpcUaServer) -> AsyncIterator[LocalHost]:
    """The sessions' host: in-process, its events to the server, no clock tasks."""
    async with LocalHost(server.session_event, clocks=False) as local:
        yield local


async def serve(server: OpcUaServer, host: LocalHost, name: str,
                settings: SessionSettings | None = None,
                twin: TwinDefinition | None = None, pacer: Pacer | None = None) -> Session:
    """Create session ``name`` in ``host`` and serve it, paced by ``pacer`` (default:
    one feeding the server's publisher, not running); the in-process Session."""
    twin = twin or plant()
    await host.create(name, twin, settings or SessionSettings())
    hosted = HostedSession(host, name)
    try:
        await server.add_session(hosted, twin,
                                 pacer=pacer or Pacer(hosted, (server.publisher,)))
    except BaseException:
        await host.delete(name)
        raise
    return host.session(name)


async def unserve(server: OpcUaServer, host: LocalHost, name: str) -> None:
    """Take session ``name`` out of the address space, then out of the host."""
    try:
        await server.remove_session(name)
    finally:
        await host.delete(name)


@pytest.fixture
def settings() -> SessionSettings:
    return SessionSettings(step_size=0.01, realtime_factor=1.0, publish_rate=50.0)


@pytest_asyncio.fixture(loop_scope="module")
async def served(server: OpcUaServer, host: LocalHost,
                 settings: SessionSettings) -> AsyncIterator[Served]:
    hosted = HostedSession(host, "tank")
    pacer = Pacer(hosted, (server.publisher,))
    session = await serve(server, host, "tank", settings, pacer=pacer)
    try:
        async with Client(server.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Served(server, session, host.clock("tank"), client, ns, hosted, pacer)
    finally:
        await unserve(server, host, "tank")


@pytest_asyncio.fixture(loop_scope="module")
async def running(served: Served) -> AsyncIterator[Served]:
    """``served`` with the session's real clock, its pacer and the publisher running."""
    tasks = [asyncio.create_task(served.clock.run()),
             asyncio.create_task(served.pacer.run()),
             asyncio.create_task(served.server.publish_forever())]
    try:
        yield served
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- a whole daemon (the OPC UA methods' Runtime), one per test module ------------------

#: seconds a test daemon may take to be READY (an idle machine: 1-2 s)
READY_TIMEOUT = 30.0


async def run_daemon(config: str, state_dir: Path | None = None, *,
                     timeout: float | None = None) -> tuple[Daemon, asyncio.Task[None]]:
    """Start a Daemon serving ``config`` on a free port; return it once ready (its
    sessions in-process unless ``[server] workers`` is given). Its
    state (the history database) goes to ``state_dir``, else a fresh temporary folder
    that ``stop_daemon`` removes, so that no test resumes another's sessions.
    ``timeout``: seconds it may take to be READY (``start_daemon``; default
    ``READY_TIMEOUT``)."""
    loaded = parse_config(config)
    state = state_dir
    if state is None:
        state = Path(tempfile.mkdtemp(prefix="twin-server-test-"))
        _TEMPORARY.add(state)
    update: dict[str, object] = {"state_dir": str(state)}
    if "workers" not in loaded.config.server.model_fields_set:
        # in-process sessions unless the test asks for workers: starting worker
        # processes costs 0.5-2.5 s a daemon (tests/test_workers.py runs them)
        update["workers"] = 0
    server = loaded.config.server.model_copy(update=update)
    # (a web front on a free port: the demo's 8080 may be taken)
    web = loaded.config.web.model_copy(update={"port": 0})
    loaded = dataclasses.replace(loaded, config=loaded.config.model_copy(
        update={"server": server, "web": web}))
    daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
    try:
        task = await start_daemon(daemon, READY_TIMEOUT if timeout is None else timeout)
    except BaseException:
        if state in _TEMPORARY:
            _TEMPORARY.discard(state)
            shutil.rmtree(state, ignore_errors=True)
        raise
    return daemon, task


async def start_daemon(daemon: Daemon, timeout: float = READY_TIMEOUT) -> asyncio.Task[None]:
    """Run ``daemon`` in a task; return the task once the daemon is READY. What stopped
    a daemon that failed to start is raised; one not READY within ``timeout`` seconds
    is cancelled and TimeoutError raised (not awaited for ever: it would never end)."""
    task = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.wait_ready())
    await asyncio.wait([task, ready], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        return task
    ready.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise TimeoutError(f"the daemon was not READY within {timeout:g} s (it was "
                           f"{daemon.state}); cancelled")
    await task  # raises what stopped it
    raise RuntimeError("the daemon ended before it was READY, without an error")


async def stop_daemon(daemon: Daemon, task: asyncio.Task[None]) -> None:
    daemon.stop()
    try:
        await asyncio.wait_for(task, 30)
    finally:
        state = Path(daemon.loaded.config.server.state_dir)
        if state in _TEMPORARY:
            _TEMPORARY.discard(state)
            shutil.rmtree(state, ignore_errors=True)


def in_process(daemon: Daemon, name: str) -> Session:
    """The ``Session`` object of a daemon's session (``workers = 0``: it steps in this
    process), for tests that read or drive it directly."""
    host = daemon.host
    assert isinstance(host, LocalHost), "the daemon runs its sessions in workers"
    return host.session(name)


#: state_dirs run_daemon made (stop_daemon removes them)
_TEMPORARY: set[Path] = set()


@dataclass
class Connected:
    """A daemon and a client connected to it."""

    daemon: Daemon
    client: Client
    ns: int

    def node(self, path: str) -> Node:
        return self.client.get_node(ua.NodeId(path, self.ns))

    async def call(self, obj: str, method: str, *args: ua.Variant) -> ua.CallMethodResult:
        """Call ``method`` (a path below TwinServer) on ``obj``; the raw result."""
        request = ua.CallMethodRequest(ObjectId=ua.NodeId(obj, self.ns),
                                       MethodId=ua.NodeId(method, self.ns),
                                       InputArguments=list(args))
        (result,) = await self.client.uaclient.call([request])
        return result

    async def server_call(self, method: str, *args: ua.Variant) -> ua.CallMethodResult:
        return await self.call("TwinServer", method, *args)

    async def session_call(self, session: str, method: str,
                           *args: ua.Variant) -> ua.CallMethodResult:
        return await self.call(f"Sessions.{session}", f"Sessions.{session}.{method}", *args)

    async def create(self, name: str, parameters: str = "", twin: str = "plant") -> ua.NodeId:
        result = await self.server_call("CreateSession", s(twin), s(name), s(parameters))
        assert result.StatusCode.is_good(), _diagnostics(result)
        return result.OutputArguments[0].Value  # type: ignore[no-any-return]


def s(text: str) -> ua.Variant:
    """A String argument."""
    return ua.Variant(text, ua.VariantType.String)


def _diagnostics(result: ua.CallMethodResult) -> str:
    return f"{result.StatusCode.name}: " + " | ".join(
        d.AdditionalInfo or "" for d in result.InputArgumentDiagnosticInfos or [])


def message(result: ua.CallMethodResult) -> str:
    """Every diagnostic message of a refused call, joined."""
    return " | ".join(d.AdditionalInfo for d in result.InputArgumentDiagnosticInfos or []
                      if d.AdditionalInfo)
