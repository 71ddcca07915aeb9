"""User-name tokens: the encryption each endpoint asks for, and passwords that must
arrive that way.

OPC UA Part 4, 7.36.3: unless the channel itself is encrypted (SignAndEncrypt),
the client encrypts the password, followed by the server's last nonce, with the
server's public key, as the token policy's SecurityPolicyUri says. asyncua
advertises that on its None endpoint but then takes whatever comes: a plain-text
password (anyone on the wire reads it), a password encrypted for another
session's nonce (anyone on the wire replays it: asyncua cuts off the nonce
without comparing it), or one encrypted with RSA PKCS#1 v1.5 (Basic128Rsa15,
whose padding errors leak). So here:

* ``advertise`` offers the user-name token on the None endpoint twice, encrypted
  with Basic256Sha256 (RSA-OAEP) first and with Aes256_Sha256_RsaPss
  (RSA-OAEP-SHA256) second. Clients such as asyncua and python-opcua take the
  first user-name policy they find, and python-opcua 0.98 knows nothing newer than
  Basic256Sha256; clients that choose take the one they prefer. A Sign endpoint
  asks for its own policy and a SignAndEncrypt endpoint for none (asyncua's
  choice, kept).
* ``PasswordCheck`` decrypts the password itself and refuses, with
  BadIdentityTokenInvalid and before any password is compared, one that is plain
  text outside a SignAndEncrypt channel, encrypted with an algorithm not offered,
  undecryptable, or not followed by this session's nonce. The session stays
  unactivated; the refusal is logged without the password.

The server needs its certificate for this even when it offers only the None
endpoint: ``configure_security`` makes one whatever the policies.

Relies on asyncua internals (asyncua 2.1): ``InternalServer.add_endpoint`` (called
by ``Server._set_endpoints`` for every endpoint at start), ``decrypt_user_token``
(called by ``InternalSession.activate_session``; a ServiceError it raises is
answered as it is) and ``private_key``; ``InternalSession.nonce``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import replace
from struct import unpack_from
from typing import Any, NoReturn

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import (
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)

from twin_server.security.guard import CHANNEL, CONNECTION, GuardCounters

log = structlog.get_logger(__name__)

#: the token policies of the None endpoint for user names: (PolicyId, SecurityPolicyUri)
NONE_ENDPOINT_POLICIES: tuple[tuple[str, str], ...] = (
    ("username_basic256sha256", SecurityPolicyBasic256Sha256.URI),
    ("username_aes256sha256rsapss", SecurityPolicyAes256Sha256RsaPss.URI),
)

#: the encryption algorithms (Part 7's AsymmetricEncryptionURI) a password may come in
_DECRYPT: dict[str, Callable[[Any, bytes], bytes]] = {
    # Basic256Sha256, Aes128_Sha256_RsaOaep
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep": uacrypto.decrypt_rsa_oaep,
    # Aes256_Sha256_RsaPss
    "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256": uacrypto.decrypt_rsa_oaep_sha256,
}

#: most characters of a client's user name put in a log event
NAME_EXCERPT = 64


def install_user_tokens(iserver: Any, counters: GuardCounters) -> None:
    """Hook ``iserver`` (before ``Server.start``): what the None endpoint advertises
    for user names, and how a user-name token's password is taken."""
    add_endpoint = iserver.add_endpoint

    def add(endpoint: ua.EndpointDescription) -> None:
        add_endpoint(advertise(endpoint))

    # asyncua internals: instance attributes replacing InternalServer methods
    iserver.add_endpoint = add
    iserver.decrypt_user_token = PasswordCheck(iserver, counters)


def advertise(endpoint: ua.EndpointDescription) -> ua.EndpointDescription:
    """``endpoint`` with the user-name token policies it should offer."""
    if endpoint.SecurityMode != ua.MessageSecurityMode.None_ or not endpoint.ServerCertificate:
        return endpoint
    tokens: list[ua.UserTokenPolicy] = []
    for token in endpoint.UserIdentityTokens:
        if token.TokenType != ua.UserTokenType.UserName:
            tokens.append(token)
            continue
        tokens.extend(replace(token, PolicyId=policy_id, SecurityPolicyUri=uri)
                      for policy_id, uri in NONE_ENDPOINT_POLICIES)
    return replace(endpoint, UserIdentityTokens=tokens)


class PasswordCheck:
    """``InternalServer.decrypt_user_token``: (user name, password) of a token whose
    password came as its channel requires, else a ServiceError."""

    def __init__(self, iserver: Any, counters: GuardCounters) -> None:
        self.iserver = iserver
        self.counters = counters

    def __call__(self, isession: Any, token: ua.UserNameIdentityToken) -> tuple[str, str]:
        name = token.UserName or ""
        channel = CHANNEL.get()
        algorithm = token.EncryptionAlgorithm or ""
        if not algorithm:
            if channel is not None and channel.mode != ua.MessageSecurityMode.SignAndEncrypt:
                self._refuse(name, "password not encrypted",
                             "encrypt it as the endpoint's user token policy says "
                             "(any current client does), or use a SignAndEncrypt endpoint")
            # a SignAndEncrypt channel; or no channel of ours, which Guard.get_user refuses
            return name, self._text(name, token.Password)
        decrypt = _DECRYPT.get(algorithm)
        if decrypt is None:
            self._refuse(name, "encryption algorithm not offered",
                         "use a user token policy the endpoint offers", algorithm=algorithm[:80])
        try:
            raw = decrypt(self.iserver.private_key, bytes(token.Password or b""))
        except Exception:  # any failure of the RSA decryption: garbage or another key
            self._refuse(name, "password cannot be decrypted",
                         "encrypt it with this server's certificate (GetEndpoints)")
        nonce = bytes(isession.nonce or b"")
        length = unpack_from("<I", raw)[0] if len(raw) >= 4 else -1
        if not nonce or length != len(raw) - 4 or length < len(nonce) \
                or not hmac.compare_digest(raw[len(raw) - len(nonce):], nonce):
            self._refuse(name, "password not encrypted for this session",
                         "append the server nonce of this session (CreateSession or the "
                         "last ActivateSession response) before encrypting")
        return name, self._text(name, raw[4:len(raw) - len(nonce)])

    def _text(self, name: str, data: bytes | str | None) -> str:
        if data is None or isinstance(data, str):
            return data or ""
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(name, "password not UTF-8", "send the password as UTF-8")

    def _refuse(self, name: str, reason: str, fix: str, **extra: Any) -> NoReturn:
        conn = CONNECTION.get()
        self.counters.sessions_refused += 1
        log.info("login_refused", user=name[:NAME_EXCERPT], peer=conn.peer if conn else None,
                 reason=reason, status="BadIdentityTokenInvalid", fix=fix, **extra)
        raise ServiceError(ua.StatusCodes.BadIdentityTokenInvalid)

