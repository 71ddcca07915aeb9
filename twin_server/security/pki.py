"""The certificate store, laid out as OPC UA Part 12 (F.1) says, and client
certificate validation against it::

    <state_dir>/pki/
      own/certs/server_cert.der        our certificate (created on first start)
      own/private/server_key.pem       its private key (mode 0600, folder 0700)
      trusted/certs/                   client certificates, or CAs, we trust
      trusted/crl/                     revocation lists of those CAs
      issuers/certs/                   CAs that complete a chain but are not trusted alone
      issuers/crl/
      rejected/certs/                  certificates we refused, "<CN> [<thumbprint>].der"

An administrator trusts a refused client by moving its file from
``rejected/certs`` to ``trusted/certs`` (or with ``twin-server pki trust``); the
running server sees the change at the next connection, without a restart.

Validation follows Part 4, 6.1.3 (Table 106) in order: trust list
(BadCertificateUntrusted), validity period (BadCertificateTimeInvalid),
application URI against the ApplicationDescription (BadCertificateUriInvalid,
checked at CreateSession where the description is known), revocation
(BadCertificateRevoked). A certificate is trusted when it is itself in
``trusted/certs`` (the usual self-signed case) or chains, through
``issuers/certs``, to a CA in ``trusted/certs``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = structlog.get_logger(__name__)

SERVER_CERT = "server_cert.der"
SERVER_KEY = "server_key.pem"
#: a certificate closer than this to its end is renewed at start
RENEW_BEFORE = dt.timedelta(days=14)
#: backdating of a new certificate's start, for clients whose clocks run behind
CLOCK_SKEW = dt.timedelta(days=1)

#: seconds between two log events for the same refused certificate
LOG_EVERY = 60.0

_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def thumbprint(cert: x509.Certificate) -> str:
    """The OPC UA thumbprint: SHA-1 of the DER encoding, upper-case hex."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "unnamed"


def application_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def load_certificate_file(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


@dataclass(frozen=True, slots=True)
class PkiLayout:
    """The folders of one certificate store."""

    root: Path

    @property
    def own_certs(self) -> Path:
        return self.root / "own" / "certs"

    @property
    def own_private(self) -> Path:
        return self.root / "own" / "private"

    @property
    def trusted_certs(self) -> Path:
        return self.root / "trusted" / "certs"

    @property
    def trusted_crl(self) -> Path:
        return self.root / "trusted" / "crl"

    @property
    def issuers_certs(self) -> Path:
        return self.root / "issuers" / "certs"

    @property
    def issuers_crl(self) -> Path:
        return self.root / "issuers" / "crl"

    @property
    def rejected_certs(self) -> Path:
        return self.root / "rejected" / "certs"

    @property
    def server_cert(self) -> Path:
        return self.own_certs / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.own_private / SERVER_KEY

    def create(self) -> None:
        """Create every folder (the private one readable by us alone)."""
        for folder in (self.own_certs, self.trusted_certs, self.trusted_crl,
                       self.issuers_certs, self.issuers_crl, self.rejected_certs):
            folder.mkdir(parents=True, exist_ok=True)
        self.own_private.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.own_private, 0o700)


# -- our own certificate -------------------------------------------------------------

def endpoint_hostnames(endpoint_host: str | None, extra: Iterable[str] = ()) -> list[str]:
    """Names and addresses for the certificate: the endpoint's host (unless it is a
    wildcard), this machine's name and FQDN, and ``extra``; no duplicates."""
    names: list[str] = []
    wildcard = endpoint_host in (None, "", "0.0.0.0", "::")
    candidates = [*([] if wildcard else [endpoint_host or ""]), socket.gethostname(),
                  socket.getfqdn(), *extra]
    if not wildcard and _is_loopback(endpoint_host or ""):
        candidates.append("localhost")
    for name in candidates:
        if name and name not in names:
            names.append(name)
    return names


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _general_names(uri: str, hostnames: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_certificate(key: rsa.RSAPrivateKey, *, application_uri: str, name: str,
                     hostnames: Iterable[str], days: int,
                     not_before: dt.datetime | None = None,
                     issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
                     ca: bool = False) -> x509.Certificate:
    """An application instance certificate (Part 6, 6.2.2): SubjectAltName with the
    application URI and host names, key usages for signing and encryption, both
    server and client auth. Self-signed unless ``issuer`` (cert, key) is given;
    ``ca`` makes a CA certificate instead (for tests and small plants)."""
    start = not_before or (dt.datetime.now(dt.UTC) - CLOCK_SKEW)
    hosts = list(hostnames)
    subject_attrs = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if hosts and not ca:
        subject_attrs.append(x509.NameAttribute(NameOID.DOMAIN_COMPONENT, hosts[0]))
    subject = x509.Name(subject_attrs)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer_key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (
            builder.add_extension(x509.SubjectAlternativeName(
                _general_names(application_uri, hosts)), critical=False)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=issuer is None,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        )
    return builder.sign(signer_key, hashes.SHA256())


#: the HIL client's ApplicationUri by default (``HilSecurity.application_uri``)
HIL_CLIENT_URI = "urn:twin-server:hil"


def make_hil_client(folder: Path, *, application_uri: str = HIL_CLIENT_URI,
                    days: int = 730, key_size: int = 2048) -> tuple[Path, Path]:
    """A certificate for the HIL mirror to present to PLCs (an application instance
    certificate with ``application_uri`` and this host's names, DER) and its key
    (PEM), written into ``folder`` as ``client.der`` and ``client.key``; their paths.
    An existing pair is not overwritten (ValueError): a PLC trusts that one."""
    cert_path, key_path = folder / "client.der", folder / "client.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise ValueError(f"{path} exists already (a PLC may trust it); remove it, or "
                             f"give another folder with --out")
    folder.mkdir(parents=True, exist_ok=True)
    key = new_key(key_size)
    cert = make_certificate(key, application_uri=application_uri,
                            name="twin-server HIL client",
                            hostnames=endpoint_hostnames(None), days=days)
    write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert_path, key_path


def new_key(size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM readable by the owner alone."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    _write_private(path, data)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey
    created: bool  # made on this start


def ensure_server_certificate(layout: PkiLayout, *, application_uri: str, name: str,
                              hostnames: Iterable[str], key_size: int,
                              days: int) -> ServerIdentity:
    """Load our certificate and key, creating them on first start, or anew when the
    certificate has expired (or nearly), lacks the application URI or the key is
    smaller than configured. Host names missing from a kept certificate are logged."""
    layout.create()
    hosts = list(hostnames)
    reason = _renewal_reason(layout, application_uri, key_size)
    if reason is None:
        cert = load_certificate_file(layout.server_cert)
        loaded = serialization.load_pem_private_key(layout.server_key.read_bytes(), None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        missing = [h for h in hosts if h not in _san_hosts(cert)]
        if missing:
            log.warning("server_certificate_hosts_missing", missing=missing,
                        thumbprint=thumbprint(cert),
                        fix=f"delete {layout.server_cert} to create one with them "
                            "(clients must then trust the new certificate)")
        return ServerIdentity(cert, loaded, created=False)
    key = new_key(key_size)
    cert = make_certificate(key, application_uri=application_uri, name=name,
                            hostnames=hosts, days=days)
    write_key(layout.server_key, key)
    tmp = layout.server_cert.with_name(SERVER_CERT + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    os.replace(tmp, layout.server_cert)
    log.info("server_certificate_created", reason=reason, thumbprint=thumbprint(cert),
             application_uri=application_uri, hostnames=hosts, key_size=key_size,
             not_after=cert.not_valid_after_utc.isoformat(), path=str(layout.server_cert))
    return ServerIdentity(cert, key, created=True)


def _renewal_reason(layout: PkiLayout, application_uri: str, key_size: int) -> str | None:
    if not layout.server_cert.exists() or not layout.server_key.exists():
        return "first start"
    try:
        cert = load_certificate_file(layout.server_cert)
        key = serialization.load_pem_private_key(layout.server_key.read_bytes(), None)
    except (ValueError, TypeError) as exc:
        return f"unreadable certificate or key ({exc})"
    if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != cert.public_key():
        return "the key does not belong to the certificate"
    if key.key_size < key_size:
        return f"key of {key.key_size} bits, {key_size} configured"
    if cert.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return f"expires {cert.not_valid_after_utc.isoformat()}"
    if application_uri not in application_uris(cert):
        return f"application URI {application_uri!r} not in the certificate"
    return None


def _san_hosts(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return ({str(n) for n in san.get_values_for_type(x509.DNSName)}
            | {str(a) for a in san.get_values_for_type(x509.IPAddress)})


# -- the trust list ------------------------------------------------------------------

@dataclass(slots=True)
class _Lists:
    stamp: tuple[float, ...] = ()
    trusted: set[str] = field(default_factory=set)           # thumbprints
    cas: list[x509.Certificate] = field(default_factory=list)
    issuers: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)


class TrustList:
    """The trusted, issuer and revocation lists of a store, re-read whenever one of
    their folders changes; and the rejected folder."""

    def __init__(self, layout: PkiLayout, *, max_rejected: int = 100) -> None:
        self.layout = layout
        self.max_rejected = max_rejected
        self._lists = _Lists()
        self._logged: dict[str, float] = {}

    def _folders(self) -> tuple[Path, ...]:
        lay = self.layout
        return (lay.trusted_certs, lay.trusted_crl, lay.issuers_certs, lay.issuers_crl)

    def _refresh(self) -> _Lists:
        stamp = tuple(_mtime(f) for f in self._folders())
        if stamp == self._lists.stamp:
            return self._lists
        lists = _Lists(stamp=stamp)
        for cert in _certificates(self.layout.trusted_certs):
            lists.trusted.add(thumbprint(cert))
            if _is_ca(cert):
                lists.cas.append(cert)
        lists.issuers = [c for c in _certificates(self.layout.issuers_certs) if _is_ca(c)]
        lists.crls = [*_crls(self.layout.trusted_crl), *_crls(self.layout.issuers_crl)]
        self._lists = lists
        log.info("trust_list_loaded", trusted=len(lists.trusted), cas=len(lists.cas),
                 issuers=len(lists.issuers), crls=len(lists.crls))
        return lists

    def check(self, cert: x509.Certificate, now: dt.datetime | None = None) -> int | None:
        """The status code refusing ``cert``, or None if it is acceptable (its
        application URI aside: see ``check_uri``)."""
        lists = self._refresh()
        if thumbprint(cert) not in lists.trusted and not self._chains(cert, lists):
            return int(ua.StatusCodes.BadCertificateUntrusted)
        now = now or dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return int(ua.StatusCodes.BadCertificateTimeInvalid)
        for crl in lists.crls:
            if crl.issuer == cert.issuer and \
                    crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return int(ua.StatusCodes.BadCertificateRevoked)
        return None

    @staticmethod
    def check_uri(cert: x509.Certificate, application_uri: str) -> int | None:
        if application_uri not in application_uris(cert):
            return int(ua.StatusCodes.BadCertificateUriInvalid)
        return None

    @staticmethod
    def _chains(cert: x509.Certificate, lists: _Lists) -> bool:
        if not lists.cas:
            return False
        try:
            from cryptography.x509 import verification as v

            permissive = v.ExtensionPolicy.permit_all()
            builder = v.PolicyBuilder().store(v.Store(lists.cas)).extension_policies(
                ca_policy=v.ExtensionPolicy.webpki_defaults_ca(), ee_policy=permissive)
            builder.build_client_verifier().verify(cert, lists.issuers)
        except Exception:  # any failure to build or verify a chain is "not trusted"
            return False
        return True

    def reject(self, cert: x509.Certificate, status: int) -> Path | None:
        """Copy ``cert`` into rejected/certs (once), dropping the oldest files past
        ``max_rejected``; returns its path."""
        if self.max_rejected == 0:
            return None
        folder = self.layout.rejected_certs
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / rejected_name(cert)
        if not path.exists():
            existing = sorted(_cert_files(folder), key=_mtime)
            for old in existing[:max(0, len(existing) - self.max_rejected + 1)]:
                old.unlink(missing_ok=True)
            path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        now = time.monotonic()
        key = thumbprint(cert)
        if now - self._logged.get(key, -LOG_EVERY) < LOG_EVERY:
            return path  # a client retrying in a loop is logged once a minute
        self._logged[key] = now
        if len(self._logged) > 10_000:
            self._logged.clear()
        log.info("client_certificate_rejected", status=ua.StatusCode(status).name,
                 subject=common_name(cert), thumbprint=thumbprint(cert),
                 application_uris=application_uris(cert),
                 not_after=cert.not_valid_after_utc.isoformat(), path=str(path),
                 fix=_fix(status))
        return path


def _fix(status: int) -> str:
    if status == ua.StatusCodes.BadCertificateUntrusted:
        return "move it to trusted/certs, or run: twin-server pki trust <thumbprint>"
    if status == ua.StatusCodes.BadCertificateTimeInvalid:
        return "the client needs a certificate valid now (check its and our clocks)"
    if status == ua.StatusCodes.BadCertificateUriInvalid:
        return "the client's ApplicationUri must be in its certificate's SubjectAltName"
    return "check the certificate"


def rejected_name(cert: x509.Certificate) -> str:
    cn = re.sub(r"[^A-Za-z0-9._ -]", "_", common_name(cert))[:64]
    return f"{cn} [{thumbprint(cert)}].der"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


def _cert_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.suffix.lower() in _CERT_SUFFIXES and p.is_file()]


def _certificates(folder: Path) -> list[x509.Certificate]:
    certs = []
    for path in _cert_files(folder):
        try:
            certs.append(load_certificate_file(path))
        except ValueError as exc:
            log.warning("certificate_unreadable", path=str(path), error=str(exc))
    return certs


def _crls(folder: Path) -> list[x509.CertificateRevocationList]:
    crls: list[x509.CertificateRevocationList] = []
    if not folder.is_dir():
        return crls
    for path in folder.iterdir():
        if path.suffix.lower() not in (".crl", ".der", ".pem"):
            continue
        try:
            data = path.read_bytes()
            crls.append(x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
                        else x509.load_der_x509_crl(data))
        except ValueError as exc:
            log.warning("crl_unreadable", path=str(path), error=str(exc))
    return crls


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# -- administration (twin-server pki ...) --------------------------------------------

@dataclass(frozen=True, slots=True)
class CertificateEntry:
    folder: str  # "trusted", "rejected", "issuers", "own"
    path: Path
    thumbprint: str
    subject: str
    application_uris: tuple[str, ...]
    not_after: dt.datetime


def list_certificates(layout: PkiLayout) -> list[CertificateEntry]:
    entries = []
    for folder, path in (("own", layout.own_certs), ("trusted", layout.trusted_certs),
                         ("issuers", layout.issuers_certs), ("rejected", layout.rejected_certs)):
        for file in sorted(_cert_files(path)):
            try:
                cert = load_certificate_file(file)
            except ValueError:
                continue
            entries.append(CertificateEntry(folder, file, thumbprint(cert), common_name(cert),
                                            tuple(application_uris(cert)),
                                            cert.not_valid_after_utc))
    return entries


def trust(layout: PkiLayout, what: str) -> Path:
    """Trust a client certificate: ``what`` is a file (DER or PEM) or a thumbprint
    (or a unique prefix of one, at least 8 hex digits) of a certificate in
    rejected/certs. Every copy of it in rejected/certs goes (``pki list`` would
    show it as both trusted and rejected). Returns the trusted file."""
    layout.create()
    path = Path(what)
    if path.is_file():
        cert = load_certificate_file(path)
        source: Path | None = path if path.parent.resolve() == \
            layout.rejected_certs.resolve() else None
    else:
        wanted = what.strip().upper().replace(":", "")
        if not re.fullmatch(r"[0-9A-F]{8,40}", wanted):
            raise ValueError(f"{what!r} is neither a file nor a certificate thumbprint "
                             "(40 hex digits, or a unique prefix of at least 8)")
        matches = [(p, c) for p in _cert_files(layout.rejected_certs)
                   for c in [load_certificate_file(p)] if thumbprint(c).startswith(wanted)]
        if not matches:
            raise ValueError(f"no certificate with thumbprint {wanted} in "
                             f"{layout.rejected_certs}")
        if len(matches) > 1:
            raise ValueError(f"thumbprint prefix {wanted} matches {len(matches)} certificates; "
                             "give more digits")
        source, cert = matches[0]
    target = layout.trusted_certs / rejected_name(cert)
    target.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    if source is not None:
        source.unlink(missing_ok=True)
    wanted_thumbprint = thumbprint(cert)
    for rejected in _cert_files(layout.rejected_certs):
        try:
            same = thumbprint(load_certificate_file(rejected)) == wanted_thumbprint
        except (OSError, ValueError):
            continue  # not a certificate: not ours to remove
        if same:
            rejected.unlink(missing_ok=True)
    log.info("client_certificate_trusted", subject=common_name(cert),
             thumbprint=thumbprint(cert), path=str(target))
    return target


def untrust(layout: PkiLayout, what: str) -> Path:
    """Stop trusting the certificate with thumbprint (prefix) ``what``: its file
    moves from trusted/certs to rejected/certs."""
    wanted = what.strip().upper().replace(":", "")
    matches = [p for p in _cert_files(layout.trusted_certs)
               if thumbprint(load_certificate_file(p)).startswith(wanted)]
    if len(matches) != 1:
        raise ValueError(f"{len(matches)} trusted certificates match {wanted!r}; "
                         "give a thumbprint that names one")
    layout.rejected_certs.mkdir(parents=True, exist_ok=True)
    target = layout.rejected_certs / matches[0].name
    os.replace(matches[0], target)
    return target
