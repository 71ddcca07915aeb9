"""Client writes reach the session; refusals come back as per-node status codes."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from asyncua import ua
from asyncua.ua.uaerrors import BadNotWritable, BadOutOfRange, BadTypeMismatch

from tests.opcua.conftest import MODULE_LOOP, Served
from twin_server.engine.session import RunState, VarKey
from twin_server.models.base import Kind

pytestmark = MODULE_LOOP

AREA = VarKey("tank", Kind.PARAMETER, "area")


def _dv(value: Any, vtype: ua.VariantType) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype))


async def _write_many(served: Served, writes: list[tuple[str, ua.DataValue]]) -> list[str]:
    """Write several nodes in one Write request; return each node's status name."""
    nodeids = [served.var(path).nodeid for path, _ in writes]
    results = await served.client.uaclient.write_attributes(nodeids, [dv for _, dv in writes])
    return [r.name for r in results]


class TestParameterWrites:
    async def test_in_range_takes_effect(self, served: Served) -> None:
        """A parameter written in range reaches the session and shows in the node at once."""
        node = served.var("Components.tank.Parameters.area")
        await node.write_value(_dv(0.75, ua.VariantType.Double))
        assert served.session.read(AREA) == 0.75
        assert await node.read_value() == 0.75

    async def test_out_of_range_changes_nothing(self, served: Served) -> None:
        """A value outside the range gets BadOutOfRange; session and node keep the old value."""
        node = served.var("Components.tank.Parameters.area")
        version = served.session.version
        with pytest.raises(BadOutOfRange):
            await node.write_value(_dv(-1.0, ua.VariantType.Double))
        assert served.session.read(AREA) == 0.5
        assert await node.read_value() == 0.5
        assert served.session.version == version

    @pytest.mark.parametrize(("path", "dv"), [
        pytest.param("Components.tank.Parameters.area", _dv("big", ua.VariantType.String),
                     id="string-to-double"),
        pytest.param("Components.tank.Parameters.area", _dv(1, ua.VariantType.Int32),
                     id="int32-to-double"),
        pytest.param("Components.tank.Parameters.area", _dv(True, ua.VariantType.Boolean),
                     id="boolean-to-double"),
        pytest.param("Components.controller.Parameters.reverse", _dv(1.0, ua.VariantType.Double),
                     id="double-to-boolean"),
        pytest.param("Components.tank.Parameters.area",
                     _dv([1.0, 2.0], ua.VariantType.Double), id="array-to-scalar"),
    ])
    async def test_wrong_type(self, served: Served, path: str, dv: ua.DataValue) -> None:
        """A Variant of the wrong type gets BadTypeMismatch and changes nothing."""
        node = served.var(path)
        before = await node.read_value()
        with pytest.raises(BadTypeMismatch):
            await node.write_value(dv)
        assert await node.read_value() == before

    async def test_boolean_parameter(self, served: Served) -> None:
        """A Boolean parameter takes a Boolean."""
        node = served.var("Components.controller.Parameters.reverse")
        await node.write_value(_dv(True, ua.VariantType.Boolean))
        assert served.session.read(VarKey("controller", Kind.PARAMETER, "reverse")) is True

    async def test_fixed_parameter_while_running(self, served: Served) -> None:
        """A fixed parameter is not writable while the session runs."""
        served.session.start()
        with pytest.raises(BadNotWritable):
            await served.var("Components.tank.Parameters.initial_level").write_value(
                _dv(1.0, ua.VariantType.Double))
        assert served.session.state is RunState.RUNNING


class TestLogging:
    async def test_refusal_is_logged(self, served: Served) -> None:
        """A refused write logs write_refused with the session, node, status and reason."""
        with structlog.testing.capture_logs() as logs, pytest.raises(BadOutOfRange):
            await served.var("Components.tank.Parameters.area").write_value(
                _dv(-1.0, ua.VariantType.Double))
        (event,) = [e for e in logs if e["event"] == "write_refused"]
        assert event["session"] == "tank"
        assert event["node"] == "Sessions.tank.Components.tank.Parameters.area"
        assert event["status"] == "BadOutOfRange"
        assert "-1.0" in event["reason"]


class TestOtherWrites:
    async def test_output_is_not_writable(self, served: Served) -> None:
        """Writing an output gets BadNotWritable."""
        with pytest.raises(BadNotWritable):
            await served.var("Components.tank.Outputs.level").write_value(
                _dv(1.0, ua.VariantType.Double))

    @pytest.mark.parametrize("path", [
        pytest.param("SimTime", id="sim-time"),
        pytest.param("StepCount", id="step-count"),
        pytest.param("State", id="state"),
        pytest.param("Diagnostics.Overruns", id="diagnostics"),
    ])
    async def test_read_only_scalars(self, served: Served, path: str) -> None:
        """Session scalars other than RealtimeFactor are read-only."""
        node = served.var(path)
        value = await node.read_data_value()
        with pytest.raises(BadNotWritable):
            await node.write_value(ua.DataValue(value.Value))

    async def test_input_is_forced(self, served: Served) -> None:
        """Writing an input forces it: the session reads the written value."""
        await served.var("Components.tank.Inputs.inflow").write_value(
            _dv(0.01, ua.VariantType.Double))
        assert served.session.read(VarKey("tank", Kind.INPUT, "inflow")) == 0.01

    async def test_state_write(self, served: Served) -> None:
        """Writing a state overwrites the model's state."""
        await served.var("Components.tank.States.level").write_value(
            _dv(1.2, ua.VariantType.Double))
        assert served.session.read(VarKey("tank", Kind.STATE, "level")) == 1.2

    async def test_realtime_factor(self, served: Served) -> None:
        """RealtimeFactor is writable within 0..1000 and sets the session's factor."""
        node = served.var("RealtimeFactor")
        await node.write_value(_dv(10.0, ua.VariantType.Double))
        assert served.session.realtime_factor == 10.0
        assert await node.read_value() == 10.0
        with pytest.raises(BadOutOfRange):
            await node.write_value(_dv(1001.0, ua.VariantType.Double))
        assert served.session.realtime_factor == 10.0

    async def test_display_name_is_not_writable(self, served: Served) -> None:
        """Attributes other than Value of our nodes are not writable."""
        node = served.var("Components.tank.Parameters.area")
        with pytest.raises(BadNotWritable):
            await node.write_attribute(ua.AttributeIds.DisplayName,
                                       ua.DataValue(ua.Variant(ua.LocalizedText("x"))))


class TestBatches:
    async def test_one_bad_write_does_not_fail_the_others(self, served: Served) -> None:
        """Each WriteValue of one request gets its own status; the good ones apply."""
        statuses = await _write_many(served, [
            ("Components.tank.Parameters.area", _dv(0.8, ua.VariantType.Double)),
            ("Components.tank.Parameters.height", _dv(-5.0, ua.VariantType.Double)),
            ("Components.tank.Outputs.level", _dv(1.0, ua.VariantType.Double)),
            ("Components.controller.Parameters.kp", _dv("x", ua.VariantType.String)),
            ("Components.controller.Parameters.ki", _dv(0.01, ua.VariantType.Double)),
        ])
        assert statuses == ["Good", "BadOutOfRange", "BadNotWritable", "BadTypeMismatch", "Good"]
        assert served.session.read(AREA) == 0.8
        assert served.session.read(VarKey("tank", Kind.PARAMETER, "height")) == 2.0
        assert served.session.read(VarKey("controller", Kind.PARAMETER, "ki")) == 0.01

    async def test_mixed_with_standard_nodes(self, served: Served) -> None:
        """Writes to nodes outside our namespace keep asyncua's own handling."""
        nodeids = [served.var("Components.tank.Parameters.area").nodeid,
                   ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)]
        results = await served.client.uaclient.write_attributes(
            nodeids, [_dv(0.9, ua.VariantType.Double), _dv(0, ua.VariantType.Int32)])
        assert results[0].is_good()
        assert results[1].name == "BadUserAccessDenied"

    async def test_statistics_count_writes(self, served: Served) -> None:
        """The server counts accepted and refused writes."""
        before = served.server.statistics()
        await _write_many(served, [
            ("Components.tank.Parameters.area", _dv(0.8, ua.VariantType.Double)),
            ("Components.tank.Parameters.area", _dv(-1.0, ua.VariantType.Double)),
        ])
        after = served.server.statistics()
        assert after.writes_accepted - before.writes_accepted == 1
        assert after.writes_refused - before.writes_refused == 1
