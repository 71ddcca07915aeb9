"""Authenticating the HIL mirror to a PLC, and a PLC's refusal put into words.

``apply_security`` prepares a fresh asyncua ``Client`` from a peer's
``[hil.<peer>.security]`` before it connects: the user identity (username and
password), and for a policy other than None the client certificate, its key and
the PLC's certificate (from the file given, else from the PLC's endpoint list).
The files are read and checked here rather than by asyncua, so that

* a PEM certificate named ``client.crt`` (or a DER one named ``.pem``) loads:
  asyncua picks the format by the file's extension;
* a missing or unreadable file, a key that does not belong to the certificate,
  or a policy and mode the PLC does not offer is a ``SecuritySetupFailed``
  whose message names the setting and the fix, not a raw parse error or an
  "unreachable PLC".

``describe_refusal`` turns the status codes with which a PLC refuses a
certificate (BadCertificateUntrusted, BadCertificateUriInvalid, ...), or a PLC
without a None endpoint refusing a link without security, into a LastError that
says which setting and what to do about it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from twin_server.config.schema import HilSecurity
from twin_server.security.pki import TrustList, application_uris, thumbprint


class SecuritySetupFailed(Exception):
    """Security toward a peer cannot be set up; the message (the peer's LastError)
    names the setting at fault and the fix."""


async def apply_security(client: Client, security: HilSecurity,
                         trust: TrustList | None = None) -> x509.Certificate | None:
    """Set ``client``'s identity and secure channel from ``security``; return the
    client certificate in use (None with policy None). A PLC certificate taken from
    its endpoints must pass ``trust`` (the daemon's trust list) unless
    ``security.server_trust`` is "announced"."""
    if security.username:
        client.set_user(security.username)
        password = security.password
        if security.password_env is not None:
            password = os.environ.get(security.password_env)
            if password is None:
                raise SecuritySetupFailed(
                    f"the environment variable {security.password_env!r} holding the "
                    f"password (security.password_env) is not set")
        if password is not None:
            client.set_password(password)
    if security.policy == "None":
        return None
    assert security.certificate is not None and security.private_key is not None  # loader
    policy: type[security_policies.SecurityPolicy] = getattr(  # (asyncua's class names)
        security_policies, f"SecurityPolicy{security.policy.replace('_', '')}")
    mode = getattr(ua.MessageSecurityMode, security.mode)
    cert_data = await _read("certificate", security.certificate)
    key_data = await _read("private_key", security.private_key)
    certificate = _certificate("certificate", security.certificate, cert_data)
    _check_key(security, certificate, key_data)
    if security.server_certificate is not None:
        server_data = await _read("server_certificate", security.server_certificate)
        _certificate("server_certificate", security.server_certificate, server_data)
    else:
        server_data = await _offered_certificate(client, security, policy.URI, mode)
        if security.server_trust == "pki":
            _check_announced(server_data, trust)
    await client.set_security(
        policy,
        uacrypto.CertProperties(cert_data, _format(cert_data)),
        uacrypto.CertProperties(key_data, _format(key_data),
                                password=security.private_key_password),
        server_certificate=uacrypto.CertProperties(server_data, _format(server_data)),
        mode=mode)
    return certificate


#: how a PLC refuses a user identity (the anonymous one included)
_IDENTITY_REFUSALS = frozenset({
    "BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected",
    "BadUserSignatureInvalid", "BadIdentityChangeNotSupported"})
#: how a PLC refuses a security policy or mode it does not offer
_POLICY_REFUSALS = frozenset({"BadSecurityModeRejected", "BadSecurityPolicyRejected"})


def refused_policy(exc: BaseException, security: HilSecurity) -> bool:
    """Whether ``exc`` is a PLC refusing our security policy or mode (asyncua's own
    check of the endpoints while creating the session, or the PLC's status); the
    message is then best made with what the PLC offers (``offered_policies``)."""
    if type(exc) is ua.UaError and str(exc).startswith("No matching endpoints"):
        return True
    return _code_name(exc) in _POLICY_REFUSALS


def describe_policy_refusal(security: HilSecurity, offered: list[str] | None,
                            table: str = "security") -> str:
    """The LastError of a refused policy or mode, naming what the PLC offers (None: it
    could not be asked)."""
    what = ("without security (policy and mode None)" if security.policy == "None"
            else f"with policy {security.policy!r} and mode {security.mode!r}")
    offers = (f"it offers: {', '.join(offered)}" if offered
              else "its endpoints could not be listed")
    fix = f"set {table}.policy and mode to one of these"
    if security.policy == "None":
        fix += (f", with {table}.certificate and private_key (the HIL client's own; "
                f"'twin-server pki hil-client' makes them)")
    return f"the PLC offers no endpoint {what}; {offers}: {fix}"


async def offered_policies(client: Client) -> list[str]:
    """The PLC's endpoints as ``Policy/Mode`` (GetEndpoints over a channel without
    security, which PLCs answer even without a None endpoint)."""
    endpoints = await client.connect_and_get_server_endpoints()
    return sorted({f"{ep.SecurityPolicyUri.rpartition('#')[2]}/{ep.SecurityMode.name}"
                   for ep in endpoints if ep.EndpointUrl.startswith(ua.OPC_TCP_SCHEME)})


def _code_name(exc: BaseException) -> str:
    if not isinstance(exc, ua.UaStatusCodeError):
        return ""
    try:
        return str(ua.StatusCode(exc.code).name)
    except Exception:  # an unknown code: not one of ours to explain
        return ""


def describe_refusal(exc: BaseException, security: HilSecurity,
                     certificate: x509.Certificate | None,
                     table: str = "security") -> str | None:
    """What a PLC's refusal of our security settings or user means and how to fix it
    (``table``: the config table that holds them, ``[hil.<peer>.security]``); None
    for other errors."""
    if refused_policy(exc, security):
        return describe_policy_refusal(security, None, table)
    name = _code_name(exc)
    if name in _IDENTITY_REFUSALS:
        if security.username is None:
            return (f"the PLC refuses anonymous sessions ({name}): set {table}.username "
                    f"and password (or password_env) to a user the PLC knows")
        return (f"the PLC refused user {security.username!r} ({name}): check {table}."
                f"{'password_env' if security.password_env else 'password'} and that "
                f"the PLC lets this user read and write its nodes")
    if not name or certificate is None:
        return None
    mine = f"our certificate {security.certificate!r}"
    if name in ("BadCertificateUntrusted", "BadCertificateChainIncomplete",
                "BadCertificateIssuerRevocationUnknown", "BadCertificateRevocationUnknown"):
        return (f"the PLC does not trust {mine} ({name}): trust it on the PLC (copy it "
                f"into the PLC's trusted client certificates, or accept it in its "
                f"certificate manager)")
    if name == "BadCertificateUriInvalid":
        uris = application_uris(certificate)
        return (f"the PLC refused {mine} ({name}): security.application_uri "
                f"{security.application_uri!r} is not the certificate's SubjectAltName URI "
                f"({', '.join(repr(u) for u in uris) or 'it has none'}); set application_uri "
                f"to it or issue a certificate for {security.application_uri!r}")
    if name in ("BadCertificateTimeInvalid", "BadCertificateIssuerTimeInvalid"):
        return (f"the PLC refused {mine} ({name}): it is valid from "
                f"{certificate.not_valid_before_utc:%Y-%m-%d} to "
                f"{certificate.not_valid_after_utc:%Y-%m-%d}; renew it (or check the "
                f"PLC's clock)")
    if name in ("BadCertificateRevoked", "BadCertificateIssuerRevoked"):
        return f"the PLC has revoked {mine} ({name}): issue a new one and have it trusted"
    if name in ("BadCertificateUseNotAllowed", "BadCertificateIssuerUseNotAllowed"):
        return (f"the PLC refused {mine} ({name}): its key usage must allow "
                f"digitalSignature, nonRepudiation, keyEncipherment and dataEncipherment, "
                f"its extended key usage clientAuth")
    if name.startswith(("BadCertificate", "BadSecurity")):
        return (f"the PLC refused the secure connection with {mine} ({name}: "
                f"{exc.args[0] if exc.args else ''}); check security.certificate, policy "
                f"{security.policy!r} and mode {security.mode!r}")
    return None


def timeout_hint(security: HilSecurity) -> str:
    """Why a PLC may stay silent while a secure channel opens, for a connect timeout."""
    if security.policy == "None" or security.server_certificate is None:
        return ""
    return (f" (a PLC that cannot decrypt our request stays silent: is "
            f"security.server_certificate {security.server_certificate!r} its current "
            f"certificate? leave it out to take the one the PLC announces)")


async def _read(setting: str, path: str) -> bytes:
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        where = ("" if Path(path).is_absolute()
                 else f" (relative to the daemon's working directory {os.getcwd()!r})")
        raise SecuritySetupFailed(
            f"cannot read security.{setting} {path!r}{where}: {exc.strerror or exc}") from None


def _format(data: bytes) -> str:
    return "pem" if data.lstrip().startswith(b"-----BEGIN") else "der"


def _certificate(setting: str, path: str, data: bytes) -> x509.Certificate:
    try:
        if _format(data) == "pem":
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SecuritySetupFailed(
            f"security.{setting} {path!r} is not an X.509 certificate in PEM or DER "
            f"({exc})") from None


def _check_key(security: HilSecurity, certificate: x509.Certificate, data: bytes) -> None:
    path = security.private_key
    password = (security.private_key_password.encode()
                if security.private_key_password is not None else None)
    key: PrivateKeyTypes
    try:
        if _format(data) == "pem":
            key = serialization.load_pem_private_key(data, password)
        else:
            key = serialization.load_der_private_key(data, password)
    except (ValueError, TypeError) as exc:  # TypeError: a password missing or not needed
        raise SecuritySetupFailed(
            f"cannot load security.private_key {path!r}: {exc} (PEM or DER; an encrypted "
            f"key needs security.private_key_password)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecuritySetupFailed(
            f"security.private_key {path!r} is a {type(key).__name__.lstrip('_')}: policy "
            f"{security.policy!r} needs an RSA key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise SecuritySetupFailed(
            f"security.private_key {path!r} is not the key of security.certificate "
            f"{security.certificate!r}")


def _check_announced(data: bytes, trust: TrustList | None) -> None:
    """Refuse the certificate a PLC announced unless the daemon's trust list accepts
    it; an untrusted one is copied to the rejected folder, to be moved to trusted."""
    if trust is None:
        raise SecuritySetupFailed(
            "there is no trust list to check the PLC's certificate against: pin it with "
            "security.server_certificate, or set security.server_trust = \"announced\"")
    certificate = x509.load_der_x509_certificate(data)
    status = trust.check(certificate)
    if status is None:
        return
    name = ua.StatusCode(status).name
    who = (f"the PLC's certificate {certificate.subject.rfc4514_string()!r} "
           f"(SHA-1 {thumbprint(certificate)})")
    pin = ("or pin it with security.server_certificate, or set security.server_trust = "
           "\"announced\" to take it unchecked")
    if name == "BadCertificateUntrusted":
        saved = trust.reject(certificate, status)
        where = f"saved as {str(saved)!r}; move it " if saved else "copy it "
        raise SecuritySetupFailed(
            f"{who} is not trusted ({name}): {where}into "
            f"{str(trust.layout.trusted_certs)!r} to trust it, {pin}")
    if name == "BadCertificateTimeInvalid":
        raise SecuritySetupFailed(
            f"{who} is not valid now ({name}): valid from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}; renew it on the PLC (or check "
            f"the clocks)")
    raise SecuritySetupFailed(f"{who} is refused by the trust list ({name}); {pin}")


async def _offered_certificate(client: Client, security: HilSecurity, policy_uri: str,
                               mode: ua.MessageSecurityMode) -> bytes:
    """The PLC's certificate from its endpoint for our policy and mode (GetEndpoints
    over a channel without security, which PLCs answer even with no None endpoint)."""
    endpoints = await client.connect_and_get_server_endpoints()
    for ep in endpoints:
        if (ep.EndpointUrl.startswith(ua.OPC_TCP_SCHEME) and ep.SecurityMode == mode
                and ep.SecurityPolicyUri == policy_uri):
            if not ep.ServerCertificate:
                break
            return bytes(uacrypto.der_from_x509(uacrypto.x509_from_der(ep.ServerCertificate)))
    offered = sorted({f"{ep.SecurityPolicyUri.rpartition('#')[2]}/{ep.SecurityMode.name}"
                      for ep in endpoints})
    raise SecuritySetupFailed(
        f"the PLC offers no endpoint with a certificate for "
        f"{security.policy}/{security.mode} (it offers: {', '.join(offered) or 'none'}); "
        f"set security.policy and mode to one of these")
