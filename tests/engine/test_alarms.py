"""Alarms evaluated by the engine: limits, deadband, delays, methods, and the session's
Snapshot, Restore, Fork and Reset carrying them (``engine/alarms.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from twin_server.engine.alarms import AlarmState, event_id
from twin_server.engine.session import Session, SessionEvent, SessionSettings
from twin_server.engine.snapshot import SessionSnapshot
from twin_server.errors import AlarmRefused, ConfigErrors, NotFound
from twin_server.runtime.compile import parse_config

_TWIN = """
[twins.t]
[twins.t.components.src]
model = "constant"
parameters = {{ value = 0.0 }}
[twins.t.components.flag]
model = "constant"
parameters = {{ value = 0.0 }}
[twins.t.alarms.Level]
variable = "src.output"
{alarm}
"""


def _session(alarm: str, step_size: float = 0.1, name: str = "s") -> tuple[Session, list[Any]]:
    loaded = parse_config(_TWIN.format(alarm=alarm))
    session = Session(name, loaded.twins["t"], SessionSettings(step_size=step_size))
    seen: list[SessionEvent] = []
    session.subscribe(seen.append)
    return session, seen


def _drive(session: Session, values: list[float]) -> None:
    """One tick per value, the source showing it at that tick."""
    for value in values:
        session.set_parameters({"src": {"value": value}})
        session.step(1)


def _alarms(events: list[SessionEvent]) -> list[AlarmState]:
    return [e.alarm for e in events if e.alarm is not None]


class TestLimits:
    def test_high_then_high_high_then_normal(self) -> None:
        """The exclusive limit state follows the value: High, HighHigh, back to normal."""
        session, seen = _session("high = 1.0\nhigh_high = 2.0\nseverity = 600")
        _drive(session, [0.5, 1.5, 2.5, 0.5])
        states = _alarms(seen)
        assert [(s.transition, s.limits) for s in states] == [
            ("active", ("High",)), ("limit", ("HighHigh",)), ("inactive", ())]
        assert [s.severity for s in states] == [600, 800, 600]
        assert [s.tick for s in states] == [2, 3, 4]

    def test_non_exclusive_shows_every_limit(self) -> None:
        """A non-exclusive alarm is in High and HighHigh at once."""
        session, seen = _session("high = 1.0\nhigh_high = 2.0\nexclusive = false")
        _drive(session, [2.5])
        assert _alarms(seen)[-1].limits == ("HighHigh", "High")

    def test_low_limits(self) -> None:
        """Low limits are exceeded below them."""
        session, seen = _session("low = -1.0\nlow_low = -2.0")
        _drive(session, [-1.5, -3.0])
        assert [s.limits for s in _alarms(seen)] == [("Low",), ("LowLow",)]

    def test_deadband_holds_the_limit(self) -> None:
        """Back under the limit by less than the deadband, the alarm stays active."""
        session, seen = _session("high = 1.0\ndeadband = 0.2")
        _drive(session, [1.1, 0.9, 0.85, 0.79])
        assert [(s.transition, s.tick) for s in _alarms(seen)] == [
            ("active", 1), ("inactive", 4)]

    def test_on_delay_ignores_short_excursions(self) -> None:
        """A value past the limit for less than on_delay raises nothing; held, it does."""
        session, seen = _session("high = 1.0\non_delay = 0.3")
        _drive(session, [1.5, 1.5, 0.5, 1.5, 1.5, 1.5, 1.5])
        assert [(s.transition, s.tick) for s in _alarms(seen)] == [("active", 7)]

    def test_off_delay_holds_the_alarm(self) -> None:
        """The return to normal must hold off_delay before the alarm goes inactive."""
        session, seen = _session("high = 1.0\noff_delay = 0.2")
        _drive(session, [1.5, 0.5, 0.5, 0.5])
        assert [(s.transition, s.tick) for s in _alarms(seen)] == [
            ("active", 1), ("inactive", 4)]

    def test_deterministic(self) -> None:
        """The same inputs give the same transitions, EventIds included, on every run."""
        runs = []
        for _ in range(2):
            session, seen = _session("high = 1.0\nhigh_high = 2.0\ndeadband = 0.1\non_delay = 0.1")
            _drive(session, [0.0, 1.2, 1.3, 2.2, 2.3, 1.95, 0.5, 0.5])
            runs.append([(s, event_id("s", s.name, s.sequence)) for s in _alarms(seen)])
        assert runs[0] == runs[1] and runs[0]


class TestMethods:
    def test_acknowledge_confirm_life(self) -> None:
        """Active -> acknowledged -> confirmed; back to normal it is no longer retained."""
        session, seen = _session("high = 1.0")
        _drive(session, [1.5])
        state = _alarms(seen)[-1]
        assert (state.active, state.acked, state.confirmed, state.retain) == (
            True, False, False, True)
        eid = session.alarms.event_id("Level")
        state = session.alarm("Level", "acknowledge", eid, "seen it", "alice")
        assert (state.acked, state.confirmed, state.comment, state.user) == (
            True, False, "seen it", "alice")
        state = session.alarm("Level", "confirm", session.alarms.event_id("Level"), "", "bob")
        assert state.confirmed and state.retain
        _drive(session, [0.0])
        assert not _alarms(seen)[-1].retain

    def test_stale_event_id_refused(self) -> None:
        """Acknowledge naming an older event is BadEventIdUnknown, nothing changed."""
        session, _ = _session("high = 1.0")
        _drive(session, [1.5])
        old = session.alarms.event_id("Level")
        session.alarm("Level", "add_comment", old, "note", "alice")
        with pytest.raises(AlarmRefused) as caught:
            session.alarm("Level", "acknowledge", old, "", "alice")
        assert caught.value.status == "BadEventIdUnknown"
        assert not session.alarm_states()[0].acked

    @pytest.mark.parametrize(("first", "second", "status"), [
        pytest.param("acknowledge", "acknowledge", "BadConditionBranchAlreadyAcked", id="ack2"),
        pytest.param("disable", "acknowledge", "BadConditionDisabled", id="disabled"),
        pytest.param("disable", "disable", "BadConditionAlreadyDisabled", id="disable2"),
    ])
    def test_refusals(self, first: str, second: str, status: str) -> None:
        """A method the condition's state does not allow names the Part 9 status."""
        session, _ = _session("high = 1.0")
        _drive(session, [1.5])
        session.alarm("Level", first)
        with pytest.raises(AlarmRefused) as caught:
            session.alarm("Level", second)
        assert caught.value.status == status

    def test_unknown_alarm(self) -> None:
        """An alarm the session does not have is NotFound, naming those it has."""
        session, _ = _session("high = 1.0")
        with pytest.raises(NotFound, match="its alarms: Level"):
            session.alarm("Nope", "acknowledge")

    def test_disable_then_enable_evaluates_afresh(self) -> None:
        """Disabled, the alarm ignores the value; enabled again, the next tick raises it."""
        session, seen = _session("high = 1.0")
        session.alarm("Level", "disable")
        _drive(session, [1.5])
        assert _alarms(seen)[-1].transition == "disabled"
        session.alarm("Level", "enable")
        _drive(session, [1.5])
        assert [s.transition for s in _alarms(seen)][-2:] == ["enabled", "active"]


class TestShelving:
    def test_timed_shelve_then_expiry(self) -> None:
        """TimedShelve: shelved (its transitions still go out, shelved) until the wall
        clock passes its time; the expiry called early is refused and changes nothing."""
        session, seen = _session("high = 1.0\nhigh_high = 2.0\nmax_time_shelved = 60")
        _drive(session, [1.5])
        state = session.alarm("Level", "timed_shelve", None, "commissioning", "alice",
                              10.0, 1000.0)
        assert (state.transition, state.shelving, state.unshelve_at, state.shelved) == (
            "shelved", "TimedShelved", 1010.0, True)
        assert state.message == "src.output: shelved by alice for 10 s (commissioning)"
        assert seen[-1].message == state.message
        _drive(session, [2.5])
        assert (_alarms(seen)[-1].transition, _alarms(seen)[-1].shelved) == ("limit", True)
        with pytest.raises(AlarmRefused) as caught:
            session.alarm("Level", "expire_shelving", wall=1009.0)
        assert caught.value.status == "BadInvalidState"
        state = session.alarm("Level", "expire_shelving", wall=1010.0)
        assert (state.transition, state.shelving, state.unshelve_at, state.user) == (
            "unshelved", "Unshelved", 0.0, "")
        assert "shelving ended" in state.message

    def test_one_shot_ends_when_inactive(self) -> None:
        """OneShotShelve lasts until the alarm goes inactive (one event: inactive and
        unshelved), at most MaxTimeShelved."""
        session, seen = _session("high = 1.0\nmax_time_shelved = 60")
        _drive(session, [1.5])
        state = session.alarm("Level", "one_shot_shelve", None, "", "alice", 0.0, 1000.0)
        assert (state.shelving, state.unshelve_at) == ("OneShotShelved", 1060.0)
        assert "until it goes inactive (at most 1 min)" in state.message
        _drive(session, [0.0])
        last = _alarms(seen)[-1]
        assert (last.transition, last.active, last.shelving) == ("inactive", False,
                                                                 "Unshelved")

    @pytest.mark.parametrize(("first", "second", "time", "status"), [
        pytest.param(None, "unshelve", 0.0, "BadConditionNotShelved", id="not-shelved"),
        pytest.param("timed_shelve", "timed_shelve", 5.0, "BadConditionAlreadyShelved",
                     id="timed-twice"),
        pytest.param("one_shot_shelve", "one_shot_shelve", 0.0,
                     "BadConditionAlreadyShelved", id="one-shot-twice"),
        pytest.param(None, "timed_shelve", 61.0, "BadShelvingTimeOutOfRange", id="too-long"),
        pytest.param(None, "timed_shelve", 0.0, "BadShelvingTimeOutOfRange", id="zero"),
        pytest.param(None, "timed_shelve", float("nan"), "BadShelvingTimeOutOfRange",
                     id="nan"),
        pytest.param("disable", "timed_shelve", 5.0, "BadConditionDisabled", id="disabled"),
        pytest.param(None, "expire_shelving", 0.0, "BadConditionNotShelved",
                     id="expire-unshelved"),
    ])
    def test_refusals(self, first: str | None, second: str, time: float,
                      status: str) -> None:
        """A shelving method the shelving state does not allow names the Part 9 status,
        and changes nothing."""
        session, _ = _session("high = 1.0\nmax_time_shelved = 60")
        _drive(session, [1.5])
        if first is not None:
            session.alarm("Level", first, None, "", "alice", 5.0, 1000.0)
        before = session.alarm_states()
        with pytest.raises(AlarmRefused) as caught:
            session.alarm("Level", second, None, "", "alice", time, 1000.0)
        assert caught.value.status == status
        assert session.alarm_states() == before

    def test_switch_between_shelvings_and_unshelve(self) -> None:
        """One-shot to timed and back are allowed (the state machine's transitions);
        Unshelve ends either."""
        session, _ = _session("high = 1.0")
        _drive(session, [1.5])
        session.alarm("Level", "one_shot_shelve", wall=1.0)
        assert session.alarm("Level", "timed_shelve", None, "", "", 5.0, 2.0
                             ).shelving == "TimedShelved"
        assert session.alarm("Level", "one_shot_shelve", wall=3.0
                             ).unshelve_at == 3.0 + 8 * 3600
        state = session.alarm("Level", "unshelve", None, "", "bob", 0.0, 4.0)
        assert (state.transition, state.shelving, state.message) == (
            "unshelved", "Unshelved", "src.output: unshelved by bob")

    def test_snapshot_fork_reset_and_disable(self) -> None:
        """Restore (of a snapshot as the store keeps it) and Fork carry the shelving and
        its end time; Reset and Disable end it; an AlarmState pickled before shelving
        existed reads as unshelved."""
        session, seen = _session("high = 1.0")
        _drive(session, [1.5])
        session.alarm("Level", "timed_shelve", None, "", "alice", 30.0, 100.0)
        snap = SessionSnapshot.from_bytes(session.snapshot().to_bytes())  # (as stored)
        assert session.fork("c").alarm_states()[0].unshelve_at == 130.0
        session.reset()
        assert (_alarms(seen)[-1].transition, _alarms(seen)[-1].shelving) == (
            "reset", "Unshelved")
        session.restore(snap)
        assert session.alarm_states()[0].shelving == "TimedShelved"
        session.alarm("Level", "disable")
        assert session.alarm_states()[0].shelving == "Unshelved"
        old = AlarmState.__new__(AlarmState)
        old.__setstate__(session.alarm_states()[0].__getstate__()[:-2])
        assert (old.shelving, old.unshelve_at) == ("Unshelved", 0.0)


class TestSessionState:
    def test_a_method_changes_the_version(self) -> None:
        """An Acknowledge bumps the session's version (its snapshot differs: a worker's
        periodic snapshot of a suspended session is sent again)."""
        session, _ = _session("high = 1.0")
        _drive(session, [1.5])
        before = session.version
        session.alarm("Level", "acknowledge", None, "", "alice")
        assert session.version > before

    def test_snapshot_restore_carry_acks_and_comments(self) -> None:
        """Restore brings back the condition as it was, acknowledgement and comment too."""
        session, seen = _session("high = 1.0")
        _drive(session, [1.5])
        session.alarm("Level", "acknowledge", None, "noted", "alice")
        snap = session.snapshot()
        session.reset()
        assert not session.alarm_states()[0].active
        session.restore(snap)
        state = session.alarm_states()[0]
        assert (state.active, state.acked, state.comment, state.user) == (
            True, True, "noted", "alice")
        assert _alarms(seen)[-1].transition == "restored"

    def test_fork_keeps_alarms(self) -> None:
        """A fork has its source's conditions and goes on from them identically."""
        session, _ = _session("high = 1.0\non_delay = 0.3")
        _drive(session, [1.5, 1.5])  # the delay half run
        child = session.fork("c")
        seen: list[SessionEvent] = []
        child.subscribe(seen.append)
        _drive(child, [1.5, 1.5])
        assert [(s.transition, s.tick) for s in _alarms(seen)] == [("active", 4)]

    def test_reset_returns_to_defined_state(self) -> None:
        """Reset clears an active alarm with an event; a disabled-by-config one stays off."""
        session, seen = _session("high = 1.0")
        _drive(session, [1.5])
        session.reset()
        state = _alarms(seen)[-1]
        assert (state.transition, state.active, state.acked, state.retain) == (
            "reset", False, True, False)

    def test_session_override_replaces_twin_alarm(self) -> None:
        """[sessions.<s>.alarms.<name>] replaces the twin's alarm of that name."""
        loaded = parse_config(_TWIN.format(alarm="high = 1.0") + """
[sessions.s]
twin = "t"
[sessions.s.alarms.Level]
variable = "src.output"
high = 5.0
""")
        overrides = loaded.session_alarms["s"]
        session = Session("s", loaded.twins["t"],
                          SessionSettings(step_size=0.1, alarms=overrides))
        assert session.alarms.definitions[0].limits[0][1] == 5.0


class TestConfig:
    @pytest.mark.parametrize(("alarm", "path", "text"), [
        pytest.param('variable = "src.nope"\nhigh = 1.0', "twins.t.alarms.Bad.variable",
                     "no variable 'nope'", id="unknown-variable"),
        pytest.param('variable = "src.output"\nnormal = false', "twins.t.alarms.Bad.variable",
                     "needs a Boolean", id="off-normal-on-number"),
        pytest.param('variable = "src.output"', "twins.t.alarms.Bad",
                     "needs a limit", id="no-kind"),
        pytest.param('variable = "src.output"\nhigh = 1.0\nhigh_high = 0.5',
                     "twins.t.alarms.Bad", "must fall", id="limits-order"),
        pytest.param('variable = "src.output"\nhigh = 1.0\nmax_time_shelved = 0',
                     "twins.t.alarms.Bad.max_time_shelved", "greater than 0",
                     id="max-time-shelved"),
    ])
    def test_errors_name_file_and_key(self, alarm: str, path: str, text: str) -> None:
        """A bad alarm is reported with its file and key path."""
        toml = _TWIN.format(alarm="high = 1.0") + f"[twins.t.alarms.Bad]\n{alarm}\n"
        with pytest.raises(ConfigErrors) as caught:
            parse_config(toml, file="x.toml")
        found = [str(e) for e in caught.value.exceptions]
        assert any(e.startswith(f"x.toml: {path}") and text in e for e in found), found
