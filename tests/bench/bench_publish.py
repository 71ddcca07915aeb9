"""Publish throughput: value changes per second from running sessions *delivered* to a
subscribed client in another process.

Ours: the daemon with ``SESSIONS`` sessions of a twin of ``COMPONENTS`` sine sources,
each stepping and publishing at ``RATE`` Hz (every output changes each tick), so
``SESSIONS * COMPONENTS * RATE`` value changes a second are offered. Baseline, in the
same run and on the same event loop: a plain asyncua server with the same number of
Double variables, updated in rounds at the same rate with ``Node.write_value`` (the
way asyncua's examples do it). The same subscriber watches both: an asyncua Client
in a subprocess, one subscription per session (publishing interval ``INTERVAL_MS``,
queue size 0: the server's maximum), that counts the datachange notifications of
every PublishResponse it decodes and reports the count on stdout twice a second.

A server that cannot keep up delivers fewer than offered, so the figure is what gets
through. The server's process CPU over the same window is reported too (one core is
100 %; the subscriber has the other core of the machine to itself).

The subscriber is this module run as a script; ``bench_load`` uses it too::

    python -m tests.bench.bench_publish URL < spec.json
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SESSIONS = 5
COMPONENTS = 1000
RATE = 20.0  # ticks and publishes per second, per session
INTERVAL_MS = 100.0  # the subscriptions' publishing interval
WARMUP = 2.0
SECONDS = float(os.environ.get("BENCH_PUBLISH_SECONDS", "6"))
ROOT = Path(__file__).resolve().parents[2]

OPEN = """
[server]
workers = 0  # the in-process baseline (its clocks are read directly)
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
state_dir = "{state}"
session_idle_timeout = 0

[server.security]  # the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[server.limits]
max_monitored_items = 200000
max_monitored_items_per_subscription = 20000

[history]
enabled = false
"""


def twin_text(name: str, components: int) -> str:
    lines = [f"[twins.{name}]"]
    for i in range(components):
        lines += [f"[twins.{name}.components.s{i}]", 'model = "sine"',
                  f"parameters = {{ frequency = {0.5 + i / components}, amplitude = 1.0 }}"]
    return "\n".join(lines) + "\n"


def config_text(state: str, sessions: int, components: int, step: float, rate: float) -> str:
    text = OPEN.format(state=state) + twin_text("wave", components)
    for j in range(sessions):
        text += (f"\n[sessions.w{j}]\ntwin = \"wave\"\nstep_size = {step}\n"
                 f"publish_rate = {rate}\n")
    return text


# -- the subscriber (a subprocess) --------------------------------------------------


def _count_only() -> None:
    """Make this process's asyncua clients read a PublishResponse's data changes by
    their count alone, without decoding each item (everything else is decoded, and
    every response acknowledged, as asyncua does): a load generator that leaves the
    machine's CPU to the server (``bench_load``'s ten clients decode 100,000 values a
    second otherwise)."""
    from asyncua import ua
    from asyncua.client.ua_session import UaSession
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import (
        Primitives,
        extensionobject_from_binary,
        nodeid_from_binary,
        struct_from_binary,
    )

    datachange = ua.NodeId(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary)

    def decode(data: Buffer) -> ua.PublishResponse:
        response = ua.PublishResponse()
        response.TypeId = nodeid_from_binary(data)
        response.ResponseHeader = struct_from_binary(ua.ResponseHeader, data)
        result = response.Parameters
        result.SubscriptionId = Primitives.UInt32.unpack(data)
        n = Primitives.Int32.unpack(data)
        result.AvailableSequenceNumbers = [Primitives.UInt32.unpack(data) for _ in range(n)]
        result.MoreNotifications = Primitives.Boolean.unpack(data)
        message = result.NotificationMessage
        message.SequenceNumber = Primitives.UInt32.unpack(data)
        message.PublishTime = Primitives.DateTime.unpack(data)
        message.NotificationData = []
        for _ in range(max(0, Primitives.Int32.unpack(data))):
            start = data._cur_pos
            typeid = nodeid_from_binary(data)
            encoding = Primitives.Byte.unpack(data)
            body = Primitives.Bytes.unpack(data) if encoding & 1 else b""
            if typeid == datachange and body:
                items: list[Any] = [None] * Primitives.Int32.unpack(Buffer(body[:4]))
                message.NotificationData.append(ua.DataChangeNotification(MonitoredItems=items))
            else:
                message.NotificationData.append(
                    extensionobject_from_binary(Buffer(data._data, start)))
        n = Primitives.Int32.unpack(data)
        result.Results = [ua.StatusCode(Primitives.UInt32.unpack(data)) for _ in range(n)]
        n = Primitives.Int32.unpack(data)
        result.DiagnosticInfos = [struct_from_binary(ua.DiagnosticInfo, data) for _ in range(n)]
        return response

    async def publish(self: UaSession, acks: list[ua.SubscriptionAcknowledgement]
                      ) -> ua.PublishResponse:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        return decode(await self._send_request(request, timeout=0))

    UaSession.publish = publish  # type: ignore[method-assign]


async def _subscribe(url: str, groups: list[list[str]], interval: float, queue: int,
                     expect_ns: str | None, clients: int) -> None:
    from asyncua import Client, ua

    count = 0

    def counted(result: ua.PublishResult) -> None:
        nonlocal count
        for data in result.NotificationMessage.NotificationData:
            if isinstance(data, ua.DataChangeNotification):
                count += len(data.MonitoredItems)

    async with contextlib.AsyncExitStack() as stack:
        for _ in range(clients):  # each its own connection and OPC UA session
            client = await stack.enter_async_context(Client(url, timeout=60))
            ns = await client.get_namespace_index(expect_ns) if expect_ns else None
            for group in groups:
                sub = await client.create_subscription(interval, None)
                # count from the decoded PublishResponse: no per-item dispatch in the client
                client.uaclient.session._subscription_callbacks[sub.subscription_id] = counted
                nodes = [client.get_node(n if ns is None else n.replace("ns=?", f"ns={ns}"))
                         for n in group]
                for i in range(0, len(nodes), 1000):
                    await sub.subscribe_data_change(nodes[i:i + 1000], queuesize=queue)
        print(json.dumps({"ready": True}), flush=True)
        while True:
            await asyncio.sleep(0.5)
            print(json.dumps({"t": time.monotonic(), "count": count,
                              "cpu": time.process_time()}), flush=True)


def subscriber_main() -> None:
    """``python -m tests.bench.bench_publish URL`` with a JSON spec on stdin:
    ``{"groups": [[nodeid, ...], ...], "interval": ms, "queue": n, "ns": uri,
    "clients": n, "count_only": bool}``: ``clients`` connections (1), each with one
    subscription per group (``ns=?`` in a NodeId is replaced by the index of namespace
    ``ns``); ``count_only``: see ``_count_only``."""
    spec = json.loads(sys.stdin.readline())
    if spec.get("count_only"):
        _count_only()
    try:
        import uvloop
        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    with contextlib.suppress(KeyboardInterrupt):
        runner(_subscribe(sys.argv[1], spec["groups"], spec.get("interval", INTERVAL_MS),
                          spec.get("queue", 0), spec.get("ns"), spec.get("clients", 1)))


@dataclass
class Subscriber:
    """A running subscriber subprocess and its latest report."""

    process: asyncio.subprocess.Process
    t: float = 0.0
    count: int = 0
    cpu: float = 0.0
    ready: bool = False

    async def _follow(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            report = json.loads(line)
            if report.get("ready"):
                self.ready = True
            else:
                self.t, self.count, self.cpu = report["t"], report["count"], report["cpu"]


@contextlib.asynccontextmanager
async def subscribers(url: str, specs: list[dict[str, Any]]) -> AsyncIterator[list[Subscriber]]:
    """Start one subscriber process per spec; yield once all are subscribed."""
    started: list[Subscriber] = []
    followers: list[asyncio.Task[None]] = []
    try:
        for spec in specs:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.bench.bench_publish", url, cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert process.stdin is not None
            process.stdin.write(json.dumps(spec).encode() + b"\n")
            await process.stdin.drain()
            sub = Subscriber(process)
            started.append(sub)
            followers.append(asyncio.ensure_future(sub._follow()))
        deadline = time.monotonic() + 120
        while not all(s.ready for s in started):
            if time.monotonic() > deadline or any(s.process.returncode is not None
                                                  for s in started):
                raise RuntimeError("a subscriber did not get ready")
            await asyncio.sleep(0.1)
        yield started
    finally:
        for sub in started:
            if sub.process.returncode is None:
                sub.process.kill()
            await sub.process.wait()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def delivered(subs: list[Subscriber], seconds: float) -> tuple[float, float]:
    """Notifications a second that all ``subs`` together received over ``seconds``,
    and this process's CPU (fraction of a core) over the same window."""
    return await measured(subs, asyncio.sleep(seconds))


async def measured(subs: list[Subscriber], during: Awaitable[Any]) -> tuple[float, float]:
    """As ``delivered``, over the time ``during`` takes."""
    await asyncio.sleep(0.6)  # a fresh report from each
    first = [(s.t, s.count, s.cpu) for s in subs]
    cpu, wall = time.process_time(), time.perf_counter()
    await during
    cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
    rate = sum((s.count - c0) / (s.t - t0) for s, (t0, c0, _) in zip(subs, first, strict=True)
               if s.t > t0)
    client_cpu = [(s.cpu - u0) / (s.t - t0) for s, (t0, _, u0) in zip(subs, first, strict=True)
                  if s.t > t0]
    print(f"  delivered {rate:,.0f}/s, server CPU {cpu:.0%}, subscriber CPU "
          + ", ".join(f"{c:.0%}" for c in client_cpu), file=sys.stderr)
    return rate, cpu


# -- the two servers ----------------------------------------------------------------


async def _ours() -> tuple[float, float]:
    from twin_server.opcua.server import NAMESPACE_URI
    from twin_server.runtime.compile import parse_config
    from twin_server.runtime.daemon import Daemon

    with tempfile.TemporaryDirectory() as state:
        text = config_text(state, SESSIONS, COMPONENTS, 1.0 / RATE, RATE)
        daemon = Daemon(parse_config(text))
        runner = asyncio.ensure_future(daemon.run())
        await daemon.wait_ready()
        try:
            groups = [[f"ns=?;s=Sessions.w{j}.Components.s{i}.Outputs.output"
                       for i in range(COMPONENTS)] for j in range(SESSIONS)]
            async with subscribers(daemon.endpoint_url,
                                   [{"groups": groups, "ns": NAMESPACE_URI}]) as subs:
                await asyncio.sleep(WARMUP)
                assert daemon.server is not None
                before = daemon.server.statistics().values_published
                ticks = sum(r.session.clock_statistics().ticks for r in daemon.sessions.values())
                started = time.perf_counter()
                result = await delivered(subs, SECONDS)
                elapsed = time.perf_counter() - started
                published = daemon.server.statistics().values_published - before
                ticks = sum(r.session.clock_statistics().ticks
                            for r in daemon.sessions.values()) - ticks
                print(f"  published {published / elapsed:,.0f}/s, "
                      f"{ticks / elapsed:,.1f} ticks/s", file=sys.stderr)
                return result
        finally:
            daemon.stop()
            await runner


async def _plain() -> tuple[float, float]:
    from asyncua import Server

    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/bench")
    ns = await server.register_namespace("urn:bench")
    nodes = []
    for j in range(SESSIONS):
        folder = await server.nodes.objects.add_folder(ns, f"w{j}")
        nodes += [await folder.add_variable(ua_id(ns, j, i), f"s{i}", 0.0)
                  for i in range(COMPONENTS)]
    await server.start()
    port = server.bserver._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()

    async def update() -> None:
        loop = asyncio.get_running_loop()
        start, k = loop.time(), 0
        while not stop.is_set():
            k += 1
            for i, node in enumerate(nodes):
                await node.write_value(math.sin(k / RATE + i))
                if i % 100 == 99:  # let the server answer its clients meanwhile
                    await asyncio.sleep(0)
            await asyncio.sleep(max(0.0, start + k / RATE - loop.time()))

    updater = asyncio.ensure_future(update())
    try:
        groups = [[f"ns={ns};s=w{j}.s{i}" for i in range(COMPONENTS)] for j in range(SESSIONS)]
        async with subscribers(f"opc.tcp://127.0.0.1:{port}/bench", [{"groups": groups}]) as subs:
            await asyncio.sleep(WARMUP)
            return await delivered(subs, SECONDS)
    finally:
        stop.set()
        await updater
        await server.stop()


def ua_id(ns: int, j: int, i: int) -> Any:
    from asyncua import ua
    return ua.NodeId(f"w{j}.s{i}", ns)


def _loop_run(main: Awaitable[tuple[float, float]]) -> tuple[float, float]:
    """On uvloop where installed, as the daemon runs (``twin-server run``)."""
    try:
        import uvloop
        return uvloop.run(main)  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(main)  # type: ignore[arg-type]


def run() -> list[dict[str, Any]]:
    offered = SESSIONS * COMPONENTS * RATE
    ours, ours_cpu = _loop_run(_ours())
    plain, plain_cpu = _loop_run(_plain())
    what = f"{SESSIONS} sessions x {COMPONENTS} changing outputs at {RATE:g} Hz"
    return [
        {"figure": f"value changes delivered to a subscriber ({what}, "
                   f"{offered:,.0f}/s offered)",
         "value": ours, "unit": "values/s",
         "baseline": "plain asyncua, Node.write_value rounds", "baseline_value": plain,
         "target": ">= 50,000/s and >= 3x baseline", "higher_is_better": True},
        {"figure": "server CPU per 1,000 delivered values/s", "value": ours_cpu * 100 / ours * 1e3,
         "unit": "% of a core", "baseline": "plain asyncua",
         "baseline_value": plain_cpu * 100 / plain * 1e3 if plain else None,
         "target": "", "higher_is_better": False},
    ]


if __name__ == "__main__":
    subscriber_main()
