"""The log as the daemon writes it (``logs.configure``, JSON lines): excerpts of
clients' values, every field bounded, our per-client events rate-limited."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from twin_server import logs
from twin_server.logs import EventRateLimit, excerpt


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root handler's output after ``logs.configure(json=True)`` (tests/conftest.py
    puts logging back afterwards)."""
    logs.configure("info", json=True)
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


class TestExcerpt:
    @pytest.mark.parametrize(("value", "expected"), [
        pytest.param("short", "short", id="short-string"),
        pytest.param("x" * 300, "x" * 200 + "... (300 characters)", id="long-string"),
        pytest.param(b"\x00" * 300, repr(b"\x00" * 201)[:200] + "... (300 long)",
                     id="long-bytes"),
        pytest.param(42, "42", id="number"),
        pytest.param(list(range(100)), repr(list(range(100)))[:200] + "... (390 long)",
                     id="long-list"),
    ])
    def test_excerpt(self, value: object, expected: str) -> None:
        """At most 200 characters of a value, and how long it was when cut."""
        assert excerpt(value) == expected


class TestBoundFields:
    def test_long_field_cut(self, stream: io.StringIO) -> None:
        """A 3 MiB string in an event is written as an excerpt."""
        structlog.get_logger("test").info("something", value="v" * (3 * 1024 * 1024))
        (event,) = lines(stream)
        assert len(stream.getvalue()) < logs.FIELD_LIMIT + 500
        assert str(event["value"]).endswith(f"... ({3 * 1024 * 1024} characters)")

    def test_long_list_cut(self, stream: io.StringIO) -> None:
        """A list of 10,000 long strings is written as its first entries, each cut."""
        structlog.get_logger("test").info("something", values=["w" * 5000] * 10_000)
        (event,) = lines(stream)
        values = event["values"]
        assert isinstance(values, list) and len(values) == logs.ITEMS_LIMIT + 1
        assert len(stream.getvalue()) < (logs.ITEMS_LIMIT + 2) * (logs.FIELD_LIMIT + 50)

    def test_traceback_cut(self, stream: io.StringIO) -> None:
        """A traceback of a deep recursion keeps its start and its end, bounded."""
        def ping(n: int) -> int:  # (two functions: Python does not fold their frames)
            return pong(n + 1)

        def pong(n: int) -> int:
            return ping(n + 1)

        try:
            ping(0)
        except RecursionError:
            structlog.get_logger("test").exception("method_failed")
        (event,) = lines(stream)
        text = str(event["exception"])
        assert len(text) <= logs.EXCEPTION_LIMIT + 200
        assert text.startswith("Traceback") and "left out" in text
        assert "RecursionError" in text[-200:]

    def test_library_record_cut(self, stream: io.StringIO) -> None:
        """A library's record (asyncua's, say) with a client's data in it is cut too."""
        logging.getLogger("asyncua.test").warning("bad request %s", "r" * 100_000)
        (event,) = lines(stream)
        assert len(str(event["event"])) < logs.FIELD_LIMIT + 50


class TestEventRateLimit:
    def test_burst_then_summary(self) -> None:
        """Each client event passes ``burst`` times a window; the next event after the
        window brings one summary of what was held back; other events always pass."""
        now = [0.0]
        limit = EventRateLimit(frozenset({"call_refused"}), burst=3, window=60.0,
                               clock=lambda: now[0])
        passed = 0
        for _ in range(1000):
            try:
                limit(None, "info", {"event": "call_refused"})
                passed += 1
            except structlog.DropEvent:
                pass
        assert passed == 3
        for _ in range(10):
            limit(None, "info", {"event": "session_added"})
        now[0] = 61.0
        with structlog.testing.capture_logs() as captured:
            limit(None, "info", {"event": "session_added"})
        assert captured == [{"event": "log_events_suppressed", "log_level": "warning",
                             "window": 60.0, "burst": 3, "suppressed": 997,
                             "events": {"call_refused": 997}}]
        assert limit.statistics().suppressed == 997
        limit(None, "info", {"event": "call_refused"})  # a new window

    def test_configured_chain(self, stream: io.StringIO) -> None:
        """In the daemon's chain, a flood of one client event writes the burst only."""
        log = structlog.get_logger("test")
        for _ in range(500):
            log.info("login_failed", user="admin", peer="10.0.0.9:5000")
        assert len(lines(stream)) == logs.EVENT_LIMIT.burst
