"""Compiling a twin: models resolved, values coerced and completed, the graph checked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.config.tiny_models import Gain, Lag, Source, resolve
from twin_server.config.schema import TwinConfig
from twin_server.engine.twin import Connection, TwinDefinition, compile_twin
from twin_server.errors import ConfigErrors


def twin(components: dict[str, Any], connections: list[str] | None = None) -> TwinConfig:
    body: dict[str, Any] = {
        "components": {n: c if isinstance(c, dict) else {"model": c} for n, c in components.items()}
    }
    if connections is not None:
        body["connections"] = connections
    return TwinConfig.model_validate(body)


def errors_of(config: TwinConfig) -> list[tuple[str, str]]:
    with pytest.raises(ConfigErrors) as info:
        compile_twin("t", config, resolve=resolve)
    return [(e.path, e.message) for e in info.value.exceptions]


class TestValid:
    def test_multi_component_twin(self) -> None:
        """A valid twin compiles, components in evaluation order, defaults filled in."""
        config = twin(
            {
                "fb": "gain",
                "plant": {"model": "lag", "parameters": {"tau": 2}, "initial": {"x": 1}},
                "src": {"model": "source", "parameters": {"level": 4}},
                "sum": "adder",
            },
            ["src.y -> sum.a", "plant.y -> fb.u", "fb.y -> sum.b", "sum.y -> plant.u"],
        )
        result = compile_twin("t", config, resolve=resolve)
        assert isinstance(result, TwinDefinition)
        assert [c.name for c in result.components] == ["plant", "fb", "src", "sum"]
        assert result.connections[0] == Connection("src", "y", "sum", "a")
        src = result.component("src")
        assert src.factory is Source
        assert dict(src.parameters) == {"level": 4.0, "count": 3, "enabled": True}
        assert isinstance(src.parameters["level"], float)
        plant = result.component("plant")
        assert plant.factory is Lag and not plant.direct_feedthrough
        assert dict(plant.parameters) == {"tau": 2.0}
        assert dict(plant.initial) == {"x": 1.0}
        assert dict(plant.inputs) == {"u": 0.0}
        assert dict(result.component("sum").inputs) == {"a": 0.0, "b": 0.5}
        assert result.component("fb").factory is Gain

    def test_same_config_same_order(self) -> None:
        """Compiling the same config twice gives the same order."""
        config = twin({"c": "gain", "b": "gain", "a": "source"}, ["a.y -> b.u", "b.y -> c.u"])
        first = compile_twin("t", config, resolve=resolve)
        assert [c.name for c in first.components] == ["a", "b", "c"]
        assert first == compile_twin("t", config, resolve=resolve)

    def test_options_declare_variables(self) -> None:
        """A model whose variables come from its options (an FMU) is checked against them."""
        config = twin({"p": {"model": "picky", "options": {"ports": "x,z"}, "inputs": {"z": 1}}})
        assert dict(compile_twin("t", config, resolve=resolve).component("p").inputs) == {
            "x": 0.0,
            "z": 1.0,
        }


class TestComponentErrors:
    @pytest.mark.parametrize(
        ("component", "path", "message"),
        [
            pytest.param(
                {"model": "gian"},
                "twins.t.components.c.model",
                "unknown model 'gian' (known models: adder, gain, lag, picky, source, switch)",
                id="unknown-model",
            ),
            pytest.param(
                {"model": "source", "parameters": {"levle": 1}},
                "twins.t.components.c.parameters.levle",
                "unknown parameter 'levle' of model 'source' "
                "(its parameters: level, count, enabled); did you mean 'level'?",
                id="unknown-parameter",
            ),
            pytest.param(
                {"model": "lag", "parameters": {"u": 1}},
                "twins.t.components.c.parameters.u",
                "unknown parameter 'u' of model 'lag' (its parameters: tau); 'u' is an input "
                "(set it under inputs)",
                id="parameter-that-is-an-input",
            ),
            pytest.param(
                {"model": "lag", "initial": {"y": 1}},
                "twins.t.components.c.initial.y",
                "unknown state 'y' of model 'lag' (its states: x); 'y' is an output, which the "
                "config does not set",
                id="initial-that-is-an-output",
            ),
            pytest.param(
                {"model": "gain", "inputs": {"v": 1}},
                "twins.t.components.c.inputs.v",
                "unknown input 'v' of model 'gain' (its inputs: u)",
                id="unknown-input",
            ),
            pytest.param(
                {"model": "source", "parameters": {"level": 11}},
                "twins.t.components.c.parameters.level",
                "parameter 'level' must be within [0, 10] m (got 11.0)",
                id="out-of-range",
            ),
            pytest.param(
                {"model": "source", "parameters": {"level": "high"}},
                "twins.t.components.c.parameters.level",
                "parameter 'level' takes a Double (got str 'high')",
                id="wrong-type",
            ),
            pytest.param(
                {"model": "source", "parameters": {"count": 2.5}},
                "twins.t.components.c.parameters.count",
                "parameter 'count' takes an Int32 (got non-integral 2.5)",
                id="int-not-integral",
            ),
            pytest.param(
                {"model": "source", "parameters": {"enabled": 1}},
                "twins.t.components.c.parameters.enabled",
                "parameter 'enabled' takes a Boolean (got int 1)",
                id="bool-from-int",
            ),
            pytest.param(
                {"model": "lag", "initial": {"x": -200}},
                "twins.t.components.c.initial.x",
                "state 'x' must be within [-100, 100] (got -200.0)",
                id="initial-out-of-range",
            ),
            pytest.param(
                {"model": "picky"},
                "twins.t.components.c.options",
                "model 'picky' rejected its options: option 'ports' is required",
                id="bad-options",
            ),
            pytest.param(
                {"model": "picky", "options": {"ports": ""}},
                "twins.t.components.c.options.ports",
                "must name at least one port",
                id="options-config-error-keeps-its-path",
            ),
        ],
    )
    def test_error(self, component: dict[str, Any], path: str, message: str) -> None:
        """Each problem in a component is reported at its key path with the value."""
        assert errors_of(twin({"c": component})) == [(path, message)]

    def test_all_reported_at_once(self) -> None:
        """Every bad value of every component is reported in one ConfigErrors."""
        config = twin(
            {
                "a": {"model": "source", "parameters": {"level": -1, "count": "x", "nope": 1}},
                "b": {"model": "nope"},
                "c": {"model": "lag", "parameters": {"tau": 0}},
            }
        )
        assert [p for p, _ in errors_of(config)] == [
            "twins.t.components.a.parameters.level",
            "twins.t.components.a.parameters.count",
            "twins.t.components.a.parameters.nope",
            "twins.t.components.b.model",
            "twins.t.components.c.parameters.tau",
        ]

    def test_prefix(self) -> None:
        """``prefix`` replaces the ``twins.<name>`` start of every key path."""
        with pytest.raises(ConfigErrors) as info:
            compile_twin("t", twin({"c": "nope"}), resolve=resolve, prefix="")
        assert info.value.exceptions[0].path == "components.c.model"


class TestConnectionErrors:
    @pytest.mark.parametrize(
        ("connections", "path", "message"),
        [
            pytest.param(
                ["src.y -> lagg.u"],
                "twins.t.connections[0]",
                "unknown component 'lagg' in 'src.y -> lagg.u' (components: src, g, lag, sw); "
                "did you mean 'lag'?",
                id="unknown-target-component",
            ),
            pytest.param(
                ["src.z -> g.u"],
                "twins.t.connections[0]",
                "component 'src' (source) has no output 'z' in 'src.z -> g.u' (its outputs: y)",
                id="unknown-source-port",
            ),
            pytest.param(
                ["src.y -> g.uu"],
                "twins.t.connections[0]",
                "component 'g' (gain) has no input 'uu' in 'src.y -> g.uu' (its inputs: u); "
                "did you mean 'u'?",
                id="unknown-target-port",
            ),
            pytest.param(
                ["g.u -> lag.u"],
                "twins.t.connections[0]",
                "g.u is an input, not an output, in 'g.u -> lag.u': a connection goes from an "
                "output to an input (g's outputs: y)",
                id="source-is-an-input",
            ),
            pytest.param(
                ["src.y -> g.y"],
                "twins.t.connections[0]",
                "g.y is an output, not an input, in 'src.y -> g.y': a connection goes from an "
                "output to an input (g's inputs: u)",
                id="target-is-an-output",
            ),
            pytest.param(
                ["sw.on -> g.u"],
                "twins.t.connections[0]",
                "cannot connect output sw.on (Boolean) to input g.u (Double)",
                id="type-mismatch",
            ),
            pytest.param(
                ["src.y -> g.u", "lag.y -> g.u"],
                "twins.t.connections[1]",
                "input g.u is connected twice: 'src.y -> g.u' (connections[0]) and 'lag.y -> g.u' "
                "(connections[1]); an input takes one connection",
                id="input-connected-twice",
            ),
            pytest.param(
                ["g.y -> g.u"],
                "twins.t.connections",
                "algebraic loop: g.y -> g.u (every component in it has direct feedthrough; put "
                "one with state, such as a first_order_lag, in the loop)",
                id="self-loop",
            ),
        ],
    )
    def test_error(self, connections: list[str], path: str, message: str) -> None:
        """Each bad connection is reported at its index with the connection's text."""
        components = {"src": "source", "g": "gain", "lag": "lag", "sw": "switch"}
        assert errors_of(twin(components, connections)) == [(path, message)]

    def test_connected_and_given_a_value(self) -> None:
        """An input both connected and given a value is an error at the value."""
        config = twin(
            {"src": "source", "g": {"model": "gain", "inputs": {"u": 1.0}}}, ["src.y -> g.u"]
        )
        assert errors_of(config) == [
            (
                "twins.t.components.g.inputs.u",
                "input 'u' is connected by 'src.y -> g.u' (connections[0]) and also given a value "
                "here, which would never be used; remove one of the two",
            )
        ]

    def test_algebraic_loop_names_the_cycle(self) -> None:
        """A loop of feedthrough components names every connection around it."""
        config = twin(
            {"a": "gain", "b": "adder", "src": "source"},
            ["src.y -> b.b", "a.y -> b.a", "b.y -> a.u"],
        )
        assert errors_of(config) == [
            (
                "twins.t.connections",
                "algebraic loop: a.y -> b.a -> b.y -> a.u (every component in it has direct "
                "feedthrough; put one with state, such as a first_order_lag, in the loop)",
            )
        ]

    def test_loop_through_state_compiles(self) -> None:
        """The same loop through a component without feedthrough compiles."""
        config = twin({"a": "gain", "b": "lag"}, ["a.y -> b.u", "b.y -> a.u"])
        assert [c.name for c in compile_twin("t", config, resolve=resolve).components] == ["b", "a"]

    def test_connection_to_unresolved_component_not_reported_twice(self) -> None:
        """A connection to a component whose model is unknown adds no second error."""
        config = twin({"a": "nope", "g": "gain"}, ["a.y -> g.u"])
        assert [p for p, _ in errors_of(config)] == ["twins.t.components.a.model"]


class TestOverrides:
    def test_coerced(self) -> None:
        """Overrides are coerced against the component's parameters."""
        compiled = compile_twin("t", twin({"s": "source"}), resolve=resolve)
        assert compiled.check_overrides({"s": {"level": 2, "count": 4.0}}) == {
            "s": {"level": 2.0, "count": 4}
        }

    def test_errors(self) -> None:
        """Unknown components and parameters and bad values are all reported."""
        compiled = compile_twin("t", twin({"s": "source"}), resolve=resolve)
        with pytest.raises(ConfigErrors) as info:
            compiled.check_overrides({"s": {"level": 20, "lvl": 1}, "x": {}}, prefix="p")
        assert [(e.path, e.message) for e in info.value.exceptions] == [
            ("p.s.level", "parameter 'level' must be within [0, 10] m (got 20.0)"),
            (
                "p.s.lvl",
                "unknown parameter 'lvl' of model 'source' (its parameters: level, count, "
                "enabled); did you mean 'level'?",
            ),
            ("p.x", "unknown component 'x' in twin 't' (its components: s)"),
        ]
