"""RunScenario on a daemon over OPC UA: a run under Scenarios/<run> with its state,
step, progress and results, its end event, its reports, the last N kept; the same
trace and verdicts as offline for a seed; forks; bad scenarios refused with
BadInvalidArgument naming file, key and column; file names confined to the
scenario folders (``scenarios/service.py``, ``opcua/scenario_nodes.py``)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.events import RunEvents
from tests.opcua.conftest import MODULE_LOOP, run_daemon, stop_daemon
from tests.scenarios.conftest import CONFIG
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon
from twin_server.scenarios.offline import prepare, run_prepared
from twin_server.scenarios.schema import parse_scenario
from twin_server.security.roles import Role, method_role

pytestmark = [MODULE_LOOP, pytest.mark.timeout(60)]

PASSING = """
[scenario]
name = "fills"
session = "plant"
[[steps]]
set = "tank.inflow"
value = 0.05
[[steps]]
name = "the level rises"
check = "tank.level > 0.55"
within = 30.0
[[steps]]
check = "sensor.output == tank.level ± 0.05"
always = 5.0
"""

FAILING = """
[scenario]
name = "too_high"
session = "plant"
[[steps]]
wait = 2.0
[[steps]]
name = "overflows at once"
check = "tank.level > 1.9"
"""

LONG = """
[scenario]
name = "long"
session = "plant"
[[steps]]
wait = 1.0
[[steps]]
wait = 1e7
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenario folder: a file in it, a secret beside it, a symlink out."""
    root = tmp_path_factory.mktemp("scenario-dirs")
    inside = root / "scenarios"
    (inside / "sub").mkdir(parents=True)
    (inside / "sub" / "fills.toml").write_text(PASSING)
    (root / "secret.toml").write_text(PASSING)
    (inside / "out.toml").symlink_to(root / "secret.toml")
    return inside


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(folder: Path) -> AsyncIterator[Daemon]:
    text = (f'[server]\nscenario_dirs = ["{folder}"]\nscenario_reports = 2\n'
            '[server.security]\npolicies = ["None"]\nanonymous = "operator"\n' + CONFIG)
    daemon, task = await run_daemon(text)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)
        assert daemon.scenarios is not None
        assert all(r.result is not None for r in daemon.scenarios.runs.values()), (
            "a run's thread outlived the daemon")


@pytest_asyncio.fixture(loop_scope="module")
async def client(daemon: Daemon) -> AsyncIterator[tuple[Client, int, RunEvents]]:
    async with Client(daemon.endpoint_url, timeout=10) as c:
        ns = await c.get_namespace_index(NAMESPACE_URI)
        events = RunEvents()
        sub = await c.create_subscription(20, events)
        etype = c.get_node(ua.NodeId("ScenarioFinishedEventType", ns))
        await sub.subscribe_events(c.get_node(ua.NodeId("Scenarios", ns)), etype)
        yield c, ns, events
        await sub.delete()


async def _run(c: Client, ns: int, scenario: str,
               options: str | None = None) -> ua.CallMethodResult:
    args = [ua.Variant(scenario, ua.VariantType.String)]
    if options is not None:
        args.append(ua.Variant(options, ua.VariantType.String))
    (result,) = await c.uaclient.call([ua.CallMethodRequest(
        ObjectId=ua.NodeId("TwinServer", ns), MethodId=ua.NodeId("RunScenario", ns),
        InputArguments=args)])
    return result


async def _started(c: Client, ns: int, scenario: str, options: str | None = None) -> str:
    """Start a run; its name."""
    result = await _run(c, ns, scenario, options)
    assert result.StatusCode.is_good(), _info(result)
    nodeid = result.OutputArguments[0].Value
    return str(nodeid.Identifier).removeprefix("Scenarios.")


def _info(result: ua.CallMethodResult) -> str:
    return " | ".join(d.AdditionalInfo or "" for d in result.InputArgumentDiagnosticInfos or [])


async def _read(c: Client, ns: int, path: str) -> Any:
    return await c.get_node(ua.NodeId(f"Scenarios.{path}", ns)).read_value()


class TestRunScenario:
    async def test_passing_run(self, client: tuple[Client, int, RunEvents]) -> None:
        """A run shows Halted, passed, its checks and reports, and ends with an event."""
        c, ns, events = client
        run = await _started(c, ns, PASSING, '{"seed": 3}')
        event = await events.wait_for(run)
        assert (event.Verdict, event.Passed, event.Failed, event.Scenario) == (
            "passed", 2, 0, "fills")
        assert event.SourceName == run and "PASSED" in event.Message.Text
        assert (await _read(c, ns, f"{run}.CurrentState")).Text == "Halted"
        assert (await _read(c, ns, f"{run}.LastTransition")).Text == "RunningToHalted"
        assert await _read(c, ns, f"{run}.Verdict") == "passed"
        assert await _read(c, ns, f"{run}.Progress") == 100.0
        assert await _read(c, ns, f"{run}.Seed") == "3"
        assert await _read(c, ns, f"{run}.User") == "anonymous"
        assert await _read(c, ns, f"{run}.Results.step1.Name") == "the level rises"
        assert await _read(c, ns, f"{run}.Results.step1.Verdict") == "passed"
        assert 0 < await _read(c, ns, f"{run}.Results.step1.Decided") < 30
        junit = ET.fromstring(await _read(c, ns, f"{run}.JUnit"))
        assert junit.get("tests") == "2" and junit.get("failures") == "0"
        assert (await _read(c, ns, f"{run}.Report")).startswith("# fills: PASSED")

    async def test_failing_run(self, client: tuple[Client, int, RunEvents]) -> None:
        """A failing check makes the run's verdict failed, with the values seen."""
        c, ns, events = client
        run = await _started(c, ns, FAILING)
        event = await events.wait_for(run)
        assert (event.Verdict, event.Failed) == ("failed", 1)
        assert event.Severity == 700
        assert await _read(c, ns, f"{run}.Results.step1.Verdict") == "failed"
        junit = await _read(c, ns, f"{run}.JUnit")
        assert "<failure" in junit and "tank.level" in junit

    async def test_running_then_halted(self, client: tuple[Client, int, RunEvents]) -> None:
        """A long run shows Running with its step and progress; Halt ends it (error)."""
        c, ns, events = client
        run = await _started(c, ns, LONG)
        assert (await _read(c, ns, f"{run}.CurrentState")).Text == "Running"
        async with asyncio.timeout(10):
            while await _read(c, ns, f"{run}.StepIndex") != 1:
                await asyncio.sleep(0.05)
        assert await _read(c, ns, f"{run}.CurrentStep") == "wait 1e+07 s"
        assert await _read(c, ns, f"{run}.Progress") == 50.0
        assert await _read(c, ns, f"{run}.Verdict") == "running"
        halt = ua.NodeId(f"Scenarios.{run}.Halt", ns)
        (result,) = await c.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId(f"Scenarios.{run}", ns), MethodId=halt)])
        assert result.StatusCode.is_good()
        event = await events.wait_for(run)
        assert event.Verdict == "error"
        assert "halted by a client" in await _read(c, ns, f"{run}.Error")
        (again,) = await c.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId(f"Scenarios.{run}", ns), MethodId=halt)])
        assert again.StatusCode.name == "BadInvalidState"

    async def test_last_runs_kept(self, daemon: Daemon,
                                  client: tuple[Client, int, RunEvents]) -> None:
        """Beyond server.scenario_reports finished runs, the oldest one's nodes go."""
        c, ns, events = client
        runs = [await _started(c, ns, FAILING) for _ in range(3)]
        for run in runs:
            await events.wait_for(run)
        assert daemon.scenarios is not None
        assert runs[0] not in daemon.scenarios.runs
        with pytest.raises(ua.UaStatusCodeError, match="BadNodeIdUnknown"):
            await _read(c, ns, f"{runs[0]}.Verdict")
        assert await _read(c, ns, f"{runs[2]}.Verdict") == "failed"


class TestDeterminism:
    async def test_same_trace_as_offline(self, daemon: Daemon,
                                         client: tuple[Client, int, RunEvents]) -> None:
        """The same seed gives the same trace and verdicts via the method and offline;
        another seed another trace."""
        c, ns, events = client
        run = await _started(c, ns, PASSING, '{"seed": 11}')
        await events.wait_for(run)
        assert daemon.scenarios is not None
        served = daemon.scenarios.runs[run].result
        assert served is not None
        offline = await run_prepared(prepare(parse_scenario(PASSING), daemon.loaded, seed=11))
        other = await run_prepared(prepare(parse_scenario(PASSING), daemon.loaded, seed=12))
        assert served.trace.times == offline.trace.times
        assert served.trace.values == offline.trace.values
        assert served.trace.values != other.trace.values
        assert [(k.verdict, k.decided, k.seen) for k in served.checks] == [
            (k.verdict, k.decided, k.seen) for k in offline.checks]


class TestFork:
    async def test_fork_starts_from_the_served_state(
            self, daemon: Daemon, client: tuple[Client, int, RunEvents]) -> None:
        """With fork, the run starts at the served session's tick and leaves it alone."""
        c, ns, events = client
        served = daemon.session("plant")
        await served.suspend()  # (it runs in real time: held at one tick meanwhile)
        try:
            frame = served.frame()
            assert frame.step_count > 0
            run = await _started(c, ns, PASSING, '{"fork": "plant"}')
            event = await events.wait_for(run)
            assert event.Verdict == "passed"
            assert await _read(c, ns, f"{run}.RunsOn") == (
                f"a fork of session 'plant' at tick {frame.step_count}")
            assert served.frame().step_count == frame.step_count
            assert not await served.forced()
            assert daemon.scenarios is not None
            result = daemon.scenarios.runs[run].result
            assert result is not None
            level = next(v for (k, _), v in zip(served.layout.variables, frame.values,
                                                 strict=True)
                         if k.path.endswith("tank.Outputs.level"))
            assert result.trace.values["tank.level"][0] == level
        finally:
            await served.resume()

    async def test_unknown_session(self, client: tuple[Client, int, RunEvents]) -> None:
        """A fork of no served session is BadNotFound on Options."""
        c, ns, _ = client
        result = await _run(c, ns, PASSING, '{"fork": "nope"}')
        assert result.StatusCode.name == "BadNotFound"
        assert result.InputArgumentResults[1].name == "BadNotFound"
        assert "no session 'nope'" in _info(result)


class TestRefusals:
    async def test_bad_condition(self, client: tuple[Client, int, RunEvents]) -> None:
        """A condition that does not parse: BadInvalidArgument naming key and column."""
        c, ns, _ = client
        result = await _run(c, ns, PASSING.replace("tank.level > 0.55", "tank.level >> 1"))
        assert result.StatusCode.name == "BadInvalidArgument"
        info = _info(result)
        assert "RunScenario: steps[1].check: column 13" in info, info

    async def test_unknown_variable(self, client: tuple[Client, int, RunEvents]) -> None:
        """A name the twin lacks: BadInvalidArgument naming it and its key."""
        c, ns, _ = client
        result = await _run(c, ns, PASSING.replace("tank.inflow", "tank.inflw"))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert "steps[0].set" in _info(result) and "tank.inflw" in _info(result)

    async def test_bad_options(self, client: tuple[Client, int, RunEvents]) -> None:
        """Options that are not the JSON it takes: BadInvalidArgument on Options."""
        c, ns, _ = client
        for options, says in (("{seed: 1}", "line 1, column 2"), ('{"sed": 1}', "unknown key"),
                              ('{"seed": "x"}', "32-bit integer")):
            result = await _run(c, ns, PASSING, options)
            assert result.StatusCode.name == "BadInvalidArgument"
            assert result.InputArgumentResults[1].name == "BadInvalidArgument"
            assert says in _info(result)

    async def test_nothing_runs_on_refusal(self, daemon: Daemon,
                                           client: tuple[Client, int, RunEvents]) -> None:
        """A refused call starts no run."""
        c, ns, _ = client
        assert daemon.scenarios is not None
        before = list(daemon.scenarios.runs)
        await _run(c, ns, "[scenario]\nsession = 1\n")
        assert list(daemon.scenarios.runs) == before


class TestFiles:
    async def test_file_in_the_folder(self, client: tuple[Client, int, RunEvents]) -> None:
        """A file name relative to the scenario folder runs that file."""
        c, ns, events = client
        run = await _started(c, ns, "sub/fills.toml")
        assert (await events.wait_for(run)).Verdict == "passed"
        assert await _read(c, ns, f"{run}.File") == "sub/fills.toml"

    @pytest.mark.parametrize(("name", "status", "says"), [
        ("../secret.toml", "BadInvalidArgument", "without '..'"),
        ("/etc/passwd", "BadInvalidArgument", "without '..'"),
        ("out.toml", "BadInvalidArgument", "leads out of"),
        ("missing.toml", "BadNotFound", "no scenario file 'missing.toml'"),
    ])
    async def test_outside_refused(self, client: tuple[Client, int, RunEvents], name: str,
                                   status: str, says: str) -> None:
        """Names outside the scenario folders (.., absolute, a symlink out) are refused."""
        c, ns, _ = client
        result = await _run(c, ns, name)
        assert result.StatusCode.name == status
        assert says in _info(result) and "server.scenario_dirs" in _info(result)


class TestRoles:
    async def test_operator_runs(self) -> None:
        """RunScenario and a run's Halt are an operator's; viewers read the nodes."""
        assert method_role(ua.NodeId("RunScenario", 2), 2) is Role.OPERATOR
        assert method_role(ua.NodeId("Scenarios.r_1.Halt", 2), 2) is Role.OPERATOR
