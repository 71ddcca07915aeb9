"""The example configs say what the security issue promises."""

from __future__ import annotations

from pathlib import Path

from twin_server.config.schema import ServerConfig
from twin_server.runtime.compile import load_config

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


class TestHealthAgainstSecureEndpoints:
    async def test_secure_only_server_is_healthy(self, tmp_path: Path) -> None:
        """`health` reports a server with only encrypted endpoints as answering."""
        from twin_server.health import check
        from twin_server.opcua.server import OpcUaServer

        server = OpcUaServer(ServerConfig(endpoint="opc.tcp://127.0.0.1:0/twin-server",
                                          state_dir=str(tmp_path)))
        await server.start()
        try:
            result = await check(server.endpoint_url, timeout=5)
        finally:
            await server.stop()
        assert result.ok, result.message
        assert "secure endpoints" in result.message
