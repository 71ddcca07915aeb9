"""Publishing session values into the address space: the OPC UA sink of the pacers.

Each session's ``runtime.sinks.Pacer`` hands the ``Publisher`` one ``Frame`` per
publish period with its ``Stamp`` (``deliver``); the publisher's task (``run``)
writes it. A publish compares what it would write against what it last wrote and
writes only the differences, each as a prepared ``ua.DataValue`` (Source- and
ServerTimestamp = the frame's stamp, the time the history records the same values
at) through ``fastpath.write_values``: the server-side write of
``AddressSpace.write_attribute_value`` without its coroutine per value, handing
each change to the monitored items through the lighter path that the publisher
installs on its address space (``fastpath.py``). The DataValues are built and
written a chunk at a time, letting the event loop run every ``BUDGET`` seconds.
Before its start that cannot yield (the comparison of the frame with what was
sent) and before each chunk, a publish waits for any clock tick that would fall
due meanwhile (``runtime.clock.Ticks``), so that ticks start on time whatever the
size of the publish. (Building all 1,000 DataValues of a publish before writing
any held the loop for ~4 ms: the clock's lateness p99 with no client at all.)

A session's frames are published in order, the latest winning: a frame delivered
while the previous one of the session is still being written replaces any frame
waiting behind it (subscribers then miss a frame that the history has; never the
other way round).

A frame whose ``version`` is the one last published is skipped whole, in
``deliver``: every value it shows, the clock's Diagnostics included, changes only
with a tick, a write, a reset or a state change, each of which moves the version.
(100 Suspended sessions publishing at 10 Hz cost ~10 % of a core when their dozen
scalars and clock percentiles were computed anyway on every cycle.)

A frame that is not ``good`` (the session's worker died, and is being replaced)
is published with its last values, each with StatusCode ``BadCommunicationError``
(the link to where the values come from is gone: OPC UA's code for a lost data
source, as the HIL mirror uses for a lost PLC), the session's State showing
Halted; the next good frame sends every value again, Good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from asyncua import ua
from asyncua.server.address_space import AddressSpace

from twin_server.engine.session import VarKey
from twin_server.errors import NotFound
from twin_server.opcua.faults import FaultNodes
from twin_server.opcua.patches import fastpath
from twin_server.opcua.patches.fastpath import data_value
from twin_server.opcua.tree import SessionNodes, scalar_values
from twin_server.runtime.clock import TICKS, Ticks
from twin_server.runtime.host import GOOD_ONLY, Frame, HostedSession
from twin_server.runtime.sinks import Stamp

log = structlog.get_logger(__name__)

_VALUE = ua.AttributeIds.Value
#: a value no session produces, so that the first publish writes everything
_UNSENT = object()
#: values in a publish's first chunk; later chunks are sized to take about BUDGET
#: seconds (between MIN_CHUNK and MAX_CHUNK values), the time after which the
#: publisher lets the event loop run
CHUNK = 32
MIN_CHUNK, MAX_CHUNK = 4, 512
BUDGET = 0.0005
#: the status of a value whose session's worker is gone (``Frame.good`` False)
LOST = ua.StatusCode(ua.StatusCodes.BadCommunicationError)
#: how much longer than its estimate a chunk or a read may take, for ``Ticks``
MARGIN = 1.5


class _Written:
    """What a client wrote into a watched variable's node (``flags``), as the sent
    value: never equal to a value, so that the next publish tells ``on_flag`` of it
    (without writing it again where the frame holds the same value)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass(frozen=True, slots=True)
class PublisherStatistics:
    """An immutable snapshot of the publisher's work since it was created."""

    sessions: int
    publish_cycles: int  # session publishes (one session, one cycle)
    skipped_cycles: int  # of which the session's version had not moved
    values_published: int  # node values written
    last_cycle_seconds: float  # wall time of the latest session publish


@dataclass(slots=True)
class PublishTarget:
    """One session's publishing state: what was last sent, and when it is due."""

    session: HostedSession
    nodes: SessionNodes
    version: int | None = None
    sent_scalars: list[Any] = field(default_factory=list)
    sent_values: list[Any] = field(default_factory=list)
    #: the frame delivered and not yet published, with its stamp (the latest wins)
    pending: tuple[Frame, Stamp] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: told of each published change of a watched variable (index into variables)
    #: after the first publish, with the frame it is in: the edges of Boolean
    #: outputs, the parameters that set other variables' EURange (``server.py``);
    #: returns more writes for the same publish (those EURanges)
    on_flag: Callable[[VarKey, Any, Frame], list[tuple[ua.NodeId, ua.DataValue]]] | None = None
    flags: frozenset[int] = frozenset()
    #: how long the latest publish ran before it could first yield (the frame, the
    #: scalars and the comparison with what was sent)
    values_seconds: float = 0.0
    #: whether the frame last published was good (its values Good unless ``quality``)
    good: bool = True
    #: the ``Frame.quality`` last published: the variables (by index) whose value is
    #: not Good (a HIL input while its PLC link is down), with their StatusCode
    quality: Mapping[int, int] = field(default_factory=lambda: GOOD_ONLY)
    #: while a publish is writing: the variables a client wrote meanwhile, which that
    #: publish leaves alone
    overwritten: set[int] | None = None
    #: taken out of the publisher (its session is being deleted): a publish waiting
    #: for a tick or between two chunks stops there
    removed: bool = False
    #: the frame's ``forces`` last shown, and what shows the forced inputs when it
    #: moves (``server.py``: asks the session which, writes ForcedInputs)
    forces: int | None = None
    on_forces: Callable[[], Awaitable[None]] | None = None
    #: the frame's ``faults`` last shown, and what shows the session's Faults
    #: (``opcua/faults.py``): ``sync`` when it moves, ``show`` with every frame
    faults: int | None = None
    fault_nodes: FaultNodes | None = None

    def __post_init__(self) -> None:
        self.sent_scalars = [_UNSENT] * len(self.nodes.scalars)
        self.sent_values = [_UNSENT] * len(self.nodes.variables)

    def accepted(self, index: int, value: Any) -> None:
        """A client write put ``value`` into variable ``index``'s node already."""
        self.sent_values[index] = _Written(value) if index in self.flags else value
        if self.overwritten is not None:
            self.overwritten.add(index)


class Publisher:
    """The OPC UA sink: takes every registered session's frames (``deliver``) and
    writes them into its nodes (``run``, the daemon's publish task; ``publish``)."""

    def __init__(self, aspace: AddressSpace, ticks: Ticks = TICKS) -> None:
        self._aspace = aspace
        self._ticks = ticks
        fastpath.install(aspace, ticks)
        self._targets: dict[str, PublishTarget] = {}
        #: set when a frame waits to be published
        self._wake = asyncio.Event()
        self._cycles = 0
        self._skipped = 0
        self._values = 0
        self._last_cycle = 0.0

    def add(self, target: PublishTarget) -> None:
        self._targets[target.session.name] = target

    def remove(self, name: str) -> None:
        target = self._targets.pop(name, None)
        if target is not None:
            target.removed = True

    def target(self, name: str) -> PublishTarget:
        return self._targets[name]

    def statistics(self) -> PublisherStatistics:
        return PublisherStatistics(len(self._targets), self._cycles, self._skipped,
                                   self._values, self._last_cycle)

    def wants(self, session: str) -> bool:
        """Whether ``session`` is published and its last frame was taken (a frame
        delivered while one waits replaces it: ``runtime.sinks.Sink``)."""
        target = self._targets.get(session)
        return target is not None and target.pending is None and not target.removed

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        """The pacer's frame of ``session`` (``runtime.sinks.Sink``): queued for
        ``run``, unless its version is the one published last (a skipped cycle).
        Frames of sessions not registered are not ours."""
        target = self._targets.get(session)
        if target is None or target.removed:
            return
        if (frame.version == target.version and frame.quality == target.quality
                and target.pending is None):
            self._skipped += 1
            self._cycles += 1
            return
        target.pending = (frame, stamp)
        self._wake.set()

    async def publish(self, target: PublishTarget) -> int:
        """Write the frame waiting for ``target`` (what changed since the last
        publish); return how many values were written (0 when none waits)."""
        async with target.lock:
            # (the comparison cannot yield: about a ms for a twin of 5,000 variables)
            await self._ticks.clear(MARGIN * target.values_seconds)
            if target.removed or target.pending is None:
                return 0  # deleted while this publish waited: its session may be closed
            started = time.perf_counter()
            (frame, stamp), target.pending = target.pending, None
            session = target.session
            try:
                clock = session.clock_statistics()
            except NotFound:
                return 0  # deleted meanwhile
            version = frame.version
            if version == target.version and frame.quality == target.quality:
                self._skipped += 1
                self._cycles += 1
                return 0
            now = stamp.datetime
            changes: list[tuple[ua.NodeId, ua.DataValue]] = []
            sent = target.sent_scalars
            for i, value in enumerate(scalar_values(frame, session.layout.step_size, clock)):
                if sent[i] != value:
                    nodeid, vtype = target.nodes.scalars[i]
                    changes.append((nodeid, data_value(value, vtype, now)))
                    sent[i] = value
            target.version = version
            variables = target.nodes.variables
            if frame.good != target.good:  # every value again, with its new status
                target.good = frame.good
                target.sent_values = [_UNSENT] * len(variables)
            # the frame lists its values in the order of the layout, as our variables
            current = frame.values
            if len(current) != len(variables):
                raise RuntimeError(f"session {session.name!r} lists {len(current)} values "
                                   f"for {len(variables)} variable nodes")
            sent = target.sent_values
            # (an _UNSENT entry never equals a value)
            changed = [i for i, value in enumerate(current) if sent[i] != value]
            quality, before = frame.quality, target.quality
            if quality != before:  # a status that changed alone: sent again
                again = {i for i in quality.keys() | before.keys()
                         if quality.get(i) != before.get(i)}.difference(changed)
                if again:
                    changed = sorted([*changed, *again])
                target.quality = quality
            target.values_seconds = time.perf_counter() - started
            written = await self._write(target, changes, changed, frame, now)
            if frame.forces != target.forces and target.on_forces is not None \
                    and not target.removed:
                target.forces = frame.forces  # (rare: a write, a release, a reset)
                await target.on_forces()
            fault_nodes = target.fault_nodes
            if fault_nodes is not None and not target.removed:
                if frame.faults != target.faults:  # (rare: an inject, a clear, a reset)
                    target.faults = frame.faults
                    await fault_nodes.sync()
                await fault_nodes.show(frame)
            self._cycles += 1
            self._values += written
            self._last_cycle = time.perf_counter() - started
            return written

    async def _write(self, target: PublishTarget, changes: list[tuple[ua.NodeId, ua.DataValue]],
                     changed: list[int], frame: Frame, now: datetime) -> int:
        """Write the scalar ``changes``, then variable ``i`` for every ``i`` in
        ``changed`` (its value ``frame.values[i]``), through the fast path a chunk at a
        time (each about ``BUDGET`` seconds of work), building each chunk's
        DataValues just before writing it, letting the loop run whenever ``BUDGET``
        seconds of work have passed, and waiting before a chunk for a clock tick
        that would fall due while it runs (``Ticks``). A client
        write accepted during such a pause wins over this publish: that variable is
        left as the client wrote it. Returns how many values were written."""
        aspace = self._aspace
        variables = target.nodes.variables
        sent = target.sent_values
        flags = target.flags
        quality = frame.quality
        lost = not target.good
        on_flag = target.on_flag
        current = frame.values
        overwritten: set[int] = set()
        target.overwritten = overwritten
        written = 0
        since = time.perf_counter()
        size, expected = CHUNK, 0.0
        start = 0
        try:
            while start < len(changed):
                if start:
                    await self._ticks.clear(expected)
                if target.removed:
                    return written  # its nodes are being deleted
                began = time.perf_counter()
                batch = changed[start:start + size]
                start += size
                for i in batch:
                    if overwritten and i in overwritten:
                        continue
                    key, nodeid, vtype = variables[i]
                    value = current[i]
                    before = sent[i]
                    if type(before) is _Written and before.value == value and not lost \
                            and i not in quality:
                        sent[i] = value  # in the node already
                        if on_flag is not None:
                            changes.extend(on_flag(key, value, frame))
                        continue
                    dv = data_value(value, vtype, now)
                    if lost:
                        dv.StatusCode = LOST
                    elif quality and i in quality:
                        dv.StatusCode = ua.StatusCode(quality[i])
                    changes.append((nodeid, dv))
                    if i in flags and sent[i] is not _UNSENT and on_flag is not None:
                        changes.extend(on_flag(key, value, frame))
                    sent[i] = value
                await fastpath.write_values(aspace, changes)  # (the first with the scalars)
                written += len(changes)
                changes = []
                ended = time.perf_counter()
                # the next chunk: about BUDGET of work at this one's cost per value
                # (ten subscribers make a value ten times dearer than one)
                per_value = max(ended - began, 1e-7) / len(batch)
                size = max(MIN_CHUNK, min(MAX_CHUNK, int(BUDGET / per_value)))
                expected = MARGIN * per_value * size
                if ended - since > BUDGET:
                    await asyncio.sleep(0)
                    since = time.perf_counter()
            if changes:
                await fastpath.write_values(aspace, changes)
                written += len(changes)
        finally:
            target.overwritten = None
        return written

    async def run(self) -> None:
        """Publish the frames the pacers deliver, session after session, until
        cancelled."""
        log.info("publisher_started", sessions=len(self._targets))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                for target in list(self._targets.values()):
                    if target.pending is None or target.removed:
                        continue
                    try:
                        await self.publish(target)
                    except Exception:
                        log.exception("publish_failed", session=target.session.name)
                    # let due clock ticks run between two sessions' publishes: many
                    # sessions due at once would otherwise hold the loop for the
                    # whole round (100 sessions: tens of ms of lateness for each)
                    await asyncio.sleep(0)
        finally:
            log.info("publisher_stopped", cycles=self._cycles, values=self._values)
