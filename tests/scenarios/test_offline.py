"""Offline runs: each step and check kind, passing and failing, and determinism."""

from __future__ import annotations

import pytest

from tests.scenarios.conftest import run_text
from twin_server.runtime.compile import LoadedConfig
from twin_server.scenarios.results import ScenarioResult, Verdict


def verdicts(result: ScenarioResult) -> list[str]:
    return [str(c.verdict) for c in result.checks]


class TestChecks:
    def test_now(self, loaded: LoadedConfig) -> None:
        """A check now passes or fails on the values at that moment."""
        result = run_text(loaded, """
[[steps]]
check = "tank.level == 0.5"
[[steps]]
check = "tank.level > 0.6"
""")
        assert verdicts(result) == ["passed", "failed"]
        failed = result.checks[1]
        assert failed.decided == 0.0 and failed.seen == {"tank.level": 0.5}

    def test_within(self, loaded: LoadedConfig) -> None:
        """within passes at the first sample that holds, fails when its time is up."""
        result = run_text(loaded, """
[[steps]]
set = "tank.inflow"
value = 0.1
[[steps]]
check = "tank.level > 0.6"
within = 5.0
[[steps]]
check = "tank.level > 5"
within = 2.0
""")
        assert verdicts(result) == ["passed", "failed"]
        passed, failed = result.checks
        assert 0.5 < passed.decided < 1.0  # ~0.17 m/s net rise from 0.5 m
        assert failed.decided == pytest.approx(passed.decided + 2.0)
        assert "did not hold within 2 s" in failed.message
        assert failed.ranges["tank.level"][1] < 5

    def test_always_for_a_time(self, loaded: LoadedConfig) -> None:
        """always holds throughout its interval beside the steps after it, or fails at the
        first sample where it does not."""
        result = run_text(loaded, """
[[steps]]
check = "tank.level < 0.6"
always = 3.0
[[steps]]
check = "tank.level <= 0.5"
always = 2.5
[[steps]]
wait = 0.5
[[steps]]
set = "tank.inflow"
value = 0.02
""")
        assert verdicts(result) == ["passed", "failed"]
        held, broke = result.checks
        assert held.decided == pytest.approx(3.0)  # the run waited for it
        assert 0.5 < broke.decided < 3.0  # once the inflow has filled it past 0.5 m
        assert broke.seen["tank.level"] > 0.5 >= broke.ranges["tank.level"][0]
        assert result.sim_time == pytest.approx(3.0)

    def test_always_to_the_end(self, loaded: LoadedConfig) -> None:
        """always = true holds to the end of the scenario, or fails when it breaks."""
        result = run_text(loaded, """
[[steps]]
check = "tank.level > 0.4"
always = true
[[steps]]
check = "tank.level > 0.48"
always = true
[[steps]]
wait = 2.0
""")
        assert verdicts(result) == ["passed", "failed"]
        assert result.checks[0].decided == pytest.approx(2.0)
        assert result.checks[0].message == "held to the end of the scenario"

    def test_evaluation_error(self, loaded: LoadedConfig) -> None:
        """A condition that cannot be evaluated (1/0) is an error, not a pass or fail."""
        result = run_text(loaded, '[[steps]]\ncheck = "tank.level / 0 > 1"\n')
        assert verdicts(result) == ["error"]
        assert result.verdict is Verdict.ERROR


class TestSteps:
    def test_set_input_parameter_state(self, loaded: LoadedConfig) -> None:
        """set forces an input, writes a parameter and a state (kind by name, or explicit)."""
        result = run_text(loaded, """
[[steps]]
set = "tank.outflow_coefficient"
value = 0.0
[[steps]]
set = "tank.states.level"
value = 1.0
[[steps]]
wait = 1.0
[[steps]]
check = "tank.level == 1.0 and tank.outflow == 0"
[[steps]]
set = "tank.inflow"
value = 0.5
[[steps]]
wait = 1.0
[[steps]]
check = "tank.level == 2.0 ± 1e-9"
""")
        assert verdicts(result) == ["passed", "passed"], result.checks

    def test_ramp(self, loaded: LoadedConfig) -> None:
        """ramp moves a value linearly over its time and ends at its target."""
        result = run_text(loaded, """
[[steps]]
ramp = "tank.inflow"
to = 0.1
over = 2.0
[[steps]]
check = "tank.inflow == 0.1 and time == 2 ± 1e-9"
""")
        assert verdicts(result) == ["passed"]
        times, values = result.trace.times, result.trace.values["tank.inflow"]
        assert values[times.index(pytest.approx(1.0))] == pytest.approx(0.045, abs=1e-9)
        assert values == sorted(values)

    def test_wait_and_wait_until(self, loaded: LoadedConfig) -> None:
        """wait takes its time; wait_until ends as soon as its condition holds."""
        result = run_text(loaded, """
[[steps]]
wait = 1.5
[[steps]]
check = "time == 1.5 ± 1e-9"
[[steps]]
set = "tank.inflow"
value = 0.1
[[steps]]
wait_until = "tank.level > 0.6"
timeout = 10
[[steps]]
check = "time < 3"
""")
        assert verdicts(result) == ["passed", "passed"]
        assert result.steps[3].ended < 3.0

    def test_wait_until_timeout_breaks_off(self, loaded: LoadedConfig) -> None:
        """A wait_until past its timeout breaks the run off; later checks are skipped."""
        result = run_text(loaded, """
[[steps]]
check = "tank.level > 0"
always = true
[[steps]]
wait_until = "tank.level > 1"
timeout = 1.0
[[steps]]
check = "tank.level > 0"
""")
        assert result.verdict is Verdict.ERROR
        assert result.error is not None and "did not hold within 1 s" in result.error
        assert verdicts(result) == ["error", "skipped"]
        assert result.steps[1].outcome == "error"

    def test_release(self, loaded: LoadedConfig) -> None:
        """release lets a forced input follow its default again."""
        result = run_text(loaded, """
[[steps]]
set = "tank.inflow"
value = 0.1
[[steps]]
release = "tank.inflow"
[[steps]]
check = "tank.inflow == 0"
""")
        assert verdicts(result) == ["passed"]

    def test_snapshot_restore_reset(self, loaded: LoadedConfig) -> None:
        """Snapshot and Restore by label, and Reset, act on the session; time goes on."""
        result = run_text(loaded, """
[[steps]]
set = "tank.inflow"
value = 0.1
[[steps]]
wait = 1.0
[[steps]]
call = "Snapshot"
label = "one"
[[steps]]
wait = 1.0
[[steps]]
call = "Restore"
label = "one"
[[steps]]
check = "tank.level < 0.7 and time == 2 ± 1e-9"
[[steps]]
call = "Reset"
[[steps]]
check = "tank.level == 0.5"
[[steps]]
wait = 0.1
""")
        assert verdicts(result) == ["passed", "passed"], result.checks
        level = result.trace.values["tank.level"]
        assert level[20] > level[21]  # the restore turned the level back, not the time

    def test_restore_unknown_label(self, loaded: LoadedConfig) -> None:
        """Restore of a label never taken breaks the run off with the labels taken."""
        result = run_text(loaded, '[[steps]]\ncall = "Restore"\nlabel = "x"\n')
        assert result.error is not None and "no snapshot labelled 'x'" in result.error

    def test_suspend_stops_time(self, loaded: LoadedConfig) -> None:
        """After Suspend, a step that needs time breaks off until Resume."""
        result = run_text(loaded, """
[[steps]]
call = "Suspend"
[[steps]]
call = "Resume"
[[steps]]
wait = 0.2
[[steps]]
call = "Suspend"
[[steps]]
wait = 1
""")
        assert result.error is not None and "is Suspended: time does not pass" in result.error
        assert result.sim_time == pytest.approx(0.2)

    def test_refused_write(self, loaded: LoadedConfig) -> None:
        """A write the model refuses (out of range) breaks the run off with its reason."""
        result = run_text(loaded, '[[steps]]\nset = "tank.inflow"\nvalue = -1.0\n')
        assert result.error is not None and "steps[0]" in result.error

    def test_fault_steps(self, loaded: LoadedConfig) -> None:
        """inject_fault holds an output stuck (its readers see it), clear_fault ends it."""
        result = run_text(loaded, """
[[steps]]
set = "tank.inflow"
value = 0.05
[[steps]]
inject_fault = "stuck_level"
variable = "tank.level"
kind = "stuck"
parameters = { value = 1.5 }
[[steps]]
wait = 0.1  # (a fault applies from the next tick on)
[[steps]]
check = "tank.level == 1.5 and sensor.output == 1.5 ± 0.05"
always = 2.0
[[steps]]
wait = 2.0  # (an always check runs beside the steps after it)
[[steps]]
clear_fault = "stuck_level"
[[steps]]
wait = 0.2
[[steps]]
check = "tank.level < 1"
""")
        assert [r.outcome for r in result.steps] == ["done"] * 8, result.error
        assert [c.verdict for c in result.checks] == [Verdict.PASSED] * 2, [
            c.describe() for c in result.checks]

    def test_fault_with_duration_and_clear_all(self, loaded: LoadedConfig) -> None:
        """A fault with a duration ends by itself; clear_fault '*' ends every fault."""
        result = run_text(loaded, """
[[steps]]
inject_fault = "offset"
variable = "tank.level"
kind = "offset"
parameters = { offset = 1.0 }
duration = 1.0
[[steps]]
wait = 0.1
[[steps]]
check = "tank.level > 1.4"
[[steps]]
wait = 1.5
[[steps]]
check = "tank.level < 0.6"
[[steps]]
inject_fault = "again"
variable = "tank.level"
kind = "offset"
parameters = { offset = 1.0 }
[[steps]]
clear_fault = "*"
[[steps]]
wait = 0.2
[[steps]]
check = "tank.level < 0.6"
""")
        assert [c.verdict for c in result.checks] == [Verdict.PASSED] * 3, [
            c.describe() for c in result.checks]

    def test_refused_fault(self, loaded: LoadedConfig) -> None:
        """A fault the session refuses (an unknown parameter) breaks the run off."""
        result = run_text(loaded, """
[[steps]]
inject_fault = "f"
variable = "tank.level"
kind = "stuck"
parameters = { valu = 1.0 }
[[steps]]
check = "tank.level > 0"
""")
        assert result.error is not None and "steps[0]" in result.error
        assert result.checks[0].verdict is Verdict.SKIPPED


class TestDeterminism:
    STEPS = """
[[steps]]
ramp = "tank.inflow"
to = 0.05
over = 5
[[steps]]
check = "sensor.output > 0.55"
within = 20
"""

    def test_same_seed_same_trace(self, loaded: LoadedConfig) -> None:
        """The same seed gives the same trace and verdicts, bit for bit."""
        one = run_text(loaded, self.STEPS, seed=3)
        two = run_text(loaded, self.STEPS, seed=3)
        assert one.trace.values == two.trace.values and one.trace.times == two.trace.times
        assert [(c.verdict, c.decided) for c in one.checks] == [
            (c.verdict, c.decided) for c in two.checks]

    def test_seed_changes_the_noise(self, loaded: LoadedConfig) -> None:
        """Another seed gives another noise (the seed reaches the sensor)."""
        one = run_text(loaded, self.STEPS, seed=3)
        two = run_text(loaded, self.STEPS, seed=4)
        assert one.trace.values["sensor.output"] != two.trace.values["sensor.output"]
        assert one.trace.values["tank.inflow"] == two.trace.values["tank.inflow"]
