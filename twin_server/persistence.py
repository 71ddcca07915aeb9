"""Sessions and run-time twins that survive a restart, kept in the history store.

At stop, and every ``[history].snapshot_interval`` seconds while running, every
session is saved: its ``SessionSnapshot`` (states, parameters in effect,
forced inputs, step count, run state, real-time factor) inside an envelope
that also says where the session came from (``config`` or ``client``), its
twin, its settings and a fingerprint of its definition. Twins defined at run
time (DefineTwin) are saved with their TOML when they are defined. At start the
daemon loads all of it and:

* defines the stored twins again (a name the config now defines wins: the
  stored one is skipped with a warning);
* creates the stored client sessions again, with their settings;
* restores every session, config and client, from its snapshot, and resumes
  those that were Running (a Halted one is halted again; a Ready one with
  ``autostart`` starts, as it would have).

Decisions:

* A snapshot applies only to the definition it was taken of: the twin's
  components, models, configured parameters, initial values, inputs,
  connections, the model variables, the step size and the session's own
  parameter overrides are fingerprinted. A snapshot whose fingerprint differs
  (someone edited the config) is skipped with a ``session_snapshot_skipped``
  warning and the session starts fresh; so is one that does not restore for
  any other reason (a model whose state no longer fits).
* Simulated time resumes at the snapshot's; the wall time the daemon was down
  is not simulated. A crash loses what happened since the last snapshot (at
  most ``snapshot_interval`` seconds of simulation), a graceful stop nothing.
* A session Halted on a fault (a model's, or its worker's death: a segfault in
  an FMU, a hang) is saved with that fault and, where the host keeps one, the
  last snapshot from before it (``SessionHost.recovery_snapshot``: a worker
  host's; none in-process). It comes back Halted on the same fault, the
  message saying it happened before the restart: from that snapshot, else
  from its definition; never started, whatever ``autostart`` says (no crash
  loop: a client decides, with Reset or Restore). The daemon saves such a
  session at once when the fault happens (``save_session``), not at the next
  ``snapshot_interval``, so that a daemon killed right after does not resume
  it Running into the same crash.
* A session that cannot be snapshotted otherwise (an FMU that cannot
  serialise its state) is saved without a snapshot: a client session comes
  back Ready, from its definition, and the warning says why.
* What is saved is what is live: ``save_state`` deletes the saved state of
  sessions that no longer exist (deleted or expired), unless told otherwise.

Two kinds of source: the engine's ``SessionManager`` (``Session`` objects in this
process: offline use) and the daemon's hosted sessions (``HostedSessions``: the
snapshot is asked of the session's host, in this process or a worker;
``save_hosted``, ``create_resumed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import struct
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from twin_server.config.fmu_files import NO_FOLDERS, FmuFolders
from twin_server.engine.manager import SessionManager
from twin_server.engine.session import RunState, Session, SessionSettings, SessionSnapshot
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    InvalidArgument,
    NotFound,
    SessionFault,
    TwinServerError,
    WorkerCrashed,
)
from twin_server.history import HistoryStore
from twin_server.runtime.compile import parse_twin
from twin_server.runtime.host import HostedSession, SessionHost

log = structlog.get_logger(__name__)

Origin = Literal["config", "client"]

#: the first bytes of a saved session, then one byte of format, then the header length
_MAGIC = b"twin-server session\n"
FORMAT = 1
_LENGTH = struct.Struct("<I")


class SessionSource(Protocol):
    """What ``save_state`` needs of the daemon's sessions (``SessionManager`` has it)."""

    @property
    def sessions(self) -> Mapping[str, Session]: ...

    def origin(self, name: str) -> Origin: ...


@dataclass(frozen=True, slots=True)
class StoredSession:
    """One saved session: enough to create it again and put it back where it was."""

    name: str
    origin: Origin
    twin: str
    settings: SessionSettings
    fingerprint: str
    state: RunState
    step_count: int
    saved_at: float  # wall time, seconds since the epoch
    snapshot: SessionSnapshot | None
    #: why there is no snapshot ("" if there is one)
    problem: str = ""
    #: the fault it was Halted on when saved (it comes back Halted on it)
    fault: SessionFault | None = None


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything ``load_state`` found."""

    twins: dict[str, str]  # name -> TOML text (DefineTwin's definition)
    sessions: dict[str, StoredSession]
    #: saved sessions that could not be read (name -> why); their rows stay until saved over
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SaveResult:
    saved: tuple[str, ...]  # sessions saved (with or without a snapshot)
    without_snapshot: tuple[str, ...]  # of which saved without one (see ``problem``)
    deleted: tuple[str, ...]  # stale saved sessions deleted
    seconds: float


# -- fingerprint and envelope ---------------------------------------------------------------


def fingerprint(twin: TwinDefinition, settings: SessionSettings) -> str:
    """A hash of everything a snapshot relies on besides itself (module docstring)."""
    spec = {
        "twin": twin.name,
        "components": [
            {
                "name": c.name, "model": c.model,
                "parameters": dict(c.parameters), "initial": dict(c.initial),
                "inputs": dict(c.inputs),
                "options": {k: repr(v) for k, v in c.options.items()},
                "variables": [(v.name, str(v.kind), str(v.datatype)) for v in c.variables],
            }
            for c in twin.components
        ],
        "connections": [str(c) for c in twin.connections],
        "step_size": repr(float(settings.step_size)),
        "overrides": {c: dict(p) for c, p in (settings.parameters or {}).items()},
    }
    text = json.dumps(spec, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _settings_dict(settings: SessionSettings) -> dict[str, Any]:
    return {
        "step_size": settings.step_size, "realtime_factor": settings.realtime_factor,
        "publish_rate": settings.publish_rate, "overrun_policy": settings.overrun_policy,
        "autostart": settings.autostart,
        "parameters": {c: dict(p) for c, p in (settings.parameters or {}).items()},
    }


def encode_session(session: Session, origin: Origin, *, now: float | None = None) -> bytes:
    """The envelope of ``session``: a JSON header and, if it can be taken and
    serialised, its snapshot. Never raises for a session that cannot be
    snapshotted: the header's ``problem`` says why instead."""
    return _encode(session, origin, now)[0]


def _encode(session: Session, origin: Origin, now: float | None) -> tuple[bytes, str]:
    problem = ""
    body = b""
    try:
        body = session.snapshot().to_bytes()
    except TwinServerError as exc:  # InvalidState (faulted), NotSupported (an FMU)
        problem = str(exc)
    return _envelope(origin, session.twin, session.settings, session.state,
                     session.step_count, now, body, problem, session.fault), problem


def _envelope(origin: Origin, twin: TwinDefinition, settings: SessionSettings,
              state: RunState, step_count: int, now: float | None, body: bytes,
              problem: str, fault: SessionFault | None = None) -> bytes:
    header = {
        "format": FORMAT, "origin": origin, "twin": twin.name,
        "settings": _settings_dict(settings),
        "fingerprint": fingerprint(twin, settings),
        "state": str(state), "step_count": step_count,
        "saved_at": time.time() if now is None else now, "problem": problem,
        "fault": None if fault is None else _fault_fields(fault),
    }
    head = json.dumps(header, sort_keys=True).encode()
    return _MAGIC + bytes([FORMAT]) + _LENGTH.pack(len(head)) + head + body


class HostedRecord(Protocol):
    """What saving needs of one of the daemon's sessions (``runtime.served.ServedSession``)."""

    @property
    def name(self) -> str: ...

    @property
    def origin(self) -> Origin: ...

    @property
    def twin(self) -> TwinDefinition: ...

    @property
    def settings(self) -> SessionSettings: ...

    @property
    def session(self) -> HostedSession: ...


class HostedSessions(Protocol):
    """The daemon's sessions, for ``save_hosted`` (``runtime.served.Sessions``)."""

    def records(self) -> Sequence[HostedRecord]: ...


async def encode_hosted(record: HostedRecord, *, now: float | None = None) -> tuple[bytes, str]:
    """``encode_session`` of a hosted session: the snapshot is asked of its host; for a
    session Halted on a fault, its fault and the host's last snapshot from before it.
    A twin of ``LARGE`` components or more is serialised in a thread (its snapshot
    and fingerprint take a second or more for 20,000)."""
    problem = ""
    snapshot: SessionSnapshot | None = None
    hosted = record.session
    fault = hosted.fault()
    if fault is not None:
        snapshot = hosted.recovery_snapshot()
        if snapshot is None:
            problem = f"it halted on a fault before any snapshot was kept: {fault}"
    else:
        try:
            snapshot = await hosted.snapshot()
        except TwinServerError as exc:  # NotSupported (an FMU), a fault meanwhile, crashed
            problem = str(exc)
            fault = hosted.fault()
    frame = hosted.frame()

    def encode() -> bytes:
        body = snapshot.to_bytes() if snapshot is not None else b""
        return _envelope(record.origin, record.twin, record.settings, frame.state,
                         frame.step_count, now, body, problem, fault)

    if len(record.twin.components) >= LARGE:
        return await asyncio.to_thread(encode), problem
    return encode(), problem


#: twins of at least this many components are serialised in a thread
LARGE = 500


#: the fault of a session saved Halted on one, as it comes back after a restart
RESTARTED = "before the daemon restarted: "


def _fault_fields(fault: SessionFault) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": type(fault).__name__, "message": str(fault), "session": fault.session,
        "component": fault.component, "tick": fault.tick}
    if isinstance(fault, WorkerCrashed):
        fields.update(signal=fault.signal, exit_code=fault.exit_code, pid=fault.pid,
                      hung=fault.hung)
    return fields


def _fault_of(fields: Mapping[str, Any] | None) -> SessionFault | None:
    """The fault ``_fault_fields`` saved (a model's: SessionFault; a worker's death:
    WorkerCrashed), its message saying it happened before the restart."""
    if fields is None:
        return None
    message = str(fields["message"])
    if not message.startswith(RESTARTED):
        message = RESTARTED + message
    session, component = str(fields["session"]), str(fields["component"])
    tick = int(fields["tick"])
    if fields["type"] == WorkerCrashed.__name__:
        code = fields.get("exit_code")
        return WorkerCrashed(message, session=session, component=component, tick=tick,
                             signal=str(fields.get("signal", "")),
                             exit_code=None if code is None else int(code),
                             pid=int(fields.get("pid", 0)), hung=bool(fields.get("hung")))
    return SessionFault(message, session=session, component=component, tick=tick)


async def save_session(store: HistoryStore, record: HostedRecord) -> bool:
    """Save one hosted session now (the daemon does when one halts on a fault: a
    restart must find it Halted, not resume it Running into the same fault). False,
    logged, if it could not be saved."""
    try:
        blob, problem = await encode_hosted(record)
        await store.save_snapshot(record.name, blob)
    except Exception as exc:  # (NotFound: deleted meanwhile; the store closing)
        log.error("session_save_failed", session=record.name,
                  error=f"{type(exc).__name__}: {exc}")
        return False
    log.info("session_saved", session=record.name, problem=problem or None)
    return True


def decode_session(name: str, blob: bytes) -> StoredSession:
    """What ``encode_session`` wrote (InvalidArgument for anything else)."""
    start = len(_MAGIC)
    if blob[:start] != _MAGIC:
        raise InvalidArgument(f"saved session {name!r} is not a twin-server session envelope")
    if len(blob) <= start or blob[start] != FORMAT:
        found = blob[start] if len(blob) > start else "none"
        raise InvalidArgument(f"saved session {name!r} has envelope format {found}; this "
                              f"twin-server reads format {FORMAT}")
    try:
        (length,) = _LENGTH.unpack_from(blob, start + 1)
        offset = start + 1 + _LENGTH.size
        header = json.loads(blob[offset:offset + length])
        body = blob[offset + length:]
        raw = header["settings"]
        settings = SessionSettings(
            step_size=float(raw["step_size"]), realtime_factor=float(raw["realtime_factor"]),
            publish_rate=float(raw["publish_rate"]), overrun_policy=str(raw["overrun_policy"]),
            autostart=bool(raw["autostart"]),
            parameters={c: dict(p) for c, p in raw["parameters"].items()} or None)
        origin = header["origin"]
        if origin not in ("config", "client"):
            raise ValueError(f"origin {origin!r}")
        snapshot = SessionSnapshot.from_bytes(body) if body else None
        return StoredSession(
            name=name, origin=origin, twin=str(header["twin"]), settings=settings,
            fingerprint=str(header["fingerprint"]), state=RunState(header["state"]),
            step_count=int(header["step_count"]), saved_at=float(header["saved_at"]),
            snapshot=snapshot, problem=str(header["problem"]),
            fault=_fault_of(header.get("fault")))
    except InvalidArgument as exc:
        raise InvalidArgument(f"saved session {name!r}: {exc}") from None
    except (KeyError, ValueError, TypeError, struct.error) as exc:
        raise InvalidArgument(f"saved session {name!r} is damaged: "
                              f"{type(exc).__name__}: {exc}") from None


# -- save and load ----------------------------------------------------------------------------


async def save_state(store: HistoryStore, sessions: SessionSource, *,
                     keep: Iterable[str] = ()) -> SaveResult:
    """Save every session of ``sessions``; delete saved sessions that no longer exist
    (except those named in ``keep``). Each session is committed on its own, so
    one that fails to save (reported) does not stop the others."""
    started = time.perf_counter()
    live = dict(sessions.sessions)
    saved: list[str] = []
    without: list[str] = []
    now = time.time()
    for name, session in live.items():
        if session.closed:
            continue
        blob, problem = _encode(session, sessions.origin(name), now)
        try:
            await store.save_snapshot(name, blob)
        except Exception as exc:
            log.error("session_save_failed", session=name, error=f"{type(exc).__name__}: {exc}")
            continue
        saved.append(name)
        if problem:
            without.append(name)
    stored = await store.load_snapshots()
    keep = set(keep)
    deleted = [name for name in stored if name not in live and name not in keep]
    for name in deleted:
        await store.delete_snapshot(name)
    result = SaveResult(tuple(saved), tuple(without), tuple(deleted),
                        time.perf_counter() - started)
    log.info("sessions_saved", saved=len(saved), without_snapshot=list(without),
             deleted=deleted, seconds=round(result.seconds, 4))
    return result


async def save_hosted(store: HistoryStore, sessions: HostedSessions, *,
                      keep: Iterable[str] = (),
                      saved_versions: dict[str, tuple[Callable[[], Any], int, str]] | None = None,
                      ) -> SaveResult:
    """``save_state`` for the daemon's hosted sessions. ``saved_versions``, when
    given, is kept up to date with the frame version each session was saved at, and
    a session whose frame has not changed since is not saved again (a Ready session
    of a big twin costs its worker a second per snapshot)."""
    started = time.perf_counter()
    records = sessions.records()
    saved: list[str] = []
    without: list[str] = []
    now = time.time()
    for record in records:
        name = record.name
        try:
            version = record.session.frame().version
            last = saved_versions.get(name) if saved_versions is not None else None
            if last is not None and last[0]() is record and last[1] == version:
                saved.append(name)
                if last[2]:
                    without.append(name)
                continue
            blob, problem = await encode_hosted(record, now=now)
            await store.save_snapshot(name, blob)
            if saved_versions is not None:
                with contextlib.suppress(TypeError):  # (a record without weak references)
                    saved_versions[name] = (weakref.ref(record), version, problem)
        except NotFound:  # deleted (or not hosted yet) while the others were saved
            log.debug("session_save_skipped", session=name, reason="not hosted now")
            continue
        except Exception as exc:
            log.error("session_save_failed", session=name, error=f"{type(exc).__name__}: {exc}")
            continue
        saved.append(name)
        if problem:
            without.append(name)
    live = {r.name for r in records}
    if saved_versions is not None:
        for name in [n for n in saved_versions if n not in live]:
            del saved_versions[name]
    stored = await store.load_snapshots()
    kept = set(keep)
    deleted = [name for name in stored if name not in live and name not in kept]
    for name in deleted:
        await store.delete_snapshot(name)
    result = SaveResult(tuple(saved), tuple(without), tuple(deleted),
                        time.perf_counter() - started)
    log.info("sessions_saved", saved=len(saved), without_snapshot=list(without),
             deleted=deleted, seconds=round(result.seconds, 4))
    return result


async def load_state(store: HistoryStore) -> StoredState:
    """Every saved session and run-time twin; a saved session that cannot be read is
    listed in ``unreadable`` and logged, never raised."""
    twins = await store.load_twins()
    sessions: dict[str, StoredSession] = {}
    unreadable: dict[str, str] = {}
    for name, blob in (await store.load_snapshots()).items():
        try:
            sessions[name] = decode_session(name, blob)
        except InvalidArgument as exc:
            unreadable[name] = str(exc)
            log.warning("session_state_unreadable", session=name, error=str(exc))
    log.info("state_loaded", twins=len(twins), sessions=len(sessions),
             unreadable=len(unreadable))
    return StoredState(twins, sessions, unreadable)


async def save_twin(store: HistoryStore, name: str, definition: str) -> None:
    """Keep a twin defined at run time (its DefineTwin TOML) for the next start."""
    await store.save_twin(name, definition)


async def forget_twin(store: HistoryStore, name: str) -> None:
    await store.delete_twin(name)


async def forget_session(store: HistoryStore, name: str) -> None:
    """Drop a deleted session's saved state now (its recorded history stays)."""
    await store.delete_snapshot(name)


# -- bringing things back ---------------------------------------------------------------------


def stored_twins(state: StoredState, existing: Mapping[str, TwinDefinition], *,
                 fmu: FmuFolders = NO_FOLDERS) -> list[tuple[TwinDefinition, str]]:
    """The stored twins to define again, each with its TOML (skipping, with a
    warning, those whose name the config now takes and those that no longer
    compile, e.g. a model that is gone, or an FMU no longer in ``fmu``'s folders:
    they are checked as DefineTwin checks a client's twin)."""
    result: list[tuple[TwinDefinition, str]] = []
    for name, text in state.twins.items():
        if name in existing:
            log.warning("stored_twin_skipped", twin=name,
                        reason="the config defines a twin of this name; the config's wins")
            continue
        try:
            twin = parse_twin(text, file=f"stored twin {name}", fmu=fmu)
        except Exception as exc:
            log.warning("stored_twin_skipped", twin=name, reason=str(exc))
            continue
        result.append((twin, text))
    return result


def client_sessions(state: StoredState) -> list[StoredSession]:
    """The stored sessions clients created (or forked), in name order."""
    return [s for _, s in sorted(state.sessions.items()) if s.origin == "client"]


def recreate(manager: SessionManager, stored: StoredSession) -> Session | None:
    """Create a stored client session again in ``manager`` and resume it; None (with a
    ``stored_session_skipped`` warning) if it cannot be (its twin is gone, its name is
    taken, the server is full)."""
    try:
        session = manager.create(stored.twin, stored.name, None, stored.settings,
                                 origin="client")
    except TwinServerError as exc:
        log.warning("stored_session_skipped", session=stored.name, twin=stored.twin,
                    reason=str(exc))
        return None
    resume(session, stored)
    return session


def resume(session: Session, stored: StoredSession | None, *, autostart: bool = False) -> str:
    """Put a freshly created, Ready ``session`` back where ``stored`` left it; return
    what happened: ``restored`` (then Running, Suspended or Halted as it was, or
    Ready), ``fresh`` (nothing stored), ``skipped`` (a snapshot of another
    definition, or one that did not restore: the session stays fresh), or
    ``faulted`` (saved Halted on a fault: Halted on it again, from its snapshot if
    that restored, never started). With ``autostart`` a session that ends Ready is
    started, as the config says."""
    outcome = "fresh"
    if stored is not None and stored.snapshot is None and stored.fault is None:
        log.warning("session_snapshot_missing", session=session.name,
                    reason=stored.problem or "saved without a snapshot")
    elif stored is not None and stored.snapshot is not None:
        expected = fingerprint(session.twin, session.settings)
        if stored.fingerprint != expected:
            log.warning("session_snapshot_skipped", session=session.name,
                        reason=f"twin {session.twin.name!r} or the session's settings "
                               f"changed since the snapshot was saved; starting fresh")
            outcome = "skipped"
        else:
            try:
                session.restore(stored.snapshot)
                outcome = "restored"
            except Exception as exc:
                log.warning("session_snapshot_skipped", session=session.name,
                            reason=f"{type(exc).__name__}: {exc}; starting fresh")
                outcome = "skipped"
                if session.fault is not None:  # a model refused the state: start over
                    session.reset()
    if stored is not None and stored.fault is not None:
        session.halt_on_fault(stored.fault)
        log.warning("session_kept_halted", session=session.name, fault=str(stored.fault))
        return "faulted"
    if outcome == "restored":
        assert stored is not None and stored.snapshot is not None
        was = stored.snapshot.state
        if was is RunState.RUNNING:
            session.resume()
        elif was is RunState.HALTED and session.state is RunState.SUSPENDED:
            session.halt()
        log.info("session_resumed", session=session.name, state=str(session.state),
                 step_count=session.step_count, sim_time=session.sim_time,
                 saved_at=stored.saved_at)
    if autostart and session.state is RunState.READY:
        session.start()
    return outcome


async def create_resumed(host: SessionHost, name: str, twin: TwinDefinition,
                         settings: SessionSettings, stored: StoredSession | None, *,
                         isolate: bool = False, keep_faulted: bool = False) -> str:
    """``resume`` for a session created in ``host``: create it there from ``stored``'s
    snapshot (when its fingerprint matches and it restores; else afresh), then put it
    back in the state it was saved in. Returns ``restored``, ``fresh``, ``skipped`` or
    ``faulted`` (as ``resume``: a session saved Halted on a fault is created Halted on
    it); the engine's refusals of the session itself are raised (nothing left behind).
    With ``keep_faulted``, a session whose models fail their first Reset is created
    Halted on that fault (``host.fault(name)``) instead: ``start_failed``."""
    outcome = "fresh"
    snapshot: SessionSnapshot | None = None
    fault = stored.fault if stored is not None else None
    if stored is not None and stored.snapshot is None and fault is None:
        log.warning("session_snapshot_missing", session=name,
                    reason=stored.problem or "saved without a snapshot")
    elif stored is not None and stored.snapshot is not None:
        if stored.fingerprint != fingerprint(twin, settings):
            log.warning("session_snapshot_skipped", session=name,
                        reason=f"twin {twin.name!r} or the session's settings "
                               f"changed since the snapshot was saved; starting fresh")
            outcome = "skipped"
        else:
            snapshot = stored.snapshot
    if snapshot is not None:
        try:
            await host.create(name, twin, settings, snapshot=snapshot, isolate=isolate,
                              fault=fault, keep_faulted=keep_faulted)
            outcome = "restored"
        except Exception as exc:
            log.warning("session_snapshot_skipped", session=name,
                        reason=f"{type(exc).__name__}: {exc}; starting fresh")
            outcome = "skipped"
    if outcome != "restored":
        await host.create(name, twin, settings, isolate=isolate, fault=fault,
                          keep_faulted=keep_faulted)
    failed = host.fault(name)
    if failed is not None and failed is not fault:
        log.error("session_start_failed", session=name, twin=twin.name,
                  component=failed.component, fault=str(failed))
        return "start_failed"
    if fault is not None:
        log.warning("session_kept_halted", session=name, fault=str(fault),
                    from_snapshot=outcome == "restored")
        return "faulted"
    if outcome != "restored":
        return outcome
    assert stored is not None and snapshot is not None
    hosted = HostedSession(host, name)
    was = snapshot.state
    if was is RunState.RUNNING:
        await hosted.resume()
    elif was is RunState.HALTED and hosted.frame().state is RunState.SUSPENDED:
        await hosted.halt()
    frame = hosted.frame()
    log.info("session_resumed", session=name, state=str(frame.state),
             step_count=frame.step_count, sim_time=frame.sim_time, saved_at=stored.saved_at)
    return outcome


class Snapshots:
    """Saves every session every ``interval`` seconds (``run``, in the daemon's
    TaskGroup) and once more on demand at stop (``save``). ``sessions``: the
    engine's (``SessionManager``) or the daemon's hosted ones (``HostedSessions``)."""

    def __init__(self, store: HistoryStore, sessions: SessionSource | HostedSessions,
                 interval: float) -> None:
        if interval < 0:
            raise InvalidArgument(f"snapshot interval must be >= 0 s, 0 = only at stop "
                                  f"(got {interval})")
        self.store = store
        self.sessions = sessions
        self.interval = interval
        self.last: SaveResult | None = None
        self.failures = 0
        #: the frame version each hosted session was last saved at (``save_hosted``)
        self._saved: dict[str, tuple[Callable[[], Any], int, str]] = {}

    async def save(self) -> SaveResult | None:
        try:
            sessions = self.sessions
            if hasattr(sessions, "records"):
                self.last = await save_hosted(
                    self.store, sessions,  # type: ignore[arg-type]
                    saved_versions=self._saved)
            else:
                self.last = await save_state(self.store, sessions)
        except Exception as exc:
            self.failures += 1
            log.error("sessions_save_failed", error=f"{type(exc).__name__}: {exc}")
            return None
        return self.last

    async def run(self) -> None:
        if self.interval == 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            await self.save()
