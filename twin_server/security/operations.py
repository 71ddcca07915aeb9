"""How many operations a request asks for, read from its still encoded body, so that
one over the server's OperationLimits (``Server/ServerCapabilities/OperationLimits``,
``[server.limits] max_nodes_per_request``) is refused whole with BadTooManyOperations
before asyncua decodes or runs any of it (OPC UA Part 4: the service result of a
request with more operations than the server supports).

Each counted request starts with its array of operations, or with fixed fields
before it (Read: MaxAge and TimestampsToReturn; the monitored-item services: the
subscription id and one more UInt32), except Browse, whose View (a NodeId of any
encoding) is skipped by decoding it. HistoryRead has its own, smaller limit
(``opcua/history_read.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import nodeid_from_binary

_ID = ua.ObjectIds
_COUNT = struct.Struct("<i")


def _at(offset: int) -> Callable[[Buffer], int]:
    """The count of an array ``offset`` bytes into the body."""
    def count(body: Buffer) -> int:
        return int(_COUNT.unpack(body.copy(offset + 4).read(offset + 4)[offset:])[0])
    return count


def _browse(body: Buffer) -> int:
    view = body.copy()
    nodeid_from_binary(view)  # ViewId
    view.skip(8 + 4 + 4)  # Timestamp, ViewVersion, RequestedMaxReferencesPerNode
    return int(_COUNT.unpack(view.read(4))[0])


def _request(name: str) -> ua.NodeId:
    return ua.NodeId(getattr(_ID, f"{name}Request_Encoding_DefaultBinary"))


#: request type -> (the OperationLimits property that bounds it, its count)
COUNTED: dict[ua.NodeId, tuple[str, Callable[[Buffer], int]]] = {
    _request("Read"): ("MaxNodesPerRead", _at(12)),
    _request("Write"): ("MaxNodesPerWrite", _at(0)),
    _request("Call"): ("MaxNodesPerMethodCall", _at(0)),
    _request("Browse"): ("MaxNodesPerBrowse", _browse),
    _request("TranslateBrowsePathsToNodeIds"):
        ("MaxNodesPerTranslateBrowsePathsToNodeIds", _at(0)),
    _request("RegisterNodes"): ("MaxNodesPerRegisterNodes", _at(0)),
    _request("UnregisterNodes"): ("MaxNodesPerRegisterNodes", _at(0)),
    _request("AddNodes"): ("MaxNodesPerNodeManagement", _at(0)),
    _request("AddReferences"): ("MaxNodesPerNodeManagement", _at(0)),
    _request("DeleteNodes"): ("MaxNodesPerNodeManagement", _at(0)),
    _request("DeleteReferences"): ("MaxNodesPerNodeManagement", _at(0)),
    _request("CreateMonitoredItems"): ("MaxMonitoredItemsPerCall", _at(8)),
    _request("ModifyMonitoredItems"): ("MaxMonitoredItemsPerCall", _at(8)),
    _request("SetMonitoringMode"): ("MaxMonitoredItemsPerCall", _at(8)),
    _request("DeleteMonitoredItems"): ("MaxMonitoredItemsPerCall", _at(4)),
}

#: the OperationLimits properties ``max_nodes_per_request`` sets (HistoryRead's two
#: are the history's; HistoryUpdate is not served, so its two are left out)
LIMITS = tuple(dict.fromkeys(name for name, _ in COUNTED.values()))


def count(service: ua.NodeId, body: Buffer) -> tuple[str, int] | None:
    """The OperationLimits property bounding ``service`` and the number of operations
    its ``body`` asks for; None for a service not counted here or a body too short to
    say (asyncua answers a malformed request itself)."""
    counted = COUNTED.get(service)
    if counted is None:
        return None
    name, counter = counted
    try:
        return name, counter(body)
    except Exception:  # a truncated or malformed body: asyncua's to answer
        return None
