"""node-opcua, an independent OPC UA stack, against twin-server.

Where a behaviour depends on the client (how a refusal reaches it, what it makes of a
range, a BuildInfo, a Bad status), asyncua talking to asyncua proves little: these
tests run small node scripts (``scripts/*.js``, or inline source) with node-opcua,
pinned in ``package.json`` and ``package-lock.json`` and installed by ``make test``
(``npm ci`` into ``node_modules`` when the lock file changed; the fixture does the same
when pytest runs without make). Tests that use the ``nodeopcua`` fixture are skipped,
saying why, only where ``node`` is not installed.

A script hands its result to ``main`` of ``scripts/lib.js``; :meth:`NodeOpcua.run`
runs it in one node process for the whole test module (``scripts/runner.js``:
loading node-opcua takes over 10 s on a busy machine) and returns that result as JSON; what
the script wrote on stderr meanwhile is shown when it fails or times out (a timeout
kills the runner; the next script starts another)::

    async def test_reads(nodeopcua: NodeOpcua, daemon: Daemon) -> None:
        out = await nodeopcua.run("browse_read.js", daemon.endpoint_url, node="ns=2;s=X")

A script gets its arguments (``endpoint`` and the keywords) as an object; ``lib.js``
connects with them (anonymous, or ``user`` and ``password``; ``policy`` and ``mode``
for a secure channel). Run on its own, a script reads them as JSON from
``$NODEOPCUA_ARGS`` and prints its result: ``NODEOPCUA_ARGS='{"endpoint":
"opc.tcp://127.0.0.1:4840/twin-server"}' node tests/nodeopcua/scripts/endpoints.js``.
:meth:`NodeOpcua.spawn` starts a long-running script (a node-opcua server) in a
process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).parent
SCRIPTS = HERE / "scripts"
LOCK_FILE = HERE / "package-lock.json"
#: written after a successful ``npm ci``; older than the lock file means reinstall
STAMP = HERE / "node_modules" / ".installed"


#: what the runner writes on stderr at the end of each request
_DONE = "@@nodeopcua-done "


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


def _pump(stream: IO[str] | None, put: Callable[[Any], None]) -> None:
    """Hand each line of ``stream`` to ``put``; None at its end."""
    assert stream is not None
    for line in stream:
        put(line)
    put(None)


def _environment(args: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, "NODEOPCUA_ARGS": json.dumps(args)}


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


class NodeOpcua:
    """Runs node-opcua scripts (the ``nodeopcua`` fixture) in one node process
    (``scripts/runner.js``), started at the first script and again after one timed out:
    loading node-opcua costs over 10 s on a busy machine, which a process per script
    would pay each time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._next = 0
        self._pumps: list[threading.Thread] = []
        self._stderr_seen = threading.Condition()
        self._done = 0
        self._closed = False

    def start(self, timeout: float = 180.0) -> None:
        """Start the runner (if it is not running) and wait until node-opcua is loaded."""
        with self._lock:
            self._start(timeout)

    def close(self) -> None:
        """Stop the runner for good: a request still waiting for the lock (its test
        timed out while another script ran) fails instead of starting a new runner
        that nothing would stop."""
        with self._lock:
            self._closed = True
            self._stop()

    async def run(self, script: str, endpoint: str, *, timeout: float = 30.0,
                  **args: Any) -> Any:
        """Run ``script`` (a file name under scripts/, or inline source that calls
        ``main`` of ``require("./lib")``) with ``endpoint`` and ``args``; its result.
        Asynchronous (the wait is in a thread): the server under test may serve it
        from this event loop."""
        return await asyncio.to_thread(self._request, script,
                                       {"endpoint": endpoint, **args}, timeout)

    def _request(self, script: str, args: dict[str, Any], timeout: float) -> Any:
        with self._lock:
            if self._closed:
                raise NodeScriptError(f"node script {_name(script)}: the runner is closed "
                                      f"(its test module has ended)")
            self._start(180.0)
            assert self._process is not None and self._process.stdin is not None
            self._next += 1
            ident = self._next
            request: dict[str, Any] = {"id": ident, "args": args}
            if "\n" not in script and script.endswith(".js"):
                if not (SCRIPTS / script).is_file():
                    raise NodeScriptError(f"no node script {SCRIPTS / script}")
                request["script"] = script
            else:
                request["source"] = script
            mark = len(self._stderr)
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    self._stop()
                    raise NodeScriptError(
                        f"node script {_name(script)} did not finish within {timeout} s; "
                        f"its stderr:\n{self._since(mark)}") from None
                if line is None:
                    self._stop()
                    raise NodeScriptError(f"the node runner died during {_name(script)}; "
                                          f"its stderr:\n{self._since(mark)}")
                try:
                    reply = json.loads(line)
                except json.JSONDecodeError:
                    continue  # something a library printed on stdout
                if reply.get("id") == ident:
                    break
            self._wait_stderr(ident)
            if not reply["ok"]:
                raise NodeScriptError(f"node script {_name(script)} failed: {reply['error']}"
                                      f"\nits stderr:\n{self._since(mark)}")
            return reply["result"]

    def _start(self, timeout: float) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        exe = node()
        assert exe is not None
        process = subprocess.Popen(
            [exe, str(SCRIPTS / "runner.js")], cwd=SCRIPTS, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True)
        replies: queue.Queue[str | None] = queue.Queue()
        self._process, self._replies = process, replies
        mark = len(self._stderr)
        self._pumps = [
            threading.Thread(target=_pump, args=(process.stdout, replies.put), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, self._stderr_line),
                             daemon=True)]
        for pump in self._pumps:
            pump.start()
        try:
            ready = replies.get(timeout=timeout)
        except queue.Empty:
            ready = None
        if ready is None or not json.loads(ready).get("ready"):
            self._stop()
            raise NodeScriptError(f"the node runner did not start within {timeout} s; "
                                  f"its stderr:\n{self._since(mark)}")

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pump in self._pumps:  # (at the pipes' end, now that the runner is gone)
            pump.join(5.0)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _stderr_line(self, line: str | None) -> None:
        with self._stderr_seen:
            if line is None:
                pass
            elif line.startswith(_DONE):
                self._done = int(line.split()[1])
            else:
                self._stderr.append(line)
            self._stderr_seen.notify_all()

    def _wait_stderr(self, ident: int) -> None:
        """Until the runner's stderr has reached the end of request ``ident`` (its
        marker comes before the reply, but through another pipe and thread)."""
        with self._stderr_seen:
            self._stderr_seen.wait_for(lambda: self._done >= ident, timeout=5.0)

    def _since(self, mark: int) -> str:
        return "".join(self._stderr[mark:])[-6000:] or "(empty)"

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
