"""The ``twin-server`` command as a user runs it: check, run, signals, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asyncua import Client, ua

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.toml"
CLI = [sys.executable, "-m", "twin_server"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd or ROOT, check=False)


class TestCheck:
    def test_demo_is_valid(self) -> None:
        """`check` accepts the demo config and exits 0."""
        result = run_cli("check", str(DEMO))
        assert result.returncode == 0, result.stderr
        assert "ok" in result.stdout

    def test_every_error_at_once(self, tmp_path: Path) -> None:
        """`check` prints every error with its file and key path and exits 2."""
        bad = tmp_path / "bad.toml"
        bad.write_text(
            '[twins.t.components.tank]\nmodel = "water_tank"\nparameters = { area = -1.0 }\n'
            '[twins.t.components.pump]\nmodel = "no_such_model"\n'
            '[sessions.s]\ntwin = "t"\nstep_size = -0.5\n'
        )
        result = run_cli("check", str(bad))
        assert result.returncode == 2
        err = result.stderr
        assert f"{bad}: twins.t.components.tank.parameters.area" in err
        assert f"{bad}: twins.t.components.pump.model" in err
        assert "no_such_model" in err
        assert f"{bad}: sessions.s.step_size" in err

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config that does not exist is named, with exit status 2."""
        result = run_cli("check", str(tmp_path / "nope.toml"))
        assert result.returncode == 2
        assert "nope.toml" in result.stderr


class TestHealth:
    def test_nothing_listening(self) -> None:
        """`health` against a port nobody serves exits 1 and says why."""
        result = run_cli("health", "opc.tcp://127.0.0.1:1/twin-server", "--timeout", "2")
        assert result.returncode == 1
        assert "cannot connect" in result.stderr


class TestRun:
    def test_bad_config_does_not_start(self, tmp_path: Path) -> None:
        """`run` with an invalid config exits 2 naming the problem, serving nothing."""
        bad = tmp_path / "bad.toml"
        bad.write_text('[sessions.s]\ntwin = "missing"\n')
        result = run_cli("run", str(bad))
        assert result.returncode == 2
        assert "sessions.s.twin" in result.stderr

    @pytest.mark.timeout(60)
    async def test_serves_demo_and_stops_on_sigterm(self, tmp_path: Path) -> None:
        """`run` serves the demo to a real client and exits 0 on SIGTERM."""
        # (this checkout's package, also where another one is installed: cwd is tmp_path)
        env = {**os.environ, "TWIN_SERVER_LOG_LEVEL": "info", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [*CLI, "run", str(DEMO), "--endpoint", "opc.tcp://127.0.0.1:0/twin-server",
             "--web-port", "0"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path, env=env,
        )
        try:
            endpoint = _wait_for_ready(proc)
            health = run_cli("health", endpoint)
            assert health.returncode == 0, health.stderr
            assert "Running, 2 sessions" in health.stdout
            async with Client(endpoint, timeout=10) as client:
                ns = await client.get_namespace_index("urn:twin-server")
                level = client.get_node(
                    ua.NodeId("Sessions.tank.Components.tank.Outputs.level", ns))
                count = client.get_node(ua.NodeId("Sessions.tank.StepCount", ns))
                first = await count.read_value()
                assert isinstance(await level.read_value(), float)
                deadline = time.monotonic() + 10
                while await count.read_value() == first:
                    assert time.monotonic() < deadline, "StepCount never moved"
                    await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()


def _wait_for_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Read the daemon's JSON log lines until `daemon_ready`; return its endpoint."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "daemon_ready":
            return str(event["endpoint"])
    raise AssertionError("daemon never became ready:\n" + "".join(seen))


class TestHistoryExport:
    async def test_csv_to_stdout(self, tmp_path: Path) -> None:
        """`history export` writes only CSV to stdout: a header and one row per sample."""
        from twin_server.history import HistoryStore

        db = tmp_path / "history.db"
        store = await HistoryStore.open(db)
        for k in range(5):
            store.record("tank/Components.tank.Outputs.level", 1_700_000_000.0 + k, 0.5 + k)
        await store.close()
        result = await asyncio.to_thread(
            run_cli, "history", "export", str(db), "--session", "tank",
            "--path", "Components.tank.Outputs.level",
            "--start", "2023-11-14T22:13:20Z", "--end", "1700000003.5")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "time,epoch_s,sim_time_s,Components.tank.Outputs.level"
        assert [line.split(",")[3] for line in lines[1:]] == ["0.5", "1.5", "2.5", "3.5"]
        assert "4 rows written" in result.stderr

    def test_missing_database(self, tmp_path: Path) -> None:
        """A database that does not exist is named, with exit status 2."""
        result = run_cli("history", "export", str(tmp_path / "none.db"), "--session", "s",
                         "--start", "0", "--end", "1")
        assert result.returncode == 2
        assert "none.db" in result.stderr

    def test_bad_time(self, tmp_path: Path) -> None:
        """A time that is neither ISO 8601 nor a number is refused by the parser."""
        result = run_cli("history", "export", str(tmp_path / "h.db"), "--session", "s",
                         "--start", "yesterday", "--end", "1")
        assert result.returncode == 2
        assert "not a time" in result.stderr
