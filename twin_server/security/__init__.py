"""Security of the OPC UA endpoint: encrypted endpoints, certificate trust, users
and roles, and limits under hostile clients.

    context   configure_security(server, config, state_dir) -> SecurityContext:
              the one call OpcUaServer.start makes
    pki       the Part 12 certificate store, our certificate, the trust list,
              rejected certificates; ``twin-server pki`` functions
    users     the users file, scrypt hashes, login throttling by address and user;
              ``twin-server user`` functions
    roles     viewer < operator < admin: what each may do, per service, node, method
    guard     the hooks into asyncua that enforce all of the above
    room      the session limit, each client address's share, abandoned sessions
    tokens    user-name tokens: what each endpoint asks for, encrypted passwords
    sessions  random session tokens; sessions and subscriptions that stay their
              client's across channels, network blips and TransferSubscriptions
    limits    asyncua's resource limits; the rate limit on its logging
    cli       the ``pki`` and ``user`` subcommands of ``twin-server``

Imports nothing of ours but ``config``, ``errors``, ``logs`` and
``opcua.patches`` (the asyncua version check, a leaf), so that the OPC UA server
can import it.
"""

from __future__ import annotations

from twin_server.security.context import SecurityContext, SecurityStatistics, configure_security
from twin_server.security.guard import current_user
from twin_server.security.roles import Role, TwinUser, may_call, may_write

__all__ = [
    "Role",
    "SecurityContext",
    "SecurityStatistics",
    "TwinUser",
    "configure_security",
    "current_user",
    "may_call",
    "may_write",
]
