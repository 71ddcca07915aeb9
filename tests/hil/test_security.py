"""Authenticating to a PLC: username/password, and a client certificate over
Basic256Sha256 SignAndEncrypt against a soft PLC that trusts only the
certificates in its trust folder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.uacrypto import CertProperties
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from tests.hil.conftest import LOOP, SoftPlc, wait_for
from tests.hil.test_mirror import INFLOW, mirrored, peer
from twin_server.config.schema import HilSecurity
from twin_server.hil import LinkState
from twin_server.hil.security import SecuritySetupFailed, apply_security
from twin_server.security.pki import (
    PkiLayout,
    TrustList,
    make_certificate,
    new_key,
    write_key,
)

HIL_URI = "urn:twin-server:hil"


@pytest.fixture(scope="module")
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
                error = peer(m).last_error
                assert "BadUserAccessDenied" in error
                assert "refused user 'operator'" in error
                assert "hil.plc.security.password" in error
        failures = [e for e in logs if e["event"] in ("hil_connect_failed",
                                                       "hil_reconnect_failed")]
        assert [e["log_level"] for e in failures][:2] == ["error", "debug"]

    async def test_anonymous_refused(self, user_plc: SoftPlc) -> None:
        """Without credentials the PLC's refusal is the peer's LastError, with the
        settings that give it a user."""
        async with mirrored(user_plc.endpoint, LOOP, clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            assert not peer(m).connected
            error = peer(m).last_error
            assert "refuses anonymous sessions" in error
            assert "hil.plc.security.username and password" in error


@dataclass(frozen=True)
class Identity:
    """A certificate (DER) and its private key (PEM) on disk."""

    certificate: Path
    private_key: Path


def identity(folder: Path, name: str, uri: str, *, pem: bool = False) -> Identity:
    """An RSA 2048 application instance certificate with ``uri`` in its SubjectAltName."""
    key = new_key(2048)
    cert = make_certificate(key, application_uri=uri, name=name,
                            hostnames=["127.0.0.1"], days=30)
    path = folder / f"{name}.{'crt' if pem else 'der'}"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM if pem
                                       else serialization.Encoding.DER))
    write_key(folder / f"{name}.key", key)
    return Identity(path, folder / f"{name}.key")


@dataclass(frozen=True)
class Pki:
    """The PLC's folder (cert.der, key.pem, trusted/) and the clients' identities."""

    plc_dir: Path
    plc: Identity
    client: Identity  # in the PLC's trust folder, as PEM named .crt
    rogue: Identity  # not trusted by the PLC


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    plc_dir = root / "plc"
    (plc_dir / "trusted").mkdir(parents=True)
    plc = identity(plc_dir, "plc", "urn:soft-plc:server")
    plc.certificate.rename(plc_dir / "cert.der")
    plc.private_key.rename(plc_dir / "key.pem")
    plc = Identity(plc_dir / "cert.der", plc_dir / "key.pem")
    client = identity(root, "client", HIL_URI, pem=True)
    (plc_dir / "trusted" / "client.pem").write_bytes(client.certificate.read_bytes())
    return Pki(plc_dir, plc, client, identity(root, "rogue", HIL_URI))


@pytest.fixture(scope="module")
def secure_plc(pki: Pki) -> Iterator[SoftPlc]:
    plc = SoftPlc("--secure", str(pki.plc_dir)).start()
    try:
        yield plc
    finally:
        plc.kill()


def with_certificate(me: Identity, server: Path | None, *, extra: str = "",
                     uri: str = HIL_URI) -> str:
    server_key = f'server_certificate = "{server.as_posix()}", ' if server else ""
    return (f'security = {{ policy = "Basic256Sha256", mode = "SignAndEncrypt", '
            f'certificate = "{me.certificate.as_posix()}", '
            f'private_key = "{me.private_key.as_posix()}", {server_key}'
            f'application_uri = "{uri}"{extra} }}\n' + LOOP)


async def read_plc(endpoint: str, me: Identity, node: str) -> object:
    """A node's value on the secure PLC, read by a client of the test's own."""
    client = Client(endpoint, timeout=2)
    client.application_uri = HIL_URI
    await client.set_security(  # a .crt in PEM: asyncua goes by the extension
        SecurityPolicyBasic256Sha256, CertProperties(me.certificate, "pem"),
        CertProperties(me.private_key, "pem"), mode=ua.MessageSecurityMode.SignAndEncrypt)
    async with client:
        return await client.get_node(f"ns=2;s=PLC.{node}").read_value()


class TestCertificate:
    async def test_trusted_certificate_mirrors_both_ways(
            self, secure_plc: SoftPlc, pki: Pki) -> None:
        """A trusted certificate opens the link; the level reaches the PLC, the valve
        command comes back."""
        config = with_certificate(pki.client, pki.plc.certificate)
        async with mirrored(secure_plc.endpoint, config, clock=False) as (session, m):
            await wait_for(lambda: peer(m).binding("valve").status == "Good"
                           and peer(m).binding("level").status == "Good", 5)
            assert peer(m).connected and peer(m).last_error == ""
            # level 0.5 m out; the PLC answers bias + kp * (1.0 - 0.5)
            assert await read_plc(secure_plc.endpoint, pki.client, "Level") == 0.5
            await wait_for(lambda: abs(float(session.forced()[INFLOW]) - 0.15) < 1e-9, 2)

    async def test_announced_certificate_taken_unchecked_on_request(
            self, secure_plc: SoftPlc, pki: Pki) -> None:
        """server_trust = "announced": the certificate from GetEndpoints is used as it
        is, with no trust list at all."""
        config = with_certificate(pki.client, None, extra=', server_trust = "announced"')
        async with mirrored(secure_plc.endpoint, config, clock=False) as (_, m):
            await wait_for(lambda: peer(m).binding("valve").status == "Good", 5)

    async def test_announced_certificate_must_be_trusted(
            self, secure_plc: SoftPlc, pki: Pki, tmp_path: Path) -> None:
        """Without server_certificate, the certificate the PLC announces must pass the
        daemon's trust list: an unknown one is refused before any secure channel
        opens, copied to pki/rejected, and LastError says to move it to
        trusted; once moved, the next retry connects."""
        trust = TrustList(PkiLayout(tmp_path / "pki"))
        async with mirrored(secure_plc.endpoint, with_certificate(pki.client, None),
                            clock=False, trust=trust) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            error = peer(m).last_error
            assert "the PLC's certificate" in error and "BadCertificateUntrusted" in error
            rejected = list(trust.layout.rejected_certs.iterdir())
            assert len(rejected) == 1 and str(rejected[0]) in error
            assert str(trust.layout.trusted_certs) in error
            assert not peer(m).connected
            trust.layout.trusted_certs.mkdir(parents=True)
            rejected[0].rename(trust.layout.trusted_certs / rejected[0].name)
            await wait_for(lambda: peer(m).binding("valve").status == "Good", 10)
            assert peer(m).connected  # (LastError keeps the last error, for the record)

    async def test_announced_certificate_without_a_trust_list(
            self, secure_plc: SoftPlc, pki: Pki) -> None:
        """A mirror given no trust list refuses to take an announced certificate on
        trust, and says what to set."""
        async with mirrored(secure_plc.endpoint, with_certificate(pki.client, None),
                            clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            error = peer(m).last_error
            assert "no trust list" in error and "server_certificate" in error
            assert "server_trust" in error

    async def test_untrusted_certificate_is_a_state(self, secure_plc: SoftPlc, pki: Pki) -> None:
        """An untrusted certificate: LastError says so and names it, the peer backs off
        and retries (ERROR once, then DEBUG), the twin keeps stepping."""
        config = with_certificate(pki.rogue, pki.plc.certificate)
        with capture_logs() as logs:
            async with mirrored(secure_plc.endpoint, config) as (session, m):
                await wait_for(lambda: peer(m).last_error != "", 5)
                stats = peer(m)
                assert not stats.connected
                assert "BadCertificateUntrusted" in stats.last_error
                assert str(pki.rogue.certificate) in stats.last_error
                assert "trust" in stats.last_error
                ticks = session.step_count
                await asyncio.sleep(1.5)
                assert session.step_count > ticks
                assert peer(m).state in (LinkState.BACKOFF, LinkState.CONNECTING)
                assert peer(m).binding("valve").status == "BadCommunicationError"
        attempts = [e for e in logs if e["event"] in ("hil_connect_failed",
                                                       "hil_reconnect_failed")]
        # backoff 0.2, 0.4, 0.8, 1.0 s (+-20 %): 2 to 5 attempts in 1.5 s and a bit
        assert 2 <= len(attempts) <= 6
        assert [e["log_level"] for e in attempts][:2] == ["error", "debug"]

    async def test_wrong_application_uri_is_explained(
            self, secure_plc: SoftPlc, pki: Pki) -> None:
        """An application_uri that is not the certificate's: LastError names both."""
        config = with_certificate(pki.client, pki.plc.certificate, uri="urn:elsewhere")
        async with mirrored(secure_plc.endpoint, config, clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            error = peer(m).last_error
            assert "BadCertificateUriInvalid" in error
            assert "urn:elsewhere" in error and HIL_URI in error

    async def test_missing_certificate_file_is_named(self, secure_plc: SoftPlc,
                                                     tmp_path: Path, pki: Pki) -> None:
        """A certificate file that is not there is a config problem, not an unreachable PLC."""
        missing = Identity(tmp_path / "nothing.der", pki.client.private_key)
        async with mirrored(secure_plc.endpoint, with_certificate(missing, None),
                            clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            error = peer(m).last_error
            assert "security.certificate" in error and "nothing.der" in error
            assert "cannot reach" not in error

    async def test_stale_plc_certificate_is_hinted(self, secure_plc: SoftPlc, pki: Pki) -> None:
        """A server_certificate that is not the PLC's: the silent PLC's timeout says
        which file to check."""
        config = "timeout = 0.5\n" + with_certificate(pki.client, pki.rogue.certificate)
        async with mirrored(secure_plc.endpoint, config, clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            error = peer(m).last_error
            assert "no answer" in error and "security.server_certificate" in error
            assert str(pki.rogue.certificate) in error

    async def test_unoffered_mode_lists_what_the_plc_offers(
            self, secure_plc: SoftPlc, pki: Pki) -> None:
        """Mode Sign on a PLC offering SignAndEncrypt alone: LastError lists its endpoints."""
        config = with_certificate(pki.client, None).replace('"SignAndEncrypt"', '"Sign"')
        async with mirrored(secure_plc.endpoint, config, clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            error = peer(m).last_error
            assert "Basic256Sha256/Sign" in error and "Basic256Sha256/SignAndEncrypt" in error

    async def test_no_security_on_a_secure_plc_is_explained(self, secure_plc: SoftPlc) -> None:
        """Policy None against a PLC without a None endpoint: LastError says what to set."""
        async with mirrored(secure_plc.endpoint, LOOP, clock=False) as (_, m):
            await wait_for(lambda: peer(m).last_error != "", 5)
            error = peer(m).last_error
            assert "offers no endpoint without security" in error
            assert "it offers: Basic256Sha256/SignAndEncrypt" in error
            assert "hil.plc.security.policy" in error
            assert "twin-server pki hil-client" in error

    async def test_username_with_certificate(self, pki: Pki) -> None:
        """Username and password over the encrypted channel of a trusted certificate."""
        plc = SoftPlc("--secure", str(pki.plc_dir), "--user", "operator:s3cret").start()
        try:
            extra = ', username = "operator", password = "s3cret", server_trust = "announced"'
            async with mirrored(plc.endpoint, with_certificate(pki.client, None, extra=extra),
                                clock=False) as (_, m):
                await wait_for(lambda: peer(m).binding("valve").status == "Good", 5)
        finally:
            plc.kill()


class TestSecurityFiles:
    @pytest.mark.parametrize(("case", "message"), [
        pytest.param("other_key", "is not the key of security.certificate", id="key-mismatch"),
        pytest.param("not_a_cert", "is not an X.509 certificate in PEM or DER",
                     id="not-a-certificate"),
        pytest.param("encrypted", "needs security.private_key_password", id="key-password"),
    ])
    async def test_bad_files_are_named_before_connecting(
            self, pki: Pki, tmp_path: Path, case: str, message: str) -> None:
        """Certificate and key problems are found locally, naming the setting."""
        cert, key = pki.client.certificate, pki.client.private_key
        if case == "other_key":
            key = pki.rogue.private_key
        elif case == "not_a_cert":
            cert = key
        else:
            key = tmp_path / "encrypted.pem"
            loaded = serialization.load_pem_private_key(pki.client.private_key.read_bytes(),
                                                        None)
            key.write_bytes(loaded.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret")))
        security = HilSecurity(policy="Basic256Sha256", mode="SignAndEncrypt",
                               certificate=str(cert), private_key=str(key),
                               server_certificate=str(pki.plc.certificate))
        with pytest.raises(SecuritySetupFailed, match=message):
            await apply_security(Client("opc.tcp://127.0.0.1:4840"), security)


class TestClientCertificate:
    async def test_pki_hil_client_makes_a_usable_identity(
            self, pki: Pki, tmp_path: Path) -> None:
        """'twin-server pki hil-client' writes a certificate and key that open a secure
        link to a PLC that trusts the certificate (its ApplicationUri the mirror's),
        and never overwrites them."""
        import io

        from twin_server.cli import main
        from twin_server.security.pki import application_uris

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["pki", "hil-client", "--state-dir", str(tmp_path)]) == 0
        folder = tmp_path / "pki" / "hil"
        assert f'certificate = "{folder / "client.der"}"' in out.getvalue()
        security = HilSecurity(policy="Basic256Sha256", mode="SignAndEncrypt",
                               certificate=str(folder / "client.der"),
                               private_key=str(folder / "client.key"),
                               server_certificate=str(pki.plc.certificate))
        certificate = await apply_security(Client("opc.tcp://127.0.0.1:4840"), security)
        assert certificate is not None
        assert application_uris(certificate) == [HIL_URI]
        # copied into the PLC's trusted client certificates, as the README says
        plc_dir = tmp_path / "plc"
        (plc_dir / "trusted").mkdir(parents=True)
        for name in ("cert.der", "key.pem"):
            (plc_dir / name).write_bytes((pki.plc_dir / name).read_bytes())
        (plc_dir / "trusted" / "client.der").write_bytes((folder / "client.der").read_bytes())
        plc = SoftPlc("--secure", str(plc_dir)).start()
        try:
            made = Identity(folder / "client.der", folder / "client.key")
            async with mirrored(plc.endpoint, with_certificate(made, pki.plc.certificate),
                                clock=False) as (_, m):
                await wait_for(lambda: peer(m).binding("valve").status == "Good", 5)
        finally:
            plc.kill()
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert main(["pki", "hil-client", "--state-dir", str(tmp_path)]) == 1
        assert "exists already" in err.getvalue()
