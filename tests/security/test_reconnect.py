"""A network blip under a SCADA's subscription: the session is activated again on a
new secure channel and its data keeps coming, on asyncio and on uvloop (where a
write to the dead connection raised and ended the subscription for good).

The asyncio tests share one server; each uvloop test runs its own on a fresh uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.security.conftest import (
    ENDPOINT,
    MODULE_LOOP,
    ClientCert,
    Secured,
    make_client_cert,
    secure_client,
    secured_server,
    trust_file,
)
from tests.security.test_sessions import (
    PASSWORD,
    VARIABLE,
    channel,
    close,
    drop_tcp,
    produce,
    subscribed,
    token_of,
    values_of,
)
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.security.roles import Role
from twin_server.security.users import add_user


@contextlib.asynccontextmanager
async def scada_server(state: Path) -> AsyncIterator[tuple[Secured, ClientCert]]:
    """A server with a secure endpoint, the user olga, and the SCADA's trusted certificate."""
    config = ServerConfig(endpoint=ENDPOINT, security=SecurityConfig(
        policies=("None", "Basic256Sha256"), modes=("SignAndEncrypt",), anonymous="viewer"))
    add_user(state / "users.json", "olga", Role.OPERATOR, PASSWORD)
    async with secured_server(config, state, (VARIABLE,)) as secured:
        cert = make_client_cert(state / "client", "scada")
        trust_file(secured, cert)
        yield secured, cert


async def connection_gone(secured: Secured, before: int) -> None:
    """Until the server has seen a connection close (its transports list shrank)."""
    async with asyncio.timeout(5):
        while len(secured.server.iserver.asyncio_transports) >= before:
            await asyncio.sleep(0.01)


def outage(client: Any) -> asyncio.Event:
    """The network between ``client`` and the server: while the event is clear, the
    client's new connections wait for it."""
    network = asyncio.Event()
    network.set()
    connect_socket = client.uaclient.connect_socket

    async def when_network_is_up(*args: Any) -> None:
        await network.wait()
        await connect_socket(*args)

    client.uaclient.connect_socket = when_network_is_up
    return network


async def blip(secured: Secured, cert: ClientCert) -> None:
    """A SCADA whose TCP connection drops activates its session again on a new secure
    channel (asyncua's auto-reconnect): the same session and subscription keep
    publishing, the value produced while it was away included."""
    client = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
    await client.connect(auto_reconnect=True, reconnect_max_delay=0.5)
    network = outage(client)
    try:
        sub, values = await subscribed(secured, client)
        sub_id, token = sub.subscription_id, token_of(client)
        await values.until(await produce(secured))
        before = len(secured.server.iserver.asyncio_transports)
        network.clear()
        drop_tcp(client)
        await connection_gone(secured, before)
        away = await produce(secured)
        await asyncio.sleep(0.15)  # three publishing intervals without the client
        network.set()
        await values.until(away, within=10.0)
        assert (sub.subscription_id, token_of(client)) == (sub_id, token)
        await values.until(await produce(secured))
        assert sub_id in secured.server.iserver.subscription_service.subscriptions
    finally:
        await close(client)


async def publish_after_blip(secured: Secured, cert: ClientCert) -> None:
    """Publish requests outstanding on the dead connection are dropped: the values
    produced after the server saw it close come in the first PublishResponse on the
    new channel, within a second."""
    first = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
    await first.connect()
    second = None
    try:
        sub, _values = await subscribed(secured, first)
        # two more Publish requests outstanding beside the client's own
        for _ in range(2):
            pending = asyncio.ensure_future(first.uaclient.publish([]))
            pending.add_done_callback(_retrieved)
        await asyncio.sleep(0.05)
        before = len(secured.server.iserver.asyncio_transports)
        drop_tcp(first)
        await connection_gone(secured, before)
        produced = [await produce(secured)]
        await asyncio.sleep(0.15)  # three publishing intervals
        produced.append(await produce(secured))
        second = await channel(secured.url, cert)
        second._policy_ids = first._policy_ids  # as the first client knew them
        second.uaclient.session.restore_authentication_token(token_of(first))
        second._server_nonce = first._server_nonce
        await second.activate_session(username="olga", password=PASSWORD)
        async with asyncio.timeout(1.0):
            response = await second.uaclient.publish([])
        result = response.Parameters
        assert result.SubscriptionId == sub.subscription_id
        assert set(produced) <= values_of(result.NotificationMessage)
    finally:
        await close(*([second] if second else []), first)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scada(tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[tuple[Secured, ClientCert]]:
    async with scada_server(tmp_path_factory.mktemp("state")) as server:
        yield server


@MODULE_LOOP
class TestReconnect:
    async def test_blip_keeps_session_and_data(self, scada: tuple[Secured, ClientCert]
                                               ) -> None:
        """A blip under a SCADA's subscription: same session and subscription, no value lost."""
        await blip(*scada)

    async def test_publish_answered_on_new_channel(self, scada: tuple[Secured, ClientCert]
                                                   ) -> None:
        """Publish on the new channel is answered with what the dead connection missed."""
        await publish_after_blip(*scada)


class TestReconnectOnUvloop:
    def test_blips(self, tmp_path: Path) -> None:
        """On uvloop (the daemon's loop where installed), where a write to the dead
        connection raised and ended the subscription's loop for good, both hold too."""
        uvloop = pytest.importorskip("uvloop")

        async def main() -> None:
            async with scada_server(tmp_path) as server:
                await blip(*server)
                await publish_after_blip(*server)

        uvloop.run(main())


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A Publish request of the dropped connection fails with it: nothing to report."""
    if not future.cancelled():
        future.exception()
