"""Where sessions step: in this process, or in worker processes (issue #14).

The main process uses every session through one interface, ``SessionHost``
(``host.py``): create (from a twin, settings and maybe a snapshot), delete,
``call`` a command (``commands.py``: start, write, step, snapshot, ...), read the
latest ``Frame`` (every value of one tick), clock statistics, and events through
the listener the host was built with. ``HostedSession`` is its typed front.

    main process                                      worker process (one per core,
                                                      one more per isolated session)
    SessionHost ── WorkerHost (pool.py)
      create / call / delete                          Worker (worker.py), own event loop
        request id, future ──(socketpair: pickled ──> run_command(Session, ...)
                               frames, wire.py)       Clock per session (clock.py,
        reply | error (our exception, fields) <──      timerfd sleep) ──tick──> Session
        events (SessionEvent, fault)          <──      (the engine, unchanged)
        strings that changed                  <──          │ after a tick / a command
        a snapshot every few seconds          <──          ▼
      frame(name) <── seqlock copy ── shared memory: one ValueBlock per session
                                      (header + float64 values; shm.py)
      crash report <── status block (the component being stepped), one per worker
      process.sentinel ─ add_reader: a death is noticed at once
      hang watch: a Running session's live step count stands still -> SIGKILL
      spare worker(s): started, idle, models imported, to take a dead one's place

    SessionHost ── LocalHost (local.py, workers = 0): Session + Clock on this loop

When a worker dies (a segfault in an FMU, an abort, a kill, or killed because it
hung), each of its sessions is Halted at once with a ``WorkerCrashed`` fault
(``errors.py``) naming the signal, the tick and the component being stepped; its
frame keeps the last values with ``good=False``; a spare worker takes its
place (starting a process takes 0.5-2.5 s on a busy machine; a spare answers
in well under a second), and the sessions are created there again from the latest snapshot the
main process holds (sent by the worker every ``snapshot_interval`` s, or taken
or restored by a client), still Halted, with a ``recovered`` event. Every other
worker's sessions tick on. ``pool.py`` has the details. Workers ignore SIGINT
and SIGTERM (a Ctrl-C or systemd's stop reaches the whole process group): the
main process ends them in its own shutdown stage, or they end when their pipe
closes.

The engine stays pure: two small additions serve the hosts, ``Session(progress=...)``
(the component being stepped, written into the worker's status block) and
``Session.halt_on_fault`` (a fault from outside: the worker's death).

The daemon (``daemon.py``) makes one host from ``server.workers`` (0: a
``LocalHost``; default: a ``WorkerHost`` with one worker per CPU) and keeps one
``ServedSession`` record per session (``served.py``: its handle, twin, settings,
origin, pacer, snapshots by id, idle time, recorder) in a ``SessionRegistry``.
Each session's ``Pacer`` (``sinks.py``) reads its ``Frame`` once per publish
period and hands it, with one ``Stamp``, to every ``Sink``: the OPC UA publisher,
the history recording and the HIL mirror, which never read the session
themselves; commands go through ``HostedSession`` handles; the host's events
reach the OPC UA server (``OpcUaServer.session_event``), which hands each to the
history. A session's worker of its own: ``isolate`` on the session or its twin
in the config, by default for twins with an FMU component.

A Step(n) runs in the background wherever the session steps (``stepping.py``):
in slices of a few ms between the other sessions' ticks, answered once it ended
or after the caller's wait, its progress in ``Frame.steps_remaining``, its end
announced by a ``step_completed`` event; the hang watch covers it.

``statistics()`` (``HostStatistics``) names every worker process (``WorkerInfo``:
name, pid, role, its sessions) and the latest crash (``CrashReport``: the
worker, the signal, the session, component and tick it was stepping, whether
it hung); ``opcua/worker_nodes.py`` serves them as health nodes. A session
Halted on a fault is saved with it and comes back Halted on it after a restart
(``persistence.py``; ``create(..., fault=)``, ``recovery_snapshot``).
"""

from __future__ import annotations

from twin_server.runtime.host import (
    CrashReport,
    EventListener,
    Frame,
    FrameSource,
    HostedSession,
    HostStatistics,
    SessionHost,
    SessionLayout,
    WorkerInfo,
)
from twin_server.runtime.local import LocalHost, SessionFrames
from twin_server.runtime.pool import WorkerHost, make_host
from twin_server.runtime.sinks import Pacer, Sink, Stamp

__all__ = [
    "CrashReport", "EventListener", "Frame", "FrameSource", "HostStatistics", "HostedSession",
    "LocalHost", "Pacer", "SessionFrames", "SessionHost", "SessionLayout", "Sink", "Stamp",
    "WorkerHost", "WorkerInfo",
    "make_host",
]
