"""Helpers for the model tests: build a model with its declared defaults, step it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twin_server.models.base import Kind, Model, Value

#: the built-in model names and the classes pyproject.toml registers them as
BUILTIN = {
    "water_tank": "twin_server.models.water_tank.WaterTank",
    "room_temperature": "twin_server.models.room_temperature.RoomTemperature",
    "pid": "twin_server.models.pid.PID",
    "constant": "twin_server.models.sources.Constant",
    "step": "twin_server.models.sources.Step",
    "ramp": "twin_server.models.sources.Ramp",
    "sine": "twin_server.models.sources.Sine",
    "square": "twin_server.models.sources.Square",
    "gain": "twin_server.models.blocks.Gain",
    "sum": "twin_server.models.blocks.Sum",
    "first_order_lag": "twin_server.models.blocks.FirstOrderLag",
    "noisy_sensor": "twin_server.models.blocks.NoisySensor",
}


def defaults(cls: type[Model], kind: Kind) -> dict[str, Value]:
    """The declared defaults of ``cls``'s variables of one kind."""
    return {v.name: v.default for v in cls.declared(kind)}


def make(cls: type[Model], initial: Mapping[str, Value] | None = None, /,
         **parameters: Any) -> Model:
    """An instance of ``cls`` reset with its default parameters, overridden by ``parameters``."""
    model = cls()
    model.reset({**defaults(cls, Kind.PARAMETER), **parameters}, dict(initial or {}))
    return model


def inputs(cls: type[Model], **values: Any) -> dict[str, Value]:
    """A complete input mapping: declared defaults overridden by ``values``."""
    return {**defaults(cls, Kind.INPUT), **values}


def run(
    model: Model, dt: float, steps: int, start: int = 0, **values: Any
) -> list[dict[str, Value]]:
    """Step ``model`` ``steps`` times from tick ``start`` (t = k*dt) with inputs held."""
    held = inputs(type(model), **values)
    return [model.step(k * dt, dt, held) for k in range(start, start + steps)]
