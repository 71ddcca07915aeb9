"""User-name tokens: a password crosses the network encrypted wherever the token
policy asks for it, for this session only, and never in plain text outside a
SignAndEncrypt channel."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.crypto import security_policies as SP
from asyncua.crypto import uacrypto
from structlog.testing import capture_logs

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
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.security.roles import Role, TwinUser
from twin_server.security.users import add_user

pytestmark = MODULE_LOOP

USER = "root-admin"
PASSWORD = "S3cret-Never-Logged"
RSA15 = "http://www.w3.org/2001/04/xmlenc#rsa-1_5"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    state = tmp_path_factory.mktemp("state")
    add_user(state / "users.json", USER, Role.ADMIN, PASSWORD)
    config = ServerConfig(endpoint=ENDPOINT, security=SecurityConfig(
        policies=("None", "Basic256Sha256", "Aes256_Sha256_RsaPss"),
        modes=("Sign", "SignAndEncrypt"), anonymous="viewer"))
    async with secured_server(config, state) as srv:
        yield srv


@pytest.fixture(scope="module")
def cert(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> ClientCert:
    made = make_client_cert(tmp_path_factory.mktemp("client"), "tokens")
    trust_file(secured, made)
    return made


async def created(client: Client) -> Client:
    """``client`` with a created session that is not activated yet."""
    await client.connect_socket()
    await client.send_hello()
    await client.open_secure_channel()
    await client.create_session()
    return client


def user_token(client: Client, password: bytes, algorithm: str | None) -> ua.UserNameIdentityToken:
    return ua.UserNameIdentityToken(PolicyId="username", UserName=USER, Password=password,
                                    EncryptionAlgorithm=algorithm)


def encrypted(client: Client, policy_uri: str, nonce: bytes | None = None) -> tuple[bytes, str]:
    """The password encrypted as Part 4, 7.36.3 says: for this session's nonce, unless
    another is given."""
    pubkey = uacrypto.x509_from_der(client.security_policy.peer_certificate).public_key()
    secret = PASSWORD.encode() + (client._server_nonce if nonce is None else nonce)
    data, uri = SP.encrypt_asymmetric(pubkey, ua.ua_binary.Primitives.Bytes.pack(secret),
                                      policy_uri)
    return bytes(data), str(uri)


async def activate(client: Client, token: ua.UserNameIdentityToken) -> None:
    """ActivateSession with a hand-made identity token (signed as asyncua signs)."""
    params = ua.ActivateSessionParameters()
    challenge = (client.security_policy.peer_certificate or b"") + (client._server_nonce or b"")
    params.ClientSignature.Algorithm = client.security_policy.AsymmetricSignatureURI or \
        SP.SecurityPolicyBasic256Sha256.AsymmetricSignatureURI
    params.ClientSignature.Signature = \
        client.security_policy.asymmetric_cryptography.signature(challenge)
    params.UserIdentityToken = token
    await client.uaclient.activate_session(params)


def session_of(secured: Secured, client: Client) -> object:
    token = client.uaclient.session.authentication_token
    return secured.server.iserver._external_sessions[token]


async def served_within_a_second(secured: Secured) -> None:
    started = time.monotonic()
    async with Client(secured.url, timeout=5) as client:
        await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)).read_value()
    assert time.monotonic() - started < 1.0


def username_policies(endpoint: ua.EndpointDescription) -> list[str]:
    return [t.SecurityPolicyUri for t in endpoint.UserIdentityTokens
            if t.TokenType == ua.UserTokenType.UserName]


class TestAdvertised:
    async def test_none_endpoint_asks_for_encryption(self, secured: Secured) -> None:
        """The None endpoint offers the user-name token only encrypted: Basic256Sha256
        first (python-opcua 0.98 takes the first and knows no other), then
        Aes256_Sha256_RsaPss; and it carries the certificate to encrypt with."""
        endpoints = await Client(secured.url, timeout=5).connect_and_get_server_endpoints()
        (none,) = [e for e in endpoints if e.SecurityMode == ua.MessageSecurityMode.None_]
        assert username_policies(none) == [SP.SecurityPolicyBasic256Sha256.URI,
                                           SP.SecurityPolicyAes256Sha256RsaPss.URI]
        assert len({t.PolicyId for t in none.UserIdentityTokens}) == \
            len(none.UserIdentityTokens)
        assert none.ServerCertificate
        for endpoint in endpoints:
            if endpoint.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt:
                assert username_policies(endpoint) == [SP.SecurityPolicyNone.URI]
            elif endpoint.SecurityMode == ua.MessageSecurityMode.Sign:
                assert username_policies(endpoint) == [endpoint.SecurityPolicyUri]


class TestNoneEndpoint:
    async def test_asyncua_logs_in_encrypted(self, secured: Secured) -> None:
        """A current asyncua client logs in on the None endpoint, encrypting its password."""
        client = Client(secured.url, timeout=5)
        client.set_user(USER)
        client.set_password(PASSWORD)
        async with client:
            session = session_of(secured, client)
            assert isinstance(session.user, TwinUser)  # type: ignore[attr-defined]
            assert session.user.name == USER  # type: ignore[attr-defined]
            assert client.server_policy(ua.UserTokenType.UserName).SecurityPolicyUri == \
                SP.SecurityPolicyBasic256Sha256.URI

    @pytest.mark.parametrize("policy", [
        pytest.param(SP.SecurityPolicyBasic256Sha256.URI, id="Basic256Sha256"),
        pytest.param(SP.SecurityPolicyAes256Sha256RsaPss.URI, id="Aes256_Sha256_RsaPss"),
    ])
    async def test_each_offered_encryption(self, secured: Secured, policy: str) -> None:
        """A password encrypted for either offered token policy logs in."""
        client = await created(Client(secured.url, timeout=5))
        try:
            await activate(client, user_token(client, *encrypted(client, policy)))
            assert session_of(secured, client).user.name == USER  # type: ignore[attr-defined]
        finally:
            await client.disconnect()

    async def test_plain_password_refused(self, secured: Secured,
                                          caplog: pytest.LogCaptureFixture) -> None:
        """A plain-text password is refused with BadIdentityTokenInvalid, the session
        stays unactivated, nothing of the password is logged, and the server keeps
        serving."""
        client = await created(Client(secured.url, timeout=5))
        caplog.set_level(logging.DEBUG)
        # (a daemon test before may have capped asyncua at WARNING, and earlier tests
        # may have used up the minute's burst of asyncua's records)
        caplog.set_level(logging.DEBUG, logger="asyncua")
        secured.security.log_limit.reset()
        try:
            with capture_logs() as logs, pytest.raises(ua.UaStatusCodeError) as refused:
                await activate(client, user_token(client, PASSWORD.encode(), None))
            assert refused.value.code == ua.StatusCodes.BadIdentityTokenInvalid
            assert not session_of(secured, client).is_activated()  # type: ignore[attr-defined]
        finally:
            client.disconnect_socket()
        event = next(e for e in logs if e["event"] == "login_refused")
        assert event["user"] == USER and event["log_level"] == "info"
        assert PASSWORD not in repr(logs)
        server_side = [r.getMessage() for r in caplog.records
                       if not r.name.startswith("asyncua.client")]  # the client logs its own
        assert server_side and not any(PASSWORD in m for m in server_side)
        await served_within_a_second(secured)

    @pytest.mark.parametrize("nonce", [
        pytest.param(b"", id="no nonce"),
        pytest.param(b"\x00" * 32, id="another nonce"),
    ])
    async def test_replayed_password_refused(self, secured: Secured, nonce: bytes) -> None:
        """A password encrypted for another session's nonce (one seen on the wire, replayed)
        is refused with BadIdentityTokenInvalid."""
        client = await created(Client(secured.url, timeout=5))
        try:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await activate(client, user_token(client, *encrypted(
                    client, SP.SecurityPolicyBasic256Sha256.URI, nonce)))
            assert refused.value.code == ua.StatusCodes.BadIdentityTokenInvalid
            assert not session_of(secured, client).is_activated()  # type: ignore[attr-defined]
        finally:
            client.disconnect_socket()

    async def test_rsa15_refused(self, secured: Secured) -> None:
        """A password encrypted with RSA PKCS#1 v1.5 (Basic128Rsa15, never offered; its
        padding errors leak) is refused with BadIdentityTokenInvalid."""
        client = await created(Client(secured.url, timeout=5))
        try:
            pubkey = uacrypto.x509_from_der(client.security_policy.peer_certificate).public_key()
            secret = ua.ua_binary.Primitives.Bytes.pack(PASSWORD.encode() + client._server_nonce)
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await activate(client, user_token(
                    client, uacrypto.encrypt_rsa15(pubkey, secret), RSA15))
            assert refused.value.code == ua.StatusCodes.BadIdentityTokenInvalid
        finally:
            client.disconnect_socket()


class TestSecureEndpoints:
    async def test_sign_and_encrypt_takes_plain(self, secured: Secured,
                                                cert: ClientCert) -> None:
        """On a SignAndEncrypt channel the user name logs in as asyncua sends it (the
        password in plain text inside the encrypted channel)."""
        client = await secure_client(secured.url, cert, user=USER, password=PASSWORD)
        async with client:
            assert session_of(secured, client).user.name == USER  # type: ignore[attr-defined]

    async def test_sign_logs_in_encrypted(self, secured: Secured, cert: ClientCert) -> None:
        """On a Sign-only channel asyncua encrypts the password with the channel's policy
        and logs in."""
        client = await secure_client(secured.url, cert, mode="Sign", user=USER,
                                     password=PASSWORD)
        async with client:
            assert session_of(secured, client).user.name == USER  # type: ignore[attr-defined]

    async def test_sign_plain_refused(self, secured: Secured, cert: ClientCert) -> None:
        """On a Sign-only channel (signed, readable by anyone) a plain-text password is
        refused with BadIdentityTokenInvalid."""
        client = await created(await secure_client(secured.url, cert, mode="Sign"))
        try:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await activate(client, user_token(client, PASSWORD.encode(), None))
            assert refused.value.code == ua.StatusCodes.BadIdentityTokenInvalid
        finally:
            client.disconnect_socket()


class TestNoneOnly:
    async def test_certificate_made_for_passwords(self, tmp_path: Path) -> None:
        """A config with only the None endpoint still has a certificate, so that its
        users' passwords are encrypted; a plain one is refused."""
        add_user(tmp_path / "users.json", USER, Role.ADMIN, PASSWORD)
        config = ServerConfig(endpoint=ENDPOINT,
                              security=SecurityConfig(policies=("None",), anonymous="off"))
        async with secured_server(config, tmp_path) as srv:
            client = Client(srv.url, timeout=5)
            client.set_user(USER)
            client.set_password(PASSWORD)
            async with client:
                assert client.server_policy(ua.UserTokenType.UserName).SecurityPolicyUri \
                    != SP.SecurityPolicyNone.URI
            plain = await created(Client(srv.url, timeout=5))
            try:
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await activate(plain, user_token(plain, PASSWORD.encode(), None))
                assert refused.value.code == ua.StatusCodes.BadIdentityTokenInvalid
            finally:
                plain.disconnect_socket()
