"""``WorkerHost``: sessions stepping in worker processes, seen from the main process.

Placement: ``workers`` shared worker processes start with the host; a session
goes to the one with the least measured load (the sum, over its running
sessions, of mean step duration times ticks per second; then the fewest
sessions), and ``isolate=True`` gives a session a worker of its own, ended
with the session. ``spares`` more workers (default 1) wait idle, started: a
crashed worker's place, or an isolated session, takes one at once, and a new
spare starts in the background (starting a Python process with the engine
imported takes 0.5-2.5 s on a busy machine: too long to replace a worker
"within a second" by starting one only then).

The pipe (``wire.Channel``) carries requests with ids, answered by futures; the
main event loop never blocks on it. Values come through shared memory
(``shm.py``): ``frame`` copies the session's block under its seqlock and keeps
the result until the block changes, so reading a frame that did not change
costs one comparison.

A worker's death is seen at once: its ``process.sentinel`` is watched with
``loop.add_reader``. Every session it held is Halted at that moment with a
``WorkerCrashed`` fault (a ``fault`` event) that names the signal, the tick,
and, for the session that was being stepped, the component (from the worker's
status block); its frame keeps the last values with ``good=False``. A new
worker is started in its place, and each session is created there again from
the latest snapshot the main process holds (the one the worker sent in the last
``snapshot_interval``, or one a client took or restored, whichever is newer; a
session without one starts afresh), left Halted on the same fault (no crash
loop: a client decides, with Reset or Restore), and a ``recovered`` event says
so. A session whose recovery itself kills the new worker (restoring the
snapshot crashes) is brought back without its snapshot at the second attempt,
and after a third death in a row left Halted without a worker: commands then
raise its fault, Delete works.

A hung worker: every ``hang_timeout / 4`` seconds (at most 0.25 s) the host
looks at the live step count of every Running session, and of every session
with a Step running in the background (``stepping.py``; the worker moves the
live count after every tick of a Step); one that has not moved for
``hang_timeout`` seconds (or, Running, three of its periods, when those are
longer) gets its worker killed with SIGKILL, and the death is handled as above,
the fault saying that it hung. A Step(n) takes its ticks in slices of a few ms
between the other sessions' ticks, so a long one holds no other session up.

Scheduling (``scheduling.py``): ``scheduling = "realtime"`` has every worker
(spares included) ask for ``SCHED_FIFO`` at ``priority``; each says in its hello
what it got, and the first that did not get it has the host log one
``worker_scheduling_fallback`` event (what was asked, what was got, why, how to
grant it). ``statistics()`` reads each worker's policy from the kernel as it is
now (a worker drops real-time scheduling while it runs flat out). A worker whose
paced sessions need more than its core drops it too, and says so
(``scheduling.OverloadGuard``): the host logs ``worker_overloaded`` (the worker,
its sessions, its CPU share; ``worker_overload_ended`` when it takes real-time
scheduling back), and ``scheduling_fallback`` says it while it lasts.

Closing (``aclose``) is bounded whatever the workers do: a worker that said hello
is asked to end and SIGKILLed after ``stop_timeout`` s; one still starting (a spare,
a replacement: seconds on a busy machine, reading no pipe yet) is SIGKILLed at
once. Every worker is known to the host from the moment its process started
(``_starting`` until its hello), so none is left running past ``aclose`` or, if
the host is never closed, past the interpreter's exit (``_kill_left``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import enum
import itertools
import multiprocessing
import os
import signal
import socket
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import MappingProxyType
from typing import Any

import structlog

from twin_server.engine.session import (
    SEVERITY_FAULT,
    SEVERITY_INFO,
    RunState,
    SessionEvent,
    SessionSettings,
    SessionSnapshot,
    StepProgress,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    NotFound,
    SessionFault,
    WorkerCrashed,
)
from twin_server.runtime import scheduling, shm, worker
from twin_server.runtime.clock import ClockStatistics
from twin_server.runtime.commands import STEP
from twin_server.runtime.host import (
    GOOD_ONLY,
    CrashReport,
    EventListener,
    Frame,
    HostStatistics,
    SessionLayout,
    WorkerInfo,
)
from twin_server.runtime.local import LocalHost
from twin_server.runtime.scheduling import (
    DEFAULT_PRIORITY,
    NORMAL,
    Asked,
    Outcome,
    overload_share,
)
from twin_server.runtime.wire import Channel, Packed, decode_error, unpacked

log = structlog.get_logger(__name__)

#: recoveries after which a session comes back without its snapshot, then not at all
_FRESH_AFTER, _ABANDON_AFTER = 2, 3
#: seconds past a Step's wait after which the host answers it itself (``_step``)
_STEP_GRACE = 0.25
#: twins of at least this many components cross the pipe pickled in threads
LARGE = worker.LARGE
#: seconds a SIGKILLed worker has to be reaped (the kernel: microseconds) before the
#: host gives up waiting for it and logs ``worker_not_reaped``
_KILL_WAIT = 1.0


class HostState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(eq=False)
class _Worker:
    """One worker process, from the main process's side."""

    name: str
    isolated: bool
    process: BaseProcess
    status: shm.StatusBlock
    channel: Channel | None = None
    pid: int = 0
    hello: asyncio.Future[tuple[int, Outcome]] | None = None
    #: the scheduling it asked for and got at start (its hello)
    outcome: Outcome | None = None
    exited: asyncio.Future[int | None] | None = None
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    sessions: dict[str, _Record] = field(default_factory=dict)
    alive: bool = True
    closing: bool = False
    forgotten: bool = False
    #: why the host killed it (it hung), for the fault message
    killed_because: str | None = None
    #: the CPU share that had it drop real-time scheduling, while it is overloaded
    overload: float | None = None


@dataclass(eq=False)
class _Record:
    """One hosted session, from the main process's side: where it is, its last
    frame, the snapshot to bring it back from."""

    name: str
    twin: TwinDefinition
    settings: SessionSettings
    isolate: bool
    slot: int
    worker: _Worker | None = None
    layout: SessionLayout | None = None
    codec: shm.Codec | None = None
    block: shm.ValueBlock | None = None
    frame: Frame | None = None
    frame_seq: int = -1
    #: the session's version in its worker is counted from here (a replacement
    #: worker's session starts counting anew)
    version_base: int = 0
    strings: list[Any] = field(default_factory=list)
    strings_seq: int = 0
    #: (seq, strings changed, statuses of values not Good) sent by the worker
    pending_strings: list[tuple[int, dict[int, Any], dict[int, int]]] = field(
        default_factory=list)
    #: the statuses of values that are not Good (``Session.quality``), as of strings_seq
    quality: Mapping[int, int] = field(default_factory=lambda: GOOD_ONLY)
    snapshot: SessionSnapshot | None = None
    #: counts what set ``snapshot``: a snapshot unpacked in a thread is kept only if
    #: nothing set it meanwhile (``_keep_snapshot``)
    snapshot_seq: int = 0
    fault: SessionFault | None = None
    good: bool = False
    hosted: asyncio.Event = field(default_factory=asyncio.Event)
    recoveries: int = 0
    #: its worker died too often while bringing it back: it stays without one
    abandoned: bool = False
    watch: tuple[int, float] = (-1, 0.0)


class WorkerHost:
    """Sessions in worker processes (``SessionHost``). ``await start()`` first."""

    def __init__(
        self,
        on_event: EventListener,
        *,
        workers: int | None = None,
        hang_timeout: float = 5.0,
        snapshot_interval: float = 5.0,
        publish_interval: float = 0.001,
        start_timeout: float = 30.0,
        stop_timeout: float = 2.0,
        start_method: str = "spawn",
        spares: int = 1,
        scheduling: Asked = NORMAL,
        priority: int = DEFAULT_PRIORITY,
    ) -> None:
        count = (os.cpu_count() or 1) if workers is None else workers
        if count < 1:
            raise ValueError(f"a worker host needs at least 1 worker (got {count}); "
                             f"workers = 0 is the in-process host (LocalHost)")
        if start_method == "fork":
            raise ValueError("workers are not forked: the main process runs threads and "
                             "an event loop; use 'spawn' or 'forkserver'")
        self._on_event = on_event
        self._count = count
        self._hang_timeout = hang_timeout
        self._snapshot_interval = snapshot_interval
        self._publish_interval = publish_interval
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        # (typeshed: BaseContext has no Process)
        self._context: Any = multiprocessing.get_context(start_method)
        self._spare_count = spares
        #: the CPU share at which a worker's overload guard drops it from SCHED_FIFO:
        #: less than 90 % where the shared workers are as many as the cores, so that
        #: the main process keeps half a core (``scheduling.overload_share``)
        self.overload_share = overload_share(count, os.cpu_count() or 1)
        self._scheduling, self._priority = scheduling, priority
        #: the first worker's scheduling that was not the one asked for (logged once)
        self._fallback: Outcome | None = None
        self._spares: list[_Worker] = []
        self._spares_starting = 0
        #: workers whose process has started and which have not said hello yet
        self._starting: set[_Worker] = set()
        self._spare_added = asyncio.Event()
        self.state = HostState.CREATED
        self._shared: list[_Worker] = []
        self._isolated: list[_Worker] = []
        self._records: dict[str, _Record] = {}
        #: each twin of a hosted session, pickled once (in a thread: seconds for a big one)
        self._packs: dict[str, tuple[TwinDefinition, Packed]] = {}
        self._ids = itertools.count(1)
        self._slots = itertools.count(1)
        self._blocks = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashes = self._hangs = self._replacements = 0
        self._last_replacement = 0.0
        self._last_crash: CrashReport | None = None
        self._prefix = f"tw{os.getpid()}x{id(self) & 0xFFFF:x}"
        _OPEN.add(self)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the shared workers (in parallel) and the hang watch."""
        if self.state is not HostState.CREATED:
            raise InvalidState(f"the worker host is {self.state}; it starts once")
        self.state = HostState.RUNNING
        try:
            started = await asyncio.gather(
                *(self._spawn(f"w{i}", isolated=False) for i in range(self._count)),
                *(self._spawn(f"spare{i}", isolated=False) for i in range(self._spare_count)))
        except BaseException:
            await self.aclose()
            raise
        self._shared = list(started[:self._count])
        self._spares = list(started[self._count:])
        self._background(self._watch_forever(), "hang-watch")
        got = self._shared[0].outcome
        log.info("workers_started", workers=self._count,
                 pids=[w.pid for w in self._shared],
                 scheduling=self._scheduling, policy=str(got.got) if got else "")

    async def aclose(self) -> None:
        """Stop every worker: the ones that said hello are asked to end and killed
        after ``stop_timeout`` s; the ones still starting (a replacement, a spare) are
        killed at once. Takes ``stop_timeout`` + 2 x ``_KILL_WAIT`` s at most."""
        if self.state in (HostState.CLOSING, HostState.CLOSED):
            return
        self.state = HostState.CLOSING
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            # (each ends at once, but one whose worker is starting kills it and waits
            # for it to be reaped; one still starting its process is left to do so)
            _done, pending = await asyncio.wait(list(self._tasks), timeout=_KILL_WAIT)
            if pending:
                log.warning("host_tasks_still_ending",
                            tasks=sorted(t.get_name() for t in pending))
        workers = [*self._shared, *self._isolated, *self._spares, *self._starting]
        await asyncio.gather(*(self._stop_worker(w) for w in workers))
        self._spares.clear()
        _OPEN.discard(self)
        for record in self._records.values():
            self._release_block(record)
        self._records.clear()
        self._shared.clear()
        self._isolated.clear()
        self.state = HostState.CLOSED

    async def __aenter__(self) -> WorkerHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- SessionHost -----------------------------------------------------------------------

    async def create(self, name: str, twin: TwinDefinition, settings: SessionSettings, *,
                     snapshot: SessionSnapshot | None = None,
                     isolate: bool = False, fault: SessionFault | None = None,
                     keep_faulted: bool = False) -> SessionLayout:
        self._require_running()
        if name in self._records:
            raise AlreadyExists(f"a session named {name!r} is hosted already")
        record = _Record(name, twin, settings, isolate, next(self._slots))
        self._records[name] = record
        target: _Worker | None = None
        try:
            if isolate:
                target = await self._take_worker(f"isolated-{name}", isolated=True)
            else:
                target = await self._place()
            await self._host(record, target, snapshot=snapshot, fault=fault,
                             keep_faulted=keep_faulted)
        except BaseException:
            if self._records.get(name) is record:
                del self._records[name]
            if isolate and target is not None:
                await self._stop_worker(target)
            raise
        if self._records.get(name) is not record:  # deleted while it was being created
            await self._unhost(record)
            raise NotFound(f"session {name!r} was deleted while it was being created")
        self._set_snapshot(record, snapshot)
        packed = self._packs.get(twin.name)
        for spare in self._spares:
            if packed is not None and packed[0] is twin:
                self._warm(spare, [packed[1]])
        assert record.layout is not None
        return record.layout

    async def delete(self, name: str) -> None:
        record = self._get(name)
        target = record.worker
        try:
            if record.good and target is not None and target.alive:
                with contextlib.suppress(WorkerCrashed):
                    await self._request(target, "delete", name)
        finally:
            self._records.pop(name, None)
            self._prune_packs()
            if target is not None:
                target.sessions.pop(name, None)
            record.good = False
            self._release_block(record)
            if target is not None and target.isolated:
                await self._stop_worker(target)

    async def call(self, name: str, command: str, *args: Any) -> Any:
        record = self._get(name)
        target = await self._hosting(record)
        if command == STEP:
            return await self._step(record, target, *args)
        result = await unpacked(await self._request(target, "call", name, command, args))
        if command == "snapshot":
            self._set_snapshot(record, result)
        elif command == "restore":
            self._set_snapshot(record, args[0])
        return result

    async def _step(self, record: _Record, target: _Worker, count: int = 1,
                    wait: float | None = None) -> StepProgress:
        """A Step in the background (``stepping.py``), answered by the worker when it
        ended or after ``wait`` s; a worker stuck in a tick cannot answer, so past
        ``wait`` (and a grace) the answer is made here from the frame, and the
        worker's own, if it ever comes, is dropped."""
        before = record.frame.step_count if record.frame is not None else 0
        answer = asyncio.ensure_future(
            self._request(target, "call", record.name, STEP, (count, wait)))
        if wait is None:
            result: StepProgress = await answer
            return result
        done, _ = await asyncio.wait({answer}, timeout=wait + _STEP_GRACE)
        if answer in done:
            result = answer.result()
            return result
        answer.add_done_callback(_drop_answer)
        frame = self.frame(record.name)
        return StepProgress(count, max(0, min(count, frame.step_count - before)),
                            frame.state is RunState.SUSPENDED and frame.good)

    def frame(self, name: str) -> Frame:
        record = self._get(name)
        if record.good and record.block is not None:
            self._read(record)
        if record.frame is None:
            raise NotFound(f"session {name!r} is being created")
        return record.frame

    def layout(self, name: str) -> SessionLayout:
        layout = self._get(name).layout
        assert layout is not None
        return layout

    def fault(self, name: str) -> SessionFault | None:
        return self._get(name).fault

    def clock_statistics(self, name: str) -> ClockStatistics:
        record = self._get(name)
        block = record.block
        if block is None:
            return ClockStatistics(0, 0, 0.0, 0.0, 0.0)
        ints, floats = block.ints, block.floats
        return ClockStatistics(int(ints[shm.TICKS]), int(ints[shm.OVERRUNS]),
                               float(floats[shm.LATENESS_P50]),
                               float(floats[shm.LATENESS_P99]),
                               float(floats[shm.LATENESS_MAX]),
                               tuple(block.counts.tolist()))

    def statistics(self) -> HostStatistics:
        spares = sum(w.alive for w in self._spares)
        alive = sum(w.alive for w in (*self._shared, *self._isolated)) + spares
        processes = tuple(
            WorkerInfo(w.name, w.pid, role,
                       tuple(r.name for r in w.sessions.values() if r.good),
                       _policy(w.pid), w.overload or 0.0)
            for role, group in (("shared", self._shared), ("isolated", self._isolated),
                                ("spare", self._spares))
            for w in group if w.alive and w.pid)
        said = [] if self._fallback is None else [_fallback_message(self._fallback)]
        said.extend(_overload_message(w.name, list(w.sessions), w.overload,
                                      "" if w.outcome is None else str(w.outcome.got),
                                      self.overload_share)
                    for w in (*self._shared, *self._isolated, *self._spares)
                    if w.alive and w.overload is not None)
        return HostStatistics(alive, spares, len(self._records), self._crashes, self._hangs,
                              self._replacements, self._last_replacement,
                              processes=processes, last_crash=self._last_crash,
                              scheduling=self._scheduling,
                              scheduling_fallback="; ".join(said))

    def names(self) -> list[str]:
        return list(self._records)

    def recovery_snapshot(self, name: str) -> SessionSnapshot | None:
        """The snapshot session ``name`` would be brought back from if its worker died
        now (None: it would start afresh): the latest from before any fault (a faulted
        session's worker sends none)."""
        return self._get(name).snapshot

    def worker_pid(self, name: str) -> int:
        """The process id of the worker stepping session ``name`` (0: none now)."""
        target = self._get(name).worker
        return target.pid if target is not None and target.alive else 0

    def worker_pids(self) -> list[int]:
        return [w.pid for w in (*self._shared, *self._isolated) if w.alive]

    # -- workers ---------------------------------------------------------------------------

    async def _take_worker(self, name: str, *, isolated: bool) -> _Worker:
        """A spare worker if one is ready (a new spare starts meanwhile); else the one
        starting, when one is (it is further along); else a new one."""
        if not any(w.alive for w in self._spares) and self._spares_starting:
            self._spare_added.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._start_timeout):
                    await self._spare_added.wait()
        while self._spares:
            taken = self._spares.pop(0)
            if taken.alive:
                taken.name, taken.isolated = name, isolated
                break
        else:
            taken = await self._spawn(name, isolated=isolated)
        if isolated:
            self._isolated.append(taken)
        self._replenish()
        return taken

    def _replenish(self) -> None:
        if self.state is not HostState.RUNNING:
            return
        for _ in range(self._spare_count - len(self._spares) - self._spares_starting):
            self._spares_starting += 1
            self._background(self._add_spare(), "spare")

    async def _add_spare(self) -> None:
        try:
            spare = await self._spawn(f"spare{next(self._blocks)}", isolated=False)
        finally:
            self._spares_starting -= 1
        packed = []
        try:
            if self.state is HostState.RUNNING:
                twins = {r.twin.name: r.twin for r in self._records.values()}
                packed = [await self._pack(t) for t in twins.values()]
        except BaseException:  # (cancelled: the host is closing) in no list yet: stop it
            await self._stop_worker(spare)
            raise
        if self.state is HostState.RUNNING:
            self._warm(spare, packed)
            self._spares.append(spare)
            self._spare_added.set()
        else:
            await self._stop_worker(spare)

    async def _spawn(self, name: str, *, isolated: bool) -> _Worker:
        """Start a worker process and wait for its hello."""
        loop = asyncio.get_running_loop()
        status_name = f"{self._prefix}s{next(self._blocks)}"
        status = shm.StatusBlock.create(status_name)
        ours, theirs = socket.socketpair()
        options = worker.WorkerOptions(worker=name, status=status_name,
                                       snapshot_interval=self._snapshot_interval,
                                       publish_interval=self._publish_interval,
                                       asked=self._scheduling, priority=self._priority,
                                       overload_share=self.overload_share)
        process = self._context.Process(target=worker.main, args=(theirs, options),
                                        name=f"twin-worker-{name}", daemon=True)
        created = _Worker(name, isolated, process, status)
        # (spawning execs a fresh interpreter: a few ms the main loop need not wait)
        starting = asyncio.ensure_future(asyncio.to_thread(process.start))
        try:
            await asyncio.shield(starting)
        except BaseException:
            # cancelled (the host is closing): the thread starts the process anyway
            with contextlib.suppress(BaseException):
                await starting
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.join, _KILL_WAIT)
            ours.close()
            status.close()
            shm.unlink(status_name)
            raise
        finally:
            theirs.close()
        created.pid = process.pid or 0
        created.hello = loop.create_future()
        created.exited = loop.create_future()
        loop.add_reader(process.sentinel, self._on_exit, created)
        # from here on the host can stop it (``aclose``), and kills it if nobody does
        # (``_kill_left``), whatever happens to this coroutine
        self._starting.add(created)
        try:
            created.channel = await Channel.open(
                ours, lambda message: self._on_message(created, message))
            async with asyncio.timeout(self._start_timeout):
                created.pid, created.outcome = await asyncio.shield(created.hello)
        except BaseException:
            await self._stop_worker(created)
            raise
        finally:
            self._starting.discard(created)
        self._check_scheduling(created)
        return created

    def _check_scheduling(self, started: _Worker) -> None:
        """Log, once per host, that a worker did not get the scheduling asked for."""
        outcome = started.outcome
        if outcome is None or not outcome.fell_back:
            return
        if self._fallback is None:
            self._fallback = outcome
            log.warning("worker_scheduling_fallback", worker=started.name, pid=started.pid,
                        scheduling=outcome.asked, asked=str(outcome.wanted),
                        got=str(outcome.got), reason=outcome.reason, fix=outcome.fix)
        else:
            log.debug("worker_scheduling_fallback", worker=started.name,
                      pid=started.pid, got=str(outcome.got))

    async def _stop_worker(self, target: _Worker) -> None:
        """End a worker and release its resources: one that said hello is asked to end
        and killed after ``stop_timeout`` s; one still starting is killed at once (it
        reads no pipe yet, and holds nothing to save). Bounded: a process the kernel
        does not reap within ``_KILL_WAIT`` s of its SIGKILL is logged and left."""
        if target in self._isolated:
            self._isolated.remove(target)
        target.closing = True
        exited = target.exited
        if exited is None or exited.done() or target.forgotten:
            self._forget_worker(target)
            return
        started = target.hello is not None and target.hello.done()
        if started and target.alive and target.channel is not None:
            target.channel.send(("shutdown", 0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._stop_timeout):
                    await asyncio.shield(exited)
            if not exited.done():
                log.error("worker_stop_timeout", worker=target.name, pid=target.pid,
                          seconds=self._stop_timeout)
        if not exited.done() and target.pid > 0:  # (os.kill(0) would be our group)
            with contextlib.suppress(ProcessLookupError):
                os.kill(target.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_KILL_WAIT):
                    await asyncio.shield(exited)
            if not exited.done():
                log.error("worker_not_reaped", worker=target.name, pid=target.pid,
                          seconds=_KILL_WAIT)
        self._forget_worker(target)

    def _forget_worker(self, target: _Worker) -> None:
        target.alive = False
        if target.forgotten:
            return
        target.forgotten = True
        if target.channel is not None:
            target.channel.close()
        with contextlib.suppress(ValueError, AttributeError):
            process = target.process
            asyncio.get_running_loop().remove_reader(process.sentinel)
            # (exited: reaped in microseconds; not: it was killed and not reaped in time)
            process.join(1.0 if target.exited is None or target.exited.done() else 0.0)
            process.close()
        name = target.status.name
        target.status.close()
        shm.unlink(name)
        for future in target.pending.values():
            if not future.done():
                future.set_exception(InvalidState(f"worker {target.name} stopped"))
        target.pending.clear()

    def _warm(self, spare: _Worker, twins: list[Packed]) -> None:
        """Have a spare import the models of ``twins`` (unpickling them does) now, not
        when it takes a crashed worker's place (no answer is awaited)."""
        if twins and spare.alive and spare.channel is not None:
            with contextlib.suppress(Exception):
                spare.channel.send(("warm", 0, twins))

    async def _pack(self, twin: TwinDefinition) -> Packed:
        """``twin`` pickled (in a thread: a twin of 20,000 components takes a second),
        once while sessions of it are hosted."""
        cached = self._packs.get(twin.name)
        if cached is not None and cached[0] is twin:
            return cached[1]
        if len(twin.components) >= LARGE:
            packed = await Packed.of(twin)
        else:
            packed = Packed.now(twin)
        self._packs[twin.name] = (twin, packed)
        return packed

    def _prune_packs(self) -> None:
        """Forget the packed twins no hosted session uses."""
        used = {id(r.twin) for r in self._records.values()}
        for name, (twin, _) in list(self._packs.items()):
            if id(twin) not in used:
                del self._packs[name]

    def _set_snapshot(self, record: _Record, snapshot: SessionSnapshot | None) -> None:
        record.snapshot = snapshot
        record.snapshot_seq += 1

    async def _keep_snapshot(self, record: _Record, packed: Packed) -> None:
        """A worker's periodic snapshot of a large session, unpickled in a thread; kept
        unless something else set the record's snapshot meanwhile."""
        seq = record.snapshot_seq
        snapshot = await packed.unpack()
        if record.snapshot_seq == seq:
            self._set_snapshot(record, snapshot)

    async def _place(self) -> _Worker:
        """The shared worker with the least load (waiting for a replacement when
        every one is being replaced)."""
        deadline = time.monotonic() + self._start_timeout
        while True:
            alive = [w for w in self._shared if w.alive]
            if alive:
                return min(alive, key=lambda w: (self._load(w), len(w.sessions)))
            if time.monotonic() > deadline:
                raise InvalidState("no worker process is running: every worker died and "
                                   "none could be started again (see the log)")
            await asyncio.sleep(0.05)

    def _load(self, target: _Worker) -> float:
        """Seconds of stepping per second: mean step duration x ticks per second."""
        load = 0.0
        for record in target.sessions.values():
            frame = record.frame
            if frame is None or frame.state is not RunState.RUNNING:
                continue
            rate = frame.realtime_factor / record.settings.step_size
            load += frame.step_duration_mean * (rate if rate > 0 else 1e4)
        return load

    # -- requests --------------------------------------------------------------------------

    async def _request(self, target: _Worker, op: str, *payload: Any) -> Any:
        if not target.alive or target.channel is None:
            raise InvalidState(f"worker {target.name} is not running")
        request = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            target.channel.send((op, request, *payload))
        except Exception as exc:  # pickling an argument
            raise InvalidArgument(f"{op}: cannot send the arguments to the worker "
                                  f"process: {exc}") from None
        target.pending[request] = future
        try:
            return await future
        finally:
            target.pending.pop(request, None)

    async def _hosting(self, record: _Record) -> _Worker:
        """The worker hosting ``record`` (waiting while it is being brought back)."""
        if record.abandoned:
            raise record.fault or InvalidState(f"session {record.name!r} has no worker")
        if not record.good:
            try:
                async with asyncio.timeout(self._start_timeout):
                    await record.hosted.wait()
            except TimeoutError:
                raise record.fault or InvalidState(
                    f"session {record.name!r} has no worker") from None
        if record.worker is None or not record.worker.alive:
            raise record.fault or InvalidState(f"session {record.name!r} has no worker")
        return record.worker

    async def _host(self, record: _Record, target: _Worker, *,
                    snapshot: SessionSnapshot | None, fault: SessionFault | None,
                    keep_faulted: bool = False) -> None:
        """Create ``record``'s session in ``target`` and attach its block; with
        ``keep_faulted``, Halted on the fault of a first Reset that failed."""
        block_name = f"{self._prefix}v{next(self._blocks)}"
        large = len(record.twin.components) >= LARGE
        request = worker.CreateRequest(
            record.name, await self._pack(record.twin), record.settings, record.slot,
            block_name, await Packed.of(snapshot) if large and snapshot is not None
            else snapshot, fault, keep_faulted)
        record.worker = target
        target.sessions[record.name] = record
        record.pending_strings.clear()  # (a dead worker's)
        try:
            variables, strings, strings_seq, failed, quality = await self._request(
                target, "create", request)
            variables = await unpacked(variables)
            layout = SessionLayout(record.name, record.twin.name,
                                   float(record.settings.step_size),
                                   float(record.settings.publish_rate), variables)
            kinds = tuple(var for _, var in variables)
            codec = await asyncio.to_thread(shm.Codec, kinds) if large else shm.Codec(kinds)
            block = shm.ValueBlock.attach(block_name, len(codec.numeric))
        except BaseException:
            if target.sessions.get(record.name) is record:
                del target.sessions[record.name]
            shm.unlink(block_name)
            raise
        record.layout, record.codec, record.block = layout, codec, block
        record.strings, record.strings_seq = list(strings), strings_seq
        record.quality = MappingProxyType(dict(quality)) if quality else GOOD_ONLY
        # (strings sent while the reply was unpacked are newer than the reply's)
        record.pending_strings[:] = [p for p in record.pending_strings if p[0] > strings_seq]
        record.frame_seq = -1
        record.watch = (-1, 0.0)
        record.good = True
        decoded = decode_error(failed) if failed is not None else None
        record.fault = decoded if isinstance(decoded, SessionFault) else fault
        record.hosted.set()
        self._read(record)

    async def _unhost(self, record: _Record) -> None:
        """Take a session nobody holds any more (deleted meanwhile) out of its worker."""
        target = record.worker
        if target is not None:
            target.sessions.pop(record.name, None)
            if target.alive:
                with contextlib.suppress(Exception):
                    await self._request(target, "delete", record.name)
        record.good = False
        self._release_block(record)
        if target is not None and target.isolated:
            await self._stop_worker(target)

    def _release_block(self, record: _Record) -> None:
        block, record.block = record.block, None
        if block is not None:
            name = block.name
            block.close()
            shm.unlink(name)

    # -- messages from workers -------------------------------------------------------------

    def _on_message(self, source: _Worker, message: tuple[Any, ...]) -> None:
        tag = message[0]
        if tag in ("reply", "error"):
            future = source.pending.get(message[1])
            if future is None or future.done():
                return
            if tag == "reply":
                future.set_result(message[2])
            else:
                future.set_exception(decode_error(message[2]))
            return
        if tag == "hello":
            if source.hello is not None and not source.hello.done():
                source.hello.set_result((message[1], message[2]))
            return
        if tag == "overload":
            self._on_overload(source, message[1], message[2])
            return
        record = self._records.get(message[1])
        if record is None or record.worker is not source:
            return  # a deleted session, or the last words of a replaced worker
        if tag == "event":
            _, name, kind, text, severity, fault, alarm = message
            if fault is not None:
                decoded = decode_error(fault)
                record.fault = decoded if isinstance(decoded, SessionFault) else None
            elif kind in ("reset", "restored"):
                record.fault = None
                if kind == "reset":  # what it had is not where it is now (the worker
                    self._set_snapshot(record, None)  # sends one of the reset state next)
            self._emit(name, SessionEvent(kind, text, severity, alarm))
        elif tag == "strings":
            record.pending_strings.append((message[2], message[3], message[4]))
        elif tag == "snapshot":
            if isinstance(message[2], Packed):
                self._background(self._keep_snapshot(record, message[2]),
                                 f"snapshot:{record.name}")
            else:
                self._set_snapshot(record, message[2])

    def _on_overload(self, source: _Worker, overloaded: bool, share: float) -> None:
        sessions = list(source.sessions)
        policy = "" if source.outcome is None else str(source.outcome.got)
        if overloaded:
            source.overload = share
            log.warning("worker_overloaded", worker=source.name, pid=source.pid,
                        sessions=sessions, share=round(share, 3), policy=policy,
                        message=_overload_message(source.name, sessions, share, policy,
                                                  self.overload_share))
        else:
            source.overload = None
            log.info("worker_overload_ended", worker=source.name, pid=source.pid,
                     sessions=sessions, busy=round(share, 3), policy=policy)

    def _emit(self, name: str, event: SessionEvent) -> None:
        try:
            self._on_event(name, event)
        except Exception as exc:  # a listener's bug must not break the host
            log.error("host_listener_failed", session=name, kind=event.kind, error=repr(exc))

    # -- frames ----------------------------------------------------------------------------

    def _read(self, record: _Record) -> None:
        """Bring ``record.frame`` up to the block's latest consistent frame."""
        block, codec = record.block, record.codec
        assert block is not None and codec is not None
        if int(block.ints[shm.SEQ]) == record.frame_seq:
            return
        raw = shm.read(block)
        if raw is None:
            return  # the worker kept writing: the last frame stands
        wanted = int(raw.ints[shm.STRINGS])
        if wanted != record.strings_seq:
            pending = record.pending_strings
            while pending and pending[0][0] <= wanted:
                seq, changed, quality = pending.pop(0)
                record.quality = MappingProxyType(quality) if quality else GOOD_ONLY
                for j, value in changed.items():
                    if j < len(record.strings):
                        record.strings[j] = value
                    else:
                        record.strings.append(value)
                record.strings_seq = seq
            if record.strings_seq != wanted:
                return  # its strings are still in the pipe: the last frame stands
        step = int(raw.ints[shm.STEP])
        floats = raw.floats
        record.frame = Frame(
            step_count=step,
            sim_time=step * record.settings.step_size,
            state=shm.STATES[int(raw.ints[shm.STATE])],
            realtime_factor=float(floats[shm.FACTOR]),
            version=record.version_base + int(raw.ints[shm.VERSION]),
            values=codec.decode(raw.values, record.strings),
            step_duration_mean=float(floats[shm.DURATION_MEAN]),
            step_duration_max=float(floats[shm.DURATION_MAX]),
            steps_remaining=int(raw.ints[shm.STEPS_LEFT]),
            # (a replacement worker counts from 0 again: the base moves it past the old)
            forces=record.version_base + int(raw.ints[shm.FORCES]),
            quality=record.quality,
            faults=record.version_base + int(raw.ints[shm.FAULTS]),
        )
        record.frame_seq = int(raw.ints[shm.SEQ])

    # -- crashes, hangs, replacement -------------------------------------------------------

    def _on_exit(self, target: _Worker) -> None:
        """The worker's sentinel is readable: the process has ended."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError):
            loop.remove_reader(target.process.sentinel)
        # the sentinel closes as the process exits, a moment before it can be reaped:
        # a join with a timeout waits (blocking) for that moment, microseconds
        target.process.join(1.0)
        code = target.process.exitcode
        if target.exited is not None and not target.exited.done():
            target.exited.set_result(code)
        if target.hello is not None and not target.hello.done():
            # it died starting up: whoever started it hears so (no replacement loop)
            target.hello.set_exception(WorkerCrashed(
                f"worker {target.name} {_describe_exit(code)} while starting",
                signal=_signal_name(code), exit_code=code))
            target.hello.exception()  # (its starter may have been cancelled: no warning)
            target.closing = True
        if target.closing or self.state is not HostState.RUNNING:
            return
        if target in self._spares:  # an idle spare died: start another
            log.error("spare_worker_died", worker=target.name, pid=target.pid,
                      cause=_describe_exit(code))
            self._spares.remove(target)
            self._forget_worker(target)
            self._replenish()
            return
        noticed = time.monotonic()
        self._crashes += 1
        cause = _describe_exit(code)
        status = target.status.ints
        current, component = int(status[shm.CURRENT]), int(status[shm.PROGRESS])
        stepping = next((r for r in target.sessions.values() if r.slot == current), None)
        log.error("worker_died", worker=target.name, pid=target.pid, cause=cause,
                  hung=target.killed_because, sessions=list(target.sessions),
                  stepping=stepping.name if stepping is not None and component >= 0 else None)
        # (a session still being created there is not one yet: its create raises)
        records = [r for r in target.sessions.values() if r.layout is not None]
        faults = {record.name: self._halt_lost(record, target, code, cause,
                                               stepping if component >= 0 else None, component)
                  for record in records}
        target.sessions.clear()
        self._last_crash = self._report(target, code, cause, records,
                                        faults.get(stepping.name) if stepping is not None
                                        and component >= 0 else None)
        crashed = WorkerCrashed(
            f"worker {target.name} (pid {target.pid}) {cause} before it answered",
            signal=_signal_name(code), exit_code=code, pid=target.pid,
            hung=target.killed_because is not None)
        for future in target.pending.values():
            if not future.done():
                future.set_exception(crashed)
        target.pending.clear()
        self._forget_worker(target)
        if target in self._isolated:
            self._isolated.remove(target)
        self._background(self._replace(target, records, noticed), f"replace:{target.name}")

    def _report(self, target: _Worker, code: int | None, cause: str, records: list[_Record],
                stepped: WorkerCrashed | None) -> CrashReport:
        """The crash report of ``target``'s death (``stepped``: the fault of the session
        it was stepping, if it was)."""
        if stepped is not None:
            message = str(stepped)
        else:
            why = (f"; it was killed because {target.killed_because}"
                   if target.killed_because is not None else "")
            held = ", ".join(repr(r.name) for r in records) or "none"
            message = (f"worker process {target.name} (pid {target.pid}) {cause} between "
                       f"ticks{why}; its sessions halted: {held}")
        return CrashReport(
            worker=target.name, pid=target.pid, cause=cause, signal=_signal_name(code),
            exit_code=code, hung=target.killed_because is not None,
            session=stepped.session if stepped is not None else "",
            component=stepped.component if stepped is not None else "",
            tick=stepped.tick if stepped is not None else -1,
            sessions=tuple(r.name for r in records), time=time.time(), message=message)

    def _halt_lost(self, record: _Record, target: _Worker, code: int | None, cause: str,
                   stepping: _Record | None, component: int) -> WorkerCrashed:
        """Halt a session of a dead worker: fault, last frame marked not good, event.
        Returns the fault."""
        if record.good and record.block is not None:
            self._read(record)
            tick = int(record.block.ints[shm.LIVE_STEP])
        else:
            tick = record.frame.step_count if record.frame is not None else 0
        where = ""
        name = ""
        if stepping is record:
            components = record.twin.components
            name = components[component].name if 0 <= component < len(components) else ""
            where = f" in tick {tick} (t={tick * record.settings.step_size:g} s)"
            if name:
                where += f" while stepping component {name!r}"
        elif stepping is not None:
            where = f" while stepping session {stepping.name!r} (this one was at tick {tick})"
        else:
            where = f" between ticks (this session at tick {tick})"
        why = (f"; it was killed because {target.killed_because}"
               if target.killed_because is not None else "")
        record.recoveries += 1
        if record.recoveries >= _ABANDON_AFTER:
            back = (f"its worker died in {record.recoveries} attempts to bring it back, so "
                    f"it stays without one: delete it")
        elif record.snapshot is not None and record.recoveries < _FRESH_AFTER:
            back = (f"it is brought back in a new worker from its snapshot of tick "
                    f"{record.snapshot.step_count}")
        else:
            back = "it is brought back afresh in a new worker"
        fault = WorkerCrashed(
            f"session {record.name!r}: its worker process {target.name} (pid {target.pid}) "
            f"{cause}{where}{why}; the session halted; {back}, Halted: Reset it, or "
            f"Restore a snapshot, to go on",
            session=record.name, component=name, tick=tick, signal=_signal_name(code),
            exit_code=code, pid=target.pid, hung=target.killed_because is not None)
        record.fault = fault
        record.good = False
        record.hosted.clear()
        if record.frame is not None:
            record.frame = dataclasses.replace(
                record.frame, state=RunState.HALTED, good=False,
                version=record.frame.version + 1)
            record.version_base = record.frame.version + 1
        self._release_block(record)
        record.worker = None
        self._emit(record.name, SessionEvent("fault", str(fault), SEVERITY_FAULT))
        return fault

    async def _replace(self, dead: _Worker, records: list[_Record], noticed: float) -> None:
        """Start a worker in ``dead``'s place; bring its sessions back there, Halted."""
        wanted = [r for r in records if self._records.get(r.name) is r]
        if dead.isolated and not wanted:
            return  # its one session was deleted meanwhile
        try:
            fresh = await self._take_worker(dead.name, isolated=dead.isolated)
        except Exception as exc:
            log.error("worker_restart_failed", worker=dead.name, error=repr(exc))
            return
        if not dead.isolated:
            self._shared[self._shared.index(dead)] = fresh
        for record in wanted:
            if self._records.get(record.name) is not record:
                continue  # deleted meanwhile
            if record.recoveries >= _ABANDON_AFTER:
                log.error("session_abandoned", session=record.name,
                          recoveries=record.recoveries)
                record.abandoned = True
                record.hosted.set()  # (a call waiting for it raises its fault now)
                continue
            snapshot = record.snapshot if record.recoveries < _FRESH_AFTER else None
            try:
                await self._host(record, fresh, snapshot=snapshot, fault=record.fault,
                                 keep_faulted=True)
            except WorkerCrashed:
                return  # this worker died too: its own replacement carries on
            except Exception as exc:
                log.error("session_recovery_failed", session=record.name, error=repr(exc))
                continue
            if self._records.get(record.name) is not record:  # deleted meanwhile
                await self._unhost(record)
                continue
            record.recoveries = 0  # back: only deaths while bringing it back count up
            origin = (f"its snapshot of tick {snapshot.step_count}" if snapshot is not None
                      else "a fresh start")
            self._emit(record.name, SessionEvent(
                "recovered", f"session {record.name!r} brought back in worker {fresh.name} "
                f"(pid {fresh.pid}) from {origin}; Halted: Reset it, or Restore a snapshot, "
                f"to go on", SEVERITY_INFO))
        self._replacements += 1
        self._last_replacement = time.monotonic() - noticed
        log.info("worker_replaced", worker=fresh.name, pid=fresh.pid,
                 sessions=[r.name for r in wanted], seconds=round(self._last_replacement, 3))

    async def _watch_forever(self) -> None:
        interval = min(self._hang_timeout / 4, 0.25)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for target in list(self._shared) + list(self._isolated):
                if target.alive and not target.closing and target.killed_because is None:
                    self._check_hung(target, now)

    def _check_hung(self, target: _Worker, now: float) -> None:
        for record in target.sessions.values():
            block = record.block
            if not record.good or block is None:
                continue
            live = int(block.ints[shm.LIVE_STEP])
            running = shm.STATES[int(block.ints[shm.STATE])] is RunState.RUNNING
            left = int(block.ints[shm.STEPS_LEFT])  # a Step running in the background
            if not (running or left) or live != record.watch[0]:
                record.watch = (live, now)
                continue
            factor = float(block.floats[shm.FACTOR])
            period = record.settings.step_size / factor if running and factor > 0 else 0.0
            stalled = now - record.watch[1]
            if stalled > max(self._hang_timeout, 3 * period):
                doing = "while Running" if running else f"in a Step ({left} of its ticks left)"
                target.killed_because = (f"session {record.name!r} took no tick for "
                                         f"{stalled:.1f} s {doing} (hang_timeout "
                                         f"{self._hang_timeout:g} s)")
                self._hangs += 1
                log.error("worker_hung", worker=target.name, pid=target.pid,
                          session=record.name, seconds=round(stalled, 3))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target.pid, signal.SIGKILL)
                return

    # -- helpers ---------------------------------------------------------------------------

    def _background(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("host_task_failed", task=task.get_name(), error=repr(task.exception()))

    def _get(self, name: str) -> _Record:
        try:
            return self._records[name]
        except (KeyError, TypeError):
            raise NotFound(f"no session named {name!r} is hosted "
                           f"(sessions: {', '.join(self._records) or 'none'})") from None

    def _require_running(self) -> None:
        if self.state is not HostState.RUNNING:
            raise InvalidState(f"the worker host is {self.state}")


#: hosts not closed yet: at interpreter exit their workers are killed (``_kill_left``)
_OPEN: weakref.WeakSet[WorkerHost] = weakref.WeakSet()


@atexit.register
def _kill_left() -> None:
    """Kill the workers of hosts nobody closed (a daemon that failed on its way out).

    Workers ignore SIGTERM and end when their pipe closes; multiprocessing's own
    exit handler (registered before this one, so run after it) would SIGTERM and
    then join them while the pipes are still open, and wait for ever."""
    for host in list(_OPEN):
        for target in (*host._shared, *host._isolated, *host._spares, *host._starting):
            if target.alive and target.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    target.process.join(5.0)
            if not target.forgotten:
                name = target.status.name
                target.status.close()
                shm.unlink(name)
        for record in host._records.values():
            host._release_block(record)


def _policy(pid: int) -> str:
    """Process ``pid``'s scheduling as the kernel has it now ("" if it is gone)."""
    try:
        return str(scheduling.current(pid))
    except OSError:
        return ""


def _fallback_message(outcome: Outcome) -> str:
    return (f"server.worker_scheduling = {outcome.asked!r} asked for {outcome.wanted}, the "
            f"workers got {outcome.got}: {outcome.reason}; {outcome.fix}")


def _overload_message(worker: str, sessions: list[str], share: float, policy: str,
                      limit: float) -> str:
    names = ", ".join(sessions) or "none"
    return (f"worker {worker} is overloaded: its sessions ({names}) kept it busy "
            f"{share:.0%} of the time at {policy or 'real-time scheduling'} (at least "
            f"{limit:.0%} for {scheduling.OVERLOAD_SECONDS:g} s), so it "
            f"runs at normal scheduling, ticking late, until it is busy less than "
            f"{scheduling.recover_share(limit):.0%} of the time for "
            f"{scheduling.RECOVER_SECONDS:g} s; to have it keep time, give its sessions "
            f"more workers (server.workers, isolate = true), or lower their rates "
            f"(step_size) or real-time factors")


def _drop_answer(answer: asyncio.Future[Any]) -> None:
    """A Step's late answer nobody waits for any more (or its worker's death)."""
    if not answer.cancelled():
        answer.exception()


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return ""
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        name = _signal_name(code)
        text = signal.strsignal(-code) if name.startswith("SIG") else None
        return f"died of {name}" + (f" ({text})" if text else "")
    return f"exited with code {code}"


def make_host(on_event: EventListener, *, workers: int | None = None,
              **options: Any) -> LocalHost | WorkerHost:
    """``workers = 0``: a LocalHost; else a WorkerHost with that many shared workers
    (None: one per CPU). ``options`` go to WorkerHost. Start a WorkerHost with
    ``await host.start()`` (or ``async with``)."""
    if workers == 0:
        return LocalHost(on_event)
    return WorkerHost(on_event, workers=workers, **options)
