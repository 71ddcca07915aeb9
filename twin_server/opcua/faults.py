"""Injected faults over OPC UA: the session's InjectFault, ClearFault and ClearFaults
methods, and its ``Faults`` folder with one object per active fault.

::

    Sessions/<session>/Faults                        ns;s=Sessions.<s>.Faults
      <id>                                           ns;s=Sessions.<s>.Faults.<id>
        Kind, Target, TargetNode, Parameters (JSON), Duration, Started,
        Remaining, FromConfig                        properties

The fault itself lives in the session (``engine.faults``): these nodes follow it.
The frame's ``faults`` counter moves whenever the set changes (a method call, a
duration that ran out in a tick, Reset, Restore); the publisher then calls
``FaultNodes.sync``, which asks the session for its faults and adds or deletes
objects; ``Remaining`` is rewritten with every publish while a fault has a
duration. The start and end of each fault are session events
(``fault_injected``, ``fault_cleared``), emitted from the session node, Sessions,
TwinServer and Server, and recorded in the event history as every session event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from twin_server.engine.faults import FaultKind, FaultState
from twin_server.errors import NotFound
from twin_server.opcua.nodes import NodeBatch
from twin_server.opcua.patches import monitoring
from twin_server.runtime.host import Frame, HostedSession

FOLDER = "Faults"
_VALUE = ua.AttributeIds.Value
#: Remaining of a fault without a duration
UNTIL_CLEARED = -1.0

_PROPERTIES: tuple[tuple[str, ua.VariantType, str], ...] = (
    ("Kind", ua.VariantType.String,
     f"What the fault does: {', '.join(k.value for k in FaultKind)}"),
    ("Target", ua.VariantType.String, "The variable it acts on: component.Inputs|Outputs.name"),
    ("TargetNode", ua.VariantType.NodeId, "The node of that variable"),
    ("Parameters", ua.VariantType.String, "Its parameters, a JSON object"),
    ("Duration", ua.VariantType.Double, "How long it acts, in simulated s; 0: until cleared"),
    ("Started", ua.VariantType.Double, "The simulated time it started at, in s"),
    ("Remaining", ua.VariantType.Double,
     f"Simulated s until it ends by itself; {UNTIL_CLEARED:g}: until cleared"),
    ("FromConfig", ua.VariantType.Boolean,
     "Defined in the config: Reset brings it back (ClearFault ends it until then)"),
)


class FaultNodes:
    """The ``Faults`` folder of one session and an object per active fault."""

    def __init__(self, aspace: AddressSpace, batch: Callable[[], NodeBatch],
                 session: HostedSession, root: ua.NodeId, all_nodes: list[ua.NodeId],
                 variable_node: Callable[[str], ua.NodeId],
                 delete_nodes: Callable[[ua.DeleteNodesParameters], Any]) -> None:
        """``root``: the session node; ``all_nodes``: the session's list of every node
        (the fault nodes join it, so that the session's removal deletes them);
        ``variable_node``: the NodeId of a ``component.Folder.name`` below the session;
        ``delete_nodes``: the server's DeleteNodes service."""
        self._aspace = aspace
        self._delete_nodes = delete_nodes
        self._batch = batch
        self.session = session
        self._all = all_nodes
        self._variable_node = variable_node
        path = f"{root.Identifier}.{FOLDER}"
        self._path = path
        builder = batch()
        self.folder = builder.folder(root, path, FOLDER, "The faults injected into the session "
                                     "now (InjectFault, the config); each start and end is an "
                                     "event")
        builder.commit(aspace)
        all_nodes.append(self.folder)
        #: fault id -> (its state when last synced, its nodes, parents first)
        self._shown: dict[str, tuple[FaultState, list[ua.NodeId]]] = {}
        self._timed = False

    async def sync(self) -> None:
        """Make the objects match the session's faults (the frame's counter moved)."""
        try:
            active = await self.session.faults()
        except NotFound:
            return  # deleted meanwhile
        if self.folder not in self._aspace:
            return
        wanted = {f.id: f for f in active}
        for fault_id in [i for i, (state, _) in self._shown.items()
                         if not _same(wanted.get(i), state)]:
            await self._delete(fault_id)
        for fault_id, state in wanted.items():
            if fault_id not in self._shown:
                self._add(state)
        self._timed = any(f.duration is not None for f in active)

    async def show(self, frame: Frame) -> None:
        """Rewrite Remaining for the frame's simulated time (faults with a duration)."""
        if not self._timed:
            return
        now = datetime.now(UTC)
        for state, nodes in self._shown.values():
            if state.duration is None:
                continue
            remaining = max(0.0, state.started + state.duration - frame.sim_time)
            await self._aspace.write_attribute_value(nodes[7], _VALUE, ua.DataValue(
                ua.Variant(remaining, ua.VariantType.Double),
                SourceTimestamp=now, ServerTimestamp=now))

    def _add(self, state: FaultState) -> None:
        batch = self._batch()
        path = f"{self._path}.{state.id}"
        what = f"{state.kind} on {state.target}"
        node = batch.object(self.folder, path, state.id, what)
        values: tuple[Any, ...] = (
            str(state.kind), state.target, self._variable_node(state.target),
            json.dumps(dict(state.parameters)), state.duration or 0.0, state.started,
            UNTIL_CLEARED if state.remaining is None else state.remaining, state.from_config)
        for (name, vtype, description), value in zip(_PROPERTIES, values, strict=True):
            batch.property(node, f"{path}.{name}", name, value, vtype, description=description)
        added = batch.commit(self._aspace)
        self._shown[state.id] = (state, added)
        self._all.extend(added)

    async def _delete(self, fault_id: str) -> None:
        _, nodes = self._shown.pop(fault_id)
        aspace = self._aspace
        await monitoring.detach(aspace, nodes)
        folder = aspace[self.folder]
        folder.references[:] = [r for r in folder.references if r.NodeId != nodes[0]]
        items = [ua.DeleteNodesItem(NodeId=n, DeleteTargetReferences=False)
                 for n in reversed(nodes)]
        self._delete_nodes(ua.DeleteNodesParameters(NodesToDelete=items))
        gone = set(nodes)
        self._all[:] = [n for n in self._all if n not in gone]


def _same(a: FaultState | None, b: FaultState) -> bool:
    """Whether ``a`` is the fault ``b`` showed (the same id may be a new fault)."""
    if a is None:
        return False
    return (a.target, a.kind, a.started, dict(a.parameters), a.duration) == (
        b.target, b.kind, b.started, dict(b.parameters), b.duration)
