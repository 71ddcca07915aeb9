"""Start-up speed: the address-space cache (``opcua/aspace_cache.py``) and the
daemon's collector pause.

The cache replaces one step of asyncua's ``Server.init`` (its
``load_standard_address_space``) on one server instance; these tests fail if an
asyncua upgrade stops calling that step, changes what it builds so that a cached
start no longer serves the same address space as a plain one, or breaks loading.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
from pathlib import Path
from typing import Any

import asyncua
import pytest
from asyncua import Client, Server, ua
from structlog.testing import capture_logs

from twin_server.opcua.patches import aspace_cache
from twin_server.opcua.patches.aspace_cache import cache_dir, cache_file, init_server
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon

#: values asyncua sets from the clock at init (ServerStatus, its times, its BuildDate)
_VOLATILE = {
    ua.NodeId(ua.ObjectIds.Server_ServerStatus),
    ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime),
    ua.NodeId(ua.ObjectIds.Server_ServerStatus_StartTime),
    ua.NodeId(ua.ObjectIds.Server_ServerStatus_BuildInfo),
    ua.NodeId(ua.ObjectIds.Server_ServerStatus_BuildInfo_BuildDate),
}


def _describe(server: Server) -> dict[ua.NodeId, tuple[Any, ...]]:
    """Every node: its attributes' values (not timestamps) and its references."""
    described = {}
    for nodeid, data in server.iserver.aspace._nodes.items():
        attributes = tuple(sorted(
            (int(aid), None if nodeid in _VOLATILE and aid == ua.AttributeIds.Value
             else repr(av.value.Value if av.value is not None else None))
            for aid, av in data.attributes.items()))
        references = tuple(sorted(repr(r) for r in data.references))
        described[nodeid] = (attributes, references)
    return described


async def _plain() -> Server:
    server = Server()
    await server.init()
    return server


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One cache built for the module (a miss: asyncua fills, the file is written)."""
    folder = tmp_path_factory.mktemp("aspace-cache")
    return asyncio.run(init_server(Server(), folder)), cache_file(folder)


@pytest.fixture
def cached(built: tuple[str, Path], tmp_path: Path) -> Path:
    """A folder holding a copy of the module's cache."""
    shutil.copy(built[1], tmp_path / built[1].name)
    return tmp_path


class TestAddressSpaceCache:
    async def test_first_init_builds_it_and_the_next_loads_it(
            self, built: tuple[str, Path], cached: Path) -> None:
        """A miss fills the address space as asyncua does and writes the file; the
        next init loads it, into a plain dict (not asyncua's LazyLoadingDict, whose
        lookups the publisher would pay per value), asyncua's class untouched."""
        assert built[0] == "built"
        server = Server()
        assert await init_server(server, cached) == "hit"
        assert type(server.iserver.aspace._nodes) is dict
        assert "load_standard_address_space" not in vars(server.iserver)
        assert "load_standard_address_space" in vars(type(server.iserver))

    async def test_a_cached_init_serves_the_same_address_space(self, cached: Path) -> None:
        """Node for node, attribute for attribute, reference for reference, a server
        initialised from the cache equals one asyncua initialised itself."""
        server = Server()
        assert await init_server(server, cached) == "hit"
        plain, ours = _describe(await _plain()), _describe(server)
        assert set(plain) == set(ours)
        differing = [n.to_string() for n in plain if plain[n] != ours[n]]
        assert differing == []

    @pytest.mark.parametrize("content", [
        pytest.param(b"not a pickle", id="garbage"),
        pytest.param(b"\x80\x05N.", id="pickled-none"),
    ])
    async def test_an_unusable_file_is_ignored_and_rebuilt(self, tmp_path: Path,
                                                           content: bytes) -> None:
        """A corrupt cache costs a rebuild and a warning, never a failed start."""
        path = cache_file(tmp_path)
        path.write_bytes(content)
        server = Server()
        with capture_logs() as logs:
            assert await init_server(server, tmp_path) == "built"
        assert any(e["event"] == "address_space_cache_ignored" for e in logs)
        assert ua.NodeId(ua.ObjectIds.Server) in server.iserver.aspace
        assert path.stat().st_size > 1_000_000  # written afresh

    async def test_an_unwritable_folder_only_costs_the_cache(self, tmp_path: Path) -> None:
        """When the file cannot be written the server still initialises."""
        blocked = tmp_path / "file"
        blocked.write_text("a file where the folder should be")
        server = Server()
        with capture_logs() as logs:
            assert await init_server(server, blocked) == "built"
        assert any(e["event"] == "address_space_cache_not_written" for e in logs)
        assert ua.NodeId(ua.ObjectIds.Server) in server.iserver.aspace

    async def test_another_asyncua_version_builds_its_own_and_drops_the_old(
            self, cached: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The file is keyed by asyncua's version: an upgrade never reads an older
        pickle, and the older file is removed."""
        old = cache_file(cached)
        monkeypatch.setattr(asyncua, "__version__", "99.0.0")
        assert cache_file(cached) != old
        assert await init_server(Server(), cached) == "built"
        assert not old.exists()
        assert cache_file(cached).is_file()

    def test_the_folder_follows_cache_directory(self, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """$CACHE_DIRECTORY (systemd's CacheDirectory=) wins over state_dir/cache."""
        monkeypatch.delenv(aspace_cache.CACHE_ENV, raising=False)
        assert cache_dir(tmp_path) == tmp_path / "cache"
        monkeypatch.setenv(aspace_cache.CACHE_ENV, str(tmp_path / "c1"))
        assert cache_dir(tmp_path) == tmp_path / "c1"

    async def test_a_server_started_from_the_cache_answers_clients(self,
                                                                   cached: Path) -> None:
        """Browse, read and the namespace array work on a cached server."""
        server = Server()
        assert await init_server(server, cached) == "hit"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"opc.tcp://127.0.0.1:{port}/cached"
        server.set_endpoint(url)
        ns = await server.register_namespace("urn:cached")
        await server.nodes.objects.add_variable(ua.NodeId("x", ns), "x", 1.5)
        async with server, Client(url, timeout=10) as client:
            assert await client.get_namespace_index("urn:cached") == ns
            names = {(await c.read_browse_name()).Name
                     for c in await client.nodes.objects.get_children()}
            assert {"Server", "x"} <= names
            state = await client.get_node(ua.ObjectIds.Server_ServerStatus_State).read_value()
            assert state == ua.ServerState.Running
            assert await client.get_node(ua.NodeId("x", ns)).read_value() == 1.5


DAEMON = """
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
session_idle_timeout = 0

[server.security]
policies = ["None"]
anonymous = "admin"

[history]
enabled = false

[twins.gain.components.g]
model = "gain"

[sessions.one]
twin = "gain"
"""


class TestDaemonCollector:
    async def test_the_collector_runs_again_after_ready(self) -> None:
        """Start-up pauses the cyclic collector; READY turns it back on."""
        assert gc.isenabled()
        daemon = Daemon(parse_config(DAEMON))
        seen: list[bool] = []

        def ready(d: Daemon) -> None:
            seen.append(gc.isenabled())
            d.stop()

        await asyncio.wait_for(daemon.run(on_ready=ready), 30)
        assert seen == [True]
        assert gc.isenabled()

    async def test_a_failed_start_turns_the_collector_back_on(self) -> None:
        """A start that fails before READY (the port is taken) leaves it on."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            daemon = Daemon(parse_config(DAEMON),
                            endpoint=f"opc.tcp://127.0.0.1:{port}/twin-server")
            with pytest.raises(OSError):
                await asyncio.wait_for(daemon.run(), 30)
        assert gc.isenabled()
