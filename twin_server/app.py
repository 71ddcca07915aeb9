"""The daemon: wires config, sessions, clocks and the OPC UA server, and owns
their lifecycle.

Every background task runs in the daemon's TaskGroup: one clock per session
(a session created at run time gets its clock task there too), the publisher
(which also emits the OPC UA events of ticks) and the expiry check. Shutdown
runs in stages (clocks, publisher and expiry, server), each with a timeout that
logs what was still running when it expires.

The daemon is the ``opcua.runtime.Runtime`` the OPC UA methods call: it keeps
the ``SessionManager`` (twins, sessions, snapshots, idle times) and the address
space in step. Each call either completes or raises with nothing changed.

Expiry: every ``expiry_interval`` seconds (a quarter of
``server.session_idle_timeout``, between 0.05 and 5 s) the sessions some client
monitors are touched, then every client-created session idle for longer than
the timeout is deleted with an ``expired`` event that says why. Config sessions
never expire; a timeout of 0 turns expiry off.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import signal
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from twin_server import persistence
from twin_server.config.fmu_files import FmuFolders
from twin_server.config.loader import LoadedConfig, load_config, parse_twin
from twin_server.config.schema import SessionConfig
from twin_server.engine.clock import Clock
from twin_server.engine.manager import Overrides, SessionManager
from twin_server.engine.session import RunState, Session, SessionSettings
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import ConfigErrors, InvalidState, NotFound, TwinServerError
from twin_server.hil import HilMirror
from twin_server.history import HistoryStore
from twin_server.models.base import Value
from twin_server.opcua import events as ev
from twin_server.opcua.server import OpcUaServer
from twin_server.recording import Recording
from twin_server.systemd import Notifier
from twin_server.timers import PreciseSleep

log = structlog.get_logger(__name__)


class DaemonState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: seconds each shutdown stage may take before we log what is stuck and move on
STAGE_TIMEOUT = 5.0
#: the stages of a shutdown, in order; together at most len * STAGE_TIMEOUT seconds,
#: which must stay inside the systemd unit's TimeoutStopSec (a test checks it)
SHUTDOWN_STAGES = ("hil", "clocks", "publisher", "recorder", "snapshots", "history",
                   "history-writer", "server")


def session_settings(cfg: SessionConfig,
                     parameters: Mapping[str, Mapping[str, Value]]) -> SessionSettings:
    """The engine's settings for a session declared in the config, with its
    parameter overrides as the loader coerced them."""
    return SessionSettings(
        step_size=cfg.step_size,
        realtime_factor=cfg.realtime_factor,
        publish_rate=cfg.publish_rate,
        overrun_policy=cfg.overrun_policy,
        autostart=cfg.autostart,
        parameters={c: dict(p) for c, p in parameters.items()},
    )


@dataclass
class _Running:
    session: Session
    clock: Clock
    task: asyncio.Task[None] | None = None


@dataclass
class Daemon:
    """One twin-server process. ``run`` returns after ``stop`` (or a signal)."""

    loaded: LoadedConfig
    endpoint: str | None = None
    state: DaemonState = DaemonState.STARTING
    server: OpcUaServer | None = None
    sessions: dict[str, _Running] = field(default_factory=dict)
    #: settings of sessions created by clients (CreateSession)
    client_settings: SessionSettings = field(default_factory=SessionSettings)
    manager: SessionManager = field(init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: asyncio.TaskGroup | None = None
    #: the history store, the recorders and the periodic snapshots ([history])
    store: HistoryStore | None = None
    recording: Recording | None = None
    snapshots: persistence.Snapshots | None = None
    _recorder_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _store_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _history_closed: bool = False
    hil: HilMirror | None = None
    #: the service manager (systemd) when $NOTIFY_SOCKET names one, else a no-op
    notifier: Notifier = field(default_factory=Notifier)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _progress: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: the clocks' sleep: a timerfd wakes them within the kernel's timer precision
    #: instead of the event loop's whole milliseconds (``timers.py``)
    _sleep: PreciseSleep = field(default_factory=PreciseSleep)

    def __post_init__(self) -> None:
        server = self.loaded.config.server
        self.manager = SessionManager(self.loaded.twins, max_sessions=server.max_sessions,
                                      idle_timeout=server.session_idle_timeout)

    @property
    def endpoint_url(self) -> str:
        assert self.server is not None, "the server is not started"
        return self.server.endpoint_url

    @property
    def expiry_interval(self) -> float:
        """Seconds between two expiry checks (from the configured idle timeout)."""
        timeout = self.loaded.config.server.session_idle_timeout
        return min(5.0, max(0.05, timeout / 4))

    async def wait_ready(self) -> None:
        """Return once the endpoint is bound and every session is served."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask ``run`` to shut down (safe to call from a signal handler)."""
        self._stop.set()

    async def run(self, *, install_signal_handlers: bool = False,
                  on_ready: Callable[[Daemon], Awaitable[None] | None] | None = None) -> None:
        config = self.loaded.config
        self.server = server = OpcUaServer(config.server, endpoint=self.endpoint, runtime=self)
        if install_signal_handlers:
            self._install_signal_handlers()
        # Start-up allocates ~10**6 objects that all live on (the address space, the
        # sessions): the collector's passes over them while they pile up would cost
        # more than building them (~1 s for 10,000 variables). It runs once at READY.
        collecting = gc.isenabled()
        gc.disable()
        try:
            await server.start()
        except BaseException:
            if collecting:
                gc.enable()
            raise
        try:
            stored: persistence.StoredState | None = None
            if config.history.enabled:
                await self._open_history()
                assert self.store is not None
                server.install_history(self.store)
                if config.history.resume:
                    stored = await persistence.load_state(self.store)
            for twin in self.loaded.twins.values():
                await server.add_twin(twin)
            if stored is not None:
                for twin, _ in persistence.stored_twins(stored, self.manager.twins,
                                                        fmu=self.fmu_folders()):
                    self.manager.define_twin(twin)
                    await server.add_twin(twin)
            for name, scfg in config.sessions.items():
                settings = session_settings(scfg, self.loaded.session_parameters.get(name, {}))
                session = self.manager.create(scfg.twin, name, None, settings, origin="config")
                outcome = persistence.resume(
                    session, stored.sessions.get(name) if stored is not None else None)
                await self._serve(session, f"session {name!r} of twin {scfg.twin!r} created "
                                           f"from the config" + _resumed(session, outcome))
            for saved in persistence.client_sessions(stored) if stored is not None else ():
                if saved.name in self.manager.sessions:
                    log.warning("stored_session_skipped", session=saved.name,
                                reason="the config declares a session of this name")
                    continue
                restored = persistence.recreate(self.manager, saved)
                if restored is not None:
                    await self._serve(restored, f"session {saved.name!r} of twin "
                                                f"{saved.twin!r} brought back from the store"
                                                + _resumed(restored, "restored"))
            self.hil = HilMirror(config.hil, {n: r.session for n, r in self.sessions.items()},
                                 on_written=self.recording.written if self.recording else None,
                                 trust=server.trust_list())
            if config.hil:
                await server.add_hil(self.hil)
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                hil_tasks = [tg.create_task(self.hil.run(), name="hil")]
                if config.hil:
                    hil_tasks.append(tg.create_task(server.publish_hil_forever(self.hil),
                                                    name="hil-nodes"))
                for running in self.sessions.values():
                    self._start_clock(running)
                publisher = tg.create_task(server.publish_forever(), name="publisher")
                expiry = tg.create_task(self._expire_forever(), name="expiry")
                watchdog = tg.create_task(self._watchdog_forever(), name="watchdog")
                if self.store is not None:
                    assert self.recording is not None and self.snapshots is not None
                    self._store_tasks = [
                        tg.create_task(self.store.run(), name="history-writer"),
                        tg.create_task(self.store.run_retention(
                            config.history.retention_interval), name="history-retention")]
                    self._recorder_tasks = [
                        tg.create_task(self.recording.run(), name="history-recorder"),
                        tg.create_task(self.snapshots.run(), name="history-snapshots")]
                for name, scfg in config.sessions.items():
                    session = self.sessions[name].session
                    # a session resumed Suspended or Halted stays so
                    if scfg.autostart and session.state is RunState.READY:
                        session.start()
                # The address space is built: what is allocated now lives as long as
                # the process, so keep it out of the collector's full passes (a full
                # collection of asyncua's node objects stalls the loop for 100s of ms).
                gc.collect()
                gc.freeze()
                if collecting:
                    gc.enable()
                self.state = DaemonState.RUNNING
                self._ready.set()
                self.notifier.ready(self.status_text())
                log.info("daemon_ready", endpoint=server.endpoint_url,
                         sessions=len(self.sessions), twins=len(self.manager.twins))
                if on_ready is not None:
                    result = on_ready(self)
                    if result is not None:
                        await result
                await self._stop.wait()
                self.state = DaemonState.STOPPING
                self.notifier.stopping()
                log.info("daemon_stopping")
                await _stop_stage("hil", hil_tasks)
                await _stop_stage("clocks", [r.task for r in self.sessions.values() if r.task])
                await _stop_stage("publisher", [publisher, expiry, watchdog])
                await self._stop_history()
        finally:
            if collecting:
                gc.enable()  # (a start-up that failed before READY)
            self._tasks = None
            self.state = DaemonState.STOPPING
            await self._stop_history()  # (after a failure, when the stages above did not run)
            await _with_timeout("server", server.stop())
            self._sleep.close()
            for name in list(self.manager.sessions):
                self.manager.delete(name)  # frees the models (FMU instances)
            self.state = DaemonState.STOPPED
            log.info("daemon_stopped")

    # -- Runtime: what the OPC UA methods call ------------------------------------------

    @property
    def twins(self) -> Mapping[str, TwinDefinition]:
        return self.manager.twins

    async def create_session(self, twin: str, name: str, parameters: Overrides) -> Session:
        self._require_running("create a session")
        session = self.manager.create(twin, name, parameters, self.client_settings,
                                      origin="client")
        given = "; parameters " + ", ".join(
            f"{c}.{p}={v!r}" for c, values in parameters.items() for p, v in values.items()
        ) if parameters else ""
        await self._serve(session, f"session {name!r} of twin {twin!r} created by a client"
                                   f"{given}", start_clock=True)
        return session

    async def delete_session(self, name: str, *, kind: str = "deleted",
                             message: str | None = None,
                             severity: int = ev.SEVERITY_LIFECYCLE) -> None:
        running = self.sessions.pop(name, None)
        if running is None:
            self.manager.get(name)  # NotFound naming the sessions there are
            raise NotFound(f"session {name!r} is being deleted already")
        try:
            if running.task is not None:
                running.task.cancel()
                await asyncio.wait([running.task])  # (does not raise its CancelledError)
            assert self.server is not None
            with contextlib.suppress(KeyError):
                await self.server.remove_session(
                    name, kind=kind, severity=severity,
                    message=message or f"session {name!r} deleted by a client "
                                       f"(was {running.session.state} at tick "
                                       f"{running.session.step_count})")
        finally:
            if self.recording is not None:
                self.recording.remove(name)  # after the deleted event: it is stored too
            self.manager.delete(name)
        if self.store is not None:
            await persistence.forget_session(self.store, name)
        log.info("session_deleted", session=name, kind=kind)

    async def fork_session(self, source: str, name: str, realtime_factor: float) -> Session:
        self._require_running("fork a session")
        child = self.manager.fork(source, name, realtime_factor)
        await self._serve(
            child, f"session {name!r} forked from {source!r} at tick {child.step_count} "
                   f"(t={child.sim_time:g} s), {child.state}, real-time factor "
                   f"{realtime_factor:g}", start_clock=True)
        return child

    def fmu_folders(self) -> FmuFolders:
        """Where the FMUs of twins defined at run time may come from (``server.fmu_dirs``)
        and where they are unpacked (``<state_dir>/fmu-cache``)."""
        path = self.loaded.path
        return FmuFolders.of(self.loaded.config.server,
                             path.parent if path is not None else None)

    async def define_twin(self, definition: str) -> TwinDefinition:
        twin = parse_twin(definition, file="DefineTwin", fmu=self.fmu_folders())
        self.manager.define_twin(twin)
        assert self.server is not None
        try:
            await self.server.add_twin(twin)
        except BaseException:
            self.manager.remove_twin(twin.name)
            raise
        if self.store is not None:
            try:  # kept for the next start, or not defined at all
                await persistence.save_twin(self.store, twin.name, definition)
            except BaseException:
                self.manager.remove_twin(twin.name)
                await self.server.remove_twin(twin.name)
                raise
        log.info("twin_defined", twin=twin.name, components=len(twin.components))
        return twin

    async def remove_twin(self, name: str) -> None:
        self.manager.remove_twin(name)
        assert self.server is not None
        await self.server.remove_twin(name)
        if self.store is not None:
            await persistence.forget_twin(self.store, name)
        log.info("twin_removed", twin=name)

    def take_snapshot(self, session: str) -> str:
        return self.manager.take_snapshot(session)

    def restore_snapshot(self, session: str, snapshot_id: str) -> None:
        self.manager.restore_snapshot(session, snapshot_id)

    def touch(self, session: str) -> None:
        self.manager.touch(session)

    # -- reload -----------------------------------------------------------------------

    async def reload_config(self) -> str:
        """Load the config file again and apply the difference: sessions added to it
        start, removed ones stop, changed ones (settings, parameters or their twin's
        definition) restart, untouched ones keep running with their subscriptions.
        An invalid file raises ConfigErrors and nothing changes. Returns a summary."""
        self._require_running("reload the config")
        path = self.loaded.path
        if path is None:
            raise InvalidState("this daemon was not started from a config file: "
                               "there is nothing to reload")
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(load_config, path)
                plan = reload_plan(self.loaded, new, self.manager)
            except (ConfigErrors, TwinServerError) as exc:
                log.error("config_reload_refused", file=str(path), errors=str(exc))
                raise
            await self._apply(plan, new)
        summary = plan.summary()
        log.info("config_reloaded", file=str(path), summary=summary)
        self.notifier.status(self.status_text())
        return summary

    async def _apply(self, plan: ReloadPlan, new: LoadedConfig) -> None:
        assert self.server is not None
        for name in plan.stop:
            await self.delete_session(name, kind="deleted", message=(
                f"session {name!r} stopped by a config reload ({plan.why[name]})"))
        for name in plan.remove_twins:
            self.manager.remove_twin(name)
            await self.server.remove_twin(name)
        for name in plan.add_twins:
            twin = new.twins[name]
            self.manager.define_twin(twin, origin="config")
            await self.server.add_twin(twin)
        self.loaded = new
        for name in plan.start:
            scfg = new.config.sessions[name]
            settings = session_settings(scfg, new.session_parameters.get(name, {}))
            session = self.manager.create(scfg.twin, name, None, settings, origin="config")
            await self._serve(session, f"session {name!r} of twin {scfg.twin!r} created by a "
                                       f"config reload ({plan.why[name]})", start_clock=True)
            if scfg.autostart:
                session.start()

    # -- the service manager ------------------------------------------------------------

    def status_text(self) -> str:
        """One line for systemd's STATUS=: sessions, running ones, clients."""
        running = sum(r.session.state is RunState.RUNNING for r in self.sessions.values())
        clients = self.server.client_count() if self.server is not None else 0
        return (f"serving {len(self.sessions)} sessions ({running} running) "
                f"to {clients} clients")

    def stalled(self) -> list[str]:
        """Why the daemon is not making progress (empty when it is): a running
        session whose clock has taken no tick for three of its periods and at
        least a second, or a history writer that made no pass (it passes at
        least every batch interval, busy or idle) for three batch intervals and
        at least 2 s. Called by the watchdog loop between two pings."""
        now = time.monotonic()
        reasons = []
        for name, running in self.sessions.items():
            session = running.session
            ticks = running.clock.statistics().ticks
            last = self._progress.get(name)
            if last is None or last[0] != ticks or session.state is not RunState.RUNNING:
                self._progress[name] = (ticks, now)
                continue
            factor = session.realtime_factor
            period = session.step_size / factor if factor else 0.0
            if now - last[1] > max(3 * period, 1.0):
                reasons.append(f"session {name!r} is Running but took no tick for "
                               f"{now - last[1]:.1f} s")
        for name in set(self._progress) - set(self.sessions):
            del self._progress[name]
        if self.store is not None:
            heartbeat = self.store.statistics().heartbeat
            allowed = max(3 * self.loaded.config.history.batch_interval, 2.0)
            if heartbeat is not None and now - heartbeat > allowed:
                reasons.append(f"the history writer made no pass for {now - heartbeat:.1f} s")
        return reasons

    async def _watchdog_forever(self) -> None:
        """WATCHDOG=1 at half of $WATCHDOG_USEC while the tick loops make progress,
        and a fresh STATUS= line; without a watchdog, STATUS= every 10 s."""
        if not self.notifier.enabled:
            return
        interval = self.notifier.watchdog_interval()
        withheld = False
        while True:
            await asyncio.sleep(interval or 10.0)
            if interval is not None:
                reasons = self.stalled()
                if reasons:
                    (log.debug if withheld else log.error)("watchdog_withheld", reasons=reasons)
                    withheld = True
                else:
                    if withheld:
                        log.info("watchdog_resumed")
                    withheld = False
                    self.notifier.watchdog()
            self.notifier.status(self.status_text())

    # -- helpers ----------------------------------------------------------------------

    def _require_running(self, what: str) -> None:
        if self._tasks is None or self.state is not DaemonState.RUNNING:
            raise InvalidState(f"cannot {what}: the server is {self.state}")

    async def _serve(self, session: Session, created: str, *,
                     start_clock: bool = False) -> None:
        """Put a session the manager holds into the address space with its clock;
        on failure the manager lets go of it again."""
        assert self.server is not None
        # a phase from the name: sessions started together (the config's, at start)
        # spread their ticks over the period instead of all falling due at once
        clock = Clock(session, phase=(zlib.crc32(session.name.encode()) % 1024) / 1024,
                      sleep=self._sleep)
        running = _Running(session, clock)
        historized: list[str] | None = None
        try:
            if self.recording is not None:
                scfg = self.loaded.config.sessions.get(session.name)
                own = scfg.history if scfg is not None and \
                    self.manager.origin(session.name) == "config" else None
                recorder = await self.recording.add(session, own)
                historized = recorder.paths if recorder is not None else None
            await self.server.add_session(session, clock, created=created,
                                          historized=historized)
        except BaseException:
            if self.recording is not None:
                self.recording.remove(session.name)
            self.manager.delete(session.name)
            raise
        self.sessions[session.name] = running
        if self.hil is not None:
            self.hil.rebind(session)  # a PLC peer serving this name mirrors it again
        if start_clock:
            self._start_clock(running)

    async def _open_history(self) -> None:
        """Open the store under state_dir; the recorders and snapshots on top of it."""
        config = self.loaded.config
        history = config.history
        state_dir = Path(config.server.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = await HistoryStore.open(
            state_dir / history.file, batch_interval=history.batch_interval,
            batch_size=history.batch_size, max_queue=history.max_queue)
        # events=False: the server hands over every event it emits (on_log_event)
        self.recording = Recording(self.store, history, events=False)
        self.snapshots = persistence.Snapshots(self.store, self.manager,
                                               history.snapshot_interval)
        assert self.server is not None
        self.server.on_written = self.recording.written
        self.server.on_log_event = self.recording.event

    async def _stop_history(self) -> None:
        """Shutdown stage: a last record and a last snapshot of every session, then
        everything queued committed and the file closed. Idempotent."""
        store = self.store
        if store is None or self._history_closed:
            return
        self._history_closed = True
        await _stop_stage("recorder", self._recorder_tasks)  # each records once more
        if self.recording is not None:
            self.recording.record_all()  # (if its task never ran)
        if self.snapshots is not None:
            await _with_timeout("snapshots", self._save_snapshots())
        await _with_timeout("history", store.close())
        await _stop_stage("history-writer", self._store_tasks)  # returned already, normally

    async def _save_snapshots(self) -> None:
        assert self.snapshots is not None
        await self.snapshots.save()

    def _start_clock(self, running: _Running) -> None:
        assert self._tasks is not None
        running.task = self._tasks.create_task(running.clock.run(),
                                               name=f"clock:{running.session.name}")

    async def _expire_forever(self) -> None:
        """Delete client-created sessions nobody used for session_idle_timeout s."""
        manager = self.manager
        if self.loaded.config.server.session_idle_timeout == 0:
            return
        assert self.server is not None
        server = self.server
        while True:
            await asyncio.sleep(self.expiry_interval)
            for name in server.subscribed_sessions():
                manager.touch(name)
            for name in manager.expired():
                if name not in self.sessions:
                    continue  # being deleted
                idle = manager.idle_for(name)
                try:
                    await self.delete_session(
                        name, kind="expired", severity=ev.SEVERITY_EXPIRED,
                        message=f"session {name!r} expired: no client read, wrote, "
                                f"subscribed to or called it for {idle:.1f} s "
                                f"(server.session_idle_timeout = {manager.idle_timeout:g} s)")
                except Exception:
                    log.exception("session_expiry_failed", session=name)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_reload_signal(self) -> None:
        log.info("signal_received", signal="SIGHUP")
        if self._tasks is None or self.state is not DaemonState.RUNNING:
            log.warning("config_reload_skipped", reason=f"the daemon is {self.state}")
            return
        self._tasks.create_task(self._reload_logged(), name="reload")

    async def _reload_logged(self) -> None:
        """A reload asked for by SIGHUP: its outcome goes to the log (never raises)."""
        with contextlib.suppress(TwinServerError, ConfigErrors):
            await self.reload_config()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal_received", signal=sig.name)
        self.stop()


def _resumed(session: Session, outcome: str) -> str:
    if outcome != "restored":
        return ""
    return (f"; resumed from its snapshot at t={session.sim_time:g} s "
            f"(tick {session.step_count}), {session.state}")


async def _stop_stage(stage: str, tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them at most STAGE_TIMEOUT seconds."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=STAGE_TIMEOUT)
    if pending:
        log.error("shutdown_stage_timeout", stage=stage, timeout=STAGE_TIMEOUT,
                  still_running=sorted(t.get_name() for t in pending))


async def _with_timeout(stage: str, awaitable: Awaitable[None]) -> None:
    try:
        await asyncio.wait_for(awaitable, STAGE_TIMEOUT)
    except TimeoutError:
        log.error("shutdown_stage_timeout", stage=stage, timeout=STAGE_TIMEOUT)


@dataclass
class ReloadPlan:
    """What a config reload changes; ``why`` says it per session."""

    stop: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    remove_twins: list[str] = field(default_factory=list)
    add_twins: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    #: parts of the config a reload does not apply (they need a restart)
    restart_needed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{label}: {', '.join(names)}" for label, names in (
            ("stopped", [n for n in self.stop if n not in self.start]),
            ("started", [n for n in self.start if n not in self.stop]),
            ("restarted", [n for n in self.start if n in self.stop]),
            ("twins removed", [n for n in self.remove_twins if n not in self.add_twins]),
            ("twins added", [n for n in self.add_twins if n not in self.remove_twins]),
            ("twins changed", [n for n in self.add_twins if n in self.remove_twins]),
            ("unchanged", self.unchanged)) if names]
        if self.restart_needed:
            parts.append("needs a restart to apply: " + ", ".join(self.restart_needed))
        return "; ".join(parts) or "nothing changed"


def reload_plan(old: LoadedConfig, new: LoadedConfig, manager: SessionManager) -> ReloadPlan:
    """The difference between two configs, as the running daemon must apply it.

    Raises InvalidState (nothing changed) when a twin the new config changes or
    removes is still used by client-created sessions, or a new config twin takes
    a name a client defined at run time."""
    plan = ReloadPlan()
    old_twins, new_twins = old.config.twins, new.config.twins
    changed = {n for n in old_twins if n in new_twins and old_twins[n] != new_twins[n]}
    gone = set(old_twins) - set(new_twins)
    for name in sorted(changed | gone):
        users = [s for s, session in manager.sessions.items()
                 if session.twin.name == name and manager.origin(s) == "client"]
        if users:
            verb = "changes" if name in changed else "removes"
            raise InvalidState(
                f"the new config {verb} twin {name!r}, which client-created sessions "
                f"{', '.join(sorted(users))} still use: delete them first, then reload")
    for name in sorted(set(new_twins) - set(old_twins)):
        if name in manager.twins:
            raise InvalidState(f"the new config defines twin {name!r}, a name a client "
                               "gave a twin at run time: remove that twin first, then reload")
    plan.remove_twins = sorted(changed | gone)
    plan.add_twins = sorted(changed | (set(new_twins) - set(old_twins)))

    old_s, new_s = old.config.sessions, new.config.sessions
    for name in old_s:
        if name not in manager.sessions:
            if name in new_s:  # a client deleted it: the config declares it still
                plan.start.append(name)
                plan.why[name] = "declared in the config (a client had deleted it)"
            continue
        if manager.origin(name) != "config":
            continue  # deleted by a client, who made another of the name: theirs
        if name not in new_s:
            plan.stop.append(name)
            plan.why[name] = "no longer in the config"
        elif (old_s[name], old.session_parameters.get(name)) != (
                new_s[name], new.session_parameters.get(name)):
            plan.stop.append(name)
            plan.start.append(name)
            plan.why[name] = "its settings changed"
        elif old_s[name].twin in changed:
            plan.stop.append(name)
            plan.start.append(name)
            plan.why[name] = f"its twin {old_s[name].twin!r} changed"
        else:
            plan.unchanged.append(name)
    for name in new_s:
        if name not in old_s:
            if name in manager.sessions:
                raise InvalidState(f"the new config declares session {name!r}, a name a "
                                   "client-created session has: delete it first, then reload")
            plan.start.append(name)
            plan.why[name] = "new in the config"
    for section in ("server", "hil", "history"):
        if getattr(old.config, section, None) != getattr(new.config, section, None):
            plan.restart_needed.append(f"[{section}]")
    return plan
