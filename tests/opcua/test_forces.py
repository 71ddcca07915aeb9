"""Forced inputs through a real asyncua client against a whole daemon: a write forces
an input, ReleaseInput and ReleaseInputs release it, Reset returns the session to
its defined state, ForcedInputs shows which are forced, in-process, in a worker and
across a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.opcua.conftest import (
    MODULE_LOOP,
    PLANT,
    Connected,
    in_process,
    message,
    run_daemon,
    s,
    stop_daemon,
)
from twin_server.engine.session import RunState, VarKey
from twin_server.models.base import Kind
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

CONFIG = PLANT + """
[server]
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.main]
twin = "plant"
publish_rate = 20.0
autostart = false
"""

INFLOW = "Components.tank.Inputs.inflow"
SETPOINT = "Components.controller.Inputs.setpoint"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


async def connect(daemon: Daemon) -> AsyncIterator[Connected]:
    async with Client(daemon.endpoint_url, timeout=10) as client:
        yield Connected(daemon, client, await client.get_namespace_index(NAMESPACE_URI))


@pytest_asyncio.fixture(loop_scope="module")
async def ua_client(daemon: Daemon) -> AsyncIterator[Connected]:
    """A connected client; afterwards the session is Ready again with nothing forced."""
    try:
        async for connected in connect(daemon):
            yield connected
    finally:
        main = in_process(daemon, "main")
        main.release_all()
        if main.state is not RunState.READY:
            main.reset()


def var(c: Connected, path: str, session: str = "main") -> ua.NodeId:
    return ua.NodeId(f"Sessions.{session}.{path}", c.ns)


async def forced_inputs(c: Connected, session: str = "main") -> list[str]:
    value = await c.client.get_node(var(c, "ForcedInputs", session)).read_value()
    return list(value or [])


async def until_forced(c: Connected, expected: list[str], session: str = "main",
                       timeout: float = 5.0) -> None:
    """Wait until ForcedInputs reads ``expected``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (shown := await forced_inputs(c, session)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"ForcedInputs still {shown}"
        await asyncio.sleep(0.05)


async def write(c: Connected, path: str, value: float, session: str = "main") -> None:
    await c.client.get_node(var(c, path, session)).write_value(
        ua.Variant(value, ua.VariantType.Double))


class TestForcedInputs:
    async def test_a_write_forces_and_shows(self, ua_client: Connected) -> None:
        """Writing an input forces it, and ForcedInputs names it."""
        assert await forced_inputs(ua_client) == []
        await write(ua_client, INFLOW, 0.01)
        await until_forced(ua_client, ["tank.inflow"])

    async def test_release_input(self, ua_client: Connected) -> None:
        """ReleaseInput stops forcing one input: it follows its connection again."""
        await write(ua_client, INFLOW, 0.01)
        await write(ua_client, SETPOINT, 1.5)
        await until_forced(ua_client, ["tank.inflow", "controller.setpoint"])  # (layout order)
        result = await ua_client.session_call("main", "ReleaseInput", s("tank.inflow"))
        assert result.StatusCode.is_good(), message(result)
        await until_forced(ua_client, ["controller.setpoint"])
        main = in_process(ua_client.daemon, "main")
        assert main.read(VarKey("tank", Kind.INPUT, "inflow")) == \
            main.read(VarKey("controller", Kind.OUTPUT, "output"))
        again = await ua_client.session_call("main", "ReleaseInput", s("tank.inflow"))
        assert again.StatusCode.is_good()  # (not forced: nothing to do)

    async def test_release_inputs(self, ua_client: Connected) -> None:
        """ReleaseInputs releases every forced input and names them."""
        await write(ua_client, INFLOW, 0.01)
        await write(ua_client, SETPOINT, 1.5)
        result = await ua_client.session_call("main", "ReleaseInputs")
        assert result.StatusCode.is_good(), message(result)
        assert sorted(result.OutputArguments[0].Value) == ["controller.setpoint",
                                                           "tank.inflow"]
        await until_forced(ua_client, [])
        assert in_process(ua_client.daemon, "main").forced() == {}

    @pytest.mark.parametrize(("name", "status"), [
        pytest.param("tank.nope", "BadNotFound", id="unknown-input"),
        pytest.param("tank.level", "BadNotFound", id="an-output"),
        pytest.param("nobody.inflow", "BadNotFound", id="unknown-component"),
        pytest.param("tank", "BadInvalidArgument", id="no-dot"),
    ])
    async def test_release_input_refused(self, ua_client: Connected, name: str,
                                         status: str) -> None:
        """ReleaseInput of what is not an input is refused with the precise status."""
        await write(ua_client, INFLOW, 0.01)
        result = await ua_client.session_call("main", "ReleaseInput", s(name))
        assert result.StatusCode.name in (status, "BadInvalidArgument")
        assert result.InputArgumentResults[0].name == status
        assert name in message(result) or "component" in message(result)
        await until_forced(ua_client, ["tank.inflow"])

    async def test_reset_releases(self, ua_client: Connected) -> None:
        """Reset returns the session to its defined state: nothing stays forced."""
        await write(ua_client, INFLOW, 0.01)
        assert (await ua_client.session_call("main", "Start")).StatusCode.is_good()
        assert (await ua_client.session_call("main", "Halt")).StatusCode.is_good()
        await until_forced(ua_client, ["tank.inflow"])
        result = await ua_client.session_call("main", "Reset")
        assert result.StatusCode.is_good(), message(result)
        await until_forced(ua_client, [])
        assert in_process(ua_client.daemon, "main").forced() == {}


class TestWorkers:
    async def test_forces_through_a_worker(self) -> None:
        """In a worker process: a write forces, ForcedInputs shows it, ReleaseInputs and
        Reset release."""
        daemon, task = await run_daemon(CONFIG.replace(
            "session_idle_timeout = 0", "session_idle_timeout = 0\nworkers = 1"))
        try:
            async for c in connect(daemon):
                await write(c, INFLOW, 0.01)
                await until_forced(c, ["tank.inflow"])
                result = await c.session_call("main", "ReleaseInputs")
                assert result.OutputArguments[0].Value == ["tank.inflow"]
                await until_forced(c, [])
                await write(c, SETPOINT, 1.5)
                await until_forced(c, ["controller.setpoint"])
                assert (await c.session_call("main", "Reset")).StatusCode.is_good()
                await until_forced(c, [])
        finally:
            await stop_daemon(daemon, task)


class TestRestart:
    async def test_forces_and_releases_survive_a_restart(self, tmp_path: Path) -> None:
        """A force still held at a stop is held (and shown) after the restart; one
        released before the stop is not."""
        daemon, task = await run_daemon(CONFIG, tmp_path)
        try:
            async for c in connect(daemon):
                await write(c, INFLOW, 0.01)
                await write(c, SETPOINT, 1.5)
                result = await c.session_call("main", "ReleaseInput", s("tank.inflow"))
                assert result.StatusCode.is_good()
                await until_forced(c, ["controller.setpoint"])
        finally:
            await stop_daemon(daemon, task)
        daemon, task = await run_daemon(CONFIG, tmp_path)
        try:
            async for c in connect(daemon):
                await until_forced(c, ["controller.setpoint"])
                main = in_process(daemon, "main")
                assert main.forced() == {VarKey("controller", Kind.INPUT, "setpoint"): 1.5}
                assert (await c.session_call("main", "ReleaseInputs")).StatusCode.is_good()
                await until_forced(c, [])
        finally:
            await stop_daemon(daemon, task)
        daemon, task = await run_daemon(CONFIG, tmp_path)
        try:
            assert in_process(daemon, "main").forced() == {}
        finally:
            await stop_daemon(daemon, task)
