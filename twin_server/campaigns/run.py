"""One run of a campaign: a fresh engine session stepped as fast as possible, in whatever
process runs it (a Dask worker, or this one).

``RunSpec`` is what every run of a campaign shares (the twin, the FMU files' bytes, the
step size, what to keep): it is sent to each worker once. ``execute(spec, plan)`` builds
a ``Session`` with the run's parameters, takes ``spec.ticks`` ticks and returns a
``RunResult``: the summary figures and the kept trajectories. Nothing in it depends on
the process, the worker or the wall clock but ``wall_s``, so the same spec and plan give
bit-identical results everywhere, and the same as a plain session stepped by hand.

Figures of a variable over the samples at t_0 .. t_N (N ticks, N+1 values, booleans as
0/1): ``final`` (the value at t_N), ``min``, ``max``, ``mean`` (``math.fsum`` of the
N+1 values / (N+1)), ``time_above`` / ``time_below`` (step size x the number of ticks
k < N whose value at t_k is above / below the limit: each value held for its tick).

With a scenario (``spec.scenario_text``), the session is driven by the offline
scenario runner (``scenarios.offline.drive``) instead of ``spec.ticks`` ticks: the
values are sampled at each of its ticks the same way, the scenario's parameters and
seed go under the run's, and its verdicts come back in ``verdicts`` (the verdict, the
counts and each check's verdict: ``spec.Campaign.verdict_columns``). A scenario that
breaks off (a wait_until past its timeout) is a run with the verdict ``error``; a
session halted on a model fault is a failed run, as without a scenario.

A run that fails (a model fault, an FMU error, an FMU that ends the simulation before
the campaign's duration, a parameter the model refuses) returns
``ok=False`` with the message and the trajectories up to the fault; its figures are
left out (figures of part of a run would read as those of a whole one).

FMUs: an FMU component's ``options.path`` is replaced by its sha-256 in the spec; the
worker writes the bytes once to ``<tmp>/twin-server-campaign-fmus-<uid>/<sha>.fmu``
(atomically) and points the component there, so no shared filesystem is needed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from twin_server.campaigns.spec import Campaign, Figures, RunPlan, check_names
from twin_server.engine.session import Session
from twin_server.engine.state import RunState, SessionSettings, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.models.base import Value
from twin_server.scenarios.names import Binding
from twin_server.scenarios.offline import SessionTarget, drive, scenario_parameters
from twin_server.scenarios.results import Verdict
from twin_server.scenarios.schema import ScenarioFile, parse_scenario

#: the placeholder an FMU's path becomes in a shipped twin
_SHIPPED = "sha256:"


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What every run of a campaign shares (sent to each worker once)."""

    twin: TwinDefinition  # FMU paths replaced by their sha-256 (``ship``)
    fmus: Mapping[str, bytes]
    step_size: float
    ticks: int
    base: Mapping[str, Mapping[str, Value]]
    varied: tuple[tuple[str, str], ...]  # (component, parameter) per varied value
    kept: tuple[tuple[str, VarKey], ...]
    every: int
    figures: tuple[Figures, ...]
    #: the scenario each run runs (its TOML text and file name), or "" for ``ticks`` ticks
    scenario_text: str = ""
    scenario_file: str = ""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one run gives back."""

    index: int
    ok: bool
    message: str = ""
    ticks: int = 0  # taken
    sim_time: float = 0.0  # reached
    figures: Mapping[str, float] = field(default_factory=dict)  # "<var>.<figure>" -> value
    times: tuple[float, ...] = ()  # of the trajectory samples
    trajectories: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    #: the scenario's verdicts ("scenario.verdict", "scenario.passed", ..., "check.<name>")
    verdicts: Mapping[str, str | int] = field(default_factory=dict)
    wall_s: float = 0.0  # the one thing that is not deterministic


def spec_of(campaign: Campaign) -> RunSpec:
    """The ``RunSpec`` of ``campaign``, its FMUs shipped as bytes."""
    return RunSpec(
        twin=ship(campaign.twin, campaign.fmu_of), fmus=dict(campaign.fmus),
        step_size=campaign.step_size, ticks=campaign.ticks, base=campaign.base,
        varied=tuple((v.component, v.parameter) for v in campaign.varied),
        kept=campaign.kept, every=campaign.every, figures=campaign.figures,
        scenario_text=campaign.scenario_text, scenario_file=campaign.scenario or "")


def ship(twin: TwinDefinition, fmu_of: Mapping[str, str]) -> TwinDefinition:
    """``twin`` with each FMU component's path replaced by its file's sha-256 and no
    ``cache_dir`` (the worker unpacks where it can write)."""
    if not fmu_of:
        return twin
    components = []
    for comp in twin.components:
        digest = fmu_of.get(comp.name)
        if digest is not None:
            options = {k: v for k, v in comp.options.items() if k != "cache_dir"}
            options["path"] = _SHIPPED + digest
            comp = dataclasses.replace(comp, options=options)
        components.append(comp)
    return dataclasses.replace(twin, components=tuple(components))


#: the FMUs already written to this machine's disk (sha-256 -> path), for this process
_landed: dict[str, Path] = {}


def land(twin: TwinDefinition, fmus: Mapping[str, bytes]) -> TwinDefinition:
    """``twin`` with each shipped FMU written to this machine (once per process and
    content) and its path pointing there."""
    if not fmus:
        return twin
    components = []
    for comp in twin.components:
        path = comp.options.get("path")
        if isinstance(path, str) and path.startswith(_SHIPPED):
            target = _write_once(path[len(_SHIPPED):], fmus)
            comp = dataclasses.replace(comp, options={**comp.options, "path": str(target)})
        components.append(comp)
    return dataclasses.replace(twin, components=tuple(components))


def _write_once(digest: str, fmus: Mapping[str, bytes]) -> Path:
    target = _landed.get(digest)
    if target is not None and target.is_file():
        return target
    folder = Path(tempfile.gettempdir()) / f"twin-server-campaign-fmus-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}.fmu"
    if not target.is_file():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(fmus[digest])
        os.replace(tmp, target)  # atomic: a concurrent run sees all of it or nothing
    _landed[digest] = target
    return target


def overrides(spec: RunSpec, plan: RunPlan, middle: Mapping[str, Mapping[str, Value]] | None
              = None) -> dict[str, dict[str, Value]]:
    """The run's session parameters: the base, ``middle`` over it (a scenario's own),
    and the plan's values over both."""
    result = {c: dict(p) for c, p in spec.base.items()}
    for component, values in (middle or {}).items():
        result.setdefault(component, {}).update(values)
    for (component, parameter), value in zip(spec.varied, plan.values, strict=True):
        result.setdefault(component, {})[parameter] = value
    return result


def execute(spec: RunSpec, plan: RunPlan) -> RunResult:
    """Run ``plan``: a fresh session of ``spec.twin`` with its parameters, stepped
    ``spec.ticks`` times (or driven by the scenario) as fast as possible; never raises
    for the run's own failure."""
    started = time.perf_counter()
    name = f"run_{plan.index}"
    watched = {key for _, key in spec.kept} | {f.key for f in spec.figures}
    series: dict[VarKey, list[float]] = {key: [] for key in watched}
    every = spec.every
    times: list[float] = []
    session: Session | None = None
    message = ""
    verdicts: dict[str, str | int] = {}
    try:
        scenario = _scenario(spec)
        twin = land(spec.twin, spec.fmus)
        own = (scenario_parameters(scenario, twin, scenario.header.seed)
               if scenario is not None else None)
        settings = SessionSettings(step_size=spec.step_size, realtime_factor=0.0,
                                   parameters=overrides(spec, plan, own))
        session = Session(name, twin, settings)
        keys = list(series.items())
        if scenario is not None:
            message, verdicts = _drive(scenario, session, keys, every, times, spec.step_size)
        else:
            message = _step(session, keys, every, times, spec.step_size, spec.ticks)
    except Exception as exc:  # a model or FMU refusing to start, a refused parameter
        message = f"{type(exc).__name__}: {exc}"
    finally:
        if session is not None:
            ticks = session.step_count
            session.close()
        else:
            ticks = 0
    kept = {name: _sampled(series[key], every) for name, key in spec.kept}
    ok = not message
    figures = _figures(spec, series) if ok else {}
    return RunResult(index=plan.index, ok=ok, message=message, ticks=ticks,
                     sim_time=ticks * spec.step_size, figures=figures, times=tuple(times),
                     trajectories=kept, verdicts=verdicts if ok else {},
                     wall_s=time.perf_counter() - started)


def halted(session: Session) -> str:
    """Why a run's session halted before its end: a fault, or a model (an FMU asking
    to terminate) that ended the simulation before the campaign's duration."""
    if session.fault is not None:
        return str(session.fault)
    if session.ended is not None:
        return f"{session.ended}, before the campaign's duration"
    return "the session halted"


def _step(session: Session, keys: list[tuple[VarKey, list[float]]], every: int,
          times: list[float], step_size: float, ticks: int) -> str:
    """Take ``ticks`` ticks, sampling ``keys`` before the first and after each; the
    failure message ("" unless the session halted)."""
    read = session.read
    session.start()
    for k in range(ticks + 1):
        for key, values in keys:
            values.append(float(read(key)))
        if every and k % every == 0:
            times.append(k * step_size)
        if k == ticks:
            break
        session.tick()
        if session.state is RunState.HALTED:
            return halted(session)
    return ""


#: the scenarios parsed in this process (their text -> the parsed file)
_parsed: dict[str, ScenarioFile] = {}


def _scenario(spec: RunSpec) -> ScenarioFile | None:
    """The spec's scenario, parsed once per process (it does not pickle: it travels as
    text)."""
    if not spec.scenario_text:
        return None
    found = _parsed.get(spec.scenario_text)
    if found is None:
        found = parse_scenario(spec.scenario_text, file=spec.scenario_file,
                               path=Path(spec.scenario_file))
        _parsed.clear()  # one campaign's at a time is all a worker needs
        _parsed[spec.scenario_text] = found
    return found


def _drive(scenario: ScenarioFile, session: Session,
           keys: list[tuple[VarKey, list[float]]], every: int, times: list[float],
           step_size: float) -> tuple[str, dict[str, str | int]]:
    """Run ``scenario`` on ``session``, sampling ``keys`` at its start and at each of
    its ticks; the failure message ("" unless the session halted on a fault) and the
    verdicts."""
    read = session.read
    count = 0

    def sample() -> None:
        nonlocal count
        for key, values in keys:
            values.append(float(read(key)))
        if every and count % every == 0:
            times.append(count * step_size)
        count += 1

    class Sampled(SessionTarget):
        def __init__(self, session: Session, binding: Binding) -> None:
            super().__init__(session, binding)
            sample()

        async def sample(self) -> None:
            await super().sample()
            sample()

    result = drive(scenario, session, seed=scenario.header.seed, target=Sampled,
                   mode="campaign")
    if session.fault is not None or session.ended is not None:
        return halted(session), {}
    tally = result.counts()
    verdicts: dict[str, str | int] = {
        "scenario.verdict": str(result.verdict), "scenario.passed": tally[Verdict.PASSED],
        "scenario.failed": tally[Verdict.FAILED], "scenario.errors": tally[Verdict.ERROR],
        "scenario.skipped": tally[Verdict.SKIPPED]}
    for name, check in zip(check_names(scenario), result.checks, strict=True):
        verdicts[f"check.{name}"] = str(check.verdict)
    return "", verdicts


def _sampled(values: list[float], every: int) -> tuple[float, ...]:
    return tuple(values[::every]) if every else ()


def _figures(spec: RunSpec, series: Mapping[VarKey, list[float]]) -> dict[str, float]:
    result: dict[str, float] = {}
    for fig in spec.figures:
        values = series[fig.key]
        for figure in fig.figures:
            column = f"{fig.name}.{figure}"
            if figure == "final":
                result[column] = values[-1]
            elif figure == "min":
                result[column] = min(values)
            elif figure == "max":
                result[column] = max(values)
            else:
                result[column] = math.fsum(values) / len(values)
        held = values[:-1]
        if fig.above is not None:
            limit = fig.above
            result[f"{fig.name}.time_above"] = sum(1 for v in held if v > limit) * spec.step_size
        if fig.below is not None:
            limit = fig.below
            result[f"{fig.name}.time_below"] = sum(1 for v in held if v < limit) * spec.step_size
    return result
