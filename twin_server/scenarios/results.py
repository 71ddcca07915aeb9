"""What a scenario run gives: a verdict per check, a record per step, and the trace of
every variable its checks looked at (for the reports' plots)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from twin_server.scenarios.expr import Number


class Verdict(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # the check could not be evaluated, or the run broke off before it ended
    SKIPPED = "skipped"  # not reached (an earlier step failed), or waits for a feature


@dataclass(slots=True)
class Trace:
    """The values of the watched names at every sample (scenario time in seconds)."""

    names: tuple[str, ...]
    times: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.names:
            self.values.setdefault(name, [])

    def add(self, time: float, values: Mapping[str, Number]) -> None:
        self.times.append(time)
        for name in self.names:
            self.values[name].append(float(values[name]))

    def window(self, start: float, end: float) -> tuple[list[float], dict[str, list[float]]]:
        """The samples with ``start <= time <= end``."""
        first = next((i for i, t in enumerate(self.times) if t >= start), len(self.times))
        last = first
        while last < len(self.times) and self.times[last] <= end:
            last += 1
        return self.times[first:last], {n: v[first:last] for n, v in self.values.items()}


@dataclass(slots=True)
class CheckResult:
    """One check's verdict: what it asked, when it was decided, and what it saw."""

    name: str
    step: int  # the index of its step
    condition: str
    mode: str  # now | within | always
    names: tuple[str, ...]  # the variables the condition reads
    verdict: Verdict = Verdict.SKIPPED
    message: str = ""
    started: float = 0.0  # scenario time when the check began
    decided: float = 0.0  # scenario time of the verdict
    seen: dict[str, Number] = field(default_factory=dict)  # values at the verdict
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # min, max seen

    def observe(self, values: Mapping[str, Number]) -> None:
        for name in self.names:
            value = float(values[name])
            low, high = self.ranges.get(name, (value, value))
            self.ranges[name] = (min(low, value), max(high, value))

    def describe(self) -> str:
        """The failure text: the condition, the values seen, the simulated time."""
        seen = ", ".join(f"{n} = {_fmt(v)}" for n, v in sorted(self.seen.items()))
        spans = ", ".join(f"{n} in [{_fmt(lo)}, {_fmt(hi)}]"
                          for n, (lo, hi) in sorted(self.ranges.items()))
        lines = [f"{self.mode} check {self.condition!r}: {self.message}",
                 f"at t = {self.decided:.6g} s (checked from t = {self.started:.6g} s)"]
        if seen:
            lines.append(f"values then: {seen}")
        if spans:
            lines.append(f"values seen: {spans}")
        return "\n".join(lines)


@dataclass(slots=True)
class StepRecord:
    index: int
    label: str
    started: float
    ended: float = 0.0
    outcome: str = "done"  # done | failed | error | skipped
    message: str = ""


@dataclass(slots=True)
class ScenarioResult:
    """A whole run."""

    name: str
    file: str
    mode: str  # offline | live | server
    session: str
    checks: list[CheckResult]
    steps: list[StepRecord]
    trace: Trace
    error: str | None = None  # the step that broke the run off, and why
    sim_time: float = 0.0
    wall_time: float = 0.0
    seed: int | None = None

    @property
    def verdict(self) -> Verdict:
        if self.error is not None or any(c.verdict is Verdict.ERROR for c in self.checks):
            return Verdict.ERROR
        if any(c.verdict is Verdict.FAILED for c in self.checks):
            return Verdict.FAILED
        return Verdict.PASSED

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASSED

    def counts(self) -> dict[Verdict, int]:
        result = dict.fromkeys(Verdict, 0)
        for check in self.checks:
            result[check.verdict] += 1
        return result

    def summary(self) -> str:
        counts = self.counts()
        parts = [f"{counts[v]} {v}" for v in Verdict if counts[v]]
        return (f"{self.name}: {self.verdict.upper()} ({', '.join(parts) or 'no checks'}; "
                f"{self.sim_time:.6g} s simulated in {self.wall_time:.3g} s)")


def _fmt(value: Number | float) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}"
