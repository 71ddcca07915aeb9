"""How a worker process asks the kernel for CPU time: real-time scheduling, or not.

``server.worker_scheduling``:

* ``"realtime"`` (the default): each worker process that steps sessions runs
  ``SCHED_FIFO`` at ``server.worker_priority`` (default 10: above every normal
  process, below the kernel's threaded interrupts at 50 and the watchdogs at
  99). A sleeping worker then wakes the moment its tick is due, whatever the
  server, its clients or the rest of the machine do: measured on a loaded
  2-core machine with 1 to 10 clients browsing, tick lateness p99 0.3-0.5 ms
  instead of 30-41 ms (``tests/bench/bench_browse.py``). Where the kernel
  refuses it (no ``CAP_SYS_NICE`` and an ``RLIMIT_RTPRIO`` below the
  priority: a user's service, a container) the
  worker falls back to a lower nice value (``FALLBACK_NICE``) if
  ``RLIMIT_NICE`` allows one, else to normal scheduling, and the host logs one
  ``worker_scheduling_fallback`` event saying what was asked, what was got, why,
  and how to grant it (``Outcome.fix``).
* ``"normal"``: the workers keep the scheduling they start with, the daemon's
  (``SCHED_OTHER`` at nice 0, as any process, unless it was started otherwise).

Only the session workers of ``pool.WorkerHost`` ask; the main process (the
server) and anything a worker starts do not: the policy carries
``SCHED_RESET_ON_FORK``, so a child of a worker (an FMU's helper) starts at
normal scheduling.

A ``SCHED_FIFO`` process is never preempted by a normal one, so one that does
not sleep takes a core. Three things keep that bounded:

* work that runs flat out drops to normal scheduling while it runs
  (``Scheduler.flat_out``; the worker calls it): a Step of many ticks, a
  session at real-time factor 0, creating a session (compiling a big twin, an
  FMU's instantiation);
* a worker stuck in a tick (an FMU's endless loop) is killed by the main
  process's hang watch (``server.hang_timeout``), which keeps running: the
  kernel leaves normal processes at least 5 % of every core
  (``/proc/sys/kernel/sched_rt_runtime_us``; since Linux 6.12 the fair
  server), and the main process moves to another core when there is one;
* the priority is modest, so kernel threads still come first.

* a worker given more paced sessions than its core can step (it never sleeps:
  every tick is late) drops to normal scheduling while that lasts
  (``OverloadGuard``, below).

The overload guard: every ``GUARD_WINDOW`` seconds a worker at ``SCHED_FIFO``
compares the CPU time its main thread used with the wall time that passed (one
read of ``/proc/thread-self/schedstat`` a window, nothing per tick). When that
share stays at or above its overload share (``OVERLOAD_SHARE``, 90 %, or less where
the workers are as many as the cores: ``overload_share`` leaves the server half a
core) for ``OVERLOAD_SECONDS`` it drops to
normal scheduling, and says so (the host logs ``worker_overloaded`` and shows it
on ``Diagnostics/Workers``): its ticks come late anyway, and at ``SCHED_FIFO`` it
would take 95 % of its core from the server and everything else. It takes
``SCHED_FIFO`` back once it has been busy less than ``RECOVER_SHARE`` of the
time for ``RECOVER_SECONDS``. Busy, at normal scheduling, counts the time it
waited on the run queue as well as the time it ran (schedstat has both): an
overloaded worker that shares its core gets less than it needs and would look
idle enough by its CPU time alone, take FIFO back, and drop again a second
later; by the time it was runnable, it stays dropped until its load is really
gone (a session deleted, suspended, or slowed down). The thresholds are
constants, not settings: they say "never sleeps" and "sleeps a good part of the
time", which no deployment needs to put elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

Asked = Literal["realtime", "normal"]
REALTIME: Asked = "realtime"
NORMAL: Asked = "normal"
DEFAULT_PRIORITY = 10
#: the nice value a "realtime" worker falls back to, where RLIMIT_NICE allows it
FALLBACK_NICE = -10
_CAP_SYS_NICE = 23
#: the overload guard (module docstring): how often it looks, in seconds
GUARD_WINDOW = 0.25
#: the CPU share at SCHED_FIFO that counts as overloaded, and for how long
OVERLOAD_SHARE = 0.90
OVERLOAD_SECONDS = 1.0
#: the busy share (running or runnable) below which an overloaded worker takes
#: SCHED_FIFO back, and for how long it must stay below
RECOVER_SHARE = 0.70
RECOVER_SECONDS = 3.0
#: cores left to the main process (the server, its clients, history, HIL) and the rest
#: of the machine when every worker is at SCHED_FIFO (``overload_share``)
SERVER_RESERVE = 0.5
#: the lowest overload share a worker is given, however many share the cores
MIN_OVERLOAD_SHARE = 0.3


def overload_share(workers: int, cores: int) -> float:
    """The CPU share at which one of ``workers`` SCHED_FIFO workers counts as
    overloaded on ``cores`` cores: OVERLOAD_SHARE where the workers together leave
    the main process ``SERVER_RESERVE`` of a core at that share, else less. Two
    workers on two cores at 90 % each left the server 0.2 of a core: measured with
    145 paced sessions, a periodic save of their snapshots took 348 s and each
    CreateSession 20 s while every tick was on time (the capacity bench); at 75 %
    each the server keeps half a core."""
    fair = (max(cores, 1) - SERVER_RESERVE) / max(workers, 1)
    return max(MIN_OVERLOAD_SHARE, min(OVERLOAD_SHARE, fair))


def recover_share(share: float) -> float:
    """The busy share below which a worker dropped at ``share`` takes SCHED_FIFO back."""
    return max(0.1, share - (OVERLOAD_SHARE - RECOVER_SHARE))
_POLICIES = {getattr(os, name): name for name in (
    "SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
    if hasattr(os, name)}


@dataclass(frozen=True, slots=True)
class Policy:
    """A process's scheduling as the kernel has it."""

    policy: str  # "SCHED_FIFO", "SCHED_OTHER", ...
    priority: int = 0  # the real-time priority (0 but for SCHED_FIFO and SCHED_RR)
    nice: int = 0

    @property
    def realtime(self) -> bool:
        return self.policy in ("SCHED_FIFO", "SCHED_RR")

    def __str__(self) -> str:
        if self.realtime:
            return f"{self.policy} priority {self.priority}"
        return f"{self.policy} nice {self.nice}"


NORMAL_POLICY = Policy("SCHED_OTHER")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker asked for and what it got; ``reason`` and ``fix`` say why not
    and how to grant it, when it did not get it (both empty when it did)."""

    asked: Asked
    wanted: Policy
    got: Policy
    reason: str = ""
    fix: str = ""

    @property
    def fell_back(self) -> bool:
        # (a real-time policy has no nice value: a daemon started niced, systemd's
        # Nice= say, that gets SCHED_FIFO got what it asked for)
        if self.wanted.realtime:
            return (self.got.policy, self.got.priority) != (self.wanted.policy,
                                                            self.wanted.priority)
        return self.got != self.wanted


def current(pid: int = 0) -> Policy:
    """The scheduling of process ``pid`` (0: this thread) as the kernel reports it.
    Raises ``ProcessLookupError`` when there is no such process."""
    code = os.sched_getscheduler(pid) & ~_reset_on_fork()
    name = _POLICIES.get(code, f"policy {code}")
    priority = os.sched_getparam(pid).sched_priority
    return Policy(name, priority, os.getpriority(os.PRIO_PROCESS, pid))


def wanted(asked: Asked, priority: int = DEFAULT_PRIORITY) -> Policy:
    return Policy("SCHED_FIFO", priority) if asked == REALTIME else NORMAL_POLICY


def apply(asked: Asked, priority: int = DEFAULT_PRIORITY) -> Outcome:
    """Give every thread of this process the scheduling ``asked`` for, or the
    nearest the kernel permits (see the module's docstring)."""
    if asked == NORMAL:  # as the process was started (by the daemon: normal)
        policy = current()
        return Outcome(asked, policy, policy)
    want = wanted(asked, priority)
    try:
        _set_all(os.SCHED_FIFO, priority)
        return Outcome(asked, want, current())
    except OSError as exc:
        refused = exc
    reason = _why(refused, priority)
    nice = _lowest_nice()
    if nice is not None:
        with contextlib.suppress(OSError):
            _set_all(os.SCHED_OTHER, 0)
            _nice_all(nice)
    return Outcome(asked, want, current(), reason, how_to_grant(priority))


def how_to_grant(priority: int) -> str:
    return (f"grant it: under systemd, LimitRTPRIO={priority} in the unit's [Service] "
            f"section (the unit in configs/systemd has it) and no RestrictRealtime=yes, "
            f"or AmbientCapabilities=CAP_SYS_NICE; in Docker, --cap-add SYS_NICE, or "
            f"--ulimit rtprio={priority}; from a shell, a real-time limit of {priority} "
            f"(ulimit -r, /etc/security/limits.conf rtprio) or root; or set "
            f"server.worker_scheduling = \"normal\" to ask for normal scheduling")


def _why(exc: OSError, priority: int) -> str:
    said = f"sched_setscheduler(SCHED_FIFO, {priority}) failed: {os.strerror(exc.errno or 0)}"
    if exc.errno != errno.EPERM:
        return said
    limit = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    if not _has_sys_nice() and (limit == resource.RLIM_INFINITY or limit < priority):
        return (f"{said}: the process has no CAP_SYS_NICE and its real-time priority limit "
                f"(RLIMIT_RTPRIO) is {limit}, below {priority}")
    return (f"{said} although the process may (CAP_SYS_NICE or RLIMIT_RTPRIO {limit}): "
            f"a seccomp filter forbids it (systemd's RestrictRealtime=yes), or the control "
            f"group has no real-time budget (cgroup v1 cpu.rt_runtime_us = 0)")


def _has_sys_nice() -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_NICE & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def _lowest_nice() -> int | None:
    """The fallback nice value this process may take (None: none below 0)."""
    if _has_sys_nice():
        return FALLBACK_NICE
    limit = resource.getrlimit(resource.RLIMIT_NICE)[0]
    if limit == resource.RLIM_INFINITY:
        return FALLBACK_NICE
    lowest = 20 - limit  # RLIMIT_NICE r allows nice values down to 20 - r
    return max(FALLBACK_NICE, lowest) if lowest < 0 else None


def _reset_on_fork() -> int:
    return getattr(os, "SCHED_RESET_ON_FORK", 0)


def _threads() -> list[int]:
    """This process's thread ids (the policy and nice value are per thread)."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _set_all(policy: int, priority: int) -> None:
    for tid in _threads():
        with contextlib.suppress(ProcessLookupError):  # (a thread that just ended)
            os.sched_setscheduler(tid, policy | _reset_on_fork(), os.sched_param(priority))


def _nice_all(nice: int) -> None:
    for tid in _threads():
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)


class Scheduler:
    """A worker's live scheduling: what ``apply`` got, dropped to normal while the
    worker runs flat out (``flat_out(True)``) or for a ``normal()`` block."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._flat = False
        self._held = 0
        self._overloaded = False
        self._lowered = False
        self._warned = False
        #: counts the times flat-out work began (the overload guard skips a window
        #: that had some: its CPU share says nothing about the paced load)
        self.work_count = 0

    @property
    def lowered(self) -> bool:
        """Real-time scheduling is dropped for now."""
        return self._lowered

    @property
    def working(self) -> bool:
        """Dropped for flat-out work now (not for an overload)."""
        return self._flat or self._held > 0

    @property
    def overloaded(self) -> bool:
        return self._overloaded

    def flat_out(self, busy: bool) -> None:
        """The worker now runs flat out (``busy``) or paced only: drop real-time
        scheduling for the first, take it back for the second."""
        if busy and not self._flat:
            self.work_count += 1
        self._flat = busy
        self._update()

    def overload(self, overloaded: bool) -> None:
        """The paced load is more than the core gives (``OverloadGuard``): normal
        scheduling until it is not."""
        self._overloaded = overloaded
        self._update()

    @contextlib.contextmanager
    def normal(self) -> Iterator[None]:
        """Normal scheduling for the block (long work between two ticks)."""
        self._held += 1
        self.work_count += 1
        self._update()
        try:
            yield
        finally:
            self._held -= 1
            self._update()

    def _update(self) -> None:
        got = self.outcome.got
        lower = self._flat or self._held > 0 or self._overloaded
        if not got.realtime or lower == self._lowered:
            return
        try:
            if lower:
                _set_all(os.SCHED_OTHER, 0)
            else:
                _set_all(os.SCHED_FIFO, got.priority)
            self._lowered = lower
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("worker_scheduling_change_failed", lower=lower,
                            policy=str(got), error=os.strerror(exc.errno or 0))


class Usage:
    """This thread's CPU time and run-queue wait so far, in seconds: one ``pread`` of
    ``/proc/thread-self/schedstat`` (where the kernel has no schedstat: the thread's
    CPU time, and no wait)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> tuple[float, float]:
        if self._fd is not None:
            with contextlib.suppress(OSError, ValueError):
                ran, waited = os.pread(self._fd, 64, 0).split()[:2]
                return int(ran) * 1e-9, int(waited) * 1e-9
        return time.thread_time(), 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class Overload:
    """A change the guard made: ``overloaded`` now (or no longer), and the CPU share
    (the busy share, when it ends) over the time that decided it."""

    overloaded: bool
    share: float


class OverloadGuard:
    """Drops a ``SCHED_FIFO`` worker to normal scheduling while its paced load is more
    than its core gives, and takes ``SCHED_FIFO`` back when the load has gone (the
    module's docstring). ``sample`` is called every ``GUARD_WINDOW`` seconds;
    ``now`` and ``usage`` are injected so that tests drive them."""

    def __init__(self, scheduler: Scheduler, *, share: float = OVERLOAD_SHARE,
                 now: Callable[[], float] = time.monotonic,
                 usage: Callable[[], tuple[float, float]] | None = None) -> None:
        """``share``: the CPU share that counts as overloaded (``overload_share``)."""
        self.scheduler = scheduler
        self.share = share
        self.recover = recover_share(share)
        self._now = now
        self._own: Usage | None = None
        if usage is None:
            self._own = Usage()
            usage = self._own.read
        self._usage = usage
        self._start()

    @property
    def active(self) -> bool:
        """The worker got real-time scheduling: there is something to guard."""
        return self.scheduler.outcome.got.realtime

    def _start(self) -> None:
        """Count anew from now (a streak of windows begins here)."""
        self._since = self._now()
        self._ran, self._waited = self._usage()
        self._work_count = self.scheduler.work_count

    def sample(self) -> Overload | None:
        """Look at the time since the streak began: the change made, if any."""
        scheduler = self.scheduler
        if not self.active:
            return None
        if scheduler.working or scheduler.work_count != self._work_count:
            self._start()  # flat-out work: its CPU share says nothing of the paced load
            return None
        now = self._now()
        ran, waited = self._usage()
        elapsed = now - self._since
        if elapsed <= 0.0:
            return None
        used = (ran - self._ran) / elapsed
        busy = (ran - self._ran + waited - self._waited) / elapsed
        if not scheduler.overloaded:
            if used < self.share:
                self._start()
            elif elapsed >= OVERLOAD_SECONDS:
                scheduler.overload(True)
                self._start()
                return Overload(True, min(used, 1.0))
        elif busy >= self.recover:
            self._start()
        elif elapsed >= RECOVER_SECONDS:
            scheduler.overload(False)
            self._start()
            return Overload(False, busy)
        return None

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
