"""The scenario file: TOML, validated with every error at once, each with its file and key.

::

    [scenario]
    name = "tank_setpoint_step"       # default: the file's stem
    config = "../demo.toml"           # the config whose twin it tests (--config overrides)
    session = "tank"                  # a session of the config (its twin and settings), or
    # twin = "tank_level"             # a twin of the config, on default settings
    seed = 7                          # every component parameter named 'seed'
    parameters = { tank = { initial_level = 0.5 } }
    timeout = 600.0                   # simulated seconds the whole run may take

    [plc.high_alarm]                  # a PLC node, named plc.high_alarm (live runs only)
    peer = "plc"                      # a HIL peer of the daemon
    node = "nsu=urn:soft-plc;s=PLC.HighAlarm"

    [[steps]]                         # one action key per step:
    set = "tank.inflow"               #   set NAME, value = V
    ramp = "..."                      #   ramp NAME, to = V, over = S [, from = V]
    release = "tank.inflow"           #   release a forced input
    wait = 5.0                        #   wait S simulated seconds
    wait_until = "tank.level > 1.0"   #   wait until CONDITION, timeout = S
    call = "Snapshot"                 #   call METHOD [, label = L]
    inject_fault = "stuck_level"      #   inject_fault NAME, variable, kind, parameters
    clear_fault = "stuck_level"       #   clear_fault NAME (or "*")
    inject_link_fault = "plc"         #   inject_link_fault PEER, kind [, delay, duration,
                                      #     bindings] (live runs only)
    clear_link_fault = "plc"          #   clear_link_fault PEER [, bindings] (live only)
    check = "tank.level < 1.9"        #   check CONDITION [, within = S | always = S | true]

Each step may have a ``name`` (the test case's name in JUnit for a check). This
module only describes: ``read_scenario`` returns a ``ScenarioFile`` with each
condition parsed (``expr``); ``scenarios.bind`` checks the names against a twin.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from twin_server.config.loader import did_you_mean, translate
from twin_server.config.schema import Name, Scalar
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.scenarios.expr import Expression, ExpressionError, parse

#: the session methods a ``call`` step may name
METHODS = ("Snapshot", "Restore", "Suspend", "Resume", "Start", "Halt", "Reset")
#: fault kinds of issue #17 part 5 (``inject_fault``)
FAULT_KINDS = ("stuck", "offset", "drift", "noise", "spike", "quantise", "delay", "dropout")
#: HIL link fault kinds (``inject_link_fault``, ``hil.link_faults``)
LINK_FAULT_KINDS = ("freeze", "delay", "cut")

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Header(_Frozen):
    """``[scenario]``: what the scenario runs on."""

    name: Name | None = None
    description: str = ""
    config: str | None = Field(None, description="the config file, relative to the scenario")
    session: Name | None = None
    twin: Name | None = None
    seed: int | None = Field(None, ge=-(2**31), lt=2**31)
    parameters: dict[Name, dict[Name, Scalar]] = Field(default_factory=dict)
    step_size: Positive | None = None
    timeout: Positive = 3600.0


class PlcNode(_Frozen):
    """``[plc.<alias>]``: a node of a HIL peer's PLC, read and written in live runs."""

    peer: Name
    node: str = Field(min_length=3)


class _Step(_Frozen):
    name: str | None = None


class SetStep(_Step):
    set: str
    value: Scalar


class RampStep(_Step):
    ramp: str
    to: float = Field(allow_inf_nan=False)
    over: Positive
    from_: float | None = Field(None, alias="from", allow_inf_nan=False)


class ReleaseStep(_Step):
    release: str


class WaitStep(_Step):
    wait: Seconds


class WaitUntilStep(_Step):
    wait_until: str
    timeout: Positive


class CallStep(_Step):
    call: Literal["Snapshot", "Restore", "Suspend", "Resume", "Start", "Halt", "Reset"]
    label: Name = "default"


class InjectFaultStep(_Step):
    inject_fault: Name
    variable: str
    kind: Literal["stuck", "offset", "drift", "noise", "spike", "quantise", "delay", "dropout"]
    parameters: dict[Name, Scalar] = Field(default_factory=dict)
    duration: Positive | None = None


class ClearFaultStep(_Step):
    clear_fault: str

    @field_validator("clear_fault")
    @classmethod
    def _fault_name(cls, value: str) -> str:
        if value != "*" and not value.isidentifier():
            raise ValueError("must be a fault's name or '*' for every fault")
        return value


class InjectLinkFaultStep(_Step):
    """A HIL peer's link frozen, delayed or cut (``HIL/<peer>/InjectLinkFault``)."""

    inject_link_fault: Name
    kind: Literal["freeze", "delay", "cut"]
    delay: Positive | None = None
    duration: Positive | None = None  # wall-clock s (a HIL link runs in real time)
    bindings: list[Name] = Field(default_factory=list)


class ClearLinkFaultStep(_Step):
    """A HIL peer's link faults ended (``HIL/<peer>/ClearLinkFault``)."""

    clear_link_fault: Name
    bindings: list[Name] = Field(default_factory=list)


class CheckStep(_Step):
    check: str
    within: Positive | None = None
    always: StrictBool | Positive | None = None

    @property
    def mode(self) -> str:
        if self.within is not None:
            return "within"
        return "always" if self.always not in (None, False) else "now"

    @property
    def duration(self) -> float | None:
        """within: the limit; always: the interval (None: to the end of the scenario)."""
        if self.within is not None:
            return self.within
        if isinstance(self.always, bool):
            return None
        return self.always


Step = (SetStep | RampStep | ReleaseStep | WaitStep | WaitUntilStep | CallStep
        | InjectFaultStep | ClearFaultStep | InjectLinkFaultStep | ClearLinkFaultStep
        | CheckStep)

#: the action key of each kind of step
ACTIONS: dict[str, type[_Step]] = {
    "set": SetStep, "ramp": RampStep, "release": ReleaseStep, "wait": WaitStep,
    "wait_until": WaitUntilStep, "call": CallStep, "inject_fault": InjectFaultStep,
    "clear_fault": ClearFaultStep, "inject_link_fault": InjectLinkFaultStep,
    "clear_link_fault": ClearLinkFaultStep, "check": CheckStep,
}


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step validated, with its condition parsed (wait_until, check)."""

    index: int
    step: Step
    condition: Expression | None = None

    @property
    def path(self) -> str:
        return f"steps[{self.index}]"

    @property
    def action(self) -> str:
        return next(key for key in ACTIONS if isinstance(self.step, ACTIONS[key]))

    @property
    def label(self) -> str:
        """A line that says what the step does (progress, reports)."""
        step = self.step
        if isinstance(step, CheckStep):
            mode = step.mode
            text = f"check {step.check!r}"
            if mode == "within":
                return f"{text} within {step.within:g} s"
            if mode == "always":
                span = step.duration
                return f"{text} always" + (f" for {span:g} s" if span is not None else "")
            return text
        if isinstance(step, SetStep):
            return f"set {step.set} = {step.value!r}"
        if isinstance(step, RampStep):
            return f"ramp {step.ramp} to {step.to:g} over {step.over:g} s"
        if isinstance(step, ReleaseStep):
            return f"release {step.release}"
        if isinstance(step, WaitStep):
            return f"wait {step.wait:g} s"
        if isinstance(step, WaitUntilStep):
            return f"wait until {step.wait_until!r} (timeout {step.timeout:g} s)"
        if isinstance(step, CallStep):
            return f"call {step.call}" + (f" ({step.label})" if step.call in
                                         ("Snapshot", "Restore") else "")
        if isinstance(step, InjectFaultStep):
            return f"inject fault {step.inject_fault} ({step.kind} on {step.variable})"
        if isinstance(step, InjectLinkFaultStep):
            what = f"{step.kind}" + (f" {step.delay:g} s" if step.delay is not None else "")
            return (f"inject link fault ({what}) on {step.inject_link_fault}"
                    + (f" {', '.join(step.bindings)}" if step.bindings else ""))
        if isinstance(step, ClearLinkFaultStep):
            return (f"clear link faults on {step.clear_link_fault}"
                    + (f" {', '.join(step.bindings)}" if step.bindings else ""))
        return f"clear fault {step.clear_fault}"

    @property
    def check_name(self) -> str:
        return self.step.name or f"{self.path}: {self.label}"


@dataclass(frozen=True, slots=True)
class ScenarioFile:
    """A scenario file read and validated in structure (names are checked by ``bind``)."""

    file: str
    name: str
    header: Header
    plc: dict[str, PlcNode]
    steps: tuple[PlannedStep, ...]
    path: Path | None = None
    raw_text: str = field(default="", repr=False)

    @property
    def config_path(self) -> Path | None:
        """The header's config, resolved against the scenario's folder."""
        if self.header.config is None:
            return None
        base = self.path.parent if self.path is not None else Path.cwd()
        return (base / self.header.config).resolve()

    @property
    def live_only(self) -> str:
        """Why it runs live alone (it reads PLC nodes, it has link fault steps), or ""."""
        if self.plc:
            return "reads PLC nodes"
        if any(isinstance(s.step, InjectLinkFaultStep | ClearLinkFaultStep)
               for s in self.steps):
            return "has link fault steps"
        return ""

    @property
    def checks(self) -> list[PlannedStep]:
        return [s for s in self.steps if isinstance(s.step, CheckStep)]


def config_errors(group: ConfigErrors) -> list[ConfigError]:
    """The ConfigErrors of a group, typed (an ExceptionGroup's ``exceptions`` are not)."""
    return [e for e in group.exceptions if isinstance(e, ConfigError)]


def read_scenario(path: str | Path) -> ScenarioFile:
    """Read and validate the scenario file at ``path``; ConfigErrors with every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigErrors([ConfigError(f"cannot read the scenario file: {reason}",
                                        file=file)]) from None
    return parse_scenario(text, file=file, path=Path(path))


def parse_scenario(text: str, *, file: str = "<string>", path: Path | None = None) -> ScenarioFile:
    """Like ``read_scenario`` for TOML text; errors name ``file``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError(f"TOML syntax error: {exc}", file=file)]) from None
    return scenario_from_table(raw, file=file, path=path, text=text)


def scenario_from_table(raw: dict[str, Any], *, file: str = "<string>",
                        path: Path | None = None, text: str = "") -> ScenarioFile:
    """Like ``parse_scenario`` for the TOML already read (a table with ``scenario``,
    ``plc`` and ``steps``: a face method's inline steps)."""
    errors: list[ConfigError] = []

    def fail(key: str, message: str) -> None:
        errors.append(ConfigError(message, path=key, file=file))

    for key in raw:
        if key not in ("scenario", "plc", "steps"):
            fail(key, f"unknown key {key!r} (allowed: scenario, plc, steps)"
                      f"{did_you_mean(key, ('scenario', 'plc', 'steps'))}")
    header = _validated(Header, raw.get("scenario", {}), ("scenario",), file, errors)
    if header is not None and (header.session is None) == (header.twin is None):
        fail("scenario", "give exactly one of 'session' (a session of the config: its twin "
                         "and settings) and 'twin' (a twin of the config)")
    plc: dict[str, PlcNode] = {}
    plc_raw = raw.get("plc", {})
    if not isinstance(plc_raw, dict):
        fail("plc", "expected a table of PLC nodes ([plc.<alias>] peer = ..., node = ...)")
    else:
        for alias, body in plc_raw.items():
            node = _validated(PlcNode, body, ("plc", alias), file, errors)
            if not alias.isidentifier():
                fail(f"plc.{alias}", f"invalid alias {alias!r}: letters, digits and '_'")
            elif node is not None:
                plc[alias] = node
    steps_raw = raw.get("steps", [])
    steps: list[PlannedStep] = []
    if not isinstance(steps_raw, list) or not all(isinstance(s, dict) for s in steps_raw):
        fail("steps", "expected an array of tables ([[steps]])")
        steps_raw = []
    elif not steps_raw:
        fail("steps", "a scenario needs at least one step ([[steps]])")
    for index, body in enumerate(steps_raw):
        planned = _step(index, body, file, errors)
        if planned is not None:
            steps.append(planned)
    if errors or header is None:
        raise ConfigErrors(errors)
    name = header.name or (path.stem if path is not None else "scenario")
    return ScenarioFile(file, name, header, plc, tuple(steps), path, text)


def _validated(model: type[Any], body: Any, prefix: tuple[str | int, ...], file: str,
               errors: list[ConfigError]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors.extend(translate(exc, root=model, file=file, prefix=prefix))
        return None


def _step(index: int, body: dict[str, Any], file: str,
          errors: list[ConfigError]) -> PlannedStep | None:
    where = f"steps[{index}]"
    actions = [key for key in body if key in ACTIONS]
    if len(actions) != 1:
        found = f"found {', '.join(actions)}" if actions else "found none"
        errors.append(ConfigError(
            f"a step has exactly one action key: {', '.join(ACTIONS)} ({found})",
            path=where, file=file))
        return None
    model = ACTIONS[actions[0]]
    step = _validated(model, body, ("steps", index), file, errors)
    if step is None:
        return None
    condition: Expression | None = None
    text = getattr(step, "check", None) or getattr(step, "wait_until", None)
    if text is not None:
        key = "check" if isinstance(step, CheckStep) else "wait_until"
        try:
            condition = parse(text)
        except ExpressionError as exc:
            errors.append(ConfigError(
                f"column {exc.column}: {exc.message}\n    {text}\n    {' ' * (exc.column - 1)}^",
                path=f"{where}.{key}", file=file))
            return None
    if isinstance(step, CheckStep) and step.within is not None and step.always is not None:
        errors.append(ConfigError("a check is 'within' a time or 'always', not both",
                                  path=where, file=file))
        return None
    if isinstance(step, CheckStep) and step.always is False:
        errors.append(ConfigError("always = false means nothing: leave it out for a check "
                                  "that must hold now", path=f"{where}.always", file=file))
        return None
    if isinstance(step, InjectLinkFaultStep) and (step.kind == "delay") != (
            step.delay is not None):
        errors.append(ConfigError(
            "a delay link fault needs delay = S (s, > 0)" if step.kind == "delay" else
            f"delay is for kind = 'delay' alone (got kind = {step.kind!r})",
            path=f"{where}.delay", file=file))
        return None
    if isinstance(step, SetStep) and isinstance(step.value, float) and not math.isfinite(
            step.value):
        errors.append(ConfigError(f"must be a finite number (got {step.value})",
                                  path=f"{where}.value", file=file))
        return None
    return PlannedStep(index, step, condition)
