"""Fuzzing twin-server's binary endpoint while a session runs in real time.

Thousands of malformed and mutated frames go to a real ``OpcUaServer`` (security
configured as the daemon does: a None endpoint, anonymous viewers) from many
connections at once:

* channel-level frames: Hellos (some with buffers below 8,192 bytes), Open,
  Read and Close chunks mutated as bytes (flipped, cut, lying sizes, other
  message types, noise), so that the chunk layer and the ERR answers are hit;
* service-level frames: a real session is opened first (Hello, OpenSecureChannel,
  CreateSession, ActivateSession), then mutations of valid CreateSession,
  ActivateSession (anonymous, and an X509 token the endpoint does not offer),
  Read, Browse, TranslateBrowsePaths, HistoryRead, Call, and Write (refused to a
  viewer) request bodies, framed correctly so that the decoder and the services
  see them; Variant arrays nested 2,000 deep; and, last, a message naming a wrong
  SecureChannelId or TokenId.

Then: a legitimate client is answered within a second, the process's resident
memory grew by less than a bound, the log (asyncua's records at WARNING and up, as
the daemon caps them, and our structlog events at INFO and up, each rendered)
stayed under a bound, and the session's clock kept ticking: its StepCount went on
advancing with bounded lateness.

``TestFuzz`` runs in ``make test`` (a few thousand frames, bounded by
``FUZZ_SECONDS``); ``TestFuzzSoak`` runs for ``SOAK_SECONDS`` in ``make soak``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
from asyncua import Client, ua

from tests.security.conftest import MODULE_LOOP
from twin_server import logs
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig
from twin_server.engine.session import Session, SessionSettings
from twin_server.engine.twin import TwinDefinition
from twin_server.opcua.server import NAMESPACE_URI, OpcUaServer
from twin_server.runtime.clock import Clock
from twin_server.runtime.compile import parse_config

pytestmark = MODULE_LOOP

PLANT = """
[twins.plant]
connections = ["tank.level -> controller.measurement", "controller.output -> tank.inflow"]

[twins.plant.components.tank]
model = "water_tank"
parameters = { area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }

[twins.plant.components.controller]
model = "pid"
parameters = { kp = 0.2, ki = 0.004, output_min = 0.0, output_max = 0.05 }
inputs = { setpoint = 1.0 }
"""
STEP = 0.01
#: the fuzz of ``make test``: at most this many frames, for at most this long
FUZZ_FRAMES = 3000
FUZZ_SECONDS = 15.0
#: bounds: resident memory growth, log bytes per minute of fuzzing (the rate limit
#: lets each message format through ``log_burst`` times a minute), the longest time
#: the 100 Hz session's StepCount may stand still
RSS_GROWTH = 32 * 1024 * 1024
LOG_BYTES_PER_MINUTE = 256 * 1024
LONGEST_PAUSE = 1.0
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))


@functools.cache
def plant() -> TwinDefinition:
    return parse_config(PLANT).twins["plant"]


@dataclass
class Target:
    server: OpcUaServer
    session: Session
    clock: Clock
    url: str

    @property
    def address(self) -> tuple[str, int]:
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        return "127.0.0.1", port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    config = ServerConfig(
        endpoint="opc.tcp://127.0.0.1:0/twin-server",
        state_dir=str(tmp_path_factory.mktemp("state")),
        security=SecurityConfig(policies=("None",), anonymous="viewer"),
        limits=LimitsConfig(activation_timeout=2.0, max_connections=100,
                            max_client_sessions=200, max_session_timeout=10.0))
    server = OpcUaServer(config)
    await server.start()
    await server.add_twin(plant())
    session = Session("tank", plant(), SessionSettings(step_size=STEP, realtime_factor=1.0,
                                                       publish_rate=20.0))
    clock = Clock(session)
    await server.add_session(session, clock)
    session.start()
    tasks = [asyncio.create_task(clock.run()), asyncio.create_task(server.publish_forever())]
    try:
        yield Target(server, session, clock, server.endpoint_url)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()


# -- what is measured ---------------------------------------------------------------------

class LogVolume(logging.Handler):
    """Bytes of asyncua's records (WARNING and up, traceback included) and of our
    structlog events (INFO and up), each rendered as the daemon would."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.bytes = 0
        self.records = 0
        self.biggest = ""
        self.errors: list[str] = []  # the first few records or events at ERROR
        self.sources: dict[str, int] = {}  # bytes per structlog event or asyncua format

    def emit(self, record: logging.LogRecord) -> None:
        self.count(self.format(record), record.levelno >= logging.ERROR,
                   f"{record.name}: {str(record.msg)[:60]}")

    def count(self, line: str, error: bool = False, source: str = "") -> None:
        self.sources[source] = self.sources.get(source, 0) + len(line) + 1
        if error and len(self.errors) < 10:
            self.errors.append(line[:500])
        self.bytes += len(line) + 1
        self.records += 1
        if len(line) > len(self.biggest):
            self.biggest = line

    def structlog_processor(self, _logger: Any, method: str, event: dict[str, Any]) -> Any:
        if method in ("info", "warning", "error", "critical", "exception"):
            self.count(json.dumps(event, default=str), method in ("error", "critical"),
                       str(event.get("event")))
        raise structlog.DropEvent


@contextlib.contextmanager
def measured_logs() -> Iterator[LogVolume]:
    volume = LogVolume()
    asyncua = logging.getLogger("asyncua")
    level = asyncua.level
    asyncua.setLevel(logging.WARNING)  # as twin_server.logs caps it in the daemon
    asyncua.addHandler(volume)
    saved = structlog.get_config()
    # (our events pass the daemon's per-event limit, as in twin_server.logs.configure)
    logs.EVENT_LIMIT.reset()
    structlog.configure(processors=[structlog.processors.add_log_level, logs.EVENT_LIMIT,
                                    volume.structlog_processor])
    try:
        yield volume
    finally:
        structlog.configure(**saved)
        asyncua.removeHandler(volume)
        asyncua.setLevel(level)


def rss() -> int:
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Report:
    sent: int
    seconds: float
    rss_growth: int
    log_bytes: int
    log_records: int
    biggest_record: str
    errors: list[str]
    log_sources: dict[str, int]
    answered_in: float
    state: Any
    ticks: int
    expected_ticks: float
    step_count: int  # as the legitimate client read it
    step_count_now: int
    longest_pause: float  # the longest time StepCount stood still
    answers: dict[str, int]


ROOT = Path(__file__).resolve().parents[2]


async def run_fuzzer(url: str, ns: int, frames: int, seconds: float, seed: int
                     ) -> dict[str, Any]:
    """``tests.security.fuzz_client`` in a child process: what it sent and got back."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.security.fuzz_client", url, str(ns), str(frames),
        str(seconds), str(seed), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    assert child.returncode == 0, out[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


class TickWatch:
    """Watches the session's StepCount: the longest time it stood still."""

    def __init__(self, session: Session, period: float = 0.002) -> None:
        self.session = session
        self.period = period
        self.longest = 0.0

    async def run(self) -> None:
        last, since = self.session.step_count, time.monotonic()
        while True:
            await asyncio.sleep(self.period)
            now, count = time.monotonic(), self.session.step_count
            if count != last:
                last, since = count, now
            self.longest = max(self.longest, now - since)


async def fuzz(target: Target, frames: int, seconds: float, seed: int) -> Report:
    async with Client(target.url, timeout=5) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
    await run_fuzzer(target.url, ns, 120, 5.0, seed + 1)  # warm-up: caches, first paths
    await asyncio.sleep(0.3)
    before = rss()
    watch = TickWatch(target.session)
    watching = asyncio.create_task(watch.run())
    ticks_before = target.session.step_count
    started = time.monotonic()
    try:
        with measured_logs() as volume:
            result = await run_fuzzer(target.url, ns, frames, seconds, seed)
            await asyncio.sleep(0.3)
            elapsed = time.monotonic() - started
            ticks = target.session.step_count - ticks_before
            asked = time.monotonic()
            async with asyncio.timeout(5.0):
                async with Client(target.url, timeout=1) as client:
                    state = await client.get_node(
                        ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)).read_value()
                    step_count = await client.get_node(
                        ua.NodeId("Sessions.tank.StepCount", ns)).read_value()
            answered_in = time.monotonic() - asked
    finally:
        watching.cancel()
    return Report(result["sent"], elapsed, rss() - before, volume.bytes, volume.records,
                  volume.biggest[:300], volume.errors,
                  dict(sorted(volume.sources.items(), key=lambda kv: -kv[1])[:12]),
                  answered_in, state, ticks,
                  elapsed / STEP, int(step_count), target.session.step_count,
                  watch.longest, dict(sorted(result["answers"].items())))


def check(report: Report, min_frames: int) -> None:
    print(f"\nfuzz: {report}")
    assert report.sent >= min_frames
    assert report.state == ua.ServerState.Running
    assert report.answered_in < 1.0, report.answered_in
    assert report.rss_growth < RSS_GROWTH, report.rss_growth
    minutes = max(1.0, report.seconds / 60.0)
    assert report.log_bytes < LOG_BYTES_PER_MINUTE * minutes, (
        report.log_bytes, report.log_records, report.biggest_record)
    # the clock kept ticking: never stood still for long (a loaded machine skips ticks)
    assert report.ticks >= 0.3 * report.expected_ticks, (report.ticks, report.expected_ticks)
    assert report.ticks <= report.step_count <= report.step_count_now
    assert report.longest_pause < LONGEST_PAUSE, report.longest_pause
    # the hostile frames were answered as Part 6 says, not only swallowed
    for answer in ("ERR BadConnectionRejected", "ERR BadSecureChannelIdInvalid",
                   "ERR BadSecureChannelTokenUnknown", "ERR BadTcpMessageTypeInvalid",
                   "MSG BadDecodingError", "MSG BadUserAccessDenied",
                   "MSG BadIdentityTokenRejected", "MSG Good"):
        assert report.answers.get(answer, 0) > 0, (answer, report.answers)


class TestFuzz:
    @pytest.mark.timeout(120)  # (the module's server starts in this test's setup)
    async def test_malformed_and_mutated_frames(self, target: Target) -> None:
        """After thousands of malformed and mutated frames (channel and service level)
        a legitimate client is answered within a second, memory and log volume stayed
        bounded and the session's clock kept ticking in real time."""
        check(await fuzz(target, FUZZ_FRAMES, FUZZ_SECONDS, seed=7), min_frames=2000)


@pytest.mark.soak
class TestFuzzSoak:
    @pytest.mark.timeout(SOAK_SECONDS + 120)
    async def test_malformed_and_mutated_frames(self, target: Target) -> None:
        """The same for SOAK_SECONDS, with the same bounds (log volume per minute)."""
        check(await fuzz(target, 10**9, SOAK_SECONDS, seed=11),
              min_frames=int(SOAK_SECONDS * 50))

