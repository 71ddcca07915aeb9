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
                               frames, wire.py)       Clock per session (engine.clock,
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

Not wired yet (the lead wires it after the security work on the same files):
``app.py`` still owns a Session and a Clock per session, and ``opcua/`` (the
publisher, methods, writes), ``recording.py`` and ``hil/`` read and call the
``Session`` objects directly. Wiring means: the daemon makes one host from
``server.workers`` (``make_host``), the ``SessionManager``'s bookkeeping (names,
snapshots by id, expiry) keeps ``HostedSession`` handles, the publisher reads
``Frame``s, a Bad status goes on the nodes of a frame that is not ``good``, and
the health nodes and systemd's watchdog read ``HostStatistics``. Also not yet:
placement by the ``isolate`` setting of a twin or session in the config (and
FMU sessions isolated by default), a long Step(n) in chunks (today it holds its
worker's other sessions, which the hang watch then kills after ``hang_timeout``;
and a model that loops for ever inside Step(n) of a session that is not Running
is not seen as hung), ``server.workers`` and the other settings in the config.
"""

from __future__ import annotations

from twin_server.runtime.host import (
    EventListener,
    Frame,
    HostedSession,
    HostStatistics,
    SessionHost,
    SessionLayout,
)
from twin_server.runtime.local import LocalHost
from twin_server.runtime.pool import WorkerHost, make_host

__all__ = [
    "EventListener", "Frame", "HostStatistics", "HostedSession", "LocalHost", "SessionHost",
    "SessionLayout", "WorkerHost", "make_host",
]
