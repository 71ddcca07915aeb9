"""The DataTypes a NodeSet defines (structures and enumerations of a companion
specification or of the machine's own model): their ``DataTypeDefinition``
attribute, and their values binary-encoded (OPC UA Part 6, 5.2).

From each UADataType's ``<Definition>`` (Part 6, F.12) a structure gets a
``StructureDefinition`` (fields with DataType, ValueRank, ArrayDimensions,
MaxStringLength, IsOptional; the fields of a base structure of the files first, as
Part 3, 8.48 asks; BaseDataType; DefaultEncodingId: the type's ``HasEncoding``
target named "Default Binary"; StructureType: Union, StructureWithOptionalFields or
Structure) and an enumeration (or an OptionSet) an ``EnumDefinition``. OPC UA 1.04
clients (asyncua's ``load_data_type_definitions``, node-opcua, UaExpert) build
their decoders from these.

A ``<Value>``'s ExtensionObject of such a structure is encoded here, field by field
as the definition says (nested structures, arrays, optional fields, unions,
enumerations, the standard structures asyncua knows), into an ``ExtensionObject``
whose Body is the encoded bytes and whose TypeId is the type's Default Binary
encoding: asyncua sends it as it is, and no class is registered in asyncua's
process-wide tables. A structure that cannot be encoded (a field of a type found
nowhere, a multi-dimensional array field, StructureWithSubtypedValues, no Default
Binary encoding) raises ``UnknownStructure``; the loader serves that value empty
and logs the type once.

Why not asyncua's ``structures104`` (which generates Python classes from
StructureDefinitions): it registers each class in asyncua's process-wide tables
and as an attribute of ``asyncua.ua`` by its name, where two faces' (or a face's
and the base model's) types of the same name would collide; encoding straight from
the XML needs no class.

Types a face loaded before into the same server are found in its address space
(their DataTypeDefinition attribute and references), so a second face's values may
use a first face's structures.
"""

from __future__ import annotations

import dataclasses
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace
from asyncua.ua.ua_binary import (
    extensionobject_to_binary,
    pack_uatype,
    struct_to_binary,
    variant_to_binary,
)

from twin_server.faces.nodeset import RawDefinition

if TYPE_CHECKING:
    from twin_server.faces.values import ValueReader

TYPES = "{http://opcfoundation.org/UA/2008/02/Types.xsd}"
_A = ua.AttributeIds
_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_HAS_ENCODING = ua.NodeId(ua.ObjectIds.HasEncoding)
_STRUCTURE = ua.NodeId(ua.ObjectIds.Structure)
_UNION = ua.NodeId(ua.ObjectIds.Union)
_ENUMERATION = ua.NodeId(ua.ObjectIds.Enumeration)
#: abstract DataTypes whose fields are encoded as a Variant
_VARIANTS = frozenset({ua.ObjectIds.BaseDataType, ua.ObjectIds.Number, ua.ObjectIds.Integer,
                       ua.ObjectIds.UInteger})
_DEFAULT_BINARY = "Default Binary"
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")


class UnknownStructure(ValueError):
    """An ExtensionObject whose structure the server has no encoding for."""


@dataclass(slots=True)
class DataType:
    """A structure or enumeration of the files (or of a face loaded before)."""

    nodeid: ua.NodeId
    name: str
    definition: ua.StructureDefinition | ua.EnumDefinition
    #: the Default Binary encoding (None: values of it cannot be encoded)
    binary: ua.NodeId | None

    @property
    def structure(self) -> ua.StructureDefinition | None:
        d = self.definition
        return d if isinstance(d, ua.StructureDefinition) else None


class DataTypes:
    """The DataTypes of one load, looked up by NodeId (their own, or an encoding's)."""

    def __init__(self, aspace: AddressSpace) -> None:
        self.aspace = aspace
        self.types: dict[ua.NodeId, DataType] = {}
        #: encoding NodeId (Default Binary, Default XML, ...) -> DataType NodeId
        self.by_encoding: dict[ua.NodeId, ua.NodeId] = {}
        self.by_name: dict[str, ua.NodeId] = {}
        self._supertypes: dict[ua.NodeId, ua.NodeId] = {}
        self._kinds: dict[ua.NodeId, ua.NodeId | None] = {}
        #: names of the structures already logged as not encodable
        self.refused: set[str] = set()

    def add(self, nodeids: dict[ua.NodeId, tuple[str, RawDefinition]],
            supertypes: dict[ua.NodeId, ua.NodeId],
            encodings: dict[ua.NodeId, list[tuple[ua.NodeId, str]]]) -> None:
        """Define the files' DataTypes: ``nodeids`` DataType -> (name, definition),
        ``supertypes`` DataType -> its supertype, ``encodings`` DataType -> its
        encodings with their BrowseNames."""
        self._supertypes.update(supertypes)
        for nodeid, encs in encodings.items():
            for enc, _ in encs:
                self.by_encoding[enc] = nodeid
        pending = dict(nodeids)

        def define(nodeid: ua.NodeId) -> None:
            name, raw = pending.pop(nodeid)
            base = supertypes.get(nodeid, _STRUCTURE)
            if base in pending:
                define(base)  # its fields come first
            binary = next((e for e, n in encodings.get(nodeid, []) if n == _DEFAULT_BINARY),
                          None)
            definition: ua.StructureDefinition | ua.EnumDefinition
            root = self.root(nodeid)  # (None: a supertype found nowhere)
            if not raw.is_option_set and (root == _STRUCTURE or (root is None and all(
                    f.value is None for f in raw.fields))):
                inherited = self.find(base)
                own = [_structure_field(f) for f in raw.fields]
                names = {f.Name for f in own}
                fields = ([f for f in inherited.structure.Fields if f.Name not in names]
                          if inherited is not None and inherited.structure is not None
                          else []) + own
                kind = (ua.StructureType.Union if raw.is_union
                        else ua.StructureType.StructureWithOptionalFields
                        if any(f.IsOptional for f in fields) else ua.StructureType.Structure)
                definition = ua.StructureDefinition(
                    DefaultEncodingId=binary or ua.NodeId(), BaseDataType=base,
                    StructureType=kind, Fields=fields)
            else:
                definition = ua.EnumDefinition(Fields=[ua.EnumField(
                    Value=f.value if f.value is not None else i,
                    DisplayName=f.display_name or ua.LocalizedText(f.name),
                    Description=f.description or ua.LocalizedText(), Name=f.name)
                    for i, f in enumerate(raw.fields)])
            self.types[nodeid] = DataType(nodeid, name, definition, binary)
            self.by_name.setdefault(name, nodeid)

        while pending:
            define(next(iter(pending)))

    # -- lookups ------------------------------------------------------------------------

    def supertype(self, nodeid: ua.NodeId) -> ua.NodeId | None:
        found = self._supertypes.get(nodeid)
        if found is None and nodeid in self.aspace:
            found = next((r.NodeId for r in self.aspace[nodeid].references
                          if not r.IsForward and r.ReferenceTypeId == _HAS_SUBTYPE), None)
            if found is not None:
                self._supertypes[nodeid] = found
        return found

    def root(self, nodeid: ua.NodeId) -> ua.NodeId | None:
        """Structure, Enumeration, a built-in type's NodeId (i=1..25) or an abstract
        one of ``_VARIANTS``; None for a type found nowhere."""
        if nodeid in self._kinds:
            return self._kinds[nodeid]
        seen = nodeid
        found: ua.NodeId | None = None
        for _ in range(32):
            if seen.NamespaceIndex == 0 and isinstance(seen.Identifier, int) and (
                    seen.Identifier <= 25 or seen.Identifier in _VARIANTS
                    or seen in (_ENUMERATION, _UNION)):
                found = _STRUCTURE if seen == _UNION else seen
                break
            nxt = self.supertype(seen)
            if nxt is None:
                break
            seen = nxt
        self._kinds[nodeid] = found
        return found

    def find(self, nodeid: ua.NodeId) -> DataType | None:
        """The DataType ``nodeid`` of the files, or of a face loaded before (None for
        the base model's: asyncua has those)."""
        found = self.types.get(nodeid)
        if found is not None or nodeid.NamespaceIndex == 0 or nodeid not in self.aspace:
            return found
        data = self.aspace[nodeid]
        av = data.attributes.get(_A.DataTypeDefinition)
        definition = None if av is None or av.value is None or av.value.Value is None \
            else av.value.Value.Value
        if not isinstance(definition, ua.StructureDefinition | ua.EnumDefinition):
            return None
        binary = definition.DefaultEncodingId if isinstance(
            definition, ua.StructureDefinition) and not definition.DefaultEncodingId.is_null() \
            else None
        browse = data.attributes[_A.BrowseName].value.Value.Value
        found = self.types[nodeid] = DataType(nodeid, browse.Name, definition, binary)
        return found

    def by_typeid(self, typeid: ua.NodeId) -> DataType | None:
        """The DataType of an ExtensionObject's TypeId (an encoding's NodeId, or the
        DataType's own)."""
        datatype = self.by_encoding.get(typeid)
        if datatype is None and typeid.NamespaceIndex != 0 and typeid in self.aspace:
            datatype = next((r.NodeId for r in self.aspace[typeid].references
                             if not r.IsForward and r.ReferenceTypeId == _HAS_ENCODING),
                            typeid)
        return self.find(datatype if datatype is not None else typeid)

    # -- values -------------------------------------------------------------------------

    def extension_object(self, reader: ValueReader, datatype: DataType,
                         body: ET.Element) -> ua.ExtensionObject:
        """The ``<Body>``'s structure as an ExtensionObject of its Default Binary
        encoding (UnknownStructure when it has none or a field cannot be encoded)."""
        sdef = datatype.structure
        if sdef is None or datatype.binary is None:
            raise UnknownStructure(f"structure {datatype.name} has no Default Binary "
                                   f"encoding" if sdef is not None else
                                   f"{datatype.name} is not a structure")
        out: list[bytes] = []
        try:
            self._structure(reader, datatype, _in_types(body), out)
        except UnknownStructure as exc:
            raise UnknownStructure(f"structure {datatype.name}: {exc}") from None
        # (asyncua sets the Body's bit of the encoding byte when a Body is there)
        return ua.ExtensionObject(TypeId=datatype.binary, Body=b"".join(out))

    def _structure(self, reader: ValueReader, datatype: DataType,
                   element: ET.Element | None, out: list[bytes]) -> None:
        sdef = datatype.structure
        assert sdef is not None
        present = [(f, None if element is None else element.find(TYPES + f.Name))
                   for f in sdef.Fields]
        if sdef.StructureType == ua.StructureType.Union:
            chosen = next((i for i, (_, e) in enumerate(present) if e is not None), None)
            out.append(_UINT32.pack(0 if chosen is None else chosen + 1))
            if chosen is not None:
                f, e = present[chosen]
                self._field(reader, f, e, out)
            return
        if sdef.StructureType == ua.StructureType.StructureWithOptionalFields:
            mask = 0
            for bit, (_, e) in enumerate((f, e) for f, e in present if f.IsOptional):
                if e is not None:
                    mask |= 1 << bit
            out.append(_UINT32.pack(mask))
        elif sdef.StructureType != ua.StructureType.Structure:
            raise UnknownStructure(f"structure {datatype.name}: StructureType "
                                   f"{sdef.StructureType.name} is not supported")
        for f, e in present:
            if f.IsOptional and e is None:
                continue
            self._field(reader, f, e, out)

    def _field(self, reader: ValueReader, f: ua.StructureField, element: ET.Element | None,
               out: list[bytes]) -> None:
        if f.ValueRank > 1:
            raise UnknownStructure(f"field {f.Name} is a {f.ValueRank}-dimensional array")
        if f.ValueRank == 1:
            if element is None:
                out.append(_INT32.pack(-1))
                return
            items = list(element)
            out.append(_INT32.pack(len(items)))
            for item in items:
                self._scalar(reader, f.DataType, item, out)
            return
        self._scalar(reader, f.DataType, element, out)

    def _scalar(self, reader: ValueReader, datatype: ua.NodeId, element: ET.Element | None,
                out: list[bytes]) -> None:
        own = self.find(datatype)
        if own is not None:
            if own.structure is not None:
                self._structure(reader, own, element, out)
            else:
                out.append(_INT32.pack(_enum_value(element)))
            return
        cls = _standard_structure(datatype)
        if cls is not None:
            value = cls() if element is None else reader.structure(cls.__name__, element)
            out.append(struct_to_binary(value))
            return
        root = self.root(datatype)
        if root is None:
            raise UnknownStructure(f"DataType {datatype.to_string()} is found nowhere")
        if root == _ENUMERATION:
            out.append(_INT32.pack(_enum_value(element)))
            return
        if root == _STRUCTURE:  # an abstract structure: an ExtensionObject
            inner = None if element is None else next(iter(element), None)
            out.append(extensionobject_to_binary(
                None if inner is None else reader.scalar("ExtensionObject", inner)))
            return
        ident = root.Identifier
        if ident in _VARIANTS:
            inner = None if element is None else next(iter(element), None)
            if inner is not None and _local(inner.tag) == "Value":
                inner = next(iter(inner), None)
            out.append(variant_to_binary(ua.Variant() if inner is None
                                         else reader.variant_of(inner)))
            return
        vtype = ua.VariantType(ident)
        value = _default(vtype) if element is None else reader.scalar(vtype.name, element)
        out.append(pack_uatype(vtype, value))


def _structure_field(f: Any) -> ua.StructureField:
    return ua.StructureField(
        Name=f.name, Description=f.description or ua.LocalizedText(), DataType=f.datatype,
        ValueRank=f.value_rank, ArrayDimensions=f.array_dimensions or [],
        MaxStringLength=f.max_string_length, IsOptional=f.is_optional)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _in_types(element: ET.Element) -> ET.Element:
    """A copy of ``element`` with every tag in the Types namespace: a model's structure
    comes in the model's own XML namespace (``<Body><MyType xmlns="urn:..."><X>``)."""
    copy = ET.Element(TYPES + _local(element.tag))
    copy.text = element.text
    copy.extend(_in_types(child) for child in element)
    return copy


def _enum_value(element: ET.Element | None) -> int:
    """``Red_0`` (the XML encoding of an enumeration, Part 6 5.3.1.18) or ``0``."""
    text = "" if element is None else (element.text or "").strip()
    return int(text.rpartition("_")[2] or 0)


def _default(vtype: ua.VariantType) -> Any:
    if vtype is ua.VariantType.DateTime:
        return ua.get_win_epoch()
    if vtype is ua.VariantType.Guid:
        import uuid
        return uuid.UUID(int=0)
    return ua.get_default_value(vtype)


def _standard_structure(datatype: ua.NodeId) -> Callable[..., Any] | None:
    """asyncua's class of a base-model structure (Range, EUInformation, ...)."""
    if datatype.NamespaceIndex != 0 or not isinstance(datatype.Identifier, int):
        return None
    name = ua.ObjectIdNames.get(datatype.Identifier)
    cls = getattr(ua, name, None) if name else None
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) \
            and getattr(cls, "data_type", None) == datatype:
        return cls
    return None
