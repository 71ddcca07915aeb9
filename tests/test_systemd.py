"""The notify protocol against a real datagram socket standing in for systemd."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from twin_server.systemd import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


class TestNotifier:
    def test_messages_arrive_in_order(self, manager: tuple[socket.socket, str]) -> None:
        """READY with STATUS, WATCHDOG and STOPPING arrive as separate datagrams."""
        sock, path = manager
        notifier = Notifier(path)
        assert notifier.ready("serving 2 sessions")
        assert notifier.watchdog()
        assert notifier.stopping()
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving 2 sessions"
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert sock.recv(4096) == b"STOPPING=1"
        notifier.close()

    def test_no_socket_is_a_no_op(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Outside systemd nothing is sent and nothing fails."""
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        notifier = Notifier()
        assert not notifier.enabled
        assert not notifier.ready()

    def test_manager_gone_is_not_fatal(self, tmp_path: Path) -> None:
        """A socket path with nobody listening makes send return False, not raise."""
        notifier = Notifier(str(tmp_path / "gone.sock"))
        assert not notifier.watchdog()
        notifier.close()

    @pytest.mark.parametrize(
        ("usec", "pid", "expected"),
        [
            pytest.param("10000000", None, 5.0, id="half-of-usec"),
            pytest.param("10000000", "1", None, id="other-pid"),
            pytest.param(None, None, None, id="unset"),
            pytest.param("junk", None, None, id="malformed"),
        ],
    )
    def test_watchdog_interval(self, monkeypatch: pytest.MonkeyPatch, usec: str | None,
                               pid: str | None, expected: float | None) -> None:
        """The ping interval is half of WATCHDOG_USEC, only for our own pid."""
        for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        assert Notifier("").watchdog_interval() == expected
