"""The shape of our address space (DESIGN.md, "The address space").

::

    Objects/TwinServer                              ns;s=TwinServer
      Twins/<twin>                                  ns;s=Twins.<twin>
        Description, Connections (String[])         properties
        Components/<component>                      ns;s=Twins.<twin>.Components.<component>
          Model, Description                        properties
      Sessions/<session>                            ns;s=Sessions.<session>  ProgramStateMachineType
        State, SimTime, StepCount, StepsRemaining, StepSize, RealtimeFactor, ForcedInputs
        Diagnostics/{Overruns, LatenessP50, LatenessP99, LatenessMax,
                     StepDurationMean, StepDurationMax, Ticks}
        CurrentState, LastTransition, Deletable, AutoDelete, RecycleCount  (0: browse names)
        Start, Suspend, Resume, Halt, Reset         methods (0: browse names)
        Step, SetParameters, Snapshot, Restore, Fork,  methods
        ReleaseInput, ReleaseInputs
        Components/<component>/{Inputs,Outputs,States,Parameters}/<var>
      CreateSession, DeleteSession, DefineTwin, RemoveTwin  methods

TwinServer, Twins, Sessions and every session are event notifiers (session log
events, GeneralModelChangeEvents; ``events.py``).

Only the kind folders a component has are created (a source has no Inputs).
Diagnostics times are in milliseconds, as their EngineeringUnits and
descriptions say; SimTime and StepSize are in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from asyncua import ua

from twin_server.engine.session import VarKey
from twin_server.engine.twin import ComponentDefinition, TwinDefinition
from twin_server.models.base import DataType, Kind, Variable
from twin_server.opcua.nodes import VARIANT_TYPES, Argument, NodeBatch
from twin_server.opcua.program import (
    FINITE_STATE_VARIABLE_TYPE,
    FINITE_TRANSITION_VARIABLE_TYPE,
    PROGRAM_STATE_MACHINE_TYPE,
    STANDARD_METHODS,
    STATES,
    ProgramState,
    StateView,
)
from twin_server.opcua.ranges import parameter_ranges
from twin_server.opcua.units import engineering_units
from twin_server.runtime import checks
from twin_server.runtime.clock import ClockStatistics
from twin_server.runtime.host import Frame, HostedSession

ROOT = "TwinServer"
TWINS = "Twins"
SESSIONS = "Sessions"

# (the limits clients are held to: shared with the web front, ``runtime/checks.py``)
MAX_REALTIME_FACTOR = checks.MAX_REALTIME_FACTOR
MAX_STEP_COUNT = checks.MAX_STEP_COUNT
#: the data types whose variables are analog items (BaseAnalogType, or AnalogItemType
#: with an EURange where their range is finite)
NUMERIC = frozenset({DataType.DOUBLE, DataType.INT32})
#: components (of a twin) or variables (of a session) built between two yields
BUILD_STEP = 64

T = TypeVar("T")


def run_steps(steps: Generator[None, None, T]) -> T:
    """Run a generator of steps (``build_session_steps``, ``NodeBatch.commit_steps``)
    to its end at once; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result


@dataclass(frozen=True, slots=True)
class Scalar:
    """A session-level variable (State, SimTime, Diagnostics.Overruns, ...)."""

    path: str  # below the session: "SimTime", "Diagnostics.LatenessP99"
    vtype: ua.VariantType
    description: str
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    writable: bool = False

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


SCALARS: tuple[Scalar, ...] = (
    Scalar("State", ua.VariantType.String,
           "Run state (OPC UA Program state machine): Ready, Running, Suspended or Halted"),
    Scalar("SimTime", ua.VariantType.Double, "Simulation time t0 + StepCount * StepSize, in s",
           unit="s"),
    Scalar("StepCount", ua.VariantType.UInt64, "Ticks taken since the last Reset"),
    Scalar("StepsRemaining", ua.VariantType.UInt64,
           "Ticks the running Step has still to take (it runs in the background); 0 when "
           "none runs; a step_completed event announces its end"),
    Scalar("StepSize", ua.VariantType.Double, "Simulated seconds per tick, in s", unit="s"),
    Scalar("RealtimeFactor", ua.VariantType.Double,
           "Simulated seconds per wall-clock second (0 = as fast as possible); writable",
           low=0.0, high=MAX_REALTIME_FACTOR, writable=True),
    Scalar("Diagnostics.Overruns", ua.VariantType.UInt64,
           "Deadlines the clock missed by more than one step period"),
    Scalar("Diagnostics.LatenessP50", ua.VariantType.Double,
           "Median lateness of tick starts against their deadlines (recent window), in ms",
           unit="ms"),
    Scalar("Diagnostics.LatenessP99", ua.VariantType.Double,
           "99th percentile lateness of tick starts (recent window), in ms", unit="ms"),
    Scalar("Diagnostics.LatenessMax", ua.VariantType.Double,
           "Largest lateness of a tick start (recent window), in ms", unit="ms"),
    Scalar("Diagnostics.StepDurationMean", ua.VariantType.Double,
           "Mean wall time of one tick's model work, in ms", unit="ms"),
    Scalar("Diagnostics.StepDurationMax", ua.VariantType.Double,
           "Longest wall time of one tick's model work, in ms", unit="ms"),
    Scalar("Diagnostics.Ticks", ua.VariantType.UInt64, "Ticks the real-time clock has taken"),
)


def scalar_values(frame: Frame, step_size: float, clock: ClockStatistics) -> tuple[Any, ...]:
    """Values of SCALARS, in their order, from one frame of the session and its clock."""
    return (
        str(frame.state),
        float(frame.sim_time),
        int(frame.step_count),
        int(frame.steps_remaining),
        float(step_size),
        float(frame.realtime_factor),
        int(clock.overruns),
        clock.lateness_p50 * 1e3,
        clock.lateness_p99 * 1e3,
        clock.lateness_max * 1e3,
        frame.step_duration_mean * 1e3,
        frame.step_duration_max * 1e3,
        int(clock.ticks),
    )


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    description: str
    inputs: tuple[Argument, ...] = ()
    outputs: tuple[Argument, ...] = ()
    #: how many trailing inputs a caller may leave out (Reset's Parameters)
    optional: int = 0


_PARAMETERS_JSON = (
    'JSON object {"component": {"parameter": value, ...}, ...}, e.g. '
    '{"tank": {"area": 2.0}}; empty or {} = none')

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("Start", "Ready -> Running: the clock starts ticking"),
    MethodSpec("Suspend", "Running -> Suspended: the clock pauses, state is kept"),
    MethodSpec("Resume", "Suspended -> Running"),
    MethodSpec("Halt", "Running or Suspended -> Halted; only Reset (or Restore) leaves Halted"),
    MethodSpec("Reset", "Any state -> Ready at t0 with initial states and no input forced "
               "(HIL bindings force theirs again); pending fixed parameters apply, then the "
               "optional Parameters (all or none)",
               (Argument("Parameters", ua.VariantType.String,
                         f"Optional new parameters: {_PARAMETERS_JSON}"),), optional=1),
    MethodSpec("ReleaseInput", "Stop forcing one input (a client's write forces it until "
               "then): it follows its connection, else its default, again. Good also for "
               "an input that was not forced; an input a HIL binding drives is forced "
               "again by the binding at once",
               (Argument("Name", ua.VariantType.String,
                         "The input as component.input, e.g. tank.inflow"),)),
    MethodSpec("ReleaseInputs", "Stop forcing every input of the session (as Reset does); "
               "the inputs HIL bindings drive are forced again by them at once",
               outputs=(Argument("Released", ua.VariantType.String,
                                 "The inputs that were forced (component.input)",
                                 array=True),)),
    MethodSpec("Step", "Take Count ticks (from Ready or Suspended; ends Suspended). Answered "
               "when done or after at most half a second; a longer Step runs on in the "
               "background (StepsRemaining counts down, a step_completed event announces its "
               "end; Suspend, Halt or Reset cancel it; Start, Resume and another Step are "
               "refused meanwhile)",
               (Argument("Count", ua.VariantType.UInt32,
                         f"Ticks to take, 1..{MAX_STEP_COUNT:,}"),)),
    MethodSpec("SetParameters", "Change parameters, all or none: tunable ones take effect "
               "at the next tick, fixed ones are refused while Running and otherwise "
               "apply at Reset",
               (Argument("Parameters", ua.VariantType.String, _PARAMETERS_JSON),)),
    MethodSpec("Snapshot", "Record the session's complete state (not while faulted); "
               "returns the id that Restore takes",
               outputs=(Argument("SnapshotId", ua.VariantType.String,
                                 "Id of the snapshot, for Restore"),)),
    MethodSpec("Restore", "Return to a recorded state (not while Running: Suspend first); "
               "ends Suspended, or Ready for a snapshot taken in Ready",
               (Argument("SnapshotId", ua.VariantType.String, "An id Snapshot returned"),)),
    MethodSpec("Fork", "A new session in exactly this session's current state; it runs "
               "at RealtimeFactor if this one runs, else it is Suspended (or Ready)",
               (Argument("Name", ua.VariantType.String,
                         "Name of the new session (letters, digits, _; not starting "
                         "with a digit)"),
                Argument("RealtimeFactor", ua.VariantType.Double,
                         f"Its real-time factor, 0..{MAX_REALTIME_FACTOR:g} (0 = as fast "
                         "as possible)")),
               (Argument("SessionNodeId", ua.VariantType.NodeId, "The new session's node"),)),
    MethodSpec("InjectFault", "Make a variable lie on purpose, from now on: stuck, offset, "
               "drift, noise, spike, quantise, delay or dropout (its status goes "
               "BadSensorFailure, its value held); shown under Faults, a fault_injected "
               "event at its start and fault_cleared at its end",
               (Argument("Target", ua.VariantType.String,
                         "The variable: component.Inputs.name or component.Outputs.name, "
                         "e.g. tank.Outputs.level"),
                Argument("Kind", ua.VariantType.String,
                         "stuck, offset, drift, noise, spike, quantise, delay or dropout"),
                Argument("Parameters", ua.VariantType.String,
                         'JSON object of the kind\'s numbers, e.g. {"sigma": 0.01, "seed": 7}: '
                         "stuck {value} (default: the value now), offset {offset}, drift "
                         "{rate} per s, noise {sigma, seed}, spike {amplitude, rate per s, "
                         "seed}, quantise {step}, delay {delay} s, dropout {}"),
                Argument("Duration", ua.VariantType.Double,
                         "Simulated seconds it acts; 0 or left out: until cleared"),
                Argument("Id", ua.VariantType.String,
                         "Its name under Faults (letters, digits, _); empty or left out: "
                         "f1, f2, ...")),
               (Argument("FaultId", ua.VariantType.String, "The fault's id, for ClearFault"),),
               optional=2),
    MethodSpec("ClearFault", "End one fault now (the variable shows its true value again)",
               (Argument("Id", ua.VariantType.String, "The fault's id (a child of Faults)"),)),
    MethodSpec("ClearFaults", "End every fault now (Reset does too, then brings back the "
               "config's)",
               outputs=(Argument("Cleared", ua.VariantType.String, "The ids of the faults "
                                 "that ended", array=True),)),
)

SERVER_METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("CreateSession", "A new session of a twin, Ready, served under Sessions",
               (Argument("Twin", ua.VariantType.String, "Name of a twin under Twins"),
                Argument("Name", ua.VariantType.String,
                         "Name of the new session (letters, digits, _; not starting "
                         "with a digit)"),
                Argument("Parameters", ua.VariantType.String,
                         f"Parameter overrides: {_PARAMETERS_JSON}")),
               (Argument("SessionNodeId", ua.VariantType.NodeId, "The new session's node"),)),
    MethodSpec("DeleteSession", "Stop and remove a session (config sessions too, until "
               "the next start)",
               (Argument("Name", ua.VariantType.String, "Name of the session"),)),
    MethodSpec("DefineTwin", "Add a twin given as TOML, checked exactly as in a config "
               "file: a [twins.<name>] table with its components and connections; an "
               "FMU's options.path is relative to the folders of server.fmu_dirs (or inside "
               "one), and options.cache_dir is refused (BadInvalidArgument)",
               (Argument("Definition", ua.VariantType.String, "The twin in TOML"),),
               (Argument("TwinNodeId", ua.VariantType.NodeId, "The new twin's node"),)),
    MethodSpec("RemoveTwin", "Remove a twin (refused while sessions of it exist)",
               (Argument("Name", ua.VariantType.String, "Name of the twin"),)),
    MethodSpec("ReloadConfig", "Load the config file again: sessions added to it start, "
               "removed ones stop, changed ones restart, untouched ones keep running; an "
               "invalid file is refused (BadConfigurationError) and nothing changes",
               outputs=(Argument("Summary", ua.VariantType.String,
                                 "What the reload changed"),)),
)


@dataclass(slots=True)
class ProgramNodes:
    """The Program state machine members of a session (``program.py``)."""

    current: ua.NodeId
    current_id: ua.NodeId
    current_number: ua.NodeId
    last: ua.NodeId
    last_id: ua.NodeId
    last_number: ua.NodeId
    last_time: ua.NodeId
    recycle_count: ua.NodeId


@dataclass(slots=True)
class SessionNodes:
    """The NodeIds of one session's subtree, and what the publisher needs to feed them."""

    root: ua.NodeId
    scalars: list[tuple[ua.NodeId, ua.VariantType]]  # aligned with SCALARS
    variables: list[tuple[VarKey, ua.NodeId, ua.VariantType]]
    methods: dict[str, ua.NodeId]
    program: ProgramNodes
    #: ForcedInputs: the inputs forced now (String[], component.input)
    forced: ua.NodeId | None = None
    all: list[ua.NodeId] = field(default_factory=list)  # every node, parents first

    def scalar(self, path: str) -> ua.NodeId:
        for spec, (nodeid, _) in zip(SCALARS, self.scalars, strict=True):
            if spec.path == path:
                return nodeid
        raise KeyError(path)


def build_root(batch: NodeBatch, objects: ua.NodeId) -> dict[str, ua.NodeId]:
    """TwinServer with its Twins and Sessions folders (event notifiers all three)
    and the server methods; returns the methods' NodeIds by name."""
    root = batch.object(objects, ROOT, ROOT, "twin-server: twins and their running sessions",
                        notifier=True)
    batch.folder(root, TWINS, TWINS, "Twin definitions", notifier=True)
    batch.folder(root, SESSIONS, SESSIONS, "Running instances of twins", notifier=True)
    return {m.name: batch.method(root, m.name, m.name, m.description, m.inputs, m.outputs)
            for m in SERVER_METHODS}


def build_twin(batch: NodeBatch, twin: TwinDefinition) -> ua.NodeId:
    """``Twins.<twin>``: the definition, read-only."""
    return run_steps(build_twin_steps(batch, twin))


def build_twin_steps(batch: NodeBatch,
                     twin: TwinDefinition) -> Generator[None, None, ua.NodeId]:
    """``build_twin`` in steps: yields every ``BUILD_STEP`` components (``run_steps``
    or ``server.in_slices`` drives it)."""
    path = f"{TWINS}.{twin.name}"
    node = batch.object(batch.nodeid(TWINS), path, twin.name, twin.description)
    batch.property(node, f"{path}.Description", "Description", twin.description,
                   ua.VariantType.String, description="What the twin models")
    batch.property(node, f"{path}.Connections", "Connections",
                   [str(c) for c in twin.connections], ua.VariantType.String, array=True,
                   description="Connections 'source.output -> target.input'")
    comps = batch.folder(node, f"{path}.Components", "Components",
                         "Components in evaluation order")
    for i, comp in enumerate(twin.components, 1):
        cpath = f"{path}.Components.{comp.name}"
        description = component_description(comp)
        cnode = batch.object(comps, cpath, comp.name, description)
        batch.property(cnode, f"{cpath}.Model", "Model", comp.model, ua.VariantType.String,
                       description="The model this component instantiates")
        batch.property(cnode, f"{cpath}.Description", "Description", description,
                       ua.VariantType.String,
                       description="What the component is (its model's description unless "
                                   "the config gives one)")
        if not i % BUILD_STEP:
            yield
    return node


def build_session(batch: NodeBatch, session: HostedSession, twin: TwinDefinition,
                  on_variable: Callable[[VarKey, Variable, ua.NodeId], None] | None = None,
                  view: StateView | None = None) -> SessionNodes:
    """``Sessions.<session>`` with its scalars, state machine, methods and every
    variable, holding the values of the session's latest frame."""
    return run_steps(build_session_steps(batch, session, twin, on_variable, view))


def build_session_steps(
        batch: NodeBatch, session: HostedSession, twin: TwinDefinition,
        on_variable: Callable[[VarKey, Variable, ua.NodeId], None] | None = None,
        view: StateView | None = None) -> Generator[None, None, SessionNodes]:
    """``build_session`` in steps: yields every ``BUILD_STEP`` variables. The values
    are the frame's when it starts."""
    frame = session.frame()
    layout = session.layout
    if view is None:
        view = ProgramState(frame.state).view()
    start = len(batch)
    # (values change at most once per publish period: MinimumSamplingInterval, in ms)
    period = 1000.0 / layout.publish_rate if layout.publish_rate > 0 else 0.0
    base = f"{SESSIONS}.{session.name}"
    root = batch.object(batch.nodeid(SESSIONS), base, session.name,
                        twin.description or f"A session of twin {twin.name}",
                        typedef=PROGRAM_STATE_MACHINE_TYPE, notifier=True)
    diagnostics: ua.NodeId | None = None
    scalars: list[tuple[ua.NodeId, ua.VariantType]] = []
    initial = scalar_values(frame, layout.step_size, session.clock_statistics())
    for spec, value in zip(SCALARS, initial, strict=True):
        parent = root
        if spec.path.startswith("Diagnostics."):
            if diagnostics is None:  # after the session's own scalars, as a browser lists them
                diagnostics = batch.folder(root, f"{base}.Diagnostics", "Diagnostics",
                                           "Clock and stepping figures (times in ms)")
            parent = diagnostics
        analog = spec.vtype is ua.VariantType.Double and (
            spec.unit is not None or spec.low is not None)
        nodeid = batch.variable(
            parent, f"{base}.{spec.path}", spec.name, value, spec.vtype,
            description=spec.description, writable=spec.writable, analog=analog,
            unit=engineering_units(spec.unit) if spec.unit else None,
            low=spec.low, high=spec.high, sampling=period)
        scalars.append((nodeid, spec.vtype))
    forced = batch.variable(
        root, f"{base}.ForcedInputs", "ForcedInputs", [], ua.VariantType.String, array=True,
        description="The inputs forced now (component.input): by a client's write until "
                    "ReleaseInput, ReleaseInputs or Reset; by a HIL binding while it drives "
                    "them")
    program = _build_program(batch, root, base, view)
    methods = {m.name: batch.method(root, f"{base}.{m.name}", m.name, m.description, m.inputs,
                                    m.outputs,
                                    namespace=0 if m.name in STANDARD_METHODS else None)
               for m in METHODS}

    components = batch.folder(root, f"{base}.Components", "Components",
                              "Components in evaluation order")
    variables: list[tuple[VarKey, ua.NodeId, ua.VariantType]] = []
    folders: dict[tuple[str, Kind], ua.NodeId] = {}
    comp_nodes: dict[str, ua.NodeId] = {}
    descriptions = {c.name: component_description(c) for c in twin.components}
    ranges = parameter_ranges(twin, layout.variables, frame.values)
    for i, ((key, var), value) in enumerate(zip(layout.variables, frame.values, strict=True), 1):
        if not i % BUILD_STEP:
            yield
        folder = folders.get((key.component, key.kind))
        if folder is None:
            cnode = comp_nodes.get(key.component)
            if cnode is None:
                cnode = batch.object(components, f"{base}.Components.{key.component}",
                                     key.component, descriptions.get(key.component, ""))
                comp_nodes[key.component] = cnode
            folder = batch.folder(cnode, f"{base}.Components.{key.component}.{key.kind.folder}",
                                  key.kind.folder)
            folders[(key.component, key.kind)] = folder
        vtype = VARIANT_TYPES[var.datatype]
        low, high = ranges.get((key.component, key.kind, key.name), (var.low, var.high))
        nodeid = batch.variable(
            folder, f"{base}.{key.path}", key.name, value, vtype,
            description=_describe(key, var), writable=key.kind is not Kind.OUTPUT,
            analog=var.datatype in NUMERIC,
            unit=engineering_units(var.unit) if var.unit else None,
            low=low, high=high, sampling=period, display_name=display_name(key))
        variables.append((key, nodeid, vtype))
        if on_variable is not None:
            on_variable(key, var, nodeid)
    nodes = SessionNodes(root, scalars, variables, methods, program, forced)
    nodes.all = yield from batch.nodeids_steps(start)
    return nodes


def _build_program(batch: NodeBatch, root: ua.NodeId, base: str,
                   view: StateView) -> ProgramNodes:
    """The ProgramStateMachineType members (``program.py``), browse names in ns 0."""
    current_id, current_number = STATES[view.state]
    current = batch.variable(
        root, f"{base}.CurrentState", "CurrentState", ua.LocalizedText(str(view.state)),
        ua.VariantType.LocalizedText, typedef=FINITE_STATE_VARIABLE_TYPE, namespace=0,
        description="Current state of the Program state machine (Ready, Running, "
                    "Suspended, Halted)")
    cid = batch.property(current, f"{base}.CurrentState.Id", "Id", current_id,
                         ua.VariantType.NodeId, namespace=0,
                         description="The standard state node (ProgramStateMachineType)")
    cnum = batch.property(current, f"{base}.CurrentState.Number", "Number", current_number,
                          ua.VariantType.UInt32, namespace=0, description="StateNumber")
    t = view.transition
    last = batch.variable(
        root, f"{base}.LastTransition", "LastTransition",
        ua.LocalizedText(t.name if t else None), ua.VariantType.LocalizedText,
        typedef=FINITE_TRANSITION_VARIABLE_TYPE, namespace=0,
        description="The latest transition of the Program state machine")
    lid = batch.property(last, f"{base}.LastTransition.Id", "Id",
                         t.nodeid if t else ua.NodeId(), ua.VariantType.NodeId, namespace=0,
                         description="The standard transition node")
    lnum = batch.property(last, f"{base}.LastTransition.Number", "Number",
                          t.number if t else 0, ua.VariantType.UInt32, namespace=0,
                          description="TransitionNumber")
    ltime = batch.property(last, f"{base}.LastTransition.TransitionTime", "TransitionTime",
                           view.transition_time, ua.VariantType.DateTime, namespace=0,
                           description="When the transition happened")
    batch.property(root, f"{base}.Deletable", "Deletable", True, ua.VariantType.Boolean,
                   namespace=0, description="DeleteSession on TwinServer removes it")
    batch.property(root, f"{base}.AutoDelete", "AutoDelete", False, ua.VariantType.Boolean,
                   namespace=0, description="Not deleted when it halts")
    recycle = batch.property(root, f"{base}.RecycleCount", "RecycleCount", view.recycle_count,
                             ua.VariantType.Int32, namespace=0,
                             description="Resets since the session was created")
    return ProgramNodes(current, cid, cnum, last, lid, lnum, ltime, recycle)


def component_description(comp: ComponentDefinition) -> str:
    """A component's description: the config's, else its model's."""
    return comp.description or comp.factory.description or f"A {comp.model} component"


def display_name(key: VarKey) -> str:
    """A model variable's DisplayName: ``component.variable`` (``tank.level``), so
    that a data view or a trend legend tells the variables apart without NodeIds."""
    return f"{key.component}.{key.name}"


def _describe(key: VarKey, var: Variable) -> str:
    text = f"{key.component}.{key.name} ({key.kind}): {var.description or var.name}"
    extras = []
    if var.unit:
        extras.append(var.unit)
    if var.low is not None and var.high is not None:
        extras.append(f"range {var.range_text()}")
    elif var.low is not None:  # (never "inf" in what a person reads: #15)
        extras.append(f"at least {var.low:g}")
    elif var.high is not None:
        extras.append(f"at most {var.high:g}")
    if var.kind is Kind.PARAMETER and not var.tunable:
        extras.append("fixed: applies at Reset")
    return f"{text} ({', '.join(extras)})" if extras else text


async def write_program(aspace: Any, nodes: ProgramNodes, view: StateView) -> None:
    """Show ``view`` on a Program's state machine nodes (a session's, a scenario or
    campaign run's); nothing where the nodes were removed meanwhile."""
    if nodes.current not in aspace:
        return
    now = datetime.now(UTC)
    state_id, number = STATES[view.state]
    t = view.transition
    values: list[tuple[ua.NodeId, ua.Variant]] = [
        (nodes.current, ua.Variant(ua.LocalizedText(str(view.state)),
                                   ua.VariantType.LocalizedText)),
        (nodes.current_id, ua.Variant(state_id, ua.VariantType.NodeId)),
        (nodes.current_number, ua.Variant(number, ua.VariantType.UInt32)),
        (nodes.recycle_count, ua.Variant(view.recycle_count, ua.VariantType.Int32)),
    ]
    if t is not None:
        values += [
            (nodes.last, ua.Variant(ua.LocalizedText(t.name), ua.VariantType.LocalizedText)),
            (nodes.last_id, ua.Variant(t.nodeid, ua.VariantType.NodeId)),
            (nodes.last_number, ua.Variant(t.number, ua.VariantType.UInt32)),
            (nodes.last_time, ua.Variant(view.transition_time, ua.VariantType.DateTime)),
        ]
    for nodeid, variant in values:
        await aspace.write_attribute_value(
            nodeid, ua.AttributeIds.Value,
            ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now))
