"""HistoryRead continuation points, held per client session and bounded.

A continuation point handed to a client is 16 random bytes: a handle to what the
server keeps (the node, and the read's own position: the store's key of the last
value returned, or the next interval). So a point is valid only in the session
that got it and only once: using it (or releasing it) takes it out of the table.

OPC UA Part 4 (7.9) rules: a session holds at most ``limit`` points; they live
until the client reads on from them, releases them, or the session closes; and
"a Server shall automatically free ContinuationPoints from prior requests from a
Session if they are needed to process a new request from this Session". So when
a request needs a point and the session's table is full, the oldest point of an
earlier request goes (using it later answers BadContinuationPointInvalid); only
a single request that needs more than ``limit`` points gets
BadNoContinuationPoints for the rest.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from asyncua import ua

#: bytes of a handle: unguessable, so a point cannot be used from another session
HANDLE_BYTES = 16


@dataclass(frozen=True, slots=True)
class Point:
    """What a continuation point stands for."""

    nodeid: ua.NodeId
    position: bytes  # the read's own continuation (kind byte, then its fields)
    request: int  # the request that issued it


@dataclass(frozen=True, slots=True)
class PointStatistics:
    sessions: int  # sessions holding points
    held: int  # points held in all
    issued: int
    evicted: int  # freed for a later request of the same session
    refused: int  # BadNoContinuationPoints


class ContinuationPoints:
    """The continuation points of every client session, at most ``limit`` each.

    ``session`` is any hashable key: the server's session object, or None for
    requests that come without one (the server's own)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a session must be allowed at least 1 continuation point "
                             f"(got {limit})")
        self.limit = limit
        self._sessions: dict[Hashable, OrderedDict[bytes, Point]] = {}
        self._requests = 0
        self._issued = 0
        self._evicted = 0
        self._refused = 0

    def next_request(self) -> int:
        """A number for a new request (points it issues are not freed for it)."""
        self._requests += 1
        return self._requests

    def issue(self, session: Hashable, nodeid: ua.NodeId, position: bytes,
              request: int) -> bytes | None:
        """A new handle for ``position``, or None if the session's points are all
        taken by this same request."""
        table = self._sessions.setdefault(session, OrderedDict())
        if len(table) >= self.limit:
            oldest = next((h for h, p in table.items() if p.request != request), None)
            if oldest is None:
                self._refused += 1
                return None
            del table[oldest]
            self._evicted += 1
        handle = secrets.token_bytes(HANDLE_BYTES)
        table[handle] = Point(nodeid, position, request)
        self._issued += 1
        return handle

    def take(self, session: Hashable, handle: bytes, nodeid: ua.NodeId) -> bytes | None:
        """The position ``handle`` stands for, taking it out; None if the session
        holds no such point or it belongs to another node (it stays then)."""
        table = self._sessions.get(session)
        point = table.get(handle) if table is not None else None
        if point is None or point.nodeid != nodeid:
            return None
        assert table is not None
        del table[handle]
        return point.position

    def release(self, session: Hashable, handle: bytes) -> bool:
        """Free ``handle``; False if the session held no such point."""
        table = self._sessions.get(session)
        return table is not None and table.pop(handle, None) is not None

    def close(self, session: Hashable) -> int:
        """Free every point of a closed session; how many there were."""
        return len(self._sessions.pop(session, ()))

    def held(self, session: Hashable) -> int:
        return len(self._sessions.get(session, ()))

    def statistics(self) -> PointStatistics:
        return PointStatistics(sessions=len(self._sessions),
                               held=sum(len(t) for t in self._sessions.values()),
                               issued=self._issued, evicted=self._evicted,
                               refused=self._refused)
