"""``twin-server health``: is the daemon at an endpoint up and serving?

Asks the endpoint for its endpoints (GetEndpoints needs no session, so this
works against a server that offers only encrypted endpoints: then answering is
the health). Where an unencrypted endpoint lets anonymous clients in, it also
connects, reads ``Server/ServerStatus/State`` and counts the sessions under
``TwinServer/Sessions``. Docker's HEALTHCHECK and monitoring scripts use its
exit status.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asyncua import Client, ua

NAMESPACE_URI = "urn:twin-server"
NONE_POLICY = "http://opcfoundation.org/UA/SecurityPolicy#None"


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    message: str


async def check(endpoint: str, timeout: float = 5.0) -> Health:
    """Connect to ``endpoint`` within ``timeout`` seconds and report what it serves."""
    try:
        async with asyncio.timeout(timeout):
            endpoints = await Client(endpoint, timeout=timeout).connect_and_get_server_endpoints()
    except (OSError, TimeoutError, ua.UaError) as exc:
        return Health(False, f"{endpoint}: cannot connect: {exc or type(exc).__name__}")
    if not any(_anonymous_none(e) for e in endpoints):
        return Health(True, f"{endpoint}: answering, {len(endpoints)} secure endpoints "
                            "(no anonymous unencrypted endpoint to read the state through)")
    client = Client(endpoint, timeout=timeout)
    client.session_timeout = 60_000  # ms: a short look (asyncua asks for an hour and warns)
    try:
        async with asyncio.timeout(timeout):
            await client.connect()
    except (OSError, TimeoutError, ua.UaError) as exc:
        return Health(False, f"{endpoint}: cannot connect: {exc or type(exc).__name__}")
    try:
        async with asyncio.timeout(timeout):
            state = await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
                                          ).read_value()
            ns = await client.get_namespace_index(NAMESPACE_URI)
            sessions = await client.get_node(ua.NodeId("Sessions", ns)).get_children()
    except (OSError, TimeoutError, ValueError, ua.UaError) as exc:
        return Health(False, f"{endpoint}: connected but not serving twins: "
                             f"{exc or type(exc).__name__}")
    finally:
        try:
            async with asyncio.timeout(timeout):
                await client.disconnect()
        except (OSError, TimeoutError, ua.UaError):
            pass
    name = ua.ServerState(state).name
    if state != ua.ServerState.Running:
        return Health(False, f"{endpoint}: server state {name}")
    return Health(True, f"{endpoint}: {name}, {len(sessions)} sessions")


def _anonymous_none(endpoint: ua.EndpointDescription) -> bool:
    return endpoint.SecurityPolicyUri == NONE_POLICY and any(
        token.TokenType == ua.UserTokenType.Anonymous for token in endpoint.UserIdentityTokens)
