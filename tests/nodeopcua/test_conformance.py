"""What an independent stack (node-opcua) meets on the demo (configs/demo.toml, whose
anonymous clients may operate), with a viewer and an admin besides: ranges, what the
server says it is, and refusals per operation with Part 4's codes (issue #15)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import ua

from tests.nodeopcua import NodeOpcua
from tests.opcua.conftest import MODULE_LOOP, run_daemon, stop_daemon
from twin_server import __version__
from twin_server.config.security import LimitsConfig
from twin_server.opcua import identity
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon
from twin_server.security.roles import Role
from twin_server.security.users import add_user

pytestmark = MODULE_LOOP

DEMO = Path(__file__).parents[2] / "configs" / "demo.toml"
PASSWORD = "a long enough password"


@dataclass
class Demo:
    daemon: Daemon
    url: str
    ns: int

    def node(self, path: str) -> str:
        """A node-opcua NodeId string of a dotted path below TwinServer."""
        return f"ns={self.ns};s={path}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo(nodeopcua: NodeOpcua) -> AsyncIterator[Demo]:
    state = Path(tempfile.mkdtemp(prefix="twin-server-demo-"))
    add_user(state / "users.json", "vera", Role.VIEWER, PASSWORD)
    add_user(state / "users.json", "alice", Role.ADMIN, PASSWORD)
    daemon, task = await run_daemon(DEMO.read_text(), state)
    try:
        url = daemon.endpoint_url
        namespaces = await nodeopcua.run("read.js", url, nodes=["i=2255"])
        yield Demo(daemon, url, namespaces[0]["value"].index(NAMESPACE_URI))
    finally:
        await stop_daemon(daemon, task)


def _read(out: list[dict[str, object]]) -> list[object]:
    """The values of a read.js result, each Good."""
    assert all(dv["status"] == "Good" for dv in out), out
    return [dv["value"] for dv in out]


class TestRanges:
    async def test_eu_ranges_are_finite_and_follow_parameters(self, nodeopcua: NodeOpcua,
                                                               demo: Demo) -> None:
        """node-opcua reads the tank level's EURange as 0..height (2 m), the PID's
        output's as its limits, the room setpoint's as its value; none is infinite."""
        base = "Sessions.tank.Components"
        paths = [f"{base}.tank.Outputs.level.EURange",
                 f"{base}.controller.Outputs.output.EURange",
                 "Sessions.room.Components.setpoint.Outputs.output.EURange",
                 "Sessions.room.Components.ambient.Outputs.output.EURange"]
        ranges = _read(await nodeopcua.run("read.js", demo.url,
                                           nodes=[demo.node(p) for p in paths]))
        assert [(r["low"], r["high"]) for r in ranges] == [  # type: ignore[index]
            (0.0, 2.0), (0.0, 0.05), (21.0, 21.0), (-1.0, 11.0)]

    async def test_unbounded_variables_have_no_eu_range(self, nodeopcua: NodeOpcua,
                                                        demo: Demo) -> None:
        """A variable with an open range (the thermometer's noisy output) has no EURange
        node; node-opcua's read says BadNodeIdUnknown rather than an infinite range."""
        path = "Sessions.room.Components.thermometer.Outputs.output"
        out = await nodeopcua.run("read.js", demo.url, nodes=[
            demo.node(f"{path}.EURange"),
            {"nodeId": demo.node(path), "attribute": "DisplayName"},
            {"nodeId": demo.node(path), "attribute": "Description"}])
        assert out[0]["status"] == "BadNodeIdUnknown"
        assert out[1]["value"] == "thermometer.output"
        assert out[2]["value"].startswith("thermometer.output (output): measured value")


class TestIdentity:
    async def test_build_info(self, nodeopcua: NodeOpcua, demo: Demo) -> None:
        """BuildInfo names twin-server, its URI, manufacturer, version and build date."""
        ids = {"ProductUri": 2262, "ManufacturerName": 2263, "ProductName": 2261,
               "SoftwareVersion": 2264, "BuildNumber": 2265, "BuildDate": 2266}
        values = dict(zip(ids, _read(await nodeopcua.run(
            "read.js", demo.url, nodes=[f"i={i}" for i in ids.values()])), strict=True))
        assert values["ProductName"] == "twin-server"
        assert values["ProductUri"] == identity.PRODUCT_URI
        assert values["ManufacturerName"] == identity.MANUFACTURER
        assert values["SoftwareVersion"] == __version__
        assert values["BuildNumber"] == __version__
        assert str(values["BuildDate"]).startswith(
            identity.build().date.strftime("%Y-%m-%dT%H:%M"))

    async def test_endpoints_describe_the_product(self, nodeopcua: NodeOpcua,
                                                  demo: Demo) -> None:
        """Every endpoint's ApplicationDescription has twin-server's productUri and the
        config's application name and URI."""
        endpoints = await nodeopcua.run("endpoints.js", demo.url)
        assert {e["policy"] for e in endpoints} >= {"None", "Basic256Sha256"}
        for e in endpoints:
            assert (e["productUri"], e["applicationName"], e["applicationUri"]) == (
                identity.PRODUCT_URI, "twin-server demo", "urn:twin-server:demo")

    async def test_server_capabilities(self, nodeopcua: NodeOpcua, demo: Demo) -> None:
        """ServerCapabilities hold the limits the server enforces, none reads null."""
        limits = LimitsConfig()
        expected = {
            "ServerProfileArray": list(identity.PROFILES), "LocaleIdArray": ["en"],
            "MinSupportedSampleRate": 1.0, "MaxBrowseContinuationPoints": 0,
            "MaxHistoryContinuationPoints": limits.max_history_continuation_points,
            "MaxArrayLength": limits.max_message_size,
            "MaxStringLength": limits.max_message_size,
            "MaxByteStringLength": limits.max_message_size,
            "MaxSessions": limits.max_client_sessions,
            "MaxSubscriptions": limits.max_subscriptions,
            "MaxMonitoredItems": limits.max_monitored_items,
            "MaxSubscriptionsPerSession": limits.max_subscriptions_per_session,
            "MaxMonitoredItemsPerSubscription": limits.max_monitored_items_per_subscription,
            "MaxMonitoredItemsQueueSize": limits.max_monitored_item_queue_size,
        }
        nodes = [f"i={getattr(ua.ObjectIds, f'Server_ServerCapabilities_{name}')}"
                 for name in expected]
        values = _read(await nodeopcua.run("read.js", demo.url, nodes=nodes))
        assert dict(zip(expected, values, strict=True)) == expected

    async def test_no_capability_reads_null(self, nodeopcua: NodeOpcua, demo: Demo) -> None:
        """Every variable node-opcua browses under ServerCapabilities and its
        OperationLimits reads Good and not null; the OperationLimits are the enforced
        max_nodes_per_request (HistoryRead's the history's), and nothing claims what
        is not served (no RoleSet, ConformanceUnits or HistoryUpdate limits)."""
        seen: dict[str, object] = {}
        for node in (f"i={ua.ObjectIds.Server_ServerCapabilities}",
                     f"i={ua.ObjectIds.Server_ServerCapabilities_OperationLimits}"):
            out = await nodeopcua.run("browse_read.js", demo.url, node=node)
            for name, dv in out["values"].items():
                assert dv["status"] == "Good" and dv["value"] is not None, (name, dv)
                seen[name.split(":")[-1]] = dv["value"]
            seen.update({ref["browseName"].split(":")[-1]: ref["nodeClass"]
                         for ref in out["browse"] if ref["nodeClass"] != "Variable"})
        limits = LimitsConfig()
        assert seen["MaxNodesPerRead"] == seen["MaxNodesPerWrite"] == \
            seen["MaxNodesPerMethodCall"] == seen["MaxNodesPerBrowse"] == \
            seen["MaxMonitoredItemsPerCall"] == limits.max_nodes_per_request
        assert seen["MaxNodesPerHistoryReadData"] == limits.max_history_nodes_per_request
        assert {"MaxSelectClauseParameters", "MaxWhereClauseParameters",
                "OperationLimits"} <= set(seen)
        assert not {"RoleSet", "ConformanceUnits", "MaxNodesPerHistoryUpdateData"} & set(seen)


class TestRefusals:
    async def test_viewer_write_is_refused_per_node(self, nodeopcua: NodeOpcua,
                                                    demo: Demo) -> None:
        """A viewer's Write is answered per node (BadUserAccessDenied each; an output
        BadNotWritable), not with a ServiceFault; nothing changes."""
        setpoint = demo.node("Sessions.room.Components.setpoint.Parameters.value")
        writes = [{"nodeId": setpoint, "dataType": "Double", "value": 25.0},
                  {"nodeId": demo.node("Sessions.tank.RealtimeFactor"), "dataType": "Double",
                   "value": 2.0},
                  {"nodeId": demo.node("Sessions.tank.Components.tank.Outputs.level"),
                   "dataType": "Double", "value": 1.0}]
        out = await nodeopcua.run("write.js", demo.url, writes=writes, user="vera",
                                  password=PASSWORD)
        assert out == {"statuses": ["BadUserAccessDenied", "BadUserAccessDenied",
                                    "BadNotWritable"]}
        assert _read(await nodeopcua.run("read.js", demo.url, nodes=[setpoint])) == [21.0]

    async def test_operator_write_mixed(self, nodeopcua: NodeOpcua, demo: Demo) -> None:
        """An anonymous operator's Write: Good where allowed, a refusal where not, in
        one request."""
        kp = demo.node("Sessions.room.Components.controller.Parameters.kp")
        writes = [{"nodeId": kp, "dataType": "Double", "value": 400.0},
                  {"nodeId": "i=2267", "dataType": "Byte", "value": 1}]  # ServiceLevel
        out = await nodeopcua.run("write.js", demo.url, writes=writes)
        assert out == {"statuses": ["Good", "BadUserAccessDenied"]}

    @pytest.mark.parametrize(("user", "obj", "method", "status"), [
        pytest.param(None, "Sessions.tank", "Sessions.tank.NoSuchMethod", "BadMethodInvalid",
                     id="unknown-method-operator"),
        pytest.param("alice", "Sessions.tank", "Sessions.tank.NoSuchMethod",
                     "BadMethodInvalid", id="unknown-method-admin"),
        pytest.param("alice", "Sessions.tank", "Sessions.tank.State", "BadMethodInvalid",
                     id="not-a-method"),
        pytest.param(None, "Sessions.nosuch", "Sessions.nosuch.Start", "BadNodeIdUnknown",
                     id="unknown-object"),
        pytest.param("alice", "Sessions.room", "Sessions.tank.Snapshot", "BadMethodInvalid",
                     id="another-objects-method"),
        pytest.param("alice", "Sessions.tank", "DeleteSession", "BadMethodInvalid",
                     id="twinserver-method-on-a-session"),
        pytest.param("vera", "Sessions.tank", "Sessions.tank.Halt", "BadUserAccessDenied",
                     id="viewer-halt"),
    ])
    async def test_call_refusals(self, nodeopcua: NodeOpcua, demo: Demo, user: str | None,
                                 obj: str, method: str, status: str) -> None:
        """A call to nothing, or to one object's method on another, gets
        BadMethodInvalid or BadNodeIdUnknown (whoever calls); a call the role may not
        make BadUserAccessDenied; each per operation."""
        call = {"objectId": demo.node(obj), "methodId": demo.node(method)}
        auth = {"user": user, "password": PASSWORD} if user else {}
        out = await nodeopcua.run("call.js", demo.url, calls=[call], **auth)
        assert [r["status"] for r in out["results"]] == [status]

