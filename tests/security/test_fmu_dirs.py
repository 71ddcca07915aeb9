"""Remote admins and native code (issue #13, part 3): DefineTwin takes FMUs only from
the folders of ``server.fmu_dirs``, never lets a client choose where anything is
written, and answers a refused path alike whatever lies outside those folders.

A whole daemon on 127.0.0.1 (anonymous is admin on its None endpoint), a real
asyncua client, and the lag2 FMU compiled from the project's C sources: a copy
inside the allowed folder, one outside it, and symlinks leading out.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from structlog.testing import capture_logs

from tests.models.fmu import build
from tests.opcua.conftest import MODULE_LOOP, PLANT, Connected, message, run_daemon, s, stop_daemon
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = [MODULE_LOOP,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the FMU")]

SERVER = """
[server]
fmu_dirs = [{allowed}]
session_idle_timeout = 0

[server.security]  # the None endpoint, anonymous is admin: a remote admin
policies = ["None"]
anonymous = "admin"

[sessions.main]
twin = "plant"
"""


@dataclass
class Layout:
    """The files of the test: ``allowed`` is the one folder of server.fmu_dirs."""

    root: Path
    allowed: Path  # lag2.fmu, sub/lag2.fmu, link.fmu -> outside/evil.fmu, linkdir -> outside
    outside: Path  # evil.fmu: the same FMU, where no FMU may come from
    state: Path

    @property
    def cache(self) -> Path:
        """Where the daemon unpacks FMUs."""
        return self.state / "fmu-cache"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    root = tmp_path_factory.mktemp("fmu-dirs")
    fmu = build.build("lag2", root / "build")
    allowed, outside = root / "allowed", root / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(fmu, allowed / "lag2.fmu")
    shutil.copy(fmu, allowed / "sub" / "lag2.fmu")
    shutil.copy(fmu, outside / "evil.fmu")
    (allowed / "link.fmu").symlink_to(outside / "evil.fmu")
    (allowed / "linkdir").symlink_to(outside)
    return Layout(root, allowed, outside, root / "state")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(layout: Layout) -> AsyncIterator[Daemon]:
    config = PLANT + SERVER.format(allowed=json.dumps(str(layout.allowed)))
    daemon, task = await run_daemon(config, layout.state)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def admin(daemon: Daemon) -> AsyncIterator[Connected]:
    """The hostile admin's connection; afterwards no client twin or session is left."""
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            yield Connected(daemon, client, await client.get_namespace_index(NAMESPACE_URI))
    finally:
        for name in list(daemon.manager.sessions):
            if daemon.manager.origin(name) == "client":
                await daemon.delete_session(name)
        for name in list(daemon.manager.twins):
            if daemon.manager.twin_origin(name) == "client":
                await daemon.remove_twin(name)


@pytest_asyncio.fixture(loop_scope="module")
async def bystander(daemon: Daemon) -> AsyncIterator[Connected]:
    """A legitimate client connected beside the hostile one."""
    async with Client(daemon.endpoint_url, timeout=10) as client:
        yield Connected(daemon, client, await client.get_namespace_index(NAMESPACE_URI))


def fmu_twin(name: str, path: str, **options: str) -> str:
    """A run-time twin of one FMU component ``plant`` (TOML strings as JSON writes them)."""
    extra = "".join(f", {key} = {json.dumps(value)}" for key, value in options.items())
    return (f"[twins.{name}.components.plant]\nmodel = \"fmu\"\n"
            f"options = {{ path = {json.dumps(path)}{extra} }}\n")


def mapped_under(root: Path) -> set[str]:
    """The files below ``root`` mapped into this process (a loaded library among them)."""
    files = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith(f"{root}{os.sep}"):
            files.add(fields[5])
    return files


async def still_served(bystander: Connected) -> None:
    """The bystander reads the config session's StepCount moving on within a second."""
    count = bystander.node("Sessions.main.StepCount")
    async with asyncio.timeout(1.0):
        first = await count.read_value()
        while await count.read_value() == first:
            pass


def hostile_cases(layout: Layout) -> dict[str, tuple[str, dict[str, str]]]:
    """id -> (options.path, other options) of each definition that must be refused."""
    root, outside, allowed = layout.root, layout.outside, layout.allowed
    return {
        "outside": (str(outside / "evil.fmu"), {}),
        "outside-missing": (str(outside / "gone.fmu"), {}),
        "dotdot-relative": ("../outside/evil.fmu", {}),
        "dotdot-absolute": (f"{allowed}/../outside/evil.fmu", {}),
        "dotdot-deep": ("sub/../../outside/evil.fmu", {}),
        "symlink-file": ("link.fmu", {}),
        "symlink-folder": ("linkdir/evil.fmu", {}),
        "cache-dir": ("lag2.fmu", {"cache_dir": str(root / "chosen-by-client")}),
    }


HOSTILE = ["outside", "outside-missing", "dotdot-relative", "dotdot-absolute", "dotdot-deep",
           "symlink-file", "symlink-folder", "cache-dir"]


class TestRefused:
    @pytest.mark.parametrize("case", HOSTILE)
    async def test_refused_and_nothing_loaded(self, layout: Layout, admin: Connected,
                                              bystander: Connected, case: str) -> None:
        """Refused with BadInvalidArgument naming server.fmu_dirs; no twin, folder or
        library comes of it, and a bystander is served within a second."""
        path, options = hostile_cases(layout)[case]
        before = mapped_under(layout.root)
        cached = set(layout.cache.iterdir()) if layout.cache.exists() else set()
        with capture_logs() as logs:
            result = await admin.server_call("DefineTwin", s(fmu_twin("evil", path, **options)))
        assert result.StatusCode.name == "BadInvalidArgument", message(result)
        assert result.InputArgumentResults[0].name == "BadInvalidArgument"
        text = message(result)
        assert "server.fmu_dirs" in text
        if options:
            assert "options.cache_dir" in text
        # nothing of the server's layout beyond what the client sent
        shown = text.replace(json.dumps(path)[1:-1], "")
        for options_value in options.values():
            shown = shown.replace(options_value, "")
        assert str(layout.root) not in shown and os.getcwd() not in shown
        assert [e["log_level"] for e in logs if e["event"] == "method_refused"] == ["info"]
        # nothing defined, created, unpacked or loaded; a session of it cannot be made
        assert "evil" not in admin.daemon.manager.twins
        created = await admin.server_call("CreateSession", s("evil"), s("e"), s(""))
        assert created.StatusCode.name == "BadNotFound"
        assert not (layout.root / "chosen-by-client").exists()
        assert (set(layout.cache.iterdir()) if layout.cache.exists() else set()) == cached
        assert mapped_under(layout.root) == before
        await still_served(bystander)

    async def test_same_answer_whether_or_not_the_file_exists(
            self, layout: Layout, admin: Connected) -> None:
        """An FMU outside the folders, a missing file there, a missing folder and a missing
        file inside get the same message, apart from the client's own text."""
        paths = [str(layout.outside / "evil.fmu"), str(layout.outside / "gone.fmu"),
                 str(layout.root / "no-such-folder" / "evil.fmu"),
                 "/proc/self/cwd/evil.fmu", str(layout.allowed / "gone.fmu"), "gone.fmu"]
        answers = set()
        for path in paths:
            result = await admin.server_call("DefineTwin", s(fmu_twin("probe", path)))
            assert result.StatusCode.name == "BadInvalidArgument"
            answers.add(message(result).replace(path, "<path>"))
        assert len(answers) == 1, answers


class TestAllowed:
    @pytest.mark.parametrize("where", ["lag2.fmu", "sub/lag2.fmu", "absolute"])
    async def test_fmu_inside_runs(self, layout: Layout, admin: Connected,
                                   where: str) -> None:
        """An FMU in the allowed folder (relative to it, in a subfolder, or by absolute
        path) is defined, and a session of it loads the library from the daemon's cache."""
        path = str(layout.allowed / "lag2.fmu") if where == "absolute" else where
        result = await admin.server_call("DefineTwin", s(fmu_twin("lag", path)))
        assert result.StatusCode.is_good(), message(result)
        options = admin.daemon.manager.twins["lag"].component("plant").options
        assert options["path"] == str((layout.allowed / where).resolve()
                                      if where != "absolute" else layout.allowed / "lag2.fmu")
        assert options["cache_dir"] == str(layout.cache.resolve())
        await admin.create("lag1", twin="lag")
        stepped = await admin.session_call("lag1", "Step", ua.Variant(10, ua.VariantType.UInt32))
        assert stepped.StatusCode.is_good(), message(stepped)
        assert await admin.node("Sessions.lag1.Components.plant.Outputs.steps").read_value() == 10
        assert any(path.startswith(f"{layout.cache.resolve()}{os.sep}")
                   for path in mapped_under(layout.root))
