"""The clients of the soak test (``test_soak.py``), run in a child process so that
the daemon's memory, tasks and file descriptors are measured without them.

``python -m tests.soak_clients URL SECONDS [warmup]``: for SECONDS, real asyncua clients do
in a loop what UaExpert and SCADA users do to twin-server:

* ``scada0..2``: connect, browse the tree, subscribe to a few hundred variables
  (every variable of the ``line1`` and ``line2`` sessions and of their own
  playground ``play<i>``, and the Diagnostics), read, write parameters, call
  Start/Suspend/Step/Resume/Snapshot/Restore/Reset on their playground,
  HistoryRead values and events, disconnect; every fourth cycle they drop the
  connection instead (no CloseSession, as a client that crashed or lost its
  network does), leaving the server an orphaned session with a live subscription.
  In the warm-up, the first cycle also fills the playground's snapshot store to
  its bound (``MAX_SNAPSHOTS``);
* ``churn``: CreateSession under a new name each time, subscribe to it, run it,
  Snapshot, Step, Restore, Fork, DeleteSession of both; every fifth cycle it also
  defines a twin (DefineTwin), runs a session of it and removes both, and every
  third one leaves a session behind for the idle timeout to expire.

Each cycle prints one JSON line: ``{"user", "cycle", "ok", "seconds"}`` and, on
failure, ``"error"``; the last line is ``{"done": true}``. A cycle that fails is
a failure of the daemon: nothing here is expected to be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import Client, Node, ua

from twin_server.engine.manager import MAX_SNAPSHOTS

NAMESPACE_URI = "urn:twin-server"
#: the session timeout the clients ask for (ms); the soak's daemon caps it anyway
SESSION_TIMEOUT_MS = 10_000
#: config sessions everybody subscribes to, and the playgrounds of the scada users
SHARED = ("line1", "line2")
SCADA_USERS = 3
PAUSE = 0.5  # s between two cycles of one user
EXTRA_TWIN = """
[twins.{name}.components.tank]
model = "water_tank"

[twins.{name}.components.feed]
model = "constant"
parameters = {{ value = 0.01 }}

[twins.{name}]
connections = ["feed.output -> tank.inflow"]
"""
_KINDS = ("Inputs", "Outputs", "States", "Parameters")


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Counter:
    """A subscription handler that counts data changes."""

    def __init__(self) -> None:
        self.changes = 0

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.changes += 1

    def event_notification(self, event: Any) -> None:
        self.changes += 1


async def connect(url: str) -> tuple[Client, int]:
    client = Client(url, timeout=10)
    client.session_timeout = SESSION_TIMEOUT_MS

    async def lost(exc: Exception) -> None:
        # a connection the client did not close: the soak fails on each (with when,
        # so that it can be set beside the daemon's loop stalls and this process's)
        emit({"lost": f"{type(exc).__name__}: {exc}", "at": time.time(),
              "client_stall": round(WATCH.longest_recent(), 3)})

    client.connection_lost_callback = lost
    await client.connect()
    return client, await client.get_namespace_index(NAMESPACE_URI)


class LoopWatch:
    """This process's own event-loop stalls: a client whose loop is held longer than
    its keep-alive probe's timeout (1 s) thinks the server is gone."""

    def __init__(self) -> None:
        self.recent: list[tuple[float, float]] = []  # (when, stall) over 0.1 s

    def longest_recent(self, window: float = 5.0) -> float:
        now = time.monotonic()
        return max((g for t, g in self.recent if now - t < window), default=0.0)

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            if now - last > 0.1:
                self.recent = [*self.recent[-50:], (now, now - last)]
            last = now


WATCH = LoopWatch()


async def drop(client: Client) -> None:
    """Lose the connection as a crashed client does: no CloseSession, no
    CloseSecureChannel, the socket just closes. (asyncua has no public call for
    this: its background tasks are stopped by hand so that it does not reconnect.)"""
    client.uaclient.request_disconnect()
    tasks = [client._supervisor_task, client._stale_watchdog_task,
             client._renew_channel_task, client.uaclient.session._publish_task]
    for task in tasks:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    client.disconnect_socket()


async def call(client: Client, ns: int, obj: str, method: str, *args: ua.Variant) -> list[Any]:
    """Call ``method`` (a NodeId path) on ``obj``; raise with the server's message."""
    result = (await client.uaclient.call([ua.CallMethodRequest(
        ObjectId=ua.NodeId(obj, ns), MethodId=ua.NodeId(method, ns),
        InputArguments=list(args))]))[0]
    if not result.StatusCode.is_good():
        infos = result.InputArgumentDiagnosticInfos or []
        why = "; ".join(str(i.AdditionalInfo) for i in infos if i and i.AdditionalInfo)
        raise RuntimeError(f"{method} on {obj}: {result.StatusCode.name} {why}")
    return [v for v in (result.OutputArguments or [])]


def string(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


async def browse_tree(client: Client, roots: list[ua.NodeId]) -> list[ua.NodeId]:
    """Every node below ``roots`` (hierarchical references, forward), browsed level
    by level with one Browse request per level as a browser expanding a tree does;
    returns the Variables found."""
    variables: list[ua.NodeId] = []
    level = roots
    seen: set[ua.NodeId] = set(roots)
    while level:
        params = ua.BrowseParameters()
        params.NodesToBrowse = [ua.BrowseDescription(
            NodeId=nodeid, BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
            IncludeSubtypes=True, NodeClassMask=0, ResultMask=ua.BrowseResultMask.All)
            for nodeid in level]
        results = await client.uaclient.browse(params)
        following: list[ua.NodeId] = []
        for nodeid, result in zip(level, results, strict=True):
            if not result.StatusCode.is_good() and nodeid not in roots:
                continue  # deleted since its parent was browsed (a churned session, twin)
            result.StatusCode.check()
            for ref in result.References:
                target = ref.NodeId
                if target in seen or target.NamespaceIndex != roots[0].NamespaceIndex:
                    continue
                seen.add(target)
                following.append(target)
                if ref.NodeClass == ua.NodeClass.Variable:
                    variables.append(target)
        level = following
    return variables


def model_variables(nodeids: list[ua.NodeId]) -> list[ua.NodeId]:
    """The component variables and Diagnostics among browsed nodes (not their
    EURange, EngineeringUnits and other properties)."""
    kept = []
    for nodeid in nodeids:
        parts = str(nodeid.Identifier).split(".")
        if (len(parts) == 6 and parts[2] == "Components" and parts[4] in _KINDS) or \
                (len(parts) == 4 and parts[2] == "Diagnostics"):
            kept.append(nodeid)
    return kept


async def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        await asyncio.sleep(0.05)


async def scada_cycle(url: str, index: int, cycle: int, warmup: bool) -> None:
    """One visit of a UaExpert or SCADA user (the first of a warm-up also fills the
    playground's snapshot store to its bound)."""
    play = f"play{index}"
    client, ns = await connect(url)
    dropped = cycle % 4 == 3
    try:
        # browse: the top of the tree, the list of sessions, then whole sessions
        root = client.get_node(ua.NodeId("TwinServer", ns))
        assert len(await root.get_children()) >= 2
        listed = await client.get_node(ua.NodeId("Sessions", ns)).get_children_descriptions()
        names = {d.BrowseName.Name for d in listed}
        missing = {*SHARED, play} - names
        assert not missing, f"sessions {sorted(missing)} are not in the address space"
        await browse_tree(client, [ua.NodeId("Twins", ns)])
        found = await browse_tree(client, [ua.NodeId(f"Sessions.{s}", ns)
                                           for s in (*SHARED, play)])
        variables = model_variables(found)
        assert len(variables) >= 200, f"only {len(variables)} variables browsed"

        # subscribe to all of them, as a SCADA screen does
        counter = Counter()
        sub = await client.create_subscription(100, counter)
        handles = await sub.subscribe_data_change([client.get_node(n) for n in variables],
                                                  queuesize=1)
        bad = [h for h in handles if not isinstance(h, int)]
        assert not bad, f"{len(bad)} monitored items refused: {bad[:3]}"
        await wait_for(f"the first values of {len(variables)} monitored items",
                       lambda: counter.changes >= len(variables))
        events = Counter()
        esub = await client.create_subscription(100, events)
        await esub.subscribe_events(client.get_node(ua.NodeId(f"Sessions.{play}", ns)))

        # read everything once
        values = await client.read_values([client.get_node(n) for n in variables])
        assert len(values) == len(variables)

        # parameters and inputs of the playground
        base = f"Sessions.{play}.Components"
        await client.get_node(ua.NodeId(f"{base}.controller.Parameters.kp", ns)).write_value(
            ua.Variant(0.2 + 0.01 * (cycle % 10), ua.VariantType.Double))
        await client.get_node(ua.NodeId(f"{base}.setpoint.Parameters.offset", ns)).write_value(
            ua.Variant(1.0 + 0.05 * (cycle % 5), ua.VariantType.Double))
        await call(client, ns, f"Sessions.{play}", f"Sessions.{play}.SetParameters",
                   string(json.dumps({"controller": {"ki": 0.004 + 0.001 * (cycle % 3)}})))

        # run control of the playground
        obj = f"Sessions.{play}"
        await call(client, ns, obj, f"{obj}.Reset", string(""))  # Ready, whatever it was
        await call(client, ns, obj, f"{obj}.Start")
        await asyncio.sleep(0.3)
        await call(client, ns, obj, f"{obj}.Suspend")
        for _ in range(MAX_SNAPSHOTS if warmup and cycle == 0 else 0):
            await call(client, ns, obj, f"{obj}.Snapshot")
        snapshot = (await call(client, ns, obj, f"{obj}.Snapshot"))[0]
        await call(client, ns, obj, f"{obj}.Step", ua.Variant(20, ua.VariantType.UInt32))
        await call(client, ns, obj, f"{obj}.Resume")
        await asyncio.sleep(0.2)
        await call(client, ns, obj, f"{obj}.Suspend")
        await call(client, ns, obj, f"{obj}.Restore", string(snapshot))
        await call(client, ns, obj, f"{obj}.Reset", string(""))

        # history of a shared session: values and the session's log
        now = datetime.now(UTC)
        level = client.get_node(ua.NodeId("Sessions.line1.Components.tank1.Outputs.level", ns))
        history = await level.read_raw_history(now - timedelta(seconds=15), now)
        assert history, "no history of line1's tank1 level in the last 15 s"
        log = client.get_node(ua.NodeId(f"Sessions.{play}", ns))
        await log.read_event_history(now - timedelta(minutes=5), now)
        await wait_for("the playground's events", lambda: events.changes > 0)

        if dropped:
            await drop(client)
    finally:
        if not dropped:
            await client.disconnect()


async def churn_cycle(url: str, index: int, cycle: int, warmup: bool) -> None:
    """One visit of a user trying things out in sessions of their own."""
    client, ns = await connect(url)
    phase = "w" if warmup else "m"  # names are new in every phase, as well as every cycle
    try:
        name = f"{phase}c{cycle}"
        twin = "tank_level"
        if cycle % 5 == 4:
            twin = f"{phase}extra{cycle}"
            await call(client, ns, "TwinServer", "DefineTwin",
                       string(EXTRA_TWIN.format(name=twin)))
        params = json.dumps({"tank": {"area": 0.5 + 0.01 * (cycle % 7)}})
        await call(client, ns, "TwinServer", "CreateSession",
                   string(twin), string(name), string(params))
        obj = f"Sessions.{name}"
        found = await browse_tree(client, [ua.NodeId(obj, ns)])
        variables = model_variables(found)
        counter = Counter()
        sub = await client.create_subscription(100, counter)
        await sub.subscribe_data_change([client.get_node(n) for n in variables])
        await sub.subscribe_events(client.get_node(ua.NodeId(obj, ns)))
        await wait_for(f"the first values of {name}", lambda: counter.changes >= len(variables))
        await call(client, ns, obj, f"{obj}.Start")
        await asyncio.sleep(0.3)
        await call(client, ns, obj, f"{obj}.Suspend")
        snapshot = (await call(client, ns, obj, f"{obj}.Snapshot"))[0]
        await call(client, ns, obj, f"{obj}.Step", ua.Variant(100, ua.VariantType.UInt32))
        await call(client, ns, obj, f"{obj}.Restore", string(snapshot))
        fork = f"{phase}f{cycle}"
        await call(client, ns, obj, f"{obj}.Fork", string(fork),
                   ua.Variant(0.0, ua.VariantType.Double))
        await call(client, ns, f"Sessions.{fork}", f"Sessions.{fork}.Step",
                   ua.Variant(500, ua.VariantType.UInt32))
        await sub.delete()
        await call(client, ns, "TwinServer", "DeleteSession", string(fork))
        if twin != "tank_level" or cycle % 3 != 2:
            await call(client, ns, "TwinServer", "DeleteSession", string(name))
        # else: left behind, for server.session_idle_timeout to expire it
        if twin != "tank_level":
            await call(client, ns, "TwinServer", "RemoveTwin", string(twin))
    finally:
        await client.disconnect()


async def user(name: str, visit: Callable[[str, int, int, bool], Awaitable[None]], url: str,
               index: int, until: float, warmup: bool) -> None:
    cycle = 0
    while time.monotonic() < until:
        started = time.monotonic()
        record: dict[str, Any] = {"user": name, "cycle": cycle}
        try:
            await asyncio.wait_for(visit(url, index, cycle, warmup), 60)
            record["ok"] = True
        except Exception as exc:
            record["ok"] = False
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["trace"] = traceback.format_exc(limit=6)
        record["seconds"] = round(time.monotonic() - started, 3)
        emit(record)
        cycle += 1
        await asyncio.sleep(PAUSE)


async def main(url: str, seconds: float, warmup: bool) -> None:
    until = time.monotonic() + seconds
    watch = asyncio.ensure_future(WATCH.run())
    async with asyncio.TaskGroup() as tg:
        for i in range(SCADA_USERS):
            tg.create_task(user(f"scada{i}", scada_cycle, url, i, until, warmup))
            await asyncio.sleep(0.3)  # not all in the same instant
        tg.create_task(user("churn", churn_cycle, url, 0, until, warmup))
    watch.cancel()
    emit({"done": True})


if __name__ == "__main__":
    # asyncua's client warns of what the soak does on purpose (a short session
    # timeout, notifications for a subscription it deleted a moment ago)
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3:] == ["warmup"]))
