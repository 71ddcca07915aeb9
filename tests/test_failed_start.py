"""A config session whose FMU cannot initialise (crash2 with ``how = 4``: its
fmi2ExitInitializationMode returns Error) does not keep the daemon from starting:
the session is served Halted on the fault, named on its nodes, in its event
history and in the log, and every other session is served as usual. Against the
daemon in this process and as ``twin-server run`` in a subprocess, with sessions
in-process (``workers = 0``) and in worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from asyncua import Client, ua

from tests.models.fmu import conftest as fmu_conftest
from tests.test_worker_health import served
from twin_server.opcua.server import NAMESPACE_URI

pytestmark = fmu_conftest.pytestmark  # (gcc builds the FMU)

fmus = fmu_conftest.fmus
cache_dir = fmu_conftest.cache_dir

ROOT = Path(__file__).resolve().parents[1]
REFUSE_INIT = 4
#: what the fault says: the FMI call, its status and the FMU's own log message
CAUSE = "fmi2ExitInitializationMode returned Error"
FMU_LOG = "how = 4: this FMU refuses to initialise"

CONFIG = """
[server]
workers = {workers}
session_idle_timeout = 0
fmu_dirs = ["{fmu.parent}"]

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[twins.good.components.source]
model = "constant"
parameters = {{ value = 1.0 }}

[twins.good.components.lag]
model = "first_order_lag"

[twins.good]
connections = ["source.output -> lag.input"]

[twins.bad.components.source]
model = "constant"

[twins.bad.components.plant]
model = "fmu"
options = {{ path = "{fmu}", cache_dir = "{cache}" }}
parameters = {{ how = {how} }}

[twins.bad]
connections = ["source.output -> plant.u"]

[history]
batch_interval = 0.05

[sessions.before]
twin = "good"
step_size = 0.01

[sessions.broken]
twin = "bad"
step_size = 0.01

[sessions.after]
twin = "good"
step_size = 0.01
"""


def config(fmu: Path, cache: Path, workers: int, how: int = REFUSE_INIT) -> str:
    """Sessions ``before`` and ``after`` of a plain twin around ``broken``, whose FMU
    refuses to initialise; all autostart."""
    return CONFIG.format(fmu=fmu, cache=cache, workers=workers, how=how)


WORKERS = [pytest.param(0, id="in-process"), pytest.param(1, id="workers")]


class Nodes:
    """A client's view of the daemon's sessions."""

    def __init__(self, client: Client, ns: int) -> None:
        self.client = client
        self.ns = ns

    async def read(self, path: str) -> Any:
        return await self.client.get_node(ua.NodeId(path, self.ns)).read_value()

    async def until(self, path: str, expected: Any, timeout: float = 10.0) -> None:
        """Poll ``path`` until it reads ``expected`` (the health nodes, Fault among
        them, are refreshed every half second: no event to await)."""
        value = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (value := await self.read(path)) != expected:
                    await asyncio.sleep(0.05)
        assert value == expected, f"{path} is {value!r}, expected {expected!r}"

    async def ticking(self, session: str, timeout: float = 10.0) -> None:
        """Wait until ``session`` is Running and its step count moves."""
        first = await self.read(f"Sessions.{session}.StepCount")
        async with asyncio.timeout(timeout):
            while (await self.read(f"Sessions.{session}.StepCount")) <= first:
                await asyncio.sleep(0.05)
        assert await self.read(f"Sessions.{session}.State") == "Running"

    async def halted_on_the_fault(self, session: str = "broken") -> None:
        """``session`` is Halted, its Fault node names the component and the cause."""
        assert await self.read(f"Sessions.{session}.State") == "Halted"
        assert await self.read(f"Sessions.{session}.StepCount") == 0
        fault = await self.read(f"Sessions.{session}.Diagnostics.Fault")
        assert "component 'plant'" in fault and CAUSE in fault and FMU_LOG in fault

    async def event_messages(self, session: str, wanted: str,
                             timeout: float = 10.0) -> list[str]:
        """The messages of the session's event history, once one contains ``wanted``
        (history is written in batches)."""
        node = self.client.get_node(ua.NodeId(f"Sessions.{session}", self.ns))
        async with asyncio.timeout(timeout):
            while True:
                now = datetime.now(UTC)
                events = await node.read_event_history(now - timedelta(minutes=5),
                                                       now + timedelta(minutes=1))
                messages = [e.Message.Text for e in events]
                if any(wanted in m for m in messages):
                    return messages
                await asyncio.sleep(0.05)

    async def call(self, session: str, method: str, *args: ua.Variant) -> ua.StatusCode:
        result = await self.client.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId(f"Sessions.{session}", self.ns),
            MethodId=ua.NodeId(f"Sessions.{session}.{method}", self.ns),
            InputArguments=list(args))])
        return result[0].StatusCode


class TestInProcessDaemon:
    @pytest.mark.parametrize("workers", WORKERS)
    async def test_failed_session_served_halted_beside_the_others(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path,
            workers: int) -> None:
        """The daemon starts; the sessions declared before and after the broken one run;
        the broken one is Halted at tick 0 with the FMU's error on its Fault node, in a
        fault event of its history and in a session_start_failed log event."""
        with structlog.testing.capture_logs() as logs:
            async with served(config(fmus["crash2"], cache_dir, workers), tmp_path) as s:
                nodes = Nodes(s.client, s.ns)
                await nodes.ticking("before")
                await nodes.ticking("after")
                await nodes.halted_on_the_fault()
                messages = await nodes.event_messages("broken", "halted; fix the cause")
        failed = [e for e in logs if e["event"] == "session_start_failed"]
        assert [e["session"] for e in failed] == ["broken"]
        assert CAUSE in failed[0]["fault"] and FMU_LOG in failed[0]["fault"]
        created = next(m for m in messages if "created from the config" in m)
        assert "its first Reset failed" in created and CAUSE in created
        fault = messages[messages.index(created) + 1]  # the fault event, right after it
        assert fault.startswith("session 'broken': component 'plant'") and CAUSE in fault

    @pytest.mark.parametrize("workers", WORKERS)
    async def test_fix_the_parameter_and_reset(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path,
            workers: int) -> None:
        """The fault says what to do: Reset with a parameter the FMU accepts brings the
        broken session to Ready, and Start runs it."""
        async with served(config(fmus["crash2"], cache_dir, workers), tmp_path) as s:
            nodes = Nodes(s.client, s.ns)
            status = await nodes.call("broken", "Reset", ua.Variant(
                '{"plant": {"how": 0}}', ua.VariantType.String))
            assert status.is_good(), status
            assert await nodes.read("Sessions.broken.State") == "Ready"
            await nodes.until("Sessions.broken.Diagnostics.Fault", "")
            assert (await nodes.call("broken", "Start")).is_good()
            await nodes.ticking("broken")

    async def test_restart_on_the_same_state_halts_it_again(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """Started again on its saved state, the daemon brings the session back Halted
        on the same failure (not skipped, not crashing), the others resumed."""
        text = config(fmus["crash2"], cache_dir, 0)
        async with served(text, tmp_path):
            pass
        async with served(text, tmp_path) as s:
            nodes = Nodes(s.client, s.ns)
            await nodes.ticking("before")
            await nodes.halted_on_the_fault()

    async def test_client_create_session_is_still_refused(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path) -> None:
        """CreateSession of the broken twin at run time answers with the fault and
        creates nothing (the client hears why at once)."""
        async with served(config(fmus["crash2"], cache_dir, 0), tmp_path) as s:
            result = await s.client.uaclient.call([ua.CallMethodRequest(
                ObjectId=ua.NodeId("TwinServer", s.ns),
                MethodId=ua.NodeId("CreateSession", s.ns),
                InputArguments=[ua.Variant("bad", ua.VariantType.String),
                                ua.Variant("mine", ua.VariantType.String),
                                ua.Variant("", ua.VariantType.String)])])
            assert not result[0].StatusCode.is_good()
            assert "mine" not in s.daemon.sessions


@contextlib.asynccontextmanager
async def daemon_process(text: str, tmp_path: Path
                         ) -> AsyncIterator[tuple[Nodes, list[dict[str, Any]]]]:
    """``twin-server run`` on ``text`` in a subprocess (port 0, state in ``tmp_path``),
    a client connected once it logged daemon_ready; yields the nodes and the log
    events read so far. Ends it with SIGTERM and checks that it stopped cleanly."""
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(
        "[server]\n", f'[server]\nstate_dir = "{tmp_path}"\n'
                      'endpoint = "opc.tcp://127.0.0.1:0/twin-server"\n', 1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "twin_server", "run", str(path), cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    logged: list[dict[str, Any]] = []
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stderr.readline()
                assert line, "the daemon ended before it was ready:\n" + b"".join(
                    lines).decode(errors="replace")[-3000:]
                lines.append(line)
                with contextlib.suppress(ValueError):
                    logged.append(json.loads(line))
                if logged and logged[-1].get("event") == "daemon_ready":
                    break
        async with Client(logged[-1]["endpoint"], timeout=10) as client:
            yield Nodes(client, await client.get_namespace_index(NAMESPACE_URI)), logged
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        code = await asyncio.wait_for(proc.wait(), 30)
    everything = b"".join(lines) + rest
    assert b"Traceback" not in everything, everything.decode(errors="replace")[-3000:]
    assert code == 0


class TestRunCommand:
    @pytest.mark.parametrize("workers", WORKERS)
    async def test_run_serves_every_session_and_the_failed_one_halted(
            self, tmp_path: Path, fmus: dict[str, Path], cache_dir: Path,
            workers: int) -> None:
        """``twin-server run`` of a config with an FMU session that cannot initialise
        serves every session (the broken one Halted on its fault, a fault event in its
        event history, logged as session_start_failed) and stops cleanly on SIGTERM
        (exit 0, no traceback)."""
        text = config(fmus["crash2"], cache_dir, workers)
        async with daemon_process(text, tmp_path) as (nodes, logged):
            await nodes.ticking("before")
            await nodes.ticking("after")
            await nodes.halted_on_the_fault()
            messages = await nodes.event_messages("broken", "halted; fix the cause")
            (fault,) = [m for m in messages if m.startswith("session 'broken': component")]
            assert CAUSE in fault and FMU_LOG in fault
        failed = [e for e in logged if e.get("event") == "session_start_failed"]
        assert [e["session"] for e in failed] == ["broken"]
        assert logged[-1]["sessions"] == 3
