"""EURanges that the parameters set, following them as they change.

A model bounds some variables by its parameters (``Model.ranges``: a tank's level
lies within 0..height, a PID's output within output_min..output_max). The tree
builds those variables as AnalogItemType with that EURange; ``RangeFollower``
rewrites the EURange properties whenever the publisher sees one of the
component's parameters change (a write, SetParameters, Reset, Restore), so that
what a client reads, and a PercentDeadband is computed over, is the range in force.
Variables a model does not bound keep their declared ``low``..``high``; where
either end is open they have no EURange at all (an infinite one tells a client
nothing and breaks a deadband or a trend's scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from twin_server.engine.session import VarKey
from twin_server.engine.twin import ComponentDefinition, TwinDefinition
from twin_server.models.base import Kind, Variable
from twin_server.opcua.nodes import eu_range, finite_range
from twin_server.opcua.patches.fastpath import data_value

Bounds = tuple[float, float]


def _bounds(comp: ComponentDefinition, parameters: dict[str, Any]) -> dict[str, Bounds]:
    if not parameters:
        return {}
    return {name: bounds for name, bounds in comp.factory.ranges(parameters).items()
            if finite_range(*bounds)}


def parameter_ranges(twin: TwinDefinition, variables: Sequence[tuple[VarKey, Variable]],
                     values: Sequence[Any]) -> dict[tuple[str, Kind, str], Bounds]:
    """The ranges the parameters' ``values`` set (``Model.ranges``), by component,
    kind and name of each variable they bound (never a parameter's own)."""
    parameters: dict[str, dict[str, Any]] = {}
    for (key, _), value in zip(variables, values, strict=True):
        if key.kind is Kind.PARAMETER:
            parameters.setdefault(key.component, {})[key.name] = value
    found: dict[tuple[str, Kind, str], Bounds] = {}
    for comp in twin.components:
        bounds = _bounds(comp, parameters.get(comp.name, {}))
        for var in comp.declared():
            if var.kind is not Kind.PARAMETER and var.name in bounds:
                found[(comp.name, var.kind, var.name)] = bounds[var.name]
    return found


class RangeFollower:
    """Which parameters bound other variables of a served session, and the EURange
    writes that a change of one of them calls for; ``values`` are those the nodes
    were built with (``Frame.values``)."""

    def __init__(self, twin: TwinDefinition,
                 variables: Sequence[tuple[VarKey, Variable, ua.NodeId]],
                 values: Sequence[Any]) -> None:
        index = {key: i for i, (key, _, _) in enumerate(variables)}
        self._components: dict[str, tuple[ComponentDefinition, dict[str, int],
                                          list[tuple[str, ua.NodeId]]]] = {}
        self._sent: dict[ua.NodeId, Bounds] = {}
        for comp in twin.components:
            if not _bounds(comp, dict(comp.parameters)):
                continue  # its model sets no range
            parameters = {key.name: i for key, i in index.items()
                          if key.component == comp.name and key.kind is Kind.PARAMETER}
            bounded = [(key.name, _eu_range_id(nodeid))
                       for key, _, nodeid in variables
                       if key.component == comp.name and key.kind is not Kind.PARAMETER]
            self._components[comp.name] = (comp, parameters, bounded)
        for name in self._components:
            self._sent.update(self._bounds(name, values))
        self.watched = frozenset(i for _, parameters, _ in self._components.values()
                                 for i in parameters.values())

    def changed(self, key: VarKey, values: Sequence[Any]
                ) -> list[tuple[ua.NodeId, ua.DataValue]]:
        """The EURange writes after parameter ``key`` changed; ``values`` the frame's."""
        now = datetime.now(UTC)
        writes = []
        for nodeid, new in self._bounds(key.component, values).items():
            if self._sent.get(nodeid) != new:
                self._sent[nodeid] = new
                writes.append((nodeid, data_value(eu_range(*new),
                                                  ua.VariantType.ExtensionObject, now)))
        return writes

    def _bounds(self, component: str, values: Sequence[Any]) -> dict[ua.NodeId, Bounds]:
        """The EURange of each variable of ``component`` that its parameters bound,
        by the EURange's NodeId, from a frame's ``values``."""
        entry = self._components.get(component)
        if entry is None:
            return {}
        comp, parameters, bounded = entry
        bounds = _bounds(comp, {name: values[i] for name, i in parameters.items()})
        return {nodeid: bounds[name] for name, nodeid in bounded if name in bounds}


def _eu_range_id(variable: ua.NodeId) -> ua.NodeId:
    return ua.NodeId(f"{variable.Identifier}.EURange", variable.NamespaceIndex)
