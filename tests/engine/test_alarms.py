"""Alarms evaluated by the engine: limits, deadband, delays, methods, and the session's
Snapshot, Restore, Fork and Reset carrying them (``engine/alarms.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from twin_server.engine.alarms import AlarmState, event_id
from twin_server.engine.session import Session, SessionEvent, SessionSettings
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
    ])
    def test_errors_name_file_and_key(self, alarm: str, path: str, text: str) -> None:
        """A bad alarm is reported with its file and key path."""
        toml = _TWIN.format(alarm="high = 1.0") + f"[twins.t.alarms.Bad]\n{alarm}\n"
        with pytest.raises(ConfigErrors) as caught:
            parse_config(toml, file="x.toml")
        found = [str(e) for e in caught.value.exceptions]
        assert any(e.startswith(f"x.toml: {path}") and text in e for e in found), found
