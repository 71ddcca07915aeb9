"""Where the daemon used to live: it is ``twin_server.runtime.daemon`` now (issue #14)."""

from __future__ import annotations

from twin_server.runtime.daemon import (
    SHUTDOWN_STAGES,
    STAGE_TIMEOUT,
    Daemon,
    DaemonState,
    ReloadPlan,
    reload_plan,
    session_settings,
)

__all__ = ["SHUTDOWN_STAGES", "STAGE_TIMEOUT", "Daemon", "DaemonState", "ReloadPlan",
           "reload_plan", "session_settings"]
