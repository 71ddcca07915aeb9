"""JUnit XML of scenario runs, the format every CI reads (Jenkins, GitLab, GitHub).

Each scenario is a ``<testsuite>``, each check a ``<testcase>`` (its ``classname``
the scenario, its ``time`` the simulated seconds it took to decide). A failed check
carries ``<failure>`` with the condition, the values seen and the simulated time;
a check that could not be evaluated ``<error>``; one never reached ``<skipped>``.
A run that broke off (a wait_until past its timeout, a refused write) adds a test
case for that step with its ``<error>``; a step recorded as skipped a skipped
test case. ``tests/scenarios/junit.xsd`` is the schema
(after the Jenkins/Ant JUnit schema) the tests validate this against.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from twin_server.scenarios.results import ScenarioResult, Verdict


def to_junit(results: Sequence[ScenarioResult], *, name: str = "twin-server scenarios",
             timestamp: datetime | None = None) -> ET.ElementTree[ET.Element]:
    stamp = (timestamp or datetime.now(UTC)).replace(microsecond=0, tzinfo=None).isoformat()
    root = ET.Element("testsuites", name=name)
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    total_time = 0.0
    for index, result in enumerate(results):
        suite = _suite(result, index, stamp)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        total_time += result.wall_time
    for key, total in totals.items():
        root.set(key, str(total))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def _suite(result: ScenarioResult, index: int, stamp: str) -> ET.Element:
    suite = ET.Element("testsuite", name=result.name, id=str(index), package="scenarios",
                       hostname=socket.gethostname() or "localhost", timestamp=stamp)
    props = ET.SubElement(suite, "properties")
    for key, value in (("file", result.file), ("mode", result.mode),
                       ("session", result.session), ("seed", str(result.seed)),
                       ("simulated_seconds", f"{result.sim_time:.6g}"),
                       ("verdict", str(result.verdict))):
        ET.SubElement(props, "property", name=key, value=value)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", name=check.name, classname=result.name,
                             time=f"{max(check.decided - check.started, 0.0):.3f}")
        counts["tests"] += 1
        if check.verdict is Verdict.FAILED:
            counts["failures"] += 1
            failure = ET.SubElement(case, "failure", type="CheckFailed",
                                    message=f"{check.condition}: {check.message}")
            failure.text = check.describe()
        elif check.verdict is Verdict.ERROR:
            counts["errors"] += 1
            error = ET.SubElement(case, "error", type="CheckError",
                                  message=f"{check.condition}: {check.message}")
            error.text = check.describe()
        elif check.verdict is Verdict.SKIPPED:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=check.message)
        ET.SubElement(case, "system-out").text = check.describe()
    for record in result.steps:
        if record.outcome not in ("error", "skipped"):
            continue
        case = ET.SubElement(suite, "testcase", name=f"steps[{record.index}]: {record.label}",
                             classname=result.name,
                             time=f"{max(record.ended - record.started, 0.0):.3f}")
        counts["tests"] += 1
        if record.outcome == "error":
            counts["errors"] += 1
            error = ET.SubElement(case, "error", type="StepError", message=record.message)
            error.text = (f"{record.message}\nat t = {record.ended:.6g} s "
                          f"(step began at t = {record.started:.6g} s)")
        else:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=record.message)
    for key, count in counts.items():
        suite.set(key, str(count))
    suite.set("time", f"{result.wall_time:.3f}")
    out = ET.SubElement(suite, "system-out")
    out.text = "\n".join([result.summary(), *(f"{r.index}: {r.label} [{r.outcome}] "
                                               f"t = {r.started:.6g}..{r.ended:.6g} s"
                                               for r in result.steps)])
    ET.SubElement(suite, "system-err").text = result.error or ""
    # the schema's order: properties, testcase*, system-out, system-err
    return suite


def junit_text(results: Sequence[ScenarioResult], **kwargs: object) -> str:
    tree = to_junit(results, **kwargs)  # type: ignore[arg-type]
    return ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=True)


def write_junit(results: Sequence[ScenarioResult], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_junit(results).write(path, encoding="utf-8", xml_declaration=True)
