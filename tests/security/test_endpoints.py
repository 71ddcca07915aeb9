"""Encrypted endpoints, client certificate trust and user logins over a real channel."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyNone
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.security.conftest import (
    ENDPOINT,
    MODULE_LOOP,
    Secured,
    make_client_cert,
    secure_client,
    secured_server,
    trust_file,
)
from twin_server import cli
from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.security import pki as P
from twin_server.security.roles import Role
from twin_server.security.users import add_user

pytestmark = MODULE_LOOP

VARIABLE = "Sessions.s.Components.c.Inputs.x"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    state = tmp_path_factory.mktemp("state")
    config = ServerConfig(endpoint=ENDPOINT, security=SecurityConfig(
        policies=("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"),
        modes=("Sign", "SignAndEncrypt"), anonymous="viewer"))
    add_user(state / "users.json", "olga", Role.OPERATOR, "correct horse")
    async with secured_server(config, state, (VARIABLE,)) as srv:
        yield srv


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return tmp_path / "client"


def rejected(secured: Secured) -> list[str]:
    return sorted(p.name for p in secured.security.pki.rejected_certs.iterdir())


class TestServerCertificate:
    async def test_created_in_part12_layout(self, secured: Secured) -> None:
        """The first start creates the Part 12 folders and an RSA-2048 certificate with
        the application URI and host names."""
        pki = secured.security.pki.root
        for folder in ("own/certs", "own/private", "trusted/certs", "trusted/crl",
                       "issuers/certs", "rejected/certs"):
            assert (pki / folder).is_dir(), folder
        assert (pki / "own/private").stat().st_mode & 0o077 == 0
        assert (pki / "own/private/server_key.pem").stat().st_mode & 0o777 == 0o600
        cert = P.load_certificate_file(pki / "own/certs/server_cert.der")
        assert cert.public_key().key_size >= 2048
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "urn:twin-server:server" in san.get_values_for_type(x509.UniformResourceIdentifier)
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert any(str(ip) == "127.0.0.1" for ip in san.get_values_for_type(x509.IPAddress))
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    async def test_endpoints_offered(self, secured: Secured) -> None:
        """GetEndpoints lists each configured policy with Sign and SignAndEncrypt, and no
        None endpoint."""
        probe = Client(secured.url, timeout=5)
        endpoints = await probe.connect_and_get_server_endpoints()
        offered = {(e.SecurityPolicyUri.rpartition("#")[2], e.SecurityMode) for e in endpoints}
        modes = {ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt}
        assert offered == {(p, m) for p in ("Basic256Sha256", "Aes128_Sha256_RsaOaep",
                                            "Aes256_Sha256_RsaPss") for m in modes}

    async def test_kept_across_restarts(self, secured: Secured) -> None:
        """A second start keeps the certificate (clients keep trusting it)."""
        identity = secured.security.identity
        assert identity is not None
        again = P.ensure_server_certificate(
            secured.security.pki, application_uri="urn:twin-server:server", name="x",
            hostnames=["127.0.0.1"], key_size=2048, days=365)
        assert not again.created
        assert P.thumbprint(again.certificate) == P.thumbprint(identity.certificate)


class TestClientCertificates:
    @pytest.mark.parametrize("policy", [
        pytest.param("Basic256Sha256", id="basic256sha256"),
        pytest.param("Aes128Sha256RsaOaep", id="aes128"),
        pytest.param("Aes256Sha256RsaPss", id="aes256"),
    ])
    async def test_trusted_accepted(self, secured: Secured, certs: Path, policy: str) -> None:
        """A SignAndEncrypt session with a trusted certificate reads."""
        cert = make_client_cert(certs, f"trusted-{policy}")
        trust_file(secured, cert)
        client = await secure_client(secured.url, cert, policy=policy)
        async with client:
            assert await client.get_node(secured.nodeid(VARIABLE)).read_value() == 0.0

    async def test_untrusted_refused_and_rejected(self, secured: Secured, certs: Path) -> None:
        """An untrusted certificate is refused with BadCertificateUntrusted and copied
        into rejected/certs, from where ``pki trust`` trusts it by thumbprint."""
        cert = make_client_cert(certs, "stranger")
        client = await secure_client(secured.url, cert)
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await client.connect()
        client.disconnect_socket()
        assert refused.value.code == ua.StatusCodes.BadCertificateUntrusted
        assert f"stranger [{cert.thumbprint}].der" in rejected(secured)
        P.trust(secured.security.pki, cert.thumbprint[:12].lower())
        assert f"stranger [{cert.thumbprint}].der" not in rejected(secured)
        client = await secure_client(secured.url, cert)
        async with client:
            await client.get_node(secured.nodeid(VARIABLE)).read_value()

    async def test_trusting_the_file_removes_the_rejected_copy(
            self, secured: Secured, certs: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`twin-server pki trust FILE` with the client's own certificate file trusts it
        and removes the copy a refused connection left in rejected/certs: `pki list`
        shows it once, trusted, and the client connects."""
        cert = make_client_cert(certs, "returning")
        client = await secure_client(secured.url, cert)
        with pytest.raises(ua.UaStatusCodeError):
            await client.connect()
        client.disconnect_socket()
        assert f"returning [{cert.thumbprint}].der" in rejected(secured)
        state = ["--state-dir", str(secured.state_dir)]
        assert cli.main(["pki", "trust", str(cert.cert), *state]) == 0
        assert rejected(secured) == sorted(
            n for n in rejected(secured) if cert.thumbprint not in n)
        capsys.readouterr()
        assert cli.main(["pki", "list", *state]) == 0
        listed = [line for line in capsys.readouterr().out.splitlines()
                  if cert.thumbprint in line]
        assert len(listed) == 1 and "trusted" in listed[0], listed
        client = await secure_client(secured.url, cert)
        async with client:
            await client.get_node(secured.nodeid(VARIABLE)).read_value()

    @pytest.mark.parametrize("start, days", [
        pytest.param(-40, 30, id="expired"),
        pytest.param(10, 30, id="not-yet-valid"),
    ])
    async def test_time_invalid_refused(self, secured: Secured, certs: Path, start: int,
                                        days: int) -> None:
        """A trusted but expired or not yet valid certificate is refused with
        BadCertificateTimeInvalid and copied into rejected/certs."""
        cert = make_client_cert(certs, f"clock{start}", days=days,
                                start=dt.datetime.now(dt.UTC) + dt.timedelta(days=start))
        trust_file(secured, cert)
        client = await secure_client(secured.url, cert)
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await client.connect()
        client.disconnect_socket()
        assert refused.value.code == ua.StatusCodes.BadCertificateTimeInvalid
        assert f"clock{start} [{cert.thumbprint}].der" in rejected(secured)

    async def test_wrong_application_uri_refused(self, secured: Secured, certs: Path) -> None:
        """A client whose ApplicationUri is not in its certificate gets
        BadCertificateUriInvalid."""
        cert = make_client_cert(certs, "impostor", uri="urn:someone:else")
        trust_file(secured, cert)
        client = await secure_client(secured.url, cert, uri="urn:twin-server:test-client")
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await client.connect()
        client.disconnect_socket()
        assert refused.value.code == ua.StatusCodes.BadCertificateUriInvalid

    async def test_none_channel_refused(self, secured: Secured,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a None endpoint, a client on a SecurityPolicy#None channel (which
        asyncua would accept) cannot activate a session."""
        def any_endpoint(endpoints: list[ua.EndpointDescription], *_: object
                         ) -> ua.EndpointDescription:
            return dataclasses.replace(endpoints[0], SecurityMode=ua.MessageSecurityMode.None_,
                                       SecurityPolicyUri=SecurityPolicyNone.URI)

        monkeypatch.setattr(Client, "find_endpoint", staticmethod(any_endpoint))
        client = Client(secured.url, timeout=5)
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await client.connect()
        client.disconnect_socket()
        assert refused.value.code == ua.StatusCodes.BadSecurityPolicyRejected


class TestPasswords:
    async def test_right_password(self, secured: Secured, certs: Path) -> None:
        """The right password logs in with the user's role: an operator writes an input."""
        cert = make_client_cert(certs, "pw-ok")
        trust_file(secured, cert)
        client = await secure_client(secured.url, cert, user="olga", password="correct horse")
        async with client:
            node = client.get_node(secured.nodeid(VARIABLE))
            await node.write_value(1.5)
            assert await node.read_value() == 1.5

    async def test_wrong_password(self, secured: Secured, certs: Path) -> None:
        """A wrong password is refused with BadUserAccessDenied and logged without it."""
        from structlog.testing import capture_logs

        cert = make_client_cert(certs, "pw-bad")
        trust_file(secured, cert)
        client = await secure_client(secured.url, cert, user="olga", password="wrong horse")
        with capture_logs() as logs, pytest.raises(ua.UaStatusCodeError) as refused:
            await client.connect()
        client.disconnect_socket()
        assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
        failed = [e for e in logs if e["event"] == "login_failed"]
        assert failed and failed[0]["user"] == "olga"
        assert "wrong horse" not in repr(logs)
        secured.security.users.throttle.succeeded("127.0.0.1", "olga")

    async def test_repeated_failures_throttled(self, secured: Secured, certs: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """After a few wrong passwords even the right one is refused for a while."""
        from structlog.testing import capture_logs

        cert = make_client_cert(certs, "pw-guess")
        trust_file(secured, cert)
        throttle = secured.security.users.throttle
        frozen = throttle.clock()
        monkeypatch.setattr(throttle, "clock", lambda: frozen)  # lockouts do not run out
        with capture_logs() as logs:
            for guess in ("a-guess-1", "a-guess-2", "a-guess-3", "a-guess-4",
                          "correct horse"):
                client = await secure_client(secured.url, cert, user="olga", password=guess)
                with pytest.raises(ua.UaStatusCodeError):
                    await client.connect()
                client.disconnect_socket()
        assert [e["event"] for e in logs if e["event"].startswith("login_")][-1] == \
            "login_throttled"
        secured.security.users.throttle.succeeded("127.0.0.1", "olga")
