"""RunScenario and the ``Scenarios/<run>`` nodes: scenario runs on the server.

::

    Objects/TwinServer
      RunScenario(Scenario, [Options]) -> RunNodeId      an operator's
      Scenarios/                          ns;s=Scenarios  (event notifier)
        <run>                             ns;s=Scenarios.<run>  ProgramStateMachineType
          CurrentState (+Id, Number), LastTransition (+Id, Number, TransitionTime)
                            Running while it runs, then Halted (RunningToHalted)
          Halt                            (0:Halt) an operator's: stops the run
          Scenario, File, RunsOn, Seed, User (String)     what runs, on what, for whom
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

from typing import Any, ClassVar

from asyncua import ua

from twin_server.opcua.methods import ArgumentError
from twin_server.opcua.nodes import Argument, NodeBatch
from twin_server.opcua.run_nodes import (
    EventFields,
    Pairs,
    RunObjects,
    Variables,
)
from twin_server.opcua.tree import MethodSpec
from twin_server.runtime.checks import ArgumentRefused
from twin_server.scenarios.results import CheckResult, Verdict
from twin_server.scenarios.service import ScenarioRun, ScenarioService, counts
from twin_server.security.guard import current_user_name

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

#: (name, type, description, value) of every run's variables
RUN_VARIABLES: Variables = (
    ("Scenario", _S, "The scenario's name", lambda r: r.scenario.name),
    ("File", _S, "Where the scenario came from (RunScenario: given as text)",
     lambda r: r.scenario.file),
    ("RunsOn", _S, "The session the run steps: a fresh one, or a fork", lambda r: r.session),
    ("Seed", _S, "The seed given to every 'seed' parameter (empty: none)",
     lambda r: _seed(r)),
    ("User", _S, "Who started the run (the client's user name, anonymous)",
     lambda r: r.user),
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

CHECK_VARIABLES: Variables = (
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


_EVENT_FIELDS: EventFields = (
    ("Run", _S, ""), ("Scenario", _S, ""), ("Verdict", _S, ""),
    ("Passed", ua.VariantType.UInt32, 0), ("Failed", ua.VariantType.UInt32, 0),
    ("Errors", ua.VariantType.UInt32, 0), ("Skipped", ua.VariantType.UInt32, 0),
    ("SimTime", _D, 0.0),
)

#: a run's Results: (step, [(node, type, value of the check)])
Checks = list[tuple[int, list[tuple[ua.NodeId, ua.VariantType, Any]]]]


class ScenarioNodes(RunObjects[ScenarioRun]):
    """The RunScenario method and the nodes of the service's runs."""

    FOLDER = SCENARIOS
    FOLDER_DESCRIPTION = "Test scenario runs (RunScenario): running ones and the last finished"
    EVENT_TYPE = EVENT_TYPE
    EVENT_FIELDS = _EVENT_FIELDS
    START = RUN_SCENARIO
    HALT = HALT
    VARIABLES = RUN_VARIABLES
    UNITS: ClassVar[dict[str, str]] = {"Progress": "%", "SimTime": "s"}
    LOG_KEY = "run"
    service: ScenarioService

    async def start(self, *arguments: Any) -> ScenarioRun:
        try:
            return await self.service.run_scenario(*arguments, user=current_user_name())
        except ArgumentRefused as exc:
            raise ArgumentError(exc.index, exc.error) from None

    def describe(self, run: ScenarioRun) -> str:
        return f"Scenario {run.scenario.name!r} on {run.session}"

    def running(self, run: ScenarioRun) -> bool:
        return run.result is None

    def halt(self, run: ScenarioRun) -> None:
        run.halt("halted by a client (Halt on the run's node)")

    def build_extra(self, batch: NodeBatch, root: ua.NodeId, base: str,
                    run: ScenarioRun) -> Checks:
        results = batch.folder(root, f"{base}.Results", "Results",
                               "One object per check, named by its step")
        checks: Checks = []
        for check in run.checks:
            cbase = f"{base}.Results.step{check.step}"
            cnode = batch.object(results, cbase, f"step{check.step}", check.name)
            checks.append((check.step, [
                (batch.variable(cnode, f"{cbase}.{name}", name, get(check), vtype,
                                description=desc), vtype, get)
                for name, vtype, desc, get in CHECK_VARIABLES]))
        return checks

    def extra_pairs(self, run: ScenarioRun, extra: Checks) -> Pairs:
        by_step: dict[int, CheckResult] = {c.step: c for c in run.checks}
        pairs: Pairs = []
        for step, items in extra:
            check = by_step.get(step)
            if check is not None:
                pairs += [(nodeid, vtype, get(check)) for nodeid, vtype, get in items]
        return pairs

    def finished(self, run: ScenarioRun) -> tuple[dict[str, Any], str, int]:
        result = run.result
        assert result is not None
        tally = counts(run)
        fields = {"Run": run.name, "Scenario": run.scenario.name,
                  "Verdict": str(result.verdict), "Passed": tally[Verdict.PASSED],
                  "Failed": tally[Verdict.FAILED], "Errors": tally[Verdict.ERROR],
                  "Skipped": tally[Verdict.SKIPPED], "SimTime": float(result.sim_time)}
        return fields, result.summary(), SEVERITY[result.verdict]
