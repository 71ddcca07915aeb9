"""Sessions that belong to one client: unguessable authentication tokens, no takeover
from another channel, reconnection after a network blip and TransferSubscriptions.

The hostile requests are sent by real asyncua clients driven below their high-level
API: a channel without a session (``connect_sessionless``), then an ActivateSession
built by hand with someone else's authentication token (what a client on the plant
network sees in clear text on a None channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.security.conftest import (
    CLIENT_URI,
    ENDPOINT,
    MODULE_LOOP,
    ClientCert,
    Secured,
    make_client_cert,
    plain_client,
    secure_client,
    secured_server,
    trust_file,
)
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig
from twin_server.security.roles import Role
from twin_server.security.users import add_user

pytestmark = MODULE_LOOP

VARIABLE = "Sessions.s.Components.c.Inputs.x"
PASSWORD = "correct horse battery"
#: publishing interval of the tests' subscriptions, ms
INTERVAL = 50
OTHER_URI = "urn:twin-server:other-client"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    state = tmp_path_factory.mktemp("state")
    config = ServerConfig(
        endpoint=ENDPOINT,
        security=SecurityConfig(policies=("None", "Basic256Sha256"),
                                modes=("Sign", "SignAndEncrypt"), anonymous="viewer"),
        limits=LimitsConfig(max_client_sessions=20))
    add_user(state / "users.json", "olga", Role.OPERATOR, PASSWORD)
    add_user(state / "users.json", "ada", Role.ADMIN, PASSWORD)
    async with secured_server(config, state, (VARIABLE,)) as srv:
        yield srv


@pytest.fixture(scope="module")
def cert(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> ClientCert:
    """The SCADA's certificate, trusted."""
    made = make_client_cert(tmp_path_factory.mktemp("scada"), "scada")
    trust_file(secured, made)
    return made


@pytest.fixture(scope="module")
def other_cert(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> ClientCert:
    """Another trusted application's certificate (another ApplicationUri)."""
    made = make_client_cert(tmp_path_factory.mktemp("other"), "other", uri=OTHER_URI)
    trust_file(secured, made)
    return made


class Values:
    """A subscription handler that hands out the values it is notified of."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.statuses: list[ua.StatusCode] = []

    def datachange_notification(self, _node: Any, value: Any, _data: Any) -> None:
        self.queue.put_nowait(value)

    def status_change_notification(self, status: Any) -> None:
        self.statuses.append(status)

    async def until(self, value: Any, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while await self.queue.get() != value:
                pass


_values = itertools.count(1)


def fresh() -> float:
    """A value the variable has not had yet (a subscription notifies changes only)."""
    return float(next(_values))


async def produce(secured: Secured) -> float:
    """The twin produces a new value (a server-side write, as the publisher does)."""
    value = fresh()
    await secured.server.get_node(secured.nodeid(VARIABLE)).write_value(value)
    return value


async def subscribed(secured: Secured, client: Client) -> tuple[Any, Values]:
    """A subscription of ``client`` on the variable, once its first value arrived."""
    values = Values()
    sub = await client.create_subscription(INTERVAL, values)
    await sub.subscribe_data_change(client.get_node(secured.nodeid(VARIABLE)))
    async with asyncio.timeout(5):
        await values.queue.get()
    return sub, values


async def channel(url: str, cert: ClientCert | None = None, uri: str = CLIENT_URI) -> Client:
    """A connection with a secure channel (None without ``cert``) and no session."""
    client = plain_client(url) if cert is None else await secure_client(url, cert, uri=uri)
    await client.connect_sessionless()
    return client


async def activate_foreign(client: Client, token: ua.NodeId, nonce: bytes | None = None,
                           identity: Any = None) -> ua.ActivateSessionResult:
    """ActivateSession on ``client``'s channel with ``token``, a session it did not
    create, signed as well as ``client`` can (with its own key, over ``nonce``)."""
    client.uaclient.session.restore_authentication_token(token)
    policy = client.security_policy
    params = ua.ActivateSessionParameters()
    params.ClientSignature.Algorithm = policy.AsymmetricSignatureURI
    params.ClientSignature.Signature = policy.asymmetric_cryptography.signature(
        (policy.peer_certificate or b"") + (nonce or b""))
    params.UserIdentityToken = identity or ua.AnonymousIdentityToken(PolicyId="anonymous")
    return await client.uaclient.activate_session(params)


def token_of(client: Client) -> ua.NodeId:
    return client.uaclient.session.authentication_token


async def close(*clients: Client) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()
        client.disconnect_socket()


async def served_within_a_second(secured: Secured) -> None:
    async with asyncio.timeout(1.0):
        async with plain_client(secured.url) as client:
            await client.get_node(secured.nodeid(VARIABLE)).read_value()


def drop_tcp(client: Client) -> None:
    """Cut the client's TCP connection as a network blip does: no CloseSession, no
    CloseSecureChannel."""
    protocol = client.uaclient.protocol
    assert protocol is not None and protocol.transport is not None
    protocol.transport.abort()


class TestAuthenticationTokens:
    async def test_random_and_long(self, secured: Secured) -> None:
        """Authentication tokens are 32 random bytes (a ByteString NodeId), different for
        every session, and not the sequential numbers asyncua hands out."""
        clients = [plain_client(secured.url) for _ in range(3)]
        try:
            for client in clients:
                await client.connect()
            tokens = [token_of(client) for client in clients]
        finally:
            await close(*clients)
        for token in tokens:
            assert token.NodeIdType == ua.NodeIdType.ByteString
            assert isinstance(token.Identifier, bytes) and len(token.Identifier) == 32
        assert len({t.Identifier for t in tokens}) == 3

    async def test_guessed_tokens_refused(self, secured: Secured) -> None:
        """ActivateSession with guessed sequential tokens (i=1001...) is refused with
        BadSessionIdInvalid while a victim session exists."""
        victim = plain_client(secured.url)
        await victim.connect()
        attacker = await channel(secured.url)
        try:
            for guess in range(1000, 1040):
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await activate_foreign(attacker, ua.NodeId(guess))
                assert refused.value.code == ua.StatusCodes.BadSessionIdInvalid
            await victim.get_node(secured.nodeid(VARIABLE)).read_value()
            await served_within_a_second(secured)
        finally:
            await close(attacker, victim)


class TestTakeover:
    @pytest.mark.parametrize("victim_secure", [
        pytest.param(False, id="victim-on-none"),
        pytest.param(True, id="victim-on-secure"),
    ])
    async def test_none_channel_refused(self, secured: Secured, cert: ClientCert,
                                        victim_secure: bool) -> None:
        """ActivateSession with another client's token over a None channel is refused with
        BadSessionIdInvalid; the victim keeps its user, its subscription and its
        activation, and others are served within a second."""
        if victim_secure:
            victim = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
        else:
            victim = plain_client(secured.url)
        await victim.connect()
        attacker = await channel(secured.url)
        try:
            _sub, values = await subscribed(secured, victim)
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await activate_foreign(attacker, token_of(victim))
            assert refused.value.code == ua.StatusCodes.BadSessionIdInvalid
            # the refused channel is bound to no session: it cannot read with the token
            with pytest.raises(ua.UaStatusCodeError):
                await attacker.get_node(secured.nodeid(VARIABLE)).read_value()
            value = await produce(secured)
            await values.until(value)
            node = victim.get_node(secured.nodeid(VARIABLE))
            if victim_secure:
                value = fresh()
                await node.write_value(value)  # still olga, an operator, not anonymous
                await values.until(value)
            else:
                assert await node.read_value() == value
            await served_within_a_second(secured)
        finally:
            await close(attacker, victim)

    async def test_other_certificate_refused(self, secured: Secured, cert: ClientCert,
                                             other_cert: ClientCert) -> None:
        """ActivateSession with another client's token over a secure channel opened with
        another (trusted) certificate is refused with BadSessionIdInvalid."""
        victim = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
        await victim.connect()
        attacker = await channel(secured.url, other_cert, OTHER_URI)
        try:
            _sub, values = await subscribed(secured, victim)
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await activate_foreign(attacker, token_of(victim))
            assert refused.value.code == ua.StatusCodes.BadSessionIdInvalid
            value = fresh()
            await victim.get_node(secured.nodeid(VARIABLE)).write_value(value)
            await values.until(value)
            await served_within_a_second(secured)
        finally:
            await close(attacker, victim)

    async def test_first_activation_on_other_channel_refused(
            self, secured: Secured, cert: ClientCert) -> None:
        """A session created but not yet activated may only be activated on the channel
        that created it (Part 4, 5.7.3), even by the same certificate."""
        creator = await secure_client(secured.url, cert)
        await creator.connect_sessionless()
        await creator.create_session()
        other = await channel(secured.url, cert)
        try:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await activate_foreign(other, token_of(creator), creator._server_nonce)
            assert refused.value.code == ua.StatusCodes.BadSessionIdInvalid
            await creator.activate_session()  # on its own channel it still works
            await creator.get_node(secured.nodeid(VARIABLE)).read_value()
            await served_within_a_second(secured)
        finally:
            await close(other, creator)

    async def test_other_user_on_new_channel_refused(self, secured: Secured,
                                                     cert: ClientCert) -> None:
        """Reactivating a session on a new channel with another identity than the
        session's (anonymous for olga's) is refused; olga's session is untouched."""
        victim = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
        await victim.connect()
        same_app = await channel(secured.url, cert)
        try:
            _sub, values = await subscribed(secured, victim)
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await activate_foreign(same_app, token_of(victim), victim._server_nonce)
            assert refused.value.code == ua.StatusCodes.BadIdentityChangeNotSupported
            value = fresh()
            await victim.get_node(secured.nodeid(VARIABLE)).write_value(value)
            await values.until(value)
            await served_within_a_second(secured)
        finally:
            await close(same_app, victim)


def values_of(message: ua.NotificationMessage) -> set[float]:
    found: set[float] = set()
    for data in message.NotificationData:
        for item in getattr(data, "MonitoredItems", []):
            found.add(item.Value.Value.Value)
    return found


class TestTransferSubscriptions:
    async def _abandoned(self, secured: Secured, cert: ClientCert, **login: Any
                         ) -> tuple[Client, int]:
        """A client's subscription left behind by a connection cut off."""
        client = await secure_client(secured.url, cert, **login)
        await client.connect()
        sub, _values = await subscribed(secured, client)
        drop_tcp(client)
        return client, sub.subscription_id

    async def test_same_user_takes_over(self, secured: Secured, cert: ClientCert,
                                        other_cert: ClientCert) -> None:
        """A new session of the same user (from another application even) takes over the
        subscription and receives its data."""
        old, sub_id = await self._abandoned(secured, cert, user="olga", password=PASSWORD)
        new = await secure_client(secured.url, other_cert, uri=OTHER_URI, user="olga",
                                  password=PASSWORD)
        await new.connect()
        try:
            results = await new.uaclient.transfer_subscriptions(
                ua.TransferSubscriptionsParameters(SubscriptionIds=[sub_id]))
            assert [r.StatusCode.value for r in results] == [ua.StatusCodes.Good]
            value = await produce(secured)
            async with asyncio.timeout(5):
                while True:
                    response = await new.uaclient.publish([])
                    assert response.Parameters.SubscriptionId == sub_id
                    if value in values_of(response.Parameters.NotificationMessage):
                        break
        finally:
            await close(new, old)

    async def test_initial_values_sent(self, secured: Secured, cert: ClientCert) -> None:
        """With SendInitialValues the new session's first notification carries the
        current value, though it has not changed since."""
        old = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
        await old.connect()
        sub, values = await subscribed(secured, old)
        current = await produce(secured)
        await values.until(current)  # delivered: only SendInitialValues sends it again
        drop_tcp(old)
        sub_id = sub.subscription_id
        new = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
        await new.connect()
        try:
            results = await new.uaclient.transfer_subscriptions(ua.TransferSubscriptionsParameters(
                SubscriptionIds=[sub_id], SendInitialValues=True))
            assert [r.StatusCode.value for r in results] == [ua.StatusCodes.Good]
            async with asyncio.timeout(5):
                while True:
                    response = await new.uaclient.publish([])
                    if current in values_of(response.Parameters.NotificationMessage):
                        break
        finally:
            await close(new, old)

    @pytest.mark.parametrize("login", [
        pytest.param({"user": "ada", "password": PASSWORD}, id="other-user"),
        pytest.param({}, id="anonymous"),
    ])
    async def test_other_user_refused(self, secured: Secured, cert: ClientCert,
                                      other_cert: ClientCert, login: dict[str, str]) -> None:
        """Another user's session gets BadUserAccessDenied for the subscription and
        steals nothing: the owner keeps receiving its data."""
        owner = await secure_client(secured.url, cert, user="olga", password=PASSWORD)
        await owner.connect()
        thief = await secure_client(secured.url, other_cert, uri=OTHER_URI, **login)
        await thief.connect()
        try:
            sub, values = await subscribed(secured, owner)
            results = await thief.uaclient.transfer_subscriptions(
                ua.TransferSubscriptionsParameters(SubscriptionIds=[sub.subscription_id]))
            assert [r.StatusCode.value for r in results] == [ua.StatusCodes.BadUserAccessDenied]
            value = await produce(secured)
            await values.until(value)
            with pytest.raises(ua.UaStatusCodeError) as nothing:
                async with asyncio.timeout(2):
                    await thief.uaclient.publish([])
            assert nothing.value.code == ua.StatusCodes.BadNoSubscription
            await served_within_a_second(secured)
        finally:
            await close(thief, owner)

    async def test_anonymous_same_application_takes_over(
            self, secured: Secured, cert: ClientCert) -> None:
        """An anonymous subscription passes to a new anonymous session of the same
        application (same ApplicationUri) over a secure channel (Part 4, 5.14.7)."""
        old, sub_id = await self._abandoned(secured, cert)
        new = await secure_client(secured.url, cert)
        await new.connect()
        try:
            results = await new.uaclient.transfer_subscriptions(
                ua.TransferSubscriptionsParameters(SubscriptionIds=[sub_id]))
            assert [r.StatusCode.value for r in results] == [ua.StatusCodes.Good]
        finally:
            await close(new, old)

    async def test_anonymous_over_none_refused(self, secured: Secured) -> None:
        """Anonymous sessions on None channels prove nothing about who they are: one may
        not take over another's subscription (BadUserAccessDenied)."""
        owner = plain_client(secured.url)
        await owner.connect()
        thief = plain_client(secured.url)
        await thief.connect()
        try:
            sub, values = await subscribed(secured, owner)
            results = await thief.uaclient.transfer_subscriptions(
                ua.TransferSubscriptionsParameters(SubscriptionIds=[sub.subscription_id]))
            assert [r.StatusCode.value for r in results] == [ua.StatusCodes.BadUserAccessDenied]
            value = await produce(secured)
            await values.until(value)
            await served_within_a_second(secured)
        finally:
            await close(thief, owner)


async def _delete(thief: Client, sub_id: int) -> list[ua.StatusCode]:
    return await thief.uaclient.delete_subscriptions([sub_id])


async def _disable(thief: Client, sub_id: int) -> list[ua.StatusCode]:
    return await thief.uaclient.set_publishing_mode(ua.SetPublishingModeParameters(
        PublishingEnabled=False, SubscriptionIds=[sub_id]))


async def _republish(thief: Client, sub_id: int) -> None:
    await thief.uaclient.session.republish(sub_id, 1)


async def _add_item(thief: Client, sub_id: int) -> None:
    await thief.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
        SubscriptionId=sub_id, ItemsToCreate=[ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=ua.NodeId(ua.ObjectIds.Server_ServerStatus),
                                         AttributeId=ua.AttributeIds.Value))]))


class TestOwnSubscriptionsOnly:
    @pytest.mark.parametrize("hostile", [
        pytest.param(_delete, id="delete"),
        pytest.param(_disable, id="set-publishing-mode"),
        pytest.param(_republish, id="republish"),
        pytest.param(_add_item, id="create-monitored-items"),
    ])
    async def test_other_sessions_subscription_refused(self, secured: Secured, hostile: Any
                                                       ) -> None:
        """A request naming another session's subscription (their numbers are sequential)
        gets BadSubscriptionIdInvalid, as for one that does not exist; the owner's
        subscription keeps publishing."""
        owner = plain_client(secured.url)
        await owner.connect()
        thief = plain_client(secured.url)
        await thief.connect()
        try:
            sub, values = await subscribed(secured, owner)
            try:
                results = await hostile(thief, sub.subscription_id)
            except ua.UaStatusCodeError as refused:
                assert refused.code == ua.StatusCodes.BadSubscriptionIdInvalid
            else:
                assert [r.value for r in results] == [ua.StatusCodes.BadSubscriptionIdInvalid]
            value = await produce(secured)
            await values.until(value)
            await served_within_a_second(secured)
        finally:
            await close(thief, owner)
