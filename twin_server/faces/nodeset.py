"""Reading NodeSet2 XML files (OPC UA Part 6, Annex F) into plain node records.

One pass of ``xml.etree.ElementTree.iterparse`` per file: each ``UAObject``,
``UAVariable``, ``UAMethod``, ``UAObjectType``, ``UAVariableType``, ``UADataType``,
``UAReferenceType`` and ``UAView`` becomes a ``RawNode`` as soon as its end tag is
read, and its element is cleared, so a file of 50,000 nodes never stands in
memory as a tree. NodeIds and browse names come out already in the *server's*
namespace indexes: the file's own ``NamespaceUris`` (index 1, 2, ... in the file)
are mapped through ``Header.uris`` and the ``remap`` the loader hands in, so
``ns=1;i=5001`` of DI's file is ``ns=<DI's index in the server>;i=5001``.

A UADataType's ``<Definition>`` (Part 6, F.12) comes as a ``RawDefinition``, its
fields' DataTypes in the server's indexes too (``datatypes.py`` serves it).

``read_header`` reads only what comes before the first node (NamespaceUris,
Models with their RequiredModels, Aliases): the loader orders the files by it.

Errors are ``NodeSetError``: the file, the node (NodeId and BrowseName as written)
and the reason, with the line where the parser knows it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua

from twin_server.errors import TwinServerError

#: the NodeSet2 schema's namespace, and the Types namespace of values
UANODESET = "{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}"
#: the base model every NodeSet requires, which the server has built in
UA_URI = "http://opcfoundation.org/UA/"

NODE_TAGS: dict[str, ua.NodeClass] = {
    f"{UANODESET}UAObject": ua.NodeClass.Object,
    f"{UANODESET}UAVariable": ua.NodeClass.Variable,
    f"{UANODESET}UAMethod": ua.NodeClass.Method,
    f"{UANODESET}UAObjectType": ua.NodeClass.ObjectType,
    f"{UANODESET}UAVariableType": ua.NodeClass.VariableType,
    f"{UANODESET}UADataType": ua.NodeClass.DataType,
    f"{UANODESET}UAReferenceType": ua.NodeClass.ReferenceType,
    f"{UANODESET}UAView": ua.NodeClass.View,
}
_HEADER_END = frozenset(NODE_TAGS)
_DISPLAY_NAME = f"{UANODESET}DisplayName"
_DESCRIPTION = f"{UANODESET}Description"
_REFERENCES = f"{UANODESET}References"
_VALUE = f"{UANODESET}Value"
_INVERSE_NAME = f"{UANODESET}InverseName"
_DEFINITION = f"{UANODESET}Definition"


class NodeSetError(TwinServerError):
    """A NodeSet2 file that cannot be loaded: which file, which node, why."""

    def __init__(self, file: str | Path, reason: str, *, node: str | None = None,
                 line: int | None = None) -> None:
        self.file = str(file)
        self.node = node
        self.reason = reason
        self.line = line
        where = Path(self.file).name + (f" line {line}" if line else "")
        what = f", node {node}" if node else ""
        super().__init__(f"NodeSet {where}{what}: {reason}")


@dataclass(frozen=True, slots=True)
class Model:
    """A ``<Model>`` of a file: what it defines and what it requires."""

    uri: str
    version: str
    required: tuple[str, ...]


@dataclass(slots=True)
class Header:
    """What comes before the nodes of a file."""

    path: Path
    uris: list[str]  # the file's NamespaceUris: file index i+1 is uris[i]
    models: list[Model]
    aliases: dict[str, str]

    @property
    def defines(self) -> set[str]:
        return {m.uri for m in self.models} or set(self.uris[:1])

    @property
    def requires(self) -> set[str]:
        return {r for m in self.models for r in m.required}


@dataclass(frozen=True, slots=True)
class RawField:
    """A ``<Field>`` of a DataType's ``<Definition>`` (DataType in the server's indexes)."""

    name: str
    datatype: ua.NodeId
    value_rank: int
    array_dimensions: list[int] | None
    max_string_length: int
    is_optional: bool
    #: an enumeration's value (None in a structure)
    value: int | None
    display_name: ua.LocalizedText | None
    description: ua.LocalizedText | None


@dataclass(frozen=True, slots=True)
class RawDefinition:
    """A UADataType's ``<Definition>`` (Part 6, F.12)."""

    name: str
    fields: list[RawField]
    is_union: bool
    is_option_set: bool


@dataclass(slots=True)
class RawNode:
    """One node of a file, NodeIds in the server's indexes; attributes as written."""

    nodeid: ua.NodeId
    nodeclass: ua.NodeClass
    browse_name: ua.QualifiedName
    display_name: ua.LocalizedText
    description: ua.LocalizedText | None
    #: (reference type, target, forward), as the file lists them
    references: list[tuple[ua.NodeId, ua.NodeId, bool]]
    #: the XML attributes other than NodeId and BrowseName (DataType already a NodeId
    #: in the server's indexes under "DataType")
    attrs: dict[str, Any]
    value: ET.Element | None = None
    inverse_name: ua.LocalizedText | None = None
    file: Path = field(default_factory=Path)
    #: how an error names the node: its NodeId and BrowseName as the file writes them
    label: str = ""
    #: a DataType's ``<Definition>``
    definition: RawDefinition | None = None


def read_header(path: Path) -> Header:
    """The NamespaceUris, Models and Aliases of ``path`` (NodeSetError if it is no
    readable NodeSet2 file)."""
    uris: list[str] = []
    models: list[Model] = []
    aliases: dict[str, str] = {}
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            tag = element.tag
            if tag in _HEADER_END:
                break
            if tag == f"{UANODESET}NamespaceUris":
                uris = [(u.text or "").strip() for u in element]
            elif tag == f"{UANODESET}Model":
                models.append(Model(
                    element.get("ModelUri", ""), element.get("Version", ""),
                    tuple(r.get("ModelUri", "") for r in element
                          if r.tag == f"{UANODESET}RequiredModel")))
            elif tag == f"{UANODESET}Aliases":
                aliases = {a.get("Alias", ""): (a.text or "").strip() for a in element}
    except FileNotFoundError:
        raise NodeSetError(path, "no such file (paths in [faces] are relative to the "
                           "config file's folder)") from None
    except ET.ParseError as exc:
        raise NodeSetError(path, f"not well-formed XML: {exc}", line=exc.position[0]) from None
    except OSError as exc:
        raise NodeSetError(path, f"cannot be read: {exc.strerror or exc}") from None
    return Header(path, uris, models, aliases)


class NodeIds:
    """Parses the NodeIds of one file into the server's namespace indexes (cached:
    a file names ``i=61`` thousands of times)."""

    def __init__(self, header: Header, remap: list[int],
                 interned: dict[tuple[int, str, str], ua.NodeId] | None = None) -> None:
        #: file index -> server index (file index 0 is always 0)
        self.remap = remap
        self.aliases = header.aliases
        self._cache: dict[str, ua.NodeId] = {}
        #: one NodeId object per node, shared by every file of a load: the loader
        #: keys its tables by ``id()`` (``NodeId.__hash__`` is Python code)
        self.interned = interned if interned is not None else {}

    def __call__(self, text: str) -> ua.NodeId:
        found = self._cache.get(text)
        if found is not None:
            return found
        raw = text.strip()
        resolved = self.aliases.get(raw, raw)
        nodeid = self._parse(resolved)
        key = (nodeid.NamespaceIndex, nodeid.NodeIdType.name, str(nodeid.Identifier))
        nodeid = self.interned.setdefault(key, nodeid)
        self._cache[text] = nodeid
        return nodeid

    def _parse(self, text: str) -> ua.NodeId:
        ns = 0
        rest = text
        if text.startswith("ns="):
            head, sep, rest = text.partition(";")
            if not sep or not head[3:].isdigit():
                raise ValueError(f"malformed NodeId {text!r}")
            ns = int(head[3:])
            if ns >= len(self.remap):
                raise ValueError(f"NodeId {text!r} uses namespace index {ns}, but the "
                                 f"file's NamespaceUris list {len(self.remap) - 1}")
        kind, sep, ident = rest.partition("=")
        if not sep:
            if text in self.aliases or not text:
                raise ValueError(f"malformed NodeId {text!r}")
            raise ValueError(f"{text!r} is neither a NodeId nor one of the file's Aliases")
        server_ns = self.remap[ns]
        if kind == "i":
            if not ident.isdigit():
                raise ValueError(f"numeric NodeId {text!r} needs a whole number")
            return ua.NodeId(int(ident), server_ns)
        if kind == "s":
            return ua.NodeId(ident, server_ns, ua.NodeIdType.String)
        if kind == "g":
            import uuid
            return ua.NodeId(uuid.UUID(ident), server_ns, ua.NodeIdType.Guid)
        if kind == "b":
            import base64
            return ua.NodeId(base64.b64decode(ident), server_ns, ua.NodeIdType.ByteString)
        raise ValueError(f"malformed NodeId {text!r} (i=, s=, g= or b=)")

    def qualified(self, text: str) -> ua.QualifiedName:
        """A BrowseName ``1:DeviceSet`` with its index mapped."""
        head, sep, name = text.partition(":")
        if sep and head.isdigit():
            index = int(head)
            if index >= len(self.remap):
                raise ValueError(f"BrowseName {text!r} uses namespace index {index}, but "
                                 f"the file's NamespaceUris list {len(self.remap) - 1}")
            return ua.QualifiedName(name, self.remap[index])
        return ua.QualifiedName(text, 0)


_KEPT = ("DataType", "ValueRank", "ArrayDimensions", "AccessLevel", "UserAccessLevel",
         "MinimumSamplingInterval", "Historizing", "EventNotifier", "IsAbstract", "Symmetric",
         "Executable", "UserExecutable", "ContainsNoLoops", "ParentNodeId", "WriteMask",
         "AccessLevelEx")


def read_nodes(header: Header, nodeids: NodeIds,
               on_node: Callable[[RawNode], None]) -> int:
    """Hand every node of the file to ``on_node``, in file order; returns how many."""
    path = header.path
    count = 0
    try:
        parser = ET.iterparse(path, events=("start", "end"))
        depth = 0
        for event, element in parser:
            if event == "start":
                depth += 1
                continue
            depth -= 1
            nodeclass = NODE_TAGS.get(element.tag)
            if nodeclass is None:
                if depth == 1:  # a header element, read already
                    element.clear()
                continue
            on_node(_node(element, nodeclass, nodeids, path))
            count += 1
            element.clear()
    except ET.ParseError as exc:
        raise NodeSetError(path, f"not well-formed XML: {exc}", line=exc.position[0]) from None
    return count


def _node(element: ET.Element, nodeclass: ua.NodeClass, nodeids: NodeIds,
          path: Path) -> RawNode:
    written = element.get("NodeId", "")
    label = f"{written} ({element.get('BrowseName', '?')})"
    try:
        nodeid = nodeids(written)
        browse_name = nodeids.qualified(element.get("BrowseName", ""))
        display = _text(element, _DISPLAY_NAME) or ua.LocalizedText(browse_name.Name)
        description = _text(element, _DESCRIPTION)
        references: list[tuple[ua.NodeId, ua.NodeId, bool]] = []
        refs = element.find(_REFERENCES)
        if refs is not None:
            for ref in refs:
                references.append((nodeids(ref.get("ReferenceType", "")),
                                   nodeids(ref.text or ""),
                                   ref.get("IsForward", "true").lower() != "false"))
        attrs: dict[str, Any] = {k: element.get(k) for k in _KEPT if k in element.attrib}
        if "DataType" in attrs:
            attrs["DataType"] = nodeids(attrs["DataType"])
        value = element.find(_VALUE)
        if value is not None:
            value = _detached(value)
        inverse = _text(element, _INVERSE_NAME)
        definition = None
        if nodeclass is ua.NodeClass.DataType:
            found = element.find(_DEFINITION)
            if found is not None:
                definition = _definition(found, nodeids)
    except ValueError as exc:
        raise NodeSetError(path, str(exc), node=label) from None
    return RawNode(nodeid, nodeclass, browse_name, display, description, references, attrs,
                   value, inverse, path, label, definition)


def _definition(element: ET.Element, nodeids: NodeIds) -> RawDefinition:
    fields = []
    for f in element.iterfind(f"{UANODESET}Field"):
        name = f.get("Name", "")
        dims = f.get("ArrayDimensions")
        value = f.get("Value")
        try:
            fields.append(RawField(
                name, nodeids(f.get("DataType") or "i=24"), int(f.get("ValueRank") or -1),
                [int(d) for d in dims.split(",") if d.strip()] if dims else None,
                int(f.get("MaxStringLength") or 0),
                (f.get("IsOptional") or "").strip().lower() == "true",
                None if value is None else int(value),
                _text(f, _DISPLAY_NAME), _text(f, _DESCRIPTION)))
        except ValueError as exc:
            raise ValueError(f"Definition's field {name!r}: {exc}") from None
    return RawDefinition(element.get("Name", ""), fields,
                         (element.get("IsUnion") or "").lower() == "true",
                         (element.get("IsOptionSet") or "").lower() == "true")


def _detached(value: ET.Element) -> ET.Element:
    """A copy of ``<Value>`` that survives the clearing of its node's element."""
    copy = ET.Element(value.tag)
    copy.extend(list(value))
    return copy


def _text(element: ET.Element, tag: str) -> ua.LocalizedText | None:
    found = element.find(tag)
    if found is None:
        return None
    return ua.LocalizedText(found.text or "", found.get("Locale") or None)
