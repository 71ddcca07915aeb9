"""Find models by name through the ``twin_server.models`` entry-point group.

Our own models register there too (see ``pyproject.toml``), so a user's package
adds a model exactly as we do::

    # the user's pyproject.toml
    [project.entry-points."twin_server.models"]
    conveyor = "my_plant.models:Conveyor"

The first package to claim a name wins; a clash is reported, not silently shadowed.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

import structlog

from twin_server.errors import ConfigError
from twin_server.models.base import Model

GROUP = "twin_server.models"
log = structlog.get_logger(__name__)


@functools.cache
def available() -> dict[str, type[Model]]:
    """Every model name the installed packages offer, loaded once."""
    models: dict[str, type[Model]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.dist is None, e.name)):
        if ep.name in models:
            log.warning("model_name_clash", model=ep.name, ignored=ep.value)
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in must not take the daemon down
            log.error("model_plugin_failed", model=ep.name, target=ep.value, error=str(exc))
            continue
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            log.error("model_plugin_not_a_model", model=ep.name, target=ep.value)
            continue
        models[ep.name] = cls
    return models


def get(name: str) -> type[Model]:
    """The model class registered as ``name``, or a ConfigError listing the known ones."""
    models = available()
    try:
        return models[name]
    except KeyError:
        known = ", ".join(sorted(models)) or "none installed"
        raise ConfigError(f"unknown model {name!r} (known models: {known})") from None
