"""Compiled twin definitions: a config's twin resolved against the model registry.

``compile_twin`` turns a ``TwinConfig`` into a ``TwinDefinition`` whose components
are in evaluation order, with every parameter filled in and coerced, or raises
``ConfigErrors`` naming every offender at once (unknown model, unknown parameter,
out-of-range value, unknown port, input connected twice, algebraic loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twin_server.models.base import Model, Value


@dataclass(frozen=True, slots=True)
class Connection:
    """An output of one component feeding an input of another."""

    source: str
    source_port: str
    target: str
    target_port: str

    def __str__(self) -> str:
        return f"{self.source}.{self.source_port} -> {self.target}.{self.target_port}"


@dataclass(frozen=True, slots=True)
class ComponentDefinition:
    """A component ready to instantiate: the model class and complete values."""

    name: str
    model: str
    factory: type[Model]
    parameters: Mapping[str, Value]
    initial: Mapping[str, Value] = field(default_factory=dict)
    inputs: Mapping[str, Value] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def instantiate(self) -> Model:
        return self.factory(self.options)


@dataclass(frozen=True, slots=True)
class TwinDefinition:
    """A validated twin: components in evaluation (topological) order."""

    name: str
    components: tuple[ComponentDefinition, ...]
    connections: tuple[Connection, ...] = ()
    description: str = ""

    def component(self, name: str) -> ComponentDefinition:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)
