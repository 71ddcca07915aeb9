"""Who a web request comes from, and whether it may do what it asks.

The same users file, roles and anonymous access as OPC UA (``security/``): the
daemon's one ``UserStore`` checks the passwords, with its login throttle, so a
password guessed over HTTP counts against the same user and address as over
OPC UA. A request authenticates with

* HTTP Basic (``Authorization: Basic ...``): a script's or curl's way, checked
  against the store (scrypt, the throttle, a ``login_accepted`` log line) once
  per ``BASIC_REMEMBERED`` seconds per user and password: a script's loop of
  requests in between costs a keyed hash each; an edit of the users file (a
  password or role changed, a user removed) applies to the next request;
* a token (``Authorization: Bearer <token>``, or ``?token=`` on the WebSocket,
  which browsers cannot give headers): ``POST /api/login`` with Basic
  credentials hands one out, valid for ``web.token_lifetime`` seconds, held in
  this process only (a restart signs everyone out);
* nothing: the anonymous role (``server.security.anonymous``) when OPC UA allows
  anonymous clients, else 401 with a Basic challenge.

Each operation needs the role its OPC UA method or write needs
(``security/roles.py``: ``METHOD_ROLES``, operators write inputs, states,
parameters and RealtimeFactor); a request below it gets 403 BadUserAccessDenied.

Cross-site requests: a browser sends the credentials it holds (Basic) with any
request a foreign page makes it send. Every state-changing request (not GET,
HEAD or OPTIONS) whose ``Origin`` is not this server's, or that the browser marks
``Sec-Fetch-Site: cross-site``, is refused with 403 before anything is read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from twin_server.security.roles import Role
from twin_server.security.users import UserStore
from twin_server.web.errors import Refused

log = structlog.get_logger(__name__)

#: the challenge of a 401 (a browser asks for a user name and password)
CHALLENGE = {"WWW-Authenticate": 'Basic realm="twin-server", charset="UTF-8"'}
#: methods that change nothing: no cross-site check
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: most tokens held at once (the oldest goes first)
MAX_TOKENS = 10_000
#: seconds a verified Basic user name and password are taken without the store
BASIC_REMEMBERED = 10.0
#: most Basic credentials remembered at once
MAX_REMEMBERED = 1_000


@dataclass(frozen=True, slots=True)
class WebUser:
    """Who a request comes from: ``name`` None for an anonymous one."""

    name: str | None
    role: Role

    def __str__(self) -> str:
        return f"{self.name or '<anonymous>'} ({self.role})"


@dataclass
class Authenticator:
    """Users from the daemon's ``UserStore``; tokens of this process."""

    users: UserStore
    anonymous: Role | None  # None: anonymous access is off
    token_lifetime: float = 3600.0
    _tokens: dict[str, tuple[WebUser, float]] = field(default_factory=dict)
    #: keyed digest of "name:password" -> (user, until, the users the store had)
    _remembered: dict[bytes, tuple[WebUser, float, object]] = field(default_factory=dict)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def identify(self, request: web.Request) -> WebUser:
        """The request's user (Refused 401 when it cannot be identified)."""
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            name, password = _basic(credentials)
            return self._login(name, password, request.remote)
        if scheme == "bearer":
            return self._token(credentials.strip())
        if header:
            raise Refused("BadIdentityTokenRejected",
                          f"the Authorization scheme {scheme!r} is not supported: use Basic "
                          f"or Bearer (a token from POST /api/login)", headers=CHALLENGE)
        token = request.query.get("token")
        if token is not None and request.path.endswith("/live"):
            return self._token(token)
        if self.anonymous is None:
            raise Refused("BadIdentityTokenRejected",
                          "anonymous access is off (server.security.anonymous = \"off\"): "
                          "give a user name and password (HTTP Basic) or a token",
                          headers=CHALLENGE)
        return WebUser(None, self.anonymous)

    def _login(self, name: str, password: str, peer: str | None) -> WebUser:
        digest = hmac.digest(self._key, f"{name}\0{password}".encode(), "sha256")
        now = time.monotonic()
        users = self.users.users()  # (re-read when the file changed)
        found = self._remembered.get(digest)
        if found is not None and found[1] > now and found[2] is users:
            return found[0]
        role = self.users.authenticate(name, password, peer)
        if role is None:
            raise Refused("BadIdentityTokenRejected",
                          f"user {name[:64]!r} was not accepted: unknown user, wrong password, "
                          f"or too many failed logins (wait, then try again)",
                          headers=CHALLENGE)
        user = WebUser(name, role)
        if len(self._remembered) >= MAX_REMEMBERED:
            self._remembered.clear()
        self._remembered[digest] = (user, now + BASIC_REMEMBERED, users)
        return user

    def _token(self, token: str) -> WebUser:
        found = self._tokens.get(token)
        if found is None or found[1] < time.monotonic():
            self._tokens.pop(token, None)
            raise Refused("BadIdentityTokenRejected",
                          "the token is unknown or expired: log in again (POST /api/login)",
                          headers=CHALLENGE)
        return found[0]

    def issue(self, user: WebUser) -> tuple[str, float]:
        """A new token for ``user`` and its lifetime in seconds."""
        now = time.monotonic()
        if len(self._tokens) >= MAX_TOKENS:
            for key in [k for k, (_, expires) in self._tokens.items() if expires < now]:
                del self._tokens[key]
            while len(self._tokens) >= MAX_TOKENS:
                del self._tokens[next(iter(self._tokens))]
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (user, now + self.token_lifetime)
        return token, self.token_lifetime

    def revoke(self, request: web.Request) -> bool:
        """Forget the request's Bearer token; whether it had one."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._tokens.pop(token.strip(), None) is not None


def _basic(credentials: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Refused("BadIdentityTokenRejected",
                      "the Basic credentials are not base64 of UTF-8 user:password",
                      headers=CHALLENGE) from None
    name, colon, password = text.partition(":")
    if not colon:
        raise Refused("BadIdentityTokenRejected",
                      "the Basic credentials are not user:password", headers=CHALLENGE)
    return name, password


def require(user: WebUser, role: Role, what: str) -> None:
    """Refuse (403 BadUserAccessDenied) a user below ``role``."""
    if user.role < role:
        log.info("web_access_denied", user=str(user), operation=what, needs=str(role))
        raise Refused("BadUserAccessDenied",
                      f"{what} needs the {role} role; {user} may not (the users file sets "
                      f"roles: twin-server user add/role)")


def check_same_origin(request: web.Request) -> None:
    """Refuse (403) a state-changing request that a page of another site made."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if (origin is not None and origin != own) or \
            request.headers.get("Sec-Fetch-Site") == "cross-site":
        log.info("web_cross_site_refused", origin=origin, path=request.path)
        raise Refused("BadUserAccessDenied",
                      f"a cross-site request was refused: its Origin {origin!r} is not "
                      f"{own!r} (state-changing calls come from this server's own pages, "
                      f"or from clients that send no Origin, such as curl)")
