"""Config files: their schema (pydantic), reading, and every error at once.

The config describes; the runtime compiles (``runtime.compile``)::

    from twin_server.config import read_config
    described = read_config("configs/demo.toml")   # raises ConfigErrors only if unreadable
    described.config, described.errors             # the Config (None if invalid), the errors

    from twin_server.runtime.compile import load_config
    loaded = load_config("configs/demo.toml")      # raises ConfigErrors with every error
    loaded.twins["tank_level"]                     # a compiled TwinDefinition

Nothing here imports the engine or the models.
"""

from twin_server.config.loader import (
    ConfigDescription,
    TwinDescription,
    describe_config,
    read_config,
    read_twin,
)
from twin_server.config.schema import (
    ComponentConfig,
    Config,
    ConnectionSpec,
    ServerConfig,
    SessionConfig,
    TwinConfig,
)

__all__ = [
    "ComponentConfig",
    "Config",
    "ConfigDescription",
    "ConnectionSpec",
    "ServerConfig",
    "SessionConfig",
    "TwinConfig",
    "TwinDescription",
    "describe_config",
    "read_config",
    "read_twin",
]
