"""Failed logins slow a guesser down without letting anyone lock a named user out:
the throttle holds a client address and a user name together."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import Client, ua
from structlog.testing import capture_logs

from tests.security.addresses import ATTACKER, BYSTANDER, VICTIM, from_address
from tests.security.conftest import ENDPOINT, MODULE_LOOP, Secured, secured_server
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.security.roles import Role
from twin_server.security.users import LoginThrottle, add_user, client_address

pytestmark = MODULE_LOOP

PASSWORD = "the real admin's password"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    state = tmp_path_factory.mktemp("state")
    add_user(state / "users.json", "admin", Role.ADMIN, PASSWORD)
    config = ServerConfig(endpoint=ENDPOINT,
                          security=SecurityConfig(policies=("None",), anonymous="off"))
    async with secured_server(config, state) as srv:
        yield srv


async def log_in(secured: Secured, source: str, password: str) -> ua.StatusCode:
    """Log in as admin from ``source``: Good, or the status it was refused with."""
    client = from_address(Client(secured.url, timeout=5), source)
    client.set_user("admin")
    client.set_password(password)
    try:
        await client.connect()
    except ua.UaStatusCodeError as exc:
        client.disconnect_socket()
        return ua.StatusCode(exc.code)
    await client.disconnect()
    return ua.StatusCode(ua.StatusCodes.Good)


class TestLockout:
    async def test_attacker_cannot_lock_the_admin_out(
            self, secured: Secured, monkeypatch: pytest.MonkeyPatch) -> None:
        """Five wrong passwords for admin from one address lock that address out, even
        with the right password, while the real admin logs in from their own address
        within a second."""
        throttle = secured.security.users.throttle
        frozen = throttle.clock()
        monkeypatch.setattr(throttle, "clock", lambda: frozen)  # lockouts do not run out
        with capture_logs() as logs:
            refused = [await log_in(secured, ATTACKER, f"guess {i}") for i in range(5)]
            assert all(s.value == ua.StatusCodes.BadUserAccessDenied for s in refused)
            assert (await log_in(secured, ATTACKER, PASSWORD)).value == \
                ua.StatusCodes.BadUserAccessDenied
            started = time.monotonic()
            assert (await log_in(secured, VICTIM, PASSWORD)).is_good()
            assert time.monotonic() - started < 1.0
        throttled = [e for e in logs if e["event"] == "login_throttled"]
        assert throttled and throttled[0]["peer"] == ATTACKER
        assert throttled[0]["locked"] == "address and user"
        assert all(e.get("peer") != VICTIM for e in throttled)
        assert PASSWORD not in repr(logs)
        # and a third address, where admin never logged in, is not held up either
        assert (await log_in(secured, BYSTANDER, PASSWORD)).is_good()

    async def test_third_failure_locks(self, secured: Secured,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
        """Two wrong passwords from an address still let the right one in; after three,
        the right one is refused from there (as the README says)."""
        throttle = secured.security.users.throttle
        frozen = throttle.clock()
        monkeypatch.setattr(throttle, "clock", lambda: frozen)
        for source in ("127.0.0.4", "127.0.0.5"):
            for i in range(2):
                assert not (await log_in(secured, source, f"typo {i}")).is_good()
        assert (await log_in(secured, "127.0.0.4", PASSWORD)).is_good()
        assert not (await log_in(secured, "127.0.0.5", "typo 3")).is_good()
        assert (await log_in(secured, "127.0.0.5", PASSWORD)).value == \
            ua.StatusCodes.BadUserAccessDenied
        assert throttle.locked_for("127.0.0.5", "admin").seconds == 1


class TestThrottleTable:
    async def test_pair_backoff_doubles_to_the_cap(self) -> None:
        """The third failure of a pair locks it for 1 s, each further one for twice as
        long, up to the cap; the user from another address is not locked."""
        now = [0.0]
        throttle = LoginThrottle(lock_after=3, max_lockout=8.0, clock=lambda: now[0])
        lockouts = [throttle.failed("10.0.0.1", "x") for _ in range(8)]
        assert lockouts == [0, 0, 1, 2, 4, 8, 8, 8]
        assert throttle.locked_for("10.0.0.1", "x").seconds == 8
        assert throttle.locked_for("10.0.0.2", "x").seconds == 0
        now[0] = 9.0
        assert throttle.locked_for("10.0.0.1", "x").seconds == 0
        throttle.succeeded("10.0.0.1", "x")
        assert throttle.failed("10.0.0.1", "x") == 0

    async def test_address_guessing_many_names(self) -> None:
        """An address failing for many user names is locked as a whole, for every name,
        from its tenth failure."""
        now = [0.0]
        throttle = LoginThrottle(lock_after=3, address_lock_after=10, clock=lambda: now[0])
        for i in range(9):
            assert throttle.failed("10.0.0.1", f"user{i}") == 0
        assert throttle.failed("10.0.0.1", "user9") == 1
        lock = throttle.locked_for("10.0.0.1", "someone")
        assert lock.seconds == 1 and lock.scope == "address"
        assert throttle.locked_for("10.0.0.2", "someone").seconds == 0

    async def test_spread_guessing_spares_known_addresses(self) -> None:
        """A user name guessed at from ten addresses is locked for new addresses, but
        not for an address it logged in from before."""
        now = [0.0]
        throttle = LoginThrottle(lock_after=3, spread=10, clock=lambda: now[0])
        throttle.succeeded("192.168.1.5", "admin")  # the real admin's workstation
        for i in range(10):
            throttle.failed(f"10.0.0.{i}", "admin")
        lock = throttle.locked_for("10.9.9.9", "admin")
        assert lock.seconds == 1 and lock.scope == "user from a new address"
        assert throttle.locked_for("192.168.1.5", "admin").seconds == 0
        assert throttle.locked_for("10.9.9.9", "operator").seconds == 0

    async def test_one_address_cannot_spread(self) -> None:
        """However long one address keeps failing for a user, the user is not locked
        for other addresses."""
        now = [0.0]
        throttle = LoginThrottle(lock_after=3, spread=10, max_lockout=300.0,
                                 clock=lambda: now[0])
        for _ in range(100):
            now[0] += 301.0
            throttle.failed("10.0.0.1", "admin")
        assert throttle.locked_for("10.0.0.2", "admin").seconds == 0

    async def test_forgets_after_quiet(self) -> None:
        """Failures are forgotten after the quiet period."""
        now = [0.0]
        throttle = LoginThrottle(lock_after=3, forget=3600.0, clock=lambda: now[0])
        for _ in range(2):
            throttle.failed("10.0.0.1", "x")
        now[0] = 3601.0
        assert throttle.failed("10.0.0.1", "x") == 0

    async def test_bounded(self) -> None:
        """Each table forgets its longest-quiet keys past its size, whatever the
        addresses and names."""
        throttle = LoginThrottle(entries=10)
        for i in range(1000):
            throttle.failed(f"10.0.{i // 256}.{i % 256}", f"user{i}")
            throttle.succeeded(f"10.1.{i // 256}.{i % 256}", f"user{i}")
        assert len(throttle._pairs.items) == 10
        assert len(throttle._addresses.items) == 10
        assert len(throttle._users.items) == 10
        assert len(throttle._known) == 10

    @pytest.mark.parametrize("peer, address", [
        pytest.param("127.0.0.1", "127.0.0.1", id="IPv4"),
        pytest.param("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", id="IPv6 /64"),
        pytest.param("::ffff:10.0.0.7", "10.0.0.7", id="IPv4-mapped"),
        pytest.param(None, "unknown", id="unknown"),
    ])
    async def test_client_address(self, peer: str | None, address: str) -> None:
        """Failures are counted per IPv4 address and per IPv6 /64 (one host's share)."""
        assert client_address(peer) == address
