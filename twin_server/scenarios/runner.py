"""The runner: a scenario's steps, in order, over a ``Target`` that owns time.

One runner serves every way of running a scenario: ``offline.SessionTarget`` steps
an in-process session one tick per sample (faster than real time, deterministic),
``live.LiveTarget`` reads a daemon's session over OPC UA at its publish rate (real
time). Time is the scenario's: simulated seconds stepped since it began (a Reset or
Restore in between does not turn it back).

Semantics, at each sample (a tick offline, a poll live):

* ``set``, ``release``, ``call``: at once, between two samples. ``ramp``: the
  value moves linearly from its value (or ``from``) to ``to`` and is written
  before every sample of ``over`` seconds, ``to`` last.
* ``wait``: samples for that long. ``wait_until``: samples until the condition
  holds (it is tried first at once); past its timeout the run breaks off (an
  error of that step, and the checks after it are skipped).
* ``check`` now: holds at this sample, or fails. ``within S``: holds at some
  sample before S seconds pass (passes at the first), else fails at S.
  ``always [S]``: holds at every sample from now for S seconds, or to the end of
  the scenario; it runs *beside* the steps after it, which do not wait for it, and
  fails at the first sample where it does not hold. The run ends when every step
  is done and every ``always`` with a time has run its time out.
* ``inject_fault``, ``clear_fault``: ``Target.inject_fault`` (offline and on the
  server: ``Session.inject_fault``; live: the session's InjectFault, ClearFault or
  ClearFaults method), the step's name the fault's id (``*`` clears every fault),
  applying from the next tick; a refused fault breaks the run off with the refusal.
* ``inject_link_fault``, ``clear_link_fault``: ``Target.link_fault`` (live runs
  only: the peer's InjectLinkFault or ClearLinkFault method), at once; a refusal
  breaks the run off.
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from twin_server.errors import TwinServerError
from twin_server.scenarios.expr import EvaluationError, Number
from twin_server.scenarios.names import Binding, Ref
from twin_server.scenarios.results import (
    CheckResult,
    ScenarioResult,
    StepRecord,
    Trace,
    Verdict,
)
from twin_server.scenarios.schema import (
    CallStep,
    CheckStep,
    ClearFaultStep,
    ClearLinkFaultStep,
    InjectFaultStep,
    InjectLinkFaultStep,
    PlannedStep,
    RampStep,
    ReleaseStep,
    ScenarioFile,
    SetStep,
    WaitStep,
    WaitUntilStep,
)


class TargetStopped(TwinServerError):
    """The session no longer advances (Suspended, Halted, a fault) while a step needs time."""


class Target(Protocol):
    """What a runner needs of a session: time, values, writes and method calls."""

    session: str
    step_size: float  # simulated seconds per tick (the runner's tolerance on time)
    elapsed: float  # scenario time of the latest sample

    @property
    def values(self) -> Mapping[str, Number]:
        """The watched names at the latest sample, and ``time``."""

    async def sample(self) -> None:
        """Advance to the next sample (TargetStopped if the session does not run)."""

    async def write(self, ref: Ref, value: Number | str) -> None: ...

    async def release(self, ref: Ref) -> None: ...

    async def call(self, method: str, label: str) -> None: ...

    async def inject_fault(self, step: InjectFaultStep | ClearFaultStep, ref: Ref | None,
                           ) -> None: ...

    async def link_fault(self, step: InjectLinkFaultStep | ClearLinkFaultStep) -> None: ...


@dataclass(frozen=True, slots=True)
class Progress:
    """What a listener hears: a step began (``check`` None) or a check was decided."""

    step: PlannedStep
    done: int  # steps finished
    total: int
    check: CheckResult | None = None


Listener = Callable[[Progress], None]


class StepFailed(Exception):
    """A step that breaks the run off (a wait_until past its timeout, a refused write)."""


class Runner:
    """Runs one scenario on one target, once."""

    def __init__(self, scenario: ScenarioFile, binding: Binding, target: Target, *,
                 mode: str, listener: Listener | None = None, seed: int | None = None) -> None:
        self.scenario = scenario
        self.binding = binding
        self.target = target
        self.listener = listener
        self.trace = Trace(tuple(sorted(binding.reads)))
        self.checks = {p.index: CheckResult(
            name=p.check_name, step=p.index, condition=p.step.check, mode=p.step.mode,
            names=tuple(sorted(n for n in (p.condition.names if p.condition else ())
                               if n != "time")))
            for p in scenario.steps if isinstance(p.step, CheckStep)}
        self.records: list[StepRecord] = []
        self._always: list[tuple[PlannedStep, CheckResult, float | None]] = []
        self._done = 0
        self.result = ScenarioResult(scenario.name, scenario.file, mode, target.session,
                                     list(self.checks.values()), self.records, self.trace,
                                     seed=seed)

    @property
    def current(self) -> PlannedStep | None:
        """The step running now (None before the first and after the last)."""
        if not self.records or self._done >= len(self.scenario.steps):
            return None
        return self.scenario.steps[self._done]

    @property
    def steps_done(self) -> int:
        """Steps finished so far."""
        return self._done

    async def run(self) -> ScenarioResult:
        started = wallclock.perf_counter()
        self._record_sample()
        try:
            for planned in self.scenario.steps:
                record = StepRecord(planned.index, planned.label, self.target.elapsed)
                self.records.append(record)
                self._tell(planned)
                try:
                    await self._step(planned, record)
                except (StepFailed, TwinServerError) as exc:
                    record.outcome = "error"
                    record.message = str(exc)
                    record.ended = self.target.elapsed
                    self.result.error = f"{planned.path} ({planned.label}): {exc}"
                    break
                record.ended = self.target.elapsed
                self._done += 1
            else:
                try:
                    await self._finish_always()
                except TwinServerError as exc:
                    self.result.error = f"after the last step: {exc}"
        finally:
            self._close_open_checks()
            self.result.sim_time = self.target.elapsed
            self.result.wall_time = wallclock.perf_counter() - started
        return self.result

    # -- the steps --------------------------------------------------------------------

    async def _step(self, planned: PlannedStep, record: StepRecord) -> None:
        step = planned.step
        target = self.target
        if isinstance(step, SetStep):
            await target.write(self.binding.writes[planned.index], step.value)
        elif isinstance(step, ReleaseStep):
            await target.release(self.binding.writes[planned.index])
        elif isinstance(step, RampStep):
            await self._ramp(planned, step)
        elif isinstance(step, WaitStep):
            await self._advance_until(target.elapsed + step.wait)
        elif isinstance(step, WaitUntilStep):
            assert planned.condition is not None
            deadline = target.elapsed + step.timeout
            while not self._holds(planned):
                if target.elapsed >= deadline - self._slack:
                    raise StepFailed(f"{step.wait_until!r} did not hold within "
                                     f"{step.timeout:g} s ({self._seen(planned)})")
                await self._sample()
        elif isinstance(step, CallStep):
            await target.call(step.call, step.label)
        elif isinstance(step, InjectFaultStep | ClearFaultStep):
            await target.inject_fault(step, self.binding.writes.get(planned.index))
        elif isinstance(step, InjectLinkFaultStep | ClearLinkFaultStep):
            await target.link_fault(step)
        else:
            await self._check(planned, step)

    async def _ramp(self, planned: PlannedStep, step: RampStep) -> None:
        ref = self.binding.writes[planned.index]
        start = float(step.from_ if step.from_ is not None else self.target.values[step.ramp])
        began = self.target.elapsed
        end = began + step.over
        while self.target.elapsed < end - self._slack:
            share = (self.target.elapsed - began) / step.over
            await self.target.write(ref, start + (step.to - start) * share)
            await self._sample()
        await self.target.write(ref, step.to)

    async def _check(self, planned: PlannedStep, step: CheckStep) -> None:
        result = self.checks[planned.index]
        result.started = self.target.elapsed
        mode = step.mode
        if mode == "always":
            duration = step.duration
            end = None if duration is None else result.started + duration
            self._always.append((planned, result, end))
            self._watch_always()  # it must hold now too
            return
        if mode == "now":
            self._decide(planned, result, self._holds(planned, result),
                         "held" if self._last else "did not hold")
            return
        assert step.within is not None
        deadline = result.started + step.within
        while True:
            holds = self._holds(planned, result)
            if holds:
                self._decide(planned, result, True,
                             f"held after {self.target.elapsed - result.started:.6g} s")
                return
            if result.verdict is Verdict.ERROR:
                return
            if self.target.elapsed >= deadline - self._slack:
                self._decide(planned, result, False, f"did not hold within {step.within:g} s")
                return
            await self._sample()

    async def _finish_always(self) -> None:
        while any(end is not None for _, _, end in self._always):
            await self._sample()
        for planned, result, _ in list(self._always):
            self._decide(planned, result, True, "held to the end of the scenario")
        self._always.clear()

    # -- time and values --------------------------------------------------------------

    @property
    def _slack(self) -> float:
        return self.target.step_size / 2

    async def _advance_until(self, end: float) -> None:
        while self.target.elapsed < end - self._slack:
            await self._sample()

    async def _sample(self) -> None:
        if self.target.elapsed > self.scenario.header.timeout:
            raise StepFailed(f"the scenario ran past its timeout of "
                             f"{self.scenario.header.timeout:g} s ([scenario] timeout)")
        await self.target.sample()
        self._record_sample()
        self._watch_always()

    def _record_sample(self) -> None:
        self.trace.add(self.target.elapsed, self.target.values)

    def _watch_always(self) -> None:
        if not self._always:
            return
        now = self.target.elapsed
        for entry in list(self._always):
            planned, result, end = entry
            if not self._holds(planned, result):
                self._always.remove(entry)
                if result.verdict is not Verdict.ERROR:
                    self._decide(planned, result, False,
                                 f"stopped holding after {now - result.started:.6g} s")
            elif end is not None and now >= end - self._slack:
                self._always.remove(entry)
                self._decide(planned, result, True, f"held throughout {end - result.started:g} s")

    _last: bool = False

    def _holds(self, planned: PlannedStep, result: CheckResult | None = None) -> bool:
        assert planned.condition is not None
        values = self.target.values
        if result is not None:
            result.observe(values)
        try:
            self._last = planned.condition.holds(values)
        except (EvaluationError, TypeError, ArithmeticError) as exc:
            if result is None:
                raise StepFailed(str(exc)) from None
            result.verdict = Verdict.ERROR
            result.message = f"cannot be evaluated: {exc}"
            result.decided = self.target.elapsed
            self._last = False
            self._tell(planned, result)
        return self._last

    def _seen(self, planned: PlannedStep) -> str:
        assert planned.condition is not None
        values = self.target.values
        return ", ".join(f"{n} = {values[n]!r}" for n in sorted(planned.condition.names)
                         if n in values)

    def _decide(self, planned: PlannedStep, result: CheckResult, passed: bool,
                message: str) -> None:
        if result.verdict is Verdict.ERROR:
            return
        result.verdict = Verdict.PASSED if passed else Verdict.FAILED
        result.message = message
        result.decided = self.target.elapsed
        values = self.target.values
        result.seen = {n: values[n] for n in result.names if n in values}
        self._tell(planned, result)

    def _close_open_checks(self) -> None:
        """Checks still open when the run broke off: an ``always`` that had held so far
        is an error (cut short), every check never reached is skipped."""
        for planned, result, _ in self._always:
            if self.result.error is not None:
                result.verdict = Verdict.ERROR
                result.message = f"cut short (held until then): {self.result.error}"
                result.decided = self.target.elapsed
                self._tell(planned, result)
        self._always.clear()
        for result in self.checks.values():
            if result.verdict is Verdict.SKIPPED and not result.message:
                result.message = "not reached: " + (self.result.error or "the run ended")

    def _tell(self, planned: PlannedStep, check: CheckResult | None = None) -> None:
        if self.listener is not None:
            self.listener(Progress(planned, self._done, len(self.scenario.steps), check))
