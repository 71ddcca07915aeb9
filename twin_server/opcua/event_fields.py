"""An emitted event's fields as bytes for the event history, and back.

An alarm transition goes out as an event of its condition's type (``alarms.py``)
and is also stored in its session's event history (the store's ``events.fields``,
schema v3). The store keeps what went out, every field with its value and its
VariantType, so that HistoryReadEvents answers the same event a subscriber got:
its EventType, ConditionId (the ``NodeId`` field), ActiveState/Id, AckedState/Id,
LimitState/CurrentState and the rest, filtered by a where clause as live events are.

The encoding is OPC UA's own binary one (Part 6), so every value keeps its type:
a format byte, our namespace's index when the event was encoded (UInt16), then
each field as a String (its name: the browse path joined with ``/``, as asyncua's
events name fields) and a Variant. A NodeId of our namespace is read back in the
namespace's index at read time, should the server's namespace array have changed.
"""

from __future__ import annotations

import struct
from typing import Any

from asyncua import ua
from asyncua.common.events import Event
from asyncua.common.utils import Buffer, NotEnoughData
from asyncua.ua.ua_binary import Primitives, variant_from_binary, variant_to_binary

#: the first byte of the encoding; another one is not ours (or a later format)
FORMAT = 1
_HEAD = struct.Struct("<BH")


class BadFields(ValueError):
    """Stored bytes that are not an event's fields in our format."""


def encode(event: Event, namespace: int) -> bytes:
    """The fields of ``event`` (an asyncua event object, as emitted) as bytes; a null
    field is left out (it reads null either way)."""
    parts = [_HEAD.pack(FORMAT, namespace)]
    for name, vtype in event.data_types.items():
        value = getattr(event, name, None)
        if value is None:
            continue
        parts.append(Primitives.String.pack(name))
        parts.append(variant_to_binary(ua.Variant(value, vtype)))
    return b"".join(parts)


def decode(blob: bytes, namespace: int) -> Event:
    """The event ``encode`` took, its NodeIds of our namespace in ``namespace``'s index."""
    if len(blob) < _HEAD.size:
        raise BadFields(f"{len(blob)} bytes are too short for an event's fields")
    fmt, was = _HEAD.unpack_from(blob)
    if fmt != FORMAT:
        raise BadFields(f"event fields of format {fmt}, this twin-server reads {FORMAT}")
    data = Buffer(bytes(blob), _HEAD.size)
    event = Event()
    try:
        while len(data):
            name = Primitives.String.unpack(data)
            variant = variant_from_binary(data)
            event.add_property(name, _renumber(variant.Value, was, namespace),
                               variant.VariantType)
    except (NotEnoughData, ValueError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise BadFields(f"event fields cut short or corrupt: {exc}") from None
    return event


def _renumber(value: Any, was: int, now: int) -> Any:
    if was != now and isinstance(value, ua.NodeId) and value.NamespaceIndex == was:
        return ua.NodeId(value.Identifier, now, value.NodeIdType)
    return value


__all__ = ["FORMAT", "BadFields", "decode", "encode"]
