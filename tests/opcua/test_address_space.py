"""The address space as a client browses it: NodeIds, browse names, types, units."""

from __future__ import annotations

import math

import pytest
from asyncua import Node, ua

from tests.opcua.conftest import MODULE_LOOP, Served
from twin_server.opcua.units import UNECE_NAMESPACE, unit_id

pytestmark = MODULE_LOOP


async def _children(node: Node) -> dict[str, Node]:
    return {(await c.read_browse_name()).Name: c for c in await node.get_children()}


class TestTree:
    async def test_root_is_below_objects(self, served: Served) -> None:
        """Objects/TwinServer is ns;s=TwinServer with the Twins, Sessions and Diagnostics
        folders and the server methods."""
        objects = await _children(served.client.nodes.objects)
        root = objects["TwinServer"]
        assert root.nodeid == ua.NodeId("TwinServer", served.ns)
        children = await _children(root)
        names = ("Twins", "Sessions", "Diagnostics", "CreateSession", "DeleteSession", "DefineTwin",
                 "RemoveTwin", "ReloadConfig")
        assert {n: c.nodeid for n, c in children.items()} == {
            n: ua.NodeId(n, served.ns) for n in names}

    async def test_session_children(self, served: Served) -> None:
        """A session has its scalars, Diagnostics, state machine, methods and Components,
        named by path; the Program state machine's members have ns 0 browse names."""
        children = await _children(served.node("Sessions.tank"))
        standard = {"CurrentState", "LastTransition", "Deletable", "AutoDelete",
                    "RecycleCount", "Start", "Suspend", "Resume", "Halt", "Reset"}
        assert set(children) == standard | {
            "State", "SimTime", "StepCount", "StepsRemaining", "StepSize", "RealtimeFactor",
            "ForcedInputs", "Diagnostics",
            "Step", "SetParameters", "Snapshot", "Restore", "Fork", "ReleaseInput",
            "ReleaseInputs", "Components"}
        for name, node in children.items():
            assert node.nodeid == ua.NodeId(f"Sessions.tank.{name}", served.ns)
            namespace = 0 if name in standard else served.ns
            assert (await node.read_browse_name()).NamespaceIndex == namespace
        diagnostics = await _children(children["Diagnostics"])
        assert set(diagnostics) == {"Overruns", "LatenessP50", "LatenessP99", "LatenessMax",
                                    "StepDurationMean", "StepDurationMax", "Ticks",
                                    "Worker", "WorkerPid", "Live", "Fault"}

    async def test_component_folders(self, served: Served) -> None:
        """Each component shows only the kind folders it has, variables by NodeId path."""
        tank = await _children(served.var("Components.tank"))
        assert set(tank) == {"Inputs", "Outputs", "States", "Parameters"}
        setpoint = await _children(served.var("Components.setpoint"))
        assert set(setpoint) == {"Outputs", "Parameters"}
        outputs = await _children(tank["Outputs"])
        assert outputs["level"].nodeid == ua.NodeId(
            "Sessions.tank.Components.tank.Outputs.level", served.ns)
        assert set(outputs) == {"level", "outflow", "overflow"}

    async def test_every_session_variable_has_a_node(self, served: Served) -> None:
        """Every variable of session.variables() is a node at its VarKey path."""
        for key, _var in served.session.variables():
            node = served.var(key.path)
            assert (await node.read_browse_name()).Name == key.name

    @pytest.mark.parametrize(("path", "datatype"), [
        pytest.param("Components.tank.Outputs.level", ua.ObjectIds.Double, id="double"),
        pytest.param("Components.tank.Outputs.overflow", ua.ObjectIds.Boolean, id="boolean"),
        pytest.param("Components.controller.Parameters.reverse", ua.ObjectIds.Boolean,
                     id="boolean-parameter"),
        pytest.param("State", ua.ObjectIds.String, id="state"),
        pytest.param("StepCount", ua.ObjectIds.UInt64, id="step-count"),
        pytest.param("SimTime", ua.ObjectIds.Double, id="sim-time"),
    ])
    async def test_data_types(self, served: Served, path: str, datatype: int) -> None:
        """Variables carry the DataType the model declares."""
        assert await served.var(path).read_data_type() == ua.NodeId(datatype)

    @pytest.mark.parametrize(("path", "writable"), [
        pytest.param("Components.tank.Outputs.level", False, id="output"),
        pytest.param("Components.tank.Inputs.inflow", True, id="input"),
        pytest.param("Components.tank.States.level", True, id="state"),
        pytest.param("Components.tank.Parameters.area", True, id="parameter"),
        pytest.param("RealtimeFactor", True, id="realtime-factor"),
        pytest.param("StepSize", False, id="step-size"),
        pytest.param("SimTime", False, id="sim-time"),
    ])
    async def test_access_level(self, served: Served, path: str, writable: bool) -> None:
        """Outputs are CurrentRead; inputs, states and parameters CurrentRead|CurrentWrite."""
        node = served.var(path)
        for attribute in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
            level = (await node.read_attribute(attribute)).Value.Value
            assert level & ua.AccessLevel.CurrentRead.mask
            assert bool(level & ua.AccessLevel.CurrentWrite.mask) is writable

    async def test_description(self, served: Served) -> None:
        """A variable's Description comes from the model, with its unit and range."""
        text = (await served.var("Components.tank.Parameters.area").read_description()).Text
        assert "m^2" in text
        assert "range" in text

    async def test_initial_values(self, served: Served) -> None:
        """Nodes hold the session's values as soon as the session is added."""
        assert await served.var("Components.tank.Outputs.level").read_value() == 0.5
        assert await served.var("State").read_value() == "Ready"
        assert await served.var("StepCount").read_value() == 0
        assert await served.var("StepSize").read_value() == 0.01


class TestTwinDefinition:
    async def test_twin_node(self, served: Served) -> None:
        """Twins.<twin> shows the description, the connections and each component's model."""
        twin = served.node("Twins.plant")
        children = await _children(twin)
        description = await children["Description"].read_value()
        assert description == "Water tank with a PID level controller"
        assert await children["Connections"].read_value() == [
            "setpoint.output -> controller.setpoint",
            "tank.level -> controller.measurement",
            "controller.output -> tank.inflow",
        ]
        models = {name: await (await _children(node))["Model"].read_value()
                  for name, node in (await _children(children["Components"])).items()}
        assert models == {"setpoint": "step", "tank": "water_tank", "controller": "pid"}


class TestEngineeringUnits:
    @pytest.mark.parametrize(("path", "code", "display"), [
        pytest.param("Components.tank.Outputs.level", "MTR", "m", id="metre"),
        pytest.param("Components.tank.Inputs.inflow", "MQS", "m³/s", id="flow"),
        pytest.param("Components.tank.Parameters.area", "MTK", "m²", id="area"),
        pytest.param("Components.controller.Parameters.ki", "C97", "1/s", id="per-second"),
        pytest.param("SimTime", "SEC", "s", id="sim-time"),
        pytest.param("Diagnostics.LatenessP99", "C26", "ms", id="milliseconds"),
    ])
    async def test_unece_code(self, served: Served, path: str, code: str, display: str) -> None:
        """EngineeringUnits carry the UNECE code of the model's unit symbol."""
        node = await served.var(path).get_child("0:EngineeringUnits")
        eu = await node.read_value()
        assert eu.NamespaceUri == UNECE_NAMESPACE
        assert eu.UnitId == unit_id(code)
        assert eu.DisplayName.Text == display

    async def test_unit_without_code(self, served: Served) -> None:
        """A unit with no UNECE code (m^2.5/s) has UnitId -1 and its display name."""
        node = await served.var("Components.tank.Parameters.outflow_coefficient").get_child(
            "0:EngineeringUnits")
        eu = await node.read_value()
        assert eu.UnitId == -1
        assert eu.DisplayName.Text == "m^2.5/s"

    @pytest.mark.parametrize(("path", "low", "high"), [
        pytest.param("Components.tank.Parameters.area", 1e-6, math.inf, id="low-only"),
        pytest.param("Components.setpoint.Parameters.step_time", 0.0, math.inf, id="time"),
        pytest.param("RealtimeFactor", 0.0, 1000.0, id="realtime-factor"),
    ])
    async def test_eu_range(self, served: Served, path: str, low: float, high: float) -> None:
        """EURange holds the variable's low/high; an open end is infinite."""
        node = served.var(path)
        assert await node.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
        eu_range = await (await node.get_child("0:EURange")).read_value()
        assert (eu_range.Low, eu_range.High) == (low, high)

    async def test_plain_variables_are_not_analog(self, served: Served) -> None:
        """Booleans and unitless unbounded numbers are BaseDataVariables."""
        for path in ("Components.tank.Outputs.overflow", "Components.controller.Outputs.output"):
            assert await served.var(path).read_type_definition() == ua.NodeId(
                ua.ObjectIds.BaseDataVariableType)
