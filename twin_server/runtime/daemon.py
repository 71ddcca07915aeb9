"""The daemon: wires config, the session host, the OPC UA server, history and HIL,
and owns their lifecycle.

Sessions step in the session host made from ``server.workers`` (``host.py``): in
worker processes, or in this process with ``workers = 0``. A twin or session
with ``isolate`` (by default one with an FMU component) gets a worker of its
own. Everything the daemon keeps of one session hangs off its ``ServedSession``
record (``served.py``), created and dropped with it.

Every background task runs in the daemon's TaskGroup: one pacer per session
(``sinks.py``: it reads the session's frame once per publish period and hands
it, with one timestamp, to the daemon's sinks: the OPC UA publisher, the history
recording and the HIL mirror), the publisher (which writes the frames into the
address space and also emits the OPC UA events of ticks), the worker health nodes
(``opcua.worker_nodes``: every half second, and at once on a worker's crash or
recovery), history, HIL, the expiry check and the watchdog; the clocks belong to
the host (tasks in this process, or the workers'). Shutdown runs in stages
(HIL, clocks, pacers with a last frame each, publisher and expiry, history,
server, workers), each with a timeout that logs what was still running when it
expires; the stages share one budget (``SHUTDOWN_BUDGET``), so the whole stays
inside systemd's TimeoutStopSec however many stages there are.

The daemon is the ``opcua.runtime.Runtime`` the OPC UA methods call: it keeps
the ``SessionRegistry`` (twins, sessions, snapshots, idle times), the host and
the address space in step. Each call either completes or raises with nothing
changed.

Expiry: every ``expiry_interval`` seconds (a quarter of
``server.session_idle_timeout``, between 0.05 and 5 s) the sessions some client
monitors are touched, then every client-created session idle for longer than
the timeout is deleted with an ``expired`` event that says why. Config sessions
never expire; a timeout of 0 turns expiry off.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import enum
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from twin_server import persistence
from twin_server.campaigns.service import CampaignService
from twin_server.config.fmu_files import FMU_MODEL, FmuFolders
from twin_server.config.schema import Config, SessionConfig
from twin_server.engine.alarms import AlarmDefinition
from twin_server.engine.manager import Origin, Overrides
from twin_server.engine.session import (
    SEVERITY_FAULT,
    SEVERITY_INFO,
    RunState,
    SessionEvent,
    SessionSettings,
    SessionSnapshot,
    _check_factor,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    AlreadyExists,
    ConfigErrors,
    InvalidState,
    NotFound,
    SessionFault,
    TwinServerError,
)
from twin_server.faces.serve import Faces
from twin_server.hil import HilMirror
from twin_server.history import HistoryStore
from twin_server.models.base import Value
from twin_server.opcua import events as ev
from twin_server.opcua.server import OpcUaServer
from twin_server.recording import Recording
from twin_server.runtime.collector import collector_paused
from twin_server.runtime.compile import LoadedConfig, fault_specs, load_config, parse_twin
from twin_server.runtime.host import Frame, HostedSession
from twin_server.runtime.local import LocalHost
from twin_server.runtime.pool import WorkerHost
from twin_server.runtime.served import (
    ServedSession,
    SessionRegistry,
    merge_parameters,
)
from twin_server.runtime.sinks import Pacer, Sink
from twin_server.runtime.timers import PreciseSleep
from twin_server.scenarios.service import ScenarioService
from twin_server.systemd import Notifier
from twin_server.web import WebServer

log = structlog.get_logger(__name__)


class DaemonState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: seconds each shutdown stage may take before we log what is stuck and move on
STAGE_TIMEOUT = 5.0
#: the stages of a shutdown, in order
SHUTDOWN_STAGES = ("creations", "web", "hil", "clocks", "pacers", "publisher", "snapshots",
                   "history", "history-writer", "server", "workers")
#: seconds the whole shutdown may take: the stages share it, each waiting at most
#: STAGE_TIMEOUT and at most what is left of it (but STAGE_FLOOR, so that each still
#: gets its chance to end cleanly), so that adding a stage never stretches a stuck
#: shutdown past the systemd unit's TimeoutStopSec
SHUTDOWN_BUDGET = 40.0
STAGE_FLOOR = 0.25
#: the longest a shutdown can take, whatever is stuck (a test holds it inside
#: TimeoutStopSec)
SHUTDOWN_LIMIT = SHUTDOWN_BUDGET + len(SHUTDOWN_STAGES) * STAGE_FLOOR
#: the loop time by which the running shutdown must end (None: no shutdown runs)
_SHUTDOWN_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "shutdown_deadline", default=None)


#: seconds CreateSession waits for a session of a big twin to be served before it
#: answers (the creation runs on in the background: ``Daemon.create_session``)
ANSWER_WITHIN = 1.0
#: twins of at least this many components are big in that sense
BACKGROUND_COMPONENTS = 1_000


@dataclass(eq=False)
class _Creation:
    """A client's session being created (``Daemon.create_session``)."""

    name: str
    task: asyncio.Task[ServedSession | Exception] | None = None
    #: the caller was answered before it ended: the outcome is announced instead
    answered: bool = False


def session_settings(cfg: SessionConfig,
                     parameters: Mapping[str, Mapping[str, Value]],
                     alarms: Mapping[str, AlarmDefinition] | None = None) -> SessionSettings:
    """The engine's settings for a session declared in the config, with its
    parameter overrides as the loader coerced them and its own alarms."""
    return SessionSettings(
        step_size=cfg.step_size,
        realtime_factor=cfg.realtime_factor,
        publish_rate=cfg.publish_rate,
        overrun_policy=cfg.overrun_policy,
        autostart=cfg.autostart,
        parameters={c: dict(p) for c, p in parameters.items()},
        alarms=dict(alarms) if alarms else None,
        faults=fault_specs(cfg),
    )


def isolated(twin: TwinDefinition, isolate: bool | None = None) -> bool:
    """Whether a session of ``twin`` gets a worker of its own: ``isolate`` (the
    session's setting) if given, else the twin's, else whether it has an FMU
    component (third-party native code: a crash in it harms no other session)."""
    if isolate is not None:
        return isolate
    if twin.isolate is not None:
        return twin.isolate
    return any(c.model == FMU_MODEL for c in twin.components)


@dataclass
class Daemon:
    """One twin-server process. ``run`` returns after ``stop`` (or a signal)."""

    loaded: LoadedConfig
    endpoint: str | None = None
    state: DaemonState = DaemonState.STARTING
    server: OpcUaServer | None = None
    #: where the sessions step (``server.workers``: in this process, or worker processes)
    host: LocalHost | WorkerHost | None = None
    #: settings of sessions created by clients (CreateSession)
    client_settings: SessionSettings = field(default_factory=SessionSettings)
    manager: SessionRegistry = field(init=False)
    #: the config the daemon started with: what its restart-only sections run
    started_config: Config = field(init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: asyncio.TaskGroup | None = None
    #: the history store, the recorders and the periodic snapshots ([history])
    store: HistoryStore | None = None
    recording: Recording | None = None
    snapshots: persistence.Snapshots | None = None
    #: what every session's pacer feeds: the OPC UA publisher, the recording (with
    #: history) and the HIL mirror, added as each is made (all before any pacer runs)
    _sinks: list[Sink] = field(default_factory=list)
    _snapshot_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _store_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _history_closed: bool = False
    hil: HilMirror | None = None
    #: the REST API and dashboard (``[web]``, ``twin_server.web``), None when off
    web: WebServer | None = None
    #: the machine faces (``[faces]``, ``twin_server.faces``), None without any
    faces: Faces | None = None
    #: the service manager (systemd) when $NOTIFY_SOCKET names one, else a no-op
    notifier: Notifier = field(default_factory=Notifier)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the clocks' sleep (in-process host): a timerfd wakes them within the kernel's
    #: timer precision instead of the event loop's whole milliseconds (``timers.py``)
    _sleep: PreciseSleep = field(default_factory=PreciseSleep)
    #: seconds CreateSession waits for its session before it answers and lets the
    #: creation run on in the background (``create_session``)
    answer_within: float = ANSWER_WITHIN
    #: client sessions being created, by name (``create_session``)
    _creating: dict[str, _Creation] = field(default_factory=dict)
    #: RunScenario's runs (``scenarios/service.py``), from ``run``
    scenarios: ScenarioService | None = None
    #: RunCampaign's campaigns (``campaigns/service.py``), from ``run``
    campaigns: CampaignService | None = None

    def __post_init__(self) -> None:
        self.started_config = self.loaded.config
        server = self.loaded.config.server
        self.manager = SessionRegistry(self.loaded.twins, max_sessions=server.max_sessions,
                                       idle_timeout=server.session_idle_timeout)

    @property
    def sessions(self) -> Mapping[str, ServedSession]:
        """Every served session's record, by name."""
        return self.manager.sessions

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

    def _served_session(self, name: str) -> HostedSession | None:
        record = self.manager.sessions.get(name)
        return record.session if record is not None else None

    def _wake_pacer(self, name: str) -> None:
        record = self.manager.sessions.get(name)
        if record is not None:
            record.pacer.wake()

    def _config_folder(self) -> Path:
        """The folder config-relative paths start from (the working one for a string)."""
        path = self.loaded.path
        return Path(path).parent if path is not None else Path.cwd()

    def stop(self) -> None:
        """Ask ``run`` to shut down (safe to call from a signal handler)."""
        self._stop.set()

    def session(self, name: str) -> HostedSession:
        """The handle of served session ``name`` (NotFound)."""
        return self.manager.get(name).session

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
            self.host = self._make_host()
            # (the workers start while the server loads its address space)
            starting = (asyncio.ensure_future(self.host.start())
                        if isinstance(self.host, WorkerHost) else None)
            try:
                await server.start()
            finally:
                if starting is not None:
                    await starting
        except BaseException:
            if collecting:
                gc.enable()
            if self.host is not None:
                await self.host.aclose()
            raise
        try:
            self._sinks.append(server.publisher)
            if config.faces:  # (README, "Machine faces")
                self.faces = Faces(config, base=self._config_folder(), file=self.loaded.file,
                                   lookup=self._served_session, written=lambda: server.on_written,
                                   changed=self._wake_pacer)
                await self.faces.load(server.asyncua, server.attributes,
                                      server.security.guard if server.security else None)
            stored: persistence.StoredState | None = None
            if config.history.enabled:
                await self._open_history()
                assert self.store is not None and self.recording is not None
                self._sinks.append(self.recording)
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
                settings = session_settings(scfg, self.loaded.session_parameters.get(name, {}),
                                            self.loaded.session_alarms.get(name))
                await self._serve(
                    name, self.manager.twin(scfg.twin), settings, "config",
                    f"session {name!r} of twin {scfg.twin!r} created from the config",
                    stored=stored.sessions.get(name) if stored is not None else None,
                    resume=True, isolate=scfg.isolate)
            for saved in persistence.client_sessions(stored) if stored is not None else ():
                if saved.name in self.manager.sessions:
                    log.warning("stored_session_skipped", session=saved.name,
                                reason="the config declares a session of this name")
                    continue
                try:
                    await self._serve(saved.name, self.manager.twin(saved.twin),
                                      saved.settings, "client",
                                      f"session {saved.name!r} of twin {saved.twin!r} brought "
                                      f"back from the store", stored=saved, resume=True)
                except TwinServerError as exc:
                    log.warning("stored_session_skipped", session=saved.name, twin=saved.twin,
                                reason=str(exc))
            if self.faces is not None:
                await self.faces.bind({n: self.manager.twin(s.twin)
                                       for n, s in config.sessions.items()})
                self._sinks.append(self.faces.sink)
            self.hil = HilMirror(config.hil, {n: r.session for n, r in self.sessions.items()},
                                 on_written=self.recording.written if self.recording else None,
                                 trust=server.trust_list(), on_event=self._hil_event)
            self._sinks.append(self.hil)
            if config.hil:
                await server.add_hil(self.hil)
                await self._publish_hil_sessions()
            self.scenarios = ScenarioService(self, keep=config.server.scenario_reports)
            scenario_nodes = await server.add_scenarios(self.scenarios)
            self.campaigns = CampaignService(self, keep=config.server.scenario_reports)
            campaign_nodes = await server.add_campaigns(self.campaigns)
            if config.web.enabled:
                self.web = WebServer(config.web, self)
                self._sinks.append(self.web.feed)
                await self.web.start()
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                scenario_tasks = [
                    tg.create_task(self.scenarios.serve(), name="scenarios"),
                    tg.create_task(scenario_nodes.publish_forever(), name="scenario-nodes"),
                    tg.create_task(self.campaigns.serve(), name="campaigns"),
                    tg.create_task(campaign_nodes.publish_forever(), name="campaign-nodes")]
                for record in self.sessions.values():
                    record.pacer.start(tg)
                hil_tasks = [tg.create_task(self.hil.run(), name="hil")]
                if config.hil:
                    hil_tasks.append(tg.create_task(server.publish_hil_forever(self.hil),
                                                    name="hil-nodes"))
                publisher = tg.create_task(server.publish_forever(), name="publisher")
                health = tg.create_task(server.publish_workers_forever(self.host.statistics),
                                        name="worker-nodes")
                if self.faces is not None:
                    publishers = [tg.create_task(self.faces.run(), name="faces")]
                else:
                    publishers = []
                expiry = tg.create_task(self._expire_forever(), name="expiry")
                watchdog = tg.create_task(self._watchdog_forever(), name="watchdog")
                if self.store is not None:
                    assert self.recording is not None and self.snapshots is not None
                    self._store_tasks = [
                        tg.create_task(self.store.run(), name="history-writer"),
                        tg.create_task(self.store.run_retention(
                            config.history.retention_interval), name="history-retention")]
                    self._snapshot_tasks = [
                        tg.create_task(self.snapshots.run(), name="history-snapshots")]
                for name, scfg in config.sessions.items():
                    hosted = self.sessions[name].session
                    # a session resumed Suspended or Halted stays so
                    if scfg.autostart and hosted.frame().state is RunState.READY:
                        await hosted.start()
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
                         sessions=len(self.sessions), twins=len(self.manager.twins),
                         workers=self.host.statistics().workers)
                if on_ready is not None:
                    result = on_ready(self)
                    if result is not None:
                        await result
                await self._stop.wait()
                _SHUTDOWN_DEADLINE.set(asyncio.get_running_loop().time() + SHUTDOWN_BUDGET)
                self.state = DaemonState.STOPPING
                self.notifier.stopping()
                log.info("daemon_stopping")
                await _stop_stage("creations", [c.task for c in self._creating.values()
                                                if c.task is not None])
                await _stop_stage("scenarios", scenario_tasks)
                await _with_timeout("web", self._stop_web())
                await _stop_stage("hil", hil_tasks)
                await _with_timeout("clocks", self._stop_clocks())
                await _with_timeout("pacers", self._stop_pacers())
                await _stop_stage("publisher", [publisher, health, expiry, watchdog,
                                                *publishers])
                await self._stop_history()
        finally:
            if collecting:
                gc.enable()  # (a start-up that failed before READY)
            self._tasks = None
            self.state = DaemonState.STOPPING
            await self._stop_history()  # (after a failure, when the stages above did not run)
            await _with_timeout("web", self._stop_web())
            if self.faces is not None:
                await _with_timeout("faces", self.faces.stop())
            await _with_timeout("server", server.stop())
            self._sleep.close()
            for name in list(self.manager.sessions):
                self.manager.remove(name)
            if self.host is not None:
                await _with_timeout("workers", self.host.aclose())  # frees the models
            self.state = DaemonState.STOPPED
            log.info("daemon_stopped")

    def _make_host(self) -> LocalHost | WorkerHost:
        server = self.loaded.config.server
        if server.workers == 0:
            return LocalHost(self._on_event, sleep=self._sleep)
        return WorkerHost(self._on_event, workers=server.workers,
                          hang_timeout=server.hang_timeout,
                          scheduling=server.worker_scheduling,
                          priority=server.worker_priority,
                          snapshot_interval=self.loaded.config.history.snapshot_interval or 5.0)

    def _on_event(self, name: str, event: SessionEvent) -> None:
        """The host's listener: every session's events (a worker's crash included).
        The session's pacer delivers a frame at once: what the event changed (a
        fault's Halted and Bad values, a worker's return) shows without waiting."""
        if self.server is not None:
            self.server.session_event(name, event)
            if event.kind in ("fault", "recovered") and self.server.worker_nodes is not None:
                self.server.worker_nodes.wake()  # the health nodes show it now
        record = self.manager.sessions.get(name)
        if record is not None:
            record.pacer.wake()
        if event.kind == "fault" and record is not None and self.store is not None \
                and self._tasks is not None:
            # saved Halted on its fault now: a daemon killed before the next periodic
            # save must not resume it Running into the same crash
            self._tasks.create_task(self._save_faulted(record), name=f"save-faulted:{name}")

    def _hil_event(self, name: str, kind: str, message: str, severity: int) -> None:
        """The HIL mirror's events (a link lost and back, a link fault's start and end):
        session ``name``'s, as OPC UA events and in its event history."""
        self._on_event(name, SessionEvent(kind, message, severity))

    async def _save_faulted(self, record: ServedSession) -> None:
        """Save a session that halted on a fault, unless (or until) it was deleted."""
        assert self.store is not None
        if self.manager.sessions.get(record.name) is not record:
            return
        await persistence.save_session(self.store, record)
        if self.manager.sessions.get(record.name) is not record:  # deleted meanwhile
            with contextlib.suppress(Exception):  # (the store closing: stale rows go at
                await persistence.forget_session(self.store, record.name)  # the next save)

    async def _stop_web(self) -> None:
        if self.web is not None:
            await self.web.stop()

    async def _stop_pacers(self) -> None:
        """Shutdown stage: every pacer stops after one last frame (the values the
        clocks stopped at: recorded by the history, queued for the publisher)."""
        for record in list(self.sessions.values()):
            await record.pacer.stop()

    async def _stop_clocks(self) -> None:
        """Shutdown stage: the clocks of this process stop, every session left as it
        is, so that the last record and snapshot see where the daemon stopped. (A
        worker's session ticks on until its worker ends; its snapshot is taken between
        two of its ticks and holds the state at that moment.)"""
        if isinstance(self.host, LocalHost):
            await self.host.stop_clocks()

    # -- Runtime: what the OPC UA methods call ------------------------------------------

    @property
    def twins(self) -> Mapping[str, TwinDefinition]:
        return self.manager.twins

    async def create_session(self, twin: str, name: str,
                             parameters: Overrides) -> HostedSession:
        """Serve a new session of ``twin``. Answered once it is served, or, for a twin
        of ``BACKGROUND_COMPONENTS`` or more, after ``answer_within`` seconds while it is
        still being built (20,000 components take many seconds): the creation then
        runs on in the background, the name stays taken, and its ``created`` event
        (from the session, the Sessions folder and TwinServer up) announces the end,
        or a ``create_failed`` event from the Sessions folder says why it failed."""
        self._require_running("create a session")
        definition = self.manager.twin(twin)
        self._check_new(name)
        settings = merge_parameters(self.client_settings, parameters)
        given = "; parameters " + ", ".join(
            f"{c}.{p}={v!r}" for c, values in parameters.items() for p, v in values.items()
        ) if parameters else ""
        message = f"session {name!r} of twin {twin!r} created by a client{given}"
        assert self._tasks is not None and self.host is not None
        creation = _Creation(name)
        creation.task = self._tasks.create_task(
            self._create_in_background(creation, definition, settings, message),
            name=f"create:{name}")
        self._creating[name] = creation
        # (a twin of fewer components is served within milliseconds: waited for, so
        # that the NodeId answered is there to browse, even on a busy machine)
        big = len(definition.components) >= BACKGROUND_COMPONENTS
        try:
            done, _ = await asyncio.wait({creation.task},
                                         timeout=self.answer_within if big else None)
        except asyncio.CancelledError:  # (the caller went: the outcome is announced)
            creation.answered = True
            raise
        if not done:
            creation.answered = True
            log.info("session_create_continues", session=name, twin=twin,
                     components=len(definition.components),
                     after_seconds=self.answer_within)
            return HostedSession(self.host, name)
        result = creation.task.result()
        if isinstance(result, BaseException):
            raise result
        return result.session

    async def _create_in_background(self, creation: _Creation, twin: TwinDefinition,
                                    settings: SessionSettings,
                                    message: str) -> ServedSession | Exception:
        """``_serve`` a client's session; its failure is returned to a caller still
        waiting, else logged and announced (never raised: the task is the daemon's)."""
        name = creation.name
        try:
            return await self._serve(name, twin, settings, "client", message)
        except Exception as exc:
            if creation.answered:
                log.error("session_create_failed", session=name, twin=twin.name,
                          error=f"{type(exc).__name__}: {exc}")
                if self.server is not None:
                    with contextlib.suppress(Exception):
                        await self.server.announce(
                            name, "create_failed",
                            f"session {name!r} of twin {twin.name!r} could not be created: "
                            f"{exc}", SEVERITY_FAULT)
            return exc
        finally:
            if self._creating.get(name) is creation:
                del self._creating[name]

    def _check_new(self, name: str) -> None:
        """``manager.check_new``, and refuse the name of a session being created."""
        self.manager.check_new(name)
        if name in self._creating:
            raise AlreadyExists(f"a session named {name!r} is being created; choose another "
                                f"name, or wait for its created event")

    async def delete_session(self, name: str, *, kind: str = "deleted",
                             message: str | None = None,
                             severity: int = ev.SEVERITY_LIFECYCLE) -> None:
        if name in self._creating and name not in self.manager.sessions:
            raise InvalidState(f"session {name!r} is still being created; delete it after "
                               f"its created event")
        record = self.manager.remove(name)  # (a second delete meanwhile: NotFound)
        assert self.server is not None and self.host is not None
        try:
            await record.pacer.stop()  # its last frame, to every sink
            if message is None:
                try:
                    frame = record.session.frame()
                    was = f" (was {frame.state} at tick {frame.step_count})"
                except NotFound:
                    was = ""
                message = f"session {name!r} deleted by a client{was}"
            with contextlib.suppress(KeyError):
                await self.server.remove_session(name, kind=kind, severity=severity,
                                                 message=message)
        finally:
            if self.recording is not None:
                self.recording.remove(name)  # after the deleted event: it is stored too
            with contextlib.suppress(NotFound):
                await self.host.delete(name)  # frees its models (FMU instances)
        if self.store is not None:
            await persistence.forget_session(self.store, name)
        log.info("session_deleted", session=name, kind=kind)

    async def fork_session(self, source: str, name: str,
                           realtime_factor: float) -> HostedSession:
        self._require_running("fork a session")
        parent = self.manager.get(source)
        self._check_new(name)
        _check_factor(name, realtime_factor)
        snapshot = await parent.session.snapshot()
        settings = dataclasses.replace(parent.settings, realtime_factor=float(realtime_factor),
                                       parameters=None, autostart=False)
        running = parent.session.frame().state is RunState.RUNNING

        async def after(child: HostedSession) -> None:
            await child.set_realtime_factor(float(realtime_factor))
            await parent.session.emit(
                "forked", f"forked into session {name!r} at tick {snapshot.step_count} "
                          f"(t={snapshot.sim_time:g} s)", SEVERITY_INFO)
            if running:
                await child.resume()

        self.manager.touch(source)
        record = await self._serve(
            name, parent.twin, settings, "client",
            lambda frame: f"session {name!r} forked from {source!r} at tick "
                          f"{frame.step_count} (t={frame.sim_time:g} s), {frame.state}, "
                          f"real-time factor {realtime_factor:g}",
            snapshot=snapshot, after=after)
        return record.session

    def fmu_folders(self) -> FmuFolders:
        """Where the FMUs of twins defined at run time may come from (``server.fmu_dirs``)
        and where they are unpacked (``<state_dir>/fmu-cache``)."""
        path = self.loaded.path
        return FmuFolders.of(self.loaded.config.server,
                             path.parent if path is not None else None)

    async def define_twin(self, definition: str) -> TwinDefinition:
        # parsing and compiling take seconds for a twin of 20,000 components: in a
        # thread, so that the event loop serves meanwhile (the GIL switches every 5 ms)
        with collector_paused():  # (what it allocates lives on: ``collector.py``)
            twin = await asyncio.to_thread(parse_twin, definition, file="DefineTwin",
                                           fmu=self.fmu_folders())
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

    async def take_snapshot(self, session: str) -> str:
        hosted = self.manager.get(session).session
        snapshot = await hosted.snapshot()
        snap_id = self.manager.keep_snapshot(session, snapshot)
        self.manager.touch(session)
        await hosted.emit(
            "snapshot_taken",
            f"snapshot {snap_id} taken at tick {snapshot.step_count} "
            f"(t={snapshot.sim_time:g} s)")
        return snap_id

    async def restore_snapshot(self, session: str, snapshot_id: str) -> None:
        snapshot = self.manager.snapshot(session, snapshot_id)
        await self.manager.get(session).session.restore(snapshot)
        self.manager.touch(session)

    async def inputs_released(self, session: str) -> None:
        if self.hil is not None:
            await self.hil.reforce(session)  # the inputs its PLCs drive, forced again

    def touch(self, session: str) -> None:
        self.manager.touch(session)

    async def show(self, session: str) -> None:
        """A client's call on ``session`` is done: its effect shows now on every sink
        (a frame from its pacer) and its events go out, as after an OPC UA method call
        (the web front calls this)."""
        assert self.server is not None
        with contextlib.suppress(KeyError):  # (deleted meanwhile)
            await self.server.publish(session)
        await self.server.flush_events()

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
                plan = reload_plan(self.loaded, new, self.manager,
                                   running=self.started_config)
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
            settings = session_settings(scfg, new.session_parameters.get(name, {}),
                                        new.session_alarms.get(name))
            record = await self._serve(
                name, self.manager.twin(scfg.twin), settings, "config",
                f"session {name!r} of twin {scfg.twin!r} created by a config reload "
                f"({plan.why[name]})", isolate=scfg.isolate)
            if scfg.autostart and record.session.frame().state is RunState.READY:
                await record.session.start()
                await self.server.publish(name)  # Running when the reload answers

    # -- the service manager ------------------------------------------------------------

    def status_text(self) -> str:
        """One line for systemd's STATUS=: sessions, running ones, clients."""
        running = sum(_state(r) is RunState.RUNNING for r in self.sessions.values())
        clients = self.server.client_count() if self.server is not None else 0
        return (f"serving {len(self.sessions)} sessions ({running} running) "
                f"to {clients} clients")

    def stalled(self) -> list[str]:
        """Why the daemon is not making progress (empty when it is): a running
        session whose clock has taken no tick for three of its periods and at
        least a second, or a history writer that made no pass (it passes at
        least every batch interval, busy or idle) for three batch intervals and
        at least 2 s. Called by the watchdog loop between two pings.

        Sessions count only when they step in this process (``workers = 0``): a
        worker's stalled session is the host's to handle (it kills the worker
        after ``server.hang_timeout`` and starts another), and this process,
        which keeps serving meanwhile, keeps the watchdog fed; the health nodes
        (``Diagnostics.Workers``, ``Sessions.<s>.Diagnostics``) and the log say what
        happened."""
        now = time.monotonic()
        reasons = []
        in_process = isinstance(self.host, LocalHost)
        for name, record in list(self.sessions.items()) if in_process else ():
            try:
                frame = record.session.frame()
                ticks = record.session.clock_statistics().ticks
            except NotFound:
                continue
            last = record.progress
            if last is None or last[0] != ticks or frame.state is not RunState.RUNNING:
                record.progress = (ticks, now)
                continue
            factor = frame.realtime_factor
            period = record.settings.step_size / factor if factor else 0.0
            if now - last[1] > max(3 * period, 1.0):
                reasons.append(f"session {name!r} is Running but took no tick for "
                               f"{now - last[1]:.1f} s")
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

    async def _serve(self, name: str, twin: TwinDefinition, settings: SessionSettings,
                     origin: Origin, created: str | Callable[[Frame], str], *,
                     stored: persistence.StoredSession | None = None, resume: bool = False,
                     snapshot: SessionSnapshot | None = None, isolate: bool | None = None,
                     after: Callable[[HostedSession], Awaitable[None]] | None = None,
                     ) -> ServedSession:
        """Create a session in the host (from ``snapshot``, or resumed from ``stored``
        when ``resume``), then ``after`` it, then serve it: its record, recorder and
        nodes, all or nothing (on failure the host lets go of it again).

        A session of the config, or one brought back from the store, whose models fail
        their first Reset (an FMU that cannot initialise) is served all the same,
        Halted on that fault, with a ``fault`` event and the fault on its nodes: one
        broken twin must not keep the daemon from serving the others. A client's
        CreateSession or Fork is refused instead (the client hears why at once).

        The collector is held off meanwhile (``collector.py``: a session of 20,000
        components allocates millions of objects that all live on)."""
        with collector_paused():
            return await self._serve_paused(name, twin, settings, origin, created,
                                            stored=stored, resume=resume, snapshot=snapshot,
                                            isolate=isolate, after=after)

    async def _serve_paused(self, name: str, twin: TwinDefinition, settings: SessionSettings,
                            origin: Origin, created: str | Callable[[Frame], str], *,
                            stored: persistence.StoredSession | None, resume: bool,
                            snapshot: SessionSnapshot | None, isolate: bool | None,
                            after: Callable[[HostedSession], Awaitable[None]] | None,
                            ) -> ServedSession:
        assert self.server is not None and self.host is not None
        self.manager.check_new(name)
        alone = isolated(twin, isolate) and isinstance(self.host, WorkerHost)
        keep = origin == "config" or resume
        outcome = "fresh"
        if resume:
            outcome = await persistence.create_resumed(self.host, name, twin, settings, stored,
                                                       isolate=alone, keep_faulted=keep)
        else:
            await self.host.create(name, twin, settings, snapshot=snapshot, isolate=alone,
                                   keep_faulted=keep)
            if self.host.fault(name) is not None:
                outcome = "start_failed"
                log.error("session_start_failed", session=name, twin=twin.name,
                          fault=str(self.host.fault(name)))
        hosted = HostedSession(self.host, name)
        record = ServedSession(name, twin, settings, origin, hosted, Pacer(hosted, self._sinks),
                               isolated=alone)
        try:
            if after is not None:
                await after(hosted)
            frame = hosted.frame()
            message = created(frame) if callable(created) else created
            self.manager.add(record)
            historized: list[str] | None = None
            if self.recording is not None:
                scfg = self.loaded.config.sessions.get(name)
                own = scfg.history if scfg is not None and origin == "config" else None
                record.recorder = await self.recording.add(hosted, own)
                historized = record.recorder.paths if record.recorder is not None else None
            await self.server.add_session(
                hosted, twin, pacer=record.pacer,
                created=message + _resumed(frame, outcome, hosted.fault()),
                historized=historized)
            failed = hosted.fault()
            if outcome == "start_failed" and failed is not None:
                await hosted.emit("fault", str(failed), SEVERITY_FAULT)
        except BaseException:
            if self.recording is not None:
                self.recording.remove(name)
            if self.manager.sessions.get(name) is record:
                self.manager.remove(name)
            with contextlib.suppress(Exception):
                await self.host.delete(name)
            raise
        if self.hil is not None:
            await self.hil.rebind(hosted)  # a PLC peer serving this name mirrors it again
            await self._publish_hil_sessions(name)
        if self._tasks is not None:
            record.pacer.start(self._tasks)
        return record

    async def _publish_hil_sessions(self, only: str | None = None) -> None:
        """Publish the sessions PLCs feed (or ``only``) now: their inputs carry the
        mirror's marks from its start (BadWaitingForInitialData until a PLC's first
        value), so none reads its default as Good before its PLC ever answered."""
        assert self.server is not None and self.hil is not None
        names = {peer.session for peer in self.hil.statistics().peers}
        for name in sorted(names if only is None else names & {only}):
            await self.server.publish(name)

    async def _open_history(self) -> None:
        """Open the store under state_dir; the recorders and snapshots on top of it."""
        config = self.loaded.config
        history = config.history
        state_dir = Path(config.server.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = await HistoryStore.open(
            state_dir / history.file, batch_interval=history.batch_interval,
            batch_size=history.batch_size, max_queue=history.max_queue)
        # the server hands over every event it emits (on_log_event)
        self.recording = Recording(self.store, history)
        self.snapshots = persistence.Snapshots(self.store, self.manager,
                                               history.snapshot_interval)
        assert self.server is not None
        self.server.on_written = self.recording.written
        self.server.on_log_event = self.recording.event

    async def _stop_history(self) -> None:
        """Shutdown stage: a last record (each pacer's last frame) and a last snapshot
        of every session, then everything queued committed and the file closed.
        Idempotent."""
        store = self.store
        if store is None or self._history_closed:
            return
        self._history_closed = True
        await _with_timeout("pacers", self._stop_pacers())  # (done unless start-up failed)
        await _stop_stage("snapshots", self._snapshot_tasks)
        if self.snapshots is not None:
            await _with_timeout("snapshots", self._save_snapshots())
        await _with_timeout("history", self._close_store(store))
        await _stop_stage("history-writer", self._store_tasks)  # returned already, normally

    async def _close_store(self, store: HistoryStore) -> None:
        """The events still queued in the server go out (an alarm transition is recorded
        as its event goes out, with its fields), then everything queued is committed."""
        if self.server is not None:
            try:
                await self.server.flush_events()
            except Exception:
                log.exception("shutdown_events_failed")
        await store.close()

    async def _save_snapshots(self) -> None:
        assert self.snapshots is not None
        await self.snapshots.save()

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


def _resumed(frame: Frame, outcome: str, fault: SessionFault | None) -> str:
    if outcome == "start_failed":
        return (f"; Halted at once: its first Reset failed, so it cannot start until "
                f"that is fixed (write the parameters it needs, then Reset it): {fault}")
    if outcome == "faulted":
        return (f"; Halted at tick {frame.step_count} (t={frame.sim_time:g} s) on the fault "
                f"it had when the daemon stopped, not started again: {fault}")
    if outcome != "restored":
        return ""
    return (f"; resumed from its snapshot at t={frame.sim_time:g} s "
            f"(tick {frame.step_count}), {frame.state}")


def _state(record: ServedSession) -> RunState | None:
    try:
        return record.session.frame().state
    except NotFound:
        return None


def stage_timeout() -> float:
    """Seconds the next shutdown stage may take: STAGE_TIMEOUT, or what is left of
    the shutdown's SHUTDOWN_BUDGET when that is less (never below STAGE_FLOOR)."""
    deadline = _SHUTDOWN_DEADLINE.get()
    if deadline is None:
        return STAGE_TIMEOUT
    left = deadline - asyncio.get_running_loop().time()
    return max(STAGE_FLOOR, min(STAGE_TIMEOUT, left))


async def _stop_stage(stage: str, tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them at most ``stage_timeout()`` seconds."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    timeout = stage_timeout()
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    if pending:
        log.error("shutdown_stage_timeout", stage=stage, timeout=round(timeout, 3),
                  still_running=sorted(t.get_name() for t in pending))


async def _with_timeout(stage: str, awaitable: Awaitable[None]) -> None:
    timeout = stage_timeout()
    try:
        async with asyncio.timeout(timeout):
            await awaitable
    except TimeoutError:
        log.error("shutdown_stage_timeout", stage=stage, timeout=round(timeout, 3))


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


def reload_plan(old: LoadedConfig, new: LoadedConfig, manager: SessionRegistry, *,
                running: Config | None = None) -> ReloadPlan:
    """The difference between two configs, as the running daemon must apply it.
    ``running``: the config whose restart-only sections (``[server]``, ``[hil]``,
    ``[history]``, ``[web]``, ``[faces]``) run, the one the daemon started with
    (default: ``old``): a change a reload did not apply is named again at the next.

    Raises InvalidState (nothing changed) when a twin the new config changes or
    removes is still used by client-created sessions, or a new config twin takes
    a name a client defined at run time."""
    plan = ReloadPlan()
    old_twins, new_twins = old.config.twins, new.config.twins
    changed = {n for n in old_twins if n in new_twins and old_twins[n] != new_twins[n]}
    gone = set(old_twins) - set(new_twins)
    for name in sorted(changed | gone):
        users = [s for s, record in manager.sessions.items()
                 if record.twin.name == name and record.origin == "client"]
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
    started = running if running is not None else old.config
    for section in ("server", "hil", "history", "web", "faces"):
        if getattr(started, section, None) != getattr(new.config, section, None):
            plan.restart_needed.append(f"[{section}]")
    return plan
