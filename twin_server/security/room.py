"""Room for client sessions: the server's limit, one client address's share of it,
and sessions nobody uses any more giving way to a new client of their address.

asyncua keeps an activated session with subscriptions after its connection drops
(so that the client can reactivate it on a new channel, OPC UA Part 4, 6.7), and a
session whose client holds its connection but sends nothing lives until its
timeout. Left alone, a client that opens ``max_client_sessions`` sessions and
abandons them locks every other client out for as long as they live.

So, at a session's first activation (``Guard.get_user`` calls ``find``; once the
user is accepted, ``Guard.admit`` calls ``make``):

* one address may hold ``sessions_per_address`` activated sessions (by default
  half of ``max_client_sessions``), so other hosts always find room;
* when the address (or the whole server) is at its limit, the *abandoned*
  session of that address that has been quiet longest gives way: abandoned means
  its connection is gone, or it sent no request for ``abandoned_session_idle``
  seconds. It is closed as asyncua closes a session (``close_session``, its
  subscriptions deleted), and a connection it still held is closed;
* otherwise the new session is refused with BadTooManySessions.

Only sessions of the new client's own address give way: a stranger cannot end a
SCADA's session while that SCADA is reconnecting after a network blip.

Loopback addresses are counted like any other: a tunnel or a proxy on the host
forwards remote clients from 127.0.0.1, and exempting it would exempt them all.
An operator whose clients do all arrive through one such relay raises
``max_sessions_per_address`` to ``max_client_sessions``.

Relies on asyncua internals (asyncua 2.1), each named where it is used:
``InternalServer._external_sessions``, ``unregister_external_session`` and
``asyncio_transports``; ``InternalSession._last_activity`` and ``close_session``; and the
``processor.session`` of asyncua's OPCUAProtocol behind our ChunkLimitProtocol.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError

from twin_server.config.security import LimitsConfig
from twin_server.opcua.patches import internals

log = structlog.get_logger(__name__)


class _Counters(Protocol):
    limits_hit: int
    sessions_displaced: int


class SessionRoom:
    """Counts activated client sessions per address and finds the one to displace."""

    def __init__(self, iserver: Any, limits: LimitsConfig, counters: _Counters,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.iserver = iserver
        self.limits = limits
        self.counters = counters
        #: must be the clock of asyncua's InternalSession._last_activity
        self.clock = clock
        #: the client address each session was created from
        self._addresses: weakref.WeakKeyDictionary[Any, str | None] = \
            weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Task[None]] = set()

    def created(self, session: Any, address: str | None) -> None:
        self._addresses[session] = address

    def find(self, session: Any | None, peer: str | None) -> Any | None:
        """The session that must give way for ``session`` (None: there is room), or
        BadTooManySessions (a ServiceError)."""
        address = self._addresses.get(session, peer) if session is not None else peer
        active = [s for s in self._sessions() if s.is_activated() and s is not session]
        own = [s for s in active if self._addresses.get(s) == address] \
            if address is not None else []
        share = self.limits.sessions_per_address
        if address is not None and len(own) >= share:
            limit, scope = share, "address"
        elif len(active) >= self.limits.max_client_sessions:
            limit, scope = self.limits.max_client_sessions, "server"
        else:
            return None
        victim = self._oldest_abandoned(own)
        if victim is None:
            self.counters.limits_hit += 1
            setting = "max_sessions_per_address" if scope == "address" else "max_client_sessions"
            log.info("session_limit_reached", peer=address, limit=limit, scope=scope,
                     fix=f"close sessions no longer used, or raise server.limits.{setting}")
            raise ServiceError(ua.StatusCodes.BadTooManySessions)
        return victim

    def make(self, session: Any, peer: str | None) -> None:
        """Close the session that gives way for ``session``, if one must."""
        victim = self.find(session, peer)
        if victim is not None:
            self._displace(victim)

    def _sessions(self) -> list[Any]:
        # asyncua internal: InternalServer._external_sessions, auth token -> session
        return list(internals.external_sessions(self.iserver).values())

    def _connections(self) -> dict[Any, asyncio.BaseTransport]:
        """Each session served by an open connection, with that connection."""
        held: dict[Any, asyncio.BaseTransport] = {}
        # asyncua internal: InternalServer.asyncio_transports (every open connection),
        # the transport's protocol (our limits.ChunkLimitProtocol around asyncua's
        # OPCUAProtocol), its UaProcessor and the session that processor serves
        for transport in list(getattr(self.iserver, "asyncio_transports", [])):
            if transport.is_closing():
                continue
            protocol = transport.get_protocol()
            protocol = getattr(protocol, "inner", protocol)
            session = getattr(getattr(protocol, "processor", None), "session", None)
            if session is not None:
                held[session] = transport
        return held

    def _oldest_abandoned(self, candidates: list[Any]) -> Any | None:
        if not candidates:
            return None
        held = self._connections()
        now = self.clock()
        abandoned = []
        for session in candidates:
            # asyncua internal: InternalSession._last_activity (time.monotonic of its
            # last request)
            idle = now - internals.last_activity(session, now)
            if session not in held or idle >= self.limits.abandoned_session_idle:
                abandoned.append((idle, session))
        if not abandoned:
            return None
        return max(abandoned, key=lambda pair: pair[0])[1]

    def _displace(self, session: Any) -> None:
        held = self._connections()
        transport = held.get(session)
        idle = self.clock() - internals.last_activity(session, self.clock())
        self.counters.sessions_displaced += 1
        log.info("session_displaced", peer=self._addresses.get(session),
                 session=str(getattr(session, "session_id", "?")),
                 reason="connection gone" if transport is None else "idle",
                 idle=round(idle, 1))
        # asyncua internal: unregistered now, so that it is neither counted nor
        # reactivated; closed as asyncua closes a session (its subscriptions deleted)
        # as soon as the loop runs, since activation cannot wait here; in a context of
        # its own, as the server's own call: in the new client's, its request context
        # (guard.CONNECTION) would make the victim's subscriptions foreign to the close
        self.iserver.unregister_external_session(session)
        task = asyncio.get_running_loop().create_task(session.close_session(True),
                                                      context=contextvars.Context())
        self._closing.add(task)
        task.add_done_callback(self._closed)
        if transport is not None:
            transport.close()

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session_close_failed", error=repr(task.exception()))
