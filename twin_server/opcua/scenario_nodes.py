"""RunScenario and the ``Scenarios/<run>`` nodes: scenario runs on the server.

::

    Objects/TwinServer
      RunScenario(Scenario, [Options]) -> RunNodeId      an operator's
      Scenarios/                          ns;s=Scenarios  (event notifier)
        <run>                             ns;s=Scenarios.<run>  ProgramStateMachineType
          CurrentState (+Id, Number), LastTransition (+Id, Number, TransitionTime)
                            Running while it runs, then Halted (RunningToHalted)
          Halt                            (0:Halt) an operator's: stops the run
          Scenario, File, RunsOn, Seed (String)           what runs, on what
          CurrentStep (String), StepIndex (Int32, -1: none), Progress (Double, %)
          SimTime (Double, s: the scenario's time), Verdict (String: running,
          passed, failed, error), Error (String: why the run broke off), Summary
          JUnit (String: JUnit XML), Report (String: Markdown)   once it has ended
          Results/step<N>                                 one per check (N: its step)
            Name, Condition, Mode, Verdict, Message (String), Started, Decided (Double, s)

A run ends with a ``ScenarioFinishedEventType`` event (ns;s=ScenarioFinishedEventType,
a subtype of BaseEventType) from the run's node (and Scenarios, TwinServer, Server):
Message is the summary, and its own fields Run, Scenario, Verdict (String), Passed,
Failed, Errors, Skipped (UInt32) and SimTime (Double). The server keeps the nodes
of every running run and of the last ``server.scenario_reports`` finished ones.

Status codes of RunScenario: BadInvalidArgument for a scenario with errors (the
message names each: file, key, column) or bad Options, BadNotFound for an unknown
scenario file or fork session, BadResourceUnavailable beyond the runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import BaseEvent

from twin_server.config.security import LimitsConfig
from twin_server.engine.session import RunState
from twin_server.errors import TwinServerError
from twin_server.opcua import events as ev
from twin_server.opcua.methods import ArgumentError, MethodCounter, _Call, make_callback
from twin_server.opcua.nodes import Argument, NodeBatch
from twin_server.opcua.patches import monitoring
from twin_server.opcua.program import (
    PROGRAM_STATE_MACHINE_TYPE,
    TRANSITIONS,
    StateView,
)
from twin_server.opcua.tree import ROOT, MethodSpec, _build_program, write_program
from twin_server.opcua.units import engineering_units
from twin_server.runtime.checks import ArgumentRefused
from twin_server.scenarios.results import CheckResult, Verdict
from twin_server.scenarios.service import ScenarioRun, ScenarioService, counts

SCENARIOS = "Scenarios"
EVENT_TYPE = "ScenarioFinishedEventType"
SEVERITY = {Verdict.PASSED: 100, Verdict.FAILED: 700, Verdict.ERROR: 800, Verdict.SKIPPED: 100}

RUN_SCENARIO = MethodSpec(
    "RunScenario",
    "Run a test scenario on a fresh session (or a fork of a served one) in the "
    "background, as 'twin-server test --config' would (same trace and verdicts for a "
    "seed); the run shows under Scenarios/<run> and ends with a ScenarioFinished event",
    (Argument("Scenario", ua.VariantType.String,
              "The scenario in TOML, or the name of a scenario file relative to the "
              "scenario folders (server.scenario_dirs; default the config file's folder), "
              "e.g. scenarios/tank_setpoint_step.toml"),
     Argument("Options", ua.VariantType.String,
              'Optional JSON: {"seed": 7} gives every seed parameter 7; {"fork": "tank"} '
              "starts from the current state of served session tank")),
    (Argument("RunNodeId", ua.VariantType.NodeId, "The run's node under Scenarios"),),
    optional=1)

HALT = MethodSpec("Halt", "Stop the run at its next tick: its verdict is then error "
                          "(halted), its reports say how far it came")

_S, _D, _I = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.Int32
_VALUE = ua.AttributeIds.Value

Getter = Callable[[ScenarioRun], Any]
#: (name, type, description, value) of every run's variables
RUN_VARIABLES: tuple[tuple[str, ua.VariantType, str, Getter], ...] = (
    ("Scenario", _S, "The scenario's name", lambda r: r.scenario.name),
    ("File", _S, "Where the scenario came from (RunScenario: given as text)",
     lambda r: r.scenario.file),
    ("RunsOn", _S, "The session the run steps: a fresh one, or a fork", lambda r: r.session),
    ("Seed", _S, "The seed given to every 'seed' parameter (empty: none)",
     lambda r: _seed(r)),
    ("CurrentStep", _S, "The step running now (empty once ended)", lambda r: r.current_step),
    ("StepIndex", _I, "Index of the step running now in the scenario's steps (-1: none)",
     lambda r: r.step_index),
    ("Progress", _D, "Steps done, in per cent of all", lambda r: float(r.progress)),
    ("SimTime", _D, "Simulated seconds since the run began", lambda r: float(r.sim_time)),
    ("Verdict", _S, "running, passed, failed or error", lambda r: r.verdict),
    ("Error", _S, "Why the run broke off (empty if it did not)",
     lambda r: (r.result.error or "") if r.result is not None else ""),
    ("Summary", _S, "One line: verdict, checks, times",
     lambda r: r.result.summary() if r.result is not None else ""),
    ("JUnit", _S, "The JUnit XML report (once the run has ended)", lambda r: r.junit),
    ("Report", _S, "The Markdown report (once the run has ended)", lambda r: r.markdown),
)
_UNITS = {"Progress": "%", "SimTime": "s"}

CheckGetter = Callable[[CheckResult], Any]
CHECK_VARIABLES: tuple[tuple[str, ua.VariantType, str, CheckGetter], ...] = (
    ("Name", _S, "The check's name (its test case in JUnit)", lambda c: c.name),
    ("Condition", _S, "The condition it checks", lambda c: c.condition),
    ("Mode", _S, "now, within or always", lambda c: c.mode),
    ("Verdict", _S, "passed, failed, error or skipped (not decided yet, or not reached)",
     lambda c: str(c.verdict)),
    ("Message", _S, "What was seen", lambda c: c.message),
    ("Started", _D, "Scenario time when the check began, in s", lambda c: float(c.started)),
    ("Decided", _D, "Scenario time of the verdict, in s", lambda c: float(c.decided)),
)


def _seed(run: ScenarioRun) -> str:
    seed = run.options.seed if run.options.seed is not None else run.scenario.header.seed
    return "" if seed is None else str(seed)


@dataclass(slots=True)
class _RunNodes:
    root: ua.NodeId
    all: list[ua.NodeId]
    values: list[tuple[ua.NodeId, ua.VariantType, Getter]]
    checks: list[tuple[int, list[tuple[ua.NodeId, ua.VariantType, CheckGetter]]]]
    program: Any  # tree.ProgramNodes
    sent: dict[ua.NodeId, Any] = field(default_factory=dict)


class _FinishedEvent(BaseEvent):  # type: ignore[misc]  # asyncua: untyped to mypy
    def __init__(self, event_type: ua.NodeId) -> None:
        super().__init__()
        self.EventType = event_type
        for name, vtype, default in _EVENT_FIELDS:
            self.add_property(name, default, vtype)


_EVENT_FIELDS: tuple[tuple[str, ua.VariantType, Any], ...] = (
    ("Run", _S, ""), ("Scenario", _S, ""), ("Verdict", _S, ""),
    ("Passed", ua.VariantType.UInt32, 0), ("Failed", ua.VariantType.UInt32, 0),
    ("Errors", ua.VariantType.UInt32, 0), ("Skipped", ua.VariantType.UInt32, 0),
    ("SimTime", _D, 0.0),
)


async def register_event_type(server: Server, namespace: int) -> ua.NodeId:
    """Add ScenarioFinishedEventType below BaseEventType."""
    base = server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
    etype = await base.add_object_type(ua.NodeId(EVENT_TYPE, namespace),
                                       ua.QualifiedName(EVENT_TYPE, namespace))
    for name, vtype, _ in _EVENT_FIELDS:
        await etype.add_property(ua.NodeId(f"{EVENT_TYPE}.{name}", namespace),
                                 ua.QualifiedName(name, namespace),
                                 ua.get_default_value(vtype), varianttype=vtype)
    return etype.nodeid


class ScenarioNodes:
    """The RunScenario method and the nodes of the service's runs."""

    def __init__(self, server: Server, namespace: int, batch: Callable[[], NodeBatch],
                 emitter: ev.Emitter, service: ScenarioService, *,
                 limits: LimitsConfig) -> None:
        self._server = server
        self._ns = namespace
        self._batch = batch
        self._emitter = emitter
        self.service = service
        self._limits = limits
        self._runs: dict[str, _RunNodes] = {}
        self._event_type: ua.NodeId | None = None
        self.counter = MethodCounter()
        service.on_started.append(self._started)
        service.on_finished.append(self._finished)
        service.on_removed.append(self._removed)

    @property
    def _aspace(self) -> Any:
        return self._server.iserver.aspace

    def nodeid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self._ns)

    async def build(self) -> None:
        """Scenarios below TwinServer, RunScenario on TwinServer, the event type."""
        self._event_type = await register_event_type(self._server, self._ns)
        batch = self._batch()
        root = self.nodeid(ROOT)
        batch.folder(root, SCENARIOS, SCENARIOS,
                     "Test scenario runs (RunScenario): running ones and the last finished",
                     notifier=True)
        method = batch.method(root, RUN_SCENARIO.name, RUN_SCENARIO.name,
                              RUN_SCENARIO.description, RUN_SCENARIO.inputs,
                              RUN_SCENARIO.outputs)
        batch.commit(self._aspace)
        call = _Call(RUN_SCENARIO, "TwinServer", self.counter, limits=self._limits)
        self._aspace.add_method_callback(method, make_callback(call, self._run_scenario))

    async def _run_scenario(self, scenario: str, options: str = "") -> list[ua.Variant]:
        try:
            run = await self.service.run_scenario(scenario, options)
        except ArgumentRefused as exc:
            raise ArgumentError(exc.index, exc.error) from None
        return [ua.Variant(self._runs[run.name].root, ua.VariantType.NodeId)]

    # -- a run's nodes -------------------------------------------------------------
    async def _started(self, run: ScenarioRun) -> None:
        batch = self._batch()
        base = f"{SCENARIOS}.{run.name}"
        root = batch.object(self.nodeid(SCENARIOS), base, run.name,
                            f"Scenario {run.scenario.name!r} on {run.session}",
                            typedef=PROGRAM_STATE_MACHINE_TYPE, notifier=True)
        view = StateView(RunState.RUNNING, TRANSITIONS[(RunState.READY, RunState.RUNNING)],
                         datetime.now(UTC), 0)
        program = _build_program(batch, root, base, view)
        values = []
        for name, vtype, desc, get in RUN_VARIABLES:
            unit = _UNITS.get(name)
            nodeid = batch.variable(root, f"{base}.{name}", name, get(run), vtype,
                                    description=desc, analog=unit is not None,
                                    unit=engineering_units(unit) if unit else None)
            values.append((nodeid, vtype, get))
        halt = batch.method(root, f"{base}.Halt", "Halt", HALT.description, namespace=0)
        results = batch.folder(root, f"{base}.Results", "Results",
                               "One object per check, named by its step")
        checks = []
        for check in run.checks:
            cbase = f"{base}.Results.step{check.step}"
            cnode = batch.object(results, cbase, f"step{check.step}", check.name)
            checks.append((check.step, [
                (batch.variable(cnode, f"{cbase}.{name}", name, get(check), vtype,
                                description=desc), vtype, get)
                for name, vtype, desc, get in CHECK_VARIABLES]))
        nodes = _RunNodes(root, batch.nodeids, values, checks, program)
        batch.commit(self._aspace)
        self._runs[run.name] = nodes
        call = _Call(HALT, run.name, self.counter, limits=self._limits,
                     log_context={"run": run.name})
        self._aspace.add_method_callback(halt, make_callback(call, _halter(run)))

    async def publish(self) -> int:
        """Write what changed in every running run's nodes; how many values."""
        written = 0
        for run in self.service:
            nodes = self._runs.get(run.name)
            if nodes is not None and run.result is None:
                written += await self._write(run, nodes)
        return written

    async def publish_forever(self, period: float = 0.25) -> None:
        """Keep the running runs' nodes current until cancelled."""
        while True:
            await self.publish()
            await asyncio.sleep(period)

    async def _write(self, run: ScenarioRun, nodes: _RunNodes) -> int:
        aspace = self._aspace
        now = datetime.now(UTC)
        pairs: list[tuple[ua.NodeId, ua.VariantType, Any]] = [
            (nodeid, vtype, get(run)) for nodeid, vtype, get in nodes.values]
        by_step = {c.step: c for c in run.checks}
        for step, items in nodes.checks:
            check = by_step.get(step)
            if check is not None:
                pairs += [(nodeid, vtype, get(check)) for nodeid, vtype, get in items]
        written = 0
        for nodeid, vtype, value in pairs:
            if nodes.sent.get(nodeid, _UNSENT) == value or nodeid not in aspace:
                continue
            await aspace.write_attribute_value(nodeid, _VALUE, ua.DataValue(
                ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now))
            nodes.sent[nodeid] = value
            written += 1
        return written

    async def _finished(self, run: ScenarioRun) -> None:
        nodes = self._runs.get(run.name)
        if nodes is None:
            return
        await self._write(run, nodes)
        await self._write_halted(nodes)
        result = run.result
        assert result is not None and self._event_type is not None
        event = _FinishedEvent(self._event_type)
        tally = counts(run)
        event.Run = run.name
        event.Scenario = run.scenario.name
        event.Verdict = str(result.verdict)
        event.Passed = tally[Verdict.PASSED]
        event.Failed = tally[Verdict.FAILED]
        event.Errors = tally[Verdict.ERROR]
        event.Skipped = tally[Verdict.SKIPPED]
        event.SimTime = float(result.sim_time)
        chain = (nodes.root, self.nodeid(SCENARIOS), self.nodeid(ROOT), ev.SERVER_OBJECT)
        await self._emitter.emit(event, chain, run.name, result.summary(),
                                 SEVERITY[result.verdict])

    async def _write_halted(self, nodes: _RunNodes) -> None:
        halted = TRANSITIONS[(RunState.RUNNING, RunState.HALTED)]
        await write_program(self._aspace, nodes.program,
                            StateView(RunState.HALTED, halted, datetime.now(UTC), 0))

    async def _removed(self, run: ScenarioRun) -> None:
        nodes = self._runs.pop(run.name, None)
        if nodes is None:
            return
        await remove_run(self._server, self.nodeid(SCENARIOS), nodes.root, nodes.all)


async def remove_run(server: Server, folder: ua.NodeId, root: ua.NodeId,
                     nodes: list[ua.NodeId]) -> None:
    """Take a run's ``nodes`` (its object ``root`` under ``folder`` and all below it)
    out of the address space; their monitored items are told first."""
    aspace = server.iserver.aspace
    await monitoring.detach(aspace, nodes)
    parent = aspace[folder]
    parent.references[:] = [r for r in parent.references if r.NodeId != root]
    items = [ua.DeleteNodesItem(NodeId=n, DeleteTargetReferences=False)
             for n in reversed(nodes)]
    with contextlib.suppress(TwinServerError):
        server.iserver.node_mgt_service.delete_nodes(
            ua.DeleteNodesParameters(NodesToDelete=items))


_UNSENT = object()


def _halter(run: ScenarioRun) -> Callable[[], Awaitable[None]]:
    async def halt() -> None:
        run.halt("halted by a client (Halt on the run's node)")
    return halt
