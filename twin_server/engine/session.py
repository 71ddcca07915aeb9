"""A session: one isolated, deterministic instance of a twin, stepped tick by tick.

Pure and synchronous: no asyncio, no I/O. The clock (``runtime.clock``) decides
*when* to call ``tick``; the OPC UA adapter reads values and forwards writes and
method calls; both only through the public methods below.

Stepping (DESIGN.md): at tick k, t = t0 + k*dt. Each input takes the value
forced by a client or HIL binding, else its connected output, else its
configured default. Which tick's output a connection carries is a rule on the
graph, never the order the config declares the components in:

* an input of a component *with state* (no direct feedthrough: a lag, a tank, a
  source, an FMU) takes its source's output at t_k, the value before this tick
  (it advances from t_k to t_k+1 with its inputs held at t_k). Every such input
  is read before any component steps, so these edges are where feedback loops
  are cut, whatever the order;
* an input of a component *with direct feedthrough* (a gain, a sum, a PID)
  takes its source's output of this tick: the twin's order puts every source of
  a feedthrough component before it (``engine.graph``), so a component with
  state has advanced to t_k+1 and an upstream feedthrough one has been
  evaluated from it. A loop of feedthrough components alone is an algebraic
  loop, refused when the twin compiles.

So after a tick every output is the one at t_k+1, and the same config gives
bit-identical results for every order of its components and connections
(``tests/engine/test_order.py``).

Run states follow the OPC UA Program state machine:

    Ready --Start--> Running --Suspend--> Suspended --Resume--> Running
    Running|Suspended --Halt--> Halted;  any --Reset--> Ready
    Ready|Suspended --Step(n)--> Suspended (n ticks taken)
    a model fault in any tick --> Halted (``fault`` set)
    a model that ends the simulation --> Halted (``terminated``; no fault)

Step(n) in slices: ``begin_step(n)`` starts a Step (Ready or Suspended; the
session is Suspended from then on, ``step_started``), ``continue_step(limit)``
takes up to ``limit`` of its ticks (a host calls it in slices of a few ms, so
that a Step of a million ticks holds nothing else up), the last one emits
``step_completed``. ``step(n)`` is both at once. While a Step runs
(``steps_remaining`` > 0) Start, Resume and another Step are refused
(InvalidState naming it); Suspend, Halt, Reset and Restore cancel it
(``step_cancelled``: ticks taken stay taken); a fault ends it.

Decisions beyond the contract:

* Parameters belong to the session: a written parameter (tunable or fixed) keeps
  its value across Reset; Reset brings back the initial *states* and t0, applies
  the pending fixed parameters, then the overrides given to it.
* Forced inputs survive Reset (a HIL binding keeps forcing what it mirrors).
* Each component's input mapping is one dict, reused from tick to tick: a model
  must not keep a reference to it beyond ``step`` (copy what it needs).
* A fault stops the tick at the failing component: components before it in the
  order have advanced, ``step_count`` has not. Only Reset (or Restore) leaves Halted.
* A model that asks to end the simulation (an FMU's terminateSimulation) raises
  ``SimulationEnded`` with its outputs where it stopped: no fault. The tick is
  finished with them (every other component steps, ``step_count`` moves), then the
  session halts with a ``terminated`` event (SEVERITY_HALT) naming the component,
  the time and the request; a running Step ends with it. Only Reset (or Restore)
  leaves Halted, as after Halt.
* Parameter changes are all or none: ``set_parameters`` and ``reset`` validate
  every value first (a fixed parameter while Running is refused too), then apply;
  a model's own cross-parameter check that refuses is rolled back. Each changed
  parameter emits its own ``parameter_changed`` event, as a single write does.
* Snapshot and Restore: ``snapshot()`` works in every state except after a fault
  (the failing tick left the components half advanced: Reset first).
  ``restore()`` is refused while Running (Suspend first) and works from Ready,
  Suspended and Halted (a fault included, which it clears); it ends Suspended,
  or Ready for a snapshot taken in Ready, and emits ``restored``. A snapshot of
  another twin, or of a session with another step size, is InvalidArgument.
* ``fork`` is snapshot + restore into fresh model instances; ``close()`` frees
  every model, ends Halted (so an attached clock stops ticking), emits
  ``closed``; afterwards every method refuses with InvalidState.
* A fault from outside the session (its worker process died while stepping it)
  comes in through ``halt_on_fault``: Halted with ``fault`` set, as a model's own.
* A Reset that fails (the first one, at construction, included) halts the session
  on the fault; the components from the failing one on, whose models did not
  reset, then show their declared outputs and states (``_stand_in``): a parameter
  written to them waits for the next Reset, a state write is refused. The first
  Reset's fault is raised from the constructor unless ``keep_faulted``: then the
  session is built all the same, Halted on it (the daemon's config sessions).
* ``progress``: a host that must say which component was being stepped when its
  process died (a segfault in an FMU's native code leaves no exception to catch)
  hands the session a one-slot buffer (a ``memoryview`` of shared memory); the
  session stores the evaluation index of each component into ``progress[0]``
  just before calling its ``step`` or ``reset``. One store per component; the
  engine does nothing else with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from twin_server.engine import faults as _faults
from twin_server.engine.alarms import AlarmDefinition, AlarmSet, AlarmState
from twin_server.engine.alarms import merge as merge_alarms
from twin_server.engine.faults import FaultSpec, FaultState
from twin_server.engine.snapshot import SNAPSHOT_FORMAT, SessionSnapshot
from twin_server.engine.state import (
    SEVERITY_CHANGE,
    SEVERITY_FAULT,
    SEVERITY_HALT,
    SEVERITY_INFO,
    Listener,
    RunState,
    SessionEvent,
    SessionSettings,
    SessionStatistics,
    StepProgress,
    VarKey,
)
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import (
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    InvalidState,
    NotFound,
    NotSupported,
    NotWritable,
    SessionFault,
    TwinServerError,
    ValueRejected,
)
from twin_server.logs import excerpt
from twin_server.models.base import DataType, Kind, Model, SimulationEnded, Value, Variable

__all__ = [
    "SEVERITY_CHANGE", "SEVERITY_FAULT", "SEVERITY_HALT", "SEVERITY_INFO", "SNAPSHOT_FORMAT",
    "Listener", "RunState", "Session", "SessionEvent", "SessionSettings", "SessionSnapshot",
    "SessionStatistics", "StepProgress", "VarKey",
]

log = structlog.get_logger(__name__)


_KIND_ORDER = (Kind.INPUT, Kind.OUTPUT, Kind.STATE, Kind.PARAMETER)
_OVERRUN_POLICIES = ("skip", "catch_up")


class Progress(Protocol):
    """A one-slot writable buffer (``progress[0] = index``): see the module docstring."""

    def __setitem__(self, index: int, value: int, /) -> None: ...


class _Missing(Exception):
    """Raised inside a tick when a model returns without one of its outputs."""


class _NonFinite(Exception):
    """Raised inside a tick when a model returns NaN or inf; becomes a SessionFault."""

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value


@dataclass(slots=True)
class _Component:
    """Everything the session keeps about one component (built once)."""

    index: int
    name: str
    model: Model
    variables: dict[tuple[Kind, str], Variable]
    #: input name -> (source component index, source port), for connected inputs
    connected: dict[str, tuple[int, str]]
    #: the configured default of every input (config value, else Variable.default)
    defaults: dict[str, Value]
    #: numeric outputs checked for NaN/inf after every step
    numeric_outputs: tuple[str, ...]
    #: every declared output (checked present after reset)
    output_names: tuple[str, ...]
    #: the live input mapping handed to ``step`` (reused every tick)
    inputs: dict[str, Value]
    #: forced input values (client or HIL), winning over connection and default
    forced: dict[str, Value]
    #: the parameter values in effect (the model has them)
    parameters: dict[str, Value]
    #: fixed parameters written while not running, applied at Reset
    pending: dict[str, Value]
    #: the states to show: the model's ``get_states``, or, while a failed Reset left the
    #: model without any, its declared defaults (``_stand_in``)
    get_states: Callable[[], Mapping[str, Value]]
    #: its model did not reset (a Reset failed at it or before it): parameters written
    #: wait for the next Reset, states cannot be written
    stand_in: bool = False


class Session:
    """One running instance of a twin.

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

    def __init__(
        self,
        name: str,
        twin: TwinDefinition,
        settings: SessionSettings,
        *,
        progress: Progress | None = None,
        keep_faulted: bool = False,
    ) -> None:
        """Build the twin's models and Reset them; a model that fails that first Reset
        raises its SessionFault (nothing left behind), unless ``keep_faulted``: then
        the session is kept, Halted with ``fault`` set (the daemon serves a config
        session so, with its fault on its nodes, instead of not starting)."""
        if not (math.isfinite(settings.step_size) and settings.step_size > 0):
            raise InvalidArgument(
                f"session {name!r}: step_size must be a finite number "
                f"> 0 s (got {settings.step_size!r})"
            )
        _check_factor(name, settings.realtime_factor)
        if settings.overrun_policy not in _OVERRUN_POLICIES:
            raise InvalidArgument(
                f"session {name!r}: overrun_policy must be one of "
                f"{', '.join(_OVERRUN_POLICIES)} "
                f"(got {settings.overrun_policy!r})"
            )
        self.name = name
        self.twin = twin
        self.settings = settings
        self.step_size = float(settings.step_size)
        self.realtime_factor = float(settings.realtime_factor)
        self.publish_rate = settings.publish_rate
        self.state = RunState.READY
        self.step_count = 0
        self.version = 0
        #: moves whenever the set of forced inputs changes (an input newly forced, one
        #: released, all of them by Reset, others by Restore): compare, do not do sums
        self.forces = 0
        self.fault: SessionFault | None = None
        #: why a model ended the simulation (the ``terminated`` event's message) while
        #: the session is Halted on that; None otherwise (Reset and Restore clear it)
        self.ended: str | None = None
        #: moves whenever the set of injected faults changes (``engine.faults``)
        self.fault_changes = 0
        #: the injected faults by id, in the order they apply (``engine.faults``)
        self._faults: dict[str, _faults.Active] = {}
        #: by component index: the faults on its inputs, on its outputs
        self._fault_in: dict[int, list[_faults.Active]] = {}
        self._fault_out: dict[int, list[_faults.Active]] = {}
        #: by component index: the model's own outputs of a component with faulted ones
        self._true: dict[int, Mapping[str, Value]] = {}
        #: the first tick at which a fault with a duration ends (None: none will)
        self._next_end: int | None = None
        #: the last automatic fault id's number (f1, f2, ...)
        self._fault_seq = 0
        self._listeners: list[Listener] = []
        #: where the index of the component being stepped is stored (module docstring)
        self._progress: Progress = progress if progress is not None else [0]
        self._duration_sum = 0.0
        self._duration_max = 0.0
        self._duration_count = 0
        #: the latest Step: ticks asked for, taken, and still to take (0: none runs)
        self._step_asked = 0
        self._step_taken = 0
        self._step_left = 0

        self._closed = False
        #: the session's alarms (``engine.alarms``), evaluated after every tick
        self.alarms = AlarmSet(name, merge_alarms(getattr(twin, "alarms", ()), settings.alarms),
                               self.step_size)
        self._components: list[_Component] = []
        self._by_name: dict[str, _Component] = {}
        try:
            self._construct(twin, settings)
            self._inject_configured()
        except SessionFault as exc:
            if keep_faulted and exc is self.fault:  # (Halted on it by _initialise)
                return
            for comp in self._components:
                _close_quietly(self.name, comp)
            raise
        except BaseException:
            for comp in self._components:  # free what was built (FMU instances)
                _close_quietly(self.name, comp)
            raise

    def _construct(self, twin: TwinDefinition, settings: SessionSettings) -> None:
        self._build(twin)
        self._models = types.MappingProxyType({c.name: c.model for c in self._components})
        self._keys: dict[VarKey, tuple[_Component, Variable]] = {}
        #: per component, the names of its inputs, outputs, states and parameters in
        #: the order of ``variables()``: what ``value_list`` reads
        self._names: list[tuple[_Component, tuple[tuple[str, ...], ...]]] = []
        for comp in self._components:
            for kind in _KIND_ORDER:
                for var in comp.model.variables:
                    if var.kind is kind:
                        self._keys[VarKey(comp.name, kind, var.name)] = (comp, var)
            self._names.append((comp, tuple(
                tuple(v.name for v in comp.model.variables if v.kind is kind)
                for kind in _KIND_ORDER)))
        self._positions = {key: i for i, key in enumerate(self._keys)}
        overrides = self._validate_overrides(settings.parameters or {})
        for comp in self._components:
            comp.parameters.update(overrides.get(comp.name, {}))
        #: the latest outputs of each component, by evaluation index
        self._outputs: list[Mapping[str, Value]] = [{} for _ in self._components]
        #: per component: (index, bound step, inputs, links), links = ((input, src, port), ...)
        self._plan: list[
            tuple[
                int,
                Callable[..., Any],
                dict[str, Value],
                tuple[tuple[str, int, str], ...],
                tuple[str, ...],
            ]
        ] = []
        #: component index -> (inputs, links) of each component with state
        self._held: dict[int, tuple[dict[str, Value], tuple[tuple[str, int, str], ...]]] = {}
        self._initialise()

    # -- construction ----------------------------------------------------------------

    def _build(self, twin: TwinDefinition) -> None:
        for index, cdef in enumerate(twin.components):
            model = cdef.instantiate()
            variables = {(v.kind, v.name): v for v in model.variables}
            parameters = dict(cdef.parameters)
            for var in model.variables:
                if var.kind is Kind.PARAMETER:
                    parameters.setdefault(var.name, var.default)
            defaults: dict[str, Value] = {}
            for var in model.variables:
                if var.kind is Kind.INPUT:
                    configured = cdef.inputs.get(var.name, var.default)
                    try:
                        defaults[var.name] = var.coerce(configured)
                    except ValueRejected as exc:
                        raise ConfigError(
                            _located(exc, var, cdef.name),
                            path=f"components.{cdef.name}.inputs.{var.name}",
                        ) from None
            outputs = tuple(v for v in model.variables if v.kind is Kind.OUTPUT)
            comp = _Component(
                index=index,
                name=cdef.name,
                model=model,
                variables=variables,
                connected={},
                defaults=defaults,
                numeric_outputs=tuple(v.name for v in outputs if v.datatype is not DataType.STRING),
                output_names=tuple(v.name for v in outputs),
                inputs=dict(defaults),
                forced={},
                parameters=parameters,
                pending={},
                get_states=model.get_states,
            )
            self._components.append(comp)
            self._by_name[cdef.name] = comp
        for conn in twin.connections:
            source = self._by_name.get(conn.source)
            target = self._by_name.get(conn.target)
            if (
                source is None
                or target is None
                or (Kind.OUTPUT, conn.source_port) not in source.variables
                or (Kind.INPUT, conn.target_port) not in target.variables
            ):
                raise ConfigError(
                    f"connection {conn} names an unknown component or port", path="connections"
                )
            if conn.target_port in target.connected:
                raise ConfigError(
                    f"input {conn.target}.{conn.target_port} is connected twice", path="connections"
                )
            target.connected[conn.target_port] = (source.index, conn.source_port)

    def _validate_overrides(
        self, overrides: Mapping[str, Mapping[str, Value]]
    ) -> dict[str, dict[str, Value]]:
        """Coerce parameter overrides, raising the first refusal (nothing applied)."""
        result: dict[str, dict[str, Value]] = {}
        if not isinstance(overrides, Mapping):
            raise InvalidArgument(
                f"session {self.name!r}: parameters must map component -> parameter -> value "
                f"(got {type(overrides).__name__})"
            )
        for cname, values in overrides.items():
            comp = self._component(cname)
            if not isinstance(values, Mapping):
                raise InvalidArgument(
                    f"session {self.name!r}: the parameters of component {cname!r} must map "
                    f"parameter -> value (got {type(values).__name__} {values!r})"
                )
            for pname, value in values.items():
                var = self._variable(comp, Kind.PARAMETER, pname)
                result.setdefault(cname, {})[pname] = self._coerce(comp, var, value)
        return result

    def _initialise(self) -> None:
        """Reset every model at t0 and rebuild the tick plan; raise SessionFault on failure.

        After a failure (the session Halted on it) the failing component and those after
        it, whose models did not reset, show their declared outputs and states (the
        configured initial ones, else the defaults), so that every read still answers."""
        self.step_count = 0
        progress = self._progress
        for position, comp in enumerate(self._components):
            progress[0] = comp.index
            try:
                comp.model.set_start_inputs(self._start_inputs(comp))
                outputs = comp.model.reset(dict(comp.parameters), dict(self._initial(comp)))
                for oname in comp.output_names:
                    if oname not in outputs:
                        raise _Missing(oname)
                    value = outputs[oname]
                    if oname in comp.numeric_outputs and not math.isfinite(float(value)):
                        raise _NonFinite(oname, value)
            except Exception as exc:
                fault = self._fault(comp, exc, during="reset")
                for rest in self._components[position:]:
                    self._stand_in(rest)
                self._replan()
                for every in self._components:
                    self._refresh_inputs(every)
                raise fault from exc
            self._outputs[comp.index] = outputs
            comp.get_states, comp.stand_in = comp.model.get_states, False
        self._replan()
        for comp in self._components:
            self._refresh_inputs(comp)

    def _stand_in(self, comp: _Component) -> None:
        """Show ``comp``'s declared outputs and states (configured initial ones first)
        in place of its model's: a Reset of it failed."""
        declared = comp.variables.values()
        self._outputs[comp.index] = {v.name: v.default for v in declared
                                     if v.kind is Kind.OUTPUT}
        states = {v.name: v.default for v in declared if v.kind is Kind.STATE}
        states.update((n, v) for n, v in self._initial(comp).items() if n in states)
        comp.get_states = lambda: states
        comp.stand_in = True

    def _dry_reset(self, comp: _Component, parameters: Mapping[str, Value]) -> None:
        """Reset a scratch instance of ``comp``'s model with ``parameters``; raise the
        model's own ValueRejected (located) if it refuses them. Other failures are
        left to the real reset, which faults."""
        try:
            scratch = self.twin.components[comp.index].instantiate()
        except Exception:
            return
        try:
            scratch.set_start_inputs(self._start_inputs(comp))
            scratch.reset(dict(parameters), dict(self._initial(comp)))
        except ValueRejected as exc:
            raise type(exc)(
                f"session {self.name!r}: component {comp.name!r} refuses these parameters "
                f"at Reset: {exc} (nothing was changed)"
            ) from None
        except Exception:  # the real reset reports it as a fault
            pass
        finally:
            scratch.close()

    def _initial(self, comp: _Component) -> Mapping[str, Value]:
        return self.twin.components[comp.index].initial

    @staticmethod
    def _start_inputs(comp: _Component) -> dict[str, Value]:
        """What a model may know of its first tick's inputs before its reset: the
        forced ones and the configured values of those not connected."""
        return {name: comp.forced.get(name, comp.defaults[name]) for name in comp.defaults
                if name in comp.forced or name not in comp.connected}

    def _replan(self, only: _Component | None = None) -> None:
        """Rebuild the tick plan (of ``only``, after its forced inputs changed).

        A component with state reads its connected inputs in ``_held``, before any
        component steps (outputs at t_k); a feedthrough component reads them in its
        ``_plan`` entry, just before it steps (outputs of this tick)."""
        if only is None:
            self._plan, self._held = [], {}
        for comp in self._components if only is None else (only,):
            links = tuple(
                (name, src, port)
                for name, (src, port) in comp.connected.items()
                if name not in comp.forced
            )
            if comp.model.direct_feedthrough:
                self._held.pop(comp.index, None)
            else:
                self._held[comp.index] = (comp.inputs, links)
                links = ()
            entry = (comp.index, comp.model.step, comp.inputs, links, comp.numeric_outputs)
            if only is None:
                self._plan.append(entry)
            else:
                self._plan[comp.index] = entry

    def _refresh_inputs(self, comp: _Component) -> None:
        """Set every input to what the next tick would give it, so reads show it now."""
        for name in comp.inputs:
            if name in comp.forced:
                comp.inputs[name] = comp.forced[name]
            elif name in comp.connected:
                src, port = comp.connected[name]
                comp.inputs[name] = self._outputs[src][port]
            else:
                comp.inputs[name] = comp.defaults[name]
        faults = self._fault_in.get(comp.index)
        if faults:
            self._fault_inputs(comp, faults, self.step_count, in_tick=False)

    # -- introspection ---------------------------------------------------------------

    @property
    def sim_time(self) -> float:
        """t0 + step_count * step_size (t0 = 0), never accumulated."""
        return self.step_count * self.step_size

    def components(self) -> Mapping[str, Model]:
        """Component name -> model instance, in evaluation order (a read-only view)."""
        return self._models

    def variables(self) -> list[tuple[VarKey, Variable]]:
        """Every variable of every component (inputs, outputs, states, parameters),
        in a stable order: components in evaluation order, then kind, then declaration."""
        return [(key, var) for key, (_, var) in self._keys.items()]

    def read(self, key: VarKey) -> Value:
        if self._closed:
            self._require_open("read")
        comp, var = self._lookup(key)
        kind = var.kind
        if kind is Kind.OUTPUT:
            return self._outputs[comp.index][var.name]
        if kind is Kind.INPUT:
            return comp.inputs[var.name]
        if kind is Kind.PARAMETER:
            return comp.pending.get(var.name, comp.parameters[var.name])
        return comp.get_states()[var.name]

    def values(self) -> dict[VarKey, Value]:
        """The current value of every variable (a fresh dict the caller may keep)."""
        if self._closed:
            self._require_open("read")
        result: dict[VarKey, Value] = {}
        states: Mapping[str, Value] = {}
        last: _Component | None = None
        for key, (comp, var) in self._keys.items():
            kind = var.kind
            if kind is Kind.OUTPUT:
                result[key] = self._outputs[comp.index][var.name]
            elif kind is Kind.INPUT:
                result[key] = comp.inputs[var.name]
            elif kind is Kind.PARAMETER:
                result[key] = comp.pending.get(var.name, comp.parameters[var.name])
            else:
                if comp is not last:
                    states, last = comp.get_states(), comp
                result[key] = states[var.name]
        return result

    def value_list(self) -> list[Value]:
        """The current value of every variable in the order of ``variables()``: what
        ``values()`` holds, without building a dict keyed by VarKey (the publisher
        calls this for every session at its publish rate)."""
        if self._closed:
            self._require_open("read")
        result: list[Value] = []
        extend = result.extend
        outputs = self._outputs
        for comp, (inputs, outs, states, parameters) in self._names:
            if inputs:
                given = comp.inputs
                extend([given[n] for n in inputs])
            if outs:
                out = outputs[comp.index]
                extend([out[n] for n in outs])
            if states:
                state = comp.get_states()
                extend([state[n] for n in states])
            if parameters:
                pending, current = comp.pending, comp.parameters
                extend([pending.get(n, current[n]) for n in parameters] if pending
                       else [current[n] for n in parameters])
        return result

    # -- writes (each validated first; a refused write changes nothing) -------------

    def write(self, key: VarKey, value: Value) -> Value:
        """Write one variable and return the coerced value.

        INPUT: forces the input (it wins over a connection) until ``release``.
        STATE: overwrites the model's state from the next tick.
        PARAMETER: tunable ones take effect at the next tick; fixed ones raise
        NotWritable while Running and otherwise are stored and applied at Reset.
        OUTPUT: NotWritable. Bad values: TypeMismatch / OutOfRange. Unknown: NotFound.
        """
        if self._closed:
            self._require_open("write")
        comp, var = self._lookup(key)
        kind = var.kind
        if kind is Kind.OUTPUT:
            raise NotWritable(
                f"output {var.name!r} of component {comp.name!r} is computed "
                f"by the model and cannot be written; force an input instead"
            )
        if kind is Kind.PARAMETER and not var.tunable and self.state is RunState.RUNNING:
            raise NotWritable(
                f"parameter {var.name!r} of component {comp.name!r} is fixed "
                f"while the session runs; suspend or halt it, write it, "
                f"then Reset"
            )
        coerced = self._coerce(comp, var, value)
        if kind is Kind.INPUT:
            newly_forced = var.name not in comp.forced
            comp.forced[var.name] = coerced
            comp.inputs[var.name] = coerced
            if newly_forced:  # a HIL binding rewrites its inputs every cycle: keep that cheap
                self._replan(comp)
                self.forces += 1
            if self._fault_in:
                faults = self._fault_in.get(comp.index)
                if faults:
                    self._fault_inputs(comp, faults, self.step_count, in_tick=False)
        elif kind is Kind.STATE:
            if comp.stand_in:
                raise InvalidState(
                    f"cannot write state {var.name!r} of component {comp.name!r}: its model "
                    f"did not reset (session {self.name!r} is Halted on a fault: "
                    f"{self.fault}); Reset the session first",
                    session=self.name, state=self.state)
            try:
                comp.model.set_states({var.name: coerced})
            except ValueRejected as exc:  # the model's own check (a level above the rim)
                raise type(exc)(_located(exc, var, comp.name)) from None
        elif var.tunable and not comp.stand_in:
            try:
                comp.model.set_parameter(var.name, coerced)
            except ValueRejected as exc:  # the model's own check (output_min > output_max)
                raise type(exc)(_located(exc, var, comp.name)) from None
            comp.parameters[var.name] = coerced
            self._emit(
                "parameter_changed",
                f"parameter {var.name!r} of component {comp.name!r} set to {coerced!r}{_unit(var)}",
                SEVERITY_CHANGE,
            )
        else:
            comp.pending[var.name] = coerced
            self._emit(
                "parameter_changed",
                f"parameter {var.name!r} of component {comp.name!r} set to "
                f"{coerced!r}{_unit(var)}; it applies at the next Reset",
                SEVERITY_CHANGE,
            )
        self.version += 1
        return coerced

    def release(self, key: VarKey) -> bool:
        """Stop forcing an input; it follows its connection or default again. Whether
        it was forced (releasing one that is not changes nothing)."""
        self._require_open("release")
        comp, var = self._lookup(key)
        if var.kind is not Kind.INPUT:
            raise InvalidArgument(
                f"{var.kind} {var.name!r} of component {comp.name!r} is "
                f"not an input; only inputs are forced and released"
            )
        if var.name not in comp.forced:
            return False
        del comp.forced[var.name]
        self._released(comp)
        self._emit(
            "input_released",
            f"input {var.name!r} of component {comp.name!r} released: it follows "
            f"{self._source(comp, var.name)} again",
            SEVERITY_CHANGE,
        )
        return True

    def release_all(self) -> list[VarKey]:
        """Stop forcing every input; the ones that were forced, in component order."""
        self._require_open("release")
        released = self._release_every()
        if released:
            self._emit(
                "inputs_released",
                f"{len(released)} forced input(s) released: "
                f"{', '.join(f'{k.component}.{k.name}' for k in released)}",
                SEVERITY_CHANGE,
            )
        return released

    def _source(self, comp: _Component, name: str) -> str:
        """What an unforced input takes: its connection, else its default."""
        link = comp.connected.get(name)
        if link is None:
            return "its default"
        src, port = link
        return f"{self._components[src].name}.{port}"

    def _released(self, comp: _Component) -> None:
        self._replan(comp)
        self._refresh_inputs(comp)
        self.forces += 1
        self.version += 1

    def _release_every(self) -> list[VarKey]:
        released: list[VarKey] = []
        for comp in self._components:
            if comp.forced:
                released += [VarKey(comp.name, Kind.INPUT, n) for n in comp.forced]
                comp.forced.clear()
                self._released(comp)
        return released

    def forced(self) -> dict[VarKey, Value]:
        """Every input currently forced, with its value (a fresh dict)."""
        return {
            VarKey(c.name, Kind.INPUT, n): v for c in self._components for n, v in c.forced.items()
        }

    def set_realtime_factor(self, factor: float) -> None:
        """0 = as fast as possible; the clock re-anchors its deadlines at the next tick."""
        self._require_open("SetRealtimeFactor")
        _check_factor(self.name, factor)
        self.realtime_factor = float(factor)
        self.version += 1
        self._emit(
            "realtime_factor_changed",
            f"real-time factor set to {self.realtime_factor:g}"
            + (" (as fast as possible)" if factor == 0 else ""),
            SEVERITY_INFO,
        )

    def set_parameters(
        self, overrides: Mapping[str, Mapping[str, Value]]
    ) -> dict[str, dict[str, Value]]:
        """Write several parameters at once, all or none; return the coerced values.

        Every value is checked first (NotFound, TypeMismatch, OutOfRange,
        InvalidArgument for a non-mapping; NotWritable for a fixed parameter while
        Running, naming every such one); then tunable ones take effect at the next
        tick and fixed ones wait for Reset, as with ``write``. A model's own check
        (the PID's output_min <= output_max) is tried in the given order, then in
        reverse, and rolled back if both refuse. One ``parameter_changed`` event
        per parameter, after all are applied.
        """
        self._require_open("SetParameters")
        checked = self._validate_overrides(overrides)
        fixed = [
            f"{cname}.{pname}"
            for cname, values in checked.items()
            for pname in values
            if not self._by_name[cname].variables[(Kind.PARAMETER, pname)].tunable
        ]
        if fixed and self.state is RunState.RUNNING:
            raise NotWritable(
                f"session {self.name!r}: {_plural(len(fixed), 'parameter')} "
                f"{', '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} fixed while "
                f"the session runs; suspend or halt it, set them, then Reset "
                f"(nothing was changed)"
            )
        # the session's own records change only once every model has taken its values
        touched: list[tuple[Model, Any]] = []
        try:
            for cname, values in checked.items():
                comp = self._by_name[cname]
                tunable = {
                    p: v for p, v in values.items()
                    if comp.variables[(Kind.PARAMETER, p)].tunable and not comp.stand_in
                }
                if tunable:
                    saved = _model_snapshot_or_none(comp.model)
                    touched.append((comp.model, saved))
                    _apply_tunable(comp, tunable, saved)
        except ValueRejected:
            for model, saved in reversed(touched):
                if saved is not None:
                    model.restore(saved)
            raise
        for cname, values in checked.items():
            comp = self._by_name[cname]
            for pname, value in values.items():
                var = comp.variables[(Kind.PARAMETER, pname)]
                if var.tunable and not comp.stand_in:
                    comp.parameters[pname] = value
                    message = (
                        f"parameter {pname!r} of component {cname!r} set to {value!r}{_unit(var)}"
                    )
                else:
                    comp.pending[pname] = value
                    message = (
                        f"parameter {pname!r} of component {cname!r} set to {value!r}"
                        f"{_unit(var)}; it applies at the next Reset"
                    )
                self._emit("parameter_changed", message, SEVERITY_CHANGE)
        if checked:
            self.version += 1
        return checked

    # -- injected faults (engine.faults) ------------------------------------------------

    def inject_fault(self, spec: FaultSpec) -> str:
        """Inject a fault from now on (any run state); returns its id.

        InvalidArgument for a malformed spec (kind, parameters, duration, id, a kind
        that does not fit the variable's type), NotFound for an unknown component or
        variable, AlreadyExists for an id in use; nothing changes on a refusal. Emits
        ``fault_injected``."""
        self._require_open("InjectFault")
        active = self._make_fault(spec, from_config=False)
        self._add_faults([active])
        return active.id

    def clear_fault(self, fault_id: str) -> None:
        """End one injected fault now (NotFound naming the active ones); emits
        ``fault_cleared``."""
        self._require_open("ClearFault")
        active = self._faults.get(fault_id) if isinstance(fault_id, str) else None
        if active is None:
            raise NotFound(
                f"session {self.name!r} has no active fault {excerpt(str(fault_id), 100)!r} "
                f"(active: {', '.join(self._faults) or 'none'})")
        del self._faults[fault_id]
        self._faults_changed()
        self._announce_faults([active], [], "by ClearFault")

    def clear_faults(self) -> list[str]:
        """End every injected fault now; their ids (in the order they applied)."""
        self._require_open("ClearFaults")
        cleared = self._drop_faults()
        self._announce_faults(cleared, [], "by ClearFaults")
        return [a.id for a in cleared]

    def faults(self) -> list[FaultState]:
        """The active faults, in the order they apply."""
        self._require_open("read faults")
        return [a.state(self.step_size, self.step_count) for a in self._faults.values()]

    def quality(self) -> dict[int, int]:
        """The OPC UA StatusCode of every value that is not Good, by its index in
        ``variables()``: those of a dropout (``faults.BAD_SENSOR_FAILURE``)."""
        if not self._faults:
            return {}
        tick = self.step_count
        return {
            self._positions[VarKey(self._components[a.component].name, a.var_kind, a.name)]:
                _faults.BAD_SENSOR_FAILURE
            for a in self._faults.values()
            if a.kind is _faults.FaultKind.DROPOUT and a.acts(tick)
        }

    def _make_fault(self, spec: FaultSpec, *, from_config: bool) -> _faults.Active:
        if not isinstance(spec, FaultSpec):
            raise InvalidArgument(
                f"session {self.name!r}: expected a FaultSpec (got {type(spec).__name__})")
        if not isinstance(spec.target, str):
            raise InvalidArgument(f"a fault's target is a string (got {spec.target!r})")
        _faults.check_spec(spec)
        cname, kind, vname = _faults.parse_target(spec.target)
        comp = self._component(cname)
        var = self._variable(comp, kind, vname)
        target = f"{cname}.{kind.folder}.{vname}"
        fault_id, seq = spec.id, self._fault_seq
        if fault_id and fault_id in self._faults:
            raise AlreadyExists(
                f"session {self.name!r} has an active fault {fault_id!r} already "
                f"({_faults.describe(self._faults[fault_id])}); clear it first or pick "
                f"another id")
        while not fault_id or fault_id in self._faults:
            seq += 1
            fault_id = f"f{seq}"
        if kind is Kind.OUTPUT:
            shown = self._outputs[comp.index][vname]
            true = self._true.get(comp.index, self._outputs[comp.index])[vname]
        else:
            shown = comp.inputs[vname]
            true = self._true_input(comp, vname, in_tick=False)
        # (the value entering this fault: what the ones before it on the variable give)
        entering = shown if any(a.target == target for a in self._faults.values()) else true
        active = _faults.make_active(
            spec, fault_id=fault_id, component=comp.index, var_kind=kind, name=vname,
            target=target, variable=var, start=self.step_count, step_size=self.step_size,
            shown=shown, true=entering, from_config=from_config)
        self._fault_seq = seq
        return active

    def _add_faults(self, added: list[_faults.Active]) -> None:
        for active in added:
            self._faults[active.id] = active
        self._faults_changed()
        self._announce_faults([], added, "")

    def _drop_faults(self) -> list[_faults.Active]:
        """Take every fault out (no events); the ones there were."""
        cleared = list(self._faults.values())
        if cleared:
            self._faults.clear()
            self._faults_changed()
        return cleared

    def _inject_configured(self) -> None:
        """The faults of the config (``settings.faults``), from now on."""
        if self.settings.faults and self.fault is None:
            self._add_faults([self._make_fault(spec, from_config=True)
                              for spec in self.settings.faults])

    def _restore_faults(self, snapshot: SessionSnapshot
                        ) -> tuple[list[_faults.Active], list[_faults.Active]]:
        """Take ``snapshot``'s faults; (those that ended, those that started) by it."""
        before = self._faults
        self._faults = {}
        self._true = {}
        self._fault_in, self._fault_out = {}, {}
        for saved in getattr(snapshot, "faults", ()):
            active = _faults.from_snapshot(saved)
            self._faults[active.id] = active
        self._fault_seq = getattr(snapshot, "fault_seq", 0)
        self._faults_changed()
        now = self._faults

        def same(a: _faults.Active, b: _faults.Active | None) -> bool:
            return b is not None and (a.target, a.kind, a.start) == (b.target, b.kind, b.start)

        return ([a for a in before.values() if not same(a, now.get(a.id))],
                [a for a in now.values() if not same(a, before.get(a.id))])

    def _faults_changed(self) -> None:
        """Rebuild the per-component lists after ``_faults`` changed and show the
        values as they are now (outputs and inputs)."""
        fault_in: dict[int, list[_faults.Active]] = {}
        fault_out: dict[int, list[_faults.Active]] = {}
        for active in self._faults.values():
            into = fault_in if active.var_kind is Kind.INPUT else fault_out
            into.setdefault(active.component, []).append(active)
            if active.var_kind is Kind.OUTPUT and active.component not in self._true:
                self._true[active.component] = self._outputs[active.component]
        for index in [i for i in self._true if i not in fault_out]:
            self._outputs[index] = self._true.pop(index)
        # (inputs fed by a faulted output, or faulted themselves, show it at once)
        refresh = (range(len(self._components)) if fault_out or self._fault_out
                   else {*self._fault_in, *fault_in})
        self._fault_in, self._fault_out = fault_in, fault_out
        ends = [a.end for a in self._faults.values() if a.end is not None]
        self._next_end = min(ends) if ends else None
        tick = self.step_count
        for index, faults in fault_out.items():
            self._outputs[index] = self._faulted_outputs(self._true[index], faults, tick)
        for index in refresh:
            self._refresh_inputs(self._components[index])
        self.fault_changes += 1
        self.version += 1

    def _faulted_outputs(self, true: Mapping[str, Value], faults: list[_faults.Active],
                         tick: int) -> dict[str, Value]:
        shown = dict(true)
        dt = self.step_size
        for active in faults:
            name = active.name
            value = shown[name]
            active.observe(tick, value)
            shown[name] = active.apply(value, tick, dt)
        return shown

    def _fault_inputs(self, comp: _Component, faults: list[_faults.Active], tick: int, *,
                      in_tick: bool) -> None:
        """Set ``comp``'s faulted inputs to what the faults make of their true values
        (in a tick a connected one was just read; between ticks it is read here)."""
        inputs = comp.inputs
        dt = self.step_size
        seen: set[str] = set()
        for active in faults:
            name = active.name
            if name not in seen:
                seen.add(name)
                inputs[name] = self._true_input(comp, name, in_tick=in_tick)
            value = inputs[name]
            active.observe(tick, value)
            inputs[name] = active.apply(value, tick, dt)

    def _true_input(self, comp: _Component, name: str, *, in_tick: bool) -> Value:
        if name in comp.forced:
            return comp.forced[name]
        link = comp.connected.get(name)
        if link is None:
            return comp.defaults[name]
        return comp.inputs[name] if in_tick else self._outputs[link[0]][link[1]]

    def _expire_faults(self) -> None:
        tick = self.step_count
        ended = [a for a in self._faults.values() if a.end is not None and a.end <= tick]
        for active in ended:
            del self._faults[active.id]
        self._faults_changed()
        self._announce_faults(ended, [], "")

    def _announce_faults(self, ended: list[_faults.Active], started: list[_faults.Active],
                         cause: str) -> None:
        at = f"at t={self.sim_time:g} s (tick {self.step_count})"
        for active in ended:
            how = (f"cleared {cause}" if cause else
                   f"ended after its {active.duration:g} s")
            self._emit(_faults.FAULT_CLEARED,
                       f"fault {active.id!r} ({_faults.describe(active)}) {how} {at}",
                       _faults.SEVERITY_CLEARED)
        for active in started:
            source = " (from the config)" if active.from_config else ""
            how = f" {cause}" if cause else ""
            self._emit(_faults.FAULT_INJECTED,
                       f"fault {active.id!r} injected{source}{how}: "
                       f"{_faults.describe(active)} {at}",
                       _faults.SEVERITY_INJECTED)

    # -- snapshot, restore, fork, close ------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> SessionSnapshot:
        """A self-contained copy of everything that determines this session's future.

        Any state but a faulted one (InvalidState: the failing tick left the
        components half advanced). NotSupported, naming the component, for a model
        that cannot snapshot (an FMU without canGetAndSetFMUstate).
        """
        self._require_open("Snapshot")
        if self.fault is not None:
            raise InvalidState(
                f"cannot Snapshot session {self.name!r}: it halted on a fault at tick "
                f"{self.fault.tick} (component {self.fault.component!r}), which left its "
                f"components half stepped; Reset it first",
                session=self.name,
                state=self.state,
            )
        models = []
        for comp in self._components:
            try:
                models.append(comp.model.snapshot())
            except NotSupported as exc:
                raise NotSupported(
                    f"session {self.name!r}: component {comp.name!r} cannot be snapshotted: {exc}"
                ) from None
        comps = self._components
        return SessionSnapshot(
            session=self.name,
            twin=self.twin.name,
            layout=_layout(self.twin),
            step_size=self.step_size,
            step_count=self.step_count,
            state=self.state,
            realtime_factor=self.realtime_factor,
            models=tuple(models),
            parameters=tuple(dict(c.parameters) for c in comps),
            pending=tuple(dict(c.pending) for c in comps),
            forced=tuple(dict(c.forced) for c in comps),
            inputs=tuple(dict(c.inputs) for c in comps),
            # (the models' own outputs: the faults are applied to them again on Restore)
            outputs=tuple(dict(self._true.get(i, o)) for i, o in enumerate(self._outputs)),
            alarms=self.alarms.snapshot() if self.alarms else None,
            faults=tuple(_faults.snapshot_of(a) for a in self._faults.values()),
            fault_seq=self._fault_seq,
        )

    def restore(self, snapshot: SessionSnapshot) -> None:
        """Return to exactly the state ``snapshot`` recorded (see the module docstring
        for the run states); the same inputs then give bit-identical results.

        InvalidState while Running; InvalidArgument for a snapshot of another twin
        or step size. A model that fails to restore (an FMU refusing a state it did
        not take) leaves the session Halted with ``fault`` set, and the error,
        naming the component, is raised.
        """
        self._require_open("Restore")
        if self.state is RunState.RUNNING:
            raise InvalidState(
                f"cannot Restore session {self.name!r} in state {self.state} "
                f"(Restore needs Ready, Suspended or Halted); Suspend it first",
                session=self.name,
                state=self.state,
            )
        self._check_compatible(snapshot)
        self._cancel_step("Restore")
        for comp, model_snap in zip(self._components, snapshot.models, strict=True):
            try:
                comp.model.restore(model_snap)
            except Exception as exc:
                self.version += 1
                fault = self._fault(comp, exc, during="Restore")
                if isinstance(exc, TwinServerError):
                    raise type(exc)(
                        f"session {self.name!r}: component {comp.name!r} cannot be restored: {exc}"
                    ) from exc
                raise fault from exc
        for i, comp in enumerate(self._components):
            comp.parameters.clear()
            comp.parameters.update(snapshot.parameters[i])
            comp.pending.clear()
            comp.pending.update(snapshot.pending[i])
            if comp.forced != snapshot.forced[i]:
                self.forces += 1
            comp.forced.clear()
            comp.forced.update(snapshot.forced[i])
            comp.inputs.clear()
            comp.inputs.update(snapshot.inputs[i])
            self._outputs[i] = dict(snapshot.outputs[i])
            comp.get_states, comp.stand_in = comp.model.get_states, False
        self._replan()
        self.step_count = snapshot.step_count
        self.realtime_factor = snapshot.realtime_factor
        self.fault = self.ended = None
        ended, started = self._restore_faults(snapshot)
        self.state = RunState.READY if snapshot.state is RunState.READY else RunState.SUSPENDED
        self.version += 1
        self._emit(
            "restored",
            f"restored to tick {self.step_count} (t={self.sim_time:g} s) from a snapshot "
            f"taken in state {snapshot.state}; now {self.state}",
            SEVERITY_CHANGE,
        )
        for changed in self.alarms.restore(getattr(snapshot, "alarms", None), self.sim_time,
                                           self.step_count):
            self._emit_alarm(changed)
        self._announce_faults(ended, started, "by Restore")

    def fork(self, name: str, settings: SessionSettings | None = None) -> Session:
        """A new session of the same twin in exactly this session's current state, in
        fresh model instances (Suspended, or Ready if this one is Ready; its realtime
        factor is the one in ``settings``, default this session's settings).

        Refusals as ``snapshot``; NotSupported naming the component for a model
        whose state cannot move to another instance (an FMU without
        canSerializeFMUstate). The new session has no listeners yet.
        """
        self._require_open("Fork")
        snap = self.snapshot()
        base = settings if settings is not None else self.settings
        if base.step_size != self.step_size:
            raise InvalidArgument(
                f"cannot fork session {self.name!r} into {name!r} with step size "
                f"{base.step_size!r} s: a fork steps as its source does ({self.step_size!r} s)"
            )
        base = dataclasses.replace(base, parameters=None, autostart=False)
        child = Session(name, self.twin, base)
        try:
            child.restore(snap)
        except BaseException:
            child.close()
            raise
        child.realtime_factor = float(base.realtime_factor)
        self._emit(
            "forked",
            f"forked into session {name!r} at tick {self.step_count} (t={self.sim_time:g} s)",
            SEVERITY_INFO,
        )
        return child

    def close(self) -> None:
        """Free every model (FMU instances); idempotent. The session ends Halted and
        emits ``closed``; afterwards every method refuses with InvalidState."""
        if self._closed:
            return
        self._closed = True
        self._step_left = 0
        for comp in self._components:
            _close_quietly(self.name, comp)
        previous = self.state
        self.state = RunState.HALTED
        self.version += 1
        self._emit("closed", f"closed (was {previous} at tick {self.step_count})", SEVERITY_INFO)
        self._listeners.clear()

    def _check_compatible(self, snapshot: SessionSnapshot) -> None:
        if not isinstance(snapshot, SessionSnapshot):
            raise InvalidArgument(
                f"session {self.name!r}: expected a SessionSnapshot (got {type(snapshot).__name__})"
            )
        if snapshot.twin != self.twin.name or snapshot.layout != _layout(self.twin):
            what = (
                f"twin {snapshot.twin!r}"
                if snapshot.twin != self.twin.name
                else f"a different definition of twin {snapshot.twin!r} (its components: "
                f"{', '.join(f'{c} ({m})' for c, m in snapshot.layout)})"
            )
            raise InvalidArgument(
                f"cannot restore session {self.name!r} (twin {self.twin.name!r}) from a "
                f"snapshot of {what} taken in session {snapshot.session!r}"
            )
        if snapshot.step_size != self.step_size:
            raise InvalidArgument(
                f"cannot restore session {self.name!r} (step size {self.step_size!r} s) from "
                f"a snapshot taken at step size {snapshot.step_size!r} s in session "
                f"{snapshot.session!r}"
            )

    # -- run control (InvalidState with the current state named when not allowed) --

    def start(self) -> None:
        """Ready -> Running. A Suspended session (suspended, or stepped: a Step from
        Ready is Start and Suspend in one, as in an OPC UA Part 10 program) is not
        started again but resumed: the refusal says so."""
        self._require_no_step("Start")
        if self.state is RunState.SUSPENDED and not self._closed:
            raise InvalidState(
                f"cannot Start session {self.name!r} in state Suspended (Start needs "
                f"Ready): it has run to tick {self.step_count} (a Step or a Suspend); "
                f"Resume it to run on, Step it, or Reset it to Ready first",
                session=self.name, state=self.state)
        self._require("Start", RunState.READY)
        self._transition(RunState.RUNNING, "started", "started")

    def suspend(self) -> None:
        """Running -> Suspended; while a Step runs, cancel it (it stays Suspended)."""
        if self._step_left and not self._closed:
            self._cancel_step("Suspend")
            return
        self._require("Suspend", RunState.RUNNING)
        self._transition(RunState.SUSPENDED, "suspended", "suspended")

    def resume(self) -> None:
        self._require_no_step("Resume")
        self._require("Resume", RunState.SUSPENDED)
        self._transition(RunState.RUNNING, "resumed", "resumed")

    def halt(self) -> None:
        self._require("Halt", RunState.RUNNING, RunState.SUSPENDED)
        self._cancel_step("Halt")
        self._transition(RunState.HALTED, "halted", "halted", SEVERITY_HALT)

    def halt_on_fault(self, fault: SessionFault) -> None:
        """Halt on a fault that happened outside the session (the worker process
        stepping it died): from any state, ``fault`` set, a ``fault`` event with its
        message. As after a model's fault, only Reset or Restore leave Halted."""
        self._require_open("halt on a fault")
        self.fault = fault
        self.state = RunState.HALTED
        self._step_left = 0
        self.version += 1
        self._emit("fault", str(fault), SEVERITY_FAULT)

    def reset(self, parameters: Mapping[str, Mapping[str, Value]] | None = None) -> None:
        """Back to Ready at t0 with initial states; pending fixed parameters and the
        given overrides (validated all-or-none) apply.

        All or none: every override is checked first, and a component whose
        parameters change is first reset on a scratch instance, so that a model's
        own refusal (a tank's initial level above its height) raises that
        ValueRejected, naming the component, with nothing changed. If a model's
        ``reset`` fails otherwise, the session is Halted with ``fault`` set and
        SessionFault is raised.
        """
        self._require_open("Reset")
        overrides = self._validate_overrides(parameters or {})
        updates = {
            comp.name: {**comp.pending, **overrides.get(comp.name, {})} for comp in self._components
        }
        for comp in self._components:
            if updates[comp.name]:
                self._dry_reset(comp, {**comp.parameters, **updates[comp.name]})
        self._cancel_step("Reset")
        applied: list[str] = []
        for comp in self._components:
            comp.parameters.update(updates[comp.name])
            comp.pending.clear()
            applied += [f"{comp.name}.{p}={v!r}" for p, v in updates[comp.name].items()]
        # the session's defined state: no input forced (a HIL binding forces its own
        # again: the daemon tells it, Runtime.inputs_released)
        released = [f"{c.name}.{n}" for c in self._components for n in c.forced]
        if released:
            for comp in self._components:
                comp.forced.clear()
            self.forces += 1
        self.fault = self.ended = None
        self.version += 1
        cleared = self._drop_faults()
        self._fault_seq = 0
        self._initialise()
        self.state = RunState.READY
        self._duration_sum = self._duration_max = 0.0
        self._duration_count = 0
        message = "reset to t=0"
        if applied:
            message += f"; parameters applied: {', '.join(applied)}"
        if released:
            message += f"; forced inputs released: {', '.join(released)}"
        self._emit("reset", message, SEVERITY_INFO)
        for changed in self.alarms.reset():
            self._emit_alarm(changed)
        self._announce_faults(cleared, [], "by Reset")
        self._inject_configured()

    def step(self, count: int = 1) -> None:
        """Take ``count`` ticks now (Ready or Suspended; ends Suspended): ``begin_step``
        and ``continue_step`` at once.

        A fault stops the stepping and leaves the session Halted (no exception,
        as with ``tick``; ``fault`` and the fault event tell what happened).
        """
        self.begin_step(count)
        self.continue_step(count)

    def begin_step(self, count: int) -> None:
        """Start a Step of ``count`` ticks (Ready or Suspended, no Step running): the
        session is Suspended from now on and emits ``step_started``; ``continue_step``
        takes the ticks."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(
                f"session {self.name!r}: Step takes a whole number of ticks >= 1 (got {count!r})"
            )
        self._require_no_step("Step")
        self._require("Step", RunState.READY, RunState.SUSPENDED)
        self.state = RunState.SUSPENDED
        self._step_asked = self._step_left = count
        self._step_taken = 0
        self.version += 1
        self._emit("step_started", f"Step({count}) started at t={self.sim_time:g} s "
                   f"(tick {self.step_count})", SEVERITY_INFO)

    def continue_step(self, limit: int) -> int:
        """Take up to ``limit`` ticks of the running Step; returns how many were taken
        (0 when none runs). Its last tick emits ``step_completed``; a fault ends it."""
        left = self._step_left
        todo = min(limit, left)
        advance = self._advance
        for done in range(todo):
            if not advance():  # (a fault, or a model's end, ended the Step)
                if self.fault is None:
                    done += 1  # (the model's end: the tick that ended it was taken)
                self._step_taken += done
                return done
        left -= todo
        self._step_left = left
        self._step_taken += todo
        if todo and not left:
            count = self._step_asked
            noun = "tick" if count == 1 else "ticks"
            self._emit("step_completed", f"Step({count}) completed: {count} {noun} taken, "
                       f"now at t={self.sim_time:g} s (tick {self.step_count})", SEVERITY_INFO)
        return todo

    @property
    def steps_remaining(self) -> int:
        """Ticks the running Step has still to take (0: no Step runs)."""
        return self._step_left

    def step_progress(self) -> StepProgress:
        """The latest Step: asked for, taken, and whether it still runs."""
        return StepProgress(self._step_asked, self._step_taken, self._step_left > 0)

    def _require_no_step(self, method: str) -> None:
        if self._step_left and not self._closed:
            asked = self._step_asked
            raise InvalidState(
                f"cannot {method} session {self.name!r}: its Step({asked}) is running "
                f"({self._step_taken} of {asked} ticks taken); wait for its "
                f"step_completed event, or Suspend, Halt or Reset it to cancel the Step",
                session=self.name,
                state=self.state,
            )

    def _cancel_step(self, method: str) -> None:
        """End the running Step, if any, because of ``method`` (its ticks stay taken)."""
        left = self._step_left
        if not left:
            return
        self._step_left = 0
        asked = self._step_asked
        self.version += 1
        self._emit("step_cancelled", f"Step({asked}) cancelled by {method} after "
                   f"{self._step_taken} of {asked} ticks, at t={self.sim_time:g} s "
                   f"(tick {self.step_count})", SEVERITY_CHANGE)

    def tick(self) -> None:
        """Take one tick (the clock calls this while Running). A model that raises
        or returns a non-finite number halts the session with ``fault`` set and
        emits a fault event; no exception escapes."""
        if self.state is not RunState.RUNNING:
            raise InvalidState(
                f"cannot tick session {self.name!r} in state {self.state}; "
                f"only a Running session ticks (Step it instead)",
                session=self.name,
                state=self.state,
            )
        self._advance()

    def _advance(self) -> bool:
        """One tick; False (and Halted) when a model faulted, or ended the simulation
        (the tick then taken)."""
        k = self.step_count
        dt = self.step_size
        t = k * dt
        outputs = self._outputs
        isfinite = math.isfinite
        progress = self._progress
        fault_in, fault_out = self._fault_in, self._fault_out
        index = 0
        out: Any = None
        ended: tuple[int, SimulationEnded] | None = None
        started = time.perf_counter()
        try:
            for inputs, links in self._held.values():  # outputs at t_k, before any step
                for name, src, port in links:
                    inputs[name] = outputs[src][port]
            for index, step, inputs, links, checked in self._plan:
                progress[0] = index
                for name, src, port in links:
                    inputs[name] = outputs[src][port]
                if fault_in and index in fault_in:
                    self._fault_inputs(self._components[index], fault_in[index], k,
                                       in_tick=True)
                out = None
                try:
                    out = step(t, dt, inputs)
                except SimulationEnded as end:  # the tick goes on with where it stopped
                    out, ended = end.outputs, (index, end)
                for name in checked:
                    if not isfinite(out[name]):
                        raise _NonFinite(name, out[name])
                if fault_out and index in fault_out:
                    self._true[index] = out
                    out = self._faulted_outputs(out, fault_out[index], k + 1)
                outputs[index] = out
        except Exception as exc:
            self.version += 1
            if isinstance(exc, KeyError) and isinstance(out, Mapping):
                # the model returned, but without one of its declared outputs
                exc = _Missing(*exc.args)
            self._fault(self._components[index], exc, during=f"tick {k} (t={t:g} s)")
            return False
        elapsed = time.perf_counter() - started
        self.step_count = k + 1
        self.version += 1
        if self._next_end is not None and k + 1 >= self._next_end:
            self._expire_faults()
        if self.alarms:
            for changed in self.alarms.evaluate(self.read, k + 1, (k + 1) * dt):
                self._emit_alarm(changed)
        self._duration_sum += elapsed
        self._duration_count += 1
        if elapsed > self._duration_max:
            self._duration_max = elapsed
        if ended is not None:
            self._end(self._components[ended[0]], ended[1])
            return False
        return True

    def _end(self, comp: _Component, end: SimulationEnded) -> None:
        """Halt because ``comp``'s model ended the simulation (not a fault)."""
        self.state = RunState.HALTED
        self._step_left = 0
        self.version += 1
        self.ended = (f"component {comp.name!r} ended the simulation: {end}; the session "
                      f"halted at t={self.sim_time:g} s (tick {self.step_count}), not on a "
                      f"fault")
        self._emit("terminated", f"session {self.name!r}: {self.ended}; Reset runs it again",
                   SEVERITY_HALT)

    # -- alarms ----------------------------------------------------------------------

    def alarm(self, name: str, action: str, event: bytes | None = None, comment: str = "",
              user: str = "", shelving_time: float = 0.0, wall: float = 0.0) -> AlarmState:
        """Acknowledge, Confirm, AddComment, Enable, Disable, TimedShelve (for
        ``shelving_time`` s), OneShotShelve or Unshelve alarm ``name`` at wall-clock
        time ``wall`` (``engine.alarms.AlarmSet.call``); emits its transition, returns
        its state."""
        self._require_open("call an alarm method of")
        state = self.alarms.call(name, action, event=event, comment=comment, user=user,
                                 tick=self.step_count, sim_time=self.sim_time,
                                 shelving_time=shelving_time, wall=wall)
        self.version += 1  # (its snapshot changed: a worker sends the next one again)
        self._emit_alarm(state)
        return state

    def alarm_definitions(self) -> tuple[AlarmDefinition, ...]:
        """Every alarm as defined (the twin's, with the session's overrides)."""
        return self.alarms.definitions

    def alarm_states(self) -> tuple[AlarmState, ...]:
        """Every alarm's condition as it is now."""
        return self.alarms.states()

    def _emit_alarm(self, state: AlarmState) -> None:
        if not self._listeners:
            return
        by = f" by {state.user}" if state.user and state.transition in (
            "acknowledged", "confirmed", "comment", "enabled", "disabled") else ""
        said = f" ({state.comment})" if state.comment and state.transition in (
            "acknowledged", "confirmed", "comment") else ""
        message = (state.message if state.transition in ("active", "inactive", "limit",
                                                          "shelved", "unshelved")
                   else f"alarm {state.name!r} {state.transition}{by}{said}: {state.message}")
        event = SessionEvent(f"alarm_{state.transition}", message, state.severity, state)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # a listener's bug must not break the session
                log.error("session_listener_failed", session=self.name, kind=event.kind,
                          listener=repr(listener), error=repr(exc))

    # -- observation -----------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every SessionEvent (state changes included);
        returns an unsubscribe function (safe to call more than once)."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, kind: str, message: str, severity: int = SEVERITY_INFO) -> None:
        """Emit a SessionEvent from outside the session (the manager's
        ``snapshot_taken``, the daemon's ``created`` or ``expired``)."""
        self._emit(kind, message, severity)

    def statistics(self) -> SessionStatistics:
        count = self._duration_count
        return SessionStatistics(
            step_count=self.step_count,
            sim_time=self.sim_time,
            state=self.state,
            step_duration_mean=self._duration_sum / count if count else 0.0,
            step_duration_max=self._duration_max,
        )

    # -- helpers ---------------------------------------------------------------------

    def _component(self, name: str) -> _Component:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name) or "none"
            raise NotFound(
                f"session {self.name!r} has no component {excerpt(name, 100)!r} "
                f"(its components: {known})"
            ) from None

    def _variable(self, comp: _Component, kind: Kind, name: str) -> Variable:
        try:
            return comp.variables[(kind, name)]
        except KeyError:
            names = ", ".join(n for k, n in comp.variables if k is kind) or "none"
            raise NotFound(
                f"component {comp.name!r} has no {kind} {excerpt(name, 100)!r} "
                f"(its {kind}s: {names})"
            ) from None

    def _lookup(self, key: VarKey) -> tuple[_Component, Variable]:
        try:
            return self._keys[key]
        except (KeyError, TypeError):
            comp = self._component(key.component)
            try:
                kind = Kind(key.kind)
            except ValueError:
                raise NotFound(
                    f"{key.kind!r} is not a kind of variable (kinds: "
                    f"{', '.join(k.value for k in Kind)})"
                ) from None
            return comp, self._variable(comp, kind, key.name)

    @staticmethod
    def _coerce(comp: _Component, var: Variable, value: Any) -> Value:
        try:
            return var.coerce(value)
        except ValueRejected as exc:
            raise type(exc)(_located(exc, var, comp.name)) from None

    def _require_open(self, method: str) -> None:
        if self._closed:
            raise InvalidState(
                f"cannot {method} session {self.name!r}: it is closed (deleted)",
                session=self.name,
                state=self.state,
            )

    def _require(self, method: str, *allowed: RunState) -> None:
        if self._closed:
            self._require_open(method)
        if self.state not in allowed:
            may = " or ".join(str(s) for s in allowed)
            raise InvalidState(
                f"cannot {method} session {self.name!r} in state {self.state} "
                f"({method} needs {may})",
                session=self.name,
                state=self.state,
            )

    def _transition(
        self, state: RunState, kind: str, verb: str, severity: int = SEVERITY_INFO
    ) -> None:
        self.state = state
        self.version += 1
        self._emit(kind, f"{verb} at t={self.sim_time:g} s (tick {self.step_count})", severity)

    def _fault(self, comp: _Component, exc: BaseException, *, during: str) -> SessionFault:
        if isinstance(exc, _NonFinite):
            what = f"returned a non-finite output {exc.name!r} = {exc.value!r}"
            cause: Any = None
        elif isinstance(exc, _Missing):
            what = f"returned no value for its output {exc.args[0]!r}"
            cause = None
        else:
            what = f"raised {type(exc).__name__}: {exc}"
            cause = exc
        message = (
            f"session {self.name!r}: component {comp.name!r} {what} in {during}; "
            f"the session halted; fix the cause, then Reset it"
        )
        self.fault = fault = SessionFault(
            message, session=self.name, component=comp.name, tick=self.step_count, cause=cause
        )
        self.state = RunState.HALTED
        self._step_left = 0
        self._emit("fault", message, SEVERITY_FAULT)
        return fault

    def _emit(self, kind: str, message: str, severity: int) -> None:
        if not self._listeners:
            return
        event = SessionEvent(kind, message, severity)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # a listener's bug must not break the session
                log.error(
                    "session_listener_failed",
                    session=self.name,
                    kind=kind,
                    listener=repr(listener),
                    error=repr(exc),
                )


def _layout(twin: TwinDefinition) -> tuple[tuple[str, str], ...]:
    return tuple((c.name, c.model) for c in twin.components)


def _model_snapshot_or_none(model: Model) -> Any:
    try:
        return model.snapshot()
    except Exception:  # an FMU without get/set state: its set_parameter cannot refuse
        return None


def _apply_tunable(comp: _Component, values: Mapping[str, Value], saved: Any) -> None:
    """Set tunable parameters on the model in the given order, else in reverse (two
    limits moved together past each other); restore ``saved`` and raise the first
    refusal when neither order works."""
    first: ValueRejected | None = None
    names = list(values)
    for order in (names, names[::-1]):
        try:
            for name in order:
                comp.model.set_parameter(name, values[name])
            return
        except ValueRejected as exc:
            if first is None:
                var = comp.variables[(Kind.PARAMETER, name)]
                first = type(exc)(f"{_located(exc, var, comp.name)} (nothing was changed)")
            if saved is None or len(values) < 2:
                break
            comp.model.restore(saved)
    if saved is not None:
        comp.model.restore(saved)
    assert first is not None
    raise first


def _close_quietly(session: str, comp: _Component) -> None:
    try:
        comp.model.close()
    except Exception as exc:  # closing must not stop the others from closing
        log.warning("model_close_failed", session=session, component=comp.name, error=repr(exc))


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else f"{noun}s"


def _check_factor(session: str, factor: float) -> None:
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int | float)
        or not math.isfinite(factor)
        or factor < 0
    ):
        raise InvalidArgument(
            f"session {session!r}: the real-time factor must be a finite "
            f"number >= 0, 0 meaning as fast as possible (got {factor!r})"
        )


def _located(exc: BaseException, var: Variable, component: str) -> str:
    """``exc``'s message with the component named after the variable."""
    text = str(exc)
    head = f"{var.kind} {var.name!r}"
    if text.startswith(head):
        return f"{head} of component {component!r}{text[len(head) :]}"
    return f"{head} of component {component!r}: {text}"


def _unit(var: Variable) -> str:
    return f" {var.unit}" if var.unit else ""
