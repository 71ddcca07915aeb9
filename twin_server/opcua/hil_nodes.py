"""The ``HIL/<peer>`` nodes: each PLC link's health in our address space.

::

    Objects/TwinServer/HIL                              ns;s=HIL
      <peer>                                            ns;s=HIL.<peer>
        Connected (Boolean), State (String: connecting/connected/disconnected/backoff),
        LastError (String), ReconnectCount, WritesSent, ValuesReceived (UInt64),
        RoundTripLatency, PublishingInterval (as the PLC revised it),
        RequestedPublishingInterval (Double, ms), Endpoint, Session (String),
        LinkFault (String: freeze, delay or cut on the whole link, "" for none)
        InjectLinkFault, ClearLinkFault                 methods (``hil_methods``)
        Bindings/<binding>                              ns;s=HIL.<peer>.Bindings.<binding>
          Status (String: an OPC UA status code name; for a from_plc binding the
                  quality of the value its input holds), Error (String), Transfers,
          Clamped (UInt64), SamplingInterval (Double, ms, as the PLC revised it),
          LinkFault (String: the kind of link fault acting on it, "" for none)

The nodes are built with ``NodeBatch`` and fed like the session nodes: only
changed values, as prepared DataValues through ``write_attribute_value``, from
``HilMirror.statistics()`` snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from twin_server.hil.health import BindingStatistics, MirrorStatistics, PeerStatistics
from twin_server.opcua.hil_methods import HIL_METHODS
from twin_server.opcua.nodes import NodeBatch
from twin_server.opcua.units import engineering_units

HIL = "HIL"
_VALUE = ua.AttributeIds.Value
_UNSENT = object()

_S, _B, _U64, _D = (ua.VariantType.String, ua.VariantType.Boolean, ua.VariantType.UInt64,
                    ua.VariantType.Double)

#: (name, type, description, value from the peer's statistics)
PEER_VARIABLES: tuple[tuple[str, ua.VariantType, str, Callable[[PeerStatistics], Any]], ...] = (
    ("Connected", _B, "True while the link to the PLC is up", lambda p: p.connected),
    ("State", _S, "connecting, connected, disconnected or backoff", lambda p: str(p.state)),
    ("LastError", _S, "Why the link last failed (kept after recovery)", lambda p: p.last_error),
    ("ReconnectCount", _U64, "Links re-established after a loss", lambda p: p.reconnect_count),
    ("WritesSent", _U64, "Values the PLC accepted", lambda p: p.writes_sent),
    ("ValuesReceived", _U64, "Data changes from the PLC applied to the session",
     lambda p: p.values_received),
    ("RoundTripLatency", _D, "Round trip of the latest liveness read, in ms",
     lambda p: float(p.round_trip_latency)),
    ("PublishingInterval", _D, "The PLC's publishing interval for our subscription, in "
                               "ms, as the PLC revised it (0 until subscribed): a PLC "
                               "value reaches the twin within about this",
     lambda p: float(p.publishing_interval)),
    ("RequestedPublishingInterval", _D, "The publishing interval asked of the PLC, in ms "
                                        "(the session's publish period)",
     lambda p: float(p.requested_publishing_interval)),
    ("Endpoint", _S, "The PLC's endpoint URL", lambda p: p.endpoint),
    ("Session", _S, "The session this peer mirrors", lambda p: p.session),
    ("LinkFault", _S, "The link fault on the whole link now: freeze, delay or cut (\"\": "
                      "none; InjectLinkFault, ClearLinkFault)", lambda p: p.link_fault),
)
BINDING_VARIABLES: tuple[tuple[str, ua.VariantType, str,
                               Callable[[BindingStatistics], Any]], ...] = (
    ("Status", _S, "OPC UA status name; for a from_plc binding the quality of its input's "
                   "value (Good, UncertainLastUsableValue, UncertainSubstituteValue, "
                   "BadCommunicationError, ...)", lambda b: b.status),
    ("Error", _S, "What is wrong with the binding, in words", lambda b: b.error),
    ("Transfers", _U64, "Values sent to or applied from the PLC", lambda b: b.transfers),
    ("Clamped", _U64, "Of the values transferred, those clamped to fit the PLC node's type "
                      "(to_plc) or the input's range (from_plc)", lambda b: b.clamped),
    ("SamplingInterval", _D, "from_plc: the sampling interval of the PLC node, in ms, as "
                             "the PLC revised it (0 until monitored)",
     lambda b: float(b.sampling_interval)),
    ("LinkFault", _S, "The link fault acting on this binding now: freeze, delay or cut "
                      "(\"\": none)", lambda b: b.link_fault),
)
#: the variables given EngineeringUnits ms (and AnalogItemType)
_MS = frozenset({"RoundTripLatency", "PublishingInterval", "RequestedPublishingInterval",
                 "SamplingInterval"})


@dataclass(slots=True)
class HilNodes:
    """The NodeIds of the HIL subtree and the values last written to them."""

    root: ua.NodeId
    peers: list[tuple[str, list[ua.NodeId], list[tuple[str, list[ua.NodeId]]]]]
    sent: dict[ua.NodeId, Any] = field(default_factory=dict)
    #: each peer's method nodes, by peer and method name
    methods: dict[str, dict[str, ua.NodeId]] = field(default_factory=dict)

    async def publish(self, aspace: AddressSpace, stats: MirrorStatistics) -> int:
        """Write the values that changed since the last publish; return how many."""
        now = datetime.now(UTC)
        written = 0
        for (name, peer_ids, binding_ids), peer in zip(self.peers, stats.peers, strict=True):
            assert peer.name == name
            pairs = list(zip(peer_ids, PEER_VARIABLES, strict=True))
            bindings = {b.name: b for b in peer.bindings}
            for bname, ids in binding_ids:
                b = bindings[bname]
                pairs += [(nid, (spec[0], spec[1], spec[2], _bind(spec[3], b)))
                          for nid, spec in zip(ids, BINDING_VARIABLES, strict=True)]
            for nodeid, (_, vtype, _, get) in pairs:
                value = get(peer)
                if self.sent.get(nodeid, _UNSENT) != value:
                    await aspace.write_attribute_value(nodeid, _VALUE, ua.DataValue(
                        ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now))
                    self.sent[nodeid] = value
                    written += 1
        return written

    async def run(self, aspace: AddressSpace, statistics: Callable[[], MirrorStatistics],
                  period: float = 0.5) -> None:
        """Publish every ``period`` seconds until cancelled."""
        while True:
            await self.publish(aspace, statistics())
            await asyncio.sleep(period)


def _bind(get: Callable[[BindingStatistics], Any],
          binding: BindingStatistics) -> Callable[[PeerStatistics], Any]:
    return lambda _peer: get(binding)


def build_hil(batch: NodeBatch, parent: ua.NodeId, stats: MirrorStatistics) -> HilNodes:
    """``HIL`` below ``parent`` (the TwinServer object) with one object per peer.
    The values are those of ``stats``; ``HilNodes.publish`` keeps them current."""
    root = batch.folder(parent, HIL, HIL, "Hardware-in-the-loop links to PLCs")
    peers = []
    methods: dict[str, dict[str, ua.NodeId]] = {}
    ms = engineering_units("ms")
    for peer in stats.peers:
        base = f"{HIL}.{peer.name}"
        node = batch.object(root, base, peer.name,
                            f"Link to {peer.endpoint} for session {peer.session}")
        ids = [batch.variable(node, f"{base}.{name}", name, get(peer), vtype,
                              description=desc, analog=name in _MS,
                              unit=ms if name in _MS else None)
               for name, vtype, desc, get in PEER_VARIABLES]
        methods[peer.name] = {
            m.name: batch.method(node, f"{base}.{m.name}", m.name, m.description, m.inputs,
                                 m.outputs)
            for m in HIL_METHODS}
        folder = batch.folder(node, f"{base}.Bindings", "Bindings",
                              "Each binding's status (for from_plc: its input's quality)")
        binding_ids = []
        for b in peer.bindings:
            bbase = f"{base}.Bindings.{b.name}"
            bnode = batch.object(folder, bbase, b.name,
                                 f"{b.variable} {'->' if b.direction == 'to_plc' else '<-'} "
                                 f"{b.node}")
            binding_ids.append((b.name, [
                batch.variable(bnode, f"{bbase}.{name}", name, get(b), vtype, description=desc,
                               analog=name in _MS, unit=ms if name in _MS else None)
                for name, vtype, desc, get in BINDING_VARIABLES]))
        peers.append((peer.name, ids, binding_ids))
    return HilNodes(root, peers, methods=methods)
