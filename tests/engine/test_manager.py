"""SessionManager: create, delete, fork, twins, snapshots and expiry with every
refusal; faults stay in their session; parse_parameters."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.conftest import (
    Gain,
    Tracked,
    bits,
    component,
    faulting_twin,
    noisy_loop_twin,
    tank_pid_twin,
    twin,
)
from twin_server.engine.manager import SessionManager, parse_parameters
from twin_server.engine.session import RunState, SessionEvent, SessionSettings, VarKey
from twin_server.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    TypeMismatch,
)
from twin_server.models.base import Kind

KP = VarKey("pid", Kind.PARAMETER, "kp")
AREA = VarKey("tank", Kind.PARAMETER, "area")


class FakeNow:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.time = 100.0

    def __call__(self) -> float:
        return self.time


def manager(**kwargs: Any) -> SessionManager:
    twins = {"tank_pid": tank_pid_twin(), "noisy_loop": noisy_loop_twin()}
    return SessionManager(twins, **kwargs)


@pytest.fixture
def m() -> SessionManager:
    return manager()


STEP = SessionSettings(step_size=0.1)


class TestCreate:
    def test_create_a_ready_client_session(self, m: SessionManager) -> None:
        """create returns a Ready session, listed under its name, client-owned by default."""
        s = m.create("tank_pid", "a")
        assert s.state is RunState.READY
        assert m.sessions == {"a": s}
        assert m.get("a") is s
        assert m.origin("a") == "client"

    def test_config_origin(self, m: SessionManager) -> None:
        """Sessions the daemon creates from the config say so."""
        m.create("tank_pid", "plant", origin="config")
        assert m.origin("plant") == "config"

    def test_parameters_apply(self, m: SessionManager) -> None:
        """Parameters override the twin's and the settings' values, per parameter."""
        settings = SessionSettings(parameters={"tank": {"area": 0.7, "height": 3.0}})
        s = m.create("tank_pid", "a", {"tank": {"area": 2}, "pid": {"kp": 1.5}}, settings)
        assert (s.read(AREA), s.read(KP)) == (2.0, 1.5)
        assert s.read(VarKey("tank", Kind.PARAMETER, "height")) == 3.0

    def test_settings_apply(self, m: SessionManager) -> None:
        """The session takes the given settings."""
        s = m.create("tank_pid", "a", settings=SessionSettings(step_size=0.05))
        assert s.step_size == 0.05

    @pytest.mark.parametrize(
        ("call", "error", "message"),
        [
            pytest.param(
                lambda m: m.create("boiler", "a"),
                NotFound,
                r"no twin named 'boiler' \(twins: tank_pid, noisy_loop\)",
                id="unknown-twin",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a.b"),
                InvalidArgument,
                r"'a.b' cannot be a session name: a name becomes part of NodeIds",
                id="dotted-name",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "1st"),
                InvalidArgument,
                "must start with a letter or '_'",
                id="leading-digit",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", ""),
                InvalidArgument,
                "'' cannot be a session name",
                id="empty-name",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a b"),
                InvalidArgument,
                "only letters, digits and '_'",
                id="space",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "x" * 65),
                InvalidArgument,
                "at most 64 characters",
                id="too-long",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "first"),
                AlreadyExists,
                r"a session named 'first' exists already \(twin 'tank_pid'\)",
                id="duplicate",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a", {"tank": {"area": -1.0}}),
                OutOfRange,
                "parameter 'area' of component 'tank' must be within",
                id="out-of-range",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a", {"tank": {"volume": 1.0}}),
                NotFound,
                r"component 'tank' has no parameter 'volume' \(its parameters: area",
                id="unknown-parameter",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a", {"pump": {"speed": 1.0}}),
                NotFound,
                "session 'a' has no component 'pump' \\(its components: tank, pid\\)",
                id="unknown-component",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a", {"pid": {"reverse": "yes"}}),
                TypeMismatch,
                "parameter 'reverse' of component 'pid'",
                id="type-mismatch",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a", {"pid": 1.0}),
                InvalidArgument,
                "the parameters of component 'pid' must map parameter -> value",
                id="not-a-mapping",
            ),
            pytest.param(
                lambda m: m.create("tank_pid", "a", settings=SessionSettings(step_size=0)),
                InvalidArgument,
                "step_size must be a finite number > 0 s",
                id="bad-settings",
            ),
        ],
    )
    def test_refusals_change_nothing(
        self, m: SessionManager, call: Any, error: type[Exception], message: str
    ) -> None:
        """Each bad argument gets its exception and message; no session appears."""
        first = m.create("tank_pid", "first")
        with pytest.raises(error, match=message):
            call(m)
        assert m.sessions == {"first": first}
        assert m.snapshot_ids("first") == []

    def test_limit(self) -> None:
        """Beyond max_sessions (config and client together): ResourceExhausted naming the
        limit and the config key."""
        m = manager(max_sessions=2)
        m.create("tank_pid", "a", origin="config")
        m.create("tank_pid", "b")
        with pytest.raises(
            ResourceExhausted,
            match=r"cannot create session 'c': the server holds 2 sessions, its limit "
            r"\(server.max_sessions = 2\); delete sessions or raise server.max_sessions",
        ):
            m.create("tank_pid", "c")
        assert list(m.sessions) == ["a", "b"]
        m.delete("b")
        m.create("tank_pid", "c")

    def test_refused_parameters_free_the_models(self, tracked: set[int]) -> None:
        """A session refused for its parameters leaves no model instance open."""
        m = SessionManager({"t": twin("t", component("a", Tracked), component("b", Tracked))})
        with pytest.raises(OutOfRange):
            m.create("t", "s", {"b": {"k": 500.0}})
        assert tracked == set()

    def test_sessions_view_is_read_only(self, m: SessionManager) -> None:
        """``sessions`` and ``twins`` are views the caller cannot change."""
        with pytest.raises(TypeError):
            m.sessions["x"] = None  # type: ignore[index]
        with pytest.raises(TypeError):
            m.twins["x"] = None  # type: ignore[index]


class TestDelete:
    def test_delete_closes_and_forgets(self, tracked: set[int]) -> None:
        """delete closes the session (its models freed) and frees the name."""
        m = SessionManager({"t": twin("t", component("g", Tracked))})
        s = m.create("t", "a")
        m.take_snapshot("a")
        assert m.delete("a") is s
        assert s.closed
        assert tracked == set()
        assert m.sessions == {}
        again = m.create("t", "a")
        assert m.snapshot_ids("a") == []
        assert again is not s

    def test_unknown_session(self, m: SessionManager) -> None:
        """Deleting an unknown session is NotFound naming the known ones."""
        m.create("tank_pid", "a")
        with pytest.raises(NotFound, match=r"no session named 'b' \(sessions: a\)"):
            m.delete("b")
        assert list(m.sessions) == ["a"]

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda m: m.origin("x"), id="origin"),
            pytest.param(lambda m: m.get("x"), id="get"),
            pytest.param(lambda m: m.take_snapshot("x"), id="take_snapshot"),
            pytest.param(lambda m: m.restore_snapshot("x", "1"), id="restore_snapshot"),
            pytest.param(lambda m: m.snapshot_ids("x"), id="snapshot_ids"),
            pytest.param(lambda m: m.idle_for("x"), id="idle_for"),
            pytest.param(lambda m: m.fork("x", "y", 1.0), id="fork"),
        ],
    )
    def test_unknown_session_everywhere(self, m: SessionManager, call: Any) -> None:
        """Every call naming an unknown session is NotFound (sessions: none)."""
        with pytest.raises(NotFound, match=r"no session named 'x' \(sessions: none\)"):
            call(m)


class TestFork:
    def test_fork_matches_source(self, m: SessionManager) -> None:
        """A fork starts in the source's exact state and steps identically."""
        src = m.create("noisy_loop", "src", settings=STEP)
        src.step(37)
        fork = m.fork("src", "ahead", 0.0)
        assert bits(fork.values()) == bits(src.values())
        for _ in range(25):
            src.step(1)
            fork.step(1)
            assert bits(fork.values()) == bits(src.values())

    def test_fork_is_client_owned_at_its_factor(self, m: SessionManager) -> None:
        """A fork of a config session is client-owned and steps at its own factor."""
        m.create("tank_pid", "plant", settings=STEP, origin="config")
        fork = m.fork("plant", "what_if", 10.0)
        assert m.origin("what_if") == "client"
        assert (fork.realtime_factor, m.get("plant").realtime_factor) == (10.0, 1.0)
        assert fork.step_size == 0.1

    @pytest.mark.parametrize(
        ("setup", "state"),
        [
            pytest.param(lambda s: None, RunState.READY, id="ready"),
            pytest.param(lambda s: s.step(3), RunState.SUSPENDED, id="suspended"),
            pytest.param(lambda s: (s.start(), s.tick()), RunState.RUNNING, id="running"),
            pytest.param(lambda s: (s.start(), s.halt()), RunState.SUSPENDED, id="halted"),
        ],
    )
    def test_fork_run_state(self, m: SessionManager, setup: Any, state: RunState) -> None:
        """The fork runs if its source runs; else Suspended (Ready from a Ready source)."""
        src = m.create("tank_pid", "src")
        setup(src)
        assert m.fork("src", "f", 1.0).state is state

    @pytest.mark.parametrize(
        ("call", "error", "message"),
        [
            pytest.param(
                lambda m: m.fork("nope", "f", 1.0),
                NotFound,
                "no session named 'nope'",
                id="unknown-source",
            ),
            pytest.param(
                lambda m: m.fork("src", "src", 1.0),
                AlreadyExists,
                "a session named 'src' exists already",
                id="duplicate",
            ),
            pytest.param(
                lambda m: m.fork("src", "a-b", 1.0),
                InvalidArgument,
                "'a-b' cannot be a session name",
                id="bad-name",
            ),
            pytest.param(
                lambda m: m.fork("src", "f", -1.0),
                InvalidArgument,
                r"the real-time factor must be a finite number >= 0.*\(got -1.0\)",
                id="negative-factor",
            ),
            pytest.param(
                lambda m: m.fork("src", "f", float("nan")),
                InvalidArgument,
                "the real-time factor must be a finite number",
                id="nan-factor",
            ),
        ],
    )
    def test_refusals(
        self, m: SessionManager, call: Any, error: type[Exception], message: str
    ) -> None:
        """A refused fork creates nothing and leaves the source as it was."""
        src = m.create("tank_pid", "src")
        src.step(2)
        before = bits(src.values())
        with pytest.raises(error, match=message):
            call(m)
        assert list(m.sessions) == ["src"]
        assert bits(src.values()) == before

    def test_fork_beyond_limit(self) -> None:
        """A fork counts against max_sessions."""
        m = manager(max_sessions=1)
        m.create("tank_pid", "src")
        with pytest.raises(ResourceExhausted, match=r"server\.max_sessions = 1"):
            m.fork("src", "f", 1.0)

    def test_fork_of_faulted_source_refused(self) -> None:
        """A source halted on a fault cannot be forked (InvalidState: Reset it first)."""
        m = SessionManager({"f": faulting_twin(1)})
        m.create("f", "src").step(3)
        with pytest.raises(InvalidState, match="Reset it first"):
            m.fork("src", "f2", 1.0)
        assert list(m.sessions) == ["src"]


class TestTwins:
    def test_define_and_remove(self, m: SessionManager) -> None:
        """A defined twin can be used, and removed once no session uses it."""
        t = twin("gain_only", component("g", Gain))
        m.define_twin(t)
        assert m.twins["gain_only"] is t
        assert (m.twin_origin("gain_only"), m.twin_origin("tank_pid")) == ("client", "config")
        m.create("gain_only", "a")
        m.delete("a")
        assert m.remove_twin("gain_only") is t
        assert "gain_only" not in m.twins

    def test_define_taken_name(self, m: SessionManager) -> None:
        """Defining a twin under a taken name is AlreadyExists; the old one stays."""
        old = m.twins["tank_pid"]
        with pytest.raises(AlreadyExists, match="a twin named 'tank_pid' exists already"):
            m.define_twin(twin("tank_pid", component("g", Gain)))
        assert m.twins["tank_pid"] is old

    def test_define_bad_name(self, m: SessionManager) -> None:
        """A twin name that cannot be a NodeId part is InvalidArgument."""
        with pytest.raises(InvalidArgument, match="'my twin' cannot be a twin name"):
            m.define_twin(twin("my twin", component("g", Gain)))
        assert "my twin" not in m.twins

    def test_remove_unknown(self, m: SessionManager) -> None:
        """Removing an unknown twin is NotFound naming the known ones."""
        with pytest.raises(NotFound, match=r"no twin named 'x' \(twins: tank_pid, noisy_loop\)"):
            m.remove_twin("x")

    def test_remove_in_use(self, m: SessionManager) -> None:
        """A twin still used by sessions is InvalidState naming them."""
        m.create("tank_pid", "a")
        m.create("tank_pid", "b")
        m.create("noisy_loop", "c")
        with pytest.raises(
            InvalidState, match=r"cannot remove twin 'tank_pid': 2 sessions use it \(a, b\)"
        ):
            m.remove_twin("tank_pid")
        assert "tank_pid" in m.twins


class TestSnapshots:
    def test_take_and_restore(self, m: SessionManager) -> None:
        """take_snapshot returns ids "1", "2", ...; restore_snapshot goes back exactly."""
        s = m.create("noisy_loop", "a", settings=STEP)
        s.step(10)
        first = m.take_snapshot("a")
        at_first = bits(s.values())
        s.step(10)
        second = m.take_snapshot("a")
        s.step(10)
        assert (first, second) == ("1", "2")
        m.restore_snapshot("a", first)
        assert bits(s.values()) == at_first
        m.restore_snapshot("a", first)  # a snapshot stays stored
        assert s.step_count == 10
        assert m.snapshot_ids("a") == ["1", "2"]

    def test_ids_are_per_session(self, m: SessionManager) -> None:
        """Each session numbers its own snapshots."""
        m.create("tank_pid", "a")
        m.create("tank_pid", "b")
        assert [m.take_snapshot(n) for n in ("a", "a", "b")] == ["1", "2", "1"]

    def test_oldest_evicted(self) -> None:
        """Beyond max_snapshots the oldest goes; ids are not reused."""
        m = manager(max_snapshots=3)
        m.create("tank_pid", "a")
        for _ in range(5):
            m.take_snapshot("a")
        assert m.snapshot_ids("a") == ["3", "4", "5"]
        with pytest.raises(NotFound, match=r"no snapshot '1' \(its snapshots: 3, 4, 5; it keeps"):
            m.restore_snapshot("a", "1")

    def test_unknown_id(self, m: SessionManager) -> None:
        """An unknown id is NotFound naming the known ones, and changes nothing."""
        s = m.create("tank_pid", "a")
        s.step(3)
        with pytest.raises(
            NotFound,
            match=r"session 'a' has no snapshot '7' \(its snapshots: none; it keeps "
            r"the latest 32\)",
        ):
            m.restore_snapshot("a", "7")
        assert s.step_count == 3

    def test_snapshot_event(self, m: SessionManager) -> None:
        """Taking a snapshot logs ``snapshot_taken`` with its id and tick."""
        s = m.create("tank_pid", "a", settings=STEP)
        s.step(4)
        seen: list[SessionEvent] = []
        s.subscribe(seen.append)
        m.take_snapshot("a")
        assert [(e.kind, e.message) for e in seen] == [
            ("snapshot_taken", "snapshot 1 taken at tick 4 (t=0.4 s)")
        ]

    def test_restore_refused_while_running(self, m: SessionManager) -> None:
        """Restore while Running is InvalidState; the session keeps running."""
        s = m.create("tank_pid", "a")
        m.take_snapshot("a")
        s.start()
        s.tick()
        with pytest.raises(InvalidState, match="Suspend it first"):
            m.restore_snapshot("a", "1")
        assert (s.state, s.step_count) == (RunState.RUNNING, 1)


class TestExpiry:
    def test_idle_client_session_expires(self) -> None:
        """A client session untouched for more than idle_timeout is listed; touch resets it."""
        now = FakeNow()
        m = manager(idle_timeout=60.0, now=now)
        m.create("tank_pid", "a")
        m.create("tank_pid", "b")
        now.time += 50
        m.touch("b")
        now.time += 10
        assert m.expired() == []  # exactly the timeout is not more than it
        now.time += 0.5
        assert m.expired() == ["a"]
        assert m.idle_for("b") == 10.5
        now.time += 60
        assert m.expired() == ["a", "b"]

    def test_config_sessions_never_expire(self) -> None:
        """Sessions declared in the config are never listed."""
        now = FakeNow()
        m = manager(idle_timeout=1.0, now=now)
        m.create("tank_pid", "plant", origin="config")
        now.time += 1e6
        assert m.expired() == []

    def test_zero_timeout_never_expires(self) -> None:
        """idle_timeout 0 turns expiry off."""
        now = FakeNow()
        m = manager(idle_timeout=0.0, now=now)
        m.create("tank_pid", "a")
        now.time += 1e9
        assert m.expired() == []

    def test_manager_calls_touch(self) -> None:
        """Snapshots, restores and forks count as activity on the session."""
        now = FakeNow()
        m = manager(idle_timeout=10.0, now=now)
        m.create("tank_pid", "a")
        for action in (
            lambda: m.take_snapshot("a"),
            lambda: m.restore_snapshot("a", "1"),
            lambda: m.fork("a", "f", 1.0),
        ):
            now.time += 8
            action()
            assert m.idle_for("a") == 0.0
        now.time += 11
        assert m.expired() == ["a", "f"]

    def test_touch_of_unknown_session_is_ignored(self, m: SessionManager) -> None:
        """touch races deletion harmlessly."""
        m.touch("gone")


class TestFaultIsolation:
    def test_fault_halts_only_its_session(self) -> None:
        """One faulting session among several managed ones leaves the others stepping."""
        m = SessionManager({"f": faulting_twin(3), "ok": faulting_twin(10**9, name="ok")})
        m.create("ok", "one")
        m.create("f", "bad")
        m.create("ok", "two")
        for s in m.sessions.values():
            s.start()
        for _ in range(20):
            for s in m.sessions.values():
                if s.state is RunState.RUNNING:
                    s.tick()
        bad = m.get("bad")
        assert bad.state is RunState.HALTED
        assert bad.fault is not None and (bad.fault.component, bad.fault.tick) == ("bad", 3)
        for name in ("one", "two"):
            s = m.get(name)
            assert (s.state, s.step_count, s.fault) == (RunState.RUNNING, 20, None)


class TestParseParameters:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param('{"tank": {"area": 2.0}}', {"tank": {"area": 2.0}}, id="nested"),
            pytest.param('{"tank.area": 2.0}', {"tank": {"area": 2.0}}, id="flat"),
            pytest.param(
                '{"tank": {"area": 2}, "tank.height": 3, "pid.reverse": true, "pid.mode": "a"}',
                {"tank": {"area": 2, "height": 3}, "pid": {"reverse": True, "mode": "a"}},
                id="mixed",
            ),
            pytest.param("", {}, id="empty"),
            pytest.param("  \n ", {}, id="whitespace"),
            pytest.param("{}", {}, id="empty-object"),
            pytest.param('{"tank": {}}', {"tank": {}}, id="empty-component"),
        ],
    )
    def test_valid(self, text: str, expected: dict[str, Any]) -> None:
        """Nested, flat and mixed objects; empty text or {} is none."""
        assert parse_parameters(text) == expected

    def test_types_kept(self) -> None:
        """Integers stay integers and booleans booleans (the session coerces them)."""
        parsed = parse_parameters('{"a.i": 1, "a.f": 1.5, "a.b": false}')
        assert [type(v) for v in parsed["a"].values()] == [int, float, bool]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param(
                '{"tank": {"area": 2.0,}}',
                r"not valid JSON: Expecting property name enclosed in double quotes at "
                r"line 1, column 23 \(character 22\), near",
                id="trailing-comma",
            ),
            pytest.param(
                '{"tank": {"area" 2.0}}',
                r"Expecting ':' delimiter at line 1, column 18 \(character 17\)",
                id="missing-colon",
            ),
            pytest.param(
                '{\n  "tank": {\n    "area": 2.0\n  }',
                r"Expecting ',' delimiter at line 4, column 4 \(character 33\), at the end",
                id="unclosed-multiline",
            ),
            pytest.param(
                "{'tank': 1}",
                r"Expecting property name enclosed in double quotes at line 1, column 2",
                id="single-quotes",
            ),
            pytest.param("tank.area=2", r"Expecting value at line 1, column 1", id="not-json"),
            pytest.param(
                '{"a.b": 1} x', r"Extra data at line 1, column 12 \(character 11\)", id="extra"
            ),
        ],
    )
    def test_malformed_names_position(self, text: str, message: str) -> None:
        """Malformed JSON is InvalidArgument naming line, column, position and what was
        expected."""
        with pytest.raises(InvalidArgument, match=message):
            parse_parameters(text)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param(
                "[1, 2]", r"must be a JSON object such as .* \(got an array\)", id="array"
            ),
            pytest.param("3", r"\(got the number 3\)", id="number"),
            pytest.param("null", r"\(got null\)", id="null"),
            pytest.param(
                '{"tank": {"area": null}}',
                r"tank.area must be a number, boolean or string \(got null\)",
                id="null-value",
            ),
            pytest.param(
                '{"tank.area": [1]}',
                r"tank.area must be a number, boolean or string \(got an array\)",
                id="array-value",
            ),
            pytest.param(
                '{"tank": {"area": {"v": 1}}}',
                r"tank.area must be a number, boolean or string \(got an object\)",
                id="object-value",
            ),
            pytest.param(
                '{"tank": 2.0}',
                r"'tank' must be a component holding an object of parameters.*"
                r"\(got the number 2.0\)",
                id="component-scalar",
            ),
            pytest.param('{"tank.area": NaN}', "NaN is not valid JSON", id="nan"),
            pytest.param('{"tank.area": Infinity}', "Infinity is not valid JSON", id="infinity"),
            pytest.param(
                '{"tank.area": 1, "tank.area": 2}',
                "the key 'tank.area' appears twice",
                id="duplicate-key",
            ),
            pytest.param(
                '{"tank": {"area": 1}, "tank.area": 2}',
                r"tank.area is given twice \(nested and flat\)",
                id="nested-and-flat",
            ),
            pytest.param('{"a.b.c": 1}', "'a.b.c' must be 'component.parameter'", id="two-dots"),
            pytest.param(
                '{".area": 1}', "'.area' must be 'component.parameter'", id="no-component"
            ),
            pytest.param('{"tank.": 1}', "'tank.' must be 'component.parameter'", id="no-name"),
            pytest.param('{"tank": {"": 1}}', "has an empty parameter name", id="empty-name"),
        ],
    )
    def test_wrong_shapes(self, text: str, message: str) -> None:
        """A non-object, a non-scalar value or a bad key is InvalidArgument naming it."""
        with pytest.raises(InvalidArgument, match=message):
            parse_parameters(text)

    def test_not_a_string(self) -> None:
        """Anything but a string is InvalidArgument."""
        with pytest.raises(InvalidArgument, match="must be a JSON object string"):
            parse_parameters(None)  # type: ignore[arg-type]

    def test_parsed_parameters_feed_create(self, m: SessionManager) -> None:
        """What parse_parameters returns goes straight into create."""
        s = m.create("tank_pid", "a", parse_parameters('{"tank.area": 2, "pid": {"kp": 0.5}}'))
        assert (s.read(AREA), s.read(KP)) == (2.0, 0.5)


class TestStatistics:
    def test_counts(self, m: SessionManager) -> None:
        """statistics() counts twins, sessions by origin, snapshots, creations, deletions."""
        m.create("tank_pid", "plant", origin="config")
        m.create("tank_pid", "a")
        m.fork("a", "b", 1.0)
        m.take_snapshot("a")
        m.take_snapshot("plant")
        m.delete("b")
        stats = m.statistics()
        assert (stats.twins, stats.sessions, stats.client_sessions, stats.max_sessions) == (
            2,
            2,
            1,
            100,
        )
        assert (stats.snapshots, stats.sessions_created, stats.sessions_deleted) == (2, 3, 1)
