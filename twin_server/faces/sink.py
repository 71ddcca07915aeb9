"""Face-ward: the sessions' values into the faces' bound variables, a sink of the
pacers (``runtime/sinks.py``), never from the tick.

Each pacer hands ``FaceSink.deliver`` its session's frame once per publish period,
as it does the OPC UA publisher; a frame of a session no face binds is not taken.
The sink's task (``run``) writes each face's bound variables from it: the value in
the face's unit (``variables.Conversion``), cast to the face's DataType with the
rules the HIL mirror uses for PLC nodes (``hil/casting.py``: rounding and clamping
into an integer type, Float's range), as a prepared DataValue with the frame's
stamp as Source- and ServerTimestamp, through the publisher's fast path
(``opcua/patches/fastpath.write_values``), only the values that changed, after
waiting for any clock tick due meanwhile (``runtime.clock.Ticks``). A value's
status is the frame's: Good, ``BadCommunicationError`` while the session's worker
is gone, a HIL input's own status while its PLC is lost; a value the face's type
cannot hold (NaN into an integer) is ``BadOutOfRange``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from asyncua import ua
from asyncua.server.address_space import AddressSpace

from twin_server.errors import TwinServerError
from twin_server.faces.binding import BoundVariable, FaceBindings
from twin_server.hil.casting import to_plc
from twin_server.opcua.patches import fastpath
from twin_server.opcua.patches.fastpath import data_value
from twin_server.runtime.clock import TICKS, Ticks
from twin_server.runtime.host import GOOD_ONLY, Frame, HostedSession, SessionLayout
from twin_server.runtime.sinks import Stamp

log = structlog.get_logger(__name__)

LOST = ua.StatusCode(ua.StatusCodes.BadCommunicationError)
OUT_OF_RANGE = ua.StatusCode(ua.StatusCodes.BadOutOfRange)
#: how much longer than the last write a write may take, for ``Ticks.clear``
MARGIN = 1.5
_UNSENT = object()


def face_value(bound: BoundVariable, value: Any) -> Any:
    """A session value as ``bound``'s face shows it: in its unit, of its type
    (TwinServerError when its type has no such value)."""
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and not bound.convert.identity:
        value = bound.convert.to_face(float(value))
    return to_plc(value, bound.vtype).value


@dataclass(slots=True)
class _Face:
    """One face's bindings of one session, and what was last written."""

    bindings: FaceBindings
    aspace: AddressSpace
    layout: SessionLayout | None = None
    #: each binding's index in the session's frame (None: not in this layout)
    indexes: list[int | None] = field(default_factory=list)
    sent: list[Any] = field(default_factory=list)
    version: int | None = None
    good: bool = True
    quality: Mapping[int, int] = field(default_factory=lambda: GOOD_ONLY)
    write_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class FaceSinkStatistics:
    faces: int
    publishes: int  # face writes of a frame
    values_published: int


class FaceSink:
    """The faces' sink: takes the frames of bound sessions (``deliver``) and writes
    them into the faces' variables (``run``, a task of the daemon's TaskGroup).
    ``lookup``: the served session of a name, None if there is none (deleted)."""

    def __init__(self, lookup: Callable[[str], HostedSession | None],
                 ticks: Ticks = TICKS) -> None:
        self._lookup = lookup
        self._ticks = ticks
        self._faces: dict[str, list[_Face]] = {}
        self._pending: dict[str, tuple[Frame, Stamp]] = {}
        self._wake = asyncio.Event()
        self._publishes = 0
        self._values = 0

    def add(self, bindings: FaceBindings, aspace: AddressSpace) -> None:
        """Feed ``bindings``' variables (in ``aspace``) from their session's frames."""
        if bindings.session is None or not bindings.variables:
            return
        self._faces.setdefault(bindings.session, []).append(_Face(bindings, aspace))

    def statistics(self) -> FaceSinkStatistics:
        return FaceSinkStatistics(sum(len(f) for f in self._faces.values()),
                                  self._publishes, self._values)

    def wants(self, session: str) -> bool:
        return session in self._faces and session not in self._pending

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        if session in self._faces:
            self._pending[session] = (frame, stamp)
            self._wake.set()

    async def run(self) -> None:
        """Write the frames delivered, session after session, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                session = next(iter(self._pending))
                frame, stamp = self._pending.pop(session)
                for face in self._faces.get(session, ()):
                    try:
                        await self._publish(session, face, frame, stamp)
                    except Exception:
                        log.exception("face_publish_failed", face=face.bindings.face,
                                      session=session)
                await asyncio.sleep(0)

    async def publish_now(self, session: str) -> int:
        """Write ``session``'s current frame into its faces now (at start-up, so that
        the bound variables are Good before the first client reads them)."""
        hosted = self._lookup(session)
        if hosted is None:
            return 0
        frame, stamp = hosted.frame(), Stamp.now()
        written = 0
        for face in self._faces.get(session, ()):
            written += await self._publish(session, face, frame, stamp)
        return written

    async def _publish(self, session: str, face: _Face, frame: Frame, stamp: Stamp) -> int:
        hosted = self._lookup(session)
        if hosted is None:
            return 0
        layout = hosted.layout
        if layout is not face.layout:  # first, or the session was made anew
            where = {key: i for i, (key, _) in enumerate(layout.variables)}
            face.indexes = [where.get(b.var_key) for b in face.bindings.variables]
            face.sent = [_UNSENT] * len(face.indexes)
            face.layout, face.version = layout, None
        if frame.version == face.version and frame.good == face.good \
                and frame.quality == face.quality:
            return 0
        if frame.good != face.good:
            face.sent = [_UNSENT] * len(face.indexes)
        quality, before = frame.quality, face.quality
        face.version, face.good, face.quality = frame.version, frame.good, quality
        now = stamp.datetime
        changes: list[tuple[ua.NodeId, ua.DataValue]] = []
        values = frame.values
        sent = face.sent
        for n, (bound, index) in enumerate(zip(face.bindings.variables, face.indexes,
                                               strict=True)):
            if index is None:
                continue
            value = values[index]
            status = quality.get(index)
            if value == sent[n] and status == before.get(index) and frame.good:
                continue
            sent[n] = value
            try:
                dv = data_value(face_value(bound, value), bound.vtype, now)
            except TwinServerError:
                dv = ua.DataValue(StatusCode=OUT_OF_RANGE, SourceTimestamp=now,
                                  ServerTimestamp=now)
            if not frame.good:
                dv.StatusCode = LOST
            elif status is not None:
                dv.StatusCode = ua.StatusCode(status)
            changes.append((bound.nodeid, dv))
        if not changes:
            return 0
        await self._ticks.clear(MARGIN * face.write_seconds)
        started = time.perf_counter()
        await fastpath.write_values(face.aspace, changes)
        face.write_seconds = time.perf_counter() - started
        self._publishes += 1
        self._values += len(changes)
        return len(changes)
