"""node-opcua, an independent OPC UA stack, against twin-server.

Where a behaviour depends on the client (how a refusal reaches it, what it makes of a
range, a BuildInfo, a Bad status), asyncua talking to asyncua proves little: these
tests run small node scripts (``scripts/*.js``, or inline source) with node-opcua,
pinned in ``package.json`` and ``package-lock.json`` and installed by ``make test``
(``npm ci`` into ``node_modules`` when the lock file changed; the fixture does the same
when pytest runs without make). Tests that use the ``nodeopcua`` fixture are skipped,
saying why, only where ``node`` is not installed.

A script prints one JSON document on stdout, as its last line (``scripts/lib.js``'
``main`` does that), which :meth:`NodeOpcua.run` returns; its stderr is shown when
it fails or times out::

    async def test_reads(nodeopcua: NodeOpcua, daemon: Daemon) -> None:
        out = await nodeopcua.run("browse_read.js", daemon.endpoint_url, node="ns=2;s=X")

The scripts get their arguments (``endpoint`` and the keywords) as JSON in
``$NODEOPCUA_ARGS``; ``lib.js`` parses them and connects (anonymous, or ``user`` and
``password``; ``policy`` and ``mode`` for a secure channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SCRIPTS = HERE / "scripts"
LOCK_FILE = HERE / "package-lock.json"
#: written after a successful ``npm ci``; older than the lock file means reinstall
STAMP = HERE / "node_modules" / ".installed"


class NodeScriptError(AssertionError):
    """A node script failed, timed out or printed no JSON; the message holds its stderr."""


def node() -> str | None:
    """The ``node`` executable, or None where it is not installed."""
    return shutil.which("node")


def installed() -> bool:
    return STAMP.exists() and STAMP.stat().st_mtime >= LOCK_FILE.stat().st_mtime


def ensure_installed() -> None:
    """``npm ci`` in tests/nodeopcua unless node_modules matches package-lock.json (what
    ``make test`` does first); one at a time across processes (a lock on the lock file)."""
    if installed():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise NodeScriptError("node is installed but npm is not: install npm (it ships with "
                              "Node.js) or run `npm ci` in tests/nodeopcua by hand")
    with LOCK_FILE.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return
        done = subprocess.run([npm, "ci", "--no-progress"], cwd=HERE, capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise NodeScriptError(f"`npm ci` in {HERE} failed (exit {done.returncode}); "
                                  f"is the npm registry reachable?\n{done.stderr[-4000:]}")
        STAMP.touch()


def _command(script: str) -> list[str]:
    """node's arguments for a script file under scripts/, or for inline source."""
    exe = node()
    assert exe is not None
    if "\n" not in script and script.endswith(".js"):
        path = SCRIPTS / script
        if not path.is_file():
            raise NodeScriptError(f"no node script {path}")
        return [exe, str(path)]
    return [exe, "-e", script]


def _environment(args: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, "NODEOPCUA_ARGS": json.dumps(args)}


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class NodeOpcua:
    """Runs node-opcua scripts (the ``nodeopcua`` fixture)."""

    async def run(self, script: str, endpoint: str, *, timeout: float = 30.0,
                  **args: Any) -> Any:
        """Run ``script`` (a file name under scripts/, or inline source that may
        ``require("./lib")``) with ``endpoint`` and ``args``; its JSON output.
        Asynchronous: the server under test may serve it from this event loop."""
        process = await asyncio.create_subprocess_exec(
            *_command(script), cwd=SCRIPTS, env=_environment({"endpoint": endpoint, **args}),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        assert process.stdout is not None and process.stderr is not None
        # read both pipes to their end whatever happens, so that a timeout still shows
        # what the script wrote before it
        output = asyncio.gather(process.stdout.read(), process.stderr.read())
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            _kill(process)
            _, stderr = await output
            raise NodeScriptError(f"node script {_name(script)} did not finish within "
                                  f"{timeout} s; its stderr:\n{_tail(stderr)}") from None
        finally:
            _kill(process)  # and whatever it started
        stdout, stderr = await output
        if process.returncode != 0:
            raise NodeScriptError(f"node script {_name(script)} failed (exit "
                                  f"{process.returncode}); its stderr:\n{_tail(stderr)}")
        try:
            return json.loads(stdout.strip().rsplit(b"\n", 1)[-1])
        except json.JSONDecodeError:
            raise NodeScriptError(
                f"node script {_name(script)} printed no JSON: {stdout[-2000:]!r}; "
                f"its stderr:\n{_tail(stderr)}") from None

    @contextlib.asynccontextmanager
    async def spawn(self, script: str, *, ready_timeout: float = 30.0,
                    **args: Any) -> AsyncIterator[tuple[asyncio.subprocess.Process, Any]]:
        """A long-running script (a node-opcua server, a client that stays subscribed):
        started, its first stdout line read as JSON (it prints one when ready), and
        killed on exit; yields the process and that first document."""
        process = await asyncio.create_subprocess_exec(
            *_command(script), cwd=SCRIPTS, env=_environment(args),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            assert process.stdout is not None and process.stderr is not None
            try:
                line = await asyncio.wait_for(process.stdout.readline(), ready_timeout)
            except TimeoutError:
                line = b""
            if not line:
                _kill(process)
                stderr = await process.stderr.read()
                raise NodeScriptError(f"node script {_name(script)} printed nothing within "
                                      f"{ready_timeout} s (exit {process.returncode}); its "
                                      f"stderr:\n{_tail(stderr)}")
            yield process, json.loads(line)
        finally:
            _kill(process)
            await process.wait()


def _name(script: str) -> str:
    return script if "\n" not in script and script.endswith(".js") else "(inline)"


def _tail(stderr: bytes) -> str:
    return stderr.decode(errors="replace")[-6000:] or "(empty)"
