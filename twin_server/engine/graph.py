"""The evaluation order of a twin's components, and the algebraic loops that forbid one.

Pure functions over plain nodes and edges; no models, no I/O. An edge ``(a, b)``
says "``a`` must be evaluated before ``b``". ``compile_twin`` passes only the
edges into direct-feedthrough components (DESIGN.md, stepping semantics): an
edge into a component whose outputs depend only on its state (a tank) does not
constrain the order, so a loop through such a component is fine, and a cycle
that remains is an algebraic loop.

The order is stable: among the components ready to run, the one declared first
goes first, so the same config always gives the same order (the address space
and snapshots list components in it). The *results* do not depend on how such
ties fall: the order only has to put each feedthrough component after what
feeds it, and ``engine.session`` reads every input of a component with state
before any component steps (the rule that cuts feedback loops, independent of
declaration order).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

N = TypeVar("N", bound=Hashable)


class CycleError(ValueError, Generic[N]):
    """The edges contain cycles; ``cycles`` holds one simple cycle per strongly
    connected component, each as the nodes in edge order (``[a, b]`` is a -> b -> a),
    starting from its earliest-declared node; cycles are ordered the same way."""

    def __init__(self, cycles: Sequence[Sequence[N]]) -> None:
        self.cycles: tuple[tuple[N, ...], ...] = tuple(tuple(c) for c in cycles)
        text = "; ".join(" -> ".join(map(str, (*c, c[0]))) for c in self.cycles)
        super().__init__(f"cycle: {text}")


def _index(
    nodes: Sequence[N], edges: Iterable[tuple[N, N]]
) -> tuple[dict[N, int], list[list[int]]]:
    """Node -> declaration index, and successor lists (deduplicated, in declaration order)."""
    position: dict[N, int] = {}
    for node in nodes:
        if node in position:
            raise ValueError(f"node {node!r} is declared twice")
        position[node] = len(position)
    successors: list[set[int]] = [set() for _ in position]
    for source, target in edges:
        try:
            successors[position[source]].add(position[target])
        except KeyError as exc:
            raise ValueError(f"edge ({source!r}, {target!r}) names an undeclared node") from exc
    return position, [sorted(s) for s in successors]


def find_cycles(nodes: Sequence[N], edges: Iterable[tuple[N, N]]) -> list[tuple[N, ...]]:
    """One simple cycle for each strongly connected component that has one (a
    self-loop counts), in declaration order; empty when the graph is acyclic."""
    position, successors = _index(nodes, edges)
    names = list(position)
    cycles = [
        tuple(names[i] for i in _cycle_through(component, successors))
        for component in _strongly_connected(successors)
        if len(component) > 1 or component[0] in successors[component[0]]
    ]
    return sorted(cycles, key=lambda c: position[c[0]])


def topological_order(nodes: Sequence[N], edges: Iterable[tuple[N, N]]) -> list[N]:
    """Every node, each after all its predecessors, ties broken by declaration order
    (Kahn's algorithm with a priority queue). Raises CycleError naming every cycle."""
    edges = list(edges)
    position, successors = _index(nodes, edges)
    names = list(position)
    indegree = [0] * len(names)
    for succ in successors:
        for j in succ:
            indegree[j] += 1
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order: list[N] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(names[i])
        for j in successors[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(names):
        raise CycleError(find_cycles(nodes, edges))
    return order


def evaluation_order(
    nodes: Sequence[N], edges: Iterable[tuple[N, N]], feedthrough: Collection[N]
) -> list[N]:
    """The order to step components in: ``edges`` are connections source -> target,
    and only those into a ``feedthrough`` node constrain it. Raises CycleError for
    algebraic loops (cycles made only of feedthrough nodes)."""
    return topological_order(nodes, [(s, t) for s, t in edges if t in feedthrough])


# -- internals ----------------------------------------------------------------------


def _strongly_connected(successors: list[list[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative (a long chain must not hit the recursion limit).
    Each component's nodes come sorted by declaration index."""
    count = len(successors)
    index = [-1] * count
    low = [0] * count
    on_stack = [False] * count
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in range(count):
        if index[root] != -1:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack[node] = True
            succ = successors[node]
            while child < len(succ):
                nxt = succ[child]
                child += 1
                if index[nxt] == -1:
                    work.append((node, child))
                    work.append((nxt, 0))
                    break
                if on_stack[nxt]:
                    low[node] = min(low[node], index[nxt])
            else:
                if low[node] == index[node]:
                    component: list[int] = []
                    while True:
                        member = stack.pop()
                        on_stack[member] = False
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return components


def _cycle_through(component: list[int], successors: list[list[int]]) -> list[int]:
    """The shortest cycle through the component's first-declared node (breadth-first,
    successors in declaration order, so the answer is deterministic)."""
    start = component[0]
    members = set(component)
    parent: dict[int, int] = {}
    frontier = [start]
    while frontier:
        following: list[int] = []
        for node in frontier:
            for nxt in successors[node]:
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if nxt in members and nxt not in parent:
                    parent[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError("a strongly connected component without a cycle")  # pragma: no cover
