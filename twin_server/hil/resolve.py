"""Resolving bindings against a connected PLC: namespaces, browse paths, node checks.

Done at every connect (a PLC may have been re-programmed while the link was
down): read the PLC's OperationLimits and NamespaceArray, turn namespace URIs
into indices, translate browse paths in batches within
MaxNodesPerTranslateBrowsePathsToNodeIds, then read each node's NodeClass,
DataType, ValueRank, AccessLevel and UserAccessLevel in batches within
MaxNodesPerRead. A binding that fails gets a status and a message naming it;
the others carry on.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from asyncua import Client, ua

from twin_server.config.schema import HilBinding, NodeRef, parse_browse_path
from twin_server.hil.casting import variant_type

T = TypeVar("T")

_A = ua.AttributeIds
_LIMITS = (
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
)
_CHECKED = (_A.NodeClass, _A.DataType, _A.ValueRank, _A.AccessLevel, _A.UserAccessLevel)
_READ_BIT = ua.AccessLevel.CurrentRead.mask
_WRITE_BIT = ua.AccessLevel.CurrentWrite.mask
_HIERARCHICAL = ua.NodeId(ua.ObjectIds.HierarchicalReferences)


@dataclass(frozen=True, slots=True)
class Limits:
    """The PLC's OperationLimits; 0 means no limit."""

    max_nodes_per_read: int = 0
    max_nodes_per_write: int = 0
    max_nodes_per_translate: int = 0
    max_monitored_items_per_call: int = 0


@dataclass(frozen=True, slots=True)
class Resolved:
    """A binding's PLC node, checked."""

    nodeid: ua.NodeId
    vtype: ua.VariantType


@dataclass(frozen=True, slots=True)
class Unresolved:
    """Why a binding cannot work on this PLC."""

    status: str
    message: str


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (all at once when ``size`` is 0)."""
    if size <= 0:
        if items:
            yield items
        return
    for start in range(0, len(items), size):
        yield items[start:start + size]


async def read_limits(client: Client) -> Limits:
    """The OperationLimits the PLC declares (a missing one reads as no limit)."""
    values = await read(client, [(ua.NodeId(i), _A.Value) for i in _LIMITS], 0)
    numbers = [int(v.Value.Value) if v.StatusCode.is_good() and v.Value is not None
               and isinstance(v.Value.Value, int) else 0 for v in values]
    return Limits(*numbers)


async def read(client: Client, items: Sequence[tuple[ua.NodeId, ua.AttributeIds]],
               batch: int) -> list[ua.DataValue]:
    """Read ``(node, attribute)`` pairs with the Read service, ``batch`` per request."""
    results: list[ua.DataValue] = []
    for part in chunks(items, batch):
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=a) for n, a in part]
        results.extend(await client.uaclient.read(params))
    return results


async def resolve(client: Client, bindings: Sequence[tuple[str, HilBinding]],
                  limits: Limits) -> dict[str, Resolved | Unresolved]:
    """Every binding's node, or why it has none."""
    namespaces: list[str] = await client.get_namespace_array()
    found: dict[str, Resolved | Unresolved] = {}
    nodeids: dict[str, ua.NodeId] = {}
    paths: list[tuple[str, ua.RelativePath]] = []
    for name, binding in bindings:
        try:
            if binding.node is not None:
                nodeids[name] = _nodeid(NodeRef.parse(binding.node), namespaces)
            else:
                assert binding.browse_path is not None
                paths.append((name, _relative_path(binding.browse_path, namespaces)))
        except (LookupError, ValueError) as exc:  # an unknown namespace, a bad GUID
            found[name] = Unresolved("BadNodeIdUnknown", str(exc))
    for part in chunks(paths, limits.max_nodes_per_translate):
        browse_paths = [ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.RootFolder),
                                      RelativePath=rp) for _, rp in part]
        results = await client.uaclient.translate_browsepaths_to_nodeids(browse_paths)
        for (name, _), result in zip(part, results, strict=True):
            text = dict(bindings)[name].browse_path
            if not result.StatusCode.is_good() or not result.Targets:
                status = _status_name(result.StatusCode)
                found[name] = Unresolved(status, f"browse path {text!r} leads to no node on "
                                                 f"the PLC ({status})")
                continue
            target = result.Targets[0].TargetId
            nodeids[name] = ua.NodeId(target.Identifier, target.NamespaceIndex,
                                      target.NodeIdType)
    names = list(nodeids)
    items = [(nodeids[n], a) for n in names for a in _CHECKED]
    values = await read(client, items, limits.max_nodes_per_read)
    by_binding = dict(bindings)
    for i, name in enumerate(names):
        attrs = values[i * len(_CHECKED):(i + 1) * len(_CHECKED)]
        found[name] = _check(nodeids[name], by_binding[name].direction, attrs)
    return {name: found[name] for name, _ in bindings}


def _check(nodeid: ua.NodeId, direction: str,
           attrs: Sequence[ua.DataValue]) -> Resolved | Unresolved:
    text = nodeid.to_string()
    nodeclass, datatype, rank, access, user_access = attrs
    if not nodeclass.StatusCode.is_good():
        status = _status_name(nodeclass.StatusCode)
        return Unresolved(status, f"node {text} does not exist on the PLC ({status})")
    if _value(nodeclass) != ua.NodeClass.Variable:
        return Unresolved("BadNodeClassInvalid",
                          f"node {text} is not a variable (it is "
                          f"{ua.NodeClass(_value(nodeclass)).name})")
    dtype = _value(datatype)
    vtype = variant_type(dtype) if isinstance(dtype, ua.NodeId) else None
    if vtype is None:
        return Unresolved("BadTypeMismatch",
                          f"node {text} has DataType {_show(dtype)}, which is not a scalar "
                          f"type a binding can carry (Boolean, integers, Float, Double, String)")
    rank_value = _value(rank)
    if isinstance(rank_value, int) and rank_value not in (-1, -2, -3):
        return Unresolved("BadTypeMismatch", f"node {text} holds an array (ValueRank "
                                             f"{rank_value}); a binding carries one scalar")
    need, word = (_WRITE_BIT, "writable") if direction == "to_plc" else (_READ_BIT, "readable")
    for attr, who in ((access, "AccessLevel"), (user_access, "UserAccessLevel")):
        level = _value(attr)
        if attr.StatusCode.is_good() and isinstance(level, int) and not level & need:
            status = "BadNotWritable" if direction == "to_plc" else "BadNotReadable"
            whom = "for this user " if who == "UserAccessLevel" else ""
            return Unresolved(status, f"node {text} is not {word} {whom}({who} {level:#04x}); "
                                      f"a {direction} binding needs it {word}")
    return Resolved(nodeid, vtype)


def _value(dv: ua.DataValue) -> Any:
    return None if dv.Value is None else dv.Value.Value


def _show(value: Any) -> str:
    return value.to_string() if isinstance(value, ua.NodeId) else repr(value)


def _status_name(code: ua.StatusCode) -> str:
    try:
        return str(code.name)
    except Exception:  # an unknown code
        return f"0x{code.value:08X}"


def _namespace(ns: int | str, namespaces: list[str]) -> int:
    if isinstance(ns, int):
        if ns >= len(namespaces):
            raise LookupError(f"namespace index {ns} is not on the PLC (it has "
                              f"{len(namespaces)}: {', '.join(namespaces)})")
        return ns
    try:
        return namespaces.index(ns)
    except ValueError:
        raise LookupError(f"namespace URI {ns!r} is not on the PLC (its namespaces: "
                          f"{', '.join(namespaces)})") from None


def _nodeid(ref: NodeRef, namespaces: list[str]) -> ua.NodeId:
    ns = _namespace(ref.namespace, namespaces)
    ident: Any
    if ref.id_type == "i":
        return ua.NodeId(int(ref.identifier), ns)
    if ref.id_type == "s":
        return ua.NodeId(ref.identifier, ns, ua.NodeIdType.String)
    if ref.id_type == "g":
        ident = uuid.UUID(ref.identifier)
        return ua.NodeId(ident, ns, ua.NodeIdType.Guid)
    ident = base64.b64decode(ref.identifier)
    return ua.NodeId(ident, ns, ua.NodeIdType.ByteString)


def _relative_path(text: str, namespaces: list[str]) -> ua.RelativePath:
    elements = []
    for ns, name in parse_browse_path(text):
        elements.append(ua.RelativePathElement(
            ReferenceTypeId=_HIERARCHICAL, IsInverse=False, IncludeSubtypes=True,
            TargetName=ua.QualifiedName(name, _namespace(ns, namespaces))))
    return ua.RelativePath(Elements=elements)
