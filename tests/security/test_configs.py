"""The example configs say what the security issue promises."""

from __future__ import annotations

from pathlib import Path

from twin_server.config.loader import load_config
from twin_server.config.schema import ServerConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class TestProductionConfig:
    def test_secure(self) -> None:
        """production.toml: no None endpoint, SignAndEncrypt only, anonymous read-only or
        off, bound to every interface, a users file."""
        server = load_config(CONFIGS / "production.toml").config.server
        assert "None" not in server.security.policies
        assert server.security.modes == ("SignAndEncrypt",)
        assert server.security.anonymous in ("viewer", "off")
        assert server.endpoint.startswith("opc.tcp://0.0.0.0:")
        assert server.security.users_file


class TestDefaults:
    def test_secure_by_default(self) -> None:
        """Without a [server.security] table: encrypted endpoints only, anonymous may
        only read."""
        security = ServerConfig().security  # type: ignore[call-arg]
        assert "None" not in security.policies
        assert security.anonymous == "viewer"
