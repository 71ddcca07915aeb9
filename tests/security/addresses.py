"""Clients that connect from another loopback address (127.0.0.2, 127.0.0.3, ...),
which the server sees as other hosts; and clients that log in and then go quiet.

asyncua's Client has no option for the source address of its connection, so
``from_address`` replaces its UaClient's ``connect_socket`` (on the instance) with
the same steps plus ``local_addr``.
"""

from __future__ import annotations

import asyncio

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.ua.ua_binary import struct_from_binary

ATTACKER = "127.0.0.1"
VICTIM = "127.0.0.2"
BYSTANDER = "127.0.0.3"


def from_address(client: Client, source: str) -> Client:
    """``client``, connecting from ``source`` (any 127.x.y.z works on Linux)."""
    uaclient = client.uaclient

    async def connect_socket(host: str, port: int) -> None:
        # asyncua's UaClient.connect_socket, with a source address
        uaclient._set_state(UaClientState.CONNECTING)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                uaclient._make_protocol, host, port, local_addr=(source, 0)),
                uaclient._timeout)
        except BaseException:
            uaclient._set_state(UaClientState.DISCONNECTED)
            raise
        uaclient._set_state(UaClientState.SOCKET_OPEN)

    uaclient.connect_socket = connect_socket  # type: ignore[method-assign]
    return client


async def quiet_session(url: str, source: str = ATTACKER, *,
                        timeout_ms: float = 600_000.0) -> Client:
    """A client that creates and activates an anonymous session asking for
    ``timeout_ms``, and then sends nothing more (no watchdog, no keep-alive):
    ``Client.connect`` would start both."""
    client = from_address(Client(url, timeout=5), source)
    client.session_timeout = timeout_ms
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        await client.create_session()
        await client.activate_session()
    except BaseException:
        client.disconnect_socket()
        raise
    return client


def drop(client: Client) -> None:
    """Cut ``client``'s TCP connection without CloseSession (the session stays on the
    server as long as it has subscriptions)."""
    task = client._renew_channel_task
    if task is not None:
        task.cancel()
    client.disconnect_socket()


async def quiet_subscription(client: Client) -> int:
    """CreateSubscription without starting asyncua's publish loop; its id."""
    request = ua.CreateSubscriptionRequest(Parameters=ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=1000, RequestedLifetimeCount=3000,
        RequestedMaxKeepAliveCount=100, PublishingEnabled=True))
    data = await client.uaclient.session._send_request(request)
    response = struct_from_binary(ua.CreateSubscriptionResponse, data)
    response.ResponseHeader.ServiceResult.check()
    return int(response.Parameters.SubscriptionId)
