"""Config files: their schema (pydantic), loading, and every error at once.

from twin_server.config import load_config
loaded = load_config("configs/demo.toml")   # raises ConfigErrors
loaded.twins["tank_level"]                  # a compiled TwinDefinition
"""

from twin_server.config.loader import LoadedConfig, load_config, parse_config, parse_twin
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
    "ConnectionSpec",
    "LoadedConfig",
    "ServerConfig",
    "SessionConfig",
    "TwinConfig",
    "load_config",
    "parse_config",
    "parse_twin",
]
