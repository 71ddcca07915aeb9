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

Not bounded: a worker given more paced sessions than its core can step stays
busy at ``SCHED_FIFO`` and takes up to 95 % of that core until the load goes
(README, "Workers").
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from collections.abc import Iterator
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
        self._lowered = False
        self._warned = False

    @property
    def lowered(self) -> bool:
        """Real-time scheduling is dropped for now."""
        return self._lowered

    def flat_out(self, busy: bool) -> None:
        """The worker now runs flat out (``busy``) or paced only: drop real-time
        scheduling for the first, take it back for the second."""
        self._flat = busy
        self._update()

    @contextlib.contextmanager
    def normal(self) -> Iterator[None]:
        """Normal scheduling for the block (long work between two ticks)."""
        self._held += 1
        self._update()
        try:
            yield
        finally:
            self._held -= 1
            self._update()

    def _update(self) -> None:
        got = self.outcome.got
        lower = self._flat or self._held > 0
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
