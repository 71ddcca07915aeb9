"""Sessions nobody uses any more cannot lock other clients out: revised session
timeouts, a per-address share of the session limit, and abandoned sessions of an
address displaced by a new client from that address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from structlog.testing import capture_logs

from tests.security.addresses import (
    ATTACKER,
    BYSTANDER,
    VICTIM,
    drop,
    from_address,
    quiet_session,
    quiet_subscription,
)
from tests.security.conftest import ENDPOINT, MODULE_LOOP, Secured, secured_server
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig

pytestmark = MODULE_LOOP

SESSIONS = 6
SHARE = 3
IDLE = 1.5


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    config = ServerConfig(
        endpoint=ENDPOINT, security=SecurityConfig(policies=("None",), anonymous="viewer"),
        limits=LimitsConfig(max_client_sessions=SESSIONS, max_sessions_per_address=SHARE,
                            abandoned_session_idle=IDLE, max_connections=60))
    async with secured_server(config, tmp_path_factory.mktemp("state")) as srv:
        yield srv


@pytest_asyncio.fixture(loop_scope="module")
async def clean(secured: Secured) -> AsyncIterator[list[Client]]:
    """The clients a test opens; afterwards every client session is closed."""
    clients: list[Client] = []
    yield clients
    for client in clients:
        drop(client)
    for session in list(sessions(secured)):
        await session.close_session(True)


def sessions(secured: Secured) -> list[Any]:
    return list(secured.server.iserver._external_sessions.values())


def active_from(secured: Secured, address: str) -> list[Any]:
    return [s for s in sessions(secured) if s.is_activated() and s.name[0] == address]


def subscriptions_of(secured: Secured, session: Any) -> list[int]:
    subs = secured.server.iserver.subscription_service.subscriptions
    return [i for i, s in list(subs.items()) if s.session_id == session.session_id]


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


async def legitimate(secured: Secured, source: str) -> float:
    """Seconds a well-behaved client from ``source`` takes to connect and read."""
    started = time.monotonic()
    async with from_address(Client(secured.url, timeout=5), source) as client:
        state = await client.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)).read_value()
        taken = time.monotonic() - started
    assert state == ua.ServerState.Running
    return taken


class TestSessionTimeout:
    async def test_revised_to_maximum(self, secured: Secured,
                                      clean: list[Client]) -> None:
        """A session asking for 600 s gets the 60 s maximum, and CreateSession says so."""
        assert LimitsConfig().max_session_timeout == 60.0
        client = await quiet_session(secured.url, timeout_ms=600_000.0)
        clean.append(client)
        assert client.session_timeout == 60_000.0  # the RevisedSessionTimeout it was given
        (session,) = active_from(secured, ATTACKER)
        assert session.session_timeout == 60.0


class TestAbandonedSessions:
    async def test_dropped_sessions_displaced(self, secured: Secured,
                                              clean: list[Client]) -> None:
        """Sessions with subscriptions whose connections were cut (kept by asyncua for a
        reconnect) give way to a new client of their address, subscriptions and all."""
        abandoned = []
        for _ in range(SESSIONS):
            client = await quiet_session(secured.url)
            await quiet_subscription(client)
            abandoned.append(next(s for s in active_from(secured, ATTACKER)
                                  if s not in abandoned))
            drop(client)
        await until(lambda: not secured.server.iserver.asyncio_transports)
        with capture_logs() as logs:
            assert await legitimate(secured, ATTACKER) < 1.0
        assert await legitimate(secured, VICTIM) < 1.0
        live = [s for s in abandoned if s.is_activated()]
        assert len(live) <= SHARE
        await until(lambda: all(not subscriptions_of(secured, s)
                                for s in abandoned if s not in live))
        displaced = [e for e in logs if e["event"] == "session_displaced"]
        assert displaced and displaced[0]["peer"] == ATTACKER
        assert displaced[0]["reason"] == "connection gone"

    async def test_idle_sessions_displaced(self, secured: Secured,
                                           clean: list[Client]) -> None:
        """Sessions of an address that hold their connections but send nothing are
        kept while they may still be in use, then give way to a new client."""
        for _ in range(SHARE):
            clean.append(await quiet_session(secured.url))
        with pytest.raises(ua.UaStatusCodeError) as refused:
            clean.append(await quiet_session(secured.url))
        assert refused.value.code == ua.StatusCodes.BadTooManySessions
        oldest = min(active_from(secured, ATTACKER), key=lambda s: s._last_activity)
        await asyncio.sleep(IDLE)  # the idle bound is what is tested
        assert await legitimate(secured, ATTACKER) < 1.0
        assert not oldest.is_activated()
        assert len(active_from(secured, ATTACKER)) == SHARE - 1  # the legitimate one left


class TestAddressShare:
    async def test_share_holds(self, secured: Secured, clean: list[Client]) -> None:
        """One address holds at most its share of the sessions; other addresses still
        get theirs, each within a second."""
        for _ in range(SHARE):
            clean.append(await quiet_session(secured.url, ATTACKER))
        with capture_logs() as logs, pytest.raises(ua.UaStatusCodeError) as refused:
            clean.append(await quiet_session(secured.url, ATTACKER))
        assert refused.value.code == ua.StatusCodes.BadTooManySessions
        assert len(active_from(secured, ATTACKER)) == SHARE
        refusal = next(e for e in logs if e["event"] == "session_limit_reached")
        assert refusal["log_level"] == "info"
        assert refusal["peer"] == ATTACKER and refusal["limit"] == SHARE
        assert await legitimate(secured, VICTIM) < 1.0
        clean.append(await quiet_session(secured.url, VICTIM))
        clean.append(await quiet_session(secured.url, BYSTANDER))
        assert await legitimate(secured, BYSTANDER) < 1.0
        assert len(active_from(secured, VICTIM)) == 1

    async def test_server_limit_still_holds(self, secured: Secured,
                                            clean: list[Client]) -> None:
        """With every address within its share, the server's limit still refuses the
        session past max_client_sessions."""
        for source in (ATTACKER, VICTIM):
            for _ in range(SHARE):
                clean.append(await quiet_session(secured.url, source))
        with pytest.raises(ua.UaStatusCodeError) as refused:
            clean.append(await quiet_session(secured.url, BYSTANDER))
        assert refused.value.code == ua.StatusCodes.BadTooManySessions
        assert len([s for s in sessions(secured) if s.is_activated()]) == SESSIONS


class TestShareSetting:
    async def test_default_is_half(self) -> None:
        """Without max_sessions_per_address an address may hold half of the sessions."""
        assert LimitsConfig(max_client_sessions=50).sessions_per_address == 25
        assert LimitsConfig(max_client_sessions=1).sessions_per_address == 1
        assert LimitsConfig(max_client_sessions=50,
                            max_sessions_per_address=50).sessions_per_address == 50

    async def test_share_above_limit_refused(self) -> None:
        """A share larger than the whole limit is a config error that names both keys."""
        with pytest.raises(ValueError, match=r"max_sessions_per_address .* max_client_sessions"):
            LimitsConfig(max_client_sessions=10, max_sessions_per_address=11)
