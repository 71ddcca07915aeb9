"""A face's bindings resolved against its loaded NodeSets: which node each
``[faces.<name>.bindings]`` and ``[faces.<name>.methods]`` key names, of which
DataType, EURange and EngineeringUnits, and which session variable it reaches.

A key is a NodeId or a browse path:

* ``nsu=<namespace URI>;i=6001`` (or ``s=``, ``g=``, ``b=``): the node as a client
  configured for the machine names it. ``ns=<index>;...`` is an index of *this*
  server's NamespaceArray, which need not be the machine's: prefer ``nsu=``.
* ``DeviceSet/Tank/Level``: browse names from the Objects folder along forward
  hierarchical references. An element is a name, matched in any namespace (a
  name two children share is an error listing them), or ``<namespace URI>:<name>``.

Every problem of a face is reported at once, each as a ConfigError at its key
(``faces.tank.bindings."DeviceSet/Tank/Levl"``) with the element that did not
resolve and what was there instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from twin_server.config.loader import did_you_mean, quoted_key
from twin_server.config.schema import FaceConfig, FaceMethod, FaceRoutine
from twin_server.engine.state import VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import ConfigError
from twin_server.faces.loader import LoadedNodes
from twin_server.faces.variables import (
    WRITABLE,
    Conversion,
    UnitMismatch,
    conversion,
    resolve_variable,
)
from twin_server.hil.casting import variant_type
from twin_server.models.base import Variable

_A = ua.AttributeIds
_NC = ua.NodeClass
_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_HIERARCHICAL = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
_OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)
_NODE_ID = re.compile(r"^(?:ns=(?P<ns>\d+);|nsu=(?P<nsu>[^;]+);)?(?P<type>[isgb])=(?P<id>.+)$",
                      re.DOTALL)


@dataclass(slots=True)
class BoundVariable:
    """One face variable fed by (and, if ``writable``, writing to) a session variable."""

    key: str  # as the config writes it
    nodeid: ua.NodeId
    label: str  # its browse path or BrowseName, for messages
    var_key: VarKey
    variable: Variable
    vtype: ua.VariantType  # of the face's DataType
    #: the face's EURange (a client write outside it is BadOutOfRange)
    eu_range: tuple[float, float] | None
    unit: str  # the face's EngineeringUnits' display name ("" without)
    convert: Conversion
    #: client writes reach the twin: an input, state or parameter behind a node the
    #: NodeSet makes writable
    writable: bool


@dataclass(slots=True)
class FaceBindings:
    """What one face's bindings resolved to."""

    face: str
    session: str | None
    variables: list[BoundVariable] = field(default_factory=list)
    #: method NodeId -> (session method or routine, config key)
    methods: dict[ua.NodeId, tuple[FaceMethod | FaceRoutine, str]] = field(default_factory=dict)
    #: unbound instance variables the NodeSet makes read-only: what a write is told
    read_only: dict[ua.NodeId, str] = field(default_factory=dict)
    #: bindings whose units could not be compared (logged)
    unchecked_units: list[str] = field(default_factory=list)


def resolve(name: str, face: FaceConfig, loaded: LoadedNodes, aspace: AddressSpace,
            namespaces: list[str], twin: TwinDefinition | None,
            file: str) -> tuple[FaceBindings, list[ConfigError]]:
    """Resolve ``face``'s bindings and methods in ``aspace`` (where ``loaded`` put its
    nodes; ``namespaces``: the server's NamespaceArray); ``twin``: the session's
    twin (None: the session is unknown, reported by the config check). Returns the
    bindings and every error found."""
    errors: list[ConfigError] = []
    result = FaceBindings(name, face.session)
    where = f"faces.{quoted_key(name)}"
    finder = _Finder(aspace, namespaces)
    seen: dict[ua.NodeId, str] = {}
    for key, target in face.bindings.items():
        path = f"{where}.bindings.{quoted_key(key)}"

        def fail(message: str, path: str = path) -> None:
            errors.append(ConfigError(message, path=path, file=file))

        nodeid = finder.find(key, fail)
        if nodeid is None:
            continue
        if nodeid in seen:
            fail(f"{key!r} is the node {seen[nodeid]!r} names too: a face variable is "
                 f"bound once")
            continue
        seen[nodeid] = key
        if twin is None:
            continue
        found = resolve_variable(twin, target, fail)
        if found is None:
            continue
        bound = _variable(key, nodeid, aspace, found[0], found[1], fail, result)
        if bound is not None:
            result.variables.append(bound)
    for key, verb in face.methods.items():
        path = f"{where}.methods.{quoted_key(key)}"

        def fail_method(message: str, path: str = path) -> None:
            errors.append(ConfigError(message, path=path, file=file))

        nodeid = finder.find(key, fail_method)
        if nodeid is None:
            continue
        nodeclass = _attribute(aspace, nodeid, _A.NodeClass)
        if nodeclass != _NC.Method:
            fail_method(f"{key!r} is {_nodeclass_name(nodeclass)}, not a method")
            continue
        result.methods[nodeid] = (verb, key)
    bound_ids = {b.nodeid for b in result.variables}
    # (one text for all: a face of 50,000 nodes has tens of thousands; the log's
    # write_refused names the node beside it)
    reason = (f"face {name!r}: a measured value of the machine that no binding feeds (its "
              f"value is the NodeSet's, UncertainInitialValue); bind it in "
              f"[faces.{name}.bindings]")
    for nodeid, info in loaded.variables.items():
        if info.instance and nodeid not in bound_ids \
                and not info.access_level & ua.AccessLevel.CurrentWrite.mask:
            result.read_only[nodeid] = reason
    return result, errors


def _variable(key: str, nodeid: ua.NodeId, aspace: AddressSpace, var_key: VarKey,
              variable: Variable, fail: Any, result: FaceBindings) -> BoundVariable | None:
    nodeclass = _attribute(aspace, nodeid, _A.NodeClass)
    if nodeclass != _NC.Variable:
        fail(f"{key!r} is {_nodeclass_name(nodeclass)}, not a variable")
        return None
    datatype = _attribute(aspace, nodeid, _A.DataType) or ua.NodeId(ua.ObjectIds.BaseDataType)
    vtype = _variant_type(aspace, datatype)
    if vtype is None:
        fail(f"{key!r} has the DataType {_label(aspace, datatype)}, which is not a scalar "
             f"type a binding can carry (numbers, Boolean, String and their subtypes)")
        return None
    rank = _attribute(aspace, nodeid, _A.ValueRank)
    if rank is not None and rank > 0:
        fail(f"{key!r} is an array (ValueRank {rank}); bindings carry scalars")
        return None
    eu_range, units = _properties(aspace, nodeid)
    try:
        convert = conversion(variable.unit or "", units)
    except UnitMismatch as exc:
        fail(f"{key!r} cannot show {var_key.component}.{var_key.name}: {exc}")
        return None
    if convert is None:
        convert = Conversion()
        result.unchecked_units.append(f"{key} ({units[0] if units else '-'} <- "
                                      f"{variable.unit or '-'})")
    access = _attribute(aspace, nodeid, _A.AccessLevel) or 0
    writable = var_key.kind in WRITABLE and bool(access & ua.AccessLevel.CurrentWrite.mask)
    name = _attribute(aspace, nodeid, _A.BrowseName)
    label = key if "/" in key else (name.Name if name is not None else key)
    return BoundVariable(key, nodeid, label, var_key, variable, vtype, eu_range,
                         units[0] if units else "", convert, writable)


def _properties(aspace: AddressSpace, nodeid: ua.NodeId
                ) -> tuple[tuple[float, float] | None, tuple[str, ...]]:
    """The node's EURange (low, high) and its EngineeringUnits' names (display name,
    UNECE code), from its properties."""
    eu_range: tuple[float, float] | None = None
    units: tuple[str, ...] = ()
    for ref in aspace[nodeid].references:
        if not ref.IsForward or ref.ReferenceTypeId != _HAS_PROPERTY:
            continue
        name = ref.BrowseName.Name
        if name not in ("EURange", "EngineeringUnits") or ref.NodeId not in aspace:
            continue
        value = _attribute(aspace, ref.NodeId, _A.Value)
        if name == "EURange" and isinstance(value, ua.Range) \
                and math.isfinite(value.Low) and math.isfinite(value.High):
            eu_range = (value.Low, value.High)
        elif name == "EngineeringUnits" and isinstance(value, ua.EUInformation):
            names = [value.DisplayName.Text or ""] if value.DisplayName else []
            code = _unece(value.UnitId)
            if code:
                names.append(code)
            units = tuple(n for n in names if n)
    return eu_range, units


def _unece(unit_id: int | None) -> str:
    """The UNECE common code packed into an EUInformation's UnitId (Part 8)."""
    if unit_id is None or unit_id <= 0:
        return ""
    return "".join(chr((unit_id >> s) & 0xFF) for s in (16, 8, 0)).strip("\x00 ")


def _variant_type(aspace: AddressSpace, datatype: ua.NodeId) -> ua.VariantType | None:
    """The VariantType of ``datatype`` or of its nearest standard supertype (a companion
    specification's enumeration is an Int32)."""
    seen = 0
    while datatype is not None and seen < 32:
        vtype = variant_type(datatype)
        if vtype is not None or datatype.NamespaceIndex == 0 or datatype not in aspace:
            return vtype
        datatype = next((r.NodeId for r in aspace[datatype].references
                         if not r.IsForward and r.ReferenceTypeId == _HAS_SUBTYPE), None)
        seen += 1
    return None


def _attribute(aspace: AddressSpace, nodeid: ua.NodeId, aid: ua.AttributeIds) -> Any:
    if nodeid not in aspace:
        return None
    av = aspace[nodeid].attributes.get(aid)
    if av is None or av.value is None or av.value.Value is None:
        return None
    return av.value.Value.Value


def _label(aspace: AddressSpace, nodeid: ua.NodeId) -> str:
    name = _attribute(aspace, nodeid, _A.BrowseName) if nodeid in aspace else None
    return f"{name.Name} ({nodeid.to_string()})" if name is not None else nodeid.to_string()


def _nodeclass_name(nodeclass: Any) -> str:
    if nodeclass is None:
        return "no node"
    return f"an {ua.NodeClass(nodeclass).name}" if ua.NodeClass(nodeclass).name[0] in "AEIOU" \
        else f"a {ua.NodeClass(nodeclass).name}"


class _Finder:
    """Finds the node a binding's key names (a NodeId or a browse path)."""

    def __init__(self, aspace: AddressSpace, namespaces: list[str]) -> None:
        self.aspace = aspace
        self.namespaces = namespaces
        self._hierarchical: dict[ua.NodeId, bool] = {}

    def find(self, key: str, fail: Any) -> ua.NodeId | None:
        m = _NODE_ID.match(key.strip())
        if m is not None:
            return self._nodeid(key, m, fail)
        return self._browse(key, fail)

    def _nodeid(self, key: str, m: re.Match[str], fail: Any) -> ua.NodeId | None:
        if m["nsu"] is not None:
            if m["nsu"] not in self.namespaces:
                fail(f"no NodeSet of the face has the namespace {m['nsu']!r} "
                     f"(they have: {', '.join(self.namespaces[2:]) or 'none'})"
                     f"{did_you_mean(m['nsu'], self.namespaces)}")
                return None
            ns = self.namespaces.index(m["nsu"])
        else:
            ns = int(m["ns"] or 0)
        try:
            nodeid = ua.NodeId.from_string(f"ns={ns};{m['type']}={m['id']}")
        except (ValueError, TypeError) as exc:
            fail(f"{key!r} is not a NodeId: {exc}")
            return None
        if nodeid not in self.aspace:
            fail(f"no node {nodeid.to_string()} in the face (its NodeSets nor the "
                 f"server); copy the NodeId from the NodeSet file (its NamespaceUris give "
                 f"nsu=) or use a browse path")
            return None
        return nodeid

    def _browse(self, key: str, fail: Any) -> ua.NodeId | None:
        elements = [e for e in key.strip().strip("/").split("/")]
        if elements and elements[0] in ("Objects", "0:Objects"):
            elements = elements[1:]
        if not elements or any(not e for e in elements):
            fail(f"{key!r} is neither a NodeId ('nsu=<namespace URI>;i=<number>') nor a "
                 f"browse path ('DeviceSet/Tank/Level' from the Objects folder)")
            return None
        node = _OBJECTS
        walked = "Objects"
        for element in elements:
            ns: int | None = None
            name = element
            head, sep, tail = element.rpartition(":")
            if sep and head and tail:
                if head.isdigit():
                    ns, name = int(head), tail
                elif head in self.namespaces:
                    ns, name = self.namespaces.index(head), tail
                elif "/" in head or ":" in head:
                    fail(f"the namespace {head!r} of {element!r} is none of the "
                         f"server's (NamespaceArray: {', '.join(self.namespaces)})")
                    return None
            children = self._children(node)
            matches = [(c, bn) for c, bn in children
                       if bn.Name == name and (ns is None or bn.NamespaceIndex == ns)]
            if len(matches) > 1:
                fail(f"{walked} has {len(matches)} children named {name!r} ("
                     + ", ".join(f"{self.namespaces[bn.NamespaceIndex]}:{name}"
                                 for _, bn in matches)
                     + "); write the element as '<namespace URI>:<name>'")
                return None
            if not matches:
                names = [bn.Name for _, bn in children]
                fail(f"{walked} has no child {element!r} (it has: "
                     f"{', '.join(names[:20]) or 'none'}{', ...' if len(names) > 20 else ''})"
                     f"{did_you_mean(name, names)}")
                return None
            node = matches[0][0]
            walked = f"{walked}/{name}"
        return node

    def _children(self, node: ua.NodeId) -> list[tuple[ua.NodeId, ua.QualifiedName]]:
        return [(r.NodeId, r.BrowseName) for r in self.aspace[node].references
                if r.IsForward and self._is_hierarchical(r.ReferenceTypeId)]

    def _is_hierarchical(self, reftype: ua.NodeId) -> bool:
        known = self._hierarchical.get(reftype)
        if known is not None:
            return known
        current: ua.NodeId | None = reftype
        answer = False
        for _ in range(16):
            if current is None or current not in self.aspace:
                break
            if current == _HIERARCHICAL:
                answer = True
                break
            current = next((r.NodeId for r in self.aspace[current].references
                            if not r.IsForward and r.ReferenceTypeId == _HAS_SUBTYPE), None)
        self._hierarchical[reftype] = answer
        return answer

