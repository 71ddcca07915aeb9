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


@pytest.mark.asyncio(loop_scope="module")
class TestLiveFaults:
    async def test_stuck_level_sensor(self, daemon: Daemon) -> None:
        """A stuck level sensor injected over InjectFault holds tank.level while the tank
        fills, and clearing it shows the true level again; the fault ends with the run."""
        scenario = parse_scenario("""
[scenario]
name = "stuck"
session = "plant"
[[steps]]
set = "tank.inflow"
value = 0.3
[[steps]]
inject_fault = "stuck_level"
variable = "tank.level"
kind = "stuck"
parameters = { value = 0.25 }
[[steps]]
name = "the sensor shows the stuck value"
check = "tank.level == 0.25"
within = 2.0
[[steps]]
name = "it stays stuck while the tank fills"
check = "tank.level == 0.25"
always = 0.5
[[steps]]
wait = 0.5
[[steps]]
clear_fault = "stuck_level"
[[steps]]
name = "the true level shows again"
check = "tank.level > 0.3"
within = 2.0
""", file="stuck.toml")
        (result,) = await run_live([scenario], daemon.endpoint_url)
        assert result.error is None, result.error
        assert [c.verdict for c in result.checks] == [Verdict.PASSED] * 3, [
            c.describe() for c in result.checks]
        assert [r.outcome for r in result.steps][1] != "skipped"

    async def test_refused_fault_stops_the_run(self, daemon: Daemon) -> None:
        """A fault the server refuses (clearing one that is not active) breaks the run off
        with the server's status and message; the checks after it are skipped."""
        scenario = parse_scenario("""
[scenario]
name = "refused"
session = "plant"
[[steps]]
clear_fault = "no_such_fault"
[[steps]]
check = "tank.level > 0"
""", file="refused.toml")
        (result,) = await run_live([scenario], daemon.endpoint_url)
        assert result.error is not None
        assert "ClearFault" in result.error and "BadNotFound" in result.error, result.error
        assert "no_such_fault" in result.error, result.error
        assert [c.verdict for c in result.checks] == [Verdict.SKIPPED]

    async def test_link_cut_closes_the_valve(self, daemon: Daemon) -> None:
        """A link cut over HIL/plc/InjectLinkFault takes the valve command to its
        fallback (0, closed) and the level falls; cleared, the PLC drives it again."""
        scenario = parse_scenario("""
[scenario]
name = "cut"
session = "plant"
[[steps]]
name = "the PLC opens the valve"
check = "tank.inflow > 0"
within = 5.0
[[steps]]
inject_link_fault = "plc"
kind = "cut"
[[steps]]
name = "the valve takes its fallback"
check = "tank.inflow == 0"
within = 3.0
[[steps]]
name = "it stays closed while the link is cut"
check = "tank.inflow == 0"
always = 0.5
[[steps]]
wait = 0.5
[[steps]]
clear_link_fault = "plc"
[[steps]]
name = "the PLC drives the valve again"
check = "tank.inflow > 0"
within = 10.0
""", file="cut.toml")
        (result,) = await run_live([scenario], daemon.endpoint_url, session="plant")
        assert result.error is None, result.error
        assert [c.verdict for c in result.checks] == [Verdict.PASSED] * 4, [
            c.describe() for c in result.checks]

    async def test_refused_link_fault_stops_the_run(self, daemon: Daemon) -> None:
        """A link fault on a binding the peer has not is refused (BadNotFound, naming it)
        and breaks the run off."""
        scenario = parse_scenario("""
[scenario]
name = "badlink"
session = "plant"
[[steps]]
inject_link_fault = "plc"
kind = "freeze"
bindings = ["no_such_binding"]
[[steps]]
check = "tank.level > 0"
""", file="badlink.toml")
        (result,) = await run_live([scenario], daemon.endpoint_url, session="plant")
        assert result.error is not None
        assert "InjectLinkFault" in result.error and "BadNotFound" in result.error, result.error
        assert "no_such_binding" in result.error, result.error
