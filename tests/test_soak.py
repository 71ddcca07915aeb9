"""Soak: the real daemon, with history, under clients doing what UaExpert and SCADA
users do, for ``SOAK_SECONDS`` (default 600; meaningful from about 120). Run with
``make soak`` or ``pytest -m soak -s tests/test_soak.py``; ``make test`` skips it.

The daemon runs in this process, so that its memory, asyncio tasks, file
descriptors, address space and objects can be counted; the clients run in a child
process (``tests/soak_clients.py``), so that their own allocations are not counted
as the daemon's. Two config sessions of a line of five tank loops (a few hundred
variables) run at 20 and 10 Hz, three playground sessions are run by the clients.
The run has two phases with the same clients:

* warm-up (a fifth of the time, 20..60 s): caches fill, every code path runs, the
  playgrounds' snapshot stores fill to their bound;
* main: the rest of the time, sampled every ``INTERVAL`` seconds under load.

After each phase the clients have gone and the daemon settles: the orphaned OPC UA
sessions of dropped connections time out (``max_session_timeout`` = 10 s), the
sessions the churning client left behind expire (``session_idle_timeout`` = 15 s),
the history of deleted sessions ages out (``max_age`` = 20 s). Then a quiet sample
is taken, and the one after the main phase is compared with the one after the
warm-up:

* address-space nodes, asyncio tasks, file descriptors, sessions (the manager's,
  asyncua's) and subscriptions are back exactly where they were;
* objects tracked by the collector grew by less than ``OBJECTS_PER_CYCLE`` per
  client cycle of the main phase (a leaked dict or list per cycle fails it), and
  Python's memory blocks (``sys.getallocatedblocks``: strings and numbers too) by
  less than ``BLOCKS_PER_CYCLE``;
* resident memory grew by less than ``RSS_PER_HOUR`` for the time between them,
  plus ``RSS_JITTER`` (the allocator's arenas move by a MB or two whatever the run);

and resident memory under load, fitted by least squares over the later half of the
samples, grew by less than the same bound over their span. (So a short run catches
only a fast leak in RSS; the object and block counts catch small ones.) Besides:
every client cycle succeeded, no client lost its connection without asking (an
asyncua client probes the server every second and gives up on a probe that takes
longer: each loss is printed beside the daemon's loop stalls around it and the
client process's own), the daemon's event loop never spent ``MAX_STALL`` of CPU
time in one stall, each user made progress, the daemon logged no error,
never reported itself stalled (the systemd watchdog's check) and kept publishing,
the history store neither failed nor dropped a sample, and the config sessions'
clocks missed at most ``MAX_OVERRUNS`` ticks in the main phase. ``pytest -s``
prints the samples as a table, each clock's lateness and a verdict per check.

Each sample waits for a clock tick about to fall due (as the daemon's own long work
does), runs a full garbage collection, so that it counts what is reachable (the
daemon's collector defers full collections while clocks run, up to ten minutes: the
``garbage`` column shows what each collection freed), and clears the one bounded
cache whose size follows the names clients choose (``opcua.nodes._text``, at most
4,096 display names): every session the churning client creates has a new name;
and the ABCs' isinstance caches (``clear_abc_caches``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import resource
import sys
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import structlog

from tests.bench.common import TANK_TWIN, counts_between, quantile, worst
from twin_server.opcua import nodes as opcua_nodes
from twin_server.runtime.clock import COLLECTOR, TICKS, ClockStatistics
from twin_server.runtime.compile import parse_config
from twin_server.runtime.daemon import Daemon

pytestmark = pytest.mark.soak

ROOT = Path(__file__).resolve().parents[1]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
WARMUP = min(60.0, max(20.0, SOAK_SECONDS / 5))
MAIN = max(SOAK_SECONDS - WARMUP, 30.0)
INTERVAL = max(5.0, MAIN / 60)
#: longest wait for the daemon to return to its quiet state after the clients left
SETTLE_TIMEOUT = 60.0
#: asyncua's server reaps the tasks of closed connections every 10 s
REAP = 11.0

#: bounds; "per hour" figures are extrapolated from the run
RSS_PER_HOUR = 50 * 2**20
RSS_JITTER = 2 * 2**20
OBJECTS_PER_CYCLE = 0.5
BLOCKS_PER_CYCLE = 10.0
MAX_OVERRUNS = 5

LINE_LOOPS = 5
CONFIG_SESSIONS = ("line1", "line2", "play0", "play1", "play2")


def line_twin(loops: int) -> str:
    """A production line of ``loops`` tank level loops: a few hundred variables."""
    parts = ["[twins.line]", 'description = "tank level loops side by side"',
             "connections = ["]
    for i in range(1, loops + 1):
        parts += [f'  "setpoint{i}.output -> pid{i}.setpoint",',
                  f'  "tank{i}.level -> pid{i}.measurement",',
                  f'  "pid{i}.output -> tank{i}.inflow",']
    parts.append("]")
    for i in range(1, loops + 1):
        parts += [
            f"[twins.line.components.setpoint{i}]", 'model = "square"',
            f"parameters = {{ offset = 1.0, amplitude = 0.3, period = {20 + 5 * i}.0 }}",
            f"[twins.line.components.tank{i}]", 'model = "water_tank"',
            "parameters = { area = 0.5, outflow_coefficient = 0.02, initial_level = 0.5 }",
            f"[twins.line.components.pid{i}]", 'model = "pid"',
            "parameters = { kp = 0.2, ki = 0.004, output_min = 0.0, output_max = 0.05 }",
        ]
    return "\n".join(parts) + "\n"


CONFIG = """
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
state_dir = "{state}"
max_sessions = 100
session_idle_timeout = 15.0
# workers: the default, one per CPU: the sessions tick in worker processes, and the
# clocks' statistics (overruns, lateness) are read through the host

[server.security]  # the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[server.limits]
max_session_timeout = 10.0  # orphaned OPC UA sessions go within the run

[history]
batch_interval = 0.5
retention_interval = 2.0
snapshot_interval = 2.0
max_age = 20.0  # the file, and what deleted sessions leave, reach their steady size early

[sessions.line1]
twin = "line"
step_size = 0.05
publish_rate = 10.0
autostart = true

[sessions.line2]
twin = "line"
step_size = 0.1
publish_rate = 5.0
autostart = true
""" + "".join(f"""
[sessions.play{i}]
twin = "tank_level"
step_size = 0.05
publish_rate = 10.0
autostart = false
""" for i in range(3)) + TANK_TWIN + line_twin(LINE_LOOPS)


class Sample(NamedTuple):
    """What the daemon holds at one moment."""

    phase: str
    t: float  # s since the daemon was ready
    took: float  # s this sample held the event loop
    rss: int  # bytes
    blocks: int  # memory blocks Python has allocated (sys.getallocatedblocks)
    objects: int  # tracked by the collector (after a full collection)
    garbage: int  # tracked objects that collection freed
    tasks: int
    fds: int
    nodes: int  # in the whole address space
    sessions: int  # the manager's
    ua_sessions: int  # asyncua's client sessions (orphans of dropped connections too)
    subscriptions: int
    clients: int  # connections
    overruns: int  # of the config sessions' clocks, since start
    ticks: int
    db: int  # bytes of history.db and its WAL
    queued: int  # samples waiting for the history writer
    cycles: int  # client cycles completed so far
    stalled: tuple[str, ...]  # why the systemd watchdog would be withheld
    publish_cycles: int
    #: quiet samples: what the task and node counts are made of, for the report when
    #: one is not back to quiet (two small tuples: the object counts allow for them)
    task_names: tuple[str, ...] = ()
    node_groups: tuple[str, ...] = ()


def _last_frame(trace: str) -> str:
    """Where in the client's own code a failed cycle was (its traceback's last
    line naming tests/soak_clients.py)."""
    lines = [line.strip() for line in trace.splitlines() if "soak_clients.py" in line]
    return lines[-1] if lines else "?"


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def sample(daemon: Daemon, phase: str, t0: float, cycles: int, state: Path) -> Sample:
    """Count what the daemon holds, after a full garbage collection: the daemon's
    collector (``runtime.clock.Collector``) defers full collections while clocks run
    (up to ten minutes when no slack after a tick is long enough), so resident
    memory would otherwise follow the cyclic garbage of the last minutes, not what
    is reachable. The collection holds the loop for tens of ms: it waits for a clock
    tick about to fall due first, as the daemon's own long work does."""
    global _SAMPLING
    await TICKS.clear(0.1)
    _SAMPLING = True
    try:
        return _sample(daemon, phase, t0, cycles, state)
    finally:
        await asyncio.sleep(0)  # (the watch sees the end of the stall first)
        _SAMPLING = False


def _sample(daemon: Daemon, phase: str, t0: float, cycles: int, state: Path) -> Sample:
    started = time.perf_counter()
    before = len(gc.get_objects())
    opcua_nodes._text.cache_clear()  # bounded (4,096), keyed by names clients choose
    clear_abc_caches()
    gc.collect()
    tracked = gc.get_objects()
    objects = len([o for o in tracked if not _dead_weakref(o)])
    garbage = before - len(tracked)
    del tracked
    server = daemon.server
    assert server is not None and daemon.store is not None
    iserver = server.asyncua.iserver
    clocks = [daemon.sessions[n].session.clock_statistics() for n in CONFIG_SESSIONS]
    return Sample(
        phase=phase, t=time.monotonic() - t0, took=time.perf_counter() - started,
        rss=rss_bytes(), blocks=sys.getallocatedblocks(), objects=objects,
        garbage=garbage,
        tasks=len(_standing_tasks()), fds=len(os.listdir("/proc/self/fd")),
        nodes=len(iserver.aspace._nodes), sessions=daemon.manager.statistics().sessions,
        ua_sessions=len(iserver._external_sessions),
        subscriptions=len(iserver.subscription_service.subscriptions),
        clients=server.client_count(),
        overruns=sum(c.overruns for c in clocks), ticks=sum(c.ticks for c in clocks),
        db=sum(p.stat().st_size for p in state.glob("history.db*")),
        queued=daemon.store.statistics().queued, cycles=cycles,
        stalled=tuple(daemon.stalled()), publish_cycles=server.statistics().publish_cycles,
        **(_makeup(iserver) if phase == "quiet" else {}))


def _blocks(value: Any) -> int:
    """The memory blocks ``value`` holds of its own: a sample's tuple, floats, ints
    past the small ones, strings (a phase name is a shared constant)."""
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return 0 if -5 <= value <= 256 else 1
    if isinstance(value, str):
        return 0 if value in ("start", "quiet", "load") else 1
    if isinstance(value, tuple):
        return (1 if value else 0) + sum(_blocks(v) for v in value)
    return 1


def clear_abc_caches() -> None:
    """Empty every ABC's isinstance caches. Each ABC keeps the types it answered for in
    sets of weak references (two weak references and a ``_destroy`` builtin an entry),
    emptied whenever any ``register`` call anywhere (a module imported late:
    ``PathLike.register(Path)``) bumps the global counter, and refilled as code paths
    ask about new types: bounded by ABCs times types, but it moves the object count
    between two quiet samples by dozens."""
    stack: list[type] = [object]
    seen: set[int] = set()
    while stack:
        cls = stack.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        if isinstance(cls, abc.ABCMeta):
            cls._abc_caches_clear()  # type: ignore[attr-defined]
        stack.extend(type.__subclasses__(cls))


def _makeup(iserver: Any) -> dict[str, tuple[str, ...]]:
    """The running tasks by coroutine, and the address space's nodes by the first
    two parts of their name ("Sessions.mc13: 121"), without keeping the nodes."""
    groups: Counter[str] = Counter()
    for nodeid in iserver.aspace._nodes:
        name = str(nodeid.Identifier)
        groups[".".join(name.split(".")[:2]) if nodeid.NamespaceIndex else "ns=0"] += 1
    return {"task_names": tuple(sorted(_task_name(t) for t in _standing_tasks())),
            "node_groups": tuple(f"{g}: {n}" for g, n in sorted(groups.items()))}


#: tasks that come and go with the work of the moment (a batch the history writer is
#: committing when a sample is taken): not counted
TRANSIENT_TASKS = frozenset({"Writer._write_batch"})


def _standing_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if _task_name(t) not in TRANSIENT_TASKS]


def _task_name(task: asyncio.Task[Any]) -> str:
    """A task's coroutine (its name is often a number)."""
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or task.get_name()


def _difference(before: Any, after: Any) -> str:
    """What ``after`` has that ``before`` has not, and the other way round (a few)."""
    gained = sorted((Counter(after) - Counter(before)).elements())
    lost = sorted((Counter(before) - Counter(after)).elements())
    return f"; new: {gained[:8]}" * bool(gained) + f"; gone: {lost[:8]}" * bool(lost)


def _dead_weakref(o: object) -> bool:
    """sqlite3 keeps a weak reference to each cursor of a connection and drops the
    dead ones only at every 200th new cursor: up to 200 per connection, coming and
    going. (A dead weak reference holds nothing else.)"""
    return type(o) is weakref.ref and o() is None


def object_types() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects() if not _dead_weakref(o))


def rss_allowed(seconds: float) -> float:
    """Bytes resident memory may grow in ``seconds``."""
    return RSS_JITTER + RSS_PER_HOUR * seconds / 3600


def slope_per_hour(samples: list[Sample], attr: str) -> float:
    """Least-squares slope of ``attr`` over the samples, per hour."""
    t = np.array([s.t for s in samples])
    y = np.array([float(getattr(s, attr)) for s in samples])
    return float(np.polyfit(t, y, 1)[0]) * 3600


def table(samples: list[Sample]) -> str:
    head = (f"{'phase':<6}{'t s':>5}{'ms':>4}{'RSS MB':>7}{'blocks':>8}{'objects':>8}"
            f"{'garbage':>8}"
            f"{'tasks':>6}{'fds':>4}{'nodes':>6}{'sess':>5}{'ua':>3}{'subs':>5}{'conn':>5}"
            f"{'overrun':>8}{'ticks':>6}{'db MB':>6}{'queue':>6}{'cycles':>7}")
    rows = [head]
    for s in samples:
        rows.append(
            f"{s.phase:<6}{s.t:>5.0f}{s.took * 1e3:>4.0f}{s.rss / 2**20:>7.1f}{s.blocks:>8}"
            f"{s.objects:>8}{s.garbage:>8}{s.tasks:>6}{s.fds:>4}{s.nodes:>6}{s.sessions:>5}"
            f"{s.ua_sessions:>3}{s.subscriptions:>5}{s.clients:>5}{s.overruns:>8}{s.ticks:>6}"
            f"{s.db / 2**20:>6.2f}{s.queued:>6}{s.cycles:>7}")
    return "\n".join(rows)


class Problems(logging.Handler):
    """The daemon's ERROR and CRITICAL records, from structlog (a processor put first,
    which also drops debug and info events: 10 minutes of session_added and
    sessions_saved are not worth printing) and from the stdlib loggers (asyncua)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: list[str] = []

    def note(self, text: str) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(text[:3000])

    def emit(self, record: logging.LogRecord) -> None:
        self.note(f"{record.name}: {record.getMessage()} {record.exc_text or ''}")

    def processor(self, _logger: Any, method: str, event: Any) -> Any:
        if method in ("error", "exception", "critical"):
            self.note(repr(event))
        elif method in ("debug", "info"):
            raise structlog.DropEvent
        return event

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        processors = structlog.get_config()["processors"]
        structlog.configure(processors=[self.processor, *processors])
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield
        finally:
            root.removeHandler(self)
            structlog.configure(processors=processors)


@dataclass
class Load:
    """The client process of one phase and what it reported."""

    cycles: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: connections the clients lost without asking (their keep-alive probe failed)
    lost: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    @property
    def total(self) -> int:
        return sum(self.cycles.values())

    async def run(self, url: str, seconds: float, *, warmup: bool = False) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.soak_clients", url, str(seconds),
            *(["warmup"] if warmup else []),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(seconds + 120):
                async for line in proc.stdout:
                    record = json.loads(line)
                    if record.get("done"):
                        self.done = True
                    elif "lost" in record:
                        self.lost.append(record)
                    elif record["ok"]:
                        self.cycles[record["user"]] += 1
                    else:
                        self.failures.append(record)
                assert await proc.wait() == 0, f"the client process exited {proc.returncode}"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def settle(daemon: Daemon) -> None:
    """Wait until the clients' traces are gone: no connection, no asyncua session or
    subscription, only the config sessions (at most ``SETTLE_TIMEOUT``: what is left
    then fails the checks); then for asyncua to reap the closed connections' tasks."""
    started = time.monotonic()
    server = daemon.server
    assert server is not None
    iserver = server.asyncua.iserver
    while time.monotonic() - started < SETTLE_TIMEOUT:
        if (server.client_count() == 0 and not iserver._external_sessions
                and not iserver.subscription_service.subscriptions
                and sorted(daemon.sessions) == sorted(CONFIG_SESSIONS)):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(REAP)


@dataclass
class Run:
    """What one soak saw."""

    samples: list[Sample] = field(default_factory=list)
    warm: Load = field(default_factory=Load)
    main: Load = field(default_factory=Load)
    problems: Problems = field(default_factory=Problems)
    grown: list[tuple[str, int]] = field(default_factory=list)
    store_errors: int = 0
    store_dropped: int = 0
    clocks: dict[str, ClockStatistics] = field(default_factory=dict)
    #: the same after the warm-up: the main phase's ticks are the difference
    clocks_warm: dict[str, ClockStatistics] = field(default_factory=dict)
    #: the daemon's event-loop stalls over 0.1 s (``StallLog``)
    stall_log: StallLog = field(default_factory=lambda: StallLog())

    @property
    def stalls(self) -> list[tuple[float, float, float]]:
        return self.stall_log.rows()

    @property
    def loaded(self) -> list[Sample]:
        return [s for s in self.samples if s.phase == "load"]

    @property
    def quiet(self) -> tuple[Sample, Sample]:
        first, second = (s for s in self.samples if s.phase == "quiet")
        return first, second


async def soak(state: Path) -> Run:
    """Start the daemon, run the warm-up and main phases against it, stop it."""
    run = Run()
    daemon = Daemon(parse_config(CONFIG.replace("{state}", str(state))))
    runner = asyncio.create_task(daemon.run())
    watch = asyncio.create_task(watch_loop(run.stall_log))
    with run.problems.installed():
        try:
            await asyncio.wait_for(daemon.wait_ready(), 60)
            url = daemon.endpoint_url
            t0 = time.monotonic()
            await asyncio.sleep(2.0)
            run.samples.append(await sample(daemon, "start", t0, 0, state))

            await run.warm.run(url, WARMUP, warmup=True)
            await settle(daemon)
            run.samples.append(await sample(daemon, "quiet", t0, run.warm.total, state))
            run.clocks_warm = {n: daemon.sessions[n].session.clock_statistics()
                               for n in CONFIG_SESSIONS}
            types = object_types()

            async with asyncio.TaskGroup() as tg:
                clients = tg.create_task(run.main.run(url, MAIN))
                while not clients.done():
                    await asyncio.wait([clients], timeout=INTERVAL)
                    if not clients.done():
                        cycles = run.warm.total + run.main.total
                        run.samples.append(await sample(daemon, "load", t0, cycles, state))
            await settle(daemon)
            cycles = run.warm.total + run.main.total
            run.samples.append(await sample(daemon, "quiet", t0, cycles, state))
            run.grown = (object_types() - types).most_common(12)
            run.clocks = {n: daemon.sessions[n].session.clock_statistics() for n in CONFIG_SESSIONS}
            assert daemon.store is not None
            store = daemon.store.statistics()
            run.store_errors, run.store_dropped = store.errors, store.dropped
        finally:
            watch.cancel()
            daemon.stop()
            await asyncio.wait_for(runner, 60)
    return run


#: the most CPU time the daemon's event loop may spend in one stall (a client's
#: keep-alive probe gives up after 1 s; a busy machine stretches CPU time)
MAX_STALL = 0.5
#: set while ``sample`` holds the loop on purpose
_SAMPLING = False


class StallLog:
    """Stalls of the daemon's event loop over 0.1 s: (time.time(), seconds, CPU
    seconds of the loop's thread), samples not counted (each holds the loop for its
    full collection). In a numpy array made at the start: the soak's own records
    must not count as the daemon's memory blocks."""

    def __init__(self, size: int = 100_000) -> None:
        self._rows = np.zeros((size, 3))
        self._count = 0

    def append(self, row: tuple[float, float, float]) -> None:
        if self._count < len(self._rows):
            self._rows[self._count] = row
            self._count += 1

    def rows(self) -> list[tuple[float, float, float]]:
        return [(float(a), float(b), float(c)) for a, b, c in self._rows[:self._count]]


async def watch_loop(stalls: StallLog) -> None:
    """Note every stall of this process's (the daemon's) event loop over 0.1 s: when,
    how long, and the CPU time the loop's thread spent in it (the rest: the machine
    or another thread of the process had the CPU or the GIL)."""
    last, cpu = time.monotonic(), time.thread_time()
    while True:
        await asyncio.sleep(0.01)
        now, now_cpu = time.monotonic(), time.thread_time()
        if now - last > 0.1 and not _SAMPLING:
            stalls.append((time.time(), now - last, now_cpu - cpu))
        last, cpu = now, now_cpu


class TestSoak:
    @pytest.mark.timeout(SOAK_SECONDS + 4 * SETTLE_TIMEOUT + 120)
    async def test_months_in_minutes(self, tmp_path: Path) -> None:
        """Under client churn nothing grows, no tick is missed and every client is served."""
        run = await soak(tmp_path / "state")
        samples, loaded, main, warm = run.samples, run.loaded, run.main, run.warm
        quiet1, quiet2 = run.quiet
        print(f"\nsoak: {SOAK_SECONDS:g} s (warm-up {WARMUP:g} s, main {MAIN:g} s, "
              f"sampled every {INTERVAL:g} s)")
        print(table(samples))
        print("client cycles in the main phase:", dict(main.cycles))
        for name, clock in run.clocks.items():
            main_phase = counts_between(run.clocks_warm[name], clock)
            print(f"clock {name}: {clock.ticks} ticks, {clock.overruns} overruns; main phase: "
                  f"{sum(main_phase)} ticks, lateness p50 {quantile(main_phase, 0.5) * 1e3:.2f} "
                  f"ms, p99 {quantile(main_phase, 0.99) * 1e3:.1f} ms, none later than "
                  f"{worst(main_phase) * 1e3:.1f} ms")
        print(f"garbage collections in the slack after ticks (generations 0, 1, 2): "
              f"{COLLECTOR.collections}, the last full one {COLLECTOR.full_seconds * 1e3:.0f} ms")
        print("object types grown from quiet to quiet:", run.grown)

        checks: list[tuple[str, bool, str]] = []

        def check(what: str, ok: bool, detail: str) -> None:
            checks.append((what, ok, detail))

        # the daemon kept serving: every cycle of every user succeeded
        failures = warm.failures + main.failures
        for failure in failures:
            print(f"client cycle failed: {failure['user']} cycle {failure['cycle']} after "
                  f"{failure.get('seconds', 0):.1f} s: {failure['error'][:200]} (at "
                  f"{_last_frame(failure.get('trace', ''))})")
        check("every client cycle succeeded", not failures,
              f"{len(failures)} failed" + (f", the first: {failures[0]}" if failures else ""))
        lost = warm.lost + main.lost
        for record in lost:
            near = [f"{g:.2f} ({c:.2f} CPU)" for t, g, c in run.stalls
                    if abs(t - record["at"]) < 5.0]
            print(f"connection lost: {record['lost']}; the client's loop stalled "
                  f"{record['client_stall']} s, the daemon's {', '.join(near) or 'not'} "
                  f"(s, within 5 s)")
        check("no connection lost unasked", not lost,
              f"{len(lost)} lost" + (f", the first: {lost[0]}" if lost else ""))
        held = max((c for _, _, c in run.stalls), default=0.0)
        longest = max((g for _, g, _ in run.stalls), default=0.0)
        check("daemon loop never held", held < MAX_STALL,
              f"longest stall {longest * 1e3:.0f} ms; the most CPU time the loop spent "
              f"in one {held * 1e3:.0f} ms (under {MAX_STALL * 1e3:.0f} ms)")
        users = {f"scada{i}" for i in range(3)} | {"churn"}
        check("every user made progress",
              main.done and set(main.cycles) == users and min(main.cycles.values()) >= MAIN / 30,
              f"{dict(main.cycles)}, finished: {main.done}")
        check("no error logged", run.problems.count == 0,
              f"{run.problems.count}" + (f", the first: {run.problems.first}"
                                         if run.problems.count else ""))
        stalled = [s.stalled for s in samples if s.stalled]
        check("never stalled (watchdog)", not stalled, str(stalled[:3]))
        publishing = [b.publish_cycles - a.publish_cycles for a, b in itertools.pairwise(samples)]
        check("kept publishing", min(publishing) > 0,
              f"fewest publishes between two samples: {min(publishing)}")
        check("history store healthy", run.store_errors == 0 and run.store_dropped == 0,
              f"{run.store_errors} errors, {run.store_dropped} samples dropped")

        # ticks: the running sessions kept their pace
        overruns = quiet2.overruns - quiet1.overruns
        check("missed ticks", overruns <= MAX_OVERRUNS,
              f"{overruns} in the main phase (of {quiet2.ticks - quiet1.ticks}; "
              f"at most {MAX_OVERRUNS})")

        # back to the quiet state after the churn
        for attr in ("nodes", "tasks", "fds", "sessions", "ua_sessions", "subscriptions"):
            before, after = getattr(quiet1, attr), getattr(quiet2, attr)
            what = {"nodes": _difference(quiet1.node_groups, quiet2.node_groups),
                    "tasks": _difference(quiet1.task_names, quiet2.task_names)}.get(attr, "")
            check(f"{attr} back to quiet", before == after, f"{before} -> {after}{what}")
        # (the samples the soak itself keeps are tracked objects too: one each, and the
        # first quiet one's two tuples of names)
        grown = quiet2.objects - quiet1.objects - len(loaded) - 1 - 2
        per_cycle = grown / max(main.total, 1)
        check("objects per cycle", per_cycle < OBJECTS_PER_CYCLE,
              f"{grown:+d} over {main.total} cycles = {per_cycle:+.2f} "
              f"(under {OBJECTS_PER_CYCLE}); grown most: {run.grown[:6]}")
        # (less the blocks of the samples the soak took meanwhile: their numbers)
        own = sum(_blocks(sample) for sample in samples[samples.index(quiet1) + 1:])
        blocks = (quiet2.blocks - quiet1.blocks - own) / max(main.total, 1)
        check("memory blocks per cycle", blocks < BLOCKS_PER_CYCLE,
              f"{quiet2.blocks - quiet1.blocks:+d} = {blocks:+.1f} per cycle "
              f"(under {BLOCKS_PER_CYCLE})")
        span = quiet2.t - quiet1.t
        rss_grown = quiet2.rss - quiet1.rss
        hourly = rss_grown / span * 3600
        check("RSS quiet to quiet", rss_grown < rss_allowed(span),
              f"{rss_grown / 2**20:+.1f} MB in {span:.0f} s = {hourly / 2**20:+.1f} MB/h "
              f"(under {rss_allowed(span) / 2**20:.1f} MB)")

        # no steady growth under load: the slope over the later half of the samples (the
        # allocator's arenas grow to their high-water mark first)
        later = loaded[len(loaded) // 2:]
        rss_slope = slope_per_hour(later, "rss")
        span = later[-1].t - later[0].t
        check("RSS slope under load", rss_slope * span / 3600 < rss_allowed(span),
              f"{rss_slope / 2**20:+.1f} MB/h over the last {span:.0f} s "
              f"(under {rss_allowed(span) / 2**20:.1f} MB in that time)")
        print(f"under load, later half: objects {slope_per_hour(later, 'objects'):+.0f}/h, "
              f"blocks {slope_per_hour(later, 'blocks'):+.0f}/h (no checks: connections in "
              f"flight make these noisy)")

        width = max(len(c[0]) for c in checks)
        print("\n".join(f"{'ok  ' if ok else 'FAIL'} {what:<{width}}  {detail}"
                        for what, ok, detail in checks))
        failed = [f"{what}: {detail}" for what, ok, detail in checks if not ok]
        assert not failed, "\n".join(failed)
