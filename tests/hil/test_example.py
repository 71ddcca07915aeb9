"""configs/hil.toml, the HIL example: it passes ``check`` and closes the loop with the
soft PLC the tests use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.hil.conftest import ROOT, SoftPlc, wait_for
from twin_server.engine.session import VarKey
from twin_server.models.base import Kind
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon

EXAMPLE = ROOT / "configs" / "hil.toml"
LEVEL = VarKey("tank", Kind.OUTPUT, "level")


class TestHilExample:
    def test_it_passes_check(self, capsys: pytest.CaptureFixture[str]) -> None:
        """'twin-server check configs/hil.toml' passes without a warning."""
        from twin_server.cli import main

        assert main(["check", str(EXAMPLE)]) == 0
        captured = capsys.readouterr()
        assert "ok (1 twins, 1 sessions)" in captured.out and "warning" not in captured.err

    async def test_it_runs_against_the_soft_plc(self, own_plc: SoftPlc, tmp_path: Path) -> None:
        """The example, pointed at a soft PLC (on another port) and a free endpoint,
        closes the loop: the PLC's valve command lifts the level towards 1.0 m."""
        text = (EXAMPLE.read_text()
                .replace("opc.tcp://127.0.0.1:4841/plc", own_plc.endpoint)
                .replace("opc.tcp://127.0.0.1:4840/twin-server",
                         "opc.tcp://127.0.0.1:0/twin-server")
                .replace("realtime_factor = 1.0", "realtime_factor = 10.0")
                .replace('[server]\n', f'[server]\nstate_dir = "{tmp_path}"\n', 1))
        daemon = Daemon(parse_config(text), endpoint="opc.tcp://127.0.0.1:0/twin-server")
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 30)
            assert daemon.hil is not None
            mirror = daemon.hil
            await wait_for(lambda: mirror.statistics().peer("plc")
                           .binding("valve").status == "Good", 15)
            session = daemon.sessions["plant"].session
            await wait_for(lambda: float(session.values()[LEVEL]) > 0.8, 20)
            stats = mirror.statistics().peer("plc")
            assert stats.binding("level").status == "Good"
            assert stats.binding("overflow").status == "Good"
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 30)
