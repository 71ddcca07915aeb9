"""The plain values that describe a session: run state, variable addresses,
settings, log events and statistics. Shared by the engine, the clock and the
adapters; ``engine.session`` re-exports them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twin_server.models.base import Kind, Value


class RunState(enum.StrEnum):
    READY = "Ready"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    HALTED = "Halted"


@dataclass(frozen=True, slots=True)
class VarKey:
    """Address of one variable in a session: component, kind, name."""

    component: str
    kind: Kind
    name: str

    @property
    def path(self) -> str:
        """``Components.<component>.<Folder>.<name>``, the NodeId tail below the session."""
        return f"Components.{self.component}.{self.kind.folder}.{self.name}"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    step_size: float = 0.01
    realtime_factor: float = 1.0
    publish_rate: float = 10.0
    overrun_policy: str = "skip"  # "skip" | "catch_up"
    autostart: bool = False
    #: per component: parameter overrides on top of the twin's values
    parameters: Mapping[str, Mapping[str, Value]] | None = None
    #: alarms by name that replace the twin's of that name, or add to them
    #: (``engine.alarms.AlarmDefinition``)
    alarms: Mapping[str, Any] | None = None
    #: faults (``engine.faults.FaultSpec``) active from every Reset on (the config's)
    faults: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something a person should see in the session log (issue: sessions as objects)."""

    kind: str  # "started", "suspended", "reset", "parameter_changed", "fault", ...
    message: str
    severity: int = 100  # OPC UA severity 1..1000
    #: an ``alarm_<transition>`` event's condition (``engine.alarms.AlarmState``)
    alarm: Any = None


Listener = Callable[[SessionEvent], None]

#: OPC UA severities of the events a session emits (1 lowest .. 1000 highest)
SEVERITY_INFO = 100
SEVERITY_CHANGE = 200
SEVERITY_HALT = 400
SEVERITY_FAULT = 900


@dataclass(frozen=True, slots=True)
class StepProgress:
    """Where a Step(count) stands: what a host answers a Step with."""

    count: int  # ticks the Step was asked for
    taken: int  # ticks it has taken so far
    running: bool  # still stepping (in the background); False: completed, cancelled or faulted

    @property
    def remaining(self) -> int:
        """Ticks still to take while it runs (0 once it ended, however it ended)."""
        return self.count - self.taken if self.running else 0


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """An immutable snapshot for the Diagnostics nodes (clock figures filled by the clock)."""

    step_count: int
    sim_time: float
    state: RunState
    step_duration_mean: float  # seconds of wall time per tick (model work only)
    step_duration_max: float
