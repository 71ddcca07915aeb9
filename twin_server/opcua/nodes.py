"""Building nodes in batches: AddNodesItems handed to asyncua's node management service.

``Node.add_variable`` and friends cost one awaited service call each, a
type-definition read per object and, for AnalogItemType, asyncua's generic
instantiation; building a session of thousands of variables that way takes
seconds. ``NodeBatch`` prepares the same AddNodesItems (attributes, type
definition, reference from the parent) in memory and adds them in one
synchronous ``NodeManagementService.add_nodes`` call, which is what
``InternalSession.add_nodes`` does underneath.

NodeIds are strings in our namespace: the dotted browse path below
``Objects/TwinServer`` (``Sessions.tank.Components.tank.Outputs.level``).
Children of a folder are Organized by it; children of any other object are its
components; EURange, EngineeringUnits and method arguments are properties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.server.address_space import NodeManagementService

from twin_server.models.base import DataType

#: OPC UA VariantType and DataType NodeId for each of our data types
VARIANT_TYPES: dict[DataType, ua.VariantType] = {
    DataType.DOUBLE: ua.VariantType.Double,
    DataType.INT32: ua.VariantType.Int32,
    DataType.BOOLEAN: ua.VariantType.Boolean,
    DataType.STRING: ua.VariantType.String,
}

_READ = ua.AccessLevel.CurrentRead.mask
_READ_WRITE = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.CurrentWrite.mask

_ORGANIZES = ua.NodeId(ua.ObjectIds.Organizes)
_HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_FOLDER_TYPE = ua.NodeId(ua.ObjectIds.FolderType)
_OBJECT_TYPE = ua.NodeId(ua.ObjectIds.BaseObjectType)
_DATA_VARIABLE_TYPE = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
_PROPERTY_TYPE = ua.NodeId(ua.ObjectIds.PropertyType)
_ANALOG_ITEM_TYPE = ua.NodeId(ua.ObjectIds.AnalogItemType)
_RANGE = ua.NodeId(ua.ObjectIds.Range)
_EU_INFORMATION = ua.NodeId(ua.ObjectIds.EUInformation)
_ARGUMENT = ua.NodeId(ua.ObjectIds.Argument)


def datatype_id(vtype: ua.VariantType) -> ua.NodeId:
    """The DataType NodeId of a built-in VariantType (Double -> i=11)."""
    return ua.NodeId(vtype.value)


def data_value(value: Any, vtype: ua.VariantType, when: datetime | None = None) -> ua.DataValue:
    """A Good DataValue with source and server timestamps (now unless given)."""
    when = when or datetime.now(UTC)
    return ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=when, ServerTimestamp=when)


@dataclass(frozen=True, slots=True)
class Argument:
    """A method argument as a client sees it in the InputArguments property."""

    name: str
    vtype: ua.VariantType
    description: str

    def to_ua(self) -> ua.Argument:
        return ua.Argument(Name=self.name, DataType=datatype_id(self.vtype),
                           ValueRank=ua.ValueRank.Scalar, ArrayDimensions=[],
                           Description=ua.LocalizedText(self.description))


class NodeBatch:
    """AddNodesItems collected in creation order (a parent before its children)."""

    def __init__(self, namespace: int, folders: set[ua.NodeId]) -> None:
        self.ns = namespace
        #: NodeIds known to be folders (ours and the standard Objects folder), shared
        #: between batches so that a child picks the right reference type
        self._folders = folders
        self.items: list[ua.AddNodesItem] = []

    def nodeid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.ns)

    def _item(self, parent: ua.NodeId, path: str, name: str, nodeclass: ua.NodeClass,
              typedef: ua.NodeId, attrs: Any, reference: ua.NodeId | None = None) -> ua.NodeId:
        nodeid = self.nodeid(path)
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = ua.QualifiedName(name, self.ns)
        item.NodeClass = nodeclass
        item.ParentNodeId = parent
        item.ReferenceTypeId = reference or (
            _ORGANIZES if parent in self._folders else _HAS_COMPONENT)
        item.TypeDefinition = typedef
        item.NodeAttributes = attrs
        self.items.append(item)
        return nodeid

    # -- objects -------------------------------------------------------------------
    def folder(self, parent: ua.NodeId, path: str, name: str, description: str = "") -> ua.NodeId:
        nodeid = self._item(parent, path, name, ua.NodeClass.Object, _FOLDER_TYPE,
                            _object_attributes(name, description))
        self._folders.add(nodeid)
        return nodeid

    def object(self, parent: ua.NodeId, path: str, name: str, description: str = "") -> ua.NodeId:
        return self._item(parent, path, name, ua.NodeClass.Object, _OBJECT_TYPE,
                          _object_attributes(name, description))

    # -- variables -----------------------------------------------------------------
    def variable(
        self, parent: ua.NodeId, path: str, name: str, value: Any, vtype: ua.VariantType, *,
        description: str = "", writable: bool = False, analog: bool = False,
        unit: ua.EUInformation | None = None, low: float | None = None,
        high: float | None = None, array: bool = False,
    ) -> ua.NodeId:
        """A data variable; ``analog`` makes it an AnalogItemType with EURange
        (open ends as -inf/inf) and, given a unit, EngineeringUnits."""
        attrs = _variable_attributes(name, description, value, vtype, writable=writable, array=array)
        nodeid = self._item(parent, path, name, ua.NodeClass.Variable,
                            _ANALOG_ITEM_TYPE if analog else _DATA_VARIABLE_TYPE, attrs)
        if analog:
            eu_range = ua.Range(Low=-math.inf if low is None else float(low),
                                High=math.inf if high is None else float(high))
            self.property(nodeid, f"{path}.EURange", "EURange", eu_range,
                          ua.VariantType.ExtensionObject, datatype=_RANGE, namespace=0)
            if unit is not None:
                self.property(nodeid, f"{path}.EngineeringUnits", "EngineeringUnits", unit,
                              ua.VariantType.ExtensionObject, datatype=_EU_INFORMATION,
                              namespace=0)
        return nodeid

    def property(self, parent: ua.NodeId, path: str, name: str, value: Any,
                 vtype: ua.VariantType, *, datatype: ua.NodeId | None = None,
                 description: str = "", namespace: int | None = None,
                 array: bool = False) -> ua.NodeId:
        """A property; standard ones (EURange, InputArguments) take browse-name namespace 0."""
        attrs = _variable_attributes(name, description, value, vtype, writable=False,
                                     array=array, datatype=datatype)
        nodeid = self.nodeid(path)
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = ua.QualifiedName(name, self.ns if namespace is None else namespace)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent
        item.ReferenceTypeId = _HAS_PROPERTY
        item.TypeDefinition = _PROPERTY_TYPE
        item.NodeAttributes = attrs
        self.items.append(item)
        return nodeid

    # -- methods -------------------------------------------------------------------
    def method(self, parent: ua.NodeId, path: str, name: str, description: str,
               inputs: Sequence[Argument] = ()) -> ua.NodeId:
        attrs = ua.MethodAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(description)
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.Executable = True
        attrs.UserExecutable = True
        nodeid = self._item(parent, path, name, ua.NodeClass.Method, ua.NodeId(), attrs,
                            reference=_HAS_COMPONENT)
        if inputs:
            self.property(nodeid, f"{path}.InputArguments", "InputArguments",
                          [a.to_ua() for a in inputs], ua.VariantType.ExtensionObject,
                          datatype=_ARGUMENT, namespace=0, array=True)
        return nodeid

    # -- commit --------------------------------------------------------------------
    def commit(self, service: NodeManagementService) -> list[ua.NodeId]:
        """Add every node; raise RuntimeError naming the first one refused."""
        results = service.add_nodes(self.items)
        for item, result in zip(self.items, results, strict=True):
            if not result.StatusCode.is_good():
                raise RuntimeError(
                    f"adding node {item.RequestedNewNodeId.to_string()} failed: "
                    f"{result.StatusCode.name}")
        added = [item.RequestedNewNodeId for item in self.items]
        self.items = []
        return added


def _object_attributes(name: str, description: str) -> ua.ObjectAttributes:
    attrs = ua.ObjectAttributes()
    attrs.EventNotifier = 0
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(description or name)
    attrs.WriteMask = 0
    attrs.UserWriteMask = 0
    return attrs


def _variable_attributes(name: str, description: str, value: Any, vtype: ua.VariantType, *,
                         writable: bool, array: bool = False,
                         datatype: ua.NodeId | None = None) -> ua.VariableAttributes:
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(description or name)
    attrs.DataType = datatype or datatype_id(vtype)
    attrs.Value = ua.Variant(value, vtype, is_array=array)
    if array:
        attrs.ValueRank = ua.ValueRank.OneDimension
        attrs.ArrayDimensions = [0]
    else:
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.ArrayDimensions = None
    attrs.WriteMask = 0
    attrs.UserWriteMask = 0
    attrs.Historizing = False
    level = _READ_WRITE if writable else _READ
    attrs.AccessLevel = level
    attrs.UserAccessLevel = level
    return attrs
