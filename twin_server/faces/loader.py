"""Loading NodeSet2 files into a server's address space, in bulk.

asyncua's own ``XmlImporter`` adds every node through a ``NodeManagementService.
add_nodes`` call of its own and inserts each child reference into a growing list:
measured on the development machine (2 shared cores) it imports the PackML
NodeSet (248 nodes) in 0.31 s, ~800 nodes/s, so 50,000 nodes would take a
minute; and it fails on the OPC Foundation's DI NodeSet itself
(``BadParentNodeIdInvalid``: DI's nodes come in an order it cannot take).
This loader reads each file in one streaming pass (``nodeset.py``), then builds
every node's ``NodeData`` (attributes and references exactly as ``add_nodes``
makes them, the attributes that many nodes share built once, as
``opcua/nodes.py`` does for the twin tree) and stores them into the address space
directly: ~50,000 nodes in about a second (``tests/bench/bench_faces.py``).

Order: the files are sorted by their ``RequiredModel``s (a file after every file
whose model it requires); a file that requires a model neither the server nor
another file provides is an error naming both. A model some earlier face loaded
already into the same server is not loaded again (two faces may both use DI).

Namespaces: every URI of a file's NamespaceUris is registered with the server
(``register_namespace``: an existing URI keeps its index), and the file's indexes
are mapped to the server's everywhere: NodeIds, BrowseNames, NodeId values.

References: a NodeSet lists a reference on one side or both; each is added to
both of its nodes once. A reference to a node that is neither in the files nor in
the server is left out and counted (``LoadedNodes.skipped``; logged with the
first few): companion specifications name standard nodes newer than the
server's base model, and one such reference should not stop a face.

DataTypes: the files' structures and enumerations get their DataTypeDefinition
attribute from their ``<Definition>``, and values of them are encoded from it
(``datatypes.py``), once every file is read and before any value is decoded (a
value may use a type of a later file).

Status: a data variable that is an instance (not a type's instance declaration:
no ModellingRule) and not a property starts ``UncertainInitialValue`` (Part 4,
7.34: "the value is an initial value for a variable that normally receives its
value from another variable"): its value is what the NodeSet says, not a live
one. Binding it (``binding.py``) makes it Good with the twin's values. Properties
(EngineeringUnits, EURange, a nameplate's Manufacturer) describe, they do not
measure: they stay Good.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData

from twin_server.faces.datatypes import DataTypes, UnknownStructure
from twin_server.faces.nodeset import (
    UA_URI,
    Header,
    NodeIds,
    NodeSetError,
    RawNode,
    read_header,
    read_nodes,
)
from twin_server.faces.values import ValueReader
from twin_server.opcua.patches.bulk import reference
from twin_server.opcua.patches.fastpath import data_value

log = structlog.get_logger(__name__)

_A = ua.AttributeIds
_NC = ua.NodeClass
_HAS_TYPE_DEFINITION = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
_HAS_MODELLING_RULE = ua.NodeId(ua.ObjectIds.HasModellingRule)
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_HAS_ENCODING = ua.NodeId(ua.ObjectIds.HasEncoding)
_PROPERTY_TYPE = ua.NodeId(ua.ObjectIds.PropertyType)
_BASE_DATA_TYPE = ua.NodeId(ua.ObjectIds.BaseDataType)
#: the status of an unbound instance variable's value (see the module docstring)
INITIAL = ua.StatusCode(ua.StatusCodes.UncertainInitialValue)
#: nodes built between two yields of ``build_steps``
STEP = 512
#: references named in a warning about left-out references
SHOWN = 5


@dataclass(slots=True)
class VariableInfo:
    """What binding needs to know about a loaded variable."""

    nodeid: ua.NodeId
    datatype: ua.NodeId
    value_rank: int
    access_level: int
    #: an instance's data variable (not a property, not an instance declaration)
    instance: bool
    browse_name: ua.QualifiedName


@dataclass(slots=True)
class LoadedNodes:
    """What ``load`` added to the address space."""

    files: list[Path]  # in load order (files of models loaded before left out)
    namespaces: dict[str, int]  # URI -> server index, of every file loaded
    nodes: list[ua.NodeId] = field(default_factory=list)
    variables: dict[ua.NodeId, VariableInfo] = field(default_factory=dict)
    methods: set[ua.NodeId] = field(default_factory=set)
    #: references left out: one of their nodes exists nowhere
    skipped: int = 0
    #: variables served without their NodeSet value (a structure the server lacks)
    valueless: int = 0
    seconds: float = 0.0


def order(headers: Sequence[Header], known: set[str]) -> list[Header]:
    """``headers`` sorted so that each file comes after the files whose models it
    requires (stable otherwise); NodeSetError for a model nobody provides or a cycle."""
    provided: dict[str, Header] = {}
    for h in headers:
        for uri in h.defines:
            provided.setdefault(uri, h)
    for h in headers:
        for uri in sorted(h.requires):
            if uri not in provided and uri not in known and uri != UA_URI:
                raise NodeSetError(
                    h.path, f"requires the model {uri}, which no NodeSet file of the face "
                    f"provides (nor the server); add its NodeSet2 file to the face's "
                    f"nodesets (the OPC Foundation publishes the companion specifications'"
                    f" files)")
    done: list[Header] = []
    placed: set[int] = set()
    visiting: set[int] = set()

    def visit(h: Header, chain: list[str]) -> None:
        if id(h) in placed:
            return
        if id(h) in visiting:
            raise NodeSetError(h.path, "its models require each other in a cycle: "
                               + " -> ".join([*chain, h.path.name]))
        visiting.add(id(h))
        for uri in sorted(h.requires):
            dep = provided.get(uri)
            if dep is not None and dep is not h:
                visit(dep, [*chain, h.path.name])
        visiting.discard(id(h))
        placed.add(id(h))
        done.append(h)

    for h in headers:
        visit(h, [])
    return done


async def load(server: Any, paths: Sequence[Path], *, loaded_models: dict[str, Path],
               ) -> LoadedNodes:
    """Load the NodeSet2 files ``paths`` into ``server`` (an asyncua Server, started or
    not), in dependency order. ``loaded_models``: model URI -> file, of the models
    this server has loaded already (updated). NodeSetError names the file, the node
    and the reason; nothing is added then."""
    started = time.perf_counter()
    headers = [read_header(Path(p)) for p in paths]
    known = set(await server.get_namespace_array()) | set(loaded_models)
    ordered = [h for h in order(headers, known)
               if not (h.defines and h.defines <= set(loaded_models))]
    result = LoadedNodes([h.path for h in ordered], {})
    #: by ``id()`` of the interned NodeId (``NodeIds``)
    raws: dict[int, RawNode] = {}
    aspace: AddressSpace = server.iserver.aspace
    readers: dict[Path, ValueReader] = {}
    types = DataTypes(aspace)
    interned: dict[tuple[int, str, str], ua.NodeId] = {}
    for header in ordered:
        remap = [0]
        for uri in header.uris:
            index = await server.register_namespace(uri)
            remap.append(index)
            result.namespaces[uri] = index
        nodeids = NodeIds(header, remap, interned)
        readers[header.path] = ValueReader(nodeids, remap, types)

        def take(raw: RawNode) -> None:
            key = id(raw.nodeid)
            if key in raws:
                raise NodeSetError(raw.file, f"the NodeId is defined twice (also in "
                                   f"{raws[key].file.name})", node=raw.label)
            if raw.nodeid in aspace:
                if raw.nodeid.NamespaceIndex == 0:
                    return  # a base-model node the server has (a file repeating it)
                raise NodeSetError(raw.file, "a node with this NodeId exists in the server "
                                   "already (another face or the twin tree)", node=raw.label)
            raws[key] = raw

        read_nodes(header, nodeids, take)
    steps = build_steps(aspace, raws, readers, types, result)
    while True:
        try:
            next(steps)
        except StopIteration:
            break
    for h in ordered:
        for uri in h.defines:
            loaded_models[uri] = h.path
    result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True, slots=True)
class _Target:
    nodeclass: ua.NodeClass
    browse_name: ua.QualifiedName
    display_name: ua.LocalizedText
    typedef: ua.NodeId


def build_steps(aspace: AddressSpace, raws: dict[int, RawNode],
                readers: dict[Path, ValueReader], types: DataTypes,
                result: LoadedNodes) -> Generator[None, None, None]:
    """Build every node of ``raws`` (by ``id()`` of their interned NodeIds) into
    ``aspace``: every check and value decoded first (a NodeSetError leaves the address
    space untouched), then the nodes. ``types`` (the ``readers``' DataTypes) gets the
    files' DataTypes before the values are decoded."""
    now = datetime.now(UTC)
    typedefs: dict[int, ua.NodeId] = {}
    #: (source, reference type, target) by the ids of the three: each once
    edges: dict[tuple[int, int, int], tuple[ua.NodeId, ua.NodeId, ua.NodeId]] = {}
    modelled: set[int] = set()
    properties: set[int] = set()
    has_type, has_rule, has_property = (_HAS_TYPE_DEFINITION, _HAS_MODELLING_RULE,
                                        _HAS_PROPERTY)
    for i, raw in enumerate(raws.values(), 1):
        me = raw.nodeid
        for rtype, other, forward in raw.references:
            src, dst = (me, other) if forward else (other, me)
            edges[(id(src), id(rtype), id(dst))] = (src, rtype, dst)
            if forward:
                if rtype == has_type:
                    typedefs[id(me)] = other
                elif rtype == has_rule:
                    modelled.add(id(me))
            elif rtype == has_property:
                properties.add(id(me))
        if not i % STEP:
            yield
    for _, rtype, dst in edges.values():  # (a property listed on its parent's side)
        if rtype == has_property:
            properties.add(id(dst))
    _datatypes(types, raws, edges)
    yield
    values: dict[int, ua.Variant | None] = {}
    for i, raw in enumerate(raws.values(), 1):
        if raw.value is not None and raw.nodeclass in (_NC.Variable, _NC.VariableType):
            try:
                values[id(raw.nodeid)] = readers[raw.file].variant(raw.value)
            except UnknownStructure as exc:
                values[id(raw.nodeid)] = None
                result.valueless += 1
                if str(exc) not in types.refused:  # once for each structure
                    types.refused.add(str(exc))
                    log.warning("face_structure_not_served", reason=str(exc),
                                first_node=raw.label)
            except (ValueError, TypeError) as exc:
                raise NodeSetError(raw.file, f"its Value cannot be read: {exc}",
                                   node=raw.label) from None
        if not i % STEP:
            yield
    targets: dict[int, _Target | None] = {}
    null = ua.NodeId()

    def target(nodeid: ua.NodeId) -> _Target | None:
        key = id(nodeid)
        if key in targets:
            return targets[key]
        raw = raws.get(key)
        found: _Target | None
        if raw is not None:
            found = _Target(raw.nodeclass, raw.browse_name, raw.display_name,
                            typedefs.get(key, null))
        elif nodeid in aspace:
            found = _describe(aspace, nodeid)
        else:
            found = None
        targets[key] = found
        return found

    datas: dict[int, NodeData] = {}
    property_type = _PROPERTY_TYPE
    for i, (key, raw) in enumerate(raws.items(), 1):
        data = NodeData(raw.nodeid)
        nodeclass = raw.nodeclass
        instance = (nodeclass is _NC.Variable and key not in modelled
                    and key not in properties and typedefs.get(key) != property_type)
        _attributes(data.attributes, raw, values.get(key), now, instance=instance)
        if nodeclass is _NC.DataType and raw.nodeid in types.types:
            data.attributes[_A.DataTypeDefinition] = AttributeValue(ua.DataValue(ua.Variant(
                types.types[raw.nodeid].definition, ua.VariantType.ExtensionObject)))
        datas[key] = data
        if nodeclass is _NC.Variable:
            result.variables[raw.nodeid] = VariableInfo(
                raw.nodeid, raw.attrs.get("DataType", _BASE_DATA_TYPE),
                _int(raw, "ValueRank", -1), _int(raw, "AccessLevel", 1), instance,
                raw.browse_name)
        elif nodeclass is _NC.Method:
            result.methods.add(raw.nodeid)
        if not i % STEP:
            yield
    # references: both sides of each, once; those into existing nodes last (the new
    # nodes become reachable only once all of them are there)
    outside: list[tuple[ua.NodeId, ua.ReferenceDescription]] = []
    skipped: list[str] = []
    for i, (src, rtype, dst) in enumerate(edges.values(), 1):
        s, d = target(src), target(dst)
        if s is None or d is None:
            result.skipped += 1
            if len(skipped) < SHOWN:
                skipped.append(f"{src.to_string()} -{rtype.to_string()}-> {dst.to_string()}")
            continue
        forward = reference(rtype, True, dst, d.browse_name, d.display_name, d.nodeclass,
                            d.typedef)
        inverse = reference(rtype, False, src, s.browse_name, s.display_name, s.nodeclass,
                            s.typedef)
        data = datas.get(id(src))
        if data is not None:
            data.references.append(forward)
        else:
            outside.append((src, forward))
        data = datas.get(id(dst))
        if data is not None:
            data.references.append(inverse)
        else:
            outside.append((dst, inverse))
        if not i % STEP:
            yield
    if skipped:
        log.warning("face_references_left_out", count=result.skipped, first=skipped)
    nodes = result.nodes
    for i, data in enumerate(datas.values(), 1):
        aspace[data.nodeid] = data
        nodes.append(data.nodeid)
        if not i % STEP:
            yield
    for owner, ref in outside:
        aspace[owner].references.append(ref)


def _datatypes(types: DataTypes, raws: dict[int, RawNode],
               edges: dict[tuple[int, int, int], tuple[ua.NodeId, ua.NodeId, ua.NodeId]],
               ) -> None:
    """Add the DataTypes the files define to ``types``, from their ``<Definition>``s,
    supertypes and encodings."""
    aspace = types.aspace
    defined = {raw.nodeid: (raw.browse_name.Name, raw.definition) for raw in raws.values()
               if raw.nodeclass is _NC.DataType and raw.definition is not None}
    supertypes: dict[ua.NodeId, ua.NodeId] = {}
    encodings: dict[ua.NodeId, list[tuple[ua.NodeId, str]]] = {}
    datatypes = {key for key, raw in raws.items() if raw.nodeclass is _NC.DataType}
    for src, rtype, dst in edges.values() if datatypes else ():
        # (ids first: NodeId's == is Python code, and a face has ~10 edges a node)
        if id(dst) in datatypes and rtype == _HAS_SUBTYPE:
            supertypes[dst] = src
        elif id(src) in datatypes and rtype == _HAS_ENCODING:
            raw = raws.get(id(dst))
            name = raw.browse_name.Name if raw is not None else (
                _describe(aspace, dst).browse_name.Name if dst in aspace else "")
            encodings.setdefault(src, []).append((dst, name))
    types.add(defined, supertypes, encodings)


def _describe(aspace: AddressSpace, nodeid: ua.NodeId) -> _Target:
    data = aspace[nodeid]

    def attribute(aid: ua.AttributeIds) -> Any:
        av = data.attributes.get(aid)
        return None if av is None or av.value is None or av.value.Value is None \
            else av.value.Value.Value

    typedef = next((r.NodeId for r in data.references
                    if r.IsForward and r.ReferenceTypeId == _HAS_TYPE_DEFINITION), ua.NodeId())
    return _Target(ua.NodeClass(attribute(_A.NodeClass)), attribute(_A.BrowseName),
                   attribute(_A.DisplayName), typedef)


_NO_DIMENSIONS = AttributeValue(ua.DataValue(ua.Variant(None, ua.VariantType.UInt32,
                                                        is_array=True)))
_SHARED: dict[tuple[Any, ua.VariantType], AttributeValue] = {}


def _shared(value: Any, vtype: ua.VariantType) -> AttributeValue:
    """One attribute for a value many nodes have; never written (``writes.py`` routes
    writes of bound Values only; other attributes of a face are not writable)."""
    key = (value, vtype)
    found = _SHARED.get(key)
    if found is None:
        found = _SHARED[key] = AttributeValue(ua.DataValue(ua.Variant(value, vtype)))
    return found


def _own(value: Any, vtype: ua.VariantType) -> AttributeValue:
    return AttributeValue(data_value(value, vtype, None))  # type: ignore[arg-type]  # no timestamps on a non-Value attribute


def _int(raw: RawNode, name: str, default: int) -> int:
    text = raw.attrs.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise NodeSetError(raw.file, f"{name}={text!r} is not a whole number",
                           node=raw.label) from None


def _flag(raw: RawNode, name: str, default: bool) -> bool:
    text = raw.attrs.get(name)
    return default if text is None else str(text).strip().lower() == "true"


_STATIC: dict[tuple[Any, ...], dict[ua.AttributeIds, AttributeValue]] = {}


def _attributes(attributes: dict[ua.AttributeIds, AttributeValue], raw: RawNode,
                value: ua.Variant | None, now: datetime, *, instance: bool) -> None:
    V = ua.VariantType
    attributes[_A.NodeId] = _own(raw.nodeid, V.NodeId)
    attributes[_A.BrowseName] = _own(raw.browse_name, V.QualifiedName)
    attributes[_A.DisplayName] = _own(raw.display_name, V.LocalizedText)
    if raw.description is not None:
        attributes[_A.Description] = _own(raw.description, V.LocalizedText)
    # the attributes that depend only on the node class and the XML attributes: built
    # once for each combination (most variables of a model share them)
    attrs = raw.attrs
    key = (raw.nodeclass, *((k, v) for k, v in attrs.items() if k != "ParentNodeId"))
    static = _STATIC.get(key)
    if static is None:
        static = _STATIC[key] = _static_attributes(raw)
    attributes.update(static)
    if raw.nodeclass is _NC.ReferenceType and raw.inverse_name is not None:
        attributes[_A.InverseName] = _own(raw.inverse_name, V.LocalizedText)
    if raw.nodeclass in (_NC.Variable, _NC.VariableType):
        dv = data_value(value.Value, value.VariantType, now) if value is not None \
            and not value.is_array else ua.DataValue(
                value if value is not None else ua.Variant(), SourceTimestamp=now,
                ServerTimestamp=now)
        if instance:
            dv.StatusCode = INITIAL
        attributes[_A.Value] = AttributeValue(dv)


def _static_attributes(raw: RawNode) -> dict[ua.AttributeIds, AttributeValue]:
    V = ua.VariantType
    attributes: dict[ua.AttributeIds, AttributeValue] = {}
    attributes[_A.NodeClass] = _shared(int(raw.nodeclass), V.Int32)
    write_mask = _int(raw, "WriteMask", 0)
    attributes[_A.WriteMask] = _shared(write_mask, V.UInt32)
    attributes[_A.UserWriteMask] = _shared(write_mask, V.UInt32)
    nc = raw.nodeclass
    if nc in (_NC.Object, _NC.View):
        attributes[_A.EventNotifier] = _shared(_int(raw, "EventNotifier", 0), V.Byte)
    if nc is _NC.View:
        attributes[_A.ContainsNoLoops] = _shared(_flag(raw, "ContainsNoLoops", False),
                                                 V.Boolean)
    if nc in (_NC.ObjectType, _NC.VariableType, _NC.DataType, _NC.ReferenceType):
        attributes[_A.IsAbstract] = _shared(_flag(raw, "IsAbstract", False), V.Boolean)
    if nc is _NC.ReferenceType:
        attributes[_A.Symmetric] = _shared(_flag(raw, "Symmetric", False), V.Boolean)
    if nc is _NC.Method:
        attributes[_A.Executable] = _shared(_flag(raw, "Executable", True), V.Boolean)
        attributes[_A.UserExecutable] = _shared(_flag(raw, "UserExecutable", True),
                                                V.Boolean)
    if nc in (_NC.Variable, _NC.VariableType):
        datatype = raw.attrs.get("DataType", _BASE_DATA_TYPE)
        attributes[_A.DataType] = _shared(datatype, V.NodeId)
        attributes[_A.ValueRank] = _shared(_int(raw, "ValueRank", -1), V.Int32)
        dims = raw.attrs.get("ArrayDimensions")
        try:
            dimensions = [int(d) for d in str(dims).split(",") if d.strip()] if dims else None
        except ValueError:
            raise NodeSetError(raw.file, f"ArrayDimensions={dims!r} is not a list of whole "
                               f"numbers", node=raw.label) from None
        attributes[_A.ArrayDimensions] = AttributeValue(ua.DataValue(ua.Variant(
            dimensions, V.UInt32, is_array=True))) if dimensions else _NO_DIMENSIONS
    if nc is _NC.Variable:
        level = _int(raw, "AccessLevel", 1)
        attributes[_A.AccessLevel] = _shared(level, V.Byte)
        attributes[_A.UserAccessLevel] = _shared(_int(raw, "UserAccessLevel", level), V.Byte)
        try:
            sampling = float(raw.attrs.get("MinimumSamplingInterval") or 0.0)
        except ValueError:
            raise NodeSetError(raw.file, "MinimumSamplingInterval is not a number",
                               node=raw.label) from None
        attributes[_A.MinimumSamplingInterval] = _shared(sampling, V.Double)
        attributes[_A.Historizing] = _shared(_flag(raw, "Historizing", False), V.Boolean)
    return attributes
