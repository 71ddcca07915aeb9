"""``twin-server health``: is the daemon at an endpoint up and serving?

Asks the endpoint for its endpoints (GetEndpoints needs no session, so this
works against a server that offers only encrypted endpoints: then answering is
the health). Where an unencrypted endpoint lets anonymous clients in, it also
connects, reads ``Server/ServerStatus/State``, counts the sessions under
``TwinServer/Sessions`` and reports the worker processes from
``TwinServer/Diagnostics/Workers``: how many, spares ready, crashes and hangs,
and the latest crash in words. Docker's HEALTHCHECK and monitoring scripts use
its exit status: a crash the daemon recovered from (the session Halted, its
worker replaced) leaves it healthy; the message says what happened.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asyncua import Client, Node, ua

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
            workers = await _workers(client, ns)
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
    return Health(True, f"{endpoint}: {name}, {len(sessions)} sessions{workers}")


#: what ``_workers`` reads below Diagnostics.Workers
_WORKER_NODES = ("Host", "Workers", "SparesReady", "Crashes", "Hangs", "LastCrash.Message")


async def _workers(client: Client, ns: int) -> str:
    """", 2 workers (1 spare ready), 1 crash (0 hangs); the last: ...", or " (in-process)";
    empty from a daemon without the Diagnostics nodes (an older version)."""
    nodes: list[Node] = [client.get_node(ua.NodeId(f"Diagnostics.Workers.{path}", ns))
                         for path in _WORKER_NODES]
    host, workers, spares, crashes, hangs, last = await client.read_values(nodes)
    if host is None:  # (not there: BadNodeIdUnknown)
        return ""
    if host == "in-process":
        return " (in-process, no worker processes)"
    text = f", {workers} workers ({spares} spare ready)"
    if crashes:
        text += (f", {crashes} worker crash{'es' if crashes != 1 else ''} ({hangs} hung); "
                 f"the last: {last}")
    return text


def _anonymous_none(endpoint: ua.EndpointDescription) -> bool:
    return endpoint.SecurityPolicyUri == NONE_POLICY and any(
        token.TokenType == ua.UserTokenType.Anonymous for token in endpoint.UserIdentityTokens)
