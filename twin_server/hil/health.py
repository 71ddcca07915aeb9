"""The health of the HIL mirror: link states and immutable statistics snapshots.

``HilMirror.statistics()`` returns a ``MirrorStatistics``; the ``HIL/<peer>`` nodes
of the address space (``opcua.hil_nodes``) show one ``PeerStatistics`` each.

Per-binding status is an OPC UA status code name. For a from_plc binding it is
the *quality* of the value the session's input holds, which the session itself
cannot carry:

    Good                       the latest value from the PLC
    GoodClamped                the latest value from the PLC, clamped into the input's
                               range (or, to_plc, into the PLC node's type)
    UncertainLastUsableValue   the link is down; the input keeps the last value
    UncertainSubstituteValue   the link is down; the input holds the configured fallback
    BadCommunicationError      the link is down and no value ever came (input not forced)
    BadWaitingForInitialData   no value came from the PLC yet (input not forced)

A from_plc input's node carries the same status with its value (a Bad one with a
null value, as OPC UA Part 4 7.7.1 wants), and so does its history: after a
reconnect it keeps UncertainLastUsableValue (or UncertainSubstituteValue) until
the PLC's first value replaces it.

and for every binding, one that cannot work: BadNodeIdUnknown (no such node, or
a namespace URI the PLC does not have), BadNoMatch (a browse path leads nowhere),
BadNotWritable / BadNotReadable (AccessLevel or UserAccessLevel), BadTypeMismatch
(a DataType that is not a scalar a binding can carry, or a value that cannot be
cast), or the status the PLC answered a write with. ``error`` says it in words.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from twin_server.models.base import Value


class LinkState(enum.StrEnum):
    """Where a peer's connection stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # lost, or stopped; inputs are marked
    BACKOFF = "backoff"  # waiting before the next attempt


GOOD = "Good"
CLAMPED = "GoodClamped"
LAST_USABLE = "UncertainLastUsableValue"
SUBSTITUTE = "UncertainSubstituteValue"
COMMUNICATION_ERROR = "BadCommunicationError"
WAITING = "BadWaitingForInitialData"


@dataclass(frozen=True, slots=True)
class BindingStatistics:
    """One binding as it stands."""

    name: str
    variable: str  # "tank.level"
    direction: str  # "to_plc" | "from_plc"
    node: str  # the resolved NodeId (``ns=2;s=Level``), else as configured
    datatype: str  # the PLC node's VariantType name, "" until resolved
    status: str  # an OPC UA status code name (see the module docstring)
    error: str  # what went wrong, in words ("" when fine)
    value: Value | None  # last value sent (to_plc) or applied (from_plc)
    transfers: int  # values sent or applied
    clamped: int  # of which had to be clamped to fit the target type or range
    sampling_interval: float = 0.0  # ms, from_plc: as the PLC revised it (0: not monitored)
    link_fault: str = ""  # the kind of link fault acting on it (``link_faults``), "" for none


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """One peer's link and counters."""

    name: str
    endpoint: str
    session: str
    state: LinkState
    last_error: str
    reconnect_count: int  # links re-established after a loss
    writes_sent: int  # values the PLC accepted
    write_requests: int  # Write service calls (batches within MaxNodesPerWrite)
    values_received: int  # data-change notifications applied to the session
    round_trip_latency: float  # ms: the latest liveness read (ServerStatus.CurrentTime)
    max_nodes_per_write: int  # the PLC's OperationLimits (0 = no limit)
    bindings: tuple[BindingStatistics, ...]
    #: ms: the subscription's publishing interval as the PLC revised it (0: none yet),
    #: and as asked for (the session's publish period)
    publishing_interval: float = 0.0
    requested_publishing_interval: float = 0.0
    link_fault: str = ""  # the kind of link fault on the whole link, "" for none

    @property
    def connected(self) -> bool:
        return self.state is LinkState.CONNECTED

    def binding(self, name: str) -> BindingStatistics:
        for b in self.bindings:
            if b.name == name:
                return b
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class MirrorStatistics:
    """Every peer, in configuration order."""

    peers: tuple[PeerStatistics, ...]

    def __iter__(self) -> Iterator[PeerStatistics]:
        return iter(self.peers)

    def peer(self, name: str) -> PeerStatistics:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)
