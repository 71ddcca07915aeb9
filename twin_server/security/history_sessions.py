"""HistoryRead per client session: which session a request comes from, and when
that session ends, so that continuation points are held (and bounded) per session
and freed with it.

asyncua hands a HistoryRead to ``iserver.history_manager.read_history(params)``
without saying whose it is. ``route_history_reads`` makes each client session
created from then on send its HistoryRead requests to ``reader.read_history(params,
session, wire=True)`` and tell ``reader.session_closed(session)`` when it closes.

asyncua internals relied on (2.1):

* ``InternalServer.create_session(name, user, external)``: called by the binary
  server's ``UaProcessor`` for every CreateSession; wrapped on this server
  instance (``security.context`` wraps it too; the wrappers compose).
* ``InternalSession.history_read(params)``: what ``UaProcessor`` awaits for a
  HistoryRead request; replaced on each session instance.
* ``InternalSession.close_session(delete_subs)``: awaited on CloseSession, when
  the connection of a session without subscriptions is lost, and when the
  session times out; wrapped on each session instance.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from asyncua import ua

_MARK = "_twin_server_history_reader"


class SessionHistory(Protocol):
    async def read_history(self, params: ua.HistoryReadParameters,
                           session: Hashable = None, *,
                           wire: bool = False) -> list[ua.HistoryReadResult]: ...

    def session_closed(self, session: Hashable) -> None: ...


def route_history_reads(iserver: Any, reader: SessionHistory) -> None:
    """Route the HistoryRead requests of every client session created from now on
    to ``reader`` (idempotent for the same reader)."""
    if getattr(iserver, _MARK, None) is reader:
        return
    create = iserver.create_session

    def create_session(*args: Any, **kwargs: Any) -> Any:
        session = create(*args, **kwargs)
        _route(session, reader)
        return session

    iserver.create_session = create_session
    setattr(iserver, _MARK, reader)


def _route(session: Any, reader: SessionHistory) -> None:
    close = session.close_session

    async def history_read(params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        return await reader.read_history(params, session, wire=True)

    async def close_session(*args: Any, **kwargs: Any) -> None:
        try:
            await close(*args, **kwargs)
        finally:
            reader.session_closed(session)

    session.history_read = history_read
    session.close_session = close_session


__all__ = ["SessionHistory", "route_history_reads"]
