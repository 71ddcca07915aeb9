"""Live runs against a daemon over OPC UA: the HIL example against the soft PLC (its
interlock) in a subprocess, and a scenario on a fork the run creates and deletes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.hil.conftest import SoftPlc
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon
from twin_server.scenarios.live import run_live
from twin_server.scenarios.results import Verdict
from twin_server.scenarios.schema import parse_scenario, read_scenario

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "configs" / "scenarios"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def plc() -> Iterator[SoftPlc]:
    plc = SoftPlc("--high-limit", "1.5").start()
    try:
        yield plc
    finally:
        plc.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(plc: SoftPlc) -> AsyncIterator[Daemon]:
    """configs/hil.toml on a free port, bound to the soft PLC, anonymous admin."""
    text = (ROOT / "configs" / "hil.toml").read_text()
    text = text.replace("opc.tcp://127.0.0.1:4841/plc", plc.endpoint)
    text = text.replace('policies = ["None", "Basic256Sha256"]\nmodes = ["SignAndEncrypt"]\n'
                        'anonymous = "operator"', 'policies = ["None"]\nanonymous = "admin"')
    daemon = Daemon(parse_config(text, file="hil.toml"),
                    endpoint="opc.tcp://127.0.0.1:0/twin-server")
    runner = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.wait_ready(), 30)
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)


@pytest.mark.asyncio(loop_scope="module")
class TestLive:
    async def test_hil_interlock(self, daemon: Daemon) -> None:
        """The HIL example passes on the PLC's session: its interlock trips, the valve closes."""
        scenario = read_scenario(EXAMPLES / "hil_interlock.toml")
        (result,) = await run_live([scenario], daemon.endpoint_url, session="plant")
        assert result.error is None, result.error
        assert [c.verdict for c in result.checks] == [Verdict.PASSED] * 3, [
            c.describe() for c in result.checks]
        tripped = result.checks[2]
        assert tripped.seen == {"plc.high_alarm": True, "tank.inflow": 0.0}
        assert result.mode == "live" and result.session == "plant"

    async def test_fork_is_created_and_deleted(self, daemon: Daemon) -> None:
        """Without a session given, the run forks the scenario's session and deletes the
        fork afterwards; a failing check fails there as offline."""
        scenario = parse_scenario("""
[scenario]
name = "forked"
session = "plant"
[[steps]]
set = "tank.inflow"
value = 0.3
[[steps]]
check = "tank.level > 0"
always = 0.5
[[steps]]
check = "tank.level > 5"
within = 0.3
""", file="forked.toml")
        (result,) = await run_live([scenario], daemon.endpoint_url)
        assert [c.verdict for c in result.checks] == [Verdict.PASSED, Verdict.FAILED]
        assert result.session.startswith("scenario_forked_")
        assert 0.3 <= result.sim_time < 2.0
        assert result.session not in daemon.sessions
        async with Client(daemon.endpoint_url) as client:
            ns = await client.get_namespace_index("urn:twin-server")
            forced = client.get_node(ua.NodeId("Sessions.plant.Components.tank.Inputs.inflow",
                                               ns))
            assert await forced.read_value() != 0.3  # the PLC's session was not touched
