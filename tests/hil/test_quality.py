"""A mirrored input's value and status change together, as a subscribed client and the
history see them, around every (re)connect: a PLC killed and restarted, a PLC hung
(SIGSTOP) and resumed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from tests.hil.conftest import LOOP, SoftPlc, load, wait_for
from twin_server.runtime.daemon import Daemon

INFLOW = "Sessions.s.Components.tank.Inputs.inflow"
FALLBACK = 0.01


@dataclass(frozen=True)
class Seen:
    """One notification of the input's node (or one sample of its history)."""

    value: Any
    status: str
    at: datetime


class Collector:
    """Every data change of a monitored item, in order (asyncua's handler protocol)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def datachange_notification(self, node: object, val: object, data: Any) -> None:
        dv = data.monitored_item.Value
        self.seen.append(Seen(None if dv.Value is None else dv.Value.Value,
                              dv.StatusCode.name, dv.SourceTimestamp))

    def statuses(self) -> list[str]:
        return [s.status for s in self.seen]


def inconsistencies(seen: list[Seen], fallback: float | None,
                    every: list[Seen] | None = None) -> list[str]:
    """What in ``seen`` shows a value with a status that does not describe it.

    ``every``: each pair the session held (its history), when ``seen`` is sampled (a
    subscription samples at its interval: a Good value and the Uncertain one after it
    may fall between two samples); the last usable value is then the last Good one
    there, not only the last one ``seen``."""
    found = []
    last_good: Any = None
    ever_good = False
    for s in seen:
        where = f"{s.value!r} {s.status} at {s.at:%H:%M:%S.%f}"
        if (s.value is None) != s.status.startswith("Bad"):  # Bad is null (Part 4, 7.7.1)
            found.append(f"a value that does not go with its status: {where}")
        if every is not None and s.status == "UncertainLastUsableValue":
            held = [h for h in every if h.at <= s.at and h.status == "Good"]
            if held:
                last_good, ever_good = held[-1].value, True
        if s.status == "Good":
            last_good, ever_good = s.value, True
            if fallback is not None and s.value == fallback:
                found.append(f"the fallback as the PLC's value: {where}")
        elif s.status == "UncertainLastUsableValue":
            if s.value != last_good:
                found.append(f"not the last usable value {last_good!r}: {where}")
        elif s.status == "UncertainSubstituteValue":
            if s.value != fallback:
                found.append(f"a substitute that is not the fallback {fallback!r}: {where}")
        elif s.status.startswith("Bad"):
            if ever_good:
                found.append(f"Bad after the PLC's values came: {where}")
        else:
            found.append(f"an unexpected status: {where}")
    return found


def config(endpoint: str, state_dir: Path, fallback: float | None) -> str:
    peer = LOOP + (f"fallback = {fallback}\n" if fallback is not None else "")
    return peer + f"""
[server]
state_dir = "{state_dir}"

[sessions.s.history]
variables = ["tank.inflow"]
"""


class TestValueAndStatusTogether:
    @pytest.mark.parametrize("fallback", [pytest.param(None, id="last-usable"),
                                          pytest.param(FALLBACK, id="fallback")])
    async def test_every_notification_and_sample_is_consistent(
            self, own_plc: SoftPlc, tmp_path: Path, fallback: float | None) -> None:
        """Through a restart and a hang of the PLC, each (value, status) a subscriber
        gets describes itself, and the history holds the same pairs."""
        loaded = load(own_plc.endpoint, config(own_plc.endpoint, tmp_path, fallback),
                      level=1.0)
        daemon = Daemon(loaded, endpoint="opc.tcp://127.0.0.1:0/twin-server")
        started = datetime.now(UTC)
        runner = asyncio.create_task(daemon.run())
        collector = Collector()
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            assert daemon.hil is not None
            mirror = daemon.hil

            def status() -> str:
                return mirror.statistics().peer("plc").binding("valve").status

            async with Client(daemon.endpoint_url, timeout=10) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                node = client.get_node(ua.NodeId(INFLOW, ns))
                subscription = await client.create_subscription(10, collector)
                await subscription.subscribe_data_change(node, queuesize=1000)
                await wait_for(lambda: status() == "Good", 15)
                await asyncio.sleep(0.5)
                lost = "UncertainSubstituteValue" if fallback else "UncertainLastUsableValue"
                own_plc.kill()  # a restart: the PLC's outputs start from its defaults
                await wait_for(lambda: status() == lost, 5)
                await asyncio.to_thread(own_plc.start)
                await wait_for(lambda: status() == "Good", 15)
                await asyncio.sleep(0.5)
                own_plc.pause()  # a hang: the same PLC answers again on resume
                try:
                    await wait_for(lambda: status() == lost, 5)
                    await asyncio.sleep(0.3)
                finally:
                    own_plc.resume()
                await wait_for(lambda: status() == "Good", 15)
                await asyncio.sleep(0.5)
                await subscription.delete()
                statuses = collector.statuses()
                assert statuses.count(lost) >= 2 and statuses[-1] == "Good", statuses

                await asyncio.sleep(1.5)  # the history's batch interval: 1 s
                history = await node.read_raw_history(
                    started, datetime.now(UTC) + timedelta(seconds=1), return_bounds=False)
                samples = [Seen(None if dv.Value is None else dv.Value.Value,
                                dv.StatusCode.name, dv.SourceTimestamp) for dv in history]
                # (from the mirror's start on: before it, the input held the twin's own)
                first = collector.seen[0].at
                assert inconsistencies([h for h in samples if h.at >= first], fallback) == []
                assert inconsistencies(collector.seen, fallback, samples) == []
                for s in collector.seen:  # the history holds each pair seen, at its time
                    before = [h for h in samples if h.at <= s.at]
                    assert before, f"no history before {s}"
                    assert (before[-1].value, before[-1].status) == (s.value, s.status), s
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)
