"""HIL mirror figures against the soft PLC (``tests/hil/soft_plc.py``) in a subprocess.

The session ticks in an in-process host (``LocalHost``), its pacer feeding the
mirror one frame per publish period, as in the daemon.

* Round trip: a twin output changes, the mirror writes it to the PLC's EchoIn,
  the PLC's scan (5 ms) copies it to EchoOut, the subscription brings it back
  into a twin input. Session: 1 ms steps at real time, publish rate 100 Hz,
  sampling interval 0. Baseline, same PLC and run: a bare asyncua client writes
  EchoIn and waits for EchoOut's notification on its own subscription (10 ms).
* Bindings held at 10 Hz: BINDINGS sine sources, each bound to a Double node of
  the PLC, all changing every cycle (50 Hz steps) at publish rate 10 Hz for SECONDS; the
  figure is the values the PLC accepted per second / 10. Baseline: a bare
  ``Client.write_values`` loop writing the same nodes at 10 Hz.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

from asyncua import Client, ua

from tests.hil.conftest import SoftPlc, cancel, hosted_of, quiet_host, start_clock
from twin_server.engine.session import Session, VarKey
from twin_server.hil import HilMirror
from twin_server.models.base import Kind
from twin_server.runtime.compile import LoadedConfig, parse_config
from twin_server.runtime.sinks import Pacer

ROUNDS = 200
BINDINGS = 1000
SECONDS = 4.0

ECHO = """
[twins.echo.components.src]
model = "constant"
[twins.echo.components.back]
model = "gain"
[sessions.s]
twin = "echo"
step_size = 0.001
publish_rate = 100.0
[hil.plc]
endpoint = "{endpoint}"
session = "s"
[hil.plc.bindings.out]
variable = "src.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoIn"
[hil.plc.bindings.back]
variable = "back.input"
direction = "from_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoOut"
sampling_interval = 0.0
"""


@contextlib.asynccontextmanager
async def _mirrored(loaded: LoadedConfig) -> AsyncIterator[tuple[Session, HilMirror]]:
    """Session "s" of ``loaded`` ticking in an in-process host, its pacer feeding a
    running mirror of it (as ``tests/hil/test_mirror.py`` builds one)."""
    async with quiet_host() as host:
        hosted = await hosted_of(host, loaded)
        mirror = HilMirror(loaded.config.hil, {"s": hosted})
        tasks = [asyncio.create_task(mirror.run()),
                 asyncio.create_task(Pacer(hosted, [mirror]).run()),
                 start_clock(host.session("s"))]
        try:
            yield host.session("s"), mirror
        finally:
            await cancel(*tasks)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def _mirror_round_trip(endpoint: str) -> tuple[list[float], tuple[float, float]]:
    """The round trips, and the publishing interval asked of the PLC and as it revised
    it (ms): the round trip is about the revised one, not our publish period."""
    loaded = parse_config(ECHO.format(endpoint=endpoint))
    value_key = VarKey("src", Kind.PARAMETER, "value")
    back_key = VarKey("back", Kind.INPUT, "input")
    samples = []
    async with _mirrored(loaded) as (session, mirror):
        while mirror.statistics().peer("plc").binding("back").status != "Good":
            await asyncio.sleep(0.01)
        for i in range(1, ROUNDS + 1):
            session.write(value_key, float(i))
            started = time.perf_counter()
            while session.read(back_key) != float(i):
                await asyncio.sleep(0.0005)
            samples.append((time.perf_counter() - started) * 1e3)
        stats = mirror.statistics().peer("plc")
    return samples, (stats.requested_publishing_interval, stats.publishing_interval)


async def _bare_round_trip(endpoint: str) -> list[float]:
    samples = []
    async with Client(endpoint) as client:
        ns = await client.get_namespace_index("urn:soft-plc")
        echo_in = client.get_node(ua.NodeId("PLC.EchoIn", ns))
        echo_out = client.get_node(ua.NodeId("PLC.EchoOut", ns))
        sub = await client.create_subscription(10, None)
        await sub.subscribe_data_change(echo_out, sampling_interval=0.0)
        latest: list[Any] = [None]

        async def consume() -> None:
            async for event in sub:
                latest[0] = getattr(event, "value", latest[0])

        task = asyncio.create_task(consume())
        try:
            for i in range(1, ROUNDS + 1):
                value = 1e6 + i
                started = time.perf_counter()
                await echo_in.write_value(ua.Variant(value, ua.VariantType.Double))
                while latest[0] != value:
                    await asyncio.sleep(0.0005)
                samples.append((time.perf_counter() - started) * 1e3)
        finally:
            await cancel(task)
    return samples


def _bulk_config(endpoint: str) -> str:
    lines = ["[twins.many]"]
    for i in range(BINDINGS):
        lines += [f"[twins.many.components.s{i}]", 'model = "sine"',
                  f"parameters = {{ frequency = {0.3 + i / BINDINGS}, amplitude = 1.0 }}"]
    lines += ["[sessions.s]", 'twin = "many"', "step_size = 0.02", "publish_rate = 10.0",
              "[hil.plc]", f'endpoint = "{endpoint}"', 'session = "s"']
    for i in range(BINDINGS):
        lines += [f"[hil.plc.bindings.b{i}]", f'variable = "s{i}.output"',
                  'direction = "to_plc"', f'node = "nsu=urn:soft-plc;s=PLC.Bulk.B{i}"']
    return "\n".join(lines) + "\n"


async def _mirror_bindings(endpoint: str) -> float:
    loaded = parse_config(_bulk_config(endpoint))
    async with _mirrored(loaded) as (_, mirror):
        while not mirror.statistics().peer("plc").connected:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        before = mirror.statistics().peer("plc").writes_sent
        await asyncio.sleep(SECONDS)
        after = mirror.statistics().peer("plc").writes_sent
    return (after - before) / SECONDS / 10.0


async def _bare_bindings(endpoint: str) -> float:
    async with Client(endpoint) as client:
        ns = await client.get_namespace_index("urn:soft-plc")
        nodes = [client.get_node(ua.NodeId(f"PLC.Bulk.B{i}", ns)) for i in range(BINDINGS)]
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        written = 0
        started = time.perf_counter()
        k = 0
        while time.perf_counter() - started < SECONDS:
            k += 1
            await client.write_values(nodes, [ua.Variant(float(k + i), ua.VariantType.Double)
                                              for i in range(BINDINGS)])
            written += BINDINGS
            deadline += 0.1
            await asyncio.sleep(max(deadline - loop.time(), 0.0))
        return written / (time.perf_counter() - started) / 10.0


async def run() -> list[dict[str, Any]]:
    plc = SoftPlc("--scan", "0.005", "--bulk", str(BINDINGS)).start()
    try:
        ours, (asked, revised) = await _mirror_round_trip(plc.endpoint)
        bare = await _bare_round_trip(plc.endpoint)
        held = await _mirror_bindings(plc.endpoint)
        bare_held = await _bare_bindings(plc.endpoint)
    finally:
        plc.kill()
    (p50, p99), (b50, b99) = _percentiles(ours), _percentiles(bare)
    return [
        {"figure": f"HIL round trip p50 (twin output -> asyncua soft PLC -> twin input; "
                   f"publishing interval asked {asked:g} ms, the PLC's {revised:g} ms)",
         "value": p50,
         "unit": "ms", "baseline": "bare asyncua write + subscription", "baseline_value": b50,
         "target": "publish period (10 ms) + baseline", "higher_is_better": False},
        {"figure": "HIL round trip p99", "value": p99, "unit": "ms",
         "baseline": "bare asyncua write + subscription", "baseline_value": b99,
         "target": "< 3x p50", "higher_is_better": False},
        {"figure": f"HIL bindings held at 10 Hz ({BINDINGS} bound, all changing)",
         "value": held, "unit": "bindings", "baseline": "bare Client.write_values at 10 Hz",
         "baseline_value": bare_held, "target": f">= {BINDINGS * 0.95:.0f}",
         "higher_is_better": True},
    ]
