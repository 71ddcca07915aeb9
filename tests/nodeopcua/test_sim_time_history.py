"""Simulated time in history as an independent client sees it: node-opcua reads the
raw history of a variable and of the session's ``SimTime`` node in one HistoryRead
and pairs them by SourceTimestamp (what a SCADA's historian link does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from asyncua import Client, ua

from tests.nodeopcua import NodeOpcua
from tests.opcua.conftest import MODULE_LOOP, PLANT, run_daemon, stop_daemon
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = MODULE_LOOP

CONFIG = PLANT + """
[server.security]  # the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[history]
batch_interval = 0.05

[sessions.fast]
twin = "plant"
step_size = 0.01
realtime_factor = 0.0
publish_rate = 20.0

[sessions.fast.history]
variables = ["tank.level"]
"""

HISTORY_READ = """
const { main, withSession } = require("./lib");
main(async (args, opcua) => withSession(args, async (session) => {
    const response = await session.historyRead(new opcua.HistoryReadRequest({
        historyReadDetails: new opcua.ReadRawModifiedDetails({
            isReadModified: false, startTime: new Date(args.start),
            endTime: new Date(args.end), numValuesPerNode: 0, returnBounds: false }),
        nodesToRead: args.nodes.map((nodeId) => ({ nodeId })),
        timestampsToReturn: opcua.TimestampsToReturn.Both,
        releaseContinuationPoints: false,
    }));
    return response.results.map((r) => ({
        status: r.statusCode.name,
        values: r.historyData.dataValues.map((dv) => [
            dv.sourceTimestamp.getTime(), dv.sourcePicoseconds, dv.value.value]),
    }));
}));
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


class TestSimTimeHistory:
    async def test_values_pair_with_their_simulated_time(self, nodeopcua: NodeOpcua,
                                                          daemon: Daemon) -> None:
        """node-opcua's HistoryRead of tank.level and SimTime answers Good for both,
        stamped alike: every level has its simulated time, which advances far faster
        than the wall clock (real-time factor 0)."""
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            count = client.get_node(ua.NodeId("Sessions.fast.StepCount", ns))
            # 10,000 ticks, and 10 publish periods (20 Hz) to record a level in each: on
            # a quiet machine the ticks alone can take less than the 5 samples need
            began = asyncio.get_running_loop().time()
            async with asyncio.timeout(15):
                while (await count.read_value() < 10_000
                       or asyncio.get_running_loop().time() - began < 0.5):
                    await asyncio.sleep(0.05)
        assert daemon.store is not None
        await daemon.store.flush()
        now = datetime.now(UTC)
        level, sim = await nodeopcua.run(
            HISTORY_READ, daemon.endpoint_url,
            start=(now - timedelta(minutes=5)).isoformat(), end=now.isoformat(),
            nodes=[f"ns={ns};s=Sessions.fast.Components.tank.Outputs.level",
                   f"ns={ns};s=Sessions.fast.SimTime"])
        assert (level["status"], sim["status"]) == ("Good", "Good")
        at = {(ms, pico): value for ms, pico, value in sim["values"]}
        pairs = [(at[(ms, pico)], value) for ms, pico, value in level["values"]]
        assert len(pairs) >= 5 and all(0.0 < v < 2.0 for _, v in pairs)
        wall = (level["values"][-1][0] - level["values"][0][0]) / 1000
        assert pairs[-1][0] - pairs[0][0] > 10 * wall
