"""The hooks that enforce security inside asyncua's server.

asyncua 2.1 offers few hooks, and some of its defaults are open doors; this
module closes them without changing asyncua:

* **Channels.** asyncua opens a channel with *any* client certificate and, even
  when no None endpoint is configured, accepts a SecurityPolicy#None channel
  (its initial policy). ``ChannelFactory`` wraps each security-policy factory so
  that opening a channel through one of *our* endpoints records it (policy, mode,
  the client certificate and its validation) in the connection's context
  (``CHANNEL``, a ContextVar: each connection's messages are processed in its own
  asyncio task). A session on a channel that is not ours, or whose certificate
  was refused, is never activated.
* **Certificates.** ``certificate_validator`` (asyncua's ``set_certificate_validator``
  hook, called at CreateSession) answers with the status of the channel's
  certificate or checks its application URI against the client's description.
* **Users.** ``TwinUserManager.get_user`` (called at ActivateSession) turns the
  identity token into a ``TwinUser`` with our role, or refuses it; a first
  activation must find room (``room.SessionRoom``: the session limit, the client
  address's share of it, abandoned sessions giving way). How the password came
  is checked before (``tokens.PasswordCheck``).
* **Requests.** ``TwinRuleset.check_validity`` runs before every request of an
  activated session: it refuses services the role may not use (BadUserAccessDenied),
  enforces subscription and monitored-item limits and the OperationLimits of one
  request (``operations.py``: BadTooManyOperations), and records the user in
  ``CURRENT_USER`` for the services that asyncua calls without it (Call, Read).
* **Items.** ``GuardedAttributeService`` and ``GuardedMethodService`` wrap the
  server's attribute and method services and refuse each write or call the user's
  role may not make, item by item, with BadUserAccessDenied (a viewer's Write too:
  its request is answered per node, never refused whole); the rest go through
  unchanged. A call to an object or method that does not exist gets
  BadNodeIdUnknown or BadMethodInvalid, whoever calls, and so does one of our
  methods called on an object it does not belong to. Read answers UserAccessLevel
  and UserExecutable for the reading user.

``CURRENT_USER`` unset (None) means the call did not come from a client request:
the server itself, through asyncua's internal session, which may do anything.
"""

from __future__ import annotations

import contextvars
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import PermissionRuleset, User
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from twin_server.config.security import LimitsConfig
from twin_server.opcua.patches import internals
from twin_server.security import operations
from twin_server.security.pki import TrustList, thumbprint
from twin_server.security.roles import (
    Role,
    TwinUser,
    may_call,
    may_use_service,
    may_write,
    role_of,
)
from twin_server.security.room import SessionRoom
from twin_server.security.users import UserStore

log = structlog.get_logger(__name__)

_SECURITY_NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"


@dataclass(slots=True)
class Channel:
    """The secure channel of one connection, as opened through one of our endpoints."""

    policy_uri: str
    mode: ua.MessageSecurityMode
    certificate: x509.Certificate | None = None
    refusal: int | None = None  # status code refusing the client certificate
    uri_checked: bool = False   # CreateSession checked it against the ApplicationUri

    @property
    def secure(self) -> bool:
        return self.policy_uri != _SECURITY_NONE

    @property
    def thumbprint(self) -> str | None:
        return thumbprint(self.certificate) if self.certificate is not None else None


@dataclass(slots=True)
class Connection:
    """The client session a connection works with: created on it, or (reconnect)
    looked up by its authentication token."""

    peer: str | None
    session: Any
    created_here: bool


CHANNEL: contextvars.ContextVar[Channel | None] = contextvars.ContextVar(
    "twin_server_channel", default=None)
CONNECTION: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "twin_server_connection", default=None)
CURRENT_USER: contextvars.ContextVar[User | None] = contextvars.ContextVar(
    "twin_server_user", default=None)


def current_user() -> User | None:
    """The user of the client request being served; None for the server's own calls."""
    return CURRENT_USER.get()


def current_user_name() -> str:
    """The calling client's user name, "anonymous" for an anonymous client, "" for the
    server's own calls (what an alarm's ClientUserId and a run's user show)."""
    user = CURRENT_USER.get()
    return getattr(user, "name", None) or ("" if user is None else "anonymous")


def _peer(name: Any) -> str | None:
    if isinstance(name, tuple) and name:
        return str(name[0])
    return str(name) if name else None


@dataclass(slots=True)
class GuardCounters:
    services_refused: int = 0
    writes_refused: int = 0
    calls_refused: int = 0
    certificates_refused: int = 0
    sessions_refused: int = 0
    limits_hit: int = 0
    sessions_displaced: int = 0


@dataclass(slots=True)
class Guard:
    """Everything the hooks share: the namespace, trust list, users and limits."""

    namespace: int
    trust: TrustList | None
    users: UserStore
    anonymous: Role | None  # None: anonymous access is off
    limits: LimitsConfig
    iserver: Any
    counters: GuardCounters = field(default_factory=GuardCounters)
    #: nodes outside our namespace an operator may write or call, as the twin's inputs
    #: and Start: a machine face's bound variables and methods (faces/serve.py)
    operated: set[ua.NodeId] = field(default_factory=set)
    #: the share of the session limit per client address, and abandoned sessions
    room: SessionRoom = field(init=False)

    def __post_init__(self) -> None:
        self.room = SessionRoom(self.iserver, self.limits, self.counters)

    # -- channels -------------------------------------------------------------------
    def channel_opened(self, policy_uri: str, mode: ua.MessageSecurityMode,
                       der: bytes | None) -> None:
        channel = Channel(policy_uri, mode)
        if der and channel.secure:
            try:
                channel.certificate = x509.load_der_x509_certificate(der)
            except ValueError:
                channel.refusal = ua.StatusCodes.BadCertificateInvalid
                log.info("client_certificate_invalid", reason="not a DER certificate")
            else:
                channel.refusal = self._check_certificate(channel.certificate)
        CHANNEL.set(channel)

    def _check_certificate(self, cert: x509.Certificate) -> int | None:
        if self.trust is None:
            return int(ua.StatusCodes.BadSecurityChecksFailed)
        status = self.trust.check(cert)
        if status is not None:
            self.counters.certificates_refused += 1
            self.trust.reject(cert, status)
        return status

    async def certificate_validator(self, cert: x509.Certificate,
                                    description: ua.ApplicationDescription) -> None:
        """asyncua's CreateSession hook (ClientCertificate given)."""
        channel = CHANNEL.get()
        if channel is None or not channel.secure:
            return  # a None channel ignores the ClientCertificate (Part 4, 5.6.2)
        if channel.refusal is not None:
            raise ServiceError(channel.refusal)
        if channel.certificate is None or \
                cert.public_bytes(serialization.Encoding.DER) != \
                channel.certificate.public_bytes(serialization.Encoding.DER):
            log.info("client_certificate_mismatch",
                     reason="CreateSession certificate differs from the channel's")
            raise ServiceError(ua.StatusCodes.BadSecurityChecksFailed)
        assert self.trust is not None
        status = self.trust.check_uri(cert, description.ApplicationUri)
        if status is not None:
            self.counters.certificates_refused += 1
            channel.refusal = status
            self.trust.reject(cert, status)
            raise ServiceError(status)
        channel.uri_checked = True

    # -- sessions -------------------------------------------------------------------
    def session_created(self, session: Any, peer: Any) -> None:
        self.room.created(session, _peer(peer))
        CONNECTION.set(Connection(_peer(peer), session, created_here=True))

    def session_looked_up(self, session: Any) -> None:
        if session is not None:
            CONNECTION.set(Connection(None, session, created_here=False))

    def get_user(self, username: str | None, password: str | None) -> User | None:
        """ActivateSession: the user, or None (BadUserAccessDenied), or a ServiceError."""
        channel = CHANNEL.get()
        conn = CONNECTION.get()
        peer = conn.peer if conn else None
        if channel is None:
            # asyncua opens a SecurityPolicy#None channel even when no None endpoint is offered
            self.counters.sessions_refused += 1
            log.info("session_refused", peer=peer, reason="channel security not offered")
            raise ServiceError(ua.StatusCodes.BadSecurityPolicyRejected)
        if channel.refusal is not None:
            self.counters.sessions_refused += 1
            raise ServiceError(channel.refusal)
        if conn is not None and channel.secure and conn.created_here \
                and not channel.uri_checked:
            # a secure channel's CreateSession must carry the client certificate
            self.counters.sessions_refused += 1
            log.info("session_refused", peer=peer,
                     reason="CreateSession without the channel's certificate")
            raise ServiceError(ua.StatusCodes.BadSecurityChecksFailed)
        # a session activated again on a new channel: sessions.py checked the channel
        # (at the token's lookup) and checks the user (at its activation)
        self._check_session_count(conn)
        if username is None:
            if self.anonymous is None:
                log.info("login_refused", peer=peer, reason="anonymous access is off")
                return None
            return TwinUser.of(None, self.anonymous)
        role = self.users.authenticate(username, password or "", peer)
        if role is None:
            return None
        return TwinUser.of(username, role)

    def _check_session_count(self, conn: Connection | None) -> None:
        """Refuse a first activation (BadTooManySessions) when neither the server nor
        the client's address has room and no abandoned session of the address could
        give way; ``admit`` makes the room once the user is accepted."""
        if conn is None:
            self.room.find(None, None)
        elif not conn.session.is_activated():  # else a reactivation, already counted
            self.room.find(conn.session, conn.peer)

    def admit(self) -> None:
        """A session's user was accepted (ActivateSession succeeds): on its first
        activation, close the abandoned session it displaces, if it needs one."""
        conn = CONNECTION.get()
        if conn is not None and not conn.session.is_activated():
            self.room.make(conn.session, conn.peer)

    # -- requests -------------------------------------------------------------------
    def check_request(self, user: User, service: ua.NodeId, body: Any) -> bool:
        CURRENT_USER.set(user)
        if not may_use_service(user, service):
            self.counters.services_refused += 1
            log.info("service_refused", user=str(user), service=_service_name(service))
            return False
        self._check_operations(service, body)
        if service == _CREATE_SUBSCRIPTION:
            self._check_subscriptions()
        elif service == _CREATE_MONITORED_ITEMS:
            self._check_monitored_items(body)
        return True

    def _check_operations(self, service: ua.NodeId, body: Any) -> None:
        counted = operations.count(service, body)
        if counted is not None and counted[1] > self.limits.max_nodes_per_request:
            self.counters.limits_hit += 1
            log.info("operation_limit_reached", service=_service_name(service),
                     limit=counted[0], max=self.limits.max_nodes_per_request,
                     asked=counted[1])
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    def _check_subscriptions(self) -> None:
        conn = CONNECTION.get()
        if conn is None:
            return
        subs = self.iserver.subscription_service.subscriptions.values()
        own = sum(1 for s in list(subs) if s.session_id == conn.session.session_id)
        if own >= self.limits.max_subscriptions_per_session:
            self.counters.limits_hit += 1
            log.info("subscription_limit_reached",
                     limit=self.limits.max_subscriptions_per_session, peer=conn.peer)
            raise ServiceError(ua.StatusCodes.BadTooManySubscriptions)

    def _check_monitored_items(self, body: Any) -> None:
        try:
            sub_id, _timestamps, count = struct.unpack("<IIi", body.copy(12).read(12))
        except Exception:  # asyncua will answer the malformed request itself
            return
        subs = self.iserver.subscription_service.subscriptions
        sub = subs.get(sub_id)
        if sub is None or count <= 0:
            return
        in_sub = len(internals.monitored_items(sub))
        if in_sub + count > self.limits.max_monitored_items_per_subscription:
            self._monitored_items_refused(self.limits.max_monitored_items_per_subscription)
        total = sum(len(internals.monitored_items(s)) for s in list(subs.values()))
        if total + count > self.limits.max_monitored_items:
            self._monitored_items_refused(self.limits.max_monitored_items)

    def _monitored_items_refused(self, limit: int) -> None:
        self.counters.limits_hit += 1
        log.info("monitored_item_limit_reached", limit=limit)
        raise ServiceError(ua.StatusCodes.BadTooManyMonitoredItems)

    # -- items ----------------------------------------------------------------------
    def may_write(self, user: User | None, node: ua.NodeId, attribute: int) -> bool:
        if user is not None and node in self.operated and attribute == ua.AttributeIds.Value:
            return role_of(user) >= Role.OPERATOR
        return user is None or may_write(user, node, self.namespace, attribute)

    def may_call(self, user: User | None, method: ua.NodeId) -> bool:
        if user is not None and method in self.operated:
            return role_of(user) >= Role.OPERATOR
        return user is None or may_call(user, method, self.namespace)


_CREATE_SUBSCRIPTION = ua.NodeId(ua.ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary)
_CREATE_MONITORED_ITEMS = ua.NodeId(
    ua.ObjectIds.CreateMonitoredItemsRequest_Encoding_DefaultBinary)


def _service_name(service: ua.NodeId) -> str:
    name = ua.ObjectIdNames.get(service.Identifier, str(service.Identifier))
    return str(name).removesuffix("_Encoding_DefaultBinary")


# -- asyncua adapters ----------------------------------------------------------------

class ChannelFactory:
    """Wraps asyncua's SecurityPolicyFactory: a channel opened through it is recorded
    (and its client certificate validated) in the connection's context."""

    def __init__(self, inner: Any, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard

    def matches(self, uri: str, mode: ua.MessageSecurityMode | None = None) -> bool:
        return bool(self.inner.matches(uri, mode))

    def create(self, peer_certificate: bytes | None) -> Any:
        policy = self.inner.create(peer_certificate)
        self.guard.channel_opened(self.inner.cls.URI, self.inner.mode, peer_certificate)
        return policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ChannelFactories(list):  # type: ignore[type-arg]  # holds asyncua factories
    """``Server._policies``: every factory asyncua appends at start is wrapped."""

    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self.guard = guard

    def append(self, factory: Any) -> None:
        super().append(factory if isinstance(factory, ChannelFactory)
                       else ChannelFactory(factory, self.guard))


class TwinRuleset(PermissionRuleset):  # type: ignore[misc]  # asyncua: untyped to mypy
    """asyncua's per-request permission hook (runs for every request of a session)."""

    def __init__(self, guard: Guard, install: Callable[[], None]) -> None:
        self.guard = guard
        self._install = install

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        # another part of the server may have replaced a guarded service since start
        self._install()
        return self.guard.check_request(user, action_type_id, body)


class TwinUserManager:
    """asyncua's user manager: identity token -> TwinUser (called at ActivateSession)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        user = self.guard.get_user(username, password)
        if user is not None:
            self.guard.admit()
        return user


class GuardedAttributeService:
    """Wraps the server's attribute service: per-item write permission, and
    UserAccessLevel / UserExecutable read for the reading user."""

    def __init__(self, inner: Any, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard

    def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        results: list[ua.DataValue] = self.inner.read(params)
        user = CURRENT_USER.get()
        if user is None:
            return results
        for index, rv in enumerate(params.NodesToRead):
            if rv.AttributeId == ua.AttributeIds.UserAccessLevel:
                results[index] = self._user_access_level(user, rv.NodeId, results[index])
            elif rv.AttributeId == ua.AttributeIds.UserExecutable:
                results[index] = self._user_executable(user, rv.NodeId, results[index])
        return results

    def _user_access_level(self, user: User, node: ua.NodeId, dv: ua.DataValue) -> ua.DataValue:
        if dv.Value is None or dv.Value.Value is None or \
                self.guard.may_write(user, node, ua.AttributeIds.Value):
            return dv
        level = int(dv.Value.Value) & ~(ua.AccessLevel.CurrentWrite.mask
                                        | ua.AccessLevel.HistoryWrite.mask)
        return ua.DataValue(ua.Variant(level, ua.VariantType.Byte), StatusCode=dv.StatusCode)

    def _user_executable(self, user: User, node: ua.NodeId, dv: ua.DataValue) -> ua.DataValue:
        if dv.Value is None or not dv.Value.Value or self.guard.may_call(user, node):
            return dv
        return ua.DataValue(ua.Variant(False, ua.VariantType.Boolean), StatusCode=dv.StatusCode)

    def _writable(self, node: ua.NodeId, attribute: int) -> bool:
        """Is the Value of ``node`` writable at all? If not, that is no question of
        permission: the write path answers (BadNotWritable for our read-only nodes)."""
        if attribute != ua.AttributeIds.Value:
            return True
        dv = self.guard.iserver.aspace.read_attribute_value(node, ua.AttributeIds.AccessLevel)
        if dv.Value is None or dv.Value.Value is None:
            return True  # unknown node or no AccessLevel: let the write path answer
        return bool(int(dv.Value.Value) & ua.AccessLevel.CurrentWrite.mask)

    def _routed(self, node: ua.NodeId) -> bool:
        """Whether the write path answers writes of ``node`` itself (a machine face's
        variable: TwinAttributeService.routes), with its own refusals."""
        routes = getattr(self.inner, "routes", None)
        return bool(routes(node)) if routes is not None else False

    async def write(self, params: ua.WriteParameters, user: User | None = None,
                    ) -> list[ua.StatusCode]:
        if not isinstance(user, TwinUser):
            # the server's own writes: asyncua's internal session (its Admin user); every
            # client session's user is a TwinUser (TwinUserManager)
            return list(await self.inner.write(params, *([user] if user else [])))
        results: list[ua.StatusCode | None] = []
        allowed: list[tuple[int, ua.WriteValue]] = []
        for index, wv in enumerate(params.NodesToWrite):
            writable = self._writable(wv.NodeId, wv.AttributeId)
            if not writable and wv.NodeId.NamespaceIndex != self.guard.namespace \
                    and not self._routed(wv.NodeId):
                # asyncua lets an admin write even read-only server nodes (ServerStatus);
                # no client may: the answer is asyncua's own for everyone else
                self.guard.counters.writes_refused += 1
                results.append(ua.StatusCode(ua.StatusCodes.BadUserAccessDenied))
            elif not writable or self.guard.may_write(user, wv.NodeId, wv.AttributeId):
                allowed.append((index, wv))
                results.append(None)
            else:
                self.guard.counters.writes_refused += 1
                log.info("write_refused", user=str(user), node=wv.NodeId.to_string(),
                         status="BadUserAccessDenied", role=str(role_of(user)))
                results.append(ua.StatusCode(ua.StatusCodes.BadUserAccessDenied))
        if allowed:
            done = await self.inner.write(
                ua.WriteParameters(NodesToWrite=[wv for _, wv in allowed]), user)
            for (index, _), status in zip(allowed, done, strict=True):
                results[index] = status
        return [r if r is not None else ua.StatusCode(ua.StatusCodes.BadInternalError)
                for r in results]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class GuardedMethodService:
    """Wraps the server's method service: per-call permission, and the codes of
    OPC UA Part 4 for a call to nothing (asyncua answers BadNodeIdInvalid for both):
    an object that does not exist gets BadNodeIdUnknown, a MethodId that names no
    method, or one of ours that is not the object's, BadMethodInvalid, whoever calls
    (the standard methods of a type, such as a condition's Acknowledge, are asyncua's
    to check)."""

    def __init__(self, inner: Any, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard

    def _missing(self, request: ua.CallMethodRequest) -> str | None:
        """The status name of a call whose object or method does not exist, else None."""
        aspace = self.guard.iserver.aspace
        if request.ObjectId not in aspace:
            return "BadNodeIdUnknown"
        if request.MethodId not in aspace:
            return "BadMethodInvalid"
        nodeclass = aspace.read_attribute_value(request.MethodId, ua.AttributeIds.NodeClass)
        if nodeclass.Value is None or nodeclass.Value.Value != ua.NodeClass.Method:
            return "BadMethodInvalid"
        if request.MethodId.NamespaceIndex == self.guard.namespace and not any(
                ref.IsForward and ref.NodeId == request.MethodId
                for ref in aspace[request.ObjectId].references):
            # one of our methods acts on the object it belongs to alone: asyncua would
            # run Sessions.a.Start called on Sessions.b (or DeleteSession on a session)
            return "BadMethodInvalid"
        return None

    async def call(self, methods: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        user = CURRENT_USER.get()
        results: list[ua.CallMethodResult | None] = []
        allowed: list[tuple[int, ua.CallMethodRequest]] = []
        for index, request in enumerate(methods):
            missing = self._missing(request)
            if missing is not None:
                self.guard.counters.calls_refused += 1
                log.info("call_refused", user=str(user), method=request.MethodId.to_string(),
                         object=request.ObjectId.to_string(), status=missing)
                results.append(ua.CallMethodResult(
                    StatusCode=ua.StatusCode(getattr(ua.StatusCodes, missing))))
            elif self.guard.may_call(user, request.MethodId):
                allowed.append((index, request))
                results.append(None)
            else:
                self.guard.counters.calls_refused += 1
                log.info("call_refused", user=str(user), method=request.MethodId.to_string(),
                         status="BadUserAccessDenied", role=str(role_of(user)))
                results.append(ua.CallMethodResult(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)))
        if allowed:
            done = await self.inner.call([request for _, request in allowed])
            for (index, _), result in zip(allowed, done, strict=True):
                results[index] = result
        return [r if r is not None else ua.CallMethodResult() for r in results]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
