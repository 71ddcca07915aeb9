"""Logging set-up: structlog for our events, the stdlib loggers of libraries routed
through the same renderer and capped.

JSON lines when stderr is not a terminal (journald and Docker keep each event
whole), readable colours when it is. asyncua logs every write at INFO and a
traceback per malformed frame, so its loggers are held at WARNING and above.

No client can fill the disk through our log:

* a value a client sent is logged as an ``excerpt`` (its first 200 characters
  and its length), never whole;
* every field of every event is bounded as it is rendered (``bound_fields``):
  a string to ``FIELD_LIMIT`` characters, a traceback to ``EXCEPTION_LIMIT``
  (its start and its end), a list or table to its first ``ITEMS_LIMIT`` entries;
* the events a client can cause at will, one per request (``CLIENT_EVENTS``:
  refused calls, writes and logins, method calls), pass at most ``burst`` times
  a minute each (``EVENT_LIMIT``, set from ``server.limits.log_burst``); the rest
  are counted, and the next event after the minute brings one
  ``log_events_suppressed`` summary. asyncua's own records are limited the same
  way by ``twin_server.security.limits.LogRateLimit``, with the same counter.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

#: third-party loggers and the lowest level they may emit at. asyncua's client side
#: serves the HIL mirror alone, which logs each link's changes of state itself
#: (``hil_link_lost``, ``hil_recovered``, ...): the client's own tracebacks of a PLC
#: that reset the connection ("Publish iteration crashed") and its warnings of a
#: revised subscription (``hil_intervals_revised``) would say it again, at ERROR.
CAPPED_LOGGERS = {"asyncua": logging.WARNING, "asyncua.client": logging.CRITICAL,
                  "aiosqlite": logging.WARNING}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


#: characters of a client's value that an event shows
EXCERPT = 200
#: most characters of one string field of an event (our events and libraries' records)
FIELD_LIMIT = 2000
#: most characters of a formatted traceback (its start and its end are kept)
EXCEPTION_LIMIT = 20_000
#: most entries of a list or table field shown
ITEMS_LIMIT = 50
#: most distinct keys a RateLimit counts per window
MAX_KEYS = 10_000

#: our events a client can cause once per request, rate-limited by EVENT_LIMIT
CLIENT_EVENTS = frozenset({
    "method_called", "method_refused", "method_failed",
    "call_refused", "write_refused", "write_failed", "write_accepted", "service_refused",
    "login_failed", "login_refused", "login_throttled", "login_accepted", "session_refused",
    "session_limit_reached", "subscription_limit_reached", "monitored_item_limit_reached",
    "history_read_refused", "history_read_failed", "connection_closed",
    "client_certificate_rejected", "client_certificate_invalid",
    "client_certificate_mismatch",
})
#: the summary of what EVENT_LIMIT held back in a window
SUPPRESSED_EVENT = "log_events_suppressed"


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """``value`` for a log or a message, at most about ``limit`` characters: a
    string as it is, anything else as its ``repr``; a longer one is cut, and says
    how long it was: ``'{"tank": {"ar... (3145728 characters)'``."""
    if isinstance(value, str):
        text, length = value[: limit + 1], len(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        text, length = repr(bytes(value[: limit + 1])), len(value)
    else:
        text = repr(value)
        length = len(text)
    if len(text) <= limit and length <= limit:
        return text
    return f"{text[:limit]}... ({length} {'characters' if isinstance(value, str) else 'long'})"


@dataclass(frozen=True, slots=True)
class RateStatistics:
    passed: int
    suppressed: int


class RateLimit:
    """At most ``burst`` occurrences of each key per ``window`` seconds; the rest
    are counted. Thread-safe (asyncua also logs from its thread pool).

    ``admit(key)`` says whether one more may pass; ``roll()`` ends the window once
    it is over and returns what was held back in it, per key."""

    def __init__(self, burst: int = 20, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._counts: dict[Hashable, int] = {}
        self._passed = 0
        self._suppressed = 0

    def roll(self) -> dict[Hashable, int]:
        """If the window is over: start a new one and return the keys held back in the
        old one with how many of each (else, or if none was, an empty dict)."""
        with self._lock:
            now = self.clock()
            if now - self._window_start < self.window:
                return {}
            held = {key: count - self.burst for key, count in self._counts.items()
                    if count > self.burst}
            self._counts.clear()
            self._window_start = now
            return held

    def admit(self, key: Hashable) -> bool:
        """Count one occurrence of ``key``: may it pass?"""
        with self._lock:
            if key in self._counts or len(self._counts) < MAX_KEYS:
                count = self._counts[key] = self._counts.get(key, 0) + 1
                allowed = count <= self.burst
            else:
                allowed = False  # a flood of distinct keys: the table stays bounded
            if allowed:
                self._passed += 1
            else:
                self._suppressed += 1
            return allowed

    def reset(self) -> None:
        """Forget the counts and start a window now."""
        with self._lock:
            self._counts.clear()
            self._window_start = self.clock()

    def statistics(self) -> RateStatistics:
        return RateStatistics(self._passed, self._suppressed)


class EventRateLimit(RateLimit):
    """A structlog processor: each of ``events`` passes at most ``burst`` times per
    window, the rest are dropped and counted; the first event of any kind after
    the window brings a ``log_events_suppressed`` warning with the counts."""

    def __init__(self, events: frozenset[str] = CLIENT_EVENTS, burst: int = 20,
                 window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(burst, window, clock)
        self.events = events

    def __call__(self, logger: Any, method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event = event_dict.get("event")
        if event == SUPPRESSED_EVENT:
            return event_dict
        held = self.roll()
        if held:
            # (logged through the chain again: this processor lets it pass)
            structlog.get_logger(__name__).warning(
                SUPPRESSED_EVENT, window=self.window, burst=self.burst,
                suppressed=sum(held.values()), events=held)
        if event in self.events and not self.admit(event):
            raise structlog.DropEvent
        return event_dict


#: the process's limit on CLIENT_EVENTS (``configure`` puts it in the chain;
#: ``twin_server.security`` sets its burst from ``server.limits.log_burst``)
EVENT_LIMIT = EventRateLimit()


#: fields the renderer formats itself (a traceback on a terminal), and
#: ProcessorFormatter's own (``_record``, ...: skipped by their underscore)
_RENDERER_KEYS = frozenset({"exc_info", "stack_info"})


def bound_fields(logger: Any, method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor that bounds every field of an event (see the module's
    docstring), whatever logged it: the last line of defence against an event
    that carries a client's value whole."""
    for key, value in event_dict.items():
        if key == "exception" and isinstance(value, str):
            if len(value) > EXCEPTION_LIMIT:
                half = EXCEPTION_LIMIT // 2
                event_dict[key] = (f"{value[:half]}\n... ({len(value) - 2 * half} characters "
                                   f"of the traceback left out) ...\n{value[-half:]}")
        elif not key.startswith("_") and key not in _RENDERER_KEYS:
            event_dict[key] = _bounded(value, 2)
    return event_dict


def _bounded(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= FIELD_LIMIT else excerpt(value, FIELD_LIMIT)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth > 0 and isinstance(value, Mapping):
        items = list(value.items())
        bounded = {str(k)[:FIELD_LIMIT]: _bounded(v, depth - 1)
                   for k, v in items[:ITEMS_LIMIT]}
        if len(items) > ITEMS_LIMIT:
            bounded["..."] = f"{len(items) - ITEMS_LIMIT} more"
        return bounded
    if depth > 0 and isinstance(value, list | tuple):
        shown = [_bounded(v, depth - 1) for v in value[:ITEMS_LIMIT]]
        if len(value) > ITEMS_LIMIT:
            shown.append(f"... {len(value) - ITEMS_LIMIT} more")
        return shown
    return excerpt(value, FIELD_LIMIT)


def configure(level: str | None = None, *, default: str = "info", json: bool | None = None) -> None:
    """Configure structlog and stdlib logging once for the process.

    ``level`` (the command line) wins over ``$TWIN_SERVER_LOG_LEVEL``, which wins
    over ``default`` (the config file); ``json`` defaults to "stderr is not a terminal".
    """
    name = (level or os.environ.get("TWIN_SERVER_LOG_LEVEL") or default).lower()
    numeric = LEVELS.get(name, logging.INFO)
    if json is None:
        json = not sys.stderr.isatty()

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    EVENT_LIMIT.reset()
    structlog.configure(
        processors=[*shared, EVENT_LIMIT, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # no caching: nothing logs in the tick loop, and cached loggers would keep a
        # configuration past structlog.testing.capture_logs() in tests
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if json else []),
            bound_fields,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    cap_libraries(numeric)


def cap_libraries(level: int) -> None:
    """Hold each of ``CAPPED_LOGGERS`` at its floor, or at ``level`` if that is higher:
    the one place where third-party loggers get their levels."""
    for logger_name, floor in CAPPED_LOGGERS.items():
        logging.getLogger(logger_name).setLevel(max(floor, level))
