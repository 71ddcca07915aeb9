"""Every private attribute of asyncua that twin-server reads or writes outside this
package, each behind one small function named for what it gives.

asyncua 2.1 keeps several things a server needs to bound or guard behind a leading
underscore: the sessions by token, a subscription's monitored items, the bytes a
connection has buffered, the policies each channel is offered. The modules that
wrap asyncua's instances (``security/``, ``opcua/server.py``,
``opcua/history_read.py``) call these instead of reaching in themselves, so that
an asyncua upgrade is checked here (and by ``tests/opcua/test_patches.py``, which
fails if a module elsewhere reads an asyncua private attribute). Each function
names, in its docstring, the internal it touches and what it holds in 2.1.
``fastpath`` and ``aspace_cache`` in this package touch the internals they wrap
directly; their docstrings name them.

The objects are asyncua's, untyped to mypy: hence ``Any``.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

# -- the server -------------------------------------------------------------------------


def listening_sockets(bserver: Any) -> list[socket.socket]:
    """The sockets the binary server listens on (none before it started):
    ``BinaryServer._server``, the ``asyncio.Server`` its ``start`` creates."""
    server = bserver._server
    return list(server.sockets) if server is not None and server.sockets else []


def request_time_task_stop(iserver: Any) -> None:
    """Ask the CurrentTime loop to end: sets ``InternalServer._time_task_stop``, the
    flag that ``InternalServer.stop`` sets and the loop checks after each 1 s sleep
    (cancel ``iserver.time_task`` as well to end it now)."""
    iserver._time_task_stop = True


def set_channel_policies(server: Any, policies: list[Any]) -> None:
    """Replace ``Server._policies``: the list of ``SecurityPolicyFactory`` that
    ``Server.start`` appends one per endpoint to and hands every connection's
    ``SecureConnection`` (through ``BinaryServer.set_policies``)."""
    server._policies = policies


def external_sessions(iserver: Any) -> dict[Any, Any]:
    """Every client session, by its authentication token: ``InternalServer.
    _external_sessions`` (kept by ``register_external_session`` and
    ``unregister_external_session``); empty where there is none."""
    sessions: dict[Any, Any] = getattr(iserver, "_external_sessions", {})
    return sessions


def last_activity(session: Any, default: float) -> float:
    """When the session last made a request (``time.monotonic``):
    ``InternalSession._last_activity``; ``default`` where there is none."""
    return float(getattr(session, "_last_activity", default))


# -- one connection -----------------------------------------------------------------------


def pending_chunk_bytes(protocol: Any) -> int:
    """How many bytes the connection holds that are not yet a whole chunk:
    ``OPCUAProtocol._buffer`` (it keeps a chunk until every byte its header
    announced has arrived)."""
    return len(getattr(protocol, "_buffer", b""))


def drop_pending_chunk(protocol: Any) -> None:
    """Forget the bytes of ``pending_chunk_bytes`` (``OPCUAProtocol._buffer``)."""
    protocol._buffer = b""


def secure_connection(processor: Any) -> Any:
    """The connection's ``SecureConnection`` (its channel, tokens and policies):
    ``UaProcessor._connection``."""
    return processor._connection


def processor_transport(processor: Any) -> Any:
    """The connection's asyncio transport (``asyncio.Transport``):
    ``UaProcessor._transport``; None where there is none."""
    return getattr(processor, "_transport", None)


def channel_policies(connection: Any) -> list[Any]:
    """The security policy factories the channel may be opened with:
    ``SecureConnection._policies`` (the endpoints' ``SecurityPolicyFactory``s)."""
    policies: list[Any] = connection._policies
    return policies


def request_dispatcher(processor: Any) -> Callable[..., Awaitable[Any]]:
    """The method that hands one decoded request to its service:
    ``UaProcessor._process_message`` (its caller, ``process_message``, turns its
    exceptions into ServiceFaults)."""
    dispatch: Callable[..., Awaitable[Any]] = processor._process_message
    return dispatch


def set_request_dispatcher(processor: Any, dispatch: Callable[..., Awaitable[Any]]) -> None:
    """Replace ``UaProcessor._process_message`` on this processor (its class is not
    touched)."""
    processor._process_message = dispatch


def publish_requests(processor: Any) -> Any:
    """The connection's Publish requests waiting for a notification:
    ``UaProcessor._publish_requests`` (a deque)."""
    return processor._publish_requests


def published_subscriptions(processor: Any) -> dict[int, Any]:
    """The subscriptions whose results wait for this connection's Publish requests, by
    id: ``UaProcessor._publish_results_subs``."""
    subs: dict[int, Any] = processor._publish_results_subs
    return subs


# -- subscriptions ------------------------------------------------------------------------


def monitored_items(subscription: Any) -> dict[int, Any]:
    """The subscription's monitored items by id (``MonitoredItemData``: its
    ``read_value_id``, ``callback_handle``, ``client_handle``, ``mode``,
    ``queue_size``): ``MonitoredItemService._monitored_items`` of its
    ``monitored_item_srv``."""
    items: dict[int, Any] = subscription.monitored_item_srv._monitored_items
    return items


def last_subscription_id(service: Any) -> int:
    """The id of the subscription created last: ``SubscriptionService._sub_id_counter``
    (also the suffix of the logger its ``MonitoredItemService`` makes)."""
    return int(service._sub_id_counter)


# -- history ------------------------------------------------------------------------------


def keep_history_of(manager: Any, previous: Any) -> None:
    """Let ``manager`` (a ``HistoryManager`` of ours) go on historizing what
    ``previous`` (asyncua's) does: its ``storage`` and its private ``_sub`` (the
    internal subscription that feeds the storage) and ``_handlers`` (per node)."""
    manager.storage = previous.storage
    manager._sub = previous._sub
    manager._handlers = previous._handlers
