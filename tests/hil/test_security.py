"""Authenticating to a PLC: anonymous (policy None) and username/password."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from tests.hil.conftest import LOOP, SoftPlc, wait_for
from tests.hil.test_mirror import mirrored, peer


@pytest.fixture
def user_plc() -> Iterator[SoftPlc]:
    plc = SoftPlc("--user", "operator:s3cret").start()
    try:
        yield plc
    finally:
        plc.kill()


def with_user(password: str) -> str:
    return f'security = {{ username = "operator", password = "{password}" }}\n' + LOOP


class TestUsername:
    async def test_username_and_password(self, user_plc: SoftPlc) -> None:
        """The right credentials open the link on a PLC that refuses anonymous clients."""
        async with mirrored(user_plc.endpoint, with_user("s3cret"), clock=False) as (_, m):
            await wait_for(lambda: peer(m).binding("valve").status == "Good", 5)

    async def test_wrong_password_is_a_state_logged_once(self, user_plc: SoftPlc) -> None:
        """A refused login backs off and retries; ERROR once, then DEBUG."""
        with capture_logs() as logs:
            async with mirrored(user_plc.endpoint, with_user("wrong"), clock=False) as (_, m):
                await wait_for(lambda: peer(m).last_error != "", 5)
                await wait_for(lambda: sum(e["event"] == "hil_reconnect_failed"
                                           for e in logs) >= 1, 5)
                assert not peer(m).connected
                assert "BadUserAccessDenied" in peer(m).last_error
        failures = [e for e in logs if e["event"] in ("hil_connect_failed",
                                                       "hil_reconnect_failed")]
        assert [e["log_level"] for e in failures][:2] == ["error", "debug"]

    async def test_anonymous_refused(self, user_plc: SoftPlc) -> None:
        """Without credentials the PLC's refusal is the peer's LastError."""
        async with mirrored(user_plc.endpoint, LOOP, clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            assert not peer(m).connected
