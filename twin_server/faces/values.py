"""The ``<Value>`` of a NodeSet2 variable as a ``ua.Variant`` (OPC UA Part 6, 5.3: the
XML encoding).

Built-in scalars and their ``ListOf...`` arrays, LocalizedText, QualifiedName,
NodeId (namespace indexes mapped to the server's), and ExtensionObjects of the
standard structures (``EUInformation``, ``Range``, ``Argument``,
``EnumValueType``, ... : any structure asyncua knows by the name of the Body's
element), decoded field by field from the structure's declared field types. A
structure of the NodeSets' own DataTypes (``datatypes.py``) is encoded from the
type's definition. A structure found nowhere raises ``UnknownStructure``: the
loader serves that variable without a value and logs it (README, "Machine faces").
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from twin_server.faces.datatypes import DataTypes, UnknownStructure

TYPES = "{http://opcfoundation.org/UA/2008/02/Types.xsd}"

_V = ua.VariantType


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise ValueError(f"{text!r} is not a Boolean")


def _datetime(text: str) -> datetime:
    t = text.strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(t)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_SCALARS: dict[str, tuple[ua.VariantType, Callable[[str], Any]]] = {
    "Boolean": (_V.Boolean, _bool),
    "SByte": (_V.SByte, int), "Byte": (_V.Byte, int),
    "Int16": (_V.Int16, int), "UInt16": (_V.UInt16, int),
    "Int32": (_V.Int32, int), "UInt32": (_V.UInt32, int),
    "Int64": (_V.Int64, int), "UInt64": (_V.UInt64, int),
    "Float": (_V.Float, float), "Double": (_V.Double, float),
    "String": (_V.String, str),
    "DateTime": (_V.DateTime, _datetime),
    "ByteString": (_V.ByteString, lambda t: base64.b64decode(t.strip())),
    "StatusCode": (_V.StatusCode, lambda t: ua.StatusCode(int(t.strip() or 0))),
}
_INTEGERS = frozenset({"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64",
                       "UInt64"})


class ValueReader:
    """Decodes values of one file (``nodeid`` maps the file's NodeIds)."""

    def __init__(self, nodeid: Callable[[str], ua.NodeId], remap: list[int],
                 types: DataTypes | None = None) -> None:
        self.nodeid = nodeid
        self.remap = remap
        #: the DataTypes of the load (filled once every file is read)
        self.types = types

    def variant(self, value: ET.Element) -> ua.Variant | None:
        """The Variant of a ``<Value>`` element; None when it is empty."""
        children = list(value)
        if not children:
            return None
        return self.variant_of(children[0])

    def variant_of(self, element: ET.Element) -> ua.Variant:
        """The Variant of one value element (``<Int32>``, ``<ListOfString>``, ...)."""
        name = _local(element.tag)
        if name.startswith("ListOf"):
            item = name[6:]
            vtype, items = self._items(item, list(element))
            return ua.Variant(items, vtype, is_array=True)
        vtype, decoded = self._one(name, element)
        return ua.Variant(decoded, vtype)

    def _items(self, name: str, elements: list[ET.Element]) -> tuple[ua.VariantType, list[Any]]:
        vtype = self._vtype(name)
        return vtype, [self._one(name, e)[1] for e in elements]

    def _vtype(self, name: str) -> ua.VariantType:
        if name in _SCALARS:
            return _SCALARS[name][0]
        try:
            return ua.VariantType[name]
        except KeyError:
            raise ValueError(f"unknown value type <{name}>") from None

    def scalar(self, name: str, element: ET.Element) -> Any:
        """A value of the built-in type ``name`` (``Double``, ``LocalizedText``, ...)."""
        return self._one(name, element)[1]

    def _one(self, name: str, element: ET.Element) -> tuple[ua.VariantType, Any]:
        scalar = _SCALARS.get(name)
        text = element.text or ""
        if scalar is not None:
            vtype, parse = scalar
            try:
                return vtype, parse(text.strip() if name in _INTEGERS else text)
            except ValueError:
                raise ValueError(f"<{name}> {text.strip()!r} is not a {name}") from None
        if name == "LocalizedText":
            return _V.LocalizedText, self.localized(element)
        if name == "QualifiedName":
            ns = int(self._field_text(element, "NamespaceIndex") or 0)
            return _V.QualifiedName, ua.QualifiedName(
                self._field_text(element, "Name") or "", self._ns(ns))
        if name in ("NodeId", "ExpandedNodeId"):
            ident = self._field_text(element, "Identifier") or "i=0"
            return _V[name], self.nodeid(ident)
        if name == "Guid":
            return _V.Guid, uuid.UUID((self._field_text(element, "String") or text).strip())
        if name == "ExtensionObject":
            return _V.ExtensionObject, self.extension_object(element)
        if name == "XmlElement":
            return _V.XmlElement, ua.XmlElement(ET.tostring(element, encoding="unicode"))
        raise ValueError(f"unknown value type <{name}>")

    def _ns(self, index: int) -> int:
        if index >= len(self.remap):
            raise ValueError(f"namespace index {index} is not in the file's NamespaceUris")
        return self.remap[index]

    @staticmethod
    def _field_text(element: ET.Element, name: str) -> str | None:
        found = element.find(TYPES + name)
        return None if found is None else (found.text or "")

    def localized(self, element: ET.Element) -> ua.LocalizedText:
        text = self._field_text(element, "Text")
        locale = self._field_text(element, "Locale")
        return ua.LocalizedText(text if text is not None else (element.text or ""),
                                locale or None)

    def extension_object(self, element: ET.Element) -> Any:
        body = element.find(TYPES + "Body")
        if body is None or not len(body):
            return None
        struct = body[0]
        name = _local(struct.tag)
        holder = element.find(TYPES + "TypeId")
        typeid = None if holder is None else (self._field_text(holder, "Identifier") or "")
        # (a base-model TypeId, i=..., is asyncua's: the many EUInformation and Range)
        if self.types is not None and not (typeid or "").lstrip().startswith("i="):
            own = self.types.by_typeid(self.nodeid(typeid)) if typeid else None
            if own is None:
                found = self.types.by_name.get(name)
                own = None if found is None else self.types.find(found)
            if own is not None:
                return self.types.extension_object(self, own, struct)
        return self.structure(name, struct)

    def structure(self, name: str, element: ET.Element) -> Any:
        cls: Any = getattr(ua, name, None)
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
            raise UnknownStructure(f"structure <{name}> is not one the server knows")
        values: dict[str, Any] = {}
        for f_name, f_type in _fields(cls):
            found = element.find(TYPES + f_name)
            if found is None:
                continue
            values[f_name] = self._field(f_type, found)
        return cls(**values)

    def _field(self, type_text: str, element: ET.Element) -> Any:
        inner = _list_item(type_text)
        if inner is not None:
            return [self._field(inner, e) for e in element]
        name = type_text
        if name in _SCALARS or name in ("LocalizedText", "QualifiedName", "NodeId",
                                        "ExpandedNodeId", "Guid"):
            return self._one(name, element)[1]
        if name in ("Variant", "ExtensionObject"):
            children = list(element)
            if not children:
                return None
            return self._one(_local(children[0].tag), children[0])[1]
        cls = getattr(ua, name, None)
        if cls is not None and isinstance(cls, type) and issubclass(cls, int):  # an enum
            text = (element.text or "").strip()
            number = text.rpartition("_")[2] if "_" in text else text
            return cls(int(number))
        return self.structure(name, element)


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str], ...]:
    """A structure's fields with their type names (``UInt32``, ``list[UInt32]``)."""
    result = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_") or f.name in ("data_type", "TypeId", "Encoding"):
            continue
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        t = t.strip("'\"").replace("ua.", "").replace("typing.", "")
        result.append((f.name, t))
    return tuple(result)


def _list_item(type_text: str) -> str | None:
    for prefix in ("list[", "List["):
        if type_text.startswith(prefix) and type_text.endswith("]"):
            return type_text[len(prefix):-1]
    return None
