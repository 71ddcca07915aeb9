"""The address space as a client browses it: NodeIds, browse names, types, units."""

from __future__ import annotations

import asyncio
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
            "ReleaseInputs", "Components", "InjectFault", "ClearFault", "ClearFaults",
            "Faults"}
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
        """A variable's Description comes from the model, with its unit and range (an
        open one as its one bound, never "inf")."""
        area = (await served.var("Components.tank.Parameters.area").read_description()).Text
        assert area.endswith("(m^2, at least 1e-06)")
        for key, _ in served.session.variables():
            text = (await served.var(key.path).read_description()).Text
            assert "inf" not in text.replace("inflow", ""), text

    async def test_initial_values(self, served: Served) -> None:
        """Nodes hold the session's values as soon as the session is added."""
        assert await served.var("Components.tank.Outputs.level").read_value() == 0.5
        assert await served.var("State").read_value() == "Ready"
        assert await served.var("StepCount").read_value() == 0
        assert await served.var("StepSize").read_value() == 0.01


class TestNames:
    @pytest.mark.parametrize(("path", "display"), [
        pytest.param("Components.tank.Outputs.level", "tank.level", id="output"),
        pytest.param("Components.controller.Outputs.output", "controller.output", id="pid"),
        pytest.param("Components.setpoint.Outputs.output", "setpoint.output", id="source"),
        pytest.param("Components.tank.Parameters.height", "tank.height", id="parameter"),
    ])
    async def test_display_name_names_the_component(self, served: Served, path: str,
                                                    display: str) -> None:
        """A variable's DisplayName is component.variable, for a trend legend; its
        browse name stays the variable's."""
        node = served.var(path)
        assert (await node.read_display_name()).Text == display
        assert (await node.read_browse_name()).Name == path.rpartition(".")[2]

    async def test_description_names_component_and_kind(self, served: Served) -> None:
        """A variable's Description says component, variable, kind and what it is."""
        text = (await served.var("Components.controller.Outputs.output").read_description()).Text
        assert text.startswith("controller.output (output): manipulated value")

    @pytest.mark.parametrize(("component", "description"), [
        pytest.param("setpoint", "Level setpoint", id="configured"),
        pytest.param("tank", "Gravity-drained tank: dh/dt = (inflow - k*sqrt(h)) / area; "
                             "spills at height", id="model-default"),
        pytest.param("controller", "PID controller with derivative on measurement and "
                                   "anti-windup", id="pid-default"),
    ])
    async def test_component_description(self, served: Served, component: str,
                                         description: str) -> None:
        """A component's Description is the config's, else its model's, under Twins and
        under the session."""
        twin_component = served.node(f"Twins.plant.Components.{component}")
        assert (await twin_component.read_description()).Text == description
        prop = served.node(f"Twins.plant.Components.{component}.Description")
        assert await prop.read_value() == description
        session_component = served.var(f"Components.{component}")
        assert (await session_component.read_description()).Text == description


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



_ANALOG_ITEM = ua.NodeId(ua.ObjectIds.AnalogItemType)
_BASE_ANALOG = ua.NodeId(ua.ObjectIds.BaseAnalogType)


async def _eu_range(node: Node) -> tuple[float, float] | None:
    """A variable's EURange as (low, high); None where it has none."""
    try:
        eu_range = await (await node.get_child("0:EURange")).read_value()
    except ua.UaStatusCodeError:
        return None
    return (eu_range.Low, eu_range.High)


class TestAnalogItems:
    @pytest.mark.parametrize(("path", "low", "high"), [
        pytest.param("Components.tank.Outputs.level", 0.0, 2.0, id="level-to-height"),
        pytest.param("Components.tank.States.level", 0.0, 2.0, id="state-level"),
        pytest.param("Components.tank.Outputs.outflow", 0.0, 0.02 * math.sqrt(2.0),
                     id="outflow-at-the-rim"),
        pytest.param("Components.controller.Outputs.output", 0.0, 0.05, id="pid-limits"),
        pytest.param("Components.controller.States.integral", 0.0, 0.05, id="integral"),
        pytest.param("Components.setpoint.Outputs.output", 0.5, 1.0, id="step-ends"),
        pytest.param("RealtimeFactor", 0.0, 1000.0, id="realtime-factor"),
    ])
    async def test_eu_range_from_parameters(self, served: Served, path: str, low: float,
                                            high: float) -> None:
        """A variable the model bounds is an AnalogItemType whose EURange its parameters
        set (the tank's level: 0..height)."""
        node = served.var(path)
        assert await node.read_type_definition() == _ANALOG_ITEM
        assert await _eu_range(node) == pytest.approx((low, high))

    @pytest.mark.parametrize("path", [
        pytest.param("Components.tank.Parameters.area", id="low-only"),
        pytest.param("Components.tank.Inputs.inflow", id="input-low-only"),
        pytest.param("Components.controller.Inputs.measurement", id="unbounded"),
        pytest.param("SimTime", id="sim-time"),
    ])
    async def test_open_range_has_no_eu_range(self, served: Served, path: str) -> None:
        """A numeric variable with an open end is a BaseAnalogType without EURange
        (never an infinite one)."""
        node = served.var(path)
        assert await node.read_type_definition() == _BASE_ANALOG
        assert await _eu_range(node) is None

    async def test_every_numeric_variable_is_analog(self, served: Served) -> None:
        """Every numeric model variable is an analog item, and no EURange is infinite."""
        checked = 0
        for key, var in served.session.variables():
            node = served.var(key.path)
            typedef = await node.read_type_definition()
            if var.datatype.value in ("Double", "Int32"):
                assert typedef in (_ANALOG_ITEM, _BASE_ANALOG), key.path
                eu_range = await _eu_range(node)
                assert (eu_range is not None) == (typedef == _ANALOG_ITEM), key.path
                assert eu_range is None or all(map(math.isfinite, eu_range)), key.path
                checked += 1
            else:
                assert typedef == ua.NodeId(ua.ObjectIds.BaseDataVariableType), key.path
        assert checked > 15

    async def test_eu_range_follows_a_parameter(self, running: Served) -> None:
        """Writing a tank's height moves its level's EURange to 0..the new height."""
        level = running.var("Components.tank.Outputs.level")
        await running.var("Components.tank.Parameters.height").write_value(3.0)
        for _ in range(100):
            if await _eu_range(level) == (0.0, 3.0):
                break
            await asyncio.sleep(0.05)
        assert await _eu_range(level) == (0.0, 3.0)
        assert await _eu_range(running.var("Components.tank.States.level")) == (0.0, 3.0)
