"""The worker process: steps the sessions placed on it, answers commands, publishes values.

``main`` is the process's entry point (``multiprocessing``, spawn start method).
It runs its own event loop: one ``runtime.clock.Clock`` per session (sleeping on
a timerfd, ``timers.PreciseSleep``), a ``wire.Channel`` to the main process, and
a task that sends each session's snapshot every ``snapshot_interval`` seconds
when it changed (the main process keeps the latest, to bring the session back if
this process dies). Nothing else runs here, so nothing of the server's delays a
tick.

After every tick (at most every ``publish_interval`` seconds while ticks come
faster, and always when the run state changed) and after every command, the
session's values go into its shared-memory block (``shm.py``); a command is
answered after that, so the main process sees its effect in the next frame it
reads. String values that changed go over the pipe first.

Scheduling (``scheduling.py``): after its imports, the process takes the
scheduling ``WorkerOptions.scheduling`` asks for (real-time, or normal) and says
in its hello what it got; while it runs flat out (a Step in the background, a
session Running at real-time factor 0, creating a session) it drops real-time
scheduling, so that it cannot take a core from the server; and while its paced
sessions need more than its core (``scheduling.OverloadGuard``, looked at every
``scheduling.GUARD_WINDOW`` seconds) too, telling the main process with an
``("overload", overloaded, share)`` message.

SIGINT and SIGTERM are ignored: a Ctrl-C or systemd's stop reaches every process
of the group, and the main process stops its workers itself, in its own
shutdown stage. The worker ends when told to, or when the pipe closes (the
main process is gone).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from twin_server.engine.session import RunState, Session, SessionEvent, SessionSettings
from twin_server.engine.snapshot import SessionSnapshot
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import AlreadyExists, InvalidState, NotFound, NotSupported, SessionFault
from twin_server.models import registry
from twin_server.runtime import scheduling, shm
from twin_server.runtime.clock import Clock
from twin_server.runtime.collector import collector_paused
from twin_server.runtime.commands import STEP, create_session, run_command
from twin_server.runtime.local import clock_phase
from twin_server.runtime.stepping import StepJob
from twin_server.runtime.timers import PreciseSleep
from twin_server.runtime.wire import Channel, Packed, encode_error

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Settings of one worker process (picklable: they cross to the child)."""

    worker: str  # a name for logs: "w0", "isolated-3"
    status: str  # the name of the worker's StatusBlock (the main process created it)
    snapshot_interval: float = 5.0
    #: while ticks come faster than this, frames are published at this interval
    publish_interval: float = 0.001
    #: how often the clock's statistics (percentiles) are recomputed for the block
    statistics_interval: float = 0.25
    #: the scheduling to ask the kernel for (``scheduling.py``); "normal" but for
    #: the session workers of ``pool.WorkerHost`` that the config asks it for
    asked: scheduling.Asked = scheduling.NORMAL
    priority: int = scheduling.DEFAULT_PRIORITY
    #: the CPU share at which its overload guard drops it from SCHED_FIFO
    #: (``scheduling.overload_share`` of the host's workers and the cores)
    overload_share: float = scheduling.OVERLOAD_SHARE


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """What the main process sends to create (or bring back) a session."""

    name: str
    twin: TwinDefinition | Packed
    settings: SessionSettings
    slot: int  # the number the status block names the session by
    block: str  # the shared-memory name to create
    snapshot: SessionSnapshot | Packed | None = None
    fault: SessionFault | None = None
    #: keep a session whose first Reset fails, Halted on it (``Session``)
    keep_faulted: bool = False


#: seconds a thread holds the GIL before the event loop may take it (Python's default: 5 ms)
SWITCH_INTERVAL = 0.0005


def main(sock: socket.socket, options: WorkerOptions) -> None:
    """The worker process's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    registry.available()  # import every registered model now, not in a first create
    # a session is built in a thread (``Worker._build``): the clocks' ticks wait at most
    # this long for the GIL meanwhile
    sys.setswitchinterval(SWITCH_INTERVAL)
    # what is imported now lives as long as the process: keep it out of full collections
    gc.collect()
    gc.freeze()
    # after the imports: a start-up that takes seconds of CPU is no real-time work
    outcome = scheduling.apply(options.asked, options.priority)
    asyncio.run(Worker(sock, options, outcome).run())


class _Ticking:
    """What the clock sees of a session: the session, with a publish after each tick."""

    def __init__(self, hosted: _Hosted) -> None:
        self._hosted = hosted
        session = hosted.session
        self.subscribe = session.subscribe
        self.settings = session.settings
        self.step_size = session.step_size
        self._session = session

    @property
    def state(self) -> RunState:
        return self._session.state

    @property
    def realtime_factor(self) -> float:
        return self._session.realtime_factor

    @property
    def step_count(self) -> int:
        return self._session.step_count

    def tick(self) -> None:
        hosted = self._hosted
        session = self._session
        status = hosted.worker.status.ints
        status[shm.CURRENT] = hosted.slot
        session.tick()
        status[shm.PROGRESS] = -1
        hosted.block.ints[shm.LIVE_STEP] = session.step_count
        now = time.monotonic()
        if now >= hosted.next_publish or session.state is not RunState.RUNNING:
            hosted.publish(now)


@dataclass(eq=False)
class _Hosted:
    """One session in this worker: the session, its clock and its block."""

    worker: Worker
    session: Session
    slot: int
    block: shm.ValueBlock
    codec: shm.Codec
    clock: Clock = field(init=False)
    task: asyncio.Task[None] | None = None
    unsubscribe: Any = None
    next_publish: float = 0.0
    next_statistics: float = 0.0
    strings: list[Any] = field(default_factory=list)
    strings_seq: int = 0
    #: the statuses last sent with the strings (``Session.quality``)
    quality: dict[int, int] = field(default_factory=dict)
    snapshot_version: int = -1
    snapshots_taken: int = 0
    published_version: int = -1
    #: the Step running in the background, if any
    step: StepJob | None = None

    def publish(self, now: float | None = None) -> None:
        """Write the session's current frame into its block (strings first, by pipe)."""
        now = time.monotonic() if now is None else now
        session = self.session
        numeric, strings = self.codec.split(session.value_list())
        quality = session.quality()
        if strings != self.strings or quality != self.quality:
            changed = {j: s for j, s in enumerate(strings)
                       if j >= len(self.strings) or self.strings[j] != s}
            self.strings = strings
            self.quality = quality
            self.strings_seq += 1
            self.worker.send(("strings", session.name, self.strings_seq, changed, quality))
        block = self.block
        ints, floats = block.ints, block.floats
        stats = session.statistics()
        seq = int(ints[shm.SEQ])
        ints[shm.SEQ] = seq + 1
        block.values[:] = numeric
        ints[shm.STEP] = session.step_count
        ints[shm.VERSION] = session.version
        ints[shm.STATE] = shm.STATE_CODES[session.state]
        ints[shm.STRINGS] = self.strings_seq
        ints[shm.STEPS_LEFT] = session.steps_remaining
        ints[shm.FORCES] = session.forces
        ints[shm.FAULTS] = session.fault_changes
        floats[shm.FACTOR] = session.realtime_factor
        floats[shm.DURATION_MEAN] = stats.step_duration_mean
        floats[shm.DURATION_MAX] = stats.step_duration_max
        if now >= self.next_statistics:
            clock = self.clock.statistics()
            ints[shm.TICKS] = clock.ticks
            ints[shm.OVERRUNS] = clock.overruns
            floats[shm.LATENESS_P50] = clock.lateness_p50
            floats[shm.LATENESS_P99] = clock.lateness_p99
            floats[shm.LATENESS_MAX] = clock.lateness_max
            block.counts[:] = clock.lateness_counts
            self.next_statistics = now + self.worker.options.statistics_interval
        ints[shm.SEQ] = seq + 2
        ints[shm.LIVE_STEP] = session.step_count
        self.published_version = session.version
        self.next_publish = now + self.worker.options.publish_interval


class Worker:
    """The sessions of one worker process, and its end of the pipe."""

    def __init__(self, sock: socket.socket, options: WorkerOptions,
                 outcome: scheduling.Outcome | None = None) -> None:
        self._sock = sock
        self.options = options
        if outcome is None:
            policy = scheduling.current()
            outcome = scheduling.Outcome(scheduling.NORMAL, policy, policy)
        self.scheduler = scheduling.Scheduler(outcome)
        self.guard = scheduling.OverloadGuard(self.scheduler, share=options.overload_share)
        self._sessions: dict[str, _Hosted] = {}
        self._building: set[str] = set()
        self._channel: Channel | None = None
        self._done = asyncio.Event()
        self._sleep = PreciseSleep()
        self._tasks: asyncio.TaskGroup | None = None
        self.status = shm.StatusBlock.attach(options.status)

    async def run(self) -> None:
        self._channel = await Channel.open(self._sock, self._on_message, self._on_lost)
        self.send(("hello", os.getpid(), self.scheduler.outcome))
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                background = [tasks.create_task(self._snapshots_forever(), name="snapshots")]
                if self.guard.active:
                    background.append(tasks.create_task(self._guard_forever(), name="guard"))
                await self._done.wait()
                for task in background:
                    task.cancel()
                for hosted in self._sessions.values():
                    if hosted.task is not None:
                        hosted.task.cancel()
        finally:
            for name in list(self._sessions):
                self._drop(name)
            self._sleep.close()
            self.guard.close()
            self._channel.close()
            self.status.close()

    def send(self, message: Any) -> None:
        assert self._channel is not None
        self._channel.send(message)

    # -- messages from the main process ------------------------------------------------

    def _on_lost(self, exc: Exception | None) -> None:
        self._done.set()  # the main process is gone, or closed the pipe

    def _reschedule(self) -> None:
        """Real-time scheduling only while every session here is paced: none steps
        flat out (a Step in the background, Running at real-time factor 0)."""
        running = RunState.RUNNING
        self.scheduler.flat_out(any(
            (hosted.step is not None and not hosted.step.done)
            or (hosted.session.state is running and hosted.session.realtime_factor == 0)
            for hosted in self._sessions.values()))

    def _on_message(self, message: tuple[Any, ...]) -> None:
        op, request = message[0], message[1]
        try:
            if op == "call":
                _, _, name, command, args = message
                hosted = self._get(name)
                if command == STEP:
                    self._begin_step(request, hosted, *args)
                    return  # answered when the Step ended, or after its wait
                self.status.ints[shm.CURRENT] = hosted.slot
                try:
                    result = run_command(hosted.session, command, args)
                finally:
                    self.status.ints[shm.PROGRESS] = -1
                    session = hosted.session
                    if not session.closed and session.version != hosted.published_version:
                        hosted.publish()
                if command == "reset":  # the main process brings it back from here now
                    self._send_snapshot(hosted)
                if command == "snapshot" and _large(hosted.session):
                    assert self._tasks is not None
                    self._tasks.create_task(self._reply_packed(request, result),
                                            name=f"answer:{request}")
                    return
            elif op == "create":
                assert self._tasks is not None
                self._tasks.create_task(self._create(request, message[2]),
                                        name=f"create:{message[2].name}")
                return  # answered when built
            elif op == "delete":
                self._drop(message[2], known=True)
                result = None
            elif op == "warm":  # unpickling the twins imports their models
                assert self._tasks is not None
                self._tasks.create_task(_warm(message[2]), name="warm")
                return
            elif op == "ping":
                result = os.getpid()
            elif op == "shutdown":
                self._done.set()
                result = None
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:
            self._reschedule()
            self.send(("error", request, encode_error(exc)))
            return
        self._reschedule()  # (before the answer: its effect on the scheduling is seen)
        try:
            self.send(("reply", request, result))
        except Exception as exc:  # an unpicklable result (a snapshot of an FMU's memory)
            self.send(("error", request, encode_error(NotSupported(
                f"the result of {op} cannot be sent to the server process: {exc}"))))

    async def _create(self, request: int, create: CreateRequest) -> None:
        """Build a session and host it; answer ``request`` (``reply`` or ``error``)."""
        self.status.ints[shm.CURRENT] = create.slot
        try:
            with self.scheduler.normal():  # (a big twin compiles for seconds)
                result = await self._build(create)
        except Exception as exc:
            self._reschedule()
            self.send(("error", request, encode_error(exc)))
            return
        finally:
            self.status.ints[shm.PROGRESS] = -1
        self._reschedule()  # (before the answer: its effect on the scheduling is seen)
        self.send(("reply", request, result))

    async def _build(self, create: CreateRequest) -> tuple[Any, ...]:
        """Build the session in a thread (a twin of 20,000 components takes seconds to
        unpickle and build: the sessions of this worker tick meanwhile, the thread
        handing the GIL back every switch interval), then start its clock here."""
        name = create.name
        if name in self._sessions or name in self._building:
            raise AlreadyExists(f"a session named {name!r} is hosted by this worker already")
        self._building.add(name)
        try:
            with collector_paused():  # (millions of objects that live on: no passes)
                session, variables, packed = await asyncio.to_thread(self._construct, create)
        finally:
            self._building.discard(name)
        try:
            if self._done.is_set():
                raise InvalidState(f"worker {self.options.worker} is stopping")
            codec = shm.Codec(tuple(var for _, var in variables))
            block = shm.ValueBlock.create(create.block, len(codec.numeric))
        except BaseException:
            session.close()
            raise
        hosted = _Hosted(self, session, create.slot, block, codec)
        hosted.clock = Clock(cast(Session, _Ticking(hosted)), phase=clock_phase(name),
                             sleep=self._sleep)
        hosted.unsubscribe = session.subscribe(lambda event: self._on_event(hosted, event))
        self._sessions[name] = hosted
        hosted.publish()
        assert self._tasks is not None
        hosted.task = self._tasks.create_task(hosted.clock.run(), name=f"clock:{name}")
        # the fault of a first Reset that failed (kept: ``keep_faulted``), not the one given
        failed = session.fault if session.fault is not create.fault else None
        # (the strings as of now: any sent before this reply are in them, the main
        # process applies only those sent after it)
        return (packed, hosted.strings, hosted.strings_seq,
                None if failed is None else encode_error(failed), hosted.quality)

    def _construct(self, create: CreateRequest) -> tuple[Session, tuple[Any, ...], Any]:
        """In a thread: the session, its variables, and those packed for the reply."""
        twin = create.twin.unpack_now() if isinstance(create.twin, Packed) else create.twin
        snapshot = (create.snapshot.unpack_now() if isinstance(create.snapshot, Packed)
                    else create.snapshot)
        session = create_session(create.name, twin, create.settings, snapshot=snapshot,
                                 fault=create.fault, progress=self.status.progress,
                                 keep_faulted=create.keep_faulted)
        try:
            variables = tuple(session.variables())
            packed = Packed.now(variables) if _large(session) else variables
        except BaseException:
            session.close()
            raise
        return session, variables, packed

    async def _reply_packed(self, request: int, result: Any) -> None:
        """Answer ``request`` with ``result`` pickled in a thread (a large snapshot)."""
        try:
            packed = await Packed.of(result)
        except Exception as exc:
            self.send(("error", request, encode_error(NotSupported(
                f"the result cannot be sent to the server process: {exc}"))))
            return
        self.send(("reply", request, packed))

    def _begin_step(self, request: int, hosted: _Hosted, count: int = 1,
                    wait: float | None = None) -> None:
        """Start a Step in slices (``stepping.py``) between the other sessions' ticks;
        the live step count moves after every tick (the hang watch's), the
        status block names the session while a slice runs (the crash report's)."""
        session = hosted.session
        status, live = self.status.ints, hosted.block.ints

        def before() -> None:
            status[shm.CURRENT] = hosted.slot

        def progress() -> None:
            live[shm.LIVE_STEP] = session.step_count

        def after() -> None:
            status[shm.PROGRESS] = -1
            if not session.closed:
                hosted.publish()

        job = hosted.step = StepJob.begin(session, count, before=before, progress=progress,
                                          after=after, replacing=hosted.step)
        assert job.task is not None
        job.task.add_done_callback(lambda _: self._reschedule())
        self._reschedule()  # (before any answer: the caller sees the worker lowered)
        hosted.publish()  # Suspended, with its steps left, before the first slice
        if wait is not None and wait <= 0:
            self.send(("reply", request, job.progress()))  # (before a slice can hang)
            return
        assert self._tasks is not None
        self._tasks.create_task(self._answer_step(request, job, wait), name=f"answer:{request}")

    async def _answer_step(self, request: int, job: StepJob, wait: float | None) -> None:
        progress = await job.wait(wait)
        try:
            self.send(("reply", request, progress))
        except Exception as exc:  # the pipe is closing: the main process is gone
            log.debug("worker_step_answer_lost", request=request, error=repr(exc))

    def _on_event(self, hosted: _Hosted, event: SessionEvent) -> None:
        session = hosted.session
        self._reschedule()  # (Start, Resume, a new real-time factor, a Step's end)
        if event.kind == "step_completed":
            hosted.publish()  # the frame that goes with it, before the event
        fault = session.fault if event.kind == "fault" else None
        self.send(("event", session.name, event.kind, event.message, event.severity,
                   None if fault is None else encode_error(fault), event.alarm))

    def _drop(self, name: str, *, known: bool = False) -> None:
        if known:
            self._get(name)
        hosted = self._sessions.pop(name, None)
        if hosted is None:
            return
        if hosted.task is not None:
            hosted.task.cancel()
        if hosted.step is not None:
            hosted.step.cancel()
        hosted.session.close()  # its "closed" event still goes out
        if hosted.unsubscribe is not None:
            hosted.unsubscribe()
        hosted.block.close()

    def _get(self, name: str) -> _Hosted:
        try:
            return self._sessions[name]
        except (KeyError, TypeError):
            raise NotFound(f"no session named {name!r} in worker {self.options.worker}") from None

    async def _guard_forever(self) -> None:
        """Drop real-time scheduling while the paced load is more than the core gives."""
        while True:
            await asyncio.sleep(scheduling.GUARD_WINDOW)
            change = self.guard.sample()
            if change is not None:
                self.send(("overload", change.overloaded, change.share))

    # -- snapshots for the main process ------------------------------------------------

    async def _snapshots_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.snapshot_interval)
            for hosted in list(self._sessions.values()):
                session = hosted.session
                if session.version == hosted.snapshot_version or session.fault is not None:
                    continue
                self._send_snapshot(hosted)
                await asyncio.sleep(0)

    def _send_snapshot(self, hosted: _Hosted) -> None:
        session = hosted.session
        hosted.snapshot_version = session.version
        self.status.ints[shm.CURRENT] = hosted.slot
        try:
            snap = session.snapshot()
            hosted.snapshots_taken += 1
            if _large(session):  # pickled in a thread; sent unless a newer one was taken
                assert self._tasks is not None
                self._tasks.create_task(self._send_packed(hosted, snap,
                                                          hosted.snapshots_taken),
                                        name=f"snapshot:{session.name}")
            else:
                self.send(("snapshot", session.name, snap))
        except (NotSupported, InvalidState):
            pass  # the main process brings it back afresh
        except Exception as exc:  # an unpicklable model state
            log.debug("worker_snapshot_skipped", session=session.name, error=repr(exc))

    async def _send_packed(self, hosted: _Hosted, snap: SessionSnapshot, taken: int) -> None:
        try:
            packed = await Packed.of(snap)
        except Exception as exc:  # an unpicklable model state
            log.debug("worker_snapshot_skipped", session=hosted.session.name, error=repr(exc))
            return
        if hosted.snapshots_taken == taken and self._sessions.get(hosted.session.name) is hosted:
            self.send(("snapshot", hosted.session.name, packed))


#: sessions of at least this many components have their large values (variables,
#: snapshots) pickled in a thread (``wire.Packed``)
LARGE = 500


def _large(session: Session) -> bool:
    return len(session.twin.components) >= LARGE


async def _warm(twins: list[Any]) -> None:
    for twin in twins:
        if isinstance(twin, Packed):
            await twin.unpack()
