"""The node-opcua harness itself: an independent stack connects to the real daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.nodeopcua import NodeOpcua, NodeScriptError, node
from tests.opcua.conftest import MODULE_LOOP, PLANT, run_daemon, stop_daemon
from tests.processes import children, left_behind
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

CONFIG = PLANT + """
[server.security]  # the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[sessions.main]
twin = "plant"
step_size = 0.01
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


class TestHarness:
    async def test_browses_and_reads(self, nodeopcua: NodeOpcua, daemon: Daemon) -> None:
        """node-opcua connects to the daemon, browses a component's outputs and reads them."""
        ns = (await nodeopcua.run(
            "const { main, withSession } = require('./lib');\n"
            "main(async (args, opcua) => withSession(args, async (session) => "
            "(await session.readNamespaceArray())));",
            daemon.endpoint_url)).index(NAMESPACE_URI)
        out = await nodeopcua.run("browse_read.js", daemon.endpoint_url,
                                  node=f"ns={ns};s=Sessions.main.Components.tank.Outputs")
        names = {ref["browseName"] for ref in out["browse"]}
        assert f"{ns}:level" in names
        level = out["values"][f"{ns}:level"]
        assert level["status"] == "Good"
        assert 0.0 < level["value"] < 2.0  # the running session's level, within the tank

    async def test_failure_shows_stderr(self, nodeopcua: NodeOpcua, daemon: Daemon) -> None:
        """A failing script raises with what it wrote on stderr."""
        with pytest.raises(NodeScriptError, match=r"(?s)no such node.*on stderr"):
            await nodeopcua.run("const { main } = require('./lib');\n"
                                "main(async () => { console.error('on stderr'); "
                                "throw new Error('no such node'); });", daemon.endpoint_url)
        # and the runner goes on with the next script
        assert await nodeopcua.run("require('./lib').main(async (args) => args.x);",
                                   daemon.endpoint_url, x=[1, 2]) == [1, 2]

    async def test_timeout_is_reported(self, nodeopcua: NodeOpcua, daemon: Daemon) -> None:
        """A script that hangs is killed after its timeout, with its stderr in the error."""
        with pytest.raises(NodeScriptError, match=r"(?s)within 5\.0 s.*waiting"):
            await nodeopcua.run("require('./lib').main(async () => { "
                                "console.error('waiting'); await new Promise(() => {}); });",
                                daemon.endpoint_url, timeout=5.0)
        # a new runner takes the next script
        assert await nodeopcua.run("require('./lib').main(async () => 7);",
                                   daemon.endpoint_url) == 7


class TestClosed:
    async def test_a_request_after_close_starts_no_runner(self) -> None:
        """A script asked for after its module's runner closed (a timed-out test's
        request, still waiting for the lock) fails and leaves no node process running."""
        if node() is None:
            pytest.skip("node (Node.js) is not installed")
        runner = NodeOpcua()
        runner.close()
        before = set(children())
        with pytest.raises(NodeScriptError, match="the runner is closed"):
            await runner.run("read.js", "opc.tcp://127.0.0.1:1", timeout=5.0)
        assert left_behind(before, grace=0.0) == {}
