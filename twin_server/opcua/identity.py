"""What the server says it is, and the limits it keeps, in the standard nodes.

* ``Server/ServerStatus/BuildInfo`` and every endpoint's ApplicationDescription:
  twin-server's product name, URI and manufacturer, the installed package's version
  (``importlib.metadata``) and its build date (when the package was installed, i.e.
  built into the environment that runs it). The ApplicationName stays the config's
  ``server.application_name`` (this instance), the ApplicationUri its
  ``application_uri``.
* ``Server/ServerCapabilities``: the limits ``[server.limits]`` sets and the guard
  (``security/guard.py``, ``security/limits.py``) enforces (sessions, subscriptions,
  monitored items and their queues), the string, byte string and array lengths one
  message can carry (``max_message_size``: no element is shorter than a byte), the
  fastest sampling a session can give (``publish_rate`` at most 1,000 Hz: 1 ms), the
  locale of our texts and the profiles served; the OperationLimits of one request
  (``max_nodes_per_request``, enforced by ``security/operations.py``). Event filters
  have no clause limits of their own (0). Browse has no continuation points (a
  Browse answers every reference at once), Query and log objects are not served:
  their maxima read 0, which OPC UA defines as "no limit" for the first and which
  no client can use for the others. The history's own figures are set where
  HistoryRead is installed (``history_read.install``). Optional nodes that would
  read null or claim what is not served are removed (``UNSERVED``).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua import Server, ua
from asyncua.server.address_space import AddressSpace, AttributeValue

import twin_server
from twin_server.config.security import LimitsConfig
from twin_server.security import operations

PRODUCT_NAME = "twin-server"
PRODUCT_URI = "urn:twin-server"
MANUFACTURER = "the twin-server project"
DISTRIBUTION = "twin-server"
#: the fastest a session publishes (``[sessions.*] publish_rate`` is at most 1,000 Hz)
MIN_SAMPLE_INTERVAL_MS = 1.0
LOCALES = ("en",)
#: what we serve (not certified): Embedded 2017 server with data access, methods,
#: events, state machines (Program), historical access
PROFILES = (
    "http://opcfoundation.org/UA-Profile/Server/EmbeddedUA2017",
    "http://opcfoundation.org/UA-Profile/Server/DataAccess",
    "http://opcfoundation.org/UA-Profile/Server/Methods",
    "http://opcfoundation.org/UA-Profile/Server/StandardEventSubscription",
    "http://opcfoundation.org/UA-Profile/Server/StateMachine",
    "http://opcfoundation.org/UA-Profile/Server/HistoricalRawData",
)


@dataclass(frozen=True, slots=True)
class Build:
    """The BuildInfo of the running code."""

    version: str
    date: datetime


def build() -> Build:
    """The installed distribution's version and the time it was installed (its
    metadata's modification time); the package's own version and the time of its
    ``__init__`` where it runs from a bare checkout."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    version = dist.version if dist is not None else twin_server.__version__
    stamped = Path(twin_server.__file__)
    location = getattr(dist, "_path", None)  # the .dist-info folder of a PathDistribution
    if isinstance(location, Path) and location.exists():
        stamped = location
    return Build(version, datetime.fromtimestamp(stamped.stat().st_mtime, UTC))


def name_product(server: Server) -> None:
    """Product URI and manufacturer for the endpoints' ApplicationDescription:
    before ``Server.start`` builds them."""
    server.product_uri = PRODUCT_URI
    server.manufacturer_name = MANUFACTURER


async def set_build_info(server: Server) -> Build:
    """Server/ServerStatus/BuildInfo, after ``Server.init`` (which writes asyncua's)."""
    info = build()
    name_product(server)
    await server.set_build_info(PRODUCT_URI, MANUFACTURER, PRODUCT_NAME, info.version,
                                info.version, info.date)
    return info


def set_capabilities(aspace: AddressSpace, limits: LimitsConfig) -> None:
    """Server/ServerCapabilities from ``limits`` (see the module's docstring)."""
    ids = ua.ObjectIds
    u16, u32 = ua.VariantType.UInt16, ua.VariantType.UInt32
    values: dict[int, ua.Variant] = {
        ids.Server_ServerCapabilities_ServerProfileArray:
            ua.Variant(list(PROFILES), ua.VariantType.String, is_array=True),
        ids.Server_ServerCapabilities_LocaleIdArray:
            ua.Variant(list(LOCALES), ua.VariantType.String, is_array=True),
        ids.Server_ServerCapabilities_MinSupportedSampleRate:
            ua.Variant(MIN_SAMPLE_INTERVAL_MS, ua.VariantType.Double),
        ids.Server_ServerCapabilities_MaxBrowseContinuationPoints: ua.Variant(0, u16),
        ids.Server_ServerCapabilities_MaxQueryContinuationPoints: ua.Variant(0, u16),
        ids.Server_ServerCapabilities_MaxArrayLength: ua.Variant(limits.max_message_size, u32),
        ids.Server_ServerCapabilities_MaxStringLength: ua.Variant(limits.max_message_size, u32),
        ids.Server_ServerCapabilities_MaxByteStringLength:
            ua.Variant(limits.max_message_size, u32),
        ids.Server_ServerCapabilities_MaxSessions: ua.Variant(limits.max_client_sessions, u32),
        ids.Server_ServerCapabilities_MaxSubscriptions: ua.Variant(limits.max_subscriptions, u32),
        ids.Server_ServerCapabilities_MaxMonitoredItems:
            ua.Variant(limits.max_monitored_items, u32),
        ids.Server_ServerCapabilities_MaxSubscriptionsPerSession:
            ua.Variant(limits.max_subscriptions_per_session, u32),
        ids.Server_ServerCapabilities_MaxMonitoredItemsPerSubscription:
            ua.Variant(limits.max_monitored_items_per_subscription, u32),
        ids.Server_ServerCapabilities_MaxMonitoredItemsQueueSize:
            ua.Variant(limits.max_monitored_item_queue_size, u32),
        ids.Server_ServerCapabilities_MaxHistoryContinuationPoints:
            ua.Variant(limits.max_history_continuation_points, u16),
        ids.Server_ServerCapabilities_SoftwareCertificates:
            ua.Variant([], ua.VariantType.ExtensionObject, is_array=True),
        # an event filter's clauses: bounded by what one message carries alone
        ids.Server_ServerCapabilities_MaxSelectClauseParameters: ua.Variant(0, u32),
        ids.Server_ServerCapabilities_MaxWhereClauseParameters: ua.Variant(0, u32),
    }
    for name in operations.LIMITS:  # enforced by the guard (security/operations.py)
        values[getattr(ids, f"Server_ServerCapabilities_OperationLimits_{name}")] = \
            ua.Variant(limits.max_nodes_per_request, u32)
    now = datetime.now(UTC)
    for ident, variant in values.items():
        nodeid = ua.NodeId(ident)
        if nodeid in aspace:  # (a node this nodeset does not have stays out)
            aspace[nodeid].attributes[ua.AttributeIds.Value] = AttributeValue(
                ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now))
    for ident in UNSERVED:
        _remove(aspace, ua.NodeId(ident))


#: optional standard nodes under ServerCapabilities that would only read null or
#: claim what is not served: the conformance units (none claimed), Part 18's RoleSet
#: (our roles are viewer, operator and admin: Security in the README) and the limits
#: of HistoryUpdate (not served)
UNSERVED = (
    ua.ObjectIds.Server_ServerCapabilities_ConformanceUnits,
    ua.ObjectIds.Server_ServerCapabilities_RoleSet,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryUpdateData,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryUpdateEvents,
)
_CHILDREN = (ua.NodeId(ua.ObjectIds.HasComponent), ua.NodeId(ua.ObjectIds.HasProperty))


def _remove(aspace: AddressSpace, root: ua.NodeId) -> None:
    """``root``, the instances below it (components and properties) and the
    references to it from its parent."""
    doomed: set[ua.NodeId] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node in doomed or node not in aspace:
            continue
        doomed.add(node)
        stack.extend(ref.NodeId for ref in aspace[node].references
                     if ref.IsForward and ref.ReferenceTypeId in _CHILDREN)
    if root not in doomed:
        return  # (not in this nodeset, or removed already)
    parents = {ref.NodeId for ref in aspace[root].references if not ref.IsForward}
    for parent in (p for p in parents if p in aspace):
        references = aspace[parent].references
        references[:] = [ref for ref in references if ref.NodeId != root]
    for node in doomed:
        del aspace[node]
