"""A session: one isolated, deterministic instance of a twin, stepped tick by tick.

Pure and synchronous: no asyncio, no I/O. The clock (``engine.clock``) decides
*when* to call ``tick``; the OPC UA adapter reads values and forwards writes and
method calls; both only through the public methods below.

Stepping (DESIGN.md): at tick k, t = t0 + k*dt. Components run in the twin's
topological order; each input takes the value forced by a client or HIL binding,
else the connected output (of this tick if the source ran earlier in the order,
else of the previous tick), else its configured default.

Run states follow the OPC UA Program state machine:

    Ready --Start--> Running --Suspend--> Suspended --Resume--> Running
    Running|Suspended --Halt--> Halted;  any --Reset--> Ready
    Ready|Suspended --Step(n)--> Suspended (n ticks taken)
    a model fault in any tick --> Halted (``fault`` set)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twin_server.engine.twin import TwinDefinition
from twin_server.models.base import Kind, Model, Value, Variable


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


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something a person should see in the session log (issue: sessions as objects)."""

    kind: str  # "started", "suspended", "reset", "parameter_changed", "fault", ...
    message: str
    severity: int = 100  # OPC UA severity 1..1000


Listener = Callable[[SessionEvent], None]


class Session:
    """One running instance of a twin. API contract (bodies filled in by the engine work).

    Attributes read by the clock and the OPC UA layer:
      name, twin, settings, state (RunState), step_count (int), sim_time (float, t0 + k*dt),
      step_size, realtime_factor, publish_rate, fault (SessionFault | None),
      version (int, bumped whenever any value may have changed: tick, write, reset).
    """

    name: str
    twin: TwinDefinition
    state: RunState
    step_count: int
    version: int

    def __init__(self, name: str, twin: TwinDefinition, settings: SessionSettings) -> None:
        raise NotImplementedError

    # -- introspection ---------------------------------------------------------------
    @property
    def sim_time(self) -> float:
        """t0 + step_count * step_size (t0 = 0), never accumulated."""
        raise NotImplementedError

    def components(self) -> Mapping[str, Model]:
        """Component name -> model instance, in evaluation order."""
        raise NotImplementedError

    def variables(self) -> list[tuple[VarKey, Variable]]:
        """Every variable of every component (inputs, outputs, states, parameters),
        in a stable order: components in evaluation order, then kind, then declaration."""
        raise NotImplementedError

    def read(self, key: VarKey) -> Value:
        raise NotImplementedError

    def values(self) -> dict[VarKey, Value]:
        """The current value of every variable (a fresh dict the caller may keep)."""
        raise NotImplementedError

    # -- writes (each validated first; a refused write changes nothing) -------------
    def write(self, key: VarKey, value: Value) -> Value:
        """Write one variable and return the coerced value.

        INPUT: forces the input (it wins over a connection) until ``release``.
        STATE: overwrites the model's state from the next tick.
        PARAMETER: tunable ones take effect at the next tick; fixed ones raise
        NotWritable while Running and otherwise are stored and applied at Reset.
        OUTPUT: NotWritable. Bad values: TypeMismatch / OutOfRange. Unknown: NotFound.
        """
        raise NotImplementedError

    def release(self, key: VarKey) -> None:
        """Stop forcing an input; it follows its connection or default again."""
        raise NotImplementedError

    def set_realtime_factor(self, factor: float) -> None:
        """0 = as fast as possible; the clock re-anchors its deadlines at the next tick."""
        raise NotImplementedError

    # -- run control (InvalidState with the current state named when not allowed) --
    def start(self) -> None: raise NotImplementedError
    def suspend(self) -> None: raise NotImplementedError
    def resume(self) -> None: raise NotImplementedError
    def halt(self) -> None: raise NotImplementedError

    def reset(self, parameters: Mapping[str, Mapping[str, Value]] | None = None) -> None:
        """Back to Ready at t0 with initial states; pending fixed parameters and the
        given overrides (validated all-or-none) apply."""
        raise NotImplementedError

    def step(self, count: int = 1) -> None:
        """Take ``count`` ticks now (Ready or Suspended; ends Suspended)."""
        raise NotImplementedError

    def tick(self) -> None:
        """Take one tick (the clock calls this while Running). A model that raises
        or returns a non-finite number halts the session with ``fault`` set and
        emits a fault event; no exception escapes."""
        raise NotImplementedError

    # -- observation -----------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every SessionEvent (state changes included);
        returns an unsubscribe function."""
        raise NotImplementedError

    def statistics(self) -> SessionStatistics:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """An immutable snapshot for the Diagnostics nodes (clock figures filled by the clock)."""

    step_count: int
    sim_time: float
    state: RunState
    step_duration_mean: float  # seconds of wall time per tick (model work only)
    step_duration_max: float
