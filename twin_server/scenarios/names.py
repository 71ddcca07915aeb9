"""The names a scenario reads and writes, resolved against a session's variables.

* ``component.variable`` (``tank.level``): read, it is the component's output of
  that name, else its state, input or parameter; written (set, ramp, release), its
  input, else state, else parameter. ``component.<kind>.variable`` with a kind of
  ``inputs``, ``outputs``, ``states`` or ``parameters`` names one exactly
  (``tank.states.level``).
* ``time``: the simulated seconds since the scenario started (read only).
* ``plc.<alias>``: a PLC node declared under ``[plc.<alias>]`` (live runs only).

Link fault steps (``inject_link_fault``, ``clear_link_fault``) act on a HIL peer of
a daemon: live runs only, like PLC nodes (offline, each is a ConfigError at its key).

``bind`` checks every name of a scenario at once and returns a ``Binding``; each
unknown name is a ConfigError at its step's key, with the names it could have meant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twin_server.config.loader import did_you_mean
from twin_server.engine.state import VarKey
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.models.base import Kind
from twin_server.scenarios.schema import (
    CheckStep,
    ClearLinkFaultStep,
    InjectFaultStep,
    InjectLinkFaultStep,
    RampStep,
    ReleaseStep,
    ScenarioFile,
    SetStep,
)

TIME = "time"
_KINDS = {"inputs": Kind.INPUT, "outputs": Kind.OUTPUT, "states": Kind.STATE,
          "parameters": Kind.PARAMETER}
_READ_ORDER = (Kind.OUTPUT, Kind.STATE, Kind.INPUT, Kind.PARAMETER)
_WRITE_ORDER = (Kind.INPUT, Kind.STATE, Kind.PARAMETER)


@dataclass(frozen=True, slots=True)
class PlcRef:
    """A PLC node named in a scenario: ``plc.<alias>``."""

    alias: str
    peer: str
    node: str


Ref = VarKey | PlcRef


@dataclass(frozen=True, slots=True)
class Binding:
    """Every name of a scenario resolved: what each reads (``reads``, for the
    conditions and the plots) and what each write step writes (``writes``)."""

    reads: dict[str, Ref]  # name -> variable (``time`` is not in it)
    writes: dict[int, Ref]  # step index -> variable


def bind(scenario: ScenarioFile, variables: Iterable[VarKey], *, live: bool) -> Binding:
    """Resolve the scenario's names against a session's ``variables``; ConfigErrors
    naming each step key whose name is unknown (or a PLC node in an offline run)."""
    index: dict[str, dict[Kind, VarKey]] = {}
    for var in variables:
        index.setdefault(f"{var.component}.{var.name}", {})[var.kind] = var
    errors: list[ConfigError] = []
    reads: dict[str, Ref] = {}
    writes: dict[int, Ref] = {}

    def resolve(name: str, where: str, order: tuple[Kind, ...]) -> Ref | None:
        if name.startswith("plc."):
            alias = name[4:]
            node = scenario.plc.get(alias)
            if node is None:
                errors.append(ConfigError(
                    f"no PLC node {alias!r}: declare it as [plc.{alias}] with its peer and node"
                    f"{did_you_mean(alias, scenario.plc)}", path=where, file=scenario.file))
                return None
            if not live:
                errors.append(ConfigError(
                    f"{name} is a PLC node: it exists only in a live run (--endpoint URL "
                    "against a daemon with that HIL peer)", path=where, file=scenario.file))
                return None
            return PlcRef(alias, node.peer, node.node)
        parts = name.split(".")
        if len(parts) == 3 and parts[1] in _KINDS:
            found = index.get(f"{parts[0]}.{parts[2]}", {}).get(_KINDS[parts[1]])
            if found is not None:
                return found
        elif len(parts) == 2 and name in index:
            kinds = index[name]
            for kind in order:
                if kind in kinds:
                    return kinds[kind]
            errors.append(ConfigError(
                f"{name} is {'an output' if Kind.OUTPUT in kinds else 'read only'}: "
                "a scenario sets inputs, states and parameters", path=where,
                file=scenario.file))
            return None
        known = [*index, TIME, *(f"plc.{a}" for a in scenario.plc)]
        errors.append(ConfigError(
            f"unknown name {name!r}: names are component.variable (or "
            f"component.inputs|outputs|states|parameters.variable), 'time', or plc.<alias>"
            f"{did_you_mean(name, known)}", path=where, file=scenario.file))
        return None

    for planned in scenario.steps:
        step = planned.step
        where = planned.path
        if isinstance(step, InjectLinkFaultStep | ClearLinkFaultStep) and not live:
            key = planned.action
            errors.append(ConfigError(
                f"{key} acts on a HIL peer's link ({getattr(step, key)!r}): it exists only "
                "in a live run (--endpoint URL against a daemon with that HIL peer)",
                path=f"{where}.{key}", file=scenario.file))
        if planned.condition is not None:
            key = "check" if isinstance(step, CheckStep) else "wait_until"
            for name in sorted(planned.condition.names):
                if name == TIME or name in reads:
                    continue
                ref = resolve(name, f"{where}.{key}", _READ_ORDER)
                if ref is not None:
                    reads[name] = ref
        target: tuple[str, str] | None = None
        if isinstance(step, SetStep):
            target = (step.set, "set")
        elif isinstance(step, RampStep):
            target = (step.ramp, "ramp")
        elif isinstance(step, ReleaseStep):
            target = (step.release, "release")
        elif isinstance(step, InjectFaultStep):
            target = (step.variable, "variable")
        if target is not None:
            name, field = target
            ref = resolve(name, f"{where}.{field}",
                          _READ_ORDER if field == "variable" else _WRITE_ORDER)
            if ref is not None:
                writes[planned.index] = ref
                if isinstance(step, ReleaseStep) and not (
                        isinstance(ref, VarKey) and ref.kind is Kind.INPUT):
                    errors.append(ConfigError(f"{name} is not an input: only a forced input "
                                              "is released", path=f"{where}.release",
                                              file=scenario.file))
                elif isinstance(step, SetStep | RampStep):
                    reads.setdefault(name, ref)  # plotted beside the checks
    if errors:
        raise ConfigErrors(errors)
    return Binding(reads, writes)

