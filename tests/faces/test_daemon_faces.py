"""A face named in the config is served beside the twin tree on the daemon's endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

from asyncua import Client, ua

from tests.faces.conftest import DI
from tests.faces.generated import URI, write_nodeset
from twin_server.config.loader import ConfigErrors
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import Daemon

CONFIG = """
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
state_dir = "{state}"

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
enabled = false

[twins.tank.components.tank]
model = "water_tank"

[sessions.tank]
twin = "tank"

[faces.machine]
nodesets = ["machine.NodeSet2.xml", "{di}"]
"""


class TestDaemonFace:
    async def test_served_beside_twin_tree(self, tmp_path: Path) -> None:
        """The face's nodes (relative paths from the config's folder) and the twin tree
        answer on the same endpoint."""
        write_nodeset(tmp_path / "machine.NodeSet2.xml", 1, 2)
        config = tmp_path / "twin.toml"
        config.write_text(CONFIG.format(state=tmp_path / "state", di=DI))
        daemon = Daemon(load_config(config))
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index(URI)
                machine = await client.nodes.objects.get_child(f"{ns}:Machine0")
                assert (await machine.read_node_class()) is ua.NodeClass.Object
                di = await client.get_namespace_index("http://opcfoundation.org/UA/DI/")
                await client.get_node(ua.NodeId(5001, di)).read_browse_name()
                twins = await client.get_namespace_index("urn:twin-server")
                state = client.get_node(ua.NodeId("Sessions.tank.State", twins))
                assert await state.read_value() in ("Ready", "Running")
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)

    def test_nodesets_required(self, tmp_path: Path) -> None:
        """A face without NodeSet files is a config error naming its key."""
        config = tmp_path / "twin.toml"
        config.write_text(CONFIG.format(state=tmp_path, di=DI).replace(
            f'nodesets = ["machine.NodeSet2.xml", "{DI}"]', "nodesets = []"))
        try:
            load_config(config)
        except ConfigErrors as exc:
            assert "faces.machine.nodesets" in str(exc)
        else:
            raise AssertionError("an empty nodesets list was accepted")
