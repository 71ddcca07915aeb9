"""Limits under hostile clients, and a rate limit on asyncua's logging.

``apply_limits`` also puts ``ChunkLimitProtocol`` in front of every connection:
asyncua buffers a chunk until all the bytes its header announces have arrived,
so one connection announcing a 4 GiB chunk could fill the memory.

``apply_limits`` sets asyncua's own bounds from ``[server.limits]``: message and
chunk sizes (``Server.limits``), TCP connections, queued requests per
connection, subscriptions, monitored-item queues, session timeouts and the time
a connection may stay without an activated session (asyncua's binary server
closes it then). Sessions, subscriptions per session and monitored items are
counted by ``guard.Guard``.

asyncua logs a warning or a traceback for every malformed frame; a client
sending garbage in a loop would fill the disk. ``LogRateLimit`` lets the first
``burst`` records of each (logger, message format) through per minute, counts
the rest, and at the end of the minute logs one ``log_records_suppressed`` event
with the counts. It is attached to every ``asyncua*`` logger that exists when
installed (asyncua creates its loggers at import).

asyncua also makes a logger per subscription (``share_subscription_loggers``),
which the logging module keeps for good: each subscription now logs through the
shared one, which is rate-limited, and its own is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import structlog
from asyncua.common.connection import TransportLimits

from twin_server import logs
from twin_server.config.security import LimitsConfig
from twin_server.logs import RateLimit, RateStatistics
from twin_server.opcua.patches import internals

log = structlog.get_logger(__name__)

#: the largest chunk we accept or send (OPC UA's usual 64 KiB)
CHUNK_SIZE = 65535


def apply_limits(server: Any, limits: LimitsConfig,
                 on_connection: Callable[[Any], None] | None = None) -> None:
    """Put ``limits`` into an asyncua Server before it starts; ``on_connection`` is
    called with asyncua's protocol of every connection accepted (see
    ``GuardedTransports``)."""
    server.limits = TransportLimits(
        max_recv_buffer=CHUNK_SIZE, max_send_buffer=CHUNK_SIZE,
        max_chunk_count=math.ceil(limits.max_message_size / CHUNK_SIZE),
        max_message_size=limits.max_message_size)
    iserver = server.iserver
    iserver.max_connections = limits.max_connections
    iserver.max_pending_messages_per_connection = limits.max_pending_messages
    iserver.max_pending_activation_seconds = limits.activation_timeout
    iserver.max_subscriptions = limits.max_subscriptions
    iserver.max_monitored_item_queue_size = limits.max_monitored_item_queue_size
    iserver.max_session_timeout_ms = limits.max_session_timeout * 1000.0
    iserver.min_session_timeout_ms = min(iserver.min_session_timeout_ms,
                                         iserver.max_session_timeout_ms)
    if not isinstance(iserver.asyncio_transports, GuardedTransports):
        iserver.asyncio_transports = GuardedTransports(iserver.asyncio_transports,
                                                       on_connection)


#: most bytes of an incomplete chunk a connection may keep buffered: one chunk
#: (asyncua refuses bigger ones only once they have fully arrived)
MAX_PARTIAL_CHUNK = CHUNK_SIZE + 1024


class ChunkLimitProtocol(asyncio.Protocol):
    """Stands between a transport and asyncua's OPCUAProtocol and closes the
    connection whose incomplete chunk outgrows ``MAX_PARTIAL_CHUNK``.

    asyncua buffers a chunk until all the bytes its header announces have come (up
    to 4 GiB), so a client announcing a huge chunk and streaming could otherwise
    grow the server's memory until the activation timeout closes it."""

    def __init__(self, inner: Any, transport: asyncio.BaseTransport) -> None:
        self.inner = inner
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)
        pending = internals.pending_chunk_bytes(self.inner)
        if pending > MAX_PARTIAL_CHUNK and not self.transport.is_closing():
            log.warning("connection_closed", peer=_peer(self.transport), reason="chunk too large",
                        buffered=pending, limit=MAX_PARTIAL_CHUNK)
            internals.drop_pending_chunk(self.inner)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else None


class GuardedTransports(list):  # type: ignore[type-arg]  # holds asyncio transports
    """``InternalServer.asyncio_transports``: asyncua appends each accepted
    connection's transport here (in ``OPCUAProtocol.connection_made``, once the
    protocol's UaProcessor exists), which is where ChunkLimitProtocol is put in and
    ``on_connection`` sees the protocol."""

    def __init__(self, transports: Any = (),
                 on_connection: Callable[[Any], None] | None = None) -> None:
        super().__init__(transports)
        self.on_connection = on_connection

    def append(self, transport: Any) -> None:
        super().append(transport)
        protocol = transport.get_protocol()
        if not isinstance(protocol, ChunkLimitProtocol):
            if self.on_connection is not None:
                self.on_connection(protocol)
            transport.set_protocol(ChunkLimitProtocol(protocol, transport))


#: LogRateLimit.statistics(): records passed and suppressed
LogLimitStatistics = RateStatistics


class LogRateLimit(RateLimit, logging.Filter):
    """At most ``burst`` records per (logger, message format) per ``window`` seconds
    (the counting is ``twin_server.logs.RateLimit``, as for our own events)."""

    def __init__(self, burst: int = 20, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        RateLimit.__init__(self, burst, window, clock)
        logging.Filter.__init__(self)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self.roll()
        # (a format is short; one a library built with the client's data in it is cut)
        allowed = self.admit(f"{record.name}: {record.msg}"[:200])
        if held:
            log.warning("log_records_suppressed", window=self.window, burst=self.burst,
                        suppressed=sum(held.values()),
                        messages={str(k): v for k, v in list(held.items())[:20]})
        return allowed

    def allow(self, name: str, key: str) -> bool:
        """Count one event of ours, ``key`` of logger ``name``, as a record: within
        the limit?"""
        return self.filter(logging.LogRecord(name, logging.INFO, "", 0, key, None, None))


_installed: LogRateLimit | None = None

#: asyncua's MonitoredItemService names its logger ``<this>.<subscription id>``
SUBSCRIPTION_LOGGER = "asyncua.server.monitored_item_service"
_SHARED_MARK = "_twin_server_shared_loggers"


def share_subscription_loggers(iserver: Any) -> None:
    """Make every subscription created from now on log through the one
    ``SUBSCRIPTION_LOGGER`` logger (idempotent).

    asyncua gives each subscription's MonitoredItemService a logger named after the
    subscription id, and ``logging`` keeps every logger ever made in its registry:
    a server whose clients subscribe and reconnect for months would hold one Logger
    (about 1.5 KB with its lists and cache) per subscription ever created. Those
    loggers, made after ``install_log_rate_limit``, also escaped its limit. Each new
    subscription gets the shared (rate-limited) logger instead, and the one asyncua
    made is dropped from the registry."""
    service = iserver.subscription_service
    if getattr(service, _SHARED_MARK, False):
        return
    create = service.create_subscription
    shared = logging.getLogger(SUBSCRIPTION_LOGGER)
    registry = logging.Logger.manager.loggerDict

    async def create_subscription(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await create(*args, **kwargs)
        finally:
            # the id just used, also when start() failed after the logger was made
            registry.pop(f"{SUBSCRIPTION_LOGGER}.{internals.last_subscription_id(service)}", None)
        subscription = service.subscriptions.get(result.SubscriptionId)
        if subscription is not None:
            subscription.monitored_item_srv.logger = shared
        return result

    service.create_subscription = create_subscription
    setattr(service, _SHARED_MARK, True)



def install_log_rate_limit(burst: int, prefix: str = "asyncua") -> LogRateLimit:
    """Attach one process-wide LogRateLimit to every logger named ``prefix*``
    (``asyncua``, ``asyncua.server.uaprocessor``, ``asyncuagds.validate``, ...);
    again with another ``burst`` changes the limit of the installed one. Our own
    events that a client can cause (``logs.EVENT_LIMIT``) get the same burst."""
    global _installed
    if _installed is None:
        _installed = LogRateLimit(burst)
    _installed.burst = burst
    logs.EVENT_LIMIT.burst = burst
    names = [prefix, *(n for n in logging.root.manager.loggerDict if n.startswith(prefix))]
    if SUBSCRIPTION_LOGGER.startswith(prefix):
        names.append(SUBSCRIPTION_LOGGER)  # (made on first use: see share_subscription_loggers)
    for name in names:
        logger = logging.getLogger(name)
        if _installed not in logger.filters:
            logger.addFilter(_installed)
    return _installed
