"""A NodeSet's own structures and enumerations (faces/datatypes.py): their
DataTypeDefinition is served, and values of them decode in the clients that build
their decoders from it: asyncua's ``load_data_type_definitions`` and node-opcua.
tests/faces/nodesets/Types.NodeSet2.xml is the machine's model; the OPC Foundation's
CNC companion specification (whose positions are structures) is loaded beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
from asyncua import Client, Server, ua

from tests.faces.test_loader import _server
from tests.nodeopcua import NodeOpcua
from twin_server.faces.loader import INITIAL, LoadedNodes, load
from twin_server.faces.nodeset import NodeSetError
from twin_server.opcua.patches import internals

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
TYPES = Path(__file__).parent / "nodesets" / "Types.NodeSet2.xml"
URI = "urn:twin-server:test:types"
CNC_URI = "http://opcfoundation.org/UA/CNC"
#: a second face's model: a value of the first one's TestPoint
USES = """<?xml version="1.0" encoding="utf-8"?>
<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
           xmlns:uax="http://opcfoundation.org/UA/2008/02/Types.xsd">
  <NamespaceUris><Uri>urn:twin-server:test:uses</Uri><Uri>urn:twin-server:test:types</Uri>
  </NamespaceUris>
  <Models><Model ModelUri="urn:twin-server:test:uses">
    <RequiredModel ModelUri="urn:twin-server:test:types"/></Model></Models>
  <UAVariable NodeId="ns=1;i=1" BrowseName="1:Home" DataType="ns=2;i=3001">
    <DisplayName>Home</DisplayName>
    <References><Reference ReferenceType="i=35" IsForward="false">i=85</Reference>
    </References>
    <Value><uax:ExtensionObject>
      <uax:TypeId><uax:Identifier>ns=2;i=5002</uax:Identifier></uax:TypeId>
      <uax:Body><TestPoint xmlns="urn:twin-server:test:types"><X>-1</X><Y>9</Y></TestPoint>
      </uax:Body></uax:ExtensionObject></Value>
  </UAVariable>
</UANodeSet>
"""
#: CncInterfaceType's instance declaration .../PosDirect, of CncPositionDataType
POS_DIRECT = 6938


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(published: Path, tmp_path_factory: pytest.TempPathFactory,
                 ) -> AsyncIterator[tuple[str, int, LoadedNodes, list[dict[str, Any]]]]:
    """The machine's model and CNC loaded into a started server, then a second
    face's model that uses the first's types: its URL, the model's namespace index,
    what the first load did and what it logged."""
    server: Server = await _server()
    await server.register_namespace("urn:taken-first")  # the file's ns=1 is not the server's
    with structlog.testing.capture_logs() as logs:
        models: dict[str, Path] = {}
        loaded = await load(server, [TYPES, published / "Opc.Ua.CNC.NodeSet.xml"],
                            loaded_models=models)
    uses = tmp_path_factory.mktemp("types") / "Uses.NodeSet2.xml"
    uses.write_text(USES)
    await load(server, [uses], loaded_models=models)
    await server.start()
    port = internals.listening_sockets(server.bserver)[0].getsockname()[1]
    try:
        yield (f"opc.tcp://127.0.0.1:{port}/faces", loaded.namespaces[URI], loaded, logs)
    finally:
        await server.stop()


@MODULE_LOOP
class TestAsyncua:
    async def test_definitions(self, served: tuple[str, int, LoadedNodes, Any]) -> None:
        """The DataTypeDefinition attribute says what the file's <Definition> says:
        fields in order with their types, ranks and optionality, the Default Binary
        encoding (named on either side of HasEncoding), a base structure's fields first;
        an enumeration's fields with values and descriptions."""
        url, ns, _, _ = served
        async with Client(url, timeout=10) as client:
            route = await client.get_node(ua.NodeId(3003, ns)).read_data_type_definition()
            point = await client.get_node(ua.NodeId(3001, ns)).read_data_type_definition()
            point3 = await client.get_node(ua.NodeId(3004, ns)).read_data_type_definition()
            color = await client.get_node(ua.NodeId(3002, ns)).read_data_type_definition()
            strings = await client.get_node(ua.NodeId(6001, ns)).read_value()
        assert isinstance(route, ua.StructureDefinition)
        assert route.StructureType == ua.StructureType.StructureWithOptionalFields
        assert route.DefaultEncodingId == ua.NodeId(5005, ns)
        assert route.BaseDataType == ua.NodeId(ua.ObjectIds.Structure)
        assert [(f.Name, f.DataType, f.ValueRank, f.IsOptional) for f in route.Fields] == [
            ("Name", ua.NodeId(12), -1, False), ("Color", ua.NodeId(3002, ns), -1, False),
            ("Start", ua.NodeId(3001, ns), -1, False), ("Points", ua.NodeId(3001, ns), 1, False),
            ("Limits", ua.NodeId(884), -1, False), ("Note", ua.NodeId(21), -1, True)]
        assert point.DefaultEncodingId == ua.NodeId(5001, ns)
        assert point.StructureType == ua.StructureType.Structure
        assert point3.BaseDataType == ua.NodeId(3001, ns)
        assert [f.Name for f in point3.Fields] == ["X", "Y", "Z"]
        assert isinstance(color, ua.EnumDefinition)
        assert [(f.Name, f.Value, f.Description.Text) for f in color.Fields] == [
            ("Red", 0, None), ("Green", 1, "grass"), ("Blue", 2, None)]
        assert [t.Text for t in strings] == ["Red", "Green", "Blue"]

    async def test_values_decode(self, served: tuple[str, int, LoadedNodes, Any]) -> None:
        """After load_data_type_definitions, the NodeSet's values read back as the
        structures they are: nested, arrays of structures, an enumeration field,
        a standard structure, an optional field present and absent, a derived type, a
        union; a structure of a face loaded before; a companion specification's."""
        url, ns, _, _ = served
        async with Client(url, timeout=10) as client:
            await client.load_data_type_definitions()
            values = [await client.get_node(ua.NodeId(i, ns)).read_data_value(
                raise_on_bad_status=False) for i in (6010, 6011, 6012, 6013, 6015)]
            cnc = await client.get_namespace_index(CNC_URI)
            position = await client.get_node(ua.NodeId(POS_DIRECT, cnc)).read_value()
            home = (await client.get_node(ua.NodeId(1, await client.get_namespace_index(
                "urn:twin-server:test:uses"))).read_data_value(raise_on_bad_status=False)
                    ).Value.Value
        route, routes, paint, corner, shape = (dv.Value.Value for dv in values)
        assert all(dv.StatusCode == INITIAL for dv in values)
        assert (route.Name, int(route.Color), route.Start.X, route.Start.Y) == (
            "outline", 2, 1.5, -2.0)
        assert [(p.X, p.Y) for p in route.Points] == [(10.0, 20.0), (30.0, 40.0)]
        assert (route.Limits.Low, route.Limits.High) == (0.0, 100.0)
        assert (route.Note.Locale, route.Note.Text) == ("en", "first pass")
        assert [(r.Name, int(r.Color), len(r.Points), r.Note) for r in routes] == [
            ("a", 0, 0, None), ("b", 1, 1, ua.LocalizedText("second"))]
        assert paint == 2
        assert (corner.X, corner.Y, corner.Z) == (1.0, 2.0, 3.0)
        assert (shape.Encoding, shape.Value.X, shape.Value.Y) == (2, 4.0, 5.0)  # a union
        assert (home.X, home.Y) == (-1.0, 9.0)  # another face's structure
        assert type(position).__name__ == "CncPositionDataType"  # a companion spec's
        assert (position.ActPos, position.CmdPos, position.RemDist) == (0.0, 0.0, 0.0)

    async def test_unencodable_structure_is_served_empty(
            self, served: tuple[str, int, LoadedNodes, list[dict[str, Any]]]) -> None:
        """A structure with a field of a type found nowhere: its value is served empty
        and the load says so once, naming the structure; the rest loads."""
        url, ns, loaded, logs = served
        assert loaded.valueless == 1
        said = [e for e in logs if e["event"] == "face_structure_not_served"]
        assert len(said) == 1 and "TestOdd" in said[0]["reason"]
        async with Client(url, timeout=10) as client:
            odd = await client.get_node(ua.NodeId(6014, ns)).read_data_value(
                raise_on_bad_status=False)
        assert odd.Value.Value is None


NODE_READ = """
const { main, withSession, plain } = require("./lib");
main(async (args, opcua) => withSession(args, async (session) => {
    const namespaces = await session.readNamespaceArray();
    const values = await session.read(args.ids.map(([uri, i]) => ({
        nodeId: `ns=${namespaces.indexOf(uri)};i=${i}`,
        attributeId: opcua.AttributeIds.Value })));
    return values.map((dv) => plain(dv.value.value));
}));
"""


@MODULE_LOOP
async def test_node_opcua_decodes(nodeopcua: NodeOpcua,
                                  served: tuple[str, int, LoadedNodes, Any]) -> None:
    """node-opcua, which builds its decoders from the DataTypeDefinitions it reads,
    gets the structures' fields, the machine's and CNC's."""
    url, _, _, _ = served
    route, routes, corner, shape, position = await nodeopcua.run(NODE_READ, url, ids=[
        [URI, 6010], [URI, 6011], [URI, 6013], [URI, 6015], [CNC_URI, POS_DIRECT]])
    assert route["name"] == "outline" and route["color"] == 2
    assert route["start"] == {"x": 1.5, "y": -2}
    assert route["points"] == [{"x": 10, "y": 20}, {"x": 30, "y": 40}]
    assert route["limits"] == {"low": 0, "high": 100}
    assert route["note"]["text"] == "first pass"
    assert [r["name"] for r in routes] == ["a", "b"]
    assert corner == {"x": 1, "y": 2, "z": 3}
    assert shape["switchField"] == 2 and shape["Corner"] == {"x": 4, "y": 5}  # a union
    assert position == {"actPos": 0, "cmdPos": 0, "remDist": 0}


@MODULE_LOOP
async def test_malformed_definition_named(tmp_path: Path) -> None:
    """A <Definition> field that does not parse stops the load with the file, the
    DataType and the field."""
    bad = tmp_path / "Bad.NodeSet2.xml"
    bad.write_text(USES.replace("urn:twin-server:test:uses", "urn:twin-server:test:bad")
                   .replace("<UAVariable", """<UADataType NodeId="ns=1;i=9" BrowseName="1:Bad">
    <DisplayName>Bad</DisplayName>
    <Definition Name="1:Bad"><Field Name="Speed" DataType="i=11" ValueRank="one"/>
    </Definition></UADataType>
  <UAVariable""", 1))
    server = await _server()
    with pytest.raises(NodeSetError, match=r"Bad\.NodeSet2\.xml, node ns=1;i=9 \(1:Bad\): "
                                           r"Definition's field 'Speed'"):
        await load(server, [TYPES, bad], loaded_models={})
