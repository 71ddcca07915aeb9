"""The shape of our address space (DESIGN.md, "The address space").

::

    Objects/TwinServer                              ns;s=TwinServer
      Twins/<twin>                                  ns;s=Twins.<twin>
        Description, Connections (String[])         properties
        Components/<component>                      ns;s=Twins.<twin>.Components.<component>
          Model, Description                        properties
      Sessions/<session>                            ns;s=Sessions.<session>
        State, SimTime, StepCount, StepSize, RealtimeFactor
        Diagnostics/{Overruns, LatenessP50, LatenessP99, LatenessMax,
                     StepDurationMean, StepDurationMax, Ticks}
        Start, Suspend, Resume, Halt, Reset, Step   methods
        Components/<component>/{Inputs,Outputs,States,Parameters}/<var>

Only the kind folders a component has are created (a source has no Inputs).
Diagnostics times are in milliseconds, as their EngineeringUnits and
descriptions say; SimTime and StepSize are in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from asyncua import ua

from twin_server.engine.clock import ClockStatistics
from twin_server.engine.session import Session, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.models.base import DataType, Kind, Variable
from twin_server.opcua.nodes import VARIANT_TYPES, Argument, NodeBatch
from twin_server.opcua.units import engineering_units

ROOT = "TwinServer"
TWINS = "Twins"
SESSIONS = "Sessions"

#: highest real-time factor a client may set (as the config allows)
MAX_REALTIME_FACTOR = 1000.0
#: most ticks one Step call may take
MAX_STEP_COUNT = 1_000_000


class StatisticsSource(Protocol):
    """What the address space needs of a session's clock (``engine.clock.Clock``)."""

    def statistics(self) -> ClockStatistics: ...


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


def scalar_values(session: Session, clock: StatisticsSource | None) -> tuple[Any, ...]:
    """Current values of SCALARS, in their order."""
    stats = session.statistics()
    if clock is not None:
        c = clock.statistics()
        overruns, p50, p99, lmax, ticks = (c.overruns, c.lateness_p50, c.lateness_p99,
                                          c.lateness_max, c.ticks)
    else:
        overruns, p50, p99, lmax, ticks = 0, 0.0, 0.0, 0.0, 0
    return (
        str(session.state),
        float(session.sim_time),
        int(session.step_count),
        float(session.step_size),
        float(session.realtime_factor),
        int(overruns),
        p50 * 1e3,
        p99 * 1e3,
        lmax * 1e3,
        stats.step_duration_mean * 1e3,
        stats.step_duration_max * 1e3,
        int(ticks),
    )


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    description: str
    inputs: tuple[Argument, ...] = ()


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("Start", "Ready -> Running: the clock starts ticking"),
    MethodSpec("Suspend", "Running -> Suspended: the clock pauses, state is kept"),
    MethodSpec("Resume", "Suspended -> Running"),
    MethodSpec("Halt", "Running or Suspended -> Halted; only Reset leaves Halted"),
    MethodSpec("Reset", "Any state -> Ready at t0 with initial states; pending fixed "
               "parameters apply"),
    MethodSpec("Step", "Take Count ticks now (from Ready or Suspended; ends Suspended)",
               (Argument("Count", ua.VariantType.UInt32,
                         f"Ticks to take, 1..{MAX_STEP_COUNT:,}"),)),
)


@dataclass(slots=True)
class SessionNodes:
    """The NodeIds of one session's subtree, and what the publisher needs to feed them."""

    root: ua.NodeId
    scalars: list[tuple[ua.NodeId, ua.VariantType]]  # aligned with SCALARS
    variables: list[tuple[VarKey, ua.NodeId, ua.VariantType]]
    methods: dict[str, ua.NodeId]
    all: list[ua.NodeId] = field(default_factory=list)  # every node, parents first

    def scalar(self, path: str) -> ua.NodeId:
        for spec, (nodeid, _) in zip(SCALARS, self.scalars, strict=True):
            if spec.path == path:
                return nodeid
        raise KeyError(path)


def build_root(batch: NodeBatch, objects: ua.NodeId) -> None:
    root = batch.folder(objects, ROOT, ROOT, "twin-server: twins and their running sessions")
    batch.folder(root, TWINS, TWINS, "Twin definitions (read-only)")
    batch.folder(root, SESSIONS, SESSIONS, "Running instances of twins")


def build_twin(batch: NodeBatch, twin: TwinDefinition) -> ua.NodeId:
    """``Twins.<twin>``: the definition, read-only."""
    path = f"{TWINS}.{twin.name}"
    node = batch.object(batch.nodeid(TWINS), path, twin.name, twin.description)
    batch.property(node, f"{path}.Description", "Description", twin.description,
                   ua.VariantType.String, description="What the twin models")
    batch.property(node, f"{path}.Connections", "Connections",
                   [str(c) for c in twin.connections], ua.VariantType.String, array=True,
                   description="Connections 'source.output -> target.input'")
    comps = batch.folder(node, f"{path}.Components", "Components",
                         "Components in evaluation order")
    for comp in twin.components:
        cpath = f"{path}.Components.{comp.name}"
        cnode = batch.object(comps, cpath, comp.name, comp.description)
        batch.property(cnode, f"{cpath}.Model", "Model", comp.model, ua.VariantType.String,
                       description="The model this component instantiates")
        batch.property(cnode, f"{cpath}.Description", "Description", comp.description,
                       ua.VariantType.String)
    return node


def build_session(batch: NodeBatch, session: Session, clock: StatisticsSource | None,
                  on_variable: Callable[[VarKey, Variable, ua.NodeId], None] | None = None,
                  ) -> SessionNodes:
    """``Sessions.<session>`` with its scalars, methods and every variable."""
    start = len(batch)
    base = f"{SESSIONS}.{session.name}"
    root = batch.object(batch.nodeid(SESSIONS), base, session.name,
                        session.twin.description or f"A session of twin {session.twin.name}")
    diagnostics: ua.NodeId | None = None
    scalars: list[tuple[ua.NodeId, ua.VariantType]] = []
    for spec, value in zip(SCALARS, scalar_values(session, clock), strict=True):
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
            low=spec.low, high=spec.high)
        scalars.append((nodeid, spec.vtype))
    methods = {m.name: batch.method(root, f"{base}.{m.name}", m.name, m.description, m.inputs)
               for m in METHODS}

    components = batch.folder(root, f"{base}.Components", "Components",
                              "Components in evaluation order")
    values = session.values()
    variables: list[tuple[VarKey, ua.NodeId, ua.VariantType]] = []
    folders: dict[tuple[str, Kind], ua.NodeId] = {}
    comp_nodes: dict[str, ua.NodeId] = {}
    descriptions = {c.name: c.description for c in session.twin.components}
    for key, var in session.variables():
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
        numeric = var.datatype in (DataType.DOUBLE, DataType.INT32)
        analog = numeric and bool(var.unit or var.low is not None or var.high is not None)
        nodeid = batch.variable(
            folder, f"{base}.{key.path}", key.name, values[key], vtype,
            description=_describe(var), writable=key.kind is not Kind.OUTPUT,
            analog=analog, unit=engineering_units(var.unit) if var.unit else None,
            low=var.low, high=var.high)
        variables.append((key, nodeid, vtype))
        if on_variable is not None:
            on_variable(key, var, nodeid)
    nodes = SessionNodes(root, scalars, variables, methods)
    nodes.all = batch.nodeids[start:]
    return nodes


def _describe(var: Variable) -> str:
    text = var.description or var.name
    extras = []
    if var.unit:
        extras.append(var.unit)
    if var.low is not None or var.high is not None:
        extras.append(f"range {var.range_text()}")
    if var.kind is Kind.PARAMETER and not var.tunable:
        extras.append("fixed: applies at Reset")
    return f"{text} ({', '.join(extras)})" if extras else text
