"""Start-up: from process start to the endpoint answering a Browse of ``Sessions``
that lists every session of a config with 10,000 variables.

Ours: ``twin-server run`` in a subprocess on a generated config: ``SESSIONS``
sessions of a process cell of ``LOOPS`` level loops (a square-wave setpoint, a
water tank, a PID), 25 variables per loop, 1,000 per session, autostarted at
10 Hz. The clock starts just before ``Popen``; a client in this process tries to
connect every 20 ms and browses ``Sessions`` until it lists all of them. The
state folder (PKI, address-space cache) is kept across the runs, as in a real
deployment: the first start (certificate created, cache built) is reported on
its own, the figure is the median of the warm starts.

Baseline, in the same run: a plain asyncua server in a subprocess, the way its
examples build one: ``Server.init``, then the same number of variables with
``add_variable`` + ``set_writable`` under the same shape of objects
(``Sessions/<session>/<loop>/<variable>``), then ``start``; timed the same way.
If adding takes longer than ``BASELINE_CAP`` seconds it stops there and the
adding time is scaled to the full count (the table says so).

Where the time goes: one more warm run instrumented (this module run as
``python -m tests.bench.bench_startup profile CONFIG``), which times each phase of
``twin-server run`` in the process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SESSIONS = 10
LOOPS = 40  # per session; 25 variables each
VARIABLES = SESSIONS * LOOPS * 25
RUNS = 3  # warm starts measured (after the first)
BASELINE_CAP = 60.0  # seconds of add_variable before the baseline stops and scales
TIMEOUT = 120.0
TARGET = 3.0
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(state: str, port: int, *, sessions: int = SESSIONS, loops: int = LOOPS) -> str:
    """The generated config: ``sessions`` sessions of a cell of ``loops`` level loops."""
    conns = ", ".join(f'"sp{i}.output -> pid{i}.setpoint", '
                      f'"tank{i}.level -> pid{i}.measurement", '
                      f'"pid{i}.output -> tank{i}.inflow"' for i in range(loops))
    parts = [f"""
[server]
endpoint = "opc.tcp://127.0.0.1:{port}/twin-server"
state_dir = "{state}"
session_idle_timeout = 0

[server.security]  # an encrypted endpoint (so a certificate), None for the client
policies = ["None", "Basic256Sha256"]
anonymous = "admin"

[history]
enabled = false

[twins.cell]
description = "A process cell: {loops} tanks, each under its own PID level loop"
connections = [{conns}]
"""]
    for i in range(loops):
        parts.append(f"""
[twins.cell.components.sp{i}]
model = "square"
parameters = {{ offset = 1.0, amplitude = 0.3, period = {60 + i}.0, duty = 0.5 }}
[twins.cell.components.tank{i}]
model = "water_tank"
parameters = {{ area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }}
[twins.cell.components.pid{i}]
model = "pid"
parameters = {{ kp = 0.2, ki = 0.004, output_min = 0.0, output_max = 0.05 }}
""")
    for j in range(sessions):
        parts.append(f'\n[sessions.cell{j}]\ntwin = "cell"\nstep_size = 0.1\n'
                     f"publish_rate = 2.0\n")
    return "".join(parts)


# -- the baseline server (a subprocess) ------------------------------------------------

BASELINE = """
import asyncio, json, sys, time
from asyncua import Server, ua

SESSIONS, LOOPS, PER_LOOP, CAP = {sessions}, {loops}, 25, {cap}

async def main():
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:{port}/plain")
    ns = await server.register_namespace("urn:plain")
    objects = server.nodes.objects
    folder = await objects.add_folder(ua.NodeId("Sessions", ns), "Sessions")
    started = time.perf_counter()
    added = 0
    for j in range(SESSIONS):
        session = await folder.add_object(ua.NodeId(f"s{{j}}", ns), f"s{{j}}")
        for i in range(LOOPS):
            loop = await session.add_object(ua.NodeId(f"s{{j}}.l{{i}}", ns), f"l{{i}}")
            for k in range(PER_LOOP):
                var = await loop.add_variable(ua.NodeId(f"s{{j}}.l{{i}}.v{{k}}", ns),
                                              f"v{{k}}", 0.0)
                await var.set_writable()
                added += 1
            if time.perf_counter() - started > CAP:
                break
        if time.perf_counter() - started > CAP:
            break
    adding = time.perf_counter() - started
    print(json.dumps({{"added": added, "adding": adding}}), flush=True)
    async with server:
        while True:
            await asyncio.sleep(3600)

asyncio.run(main())
"""


# -- measuring ---------------------------------------------------------------------------


async def _browse_until(url: str, folder: str, namespace: str, want: int,
                        process: subprocess.Popen[bytes], started: float) -> float:
    """Seconds from ``started`` until a Browse of ``folder`` lists ``want`` children."""
    from asyncua import Client, ua

    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before serving")
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError(f"no answer from {url} within {TIMEOUT:.0f} s")
        try:
            async with Client(url, timeout=TIMEOUT) as client:
                ns = await client.get_namespace_index(namespace)
                while True:
                    children = await client.get_node(ua.NodeId(folder, ns)).get_children()
                    if len(children) >= want:
                        return time.perf_counter() - started
                    await asyncio.sleep(0.02)
        except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.02)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _command() -> list[str]:
    script = Path(sys.executable).with_name("twin-server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "twin_server"]


async def _ours(config: Path, port: int, log: Path) -> tuple[float, float]:
    """(seconds to a full browse, seconds to the daemon's READY) of one start."""
    with log.open("wb") as out:
        spawned = time.time()
        started = time.perf_counter()
        process = subprocess.Popen([*_command(), "run", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            browsed = await _browse_until(f"opc.tcp://127.0.0.1:{port}/twin-server",
                                          "Sessions", "urn:twin-server", SESSIONS, process,
                                          started)
        finally:
            _stop(process)
    return browsed, _ready_at(log) - spawned


def _ready_at(log: Path) -> float:
    """The epoch time of the daemon_ready event in a JSON log."""
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "daemon_ready":
                stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                return stamp.timestamp()
    return math.nan


async def _baseline(port: int) -> tuple[float, int, float]:
    """(seconds to a full browse, variables added, seconds adding them)."""
    script = BASELINE.format(sessions=SESSIONS, loops=LOOPS, cap=BASELINE_CAP, port=port)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        loop = asyncio.get_running_loop()
        assert process.stdout is not None
        line = await loop.run_in_executor(None, process.stdout.readline)
        report = json.loads(line)
        want = SESSIONS if report["added"] >= VARIABLES else 1
        seconds = await _browse_until(f"opc.tcp://127.0.0.1:{port}/plain", "Sessions",
                                      "urn:plain", want, process, started)
        return seconds, int(report["added"]), float(report["adding"])
    finally:
        _stop(process)


def _profile(config: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_startup", "profile",
                          str(config), repr(time.time())],
                         capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


async def run() -> list[dict[str, Any]]:
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # the client's session timeout notes
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        state = Path(tmp) / "state"
        port = free_port()
        config = Path(tmp) / "cell.toml"
        config.write_text(config_text(str(state), port))
        log = Path(tmp) / "server.log"
        # a cache from the environment (a test suite's) would make the first start warm
        os.environ.pop("CACHE_DIRECTORY", None)
        first, _ = await _ours(config, port, log)
        warm = [await _ours(config, port, log) for _ in range(RUNS)]
        phases = _profile(config)
        base, added, adding = await _baseline(free_port())
    scaled = ""
    if added < VARIABLES:  # stopped at the cap: scale the adding time to the full count
        base += adding * (VARIABLES / added - 1)
        scaled = f", {added:,} added in {BASELINE_CAP:.0f} s, scaled to {VARIABLES:,}"
    ours = statistics.median(w[0] for w in warm)
    ready = statistics.median(w[1] for w in warm)
    plain_init = phases.pop("plain_init")
    figures: list[dict[str, Any]] = [
        {"figure": f"start-up to a browse of Sessions, {VARIABLES:,} variables (warm, "
                   f"median of {RUNS})", "value": ours, "unit": "s",
         "baseline": f"plain asyncua server, add_variable x {VARIABLES:,}{scaled}",
         "baseline_value": base, "target": f"<= {TARGET:g} s", "higher_is_better": False,
         "samples": [w[0] for w in warm]},
        {"figure": "  of which: process start to READY (daemon log)", "value": ready,
         "unit": "s", "baseline": "", "target": "", "higher_is_better": False},
        {"figure": "start-up, first start (certificate created, cache built)",
         "value": first, "unit": "s", "baseline": "", "target": "",
         "higher_is_better": False},
        {"figure": "  phase: asyncua Server.init (cached standard address space)",
         "value": phases.pop("init"), "unit": "s",
         "baseline": "Server.init without the cache", "baseline_value": plain_init,
         "target": "", "higher_is_better": False},
    ]
    labels = {
        "interpreter": "  phase: interpreter start",
        "imports": "  phase: imports (twin_server.cli, config, app)",
        "config": "  phase: config load and validation",
        "security": "  phase: security (PKI loaded, endpoints)",
        "build": f"  phase: building {VARIABLES:,} variables' nodes (+ sessions)",
        "ready": "  phase: gc.collect + gc.freeze and tasks, to READY",
        "other": "  phase: rest of OpcUaServer.start and Daemon.run",
    }
    figures += [{"figure": label, "value": phases[key], "unit": "s", "baseline": "",
                 "target": "", "higher_is_better": False}
                for key, label in labels.items() if key in phases]
    return figures


# -- the instrumented run (a subprocess) ------------------------------------------------


def _profile_main(config: str, spawned: float) -> None:
    """``twin-server run`` in this process, each phase timed; prints JSON, returns
    once READY."""
    entered = time.time()
    marks: dict[str, float] = {"interpreter": entered - spawned}
    t = time.perf_counter()
    from twin_server import cli, logs  # noqa: F401  (what the command imports first)
    from twin_server.runtime.compile import load_config

    imported = time.perf_counter()
    loaded = load_config(config)
    logs.configure("warning", json=True)
    configured = time.perf_counter()
    import gc as real_gc

    import asyncua

    from twin_server import app
    from twin_server.opcua import server as server_module

    marks["imports"] = imported - t + (time.perf_counter() - configured)
    marks["config"] = configured - imported
    sums = {"init": 0.0, "security": 0.0, "build": 0.0, "gc": 0.0}

    def timed(key: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                sums[key] += time.perf_counter() - t0
        return wrapper

    asyncua.Server.init = timed("init", asyncua.Server.init)  # type: ignore[method-assign]
    server_module.configure_security = timed("security", server_module.configure_security)
    cls = server_module.OpcUaServer
    cls.add_session = timed("build", cls.add_session)  # type: ignore[method-assign]
    cls.add_twin = timed("build", cls.add_twin)  # type: ignore[method-assign]

    class _Gc:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_gc, name)

        def collect(self, *args: Any) -> int:
            t0 = time.perf_counter()
            try:
                return real_gc.collect(*args)
            finally:
                sums["gc"] += time.perf_counter() - t0

    app.gc = _Gc()  # type: ignore[assignment]
    started = time.perf_counter()

    async def main() -> None:
        daemon = app.Daemon(loaded)

        def ready(_: Any) -> None:
            marks["run"] = time.perf_counter() - started
            daemon.stop()

        await daemon.run(on_ready=ready)

    asyncio.run(main())
    marks.update(sums)
    marks["ready"] = sums["gc"]
    marks["other"] = marks.pop("run") - sums["init"] - sums["security"] - sums["build"] \
        - sums["gc"]
    del marks["gc"]
    # the same Server.init without the cache, for comparison
    async def plain() -> float:
        t0 = time.perf_counter()
        with contextlib.suppress(Exception):
            await asyncua.Server().init()
        return time.perf_counter() - t0

    marks["plain_init"] = asyncio.run(plain())
    print(json.dumps(marks), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["profile"]:
        _profile_main(sys.argv[2], float(sys.argv[3]))
