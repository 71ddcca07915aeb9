"""Small models for config and compile tests, independent of the real library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twin_server.errors import ConfigError
from twin_server.models.base import DataType, Kind, Model, Value, Variable


class _Base(Model):
    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {v.name: v.default for v in self.variables_of(Kind.OUTPUT)}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        return {v.name: v.default for v in self.variables_of(Kind.OUTPUT)}


class Source(_Base):
    """No inputs; output y."""

    direct_feedthrough = False
    variables = (
        Variable("y", Kind.OUTPUT),
        Variable("level", Kind.PARAMETER, unit="m", low=0.0, high=10.0, default=1.0),
        Variable("count", Kind.PARAMETER, datatype=DataType.INT32, default=3),
        Variable("enabled", Kind.PARAMETER, datatype=DataType.BOOLEAN, default=True),
    )


class Gain(_Base):
    """y = k * u, direct feedthrough."""

    variables = (
        Variable("u", Kind.INPUT),
        Variable("y", Kind.OUTPUT),
        Variable("k", Kind.PARAMETER, default=2.0),
    )


class Adder(_Base):
    """y = a + b, direct feedthrough."""

    variables = (
        Variable("a", Kind.INPUT),
        Variable("b", Kind.INPUT, default=0.5),
        Variable("y", Kind.OUTPUT),
    )


class Lag(_Base):
    """A first-order lag: its output depends only on its state (no feedthrough)."""

    direct_feedthrough = False
    variables = (
        Variable("u", Kind.INPUT),
        Variable("y", Kind.OUTPUT),
        Variable("x", Kind.STATE, low=-100.0, high=100.0),
        Variable("tau", Kind.PARAMETER, unit="s", low=1e-3, default=1.0),
    )


class Switch(_Base):
    """A Boolean output, for type checks on connections."""

    direct_feedthrough = False
    variables = (Variable("on", Kind.OUTPUT, datatype=DataType.BOOLEAN, default=False),)


class Picky(_Base):
    """Declares its variables from its options, like an FMU."""

    @classmethod
    def declare(cls, options: Mapping[str, Any]) -> tuple[Variable, ...]:
        if "ports" not in options:
            raise ValueError("option 'ports' is required")
        if not options["ports"]:
            raise ConfigError("must name at least one port", path="options.ports")
        return tuple(Variable(str(p), Kind.INPUT) for p in str(options["ports"]).split(","))


MODELS: dict[str, type[Model]] = {
    "source": Source,
    "gain": Gain,
    "adder": Adder,
    "lag": Lag,
    "switch": Switch,
    "picky": Picky,
}


def resolve(name: str) -> type[Model]:
    """Like ``registry.get`` over the tiny models."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r} (known models: {', '.join(sorted(MODELS))})"
        ) from None
