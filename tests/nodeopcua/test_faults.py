"""InjectFault and ClearFault through node-opcua (an independent stack) against the
demo: a fault injected and cleared by an operator, a bad Kind refused on its
argument with a message, a viewer refused. And RunScenario (beside them, to share
this module's daemon and node process): a scenario given as TOML text runs on the
server, its ScenarioFinished event reaches a node-opcua subscription with the verdict
and counts in its own fields, and the run's node shows the verdict and the JUnit
report; a scenario with errors is refused on its argument."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from tests.nodeopcua import NodeOpcua
from tests.nodeopcua.test_conformance import PASSWORD, Demo, demo  # noqa: F401  (a fixture)
from tests.opcua.conftest import MODULE_LOOP

pytestmark = MODULE_LOOP


def inject(d: Demo, *args: Any) -> dict[str, Any]:
    types = ("String", "String", "String", "Double", "String")
    return {"objectId": d.node("Sessions.tank"), "methodId": d.node("Sessions.tank.InjectFault"),
            "inputArguments": [{"dataType": t, "value": v} for t, v in zip(types, args,
                                                                          strict=False)]}


class TestFaultsThroughNodeOpcua:
    async def test_inject_read_and_clear(self, nodeopcua: NodeOpcua, demo: Demo) -> None:  # noqa: F811
        """An operator's InjectFault answers its id, the level reads the stuck value,
        ClearFault ends it."""
        out = await nodeopcua.run("call.js", demo.url, calls=[
            inject(demo, "tank.Outputs.level", "stuck", '{"value": 1.25}', 0.0, "frozen")])
        assert [r["status"] for r in out["results"]] == ["Good"]
        assert out["results"][0]["outputs"] == ["frozen"]
        level = demo.node("Sessions.tank.Components.tank.Outputs.level")
        kind = demo.node("Sessions.tank.Faults.frozen.Kind")
        read = await nodeopcua.run("read.js", demo.url, nodes=[level, kind])
        assert [r["value"] for r in read] == [1.25, "stuck"]
        out = await nodeopcua.run("call.js", demo.url, calls=[{
            "objectId": demo.node("Sessions.tank"),
            "methodId": demo.node("Sessions.tank.ClearFault"),
            "inputArguments": [{"dataType": "String", "value": "frozen"}]}])
        assert [r["status"] for r in out["results"]] == ["Good"]

    async def test_a_bad_kind_and_a_viewer_are_refused(self, nodeopcua: NodeOpcua,
                                                       demo: Demo) -> None:  # noqa: F811
        """A Kind that is no fault: BadInvalidArgument with the kinds named; a viewer:
        BadUserAccessDenied."""
        bad = inject(demo, "tank.Outputs.level", "melt", "")
        out = await nodeopcua.run("call.js", demo.url, calls=[bad])
        (result,) = out["results"]
        assert result["status"] == "BadInvalidArgument"
        assert "not a kind of fault" in (result["diagnostics"][1] or "")
        out = await nodeopcua.run("call.js", demo.url, user="vera", password=PASSWORD,
                                  calls=[inject(demo, "tank.Outputs.level", "dropout", "")])
        assert [r["status"] for r in out["results"]] == ["BadUserAccessDenied"]


SCENARIO = """
[scenario]
name = "stuck_sensor"
session = "tank"
[[steps]]
name = "the level starts at its initial value"
check = "tank.level == 0.5 ± 0.01"
[[steps]]
inject_fault = "stuck_level"
variable = "tank.level"
kind = "stuck"
parameters = { value = 1.75 }
[[steps]]
wait = 0.5
[[steps]]
name = "the stuck sensor reads 1.75 m"
check = "tank.level == 1.75"
[[steps]]
name = "the tank overflows in 2 s (it cannot)"
check = "tank.overflow"
within = 2.0
"""


class TestRunScenarioThroughNodeOpcua:
    async def test_run_event_verdict_and_junit(self, nodeopcua: NodeOpcua,
                                               demo: Demo) -> None:  # noqa: F811
        """RunScenario with TOML text answers the run's node; its ScenarioFinished event
        carries verdict failed and the counts; Halted, the verdict and a JUnit report
        with the failing check are read from the run's node."""
        out = await nodeopcua.run("scenario.js", demo.url, scenario=SCENARIO,
                                  options='{"seed": 4}')
        run = out["run"]
        assert out["runNodeId"] == demo.node(f"Scenarios.{run}")
        event = out["event"]
        assert (event["scenario"], event["verdict"], event["passed"], event["failed"],
                event["errors"], event["skipped"]) == ("stuck_sensor", "failed", 2, 1, 0, 0)
        assert event["sourceName"] == run and event["severity"] == 700
        assert event["eventType"] == demo.node("ScenarioFinishedEventType")
        assert 2.0 <= event["simTime"] < 3.0
        assert (out["state"], out["verdict"], out["error"]) == ("Halted", "failed", "")
        junit = ET.fromstring(out["junit"])
        assert (junit.get("tests"), junit.get("failures")) == ("3", "1")
        (failure,) = junit.iter("failure")
        case = next(c for c in junit.iter("testcase") if c.find("failure") is not None)
        assert case.get("name") == "the tank overflows in 2 s (it cannot)"
        assert "tank.overflow" in (failure.get("message") or "") + (failure.text or "")

    async def test_scenario_with_errors_is_refused(self, nodeopcua: NodeOpcua,
                                                   demo: Demo) -> None:  # noqa: F811
        """A scenario that does not validate: BadInvalidArgument on Scenario, naming the
        key and the column."""
        out = await nodeopcua.run("scenario.js", demo.url, scenario=(
            '[scenario]\nsession = "tank"\n[[steps]]\ncheck = "tank.level >"\n'))
        assert out["status"] == "BadInvalidArgument"
        assert "steps[0].check: column 13" in (out["diagnostics"][0] or ""), out
