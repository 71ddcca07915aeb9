"""The campaign file: what to run, what to vary, what to keep. TOML, checked like a config
file (frozen pydantic models that forbid unknown keys, every error at once with its file
and key path), then resolved against the twin it names::

    [campaign]
    config = "../configs/demo.toml"   # the twin's config file, relative to this file
    twin = "tank_level"               # optional when the config has one twin
    session = "tank"                  # optional: its step size and parameters are the base
    duration = 60.0                   # simulated seconds per run
    seed = 42                         # for the sampled parameters
    samples = 10                      # draws of the sampled parameters per grid point

    [parameters]
    "tank.area" = { values = [0.4, 0.5, 0.6] }                    # a grid of values
    "controller.kp" = { range = [0.1, 0.5], steps = 5 }           # evenly spaced, ends included
    "tank.initial_level" = { distribution = "uniform", low = 0.3, high = 0.7 }
    "controller.ki" = { distribution = "normal", mean = 0.004, std = 0.001 }

    [trajectories]
    interval = 1.0                    # simulated seconds, a whole number of steps
    variables = ["tank.level", "controller.output"]

    [summary."tank.level"]
    figures = ["final", "min", "max", "mean"]   # the default: all four
    above = 1.2                       # adds tank.level.time_above (seconds above 1.2 m)

The run list (``plan_runs``) is deterministic: the grid is the product of every
``values`` and ``range`` parameter in the file's order (the last one varying fastest),
each grid point taken ``samples`` times; the ``distribution`` parameters are drawn for
each run in run order from one ``numpy.random.default_rng(seed)``. The same file gives
the same runs with the same values on any machine (NumPy's PCG64 stream is stable).

A variable is named ``component.variable``: an output if the component has one of
that name, else a state, an input, a parameter.

A scenario instead of a duration (``scenario = "scenarios/step.toml"``, relative to the
campaign file): each run is that scenario run on the run's session (the offline runner,
``scenarios.offline.drive``), and lasts as long as the scenario does. The run's session
is the campaign's (its twin, step size and base parameters); the scenario's own
``parameters`` and ``seed`` go on top, the varied parameters over them; its
``session``/``twin``/``config`` keys are not used (the campaign names the twin), and a
``step_size`` of its own must be the campaign's. Its verdicts become columns
(``VERDICT_COLUMNS`` and one ``check.<name>`` per check, ``passed``, ``failed``,
``error`` or ``skipped``); trajectories and figures are taken at each tick as without.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twin_server.config.loader import STRING_FILE, did_you_mean, quoted_key, translate
from twin_server.config.schema import Name, Scalar, SessionConfig
from twin_server.engine.state import VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.models.base import DataType, Kind, Value

if TYPE_CHECKING:
    from twin_server.scenarios.schema import ScenarioFile

#: what ``[summary."c.v"].figures`` may list
Figure = Literal["final", "min", "max", "mean"]
FIGURES: tuple[Figure, ...] = ("final", "min", "max", "mean")
#: how a variable's name is looked up: an output first, then a state, an input, a parameter
_LOOKUP = (Kind.OUTPUT, Kind.STATE, Kind.INPUT, Kind.PARAMETER)
#: records one error: (message, key path)
Fail = Callable[[str, str], None]
#: the model whose ``options.path`` is a file the runs need (shipped with them)
FMU_MODEL = "fmu"
#: a scenario run's columns: its verdict (passed, failed, error) and its checks' counts
VERDICT_COLUMNS = ("scenario.verdict", "scenario.passed", "scenario.failed",
                   "scenario.errors", "scenario.skipped")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class CampaignSection(_Frozen):
    """``[campaign]``: the twin, how long each run is, the seed."""

    name: Name | None = Field(None, description="the campaign's name (default: the file's stem)")
    config: str = Field(description="the twin's config file, relative to the campaign file")
    twin: Name | None = Field(None, description="the twin (default: the config's only one)")
    session: Name | None = Field(
        None, description="a session of the config whose step size and parameters are the base")
    step_size: float | None = Field(None, gt=0, le=3600, description="seconds per tick")
    duration: float | None = Field(None, gt=0, description="simulated seconds per run")
    scenario: str | None = Field(
        None, description="a scenario file run on each run's session (instead of duration)")
    seed: int = Field(0, ge=0, description="seed of the sampled parameters")
    samples: int = Field(1, ge=1, le=1_000_000, description="draws per grid point")


class ParameterSpec(_Frozen):
    """One varied parameter: ``values``, or ``range`` and ``steps``, or a ``distribution``."""

    values: list[Scalar] | None = Field(None, min_length=1)
    range: list[float] | None = None
    steps: int | None = Field(None, ge=2, le=1_000_000)
    distribution: Literal["uniform", "loguniform", "normal"] | None = None
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    std: float | None = Field(None, gt=0)


class TrajectorySpec(_Frozen):
    """``[trajectories]``: the variables kept over time, every ``interval`` seconds."""

    interval: float = Field(gt=0)
    variables: list[str] = Field(min_length=1)


class SummarySpec(_Frozen):
    """``[summary."c.v"]``: the figures of one variable over each run."""

    figures: list[Figure] = Field(default_factory=lambda: list(FIGURES))
    above: float | None = None
    below: float | None = None


class CampaignFile(_Frozen):
    campaign: CampaignSection
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    trajectories: TrajectorySpec | None = None
    summary: dict[str, SummarySpec] = Field(default_factory=dict)


# -- the resolved campaign ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Varied:
    """A varied parameter: grid ``values``, or a distribution to draw from."""

    name: str  # "component.parameter"
    component: str
    parameter: str
    values: tuple[Value, ...] = ()
    distribution: str = ""
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 0.0

    @property
    def sampled(self) -> bool:
        return bool(self.distribution)

    def draw(self, rng: np.random.Generator) -> float:
        if self.distribution == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.distribution == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.normal(self.mean, self.std))


@dataclass(frozen=True, slots=True)
class Figures:
    """The summary figures of one variable: names ``<variable>.<figure>``."""

    name: str  # "component.variable"
    key: VarKey
    figures: tuple[str, ...]
    above: float | None = None
    below: float | None = None

    def columns(self) -> tuple[str, ...]:
        extra = (("time_above",) if self.above is not None else ()) + (
            ("time_below",) if self.below is not None else ())
        return tuple(f"{self.name}.{f}" for f in (*self.figures, *extra))


@dataclass(frozen=True, slots=True)
class Campaign:
    """A checked campaign file, resolved against its twin."""

    name: str
    file: str
    text: str  # the campaign file as written (kept with the results)
    twin: TwinDefinition
    step_size: float
    ticks: int  # per run
    base: Mapping[str, Mapping[str, Value]]  # the session's parameters, under the varied ones
    varied: tuple[Varied, ...]
    seed: int
    samples: int
    kept: tuple[tuple[str, VarKey], ...]  # trajectories: (name, key)
    every: int  # ticks between two trajectory samples (0: no trajectories)
    figures: tuple[Figures, ...]
    #: the FMU files the twin needs, read now (sha-256 -> bytes): they travel with the runs
    fmus: Mapping[str, bytes] = field(default_factory=dict)
    #: which FMU each FMU component loads (component -> sha-256)
    fmu_of: Mapping[str, str] = field(default_factory=dict)
    #: the scenario file each run runs (None: ``ticks`` ticks), its path and its text
    scenario: str | None = None
    scenario_text: str = ""
    #: the names of the scenario's checks (``check_columns``), in step order
    checks: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Simulated seconds per run (0.0 when a scenario decides)."""
        return self.ticks * self.step_size

    def verdict_columns(self) -> tuple[str, ...]:
        """The scenario's verdict columns (none without a scenario)."""
        if self.scenario is None:
            return ()
        return (*VERDICT_COLUMNS, *(f"check.{name}" for name in self.checks))

    def parameter_columns(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.varied)

    def figure_columns(self) -> tuple[str, ...]:
        return tuple(c for f in self.figures for c in f.columns())


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One run: its index in the campaign and the values of the varied parameters."""

    index: int
    values: tuple[Value, ...]  # in the order of ``Campaign.varied``


def plan_runs(campaign: Campaign) -> list[RunPlan]:
    """Every run of ``campaign``, in order (module docstring: the same file, the same runs)."""
    grid = [v for v in campaign.varied if not v.sampled]
    rng = np.random.default_rng(campaign.seed)
    plans: list[RunPlan] = []
    points = itertools.product(*(v.values for v in grid))
    for point in points:
        for _ in range(campaign.samples):
            chosen = iter(point)
            values = tuple(v.draw(rng) if v.sampled else next(chosen) for v in campaign.varied)
            plans.append(RunPlan(len(plans), values))
    return plans


# -- reading and checking ----------------------------------------------------------------


def load_campaign(path: str | Path) -> Campaign:
    """Read and check the campaign file at ``path`` and the config it names; raise
    ConfigErrors with every problem of both, each with its file and key path."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigErrors([ConfigError(f"cannot read the campaign file: {reason}",
                                        file=file)]) from None
    return parse_campaign(text, file=file, base_dir=Path(path).parent,
                          name=Path(path).stem)


def parse_campaign(text: str, *, file: str = STRING_FILE, base_dir: Path | None = None,
                   name: str = "campaign") -> Campaign:
    """Like ``load_campaign`` for TOML text; the config path resolves against
    ``base_dir`` (the cwd if None)."""
    from twin_server.runtime.compile import LoadedConfig, load_config

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError(f"TOML syntax error: {exc}", file=file)]) from None
    try:
        spec = CampaignFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigErrors(translate(exc, root=CampaignFile, file=file)) from None

    errors: list[ConfigError] = []

    def fail(message: str, where: str) -> None:
        errors.append(ConfigError(message, path=where, file=file))

    head = spec.campaign
    config_path = (base_dir or Path.cwd()) / head.config
    loaded: LoadedConfig | None = None
    try:
        loaded = load_config(config_path)
    except ConfigErrors as group:  # the config's own errors name the config file
        errors.extend(e for e in group.exceptions if isinstance(e, ConfigError))
        fail(f"the config file {str(config_path)!r} has errors (listed with it); fix them",
             "campaign.config")
    if head.scenario is not None and head.duration is not None:
        fail("give 'duration' (simulated seconds per run) or 'scenario' (a scenario run on "
             "each run), not both", "campaign")
    elif head.scenario is None and head.duration is None:
        fail("missing required key 'duration' (simulated seconds per run) or 'scenario' "
             "(a scenario file run on each run)", "campaign")
    if loaded is None:
        raise ConfigErrors(errors)

    twin, session = _twin_and_session(spec.campaign, loaded.twins, loaded.config.sessions, fail)
    if twin is None:
        raise ConfigErrors(errors)
    step_size = head.step_size or (session.step_size if session is not None
                                   else SessionConfig.model_fields["step_size"].default)
    base: Mapping[str, Mapping[str, Value]] = (
        loaded.session_parameters.get(head.session, {}) if head.session else {})
    ticks = _whole_steps(head.duration or 0.0, step_size)
    varied = _varied(spec.parameters, twin, fail)
    if head.samples > 1 and not any(v.sampled for v in varied):
        fail(f"samples = {head.samples} draws nothing: no parameter has a 'distribution' "
             "(remove samples, or vary a parameter with a distribution)", "campaign.samples")

    kept: list[tuple[str, VarKey]] = []
    every = 0
    if spec.trajectories is not None:
        interval = spec.trajectories.interval
        every = _whole_steps(interval, step_size)
        if not math.isclose(every * step_size, interval, rel_tol=1e-9):
            fail(f"must be a whole number of steps of {step_size:g} s (got {interval:g})",
                 "trajectories.interval")
        for i, variable in enumerate(spec.trajectories.variables):
            key = _variable(twin, variable, f"trajectories.variables[{i}]", fail)
            if key is not None:
                kept.append((variable, key))
    figures = []
    for variable, summary in spec.summary.items():
        key = _variable(twin, variable, f"summary.{quoted_key(variable)}", fail)
        if key is not None:
            figures.append(Figures(variable, key, tuple(dict.fromkeys(summary.figures)),
                                   summary.above, summary.below))
    fmus, fmu_of = _fmu_files(twin, fail)
    scenario = None
    if head.scenario is not None:
        scenario = _scenario((base_dir or Path.cwd()) / head.scenario, twin, float(step_size),
                             errors, fail)
    if errors:
        raise ConfigErrors(errors)
    return Campaign(
        name=head.name or name, file=file, text=text, twin=twin, step_size=float(step_size),
        ticks=ticks, base=base, varied=tuple(varied), seed=head.seed, samples=head.samples,
        kept=tuple(kept), every=every, figures=tuple(figures), fmus=fmus, fmu_of=fmu_of,
        scenario=head.scenario, scenario_text=scenario.raw_text if scenario else "",
        checks=check_names(scenario) if scenario else ())


def check_names(scenario: ScenarioFile) -> tuple[str, ...]:
    """The column name of each check of ``scenario``: its ``name``, else ``steps[N]``."""
    return tuple(p.step.name or p.path for p in scenario.checks)


def _scenario(path: Path, twin: TwinDefinition, step_size: float, errors: list[ConfigError],
              fail: Fail) -> ScenarioFile | None:
    """The scenario at ``path``, its names checked against ``twin`` (its errors name the
    scenario file and its keys)."""
    from twin_server.scenarios.names import bind
    from twin_server.scenarios.offline import scenario_parameters
    from twin_server.scenarios.schema import read_scenario

    try:
        scenario = read_scenario(path)
        own = scenario.header.step_size
        if own is not None and not math.isclose(own, step_size, rel_tol=1e-12):
            fail(f"the scenario's step_size ({own:g} s) is not the campaign's "
                 f"({step_size:g} s): remove it from {str(path)!r}, or set the campaign's",
                 "campaign.scenario")
        scenario_parameters(scenario, twin, scenario.header.seed)
        variables = [VarKey(c.name, v.kind, v.name)
                     for c in twin.components for v in c.declared()]
        bind(scenario, variables, live=False)
    except ConfigErrors as group:
        found = [e for e in group.exceptions if isinstance(e, ConfigError)]
        errors.extend(found)
        fail(f"the scenario file {str(path)!r} has errors (listed with it); fix them",
             "campaign.scenario")
        return None
    names = check_names(scenario)
    if len(set(names)) != len(names):
        fail(f"two checks of {str(path)!r} share a name: each check's name is a column "
             "of the results; name them apart", "campaign.scenario")
    return scenario


def _whole_steps(seconds: float, step_size: float) -> int:
    """Ticks in ``seconds``: rounded up, but a float's hair above a whole number is not a
    tick more (60 s at 0.01 s is 6,000 ticks, not 6,001)."""
    return max(math.ceil(seconds / step_size - 1e-9), 0)


def _twin_and_session(head: CampaignSection, twins: Mapping[str, TwinDefinition],
                      sessions: Mapping[str, SessionConfig],
                      fail: Fail) -> tuple[TwinDefinition | None, SessionConfig | None]:
    session = None
    twin_name = head.twin
    if head.session is not None:
        session = sessions.get(head.session)
        if session is None:
            names = list(sessions)
            fail(f"no session {head.session!r} in the config (its sessions: "
                 f"{', '.join(names) or 'none'}){did_you_mean(head.session, names)}",
                 "campaign.session")
        elif twin_name is None:
            twin_name = session.twin
        elif twin_name != session.twin:
            fail(f"session {head.session!r} is of twin {session.twin!r}, not {twin_name!r}: "
                 "name one of them", "campaign.session")
    if twin_name is None:
        if len(twins) == 1:
            return next(iter(twins.values())), session
        fail(f"name the twin to run: the config has {len(twins)} ("
             f"{', '.join(twins) or 'none'})", "campaign")
        return None, session
    twin = twins.get(twin_name)
    if twin is None:
        names = list(twins)
        fail(f"no twin {twin_name!r} in the config (its twins: {', '.join(names) or 'none'})"
             f"{did_you_mean(twin_name, names)}", "campaign.twin")
    return twin, session


def _split(name: str) -> tuple[str, str] | None:
    parts = name.split(".")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def _varied(specs: Mapping[str, ParameterSpec], twin: TwinDefinition,
            fail: Fail) -> list[Varied]:
    result = []
    for name, spec in specs.items():
        where = f"parameters.{quoted_key(name)}"
        split = _split(name)
        if split is None:
            fail(f"name a parameter as 'component.parameter' (got {name!r})", where)
            continue
        component, parameter = split
        try:
            twin.check_overrides({component: {parameter: _probe(twin, component, parameter)}})
        except ConfigErrors as group:
            for error in group.exceptions:
                fail(error.message, where)
            continue
        ways = [w for w in ("values", "range", "distribution") if getattr(spec, w) is not None]
        if len(ways) != 1:
            fail("give exactly one of 'values', 'range' (with 'steps') or 'distribution'"
                 + (f" (got {', '.join(ways)})" if ways else ""), where)
            continue
        varied = Varied(name, component, parameter)
        if spec.values is not None:
            values = _coerced(twin, component, parameter, spec.values, f"{where}.values", fail)
            if values is not None:
                result.append(_replace(varied, values=values))
        elif spec.range is not None:
            if len(spec.range) != 2 or spec.steps is None:
                fail("a range is [first, last] with 'steps' values (ends included)", where)
                continue
            points = [float(x) for x in np.linspace(spec.range[0], spec.range[1], spec.steps)]
            values = _coerced(twin, component, parameter, points, f"{where}.range", fail)
            if values is not None:
                result.append(_replace(varied, values=values))
        else:
            drawn = _distribution(spec, where, fail)
            if drawn is not None:
                result.append(_replace(varied, **drawn))
    return result


def _replace(varied: Varied, **changes: Any) -> Varied:
    return dataclasses.replace(varied, **changes)


def _probe(twin: TwinDefinition, component: str, parameter: str) -> Value:
    """A valid value of the parameter (its current one), or a placeholder that lets
    ``check_overrides`` name an unknown component or parameter."""
    try:
        return twin.component(component).parameters.get(parameter, 0.0)
    except KeyError:
        return 0.0


def _coerced(twin: TwinDefinition, component: str, parameter: str, values: Sequence[Any],
             where: str, fail: Fail) -> tuple[Value, ...] | None:
    result = []
    ok = True
    for i, value in enumerate(values):
        try:
            checked = twin.check_overrides({component: {parameter: value}})
        except ConfigErrors as group:
            for error in group.exceptions:
                fail(error.message, f"{where}[{i}]")
            ok = False
            continue
        result.append(checked[component][parameter])
    return tuple(result) if ok else None


def _distribution(spec: ParameterSpec, where: str, fail: Fail) -> dict[str, Any] | None:
    kind = spec.distribution
    if kind in ("uniform", "loguniform"):
        if spec.low is None or spec.high is None or spec.mean is not None or spec.std is not None:
            fail(f"a {kind} distribution takes 'low' and 'high' (and nothing else)", where)
            return None
        if not spec.low < spec.high:
            fail(f"low must be below high (got low = {spec.low:g}, high = {spec.high:g})", where)
            return None
        if kind == "loguniform" and spec.low <= 0:
            fail(f"a loguniform distribution needs low > 0 (got {spec.low:g})", where)
            return None
        return {"distribution": kind, "low": spec.low, "high": spec.high}
    if spec.mean is None or spec.std is None or spec.low is not None or spec.high is not None:
        fail("a normal distribution takes 'mean' and 'std' (and nothing else)", where)
        return None
    return {"distribution": kind, "mean": spec.mean, "std": spec.std}


def _variable(twin: TwinDefinition, name: str, where: str, fail: Fail) -> VarKey | None:
    split = _split(name)
    if split is None:
        fail(f"name a variable as 'component.variable' (got {name!r})", where)
        return None
    component, variable = split
    names = [c.name for c in twin.components]
    if component not in names:
        fail(f"unknown component {component!r} in twin {twin.name!r} (its components: "
             f"{', '.join(names)}){did_you_mean(component, names)}", where)
        return None
    declared = twin.component(component).declared()
    for kind in _LOOKUP:
        for var in declared:
            if var.kind is kind and var.name == variable:
                if var.datatype is DataType.STRING:
                    fail(f"{name} is a string: only numbers and booleans can be kept", where)
                    return None
                return VarKey(component, kind, variable)
    known = sorted({v.name for v in declared})
    fail(f"component {component!r} has no variable {variable!r} (its variables: "
         f"{', '.join(known)}){did_you_mean(variable, known)}", where)
    return None


def _fmu_files(twin: TwinDefinition, fail: Fail) -> tuple[dict[str, bytes], dict[str, str]]:
    """The bytes of every FMU the twin loads, by sha-256, and which one each component
    loads: a worker on another machine gets them with its runs (no shared filesystem
    is assumed)."""
    result: dict[str, bytes] = {}
    of: dict[str, str] = {}
    for comp in twin.components:
        if comp.model != FMU_MODEL:
            continue
        path = comp.options.get("path")
        try:
            data = Path(str(path)).read_bytes()
        except OSError as exc:
            fail(f"cannot read the FMU {str(path)!r}: {exc.strerror or exc}",
                 f"twins.{twin.name}.components.{comp.name}.options.path")
            continue
        digest = hashlib.sha256(data).hexdigest()
        result[digest] = data
        of[comp.name] = digest
    return result, of
