"""Loading NodeSet2 files into a real asyncua server (faces/loader.py), read back
through a real asyncua client over 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, Server, ua

from tests.faces.conftest import DI
from tests.faces.generated import URI, write_nodeset
from twin_server.faces.loader import INITIAL, LoadedNodes, load, order
from twin_server.faces.nodeset import NodeSetError, read_header
from twin_server.opcua.patches import aspace_cache, internals
from twin_server.runtime.collector import collector_paused

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
DI_URI = "http://opcfoundation.org/UA/DI/"
IA_URI = "http://opcfoundation.org/UA/IA/"
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"


async def _server() -> Server:
    server = Server()
    # (the standard address space from the suite's cache: $CACHE_DIRECTORY)
    await aspace_cache.init_server(server, aspace_cache.cache_dir("."))
    server.set_endpoint("opc.tcp://127.0.0.1:0/faces")
    return server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(published: Path, tmp_path_factory: pytest.TempPathFactory,
                 ) -> AsyncIterator[tuple[Server, Client, LoadedNodes]]:
    """One server with DI, IA and Machinery (given in the wrong order) and a small
    generated model, and a client connected to it."""
    server = await _server()
    await server.register_namespace("urn:taken-first")  # DI must not land on index 1
    generated = tmp_path_factory.mktemp("faces") / "small.NodeSet2.xml"
    write_nodeset(generated, 2, 3)
    loaded = await load(server, [published / "Opc.Ua.Machinery.NodeSet2.xml", DI,
                                 published / "Opc.Ua.IA.NodeSet2.xml", generated],
                        loaded_models={})
    await server.start()
    port = internals.listening_sockets(server.bserver)[0].getsockname()[1]
    client = Client(f"opc.tcp://127.0.0.1:{port}/faces", timeout=10)
    await client.connect()
    try:
        yield server, client, loaded
    finally:
        await client.disconnect()
        await server.stop()


class TestOrder:
    def test_sorted_by_required_models(self, published: Path) -> None:
        """Files come after the files whose models they require, whatever the given order."""
        headers = [read_header(p) for p in (published / "Opc.Ua.Machinery.NodeSet2.xml",
                                            published / "Opc.Ua.IA.NodeSet2.xml", DI)]
        assert [h.path.name for h in order(headers, set())] == [
            "Opc.Ua.Di.NodeSet2.xml", "Opc.Ua.IA.NodeSet2.xml", "Opc.Ua.Machinery.NodeSet2.xml"]

    def test_missing_model_named(self, published: Path) -> None:
        """A required model no file provides is an error naming the file and the model."""
        headers = [read_header(published / "Opc.Ua.Machinery.NodeSet2.xml"), read_header(DI)]
        with pytest.raises(NodeSetError, match=r"Opc\.Ua\.Machinery\.NodeSet2\.xml.*"
                           r"requires the model http://opcfoundation\.org/UA/IA/"):
            order(headers, set())


@MODULE_LOOP
class TestLoaded:
    async def test_load_order(self, served: tuple[Server, Client, LoadedNodes]) -> None:
        """The files were loaded in dependency order."""
        assert [p.name for p in served[2].files][:3] == [
            "Opc.Ua.Di.NodeSet2.xml", "Opc.Ua.IA.NodeSet2.xml", "Opc.Ua.Machinery.NodeSet2.xml"]

    async def test_namespaces_remapped(self, served: tuple[Server, Client, LoadedNodes]) -> None:
        """DI's ns=1 is DI's index in the server's NamespaceArray, not 1."""
        _, client, loaded = served
        array = await client.get_namespace_array()
        di = array.index(DI_URI)
        assert di != 1 and loaded.namespaces[DI_URI] == di
        device_set = client.get_node(ua.NodeId(5001, di))  # DI's DeviceSet
        assert (await device_set.read_browse_name()) == ua.QualifiedName("DeviceSet", di)

    async def test_instances_browseable(self, served: tuple[Server, Client, LoadedNodes]
                                        ) -> None:
        """DeviceSet is reachable from Objects by browsing, with its type."""
        _, client, loaded = served
        di = loaded.namespaces[DI_URI]
        objects = client.nodes.objects
        children = [await c.read_browse_name() for c in await objects.get_children()]
        assert ua.QualifiedName("DeviceSet", di) in children
        device_set = await objects.get_child(f"{di}:DeviceSet")
        assert (await device_set.read_type_definition()) == ua.NodeId(ua.ObjectIds.BaseObjectType)

    async def test_types_browseable(self, served: tuple[Server, Client, LoadedNodes]) -> None:
        """A companion spec's types hang below the base types: DI's TopologyElementType
        is a HasSubtype child of BaseObjectType, and Machinery's types below DI's."""
        _, client, loaded = served
        di = loaded.namespaces[DI_URI]
        base = client.get_node(ua.ObjectIds.BaseObjectType)
        subtypes = await base.get_children(refs=ua.ObjectIds.HasSubtype)
        assert ua.NodeId(1001, di) in [s.nodeid for s in subtypes]
        topology = client.get_node(ua.NodeId(1001, di))
        assert (await topology.read_browse_name()) == ua.QualifiedName("TopologyElementType", di)
        assert (await topology.read_node_class()) is ua.NodeClass.ObjectType

    async def test_eu_range_and_units(self, served: tuple[Server, Client, LoadedNodes]
                                      ) -> None:
        """An AnalogItem's EURange and EngineeringUnits read back as the file says."""
        _, client, loaded = served
        ns = loaded.namespaces[URI]
        value = client.get_node(ua.NodeId(1004, ns))  # Machine0/Value1
        eu_range = await (await value.get_child("0:EURange")).read_value()
        units = await (await value.get_child("0:EngineeringUnits")).read_value()
        assert (eu_range.Low, eu_range.High) == (0.0, 101.0)
        assert (units.UnitId, units.DisplayName.Text) == (5067859, "m")
        assert (await value.read_data_type()) == ua.NodeId(ua.ObjectIds.Double)

    async def test_unbound_variable_uncertain(self, served: tuple[Server, Client, LoadedNodes]
                                              ) -> None:
        """An instance's data variable keeps the file's value, UncertainInitialValue;
        its properties stay Good."""
        _, client, loaded = served
        ns = loaded.namespaces[URI]
        value = client.get_node(ua.NodeId(1004, ns))  # Machine0/Value1
        dv = await value.read_data_value(raise_on_bad_status=False)
        assert dv.Value.Value == 1.5 and dv.StatusCode == INITIAL
        prop = await client.get_node(ua.NodeId(1005, ns)).read_data_value()  # its EURange
        assert prop.StatusCode.is_good()


def _write(path: Path, body: str, uri: str = "urn:bad") -> Path:
    path.write_text(f"""<?xml version="1.0"?>
<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
           xmlns:uax="http://opcfoundation.org/UA/2008/02/Types.xsd">
<NamespaceUris><Uri>{uri}</Uri></NamespaceUris>
{body}
</UANodeSet>""")
    return path


_OBJECT = """<UAObject NodeId="{nodeid}" BrowseName="1:Thing"><DisplayName>Thing</DisplayName>
<References><Reference ReferenceType="i=35" IsForward="false">i=85</Reference></References>
</UAObject>"""


@MODULE_LOOP
class TestErrors:
    async def test_missing_file(self, tmp_path: Path) -> None:
        """A file that is not there is named, with where paths are relative to."""
        with pytest.raises(NodeSetError, match=r"nope\.xml: no such file"):
            await load(await _server(), [tmp_path / "nope.xml"], loaded_models={})

    async def test_malformed_xml_line(self, tmp_path: Path) -> None:
        """Malformed XML names the file and the line."""
        bad = _write(tmp_path / "bad.xml", "<UAObject NodeId='ns=1;i=1'>\n<oops></UAObject>")
        with pytest.raises(NodeSetError, match=r"bad\.xml line \d+: not well-formed XML"):
            await load(await _server(), [bad], loaded_models={})

    async def test_bad_nodeid_named(self, tmp_path: Path) -> None:
        """A NodeId the file cannot mean names the node and the reason; nothing is added."""
        server = await _server()
        before = len(server.iserver.aspace._nodes)
        bad = _write(tmp_path / "bad.xml", _OBJECT.format(nodeid="ns=1;i=1")
                     + _OBJECT.format(nodeid="ns=7;i=2").replace("Thing", "Other"))
        with pytest.raises(NodeSetError, match=r"bad\.xml, node ns=7;i=2 \(1:Other\): .*"
                           r"namespace index 7"):
            await load(server, [bad], loaded_models={})
        assert len(server.iserver.aspace._nodes) == before

    async def test_duplicate_nodeid(self, tmp_path: Path) -> None:
        """A NodeId defined twice is named with both files."""
        one = _write(tmp_path / "one.xml", _OBJECT.format(nodeid="ns=1;i=1"))
        two = _write(tmp_path / "two.xml", _OBJECT.format(nodeid="ns=1;i=1"))
        with pytest.raises(NodeSetError, match=r"two\.xml, node ns=1;i=1 .*defined twice "
                           r"\(also in one\.xml\)"):
            await load(await _server(), [one, two], loaded_models={})

    async def test_bad_value(self, tmp_path: Path) -> None:
        """A Value that does not parse names the node and the value."""
        bad = _write(tmp_path / "v.xml", """<UAVariable NodeId="ns=1;i=3" BrowseName="1:V"
 DataType="i=11"><DisplayName>V</DisplayName><Value><uax:Double>fast</uax:Double></Value>
 </UAVariable>""")
        with pytest.raises(NodeSetError, match=r"v\.xml, node ns=1;i=3 \(1:V\): its Value "
                           r"cannot be read: <Double> 'fast' is not a Double"):
            await load(await _server(), [bad], loaded_models={})


@MODULE_LOOP
class TestLarge:
    async def test_twenty_thousand_nodes(self, tmp_path: Path) -> None:
        """A generated NodeSet of ~20,000 nodes loads within a generous bound (the bench
        measures 50,000: tests/bench/bench_faces.py)."""
        path = tmp_path / "big.NodeSet2.xml"
        count = write_nodeset(path, 100, 66)
        server = await _server()
        started = time.perf_counter()
        with collector_paused():
            loaded = await load(server, [path], loaded_models={})
        elapsed = time.perf_counter() - started
        assert len(loaded.nodes) == count == 19_900
        assert elapsed < 15.0, f"{count} nodes took {elapsed:.1f} s"
