"""``configure_security``: the one call that makes an asyncua Server secure.

``OpcUaServer.start`` calls it once, after the address-space services are in
place and before ``Server.start`` binds the endpoint::

    self.security = await configure_security(server, self.config, state_dir)

It creates the PKI folders and the server certificate on first start, offers
the configured endpoints, checks client certificates against the trust list,
authenticates users from the users file, enforces roles per service, node and
method, sets the limits, and rate-limits asyncua's logging. See
``twin_server.security`` for the whole picture.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common.utils import ServiceError

from twin_server.config.schema import ServerConfig
from twin_server.config.security import SecurityConfig
from twin_server.opcua.patches import check_asyncua, internals
from twin_server.security.guard import (
    ChannelFactories,
    Guard,
    GuardCounters,
    GuardedAttributeService,
    GuardedMethodService,
    TwinRuleset,
    TwinUserManager,
)
from twin_server.security.limits import (
    LogLimitStatistics,
    LogRateLimit,
    apply_limits,
    install_log_rate_limit,
    share_subscription_loggers,
)
from twin_server.security.pki import (
    PkiLayout,
    ServerIdentity,
    TrustList,
    endpoint_hostnames,
    ensure_server_certificate,
    thumbprint,
)
from twin_server.security.protocol import (
    ProtocolGuard,
    ProtocolStatistics,
    install_asyncua_records,
)
from twin_server.security.roles import Role
from twin_server.security.sessions import Sessions, SessionStatistics
from twin_server.security.tokens import install_user_tokens
from twin_server.security.users import LoginStatistics, UserStore

log = structlog.get_logger(__name__)

#: our namespace (``twin_server.opcua.server.NAMESPACE_URI``; not imported, that
#: module imports this one)
NAMESPACE_URI = "urn:twin-server"

_POLICY_TYPES: dict[tuple[str, str], ua.SecurityPolicyType] = {
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Aes128_Sha256_RsaOaep", "Sign"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"):
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ("Aes256_Sha256_RsaPss", "Sign"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"):
        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}


def policy_types(security: SecurityConfig) -> list[ua.SecurityPolicyType]:
    """The asyncua policy types of the configured endpoints, most secure first."""
    types = [_POLICY_TYPES[(policy, mode)]
             for policy in reversed(security.secure_policies)
             for mode in ("SignAndEncrypt", "Sign") if mode in security.modes]
    if security.allows_none:
        types.append(ua.SecurityPolicyType.NoSecurity)
    return types


def endpoint_names(security: SecurityConfig) -> list[str]:
    """``Basic256Sha256/SignAndEncrypt``, ..., ``None``: for logs and statistics."""
    names = [f"{p}/{m}" for p in security.secure_policies for m in security.modes]
    return names + (["None"] if security.allows_none else [])


@dataclass(frozen=True, slots=True)
class SecurityStatistics:
    """An immutable snapshot of what security refused and why."""

    endpoints: tuple[str, ...]
    anonymous: str
    certificate_thumbprint: str | None
    logins: LoginStatistics
    services_refused: int
    writes_refused: int
    calls_refused: int
    certificates_refused: int
    sessions_refused: int
    limits_hit: int
    sessions_displaced: int
    log: LogLimitStatistics
    sessions: SessionStatistics
    protocol: ProtocolStatistics | None = None


@dataclass(slots=True)
class SecurityContext:
    """What ``configure_security`` set up; ``statistics()`` for the diagnostics."""

    config: SecurityConfig
    pki: PkiLayout
    identity: ServerIdentity | None
    trust: TrustList | None
    users: UserStore
    guard: Guard
    log_limit: LogRateLimit
    sessions: Sessions
    protocol: ProtocolGuard | None = None

    def trust_list(self) -> TrustList:
        """The trust list of the daemon's PKI, also where no secure endpoint needs one
        (the HIL mirror checks PLC certificates against it)."""
        if self.trust is None:
            self.trust = TrustList(self.pki, max_rejected=self.config.max_rejected)
        return self.trust

    @property
    def namespace(self) -> int:
        return self.guard.namespace

    def statistics(self) -> SecurityStatistics:
        c: GuardCounters = self.guard.counters
        return SecurityStatistics(
            endpoints=tuple(endpoint_names(self.config)), anonymous=self.config.anonymous,
            certificate_thumbprint=thumbprint(self.identity.certificate)
            if self.identity else None,
            logins=self.users.statistics(), services_refused=c.services_refused,
            writes_refused=c.writes_refused, calls_refused=c.calls_refused,
            certificates_refused=c.certificates_refused, sessions_refused=c.sessions_refused,
            limits_hit=c.limits_hit, sessions_displaced=c.sessions_displaced,
            log=self.log_limit.statistics(), sessions=self.sessions.statistics(),
            protocol=self.protocol.statistics() if self.protocol else None)


async def configure_security(server: Server, config: ServerConfig,
                             state_dir: str | Path | None = None) -> SecurityContext:
    """Make ``server`` (initialised, endpoint URL set, not started) enforce
    ``config.security`` and ``config.limits``. ``state_dir`` defaults to
    ``config.state_dir``; the PKI and users file are found relative to it."""
    check_asyncua()  # every hook below relies on asyncua's internals as tested
    security, limits = config.security, config.limits
    root = Path(state_dir if state_dir is not None else config.state_dir)
    iserver = server.iserver
    host = server.endpoint.hostname
    pki = PkiLayout(root / security.pki_dir)

    # the secure endpoints need the certificate, and so does the None endpoint: its
    # clients encrypt passwords with it (tokens.py)
    identity: ServerIdentity | None = ensure_server_certificate(
        pki, application_uri=config.application_uri, name=config.application_name,
        hostnames=endpoint_hostnames(host, security.hostnames),
        key_size=security.certificate_key_size, days=security.certificate_days)
    await server.load_certificate(str(pki.server_cert))
    await server.load_private_key(str(pki.server_key))
    trust: TrustList | None = None
    if security.secure_policies:
        trust = TrustList(pki, max_rejected=security.max_rejected)

    users = UserStore(root / security.users_file)
    anonymous = None if security.anonymous == "off" else Role.parse(security.anonymous)
    namespace = await server.register_namespace(NAMESPACE_URI)
    guard = Guard(namespace=namespace, trust=trust, users=users, anonymous=anonymous,
                  limits=limits, iserver=iserver)

    def install_guards() -> None:
        if not isinstance(iserver.attribute_service, GuardedAttributeService):
            iserver.attribute_service = GuardedAttributeService(iserver.attribute_service, guard)
        if not isinstance(iserver.method_service, GuardedMethodService):
            iserver.method_service = GuardedMethodService(iserver.method_service, guard)

    install_guards()
    # user names always; X509 user tokens are not offered (no certificate users yet)
    tokens: list[type] = [ua.UserNameIdentityToken]
    if anonymous is not None:
        tokens.insert(0, ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    server.set_security_policy(policy_types(security),
                               permission_ruleset=TwinRuleset(guard, install_guards))
    # asyncua appends one factory per endpoint here at start; ours record each channel
    internals.set_channel_policies(server, ChannelFactories(guard))
    server.set_certificate_validator(guard.certificate_validator)
    iserver.set_user_manager(TwinUserManager(guard))
    install_user_tokens(iserver, guard.counters)
    server.allow_remote_admin(False)
    sessions = _hook_sessions(iserver, guard)
    log_limit = install_log_rate_limit(limits.log_burst)
    install_asyncua_records()
    protocol = ProtocolGuard(log_limit)
    apply_limits(server, limits, on_connection=protocol.connection_made)
    share_subscription_loggers(iserver)

    _warn_exposure(host, security, users)
    log.info("security_configured", endpoints=endpoint_names(security),
             anonymous=security.anonymous, users=len(users.users()),
             users_file=str(users.path), pki=str(pki.root),
             certificate=thumbprint(identity.certificate) if identity else None,
             max_client_sessions=limits.max_client_sessions,
             max_sessions_per_address=limits.sessions_per_address,
             max_message_size=limits.max_message_size)
    return SecurityContext(security, pki, identity, trust, users, guard, log_limit,
                           sessions, protocol=protocol)


def _hook_sessions(iserver: Any, guard: Guard) -> Sessions:
    """Random session tokens, sessions that stay their client's across channels,
    subscriptions that survive a blip (``sessions.Sessions``); and no discovery
    registrations (we are not a discovery server; each one would be kept forever)."""
    sessions = Sessions(iserver, guard)
    sessions.install()

    def refuse_registration(*_args: Any, **_kwargs: Any) -> None:
        raise ServiceError(ua.StatusCodes.BadServiceUnsupported)

    iserver.register_server = refuse_registration
    iserver.register_server2 = refuse_registration
    return sessions


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _warn_exposure(host: str | None, security: SecurityConfig, users: UserStore) -> None:
    if _is_loopback(host):
        return
    if security.allows_none:
        log.warning("insecure_endpoint_exposed", host=host,
                    reason="the None endpoint sends everything in clear text on the network",
                    fix="remove 'None' from server.security.policies")
    if security.anonymous in ("operator", "admin"):
        log.warning("anonymous_control_exposed", host=host, anonymous=security.anonymous,
                    fix="set server.security.anonymous to 'viewer' or 'off'")
    if security.anonymous == "off" and not users.users():
        log.warning("no_users", path=str(users.path),
                    reason="anonymous access is off and the users file has no users",
                    fix="twin-server user add NAME --role admin")
