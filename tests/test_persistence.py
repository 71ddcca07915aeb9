"""Sessions and run-time twins survive a restart: saved to a real SQLite file, loaded
by new store and session objects, they carry on exactly where they stopped."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from twin_server.engine.manager import SessionManager
from twin_server.engine.session import RunState, Session, SessionSettings, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import InvalidArgument, InvalidState, WorkerCrashed
from twin_server.history import HistoryStore
from twin_server.models.base import Kind
from twin_server.persistence import (
    RESTARTED,
    Snapshots,
    client_sessions,
    decode_session,
    encode_session,
    fingerprint,
    forget_session,
    load_state,
    recreate,
    resume,
    save_hosted,
    save_state,
    save_twin,
    stored_twins,
)
from twin_server.runtime import HostedSession, LocalHost
from twin_server.runtime.compile import parse_config
from twin_server.runtime.served import ServedSession
from twin_server.runtime.sinks import Pacer

PLANT = """
[twins.plant]
connections = [
    "setpoint.output -> controller.setpoint",
    "tank.level -> controller.measurement",
    "controller.output -> tank.inflow",
]
[twins.plant.components.setpoint]
model = "step"
parameters = { initial = 0.5, final = 1.0, step_time = 0.5 }
[twins.plant.components.tank]
model = "water_tank"
parameters = { area = AREA, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }
[twins.plant.components.controller]
model = "pid"
parameters = { kp = 0.2, ki = 0.004, output_min = 0.0, output_max = 0.05 }
"""

EXTRA = """
[twins.lag]
[twins.lag.components.tank]
model = "water_tank"
"""

SETTINGS = SessionSettings(step_size=0.01, realtime_factor=1.0, publish_rate=10.0)
KP = VarKey("controller", Kind.PARAMETER, "kp")
SETPOINT = VarKey("controller", Kind.INPUT, "setpoint")


@functools.cache
def twins(area: float = 0.5) -> dict[str, TwinDefinition]:
    return parse_config(PLANT.replace("AREA", repr(area))).twins


def populate(manager: SessionManager) -> None:
    """A running config session, a suspended client one with overrides and a forced
    input, a fork running flat out, a halted one and a Ready one."""
    cfg = manager.create("plant", "cfg", None, SETTINGS, origin="config")
    cfg.start()
    for _ in range(37):
        cfg.tick()
    cfg.write(KP, 0.35)
    cli = manager.create("plant", "cli", {"tank": {"area": 0.7}}, SETTINGS)
    cli.step(12)
    cli.write(SETPOINT, 1.25)
    manager.fork("cfg", "frk", 0.0)
    frk = manager.get("frk")
    for _ in range(5):
        frk.tick()
    halted = manager.create("plant", "hlt", None, SETTINGS)
    halted.step(3)
    halted.halt()
    manager.create("plant", "rdy", None, SETTINGS)


async def reopen(path: Path) -> HistoryStore:
    return await HistoryStore.open(path, batch_interval=0.05)


def restart(state_sessions: dict[str, object], manager: SessionManager,
            state: object) -> None:
    """What the daemon does at start: config sessions from the config, then the stored
    client sessions, each resumed from its snapshot."""
    cfg = manager.create("plant", "cfg", None, SETTINGS, origin="config")
    resume(cfg, state_sessions.get("cfg"), autostart=True)  # type: ignore[arg-type]
    for stored in client_sessions(state):  # type: ignore[arg-type]
        recreate(manager, stored)


class _Records:
    """``persistence.HostedSessions`` over a fixed list (as the daemon's registry gives)."""

    def __init__(self, records: list[ServedSession]) -> None:
        self._records = records

    def records(self) -> list[ServedSession]:
        return self._records


class TestSaveAndResume:
    async def test_sessions_resume_exactly_where_they_stopped(self, tmp_path: Path) -> None:
        """New store and session objects: identical values, sim time, run state and
        real-time factor, and the next ticks give bit-identical results."""
        path = tmp_path / "history.db"
        before = SessionManager(twins())
        populate(before)
        async with await reopen(path) as store:
            result = await save_state(store, before)
        assert sorted(result.saved) == ["cfg", "cli", "frk", "hlt", "rdy"]
        assert result.without_snapshot == ()

        after = SessionManager(twins())
        async with await reopen(path) as store:
            state = await load_state(store)
        assert {n: s.origin for n, s in state.sessions.items()} == {
            "cfg": "config", "cli": "client", "frk": "client", "hlt": "client",
            "rdy": "client"}
        restart(state.sessions, after, state)  # type: ignore[arg-type]
        for name, old in before.sessions.items():
            new = after.get(name)
            assert new.values() == old.values(), name
            assert (new.sim_time, new.step_count, new.state, new.realtime_factor) == \
                (old.sim_time, old.step_count, old.state, old.realtime_factor), name
            assert new.forced() == old.forced(), name
            assert after.origin(name) == before.origin(name)
        assert after.get("frk").realtime_factor == 0.0
        assert after.get("cli").read(VarKey("tank", Kind.PARAMETER, "area")) == 0.7
        for name in ("cfg", "frk"):
            old, new = before.get(name), after.get(name)
            for _ in range(20):
                old.tick()
                new.tick()
            assert new.values() == old.values()

    async def test_a_changed_definition_starts_fresh(self, tmp_path: Path) -> None:
        """A snapshot of a twin whose config changed is skipped with a warning."""
        path = tmp_path / "history.db"
        before = SessionManager(twins())
        populate(before)
        async with await reopen(path) as store:
            await save_state(store, before)
            state = await load_state(store)
        changed = SessionManager(twins(area=0.9))
        session = changed.create("plant", "cfg", None, SETTINGS, origin="config")
        with capture_logs() as logs:
            outcome = resume(session, state.sessions["cfg"], autostart=False)
        assert outcome == "skipped"
        assert session.step_count == 0 and session.state is RunState.READY
        assert [e["event"] for e in logs] == ["session_snapshot_skipped"]
        assert "changed since the snapshot" in logs[0]["reason"]
        # a session step size the snapshot was not taken at: also a changed definition
        other = Session("cfg", twins()["plant"], SessionSettings(step_size=0.02))
        with capture_logs():
            assert resume(other, state.sessions["cfg"]) == "skipped"

    async def test_autostart_and_fresh_sessions(self) -> None:
        """Nothing stored: fresh, and started if the config says autostart; a Ready
        snapshot with autostart starts too."""
        manager = SessionManager(twins())
        session = manager.create("plant", "new", None, SETTINGS, origin="config")
        assert resume(session, None, autostart=True) == "fresh"
        assert session.state is RunState.RUNNING
        ready = manager.create("plant", "rdy", None, SETTINGS)
        stored = decode_session("rdy", encode_session(ready, "client"))
        again = SessionManager(twins()).create("plant", "rdy", None, SETTINGS)
        assert resume(again, stored, autostart=True) == "restored"
        assert again.state is RunState.RUNNING

    async def test_session_that_cannot_snapshot_is_saved_without(self, tmp_path: Path
                                                                 ) -> None:
        """A session that refuses a snapshot is saved without one and comes back fresh,
        with a warning that says why."""
        manager = SessionManager(twins())
        session = manager.create("plant", "bad", None, SETTINGS)
        session.step(4)

        def refuse() -> None:
            raise InvalidState("cannot Snapshot session 'bad': it halted on a fault")

        session.snapshot = refuse  # type: ignore[method-assign,assignment]
        async with await reopen(tmp_path / "h.db") as store:
            result = await save_state(store, manager)
            state = await load_state(store)
        assert result.without_snapshot == ("bad",)
        stored = state.sessions["bad"]
        assert stored.snapshot is None and "halted on a fault" in stored.problem
        with capture_logs() as logs:
            back = recreate(SessionManager(twins()), stored)
        assert back is not None and back.step_count == 0 and back.state is RunState.READY
        assert logs[0]["event"] == "session_snapshot_missing"

    async def test_a_session_halted_on_a_crash_comes_back_halted_on_it(self) -> None:
        """A session Halted on its worker's crash is saved with the fault and comes back
        Halted on it (the message saying it was before the restart, once however many
        restarts), never started, even with autostart: no crash loop."""
        manager = SessionManager(twins())
        session = manager.create("plant", "crashed", None, SETTINGS, origin="config")
        session.start()
        for _ in range(7):
            session.tick()
        session.halt_on_fault(WorkerCrashed(
            "session 'crashed': its worker died of SIGSEGV", session="crashed",
            component="tank", tick=7, signal="SIGSEGV", exit_code=-11, pid=42))
        stored = decode_session("crashed", encode_session(session, "config"))
        for _restart in range(2):
            assert stored.state is RunState.HALTED and stored.snapshot is None
            again = SessionManager(twins()).create("plant", "crashed", None, SETTINGS,
                                                   origin="config")
            assert resume(again, stored, autostart=True) == "faulted"
            fault = again.fault
            assert again.state is RunState.HALTED and isinstance(fault, WorkerCrashed)
            assert (fault.signal, fault.exit_code, fault.pid, fault.component, fault.tick,
                    fault.hung) == ("SIGSEGV", -11, 42, "tank", 7, False)
            assert str(fault) == RESTARTED + "session 'crashed': its worker died of SIGSEGV"
            stored = decode_session("crashed", encode_session(again, "config"))

    async def test_deleted_sessions_are_forgotten(self, tmp_path: Path) -> None:
        """What is saved is what is live: a deleted session's state goes at the next save
        (or at once with forget_session)."""
        manager = SessionManager(twins())
        populate(manager)
        async with await reopen(tmp_path / "h.db") as store:
            await save_state(store, manager)
            manager.delete("cli")
            result = await save_state(store, manager)
            assert result.deleted == ("cli",)
            await forget_session(store, "rdy")
            assert sorted(await store.load_snapshots()) == ["cfg", "frk", "hlt"]

    async def test_session_deleted_while_saving_is_skipped(self, tmp_path: Path) -> None:
        """A hosted session deleted while the others are saved is skipped, no error logged."""
        host = LocalHost(lambda name, event: None)
        records = []
        for name in ("kept", "gone"):
            await host.create(name, twins()["plant"], SETTINGS)
            hosted = HostedSession(host, name)
            records.append(ServedSession(name, twins()["plant"], SETTINGS, "config",
                                         hosted, Pacer(hosted, ())))
        await host.delete("gone")  # (after the saver listed the records)
        store = await HistoryStore.open(tmp_path / "state.db")
        try:
            with capture_logs() as logs:
                result = await save_hosted(store, _Records(records))
            assert result.saved == ("kept",)
            assert [e for e in logs if e["log_level"] == "error"] == []
            assert set(await store.load_snapshots()) == {"kept"}
        finally:
            await store.close()
            await host.aclose()

    async def test_unreadable_state_is_reported_not_raised(self, tmp_path: Path) -> None:
        """A damaged saved session is listed as unreadable; the rest loads."""
        manager = SessionManager(twins())
        manager.create("plant", "ok", None, SETTINGS)
        async with await reopen(tmp_path / "h.db") as store:
            await save_state(store, manager)
            await store.save_snapshot("junk", b"not a session")
            with capture_logs():
                state = await load_state(store)
        assert list(state.sessions) == ["ok"]
        assert "not a twin-server session" in state.unreadable["junk"]

    def test_fingerprint_covers_definition_and_overrides(self) -> None:
        """The fingerprint moves with the twin and the session's overrides, not with the
        real-time factor or publish rate."""
        plant = twins()["plant"]
        base = fingerprint(plant, SETTINGS)
        assert fingerprint(plant, SessionSettings(step_size=0.01, realtime_factor=0.0,
                                                  publish_rate=50.0)) == base
        assert fingerprint(twins(area=0.9)["plant"], SETTINGS) != base
        assert fingerprint(plant, SessionSettings(
            step_size=0.01, parameters={"tank": {"area": 0.7}})) != base


class TestTwins:
    async def test_run_time_twins_come_back(self, tmp_path: Path) -> None:
        """A stored twin is compiled again; one the config now defines, or one that no
        longer compiles, is skipped with a warning."""
        async with await reopen(tmp_path / "h.db") as store:
            await save_twin(store, "lag", EXTRA)
            await save_twin(store, "plant", EXTRA.replace("lag", "plant"))
            await save_twin(store, "broken", EXTRA.replace("lag", "broken")
                            .replace("water_tank", "no_such_model"))
            state = await load_state(store)
        with capture_logs() as logs:
            back = stored_twins(state, twins())
        assert [(t.name, text) for t, text in back] == [("lag", EXTRA)]
        skipped = {e["twin"]: e["reason"] for e in logs if e["event"] == "stored_twin_skipped"}
        assert set(skipped) == {"plant", "broken"}
        assert "config's wins" in skipped["plant"] and "no_such_model" in skipped["broken"]
        manager = SessionManager(twins())
        manager.define_twin(back[0][0])
        assert manager.create("lag", "x").twin.name == "lag"


class TestSnapshots:
    async def test_periodic_saves(self, tmp_path: Path) -> None:
        """run() saves every session every interval; save() once more at stop."""
        manager = SessionManager(twins())
        session = manager.create("plant", "s", None, SETTINGS)
        async with await reopen(tmp_path / "h.db") as store:
            snapshots = Snapshots(store, manager, 0.05)
            task = asyncio.create_task(snapshots.run())
            await asyncio.sleep(0.12)
            task.cancel()
            await asyncio.wait([task])
            assert snapshots.last is not None and snapshots.last.saved == ("s",)
            session.step(7)
            await snapshots.save()
            state = await load_state(store)
        assert state.sessions["s"].step_count == 7

    def test_interval_must_not_be_negative(self, tmp_path: Path) -> None:
        """A negative interval is refused; 0 saves only at stop."""
        with pytest.raises(InvalidArgument, match="snapshot interval"):
            Snapshots(None, SessionManager(twins()), -1.0)  # type: ignore[arg-type]
