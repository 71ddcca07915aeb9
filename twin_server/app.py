"""The daemon: wires config, sessions, clocks and the OPC UA server, and owns
their lifecycle.

Every background task runs in the daemon's TaskGroup. Shutdown runs in stages
(clocks, publisher, server), each with a timeout that logs what was still
running when it expires.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog

from twin_server.config.loader import LoadedConfig
from twin_server.config.schema import SessionConfig
from twin_server.engine.clock import Clock
from twin_server.engine.session import Session, SessionSettings
from twin_server.models.base import Value
from twin_server.opcua.server import OpcUaServer

log = structlog.get_logger(__name__)


class DaemonState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: seconds each shutdown stage may take before we log what is stuck and move on
STAGE_TIMEOUT = 5.0


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
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def endpoint_url(self) -> str:
        assert self.server is not None, "the server is not started"
        return self.server.endpoint_url

    async def wait_ready(self) -> None:
        """Return once the endpoint is bound and every session is served."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask ``run`` to shut down (safe to call from a signal handler)."""
        self._stop.set()

    async def run(self, *, install_signal_handlers: bool = False,
                  on_ready: Callable[[Daemon], Awaitable[None] | None] | None = None) -> None:
        config = self.loaded.config
        self.server = server = OpcUaServer(config.server, endpoint=self.endpoint)
        if install_signal_handlers:
            self._install_signal_handlers()
        await server.start()
        try:
            for twin in self.loaded.twins.values():
                await server.add_twin(twin)
            for name, scfg in config.sessions.items():
                session = Session(name, self.loaded.twins[scfg.twin], session_settings(
                    scfg, self.loaded.session_parameters.get(name, {})))
                clock = Clock(session)
                self.sessions[name] = _Running(session, clock)
                await server.add_session(session, clock)
            async with asyncio.TaskGroup() as tg:
                for running in self.sessions.values():
                    running.task = tg.create_task(running.clock.run(),
                                                  name=f"clock:{running.session.name}")
                publisher = tg.create_task(server.publish_forever(), name="publisher")
                for name, scfg in config.sessions.items():
                    if scfg.autostart:
                        self.sessions[name].session.start()
                # The address space is built: what is allocated now lives as long as
                # the process, so keep it out of the collector's full passes (a full
                # collection of asyncua's node objects stalls the loop for 100s of ms).
                gc.collect()
                gc.freeze()
                self.state = DaemonState.RUNNING
                self._ready.set()
                log.info("daemon_ready", endpoint=server.endpoint_url,
                         sessions=len(self.sessions), twins=len(self.loaded.twins))
                if on_ready is not None:
                    result = on_ready(self)
                    if result is not None:
                        await result
                await self._stop.wait()
                self.state = DaemonState.STOPPING
                log.info("daemon_stopping")
                await _stop_stage("clocks", [r.task for r in self.sessions.values() if r.task])
                await _stop_stage("publisher", [publisher])
        finally:
            self.state = DaemonState.STOPPING
            await _with_timeout("server", server.stop())
            self.state = DaemonState.STOPPED
            log.info("daemon_stopped")

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal_received", signal=sig.name)
        self.stop()


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
