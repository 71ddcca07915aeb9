"""Registry over records that are no engine sessions (as the daemon's hosted ones):
the same rules as SessionManager's (tests/engine/test_manager.py), kept in one place."""

from __future__ import annotations

import dataclasses

import pytest

from tests.engine.conftest import tank_pid_twin
from twin_server.engine.registry import Origin, Registry, Snapshots
from twin_server.engine.session import Session, SessionSettings
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import InvalidState, NotFound, ResourceExhausted


@dataclasses.dataclass(eq=False)
class Plain:
    """A record holding nothing but what the registry needs."""

    name: str
    twin: TwinDefinition
    origin: Origin = "client"
    last_used: float = 0.0
    snapshots: Snapshots = dataclasses.field(default_factory=Snapshots)


class Now:
    def __init__(self) -> None:
        self.time = 0.0

    def __call__(self) -> float:
        return self.time


TWIN = tank_pid_twin()


def registry(**kwargs: object) -> Registry[Plain]:
    return Registry({"tank_pid": TWIN}, **kwargs)  # type: ignore[arg-type]


class TestRecords:
    def test_limit_and_twin_in_use(self) -> None:
        """The session limit and a twin's removal while used refuse as for engine sessions."""
        r = registry(max_sessions=1)
        r.add(Plain("a", TWIN))
        with pytest.raises(ResourceExhausted, match=r"server.max_sessions = 1"):
            r.add(Plain("b", TWIN))
        with pytest.raises(InvalidState, match=r"1 session uses it \(a\); delete it first"):
            r.remove_twin("tank_pid")
        assert r.remove("a").name == "a"
        r.remove_twin("tank_pid")
        assert (r.statistics().sessions_created, r.statistics().sessions_deleted) == (1, 1)

    def test_expiry_by_last_use(self) -> None:
        """add and touch stamp last_used; only idle client records expire."""
        now = Now()
        r = registry(idle_timeout=10.0, now=now)
        r.add(Plain("cfg", TWIN, origin="config"))
        r.add(Plain("cli", TWIN))
        now.time = 8.0
        r.touch("cli")
        now.time = 15.0
        assert (r.expired(), r.idle_for("cli")) == ([], 7.0)
        now.time = 18.5
        assert r.expired() == ["cli"]


class TestSnapshots:
    def test_ids_per_record_never_reused(self) -> None:
        """Each record numbers its snapshots; evicted ids are not given again."""
        r = registry(max_snapshots=2)
        r.add(Plain("a", TWIN))
        session = Session("s", TWIN, SessionSettings())
        snap = session.snapshot()
        session.close()
        assert [r.keep_snapshot("a", snap) for _ in range(3)] == ["1", "2", "3"]
        assert r.snapshot_ids("a") == ["2", "3"]
        assert r.snapshot("a", "3") is snap
        assert r.statistics().snapshots == 2

    def test_unhashable_id_not_found(self) -> None:
        """An id that is no string is NotFound, not a TypeError."""
        r = registry()
        r.add(Plain("a", TWIN))
        with pytest.raises(NotFound, match=r"session 'a' has no snapshot"):
            r.snapshot("a", [1])  # type: ignore[arg-type]
