"""The README's examples run as written against the demo (configs/demo.toml, what
`make run` serves): the what-if script of "Sessions over OPC UA", after the user it
tells to add with the real `twin-server user add` (issue #15: its anonymous
CreateSession was refused on the demo)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.opcua.conftest import MODULE_LOOP, run_daemon, stop_daemon
from twin_server import cli
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
DEMO = ROOT / "configs" / "demo.toml"
#: the endpoint the README's examples use: `make run`'s
DEMO_ENDPOINT = "opc.tcp://127.0.0.1:4840/twin-server"
PASSWORD = "the whatif password"


def python_block(after: str) -> str:
    """The first ```python block of the README after the text ``after``."""
    start = README.index(after)
    match = re.search(r"```python\n(.*?)```", README[start:], re.DOTALL)
    assert match is not None, f"no python block after {after!r}"
    return match.group(1)


def shell_line(command: str) -> list[str]:
    """The README's indented command line that starts with ``command``, as arguments."""
    match = re.search(rf"^    ({re.escape(command)}.*)$", README, re.MULTILINE)
    assert match is not None, f"the README has no command line {command!r}"
    return match.group(1).split()


async def run(*args: str, env: dict[str, str] | None = None,
              timeout: float = 45.0) -> tuple[int, str]:
    """Run a command beside the daemon (in this event loop); exit status and output."""
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})})
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo() -> AsyncIterator[tuple[Daemon, Path]]:
    state = Path(tempfile.mkdtemp(prefix="twin-server-readme-"))
    daemon, task = await run_daemon(DEMO.read_text(), state)
    try:
        yield daemon, state
    finally:
        await stop_daemon(daemon, task)
        shutil.rmtree(state, ignore_errors=True)


class TestQuickStart:
    async def test_make_run_serves_the_demo_where_the_examples_connect(self) -> None:
        """`make run` serves configs/demo.toml, at the endpoint the quick start names and
        the examples below connect to, with anonymous clients operating (not admin)."""
        assert re.search(r"^CONFIG \?= configs/demo\.toml$", (ROOT / "Makefile").read_text(),
                         re.MULTILINE)
        loaded = parse_config(DEMO.read_text())
        assert loaded.config.server.endpoint == DEMO_ENDPOINT
        assert loaded.config.server.security.anonymous == "operator"
        quick = README[README.index("## Quick start"):README.index("## Commands")]
        assert f"`make run` serves the demo at `{DEMO_ENDPOINT}`" in quick


class TestSessionsExample:
    async def test_whatif_script_runs_on_the_demo(self, demo: tuple[Daemon, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        """The user the README adds and its what-if script, run as written against the
        demo: every call succeeds and it prints the level a minute ahead."""
        daemon, state = demo
        add = shell_line(".venv/bin/twin-server user add")
        assert add[-2:] == ["--config", "configs/demo.toml"]
        # the same command (in this process: one interpreter less to start), for this
        # daemon's state_dir rather than var/; the password comes on stdin
        monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
        assert cli.main([*add[1:-2], "--state-dir", str(state)]) == 0
        script = python_block("A what-if run against the demo")
        assert DEMO_ENDPOINT in script
        script = script.replace(DEMO_ENDPOINT, daemon.endpoint_url)
        status, out = await run(sys.executable, "-c", script,
                                env={"TWIN_SERVER_PASSWORD": PASSWORD})
        assert status == 0, out
        level = re.search(r"^level in a minute: ([0-9.]+)$", out, re.MULTILINE)
        assert level is not None, out
        assert 0.0 < float(level.group(1)) <= 2.0
        assert re.search(r"^whatif created 100 session 'whatif'", out, re.MULTILINE), out
        assert not {"whatif", "ahead"} & set(daemon.manager.sessions)


class TestStuckSensorExample:
    async def test_stuck_sensor_script_runs_on_the_demo(
            self, demo: tuple[Daemon, Path]) -> None:
        """The stuck level sensor of "Fault injection", run as written against the demo:
        the sensor reads 0.6 m, the tank overflows, HighLevel is HighHigh, and the
        fault is cleared and the tank running after it."""
        daemon, _ = demo
        script = python_block("A stuck level sensor on the demo")
        assert DEMO_ENDPOINT in script
        status, out = await run(sys.executable, "-c",
                                script.replace(DEMO_ENDPOINT, daemon.endpoint_url))
        assert status == 0, out
        found = re.search(r"^sensor ([0-9.]+) m, tank ([0-9.]+) m, valve ([0-9.]+) m3/s, "
                          r"HighLevel: (.+)$", out, re.MULTILINE)
        assert found is not None, out
        assert float(found.group(1)) == 0.6
        assert float(found.group(2)) > 1.8
        assert float(found.group(3)) == 0.05
        assert found.group(4) == "HighHigh active"
        assert found.group(0) in " ".join(README.split())  # what the README says it prints
        tank = daemon.sessions["tank"].session
        assert not await tank.faults()
        assert tank.frame().state.name == "RUNNING"
