"""The asyncua version check: twin-server's hooks into asyncua's internals run only
on the minor version they were tested with, unless the user asks otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncua
import pytest

from twin_server.opcua.patches import OVERRIDE, TESTED, UntestedAsyncua, check_asyncua, minor


class TestCheckAsyncua:
    def test_installed_version_is_the_tested_one(self) -> None:
        """The asyncua the project installs is the one its hooks were tested with."""
        assert minor(asyncua.__version__) == TESTED
        check_asyncua()

    @pytest.mark.parametrize("version", [
        pytest.param("2.2.0", id="newer minor"),
        pytest.param("3.0.1", id="newer major"),
        pytest.param("1.1.5", id="older"),
        pytest.param("dev", id="unparsable"),
    ])
    def test_other_versions_refused(self, version: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """Another version is refused with both versions and the way out named."""
        monkeypatch.delenv(OVERRIDE, raising=False)
        with pytest.raises(UntestedAsyncua) as refused:
            check_asyncua(version)
        message = str(refused.value)
        assert version in message and f"{TESTED[0]}.{TESTED[1]}" in message
        assert OVERRIDE in message

    def test_override_runs_anyway(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TWIN_SERVER_UNTESTED_ASYNCUA=1 lets another version run."""
        monkeypatch.setenv(OVERRIDE, "1")
        check_asyncua("2.9.0")

    def test_run_refuses_to_start(self, tmp_path: Path) -> None:
        """``twin-server run`` on an untested asyncua exits 1 with the message, no
        traceback, before binding anything."""
        config = Path(__file__).parents[2] / "configs" / "demo.toml"
        code = ("import asyncua, sys; asyncua.__version__ = '2.9.0'; "
                "from twin_server.cli import main; sys.exit(main())")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", code, "run", str(config)],
                              capture_output=True, text=True, timeout=60, env=env,
                              cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "asyncua 2.9.0 is installed" in done.stderr
        assert "not started" in done.stderr and "Traceback" not in done.stderr
