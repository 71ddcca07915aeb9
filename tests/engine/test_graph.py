"""The evaluation order and algebraic-loop detection (twin_server.engine.graph)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twin_server.engine.graph import CycleError, evaluation_order, find_cycles, topological_order


class TestTopologicalOrder:
    @pytest.mark.parametrize(
        ("nodes", "edges", "expected"),
        [
            pytest.param("abc", [], list("abc"), id="no-edges-keep-declaration-order"),
            pytest.param(
                "abc", [("c", "a")], ["b", "c", "a"], id="one-edge-moves-only-what-it-must"
            ),
            pytest.param("abcd", [("c", "a"), ("d", "b")], list("cadb"), id="ties-by-declaration"),
            pytest.param("ab", [("a", "b"), ("a", "b")], list("ab"), id="duplicate-edges"),
            pytest.param("", [], [], id="empty"),
        ],
    )
    def test_order(self, nodes: str, edges: list[tuple[str, str]], expected: list[str]) -> None:
        """Every node comes after its predecessors; ties go to the earlier declared."""
        assert topological_order(list(nodes), edges) == expected

    def test_long_chain(self) -> None:
        """A chain of 5000 nodes declared backwards is ordered without recursion limits."""
        nodes = [f"n{i}" for i in range(5000)]
        edges = [(nodes[i + 1], nodes[i]) for i in range(4999)]
        assert topological_order(nodes, edges) == nodes[::-1]

    def test_cycle_raises_with_path(self) -> None:
        """A cycle raises CycleError whose cycle starts at its first-declared node."""
        with pytest.raises(CycleError) as info:
            topological_order(list("xabc"), [("b", "c"), ("c", "a"), ("a", "b")])
        assert info.value.cycles == (("a", "b", "c"),)
        assert str(info.value) == "cycle: a -> b -> c -> a"

    def test_undeclared_node(self) -> None:
        """An edge naming an undeclared node is a programming error (ValueError)."""
        with pytest.raises(ValueError, match="undeclared"):
            topological_order(["a"], [("a", "b")])


class TestFindCycles:
    @pytest.mark.parametrize(
        ("edges", "expected"),
        [
            pytest.param([("a", "a")], [("a",)], id="self-loop"),
            pytest.param([("a", "b"), ("b", "a")], [("a", "b")], id="two"),
            pytest.param(
                [("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")],
                [("a", "b"), ("c", "d")],
                id="two-separate-loops-both-reported",
            ),
            pytest.param(
                [("a", "b"), ("b", "c"), ("c", "a"), ("b", "a")],
                [("a", "b")],
                id="shortest-cycle-through-first-node",
            ),
            pytest.param([("a", "b"), ("b", "c")], [], id="acyclic"),
        ],
    )
    def test_cycles(self, edges: list[tuple[str, str]], expected: list[tuple[str, ...]]) -> None:
        """One cycle per strongly connected component, in declaration order."""
        assert find_cycles(list("abcd"), edges) == expected


class TestEvaluationOrder:
    def test_loop_through_state_is_fine(self) -> None:
        """A loop through a component without feedthrough orders; the edge into it is ignored."""
        # tank (state) -> pid (feedthrough) -> tank
        order = evaluation_order(["pid", "tank"], [("tank", "pid"), ("pid", "tank")], {"pid"})
        assert order == ["tank", "pid"]

    def test_feedthrough_loop_is_reported(self) -> None:
        """A loop made only of feedthrough components raises CycleError."""
        with pytest.raises(CycleError) as info:
            evaluation_order(["a", "b"], [("a", "b"), ("b", "a")], {"a", "b"})
        assert info.value.cycles == (("a", "b"),)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, int]], set[int]]:
    """A random DAG over nodes declared in a random order, with random feedthrough."""
    count = draw(st.integers(1, 25))
    rank = draw(st.permutations(range(count)))  # a hidden order the edges respect
    pairs = [(i, j) for i in range(count) for j in range(count) if rank[i] < rank[j]]
    edges = draw(st.lists(st.sampled_from(pairs), max_size=60)) if pairs else []
    feedthrough = draw(st.sets(st.integers(0, count - 1)))
    return list(range(count)), edges, feedthrough


class TestProperties:
    @given(dags())
    def test_feedthrough_edges_go_forward(
        self, graph: tuple[list[int], list[tuple[int, int]], set[int]]
    ) -> None:
        """For any DAG, every edge into a feedthrough node goes forward in the order."""
        nodes, edges, feedthrough = graph
        order = evaluation_order(nodes, edges, feedthrough)
        assert sorted(order) == nodes
        where = {n: i for i, n in enumerate(order)}
        for source, target in edges:
            if target in feedthrough:
                assert where[source] < where[target]

    @given(dags(), st.randoms(use_true_random=False))
    def test_order_is_stable(
        self, graph: tuple[list[int], list[tuple[int, int]], set[int]], rnd: object
    ) -> None:
        """The order depends on the nodes' declaration, never on the order edges are listed."""
        nodes, edges, feedthrough = graph
        shuffled = list(edges)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        assert evaluation_order(nodes, edges, feedthrough) == evaluation_order(
            nodes, shuffled, feedthrough
        )

    @given(dags(), st.data())
    def test_feedthrough_cycle_always_reported(
        self, graph: tuple[list[int], list[tuple[int, int]], set[int]], data: st.DataObject
    ) -> None:
        """Adding a cycle of feedthrough nodes to any graph is always reported, as a real cycle."""
        nodes, edges, feedthrough = graph
        loop = data.draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=6, unique=True))
        edges = edges + list(zip(loop, loop[1:] + loop[:1], strict=True))
        feedthrough = feedthrough | set(loop)
        with pytest.raises(CycleError) as info:
            evaluation_order(nodes, edges, feedthrough)
        edge_set = {(s, t) for s, t in edges if t in feedthrough}
        assert info.value.cycles
        for cycle in info.value.cycles:
            assert cycle[0] == min(cycle)  # starts at its first-declared node
            assert len(set(cycle)) == len(cycle)  # simple
            for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
                assert (a, b) in edge_set
