"""The users file and its commands, password hashes, login throttling, the role
table and the trust list, without a server."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from twin_server.security import cli
from twin_server.security import pki as P
from twin_server.security.roles import Role, TwinUser, may_call, may_use_service, may_write
from twin_server.security.users import (
    UsersFileError,
    UserStore,
    add_user,
    hash_password,
    read_password,
    read_users,
    remove_user,
    set_password,
    verify_password,
)

NS = 2


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="twin-server")
    cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    status = cli.run(parser.parse_args(argv), stdin=io.StringIO(stdin), stdout=out)
    return status, out.getvalue()


class TestPasswordHash:
    def test_format(self) -> None:
        """A hash is scrypt$N$r$p$salt$key with a 16-byte salt and a 32-byte key."""
        scheme, n, r, p, salt, key = hash_password("correct horse").split("$")
        assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
        import base64

        assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32

    def test_salted(self) -> None:
        """The same password hashes differently each time, and both verify."""
        a, b = hash_password("same password"), hash_password("same password")
        assert a != b
        assert verify_password("same password", a) and verify_password("same password", b)

    @pytest.mark.parametrize("encoded", [
        pytest.param("", id="empty"),
        pytest.param("md5$abc", id="other-scheme"),
        pytest.param("scrypt$16384$8$1$!!$!!", id="bad-base64"),
    ])
    def test_malformed_matches_nothing(self, encoded: str) -> None:
        """A malformed hash matches no password."""
        assert not verify_password("anything", encoded)

    def test_wrong_password(self) -> None:
        """A wrong password does not verify."""
        assert not verify_password("wrong horse", hash_password("correct horse"))


class TestUsersFile:
    def test_add_writes_0600_without_password(self, tmp_path: Path) -> None:
        """``user add`` (password on stdin) writes a 0600 file holding the hash only."""
        status, out = run_cli(["user", "add", "alice", "--role", "operator",
                               "--state-dir", str(tmp_path)], "s3cret-enough\n")
        path = tmp_path / "users.json"
        assert status == 0 and "alice" in out
        assert path.stat().st_mode & 0o777 == 0o600
        assert "s3cret-enough" not in path.read_text()
        entry = json.loads(path.read_text())["users"]["alice"]
        assert entry["role"] == "operator" and entry["password"].startswith("scrypt$")

    def test_passwd(self, tmp_path: Path) -> None:
        """``user passwd`` replaces the hash: the new password verifies, the old not."""
        path = tmp_path / "users.json"
        add_user(path, "bob", Role.VIEWER, "first password")
        status, _ = run_cli(["user", "passwd", "bob", "--state-dir", str(tmp_path)],
                            "second password\n")
        assert status == 0
        record = read_users(path)["bob"]
        assert verify_password("second password", record.password)
        assert not verify_password("first password", record.password)
        assert record.role == Role.VIEWER

    def test_remove(self, tmp_path: Path) -> None:
        """``user remove`` deletes the user; removing it again fails with status 1."""
        add_user(tmp_path / "users.json", "carol", Role.ADMIN, "carol's password")
        assert run_cli(["user", "remove", "carol", "--state-dir", str(tmp_path)])[0] == 0
        assert read_users(tmp_path / "users.json") == {}
        assert run_cli(["user", "remove", "carol", "--state-dir", str(tmp_path)])[0] == 1

    def test_add_existing_refused(self, tmp_path: Path) -> None:
        """Adding a user twice is refused and keeps the first password."""
        path = tmp_path / "users.json"
        add_user(path, "dan", Role.VIEWER, "dan's password")
        with pytest.raises(UsersFileError):
            add_user(path, "dan", Role.ADMIN, "other password")
        assert verify_password("dan's password", read_users(path)["dan"].password)

    def test_short_password_refused(self, tmp_path: Path) -> None:
        """A password shorter than 8 characters is refused."""
        with pytest.raises(UsersFileError, match="8"):
            add_user(tmp_path / "users.json", "eve", Role.VIEWER, "short")

    def test_password_from_stdin_line(self) -> None:
        """A piped password is the first line of stdin without its newline."""
        assert read_password(io.StringIO("pass word\r\nrest\n")) == "pass word"

    def test_password_prompt_twice(self) -> None:
        """On a terminal the password is asked twice; different answers are refused."""
        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        answers = iter(["one password", "another"])
        with pytest.raises(UsersFileError, match="differ"):
            read_password(Tty(), prompt=lambda _: next(answers))
        same = iter(["one password", "one password"])
        assert read_password(Tty(), prompt=lambda _: next(same)) == "one password"

    def test_store_rereads_changes(self, tmp_path: Path) -> None:
        """The daemon's store sees a user added after it started."""
        path = tmp_path / "users.json"
        store = UserStore(path)
        assert store.authenticate("fay", "fay's password") is None
        add_user(path, "fay", Role.OPERATOR, "fay's password")
        store.throttle.succeeded("unknown", "fay")
        assert store.authenticate("fay", "fay's password") == Role.OPERATOR
        set_password(path, "fay", "new password!")
        assert store.authenticate("fay", "fay's password") is None
        remove_user(path, "fay")


    def test_reconnect_skips_scrypt(self, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """A user who logs in again with the same password is not checked by scrypt
        again (tens of ms on the event loop); a wrong password always is, and a
        new password in the file forgets the old one."""
        from twin_server.security import users as users_module

        path = tmp_path / "users.json"
        add_user(path, "gil", Role.VIEWER, "gil's password")
        checks: list[str] = []
        real = users_module.verify_password

        def counted(password: str, encoded: str) -> bool:
            checks.append(password)
            return real(password, encoded)

        monkeypatch.setattr(users_module, "verify_password", counted)
        store = UserStore(path)
        for _ in range(3):
            assert store.authenticate("gil", "gil's password") == Role.VIEWER
        assert checks == ["gil's password"]
        assert store.authenticate("gil", "not gil's password") is None
        assert store.authenticate("gil", "gil's password") == Role.VIEWER
        assert checks == ["gil's password", "not gil's password"]
        set_password(path, "gil", "gil's new password")
        assert store.authenticate("gil", "gil's password") is None
        assert checks[-1] == "gil's password" and len(checks) == 3


class TestRoles:
    @pytest.mark.parametrize("path, role", [
        pytest.param("Sessions.s.Components.c.Inputs.x", Role.OPERATOR, id="input"),
        pytest.param("Sessions.s.Components.c.Parameters.k", Role.OPERATOR, id="parameter"),
        pytest.param("Sessions.s.Components.c.States.v", Role.OPERATOR, id="state"),
        pytest.param("Sessions.s.RealtimeFactor", Role.OPERATOR, id="realtime-factor"),
        pytest.param("Sessions.s.Components.c.Outputs.y", Role.ADMIN, id="output"),
        pytest.param("Twins.t.Description", Role.ADMIN, id="twin"),
    ])
    def test_writes(self, path: str, role: Role) -> None:
        """Who may write which node."""
        node = ua.NodeId(path, NS)
        for r in Role:
            assert may_write(TwinUser.of("u", r), node, NS) == (r >= role), r

    @pytest.mark.parametrize("method, role", [
        pytest.param("Sessions.s.Start", Role.OPERATOR, id="start"),
        pytest.param("Sessions.s.Step", Role.OPERATOR, id="step"),
        pytest.param("Sessions.s.SetParameters", Role.OPERATOR, id="set-parameters"),
        pytest.param("Sessions.s.Fork", Role.ADMIN, id="fork"),
        pytest.param("CreateSession", Role.ADMIN, id="create-session"),
        pytest.param("DeleteSession", Role.ADMIN, id="delete-session"),
        pytest.param("DefineTwin", Role.ADMIN, id="define-twin"),
        pytest.param("RemoveTwin", Role.ADMIN, id="remove-twin"),
        pytest.param("ReloadConfig", Role.ADMIN, id="reload-config"),
        pytest.param("SomethingNew", Role.ADMIN, id="unknown"),
    ])
    def test_calls(self, method: str, role: Role) -> None:
        """Who may call which method; an unknown one is admin-only."""
        node = ua.NodeId(method, NS)
        for r in Role:
            assert may_call(TwinUser.of("u", r), node, NS) == (r >= role), r

    def test_services(self) -> None:
        """Viewers read, subscribe, and send Write and Call (refused item by item by the
        guard, not as a whole); node management is admin-only."""
        def svc(name: str) -> ua.NodeId:
            return ua.NodeId(getattr(ua.ObjectIds, f"{name}Request_Encoding_DefaultBinary"))

        viewer, operator, admin = (TwinUser.of(None, r) for r in Role)
        for name in ("Read", "Browse", "CreateSubscription", "CreateMonitoredItems",
                     "Publish", "HistoryRead", "Call", "Write"):
            assert may_use_service(viewer, svc(name)), name
        assert may_use_service(operator, svc("Write"))
        assert not may_use_service(viewer, svc("AddNodes"))
        assert not may_use_service(operator, svc("AddNodes"))
        assert may_use_service(admin, svc("AddNodes"))
        assert not may_use_service(admin, svc("QueryFirst"))


class TestTrustList:
    @pytest.fixture
    def layout(self, tmp_path: Path) -> P.PkiLayout:
        layout = P.PkiLayout(tmp_path / "pki")
        layout.create()
        return layout

    def test_ca_issued_trusted(self, layout: P.PkiLayout) -> None:
        """A certificate issued by a CA in trusted/certs is trusted; revoked in that
        CA's CRL it is refused with BadCertificateRevoked."""
        ca_key = P.new_key()
        ca = P.make_certificate(ca_key, application_uri="", name="Plant CA", hostnames=[],
                                days=365, ca=True)
        key = P.new_key()
        leaf = P.make_certificate(key, application_uri="urn:c", name="client",
                                  hostnames=["localhost"], days=30, issuer=(ca, ca_key))
        trust = P.TrustList(layout)
        assert trust.check(leaf) == ua.StatusCodes.BadCertificateUntrusted
        (layout.trusted_certs / "ca.der").write_bytes(ca.public_bytes(serialization.Encoding.DER))
        assert trust.check(leaf) is None
        now = dt.datetime.now(dt.UTC)
        crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(now).next_update(now + dt.timedelta(days=1))
               .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                        .serial_number(leaf.serial_number)
                                        .revocation_date(now).build())
               .sign(ca_key, hashes.SHA256()))
        (layout.trusted_crl / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
        assert trust.check(leaf) == ua.StatusCodes.BadCertificateRevoked

    def test_rejected_folder_bounded(self, layout: P.PkiLayout) -> None:
        """rejected/certs keeps at most max_rejected files, dropping the oldest."""
        trust = P.TrustList(layout, max_rejected=3)
        key = P.new_key()
        for i in range(5):
            cert = P.make_certificate(key, application_uri="urn:c", name=f"c{i}",
                                      hostnames=[], days=30)
            trust.reject(cert, ua.StatusCodes.BadCertificateUntrusted)
        names = sorted(p.name for p in layout.rejected_certs.iterdir())
        assert len(names) == 3 and names[0].startswith("c2")

    def test_renewed_when_uri_changes(self, layout: P.PkiLayout) -> None:
        """A certificate without the configured application URI is replaced."""
        first = P.ensure_server_certificate(layout, application_uri="urn:a", name="s",
                                            hostnames=["localhost"], key_size=2048, days=365)
        again = P.ensure_server_certificate(layout, application_uri="urn:b", name="s",
                                            hostnames=["localhost"], key_size=2048, days=365)
        assert first.created and again.created
        assert P.application_uris(again.certificate) == ["urn:b"]
