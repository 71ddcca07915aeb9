"""FMUs as twin components: FMI 2.0 and 3.0 co-simulation, FMI 2.0 and 3.0 model
exchange, through FMPy.

Config::

    [twins.plant.components.oven]
    model = "fmu"
    options = { path = "/srv/fmus/Oven.fmu", states = "T_wall, T_air" }
    parameters = { k = 2.5 }

The path must lie in a folder of ``server.fmu_dirs`` (the loader checks it:
``config/fmu_files.py``); this model opens whatever path it is given.

Each instance loads the FMU's binary and owns one FMI instance (one per session);
``close()`` frees it, with a finalizer as the safety net. Reading and unpacking
the FMU (``fmu_description``) happen once, in ``declare``/``__init__``; ``step``
only makes FMI calls, through value-reference arrays prepared up front.

Stepping:

* co-simulation: set the inputs, ``doStep(t, dt)``, read the outputs;
* model exchange: the component integrates with FMPy's CVode (BDF, dense, root
  finding on the event indicators) from ``t`` to ``t + dt`` with the inputs held,
  stopping at time events (``nextEventTime``) and state events (roots), with the
  FMU's event iteration at each. CVode keeps its history (order, step size) from
  tick to tick, as FMPy's ``simulate_fmu`` does across its output points, and
  restarts only where the solution may jump: events, a new input or parameter
  value, a written state. Each tick's end is CVode's stop time, so the FMU is
  never evaluated past it. Snapshot/Restore and Fork stay bit-identical: a
  snapshot carries the integrator's last restart (time, continuous states) and the
  times it was asked to reach since, and Restore replays them (``_replay``); a
  restart at least every ``_REPLAY_LIMIT`` ticks bounds that replay.

A modelDescription's outputs are values *after* a step, computed with the inputs
held over it, so an FMU breaks loops like a tank does (``direct_feedthrough`` is
False); an output that truly feeds an input straight through lags one tick.

Errors: reading problems are ConfigErrors naming the file; an FMI call that
returns Discard, Error or Fatal raises FMIError naming the function, the status,
the simulation time and the FMU's last log message; after Fatal the instance is
re-created at the next Reset. An FMU that asks to terminate in a step
(terminateSimulation; FMI 2.0 co-simulation's Discard with fmi2Terminated) raises
SimulationEnded with its outputs where it stopped: the end of the run, not a fault
(while initializing it is an FMIError: the Reset failed). The component tracks the
FMI mode it has driven the instance into: a step or Reset that fails partway (an
Error or a termination request in Event Mode) leaves the FMU where it stopped, so
the next Reset resets it
(``fmi*Reset``, else a new instance) and Restore first brings it back to where a
step starts (Continuous-Time Mode for model exchange, Step Mode for co-simulation),
whether or not the FMU's own state holds the mode. Snapshot needs
``canGetAndSetFMUstate`` (NotSupported otherwise); across instances (Fork, restart)
also ``canSerializeFMUstate``; it is refused (InvalidState) for an instance a failed
step or Reset left in between.
"""

from __future__ import annotations

import collections
import ctypes
import enum
import functools
import itertools
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog
from fmpy import fmi2, fmi3
from fmpy.fmi1 import FMICallException

from twin_server.errors import ConfigError, FMIError, InvalidState, NotSupported, NotWritable
from twin_server.models.base import Kind, Model, SimulationEnded, Value, Variable
from twin_server.models.fmu_description import (
    FMUDescription,
    FMUOptions,
    FMUVariable,
    check_binary,
    choose_interface,
    describe,
    inspect_fmu,
    unpack,
)

__all__ = ["FMU", "FMUSnapshot", "inspect_fmu"]

log = structlog.get_logger(__name__)

_STATUS = {0: "OK", 1: "Warning", 2: "Discard", 3: "Error", 4: "Fatal", 5: "Pending"}
_instances = itertools.count(1)
_fmi_instances = itertools.count(1)  # numbers each FMI instance, for unserialized snapshots
#: model exchange: the integrator restarts at least this often (in integrator calls,
#: about one per tick), which bounds the replay of a Restore or Fork
_REPLAY_LIMIT = 10_000


class _Mode(enum.Enum):
    """Where the component has driven its FMI instance in the FMI state machine (after
    a call that failed, where it was before that call)."""

    INSTANTIATED = "Instantiated"
    CONFIGURATION = "Configuration Mode"  # FMI 3.0: structural parameters are set here
    INITIALIZATION = "Initialization Mode"
    EVENT = "Event Mode"
    CONTINUOUS = "Continuous-Time Mode"  # model exchange between steps
    STEP = "Step Mode"  # co-simulation between steps
    TERMINATING = "termination"  # the FMU asked to terminate: only Reset goes on


# -- typed access through prepared value-reference arrays -----------------------------


@dataclass(slots=True)
class _Group:
    """Variables of one FMI type read or written in a single call."""

    names: tuple[str, ...]
    vrs: Any  # ctypes array of value references
    values: Any  # ctypes array of values
    get: Callable[..., int]
    set: Callable[..., int]
    to_py: Callable[[Any], Value]
    to_c: Callable[[Value], Any]
    fmi3: bool


def _groups(fmu: Any, version: int, variables: Sequence[FMUVariable]) -> tuple[_Group, ...]:
    by_type: dict[str, list[FMUVariable]] = {}
    for fv in variables:
        by_type.setdefault(fv.fmi_type, []).append(fv)
    groups = []
    for fmi_type, members in by_type.items():
        ctype, suffix, to_py, to_c = _TYPES[version][fmi_type]
        vr_type = fmi2.fmi2ValueReference if version == 2 else fmi3.fmi3ValueReference
        n = len(members)
        groups.append(_Group(
            names=tuple(fv.variable.name for fv in members),
            vrs=(vr_type * n)(*(fv.value_reference for fv in members)),
            values=(ctype * n)(),
            get=_raw(fmu, f"fmi{version}Get{suffix}"),
            set=_raw(fmu, f"fmi{version}Set{suffix}"),
            to_py=to_py, to_c=to_c, fmi3=version == 3,
        ))
    return tuple(groups)


def _raw(fmu: Any, name: str) -> Callable[..., int]:
    """The FMI function ``name`` called straight through ctypes (FMPy's ``_call``
    wrapper costs a few microseconds per call), with the status checked as FMPy
    checks it: anything above Warning raises FMICallException."""
    function = fmu._functions[name]
    if fmu.fmiCallLogger is not None:  # keep FMPy's call logging when it is on
        return getattr(fmu, name)  # type: ignore[no-any-return]

    def call(*args: Any) -> int:
        status: int = function(*args)
        if status > 1:
            raise FMICallException(function=name, status=status)
        return status

    return call


def _string_in(value: Value) -> bytes:
    return str(value).encode("utf-8")


def _string_out(raw: Any) -> str:
    return raw.decode("utf-8") if raw else ""


_TYPES: dict[int, dict[str, tuple[Any, str, Callable[[Any], Value], Callable[[Value], Any]]]] = {
    2: {
        "Real": (fmi2.fmi2Real, "Real", float, float),
        "Integer": (fmi2.fmi2Integer, "Integer", int, int),
        "Enumeration": (fmi2.fmi2Integer, "Integer", int, int),
        "Boolean": (fmi2.fmi2Boolean, "Boolean", bool, int),
        "String": (fmi2.fmi2String, "String", _string_out, _string_in),
    },
    3: {
        "Float64": (fmi3.fmi3Float64, "Float64", float, float),
        "Float32": (fmi3.fmi3Float32, "Float32", float, float),
        "Int8": (fmi3.fmi3Int8, "Int8", int, int),
        "UInt8": (fmi3.fmi3UInt8, "UInt8", int, int),
        "Int16": (fmi3.fmi3Int16, "Int16", int, int),
        "UInt16": (fmi3.fmi3UInt16, "UInt16", int, int),
        "Int32": (fmi3.fmi3Int32, "Int32", int, int),
        "Enumeration": (fmi3.fmi3Int64, "Int64", int, int),
        "UInt32": (fmi3.fmi3UInt32, "UInt32", float, int),
        "Int64": (fmi3.fmi3Int64, "Int64", float, int),
        "UInt64": (fmi3.fmi3UInt64, "UInt64", float, int),
        "Boolean": (fmi3.fmi3Boolean, "Boolean", bool, bool),
        "String": (fmi3.fmi3String, "String", _string_out, _string_in),
    },
}


def _read(component: Any, groups: Sequence[_Group], out: dict[str, Value]) -> dict[str, Value]:
    for g in groups:
        n = len(g.names)
        if g.fmi3:
            g.get(component, g.vrs, n, g.values, n)
        else:
            g.get(component, g.vrs, n, g.values)
        values, to_py = g.values, g.to_py
        for i, name in enumerate(g.names):
            out[name] = to_py(values[i])
    return out


def _write(component: Any, groups: Sequence[_Group], values: Mapping[str, Value]) -> None:
    for g in groups:
        n = len(g.names)
        buf, to_c = g.values, g.to_c
        for i, name in enumerate(g.names):
            buf[i] = to_c(values[name])
        if g.fmi3:
            g.set(component, g.vrs, n, buf, n)
        else:
            g.set(component, g.vrs, n, buf)


# -- the FMU's log ------------------------------------------------------------------------


class _FMULog:
    """Keeps the FMU's last messages (quoted in errors) and forwards them to structlog.
    Holds no reference to the model, so the native callback does not keep it alive."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.recent: collections.deque[str] = collections.deque(maxlen=5)

    def message(self, status: int, category: bytes | None, message: bytes | None) -> None:
        text = message.decode("utf-8", "replace") if message else ""
        self.recent.append(text)
        level = "warning" if status in (1, 2) else "error" if status >= 3 else "debug"
        getattr(log, level)("fmu_log", fmu=self.name, status=_STATUS.get(status, status),
                            category=category.decode("utf-8", "replace") if category else "",
                            message=text)

    def last(self) -> str:
        return self.recent[-1] if self.recent else ""


def _fmi2_log(env: int | None, instance: bytes | None, status: int, category: bytes | None,
              message: bytes | None) -> None:
    fmu_log = _fmi2_logs.get(env or 0)
    if fmu_log is not None:
        fmu_log.message(status, category, message)


#: The one FMI 2.0 logger: it finds a message's log by the componentEnvironment its
#: instance was given. FMPy's proxy that formats the variadic message keeps a single
#: static pointer, to the logger it was given last, so a logger per instance sent
#: every instance's messages to the newest one and crashed the process once that one
#: was garbage collected.
_fmi2_logs: weakref.WeakValueDictionary[int, _FMULog] = weakref.WeakValueDictionary()
_FMI2_LOGGER = fmi2.fmi2CallbackLoggerTYPE(_fmi2_log)


class _NoInput:
    """FMPy's CVode wrapper re-applies an input signal at each root evaluation; the
    component holds its inputs over the tick, so there is nothing to re-apply."""

    def apply(self, time: float, continuous: bool = True, discrete: bool = True,
              after_event: bool = False) -> None:
        return None


@functools.cache
def _cvode() -> tuple[Callable[..., int], Callable[..., int], Any]:
    """CVode, CVodeSetStopTime (which FMPy does not bind) and the real type, loaded
    on first use (loading SUNDIALS is left to the first model-exchange FMU)."""
    from fmpy.sundials.cvode import CVode
    from fmpy.sundials.libraries import sundials_cvode
    from fmpy.sundials.sundials_types import realtype

    set_stop_time = sundials_cvode.CVodeSetStopTime
    set_stop_time.argtypes = [ctypes.c_void_p, realtype]
    set_stop_time.restype = ctypes.c_int
    return CVode, set_stop_time, realtype


def _advance(solver: Any, t_next: float) -> tuple[bool, float]:
    """Integrate with FMPy's CVode ``solver`` to ``t_next`` or the first root before
    it; (root found, time reached). Unlike ``CVodeSolver.step`` it sets ``t_next`` as
    CVode's stop time, so that the FMU is never evaluated past the end of the tick
    (whose inputs are not known yet) or past a time event."""
    cvode, set_stop_time, realtype = _cvode()
    set_stop_time(solver.cvode_mem, t_next)
    reached = realtype(0.0)
    flag = cvode(solver.cvode_mem, t_next, solver.x, ctypes.byref(reached), _CV_NORMAL)
    if not solver.discrete:
        solver.set_x(solver.px, solver.nx)
    if flag < 0:
        code, function, _, message = solver.error_info or (flag, "CVode", "", "failed")
        raise RuntimeError(f"CVode error {code} in {function}: {message}")
    return flag == _CV_ROOT_RETURN, float(reached.value)


_CV_NORMAL, _CV_ROOT_RETURN = 1, 2


def _release(fmu: Any, handle: list[Any]) -> None:
    """Free an FMI instance and its library (finalizer: holds no model reference)."""
    if not handle or handle[0] is None:
        return
    handle[0] = None
    try:
        fmu.freeInstance()
    except Exception as exc:  # freeing must never raise out of a finalizer
        log.warning("fmu_free_failed", error=str(exc))


def _free_state(fmu: Any, handle: list[Any], state: Any) -> None:
    """Free an unserialized FMU state when its snapshot goes, if the instance lives."""
    if handle and handle[0] is not None:
        try:
            fmu.freeFMUState(state)
        except Exception as exc:  # a finalizer must not raise
            log.warning("fmu_free_state_failed", error=str(exc))


# -- the model --------------------------------------------------------------------------


@dataclass(frozen=True)
class FMUSnapshot:
    """An FMU component's state: the FMI state (serialized where the FMU can) and
    the component's own bookkeeping."""

    token: str  # which FMU and interface took it
    serialized: bytes | None
    handle: Any = None  # an unserialized fmi*FMUstate of the FMI instance ``owner``
    owner: int = 0  # which FMI instance took it (numbered across the process)
    extra: Mapping[str, Any] = field(default_factory=dict)


class FMU(Model):
    """A component whose variables and behaviour come from an FMU file (options.path)."""

    description: ClassVar[str] = ("An FMI 2.0/3.0 FMU (co-simulation or model exchange) "
                                  "from options.path")
    direct_feedthrough: ClassVar[bool] = False

    @classmethod
    def declare(cls, options: Mapping[str, Any]) -> tuple[Variable, ...]:
        opts = FMUOptions.parse(options)
        desc = describe(opts.path)
        check_binary(desc, choose_interface(desc, opts.interface))
        return tuple(fv.variable for fv in cls._chosen(desc, opts))

    @staticmethod
    def _chosen(desc: FMUDescription, opts: FMUOptions) -> tuple[FMUVariable, ...]:
        states = []
        for name in opts.states:
            fv = desc.local(name)
            if fv is None:
                names = ", ".join(f.variable.name for f in desc.locals) or "none"
                why = dict(desc.skipped).get(name)
                if why is not None:
                    raise ConfigError(f"options.states: {name!r} of FMU {desc.path.name!r} "
                                      f"cannot be a state: {why} (its locals: {names}; "
                                      f"`twin-server fmu inspect` lists what can)")
                raise ConfigError(f"options.states: FMU {desc.path.name!r} has no local "
                                  f"variable {name!r} (its locals: {names})")
            states.append(fv)
        return (*desc.variables, *states)

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        opts = FMUOptions.parse(self.options)
        desc = describe(opts.path)
        self._opts = opts
        self._desc = desc
        self._interface = choose_interface(desc, opts.interface)
        check_binary(desc, self._interface)
        chosen = self._chosen(desc, opts)
        self.variables = tuple(fv.variable for fv in chosen)  # type: ignore[misc]
        self._fmi = {fv.variable.name: fv for fv in chosen if fv.variable.kind is not Kind.STATE}
        self._states = {fv.variable.name: fv for fv in chosen if fv.variable.kind is Kind.STATE}
        self._version = desc.fmi_version
        self._me = self._interface == "me"
        self._token = f"{desc.md.guid}:{self._interface}"
        self._unpacked = unpack(opts.path, opts.cache_dir)
        self._number = next(_instances)
        self._name = f"{desc.model_identifier(self._interface)}#{self._number}"
        self._log = _FMULog(self._name)
        self.parameters: dict[str, Value] = {}
        self._pending: dict[str, Value] = {}
        self._rest = _Mode.CONTINUOUS if self._me else _Mode.STEP  # where a step starts
        self._mode = _Mode.INSTANTIATED
        self._instance = 0
        self._broken = False
        self._time = 0.0
        self._next_event: float | None = None
        self._last_inputs: dict[str, Value] = {}
        self._start_inputs: dict[str, Value] = {}
        self._solver: Any = None
        #: model exchange: the integrator's last restart (time, continuous states) and
        #: the times it was asked to reach since, for ``_replay``
        self._anchor: tuple[float, tuple[float, ...]] = (0.0, ())
        self._targets: list[float] = []
        self._handle: list[Any] = []
        self._finalizer: weakref.finalize[..., FMU] | None = None
        self._instantiate()

    # -- lifecycle ------------------------------------------------------------------

    def _instantiate(self) -> None:
        desc, identifier = self._desc, self._desc.model_identifier(self._interface)
        common = {"guid": desc.md.guid, "modelIdentifier": identifier,
                  "unzipDirectory": str(self._unpacked), "instanceName": self._name}
        fmu: Any
        try:
            if self._version == 2:
                fmu = (fmi2.FMU2Model if self._me else fmi2.FMU2Slave)(**common)
                fmu.instantiate(callbacks=self._fmi2_callbacks())
            else:
                fmu = (fmi3.FMU3Model if self._me else fmi3.FMU3Slave)(**common)
                fmu.instantiate(logMessage=self._fmi3_logger())
        except FMICallException as exc:
            raise self._fmi_error(exc, "instantiating") from None
        except Exception as exc:  # FMPy raises plain Exception for load failures
            raise ConfigError(f"FMU file {str(desc.path)!r} could not be instantiated: {exc}"
                              f"{self._log_suffix()}") from None
        self._fmu = fmu
        self._handle = [fmu.component]
        self._finalizer = weakref.finalize(self, _release, fmu, self._handle)
        groups = {kind: _groups(fmu, self._version,
                                [fv for fv in self._fmi.values() if fv.variable.kind is kind])
                  for kind in (Kind.INPUT, Kind.OUTPUT)}
        self._inputs_g = groups[Kind.INPUT]
        self._outputs_g = groups[Kind.OUTPUT]
        self._states_g = _groups(fmu, self._version, list(self._states.values()))
        self._input_names = tuple(n for g in self._inputs_g for n in g.names)
        if self._version == 2 and not self._me:
            self._do_step = _raw(fmu, "fmi2DoStep")
        self._outputs: dict[str, Value] = {}
        self._instance = next(_fmi_instances)
        self._mode = _Mode.INSTANTIATED
        self._broken = False

    def _fmi2_callbacks(self) -> Any:
        callbacks = fmi2.fmi2CallbackFunctions()
        _fmi2_logs[self._number] = self._log
        callbacks.logger = _FMI2_LOGGER
        callbacks.componentEnvironment = self._number
        callbacks.allocateMemory = fmi2.fmi2CallbackAllocateMemoryTYPE(fmi2.calloc)
        callbacks.freeMemory = fmi2.fmi2CallbackFreeMemoryTYPE(fmi2.free)
        from fmpy.logging import addLoggerProxy  # formats the variadic C message

        addLoggerProxy(ctypes.byref(callbacks))
        self._callbacks = callbacks  # the FMU keeps a pointer to it
        return callbacks

    def _fmi3_logger(self) -> Callable[..., None]:
        fmu_log = self._log

        def log_message(env: Any, status: int, category: bytes, message: bytes) -> None:
            fmu_log.message(status, category, message)

        return log_message

    def close(self) -> None:
        """Free the FMI instance (idempotent); the component cannot step afterwards."""
        self._solver = None
        if self._finalizer is not None:
            self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._handle or self._handle[0] is None

    @property
    def _between_steps(self) -> bool:
        """The instance is where a step starts (and can be called at all)."""
        return self._mode is self._rest and not (self.closed or self._broken)

    def _to_instantiated(self, *, recreate: bool = True) -> None:
        """Bring the FMI instance back to Instantiated from wherever a run, or a step or
        Reset that failed partway, left it: ``fmi*Reset``, else (an FMU that cannot
        reset, one closed or broken by Fatal) a new instance, if ``recreate``."""
        if self.closed or self._broken:
            self.close()
            self._instantiate()
        elif self._mode is not _Mode.INSTANTIATED:
            try:
                self._fmu.reset()
            except FMICallException:  # some FMUs cannot reset: start a fresh instance
                if not recreate:
                    raise
                self.close()
                self._instantiate()
            else:
                self._mode = _Mode.INSTANTIATED

    def _enter_event_mode(self) -> None:
        self._fmu.enterEventMode()
        self._mode = _Mode.EVENT

    def _enter_continuous_time_mode(self) -> None:
        self._fmu.enterContinuousTimeMode()
        self._mode = _Mode.CONTINUOUS

    # -- the contract ---------------------------------------------------------------

    def reset(
        self, parameters: Mapping[str, Value], initial: Mapping[str, Value]
    ) -> dict[str, Value]:
        self._to_instantiated()
        self.parameters = dict(parameters)
        self._pending = {}
        self._time = 0.0
        self._next_event = None
        self._solver = None
        for name in initial:
            fv = self._states[name]
            if not fv.settable:
                raise NotWritable(
                    f"state {name!r} (FMI local {fv.fmi_name!r}) is calculated by the FMU "
                    f"(initial={fv.initial}) and cannot be given an initial value")
        inputs = {n: self._start_inputs.get(n, self._fmi[n].variable.default)
                  for n in self._input_names}
        try:
            self._setup(parameters, initial, inputs)
        except FMICallException as exc:
            self._broken = exc.status >= 4
            raise self._fmi_error(exc, "initializing") from None
        self._last_inputs = inputs
        return dict(_read(self._fmu.component, self._outputs_g, self._outputs))

    def _setup(self, parameters: Mapping[str, Value], initial: Mapping[str, Value],
               inputs: Mapping[str, Value]) -> None:
        fmu = self._fmu
        if self._version == 2:
            fmu.setupExperiment(tolerance=self._opts.tolerance if self._me else None,
                                startTime=0.0)
        structural = {n: v for n, v in parameters.items()
                      if self._fmi[n].causality == "structuralParameter"}
        if structural:  # FMI 3.0 allows setting them in Configuration Mode only
            fmu.enterConfigurationMode()
            self._mode = _Mode.CONFIGURATION
            self._set_by_name(structural)
            fmu.exitConfigurationMode()
            self._mode = _Mode.INSTANTIATED
        self._set_by_name({n: v for n, v in parameters.items() if n not in structural})
        self._set_by_name(initial, states=True)
        if self._version == 2:
            fmu.enterInitializationMode()
        else:
            fmu.enterInitializationMode(tolerance=self._opts.tolerance if self._me else None,
                                        startTime=0.0)
        self._mode = _Mode.INITIALIZATION
        # the inputs at t0 are known before the outputs at t0 are (as FMPy applies
        # its input signals): set them in Initialization Mode
        self._set_by_name(inputs)
        fmu.exitInitializationMode()
        self._mode = _Mode.EVENT if self._me else _Mode.STEP
        if self._me:
            try:
                self._event_iteration()
            except SimulationEnded as end:  # before the first step: it cannot start
                self._mode = _Mode.TERMINATING
                raise FMIError(f"{end}, while initializing: it cannot start so",
                               function=end.function, fmi_status="terminateSimulation") from None
            self._enter_continuous_time_mode()
            self._solver = None
            self._restart(0.0)

    def _set_by_name(self, values: Mapping[str, Value], *, states: bool = False) -> None:
        table = self._states if states else self._fmi
        chosen = [table[n] for n in values]
        if chosen:
            _write(self._fmu.component, _groups(self._fmu, self._version, chosen), values)

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        c = self._fmu.component
        try:
            if self._me:
                self._step_me(t, dt, inputs)
            else:
                if self._pending:
                    self._set_by_name(self._pending)
                    self._pending = {}
                _write(c, self._inputs_g, inputs)
                if self._version == 2:
                    self._do_step_2(c, t, dt)
                else:
                    self._do_step_3(t, dt)
        except FMICallException as exc:
            self._broken = exc.status >= 4
            raise self._fmi_error(exc, f"stepping from t={t:g} s") from None
        except SimulationEnded as end:
            # the FMU asked to end the simulation: its outputs where it stopped go with
            # the end (FMI allows reading them), and only Reset or Restore goes on
            self._mode = _Mode.TERMINATING
            self._time = end.time
            try:
                end.outputs = dict(_read(c, self._outputs_g, self._outputs))
            except FMICallException:  # it allows no reads: its outputs before the step
                end.outputs = dict(self._outputs)
            raise
        self._time = t + dt
        return dict(_read(c, self._outputs_g, self._outputs))

    def set_start_inputs(self, inputs: Mapping[str, Value]) -> None:
        """Inputs known before Reset: set in Initialization Mode, so that the outputs
        at t0 reflect them (as FMPy's ``simulate_fmu`` does)."""
        self._start_inputs = dict(inputs)

    def _do_step_2(self, c: Any, t: float, dt: float) -> None:
        try:
            self._do_step(c, t, dt, fmi2.fmi2True)
        except FMICallException as exc:
            # Discard: the FMU may be asking to terminate (FMI 2.0, 4.2.3)
            if exc.status == 2 and self._asks_to_terminate():
                self._mode = _Mode.TERMINATING
                raise self._terminated("DoStep", self._last_successful_time(t)) from None
            raise

    def _asks_to_terminate(self) -> bool:
        try:
            return bool(self._fmu.getBooleanStatus(fmi2.fmi2Terminated))
        except FMICallException:  # an FMU without the status: a plain Discard
            return False

    def _last_successful_time(self, t: float) -> float:
        try:
            return float(self._fmu.getRealStatus(fmi2.fmi2LastSuccessfulTime))
        except FMICallException:
            return t

    def _do_step_3(self, t: float, dt: float) -> None:
        _, terminate, early, last = self._fmu.doStep(t, dt)
        if terminate:
            self._mode = _Mode.TERMINATING
            raise self._terminated("DoStep", last)
        if early:  # only allowed when asked for (earlyReturnAllowed), which we do not
            self._mode = _Mode.TERMINATING
            raise FMIError(
                f"FMU {self._desc.path.name!r}: fmi3DoStep returned early at t={last:g} s "
                f"instead of t={t + dt:g} s, which the importer did not allow (earlyReturn)"
                f"{self._log_suffix()}", function="fmi3DoStep", fmi_status="earlyReturn")

    def set_parameter(self, name: str, value: Value) -> None:
        """A tunable parameter: applied to the FMU before the next step (in event
        mode for model exchange)."""
        self.parameters[name] = value
        self._pending[name] = value

    def get_states(self) -> dict[str, Value]:
        if not self._states_g or self.closed:
            return {}
        if self._mode is _Mode.INSTANTIATED:  # FMI allows no reads before initialization
            return {name: fv.variable.default for name, fv in self._states.items()}
        return _read(self._fmu.component, self._states_g, {})

    def set_states(self, states: Mapping[str, Value]) -> None:
        if not states:
            return
        continuous = self._continuous_index()
        for name in states:
            if name not in continuous:
                fv = self._states[name]
                raise NotWritable(
                    f"state {name!r} (FMI local {fv.fmi_name!r}) cannot be overwritten while "
                    f"the FMU runs (FMI allows only continuous states of model-exchange FMUs); "
                    f"give it in 'initial' and Reset")
        nx = len(self._desc.md.derivatives)
        x = (ctypes.c_double * nx)()
        try:
            self._fmu.getContinuousStates(x, nx)
            for name, value in states.items():
                x[continuous[name]] = float(value)
            self._fmu.setContinuousStates(x, nx)
            self._restart(self._time)  # the solution jumps here
        except FMICallException as exc:
            raise self._fmi_error(exc, f"writing {', '.join(map(repr, states))}") from None

    def _continuous_index(self) -> dict[str, int]:
        if not self._me:
            return {}
        index = {}
        for i, unknown in enumerate(self._desc.md.derivatives):
            state = unknown.variable.derivative
            for name, fv in self._states.items():
                if state is not None and fv.fmi_name == state.name:
                    index[name] = i
        return index

    # -- model exchange ---------------------------------------------------------------

    def _make_solver(self, start: float) -> Any:
        from fmpy.sundials import CVodeSolver

        fmu, md = self._fmu, self._desc.md
        return CVodeSolver(
            nx=md.numberOfContinuousStates, nz=md.numberOfEventIndicators,
            get_x=fmu.getContinuousStates, set_x=fmu.setContinuousStates,
            get_dx=fmu.getDerivatives if self._version == 2 else fmu.getContinuousStateDerivatives,
            get_z=fmu.getEventIndicators, get_nominals=fmu.getNominalsOfContinuousStates,
            set_time=fmu.setTime, input=_NoInput(), startTime=start,
            relativeTolerance=self._opts.tolerance,
        )

    def _restart(self, time: float) -> None:
        """(Re)start the integrator at ``time`` from the FMU's continuous states: at
        Reset, events, new inputs or parameters, written states and every
        ``_REPLAY_LIMIT`` integrator calls. Between restarts CVode keeps its history
        (step size, order, Nordsieck array) from tick to tick."""
        if self._solver is None:
            self._solver = self._make_solver(time)
        self._solver.reset(time)
        nx = self._desc.md.numberOfContinuousStates
        x = (ctypes.c_double * nx)()
        if nx:
            self._fmu.getContinuousStates(x, nx)
        self._anchor = (time, tuple(x))
        self._targets = []

    def _event_iteration(self) -> None:
        fmu = self._fmu
        update = fmu.newDiscreteStates if self._version == 2 else fmu.updateDiscreteStates
        while True:
            need_more, terminate, _, _, defined, next_time = update()
            if terminate:
                function = "NewDiscreteStates" if self._version == 2 else "UpdateDiscreteStates"
                raise self._terminated(function, self._time)
            if not need_more:
                break
        self._next_event = float(next_time) if defined else None

    def _step_me(self, t: float, dt: float, inputs: Mapping[str, Value]) -> None:
        fmu, c = self._fmu, self._fmu.component
        t_end = t + dt
        changed = any(inputs[n] != self._last_inputs.get(n) for n in self._input_names)
        if changed or self._pending:
            # a new input or parameter value is an event: discrete equations see it,
            # and the solution may jump there, so the integrator starts afresh
            self._enter_event_mode()
            if self._pending:
                self._set_by_name(self._pending)
                self._pending = {}
            _write(c, self._inputs_g, inputs)
            self._last_inputs = dict(inputs)
            self._time = t
            self._event_iteration()
            self._enter_continuous_time_mode()
            self._restart(t)
        elif len(self._targets) >= _REPLAY_LIMIT:
            self._restart(t)  # bounds what Restore replays (see ``_replay``)
        solver, targets = self._solver, self._targets
        time = t
        needs_completed = bool(self._desc.md.modelExchange.needsCompletedIntegratorStep)
        eps = 1e-12 * (1 + t_end)  # "the same time" for event and end-of-tick tests
        while time < t_end and not math.isclose(time, t_end, rel_tol=0, abs_tol=eps):
            t_next, time_event = t_end, False
            if self._next_event is not None and self._next_event <= t_next + eps:
                t_next, time_event = max(self._next_event, time), True
            state_event, time = _advance(solver, t_next)
            targets.append(t_next)
            if time_event and not math.isclose(time, t_next, rel_tol=0, abs_tol=eps):
                time_event = False  # a state event came first
            fmu.setTime(time)
            step_event = terminate = False
            if needs_completed:
                step_event, terminate = fmu.completedIntegratorStep()
            if terminate:
                raise self._terminated("CompletedIntegratorStep", time)
            if state_event or time_event or step_event:
                self._enter_event_mode()
                self._time = time
                self._event_iteration()
                self._enter_continuous_time_mode()
                self._restart(time)
                targets = self._targets

    def _replay(self, anchor: tuple[float, tuple[float, ...]], targets: Sequence[float],
                time: float) -> None:
        """Rebuild the integrator a restored state was taken with: from the state at
        its last restart (``anchor``: time and continuous states; the discrete state
        has not changed since), integrate through the same ``targets`` again, which
        gives CVode the same history and the FMU the same continuous states, bit for
        bit, so that a restored or forked session goes on exactly as the original.
        Should the replay not end on the snapshot's states (an FMU whose derivatives
        depend on more than its state), those are kept and the integrator restarts."""
        fmu = self._fmu
        nx = self._desc.md.numberOfContinuousStates
        now = (ctypes.c_double * nx)()
        if nx:
            fmu.getContinuousStates(now, nx)
        t0, x0 = anchor
        if targets:
            fmu.setTime(t0)
            if nx:
                fmu.setContinuousStates((ctypes.c_double * nx)(*x0), nx)
        self._solver = None
        self._restart(t0)
        if not targets:
            return
        solver = self._solver
        needs_completed = bool(self._desc.md.modelExchange.needsCompletedIntegratorStep)
        at = t0
        for target in targets:
            _, at = _advance(solver, target)
            fmu.setTime(at)
            if needs_completed:
                fmu.completedIntegratorStep()
        self._targets = list(targets)
        replayed = (ctypes.c_double * nx)()
        if nx:
            fmu.getContinuousStates(replayed, nx)
        if at != time or list(replayed) != list(now):
            log.debug("fmu_replay_differs", fmu=self._name, time=time, replayed_to=at)
            fmu.setTime(time)
            if nx:
                fmu.setContinuousStates(now, nx)
            self._restart(time)

    # -- snapshot / restore -------------------------------------------------------------

    def snapshot(self) -> FMUSnapshot:
        if not self._desc.can_get_and_set_state(self._interface):
            raise NotSupported(
                f"FMU {self._desc.path.name!r} cannot snapshot: its modelDescription does not "
                f"declare canGetAndSetFMUstate, so Snapshot, Restore and Fork are not "
                f"available for this component (Reset is)")
        if self.closed or self._broken or self._mode not in (_Mode.INSTANTIATED, self._rest):
            where = ("is closed" if self.closed else "returned Fatal" if self._broken
                     else "asked to end the simulation" if self._mode is _Mode.TERMINATING
                     else f"was left in {self._mode.value} by a step or Reset that failed")
            raise InvalidState(
                f"FMU {self._desc.path.name!r} cannot snapshot: its FMI instance {where}, "
                f"so its state is not one to go on from; Reset it, or Restore a snapshot "
                f"taken earlier")
        # "initialized": taken between steps, else before the first Reset (Instantiated)
        extra = {"parameters": dict(self.parameters), "pending": dict(self._pending),
                 "time": self._time, "next_event": self._next_event,
                 "last_inputs": dict(self._last_inputs),
                 "initialized": self._mode is self._rest,
                 "anchor": self._anchor, "targets": tuple(self._targets)}
        try:
            state = self._fmu.getFMUState()
            if self._desc.can_serialize_state(self._interface):
                data = self._fmu.serializeFMUState(state)
                self._fmu.freeFMUState(state)
                return FMUSnapshot(self._token, data, extra=extra)
        except FMICallException as exc:
            raise self._fmi_error(exc, "taking a snapshot") from None
        snap = FMUSnapshot(self._token, None, handle=state, owner=self._instance, extra=extra)
        weakref.finalize(snap, _free_state, self._fmu, self._handle, state)
        return snap

    def restore(self, snapshot: Any) -> None:
        if not isinstance(snapshot, FMUSnapshot) or snapshot.token != self._token:
            raise NotSupported(f"this snapshot was not taken from FMU {self._desc.path.name!r} "
                               f"({self._interface}); it cannot be restored into it")
        in_place = snapshot.serialized is None
        if in_place and (snapshot.owner != self._instance or self.closed or self._broken):
            raise NotSupported(
                f"FMU {self._desc.path.name!r} cannot serialize its state "
                f"(canSerializeFMUstate is false): a snapshot can be restored only into the "
                f"FMI instance that took it, so Fork, restoring after a restart and restoring "
                f"after Reset had to create a new instance are not available")
        extra = snapshot.extra
        try:
            if not extra["initialized"]:
                self._to_instantiated(recreate=not in_place)
                self._solver = None
            elif not self._between_steps:
                # a step or Reset failed partway (in Event Mode, say): initialize the FMU
                # afresh (its own start values; the state set below replaces them) so
                # that it is where a step starts, whether or not its state holds the mode
                self._to_instantiated(recreate=not in_place)
                self._time = 0.0
                self._setup({}, {}, {})
            if snapshot.serialized is not None:
                state = self._fmu.deserializeFMUState(snapshot.serialized)
                self._fmu.setFMUState(state)
                self._fmu.freeFMUState(state)
            else:
                self._fmu.setFMUState(snapshot.handle)
            if self._me and extra["initialized"]:
                self._replay(extra["anchor"], extra["targets"], extra["time"])
        except FMICallException as exc:
            self._broken = exc.status >= 4
            raise self._fmi_error(exc, "restoring a snapshot") from None
        self.parameters = dict(extra["parameters"])
        self._pending = dict(extra["pending"])
        self._time = extra["time"]
        self._next_event = extra["next_event"]
        self._last_inputs = dict(extra["last_inputs"])

    # -- errors ----------------------------------------------------------------------------

    def _fmi_error(self, exc: FMICallException, doing: str) -> FMIError:
        status = _STATUS.get(exc.status, str(exc.status))
        return FMIError(
            f"FMU {self._desc.path.name!r}: {exc.function} returned {status} while {doing}"
            f"{self._log_suffix()}", function=exc.function, fmi_status=status)

    def _terminated(self, function: str, time: float) -> SimulationEnded:
        """The end of the simulation an FMU asked for in ``fmi<version><function>``
        (terminateSimulation, or FMI 2.0 co-simulation's Discard with fmi2Terminated)
        at ``time``: not a fault (``step`` adds the outputs)."""
        name = f"fmi{self._version}{function}"
        return SimulationEnded(
            f"FMU {self._desc.path.name!r} asked to end the simulation at t={time:g} s "
            f"({name}: terminateSimulation){self._log_suffix()}",
            time=time, function=name)

    def _log_suffix(self) -> str:
        last = self._log.last()
        return f" (FMU log: {last})" if last else ""
