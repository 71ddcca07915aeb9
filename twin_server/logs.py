"""Logging set-up: structlog for our events, the stdlib loggers of libraries routed
through the same renderer and capped.

JSON lines when stderr is not a terminal (journald and Docker keep each event
whole), readable colours when it is. asyncua logs every write at INFO and a
traceback per malformed frame, so its loggers are held at WARNING and above.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

#: third-party loggers and the lowest level they may emit at
CAPPED_LOGGERS = {"asyncua": logging.WARNING, "aiosqlite": logging.WARNING}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


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
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for logger_name, floor in CAPPED_LOGGERS.items():
        logging.getLogger(logger_name).setLevel(max(floor, numeric))
