"""Offline runs: a fresh in-process session, stepped one tick per sample, as fast as
the machine goes. Deterministic: the same config, scenario and seed give the same
trace and verdicts, bit for bit (the engine's stepping is; the runner adds no clock).

``prepare`` builds the session a scenario asks for from a loaded config (its
``session``'s twin, step size and parameter overrides, or its ``twin`` on default
settings; then the scenario's ``parameters`` and ``seed`` on top), and checks every
name of the scenario against it. ``run_offline`` does both and runs it. The server's
RunScenario uses the same two with the daemon's config. ``drive`` runs a scenario on a
session already built (a campaign's run: its own twin, step size and parameters).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twin_server.config.loader import did_you_mean
from twin_server.engine.faults import FaultSpec
from twin_server.engine.session import RunState, Session, SessionSettings, SessionSnapshot
from twin_server.engine.state import VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import ConfigError, ConfigErrors, InvalidState, NotFound
from twin_server.models.base import Value
from twin_server.runtime.compile import LoadedConfig
from twin_server.scenarios.expr import Number
from twin_server.scenarios.names import TIME, Binding, PlcRef, Ref, bind
from twin_server.scenarios.results import ScenarioResult
from twin_server.scenarios.runner import (
    Listener,
    Runner,
    TargetStopped,
)
from twin_server.scenarios.schema import (
    ClearFaultStep,
    ClearLinkFaultStep,
    InjectFaultStep,
    InjectLinkFaultStep,
    ScenarioFile,
    config_errors,
)

#: ticks between two yields to the event loop (the server runs scenarios beside its clients)
YIELD_EVERY = 2000


@dataclass(frozen=True, slots=True)
class Prepared:
    """A scenario with its fresh session and its names bound."""

    scenario: ScenarioFile
    session: Session
    binding: Binding
    seed: int | None


def prepare(scenario: ScenarioFile, loaded: LoadedConfig, *, seed: int | None = None,
            name: str | None = None) -> Prepared:
    """A fresh session for ``scenario`` from ``loaded``; ConfigErrors naming the
    scenario's keys (an unknown session, twin, parameter or variable)."""
    header = scenario.header
    file = scenario.file
    seed = seed if seed is not None else header.seed
    settings: SessionSettings
    if header.session is not None:
        cfg = loaded.config.sessions.get(header.session)
        if cfg is None:
            raise ConfigErrors([ConfigError(
                f"no session {header.session!r} in {loaded.file} (its sessions: "
                f"{', '.join(loaded.config.sessions) or 'none'})"
                f"{did_you_mean(header.session, loaded.config.sessions)}",
                path="scenario.session", file=file)])
        twin = loaded.twins[cfg.twin]
        params = loaded.session_parameters.get(header.session, {})
        settings = SessionSettings(step_size=cfg.step_size, publish_rate=cfg.publish_rate,
                                   realtime_factor=0.0,
                                   parameters={c: dict(p) for c, p in params.items()})
    else:
        assert header.twin is not None
        found = loaded.twins.get(header.twin)
        if found is None:
            raise ConfigErrors([ConfigError(
                f"no twin {header.twin!r} in {loaded.file} (its twins: "
                f"{', '.join(loaded.twins) or 'none'}){did_you_mean(header.twin, loaded.twins)}",
                path="scenario.twin", file=file)])
        twin = found
        settings = SessionSettings(realtime_factor=0.0)
    if header.step_size is not None:
        settings = dataclasses.replace(settings, step_size=header.step_size)
    overrides = scenario_parameters(scenario, twin, seed)
    merged = {c: dict(v) for c, v in (settings.parameters or {}).items()}
    for cname, values in overrides.items():
        merged.setdefault(cname, {}).update(values)
    settings = dataclasses.replace(settings, parameters=merged)
    session = Session(name or f"scenario_{scenario.name}", twin, settings)
    try:
        binding = bind(scenario, (key for key, _ in session.variables()), live=False)
    except BaseException:
        session.close()
        raise
    return Prepared(scenario, session, binding, seed)


def scenario_parameters(scenario: ScenarioFile, twin: TwinDefinition,
                        seed: int | None) -> dict[str, dict[str, Value]]:
    """The scenario's parameter overrides coerced against ``twin``, with ``seed`` given
    to every component parameter named ``seed`` (noisy sensors); ConfigErrors at
    ``scenario.parameters.<component>.<parameter>``."""
    try:
        checked = twin.check_overrides(scenario.header.parameters,
                                       prefix="scenario.parameters")
    except ConfigErrors as errors:
        raise ConfigErrors([e.with_context(file=scenario.file)
                            for e in config_errors(errors)]) from None
    if seed is not None:
        for comp in twin.components:
            if "seed" in comp.parameters:
                checked.setdefault(comp.name, {})["seed"] = seed
    return checked


class SessionTarget:
    """An in-process session as a runner's target: one tick per sample."""

    def __init__(self, session: Session, binding: Binding) -> None:
        self.session = session.name
        self._session = session
        self.step_size = session.step_size
        self._reads: list[tuple[str, Ref]] = sorted(binding.reads.items())
        self._ticks = 0
        self._snapshots: dict[str, SessionSnapshot] = {}
        self.elapsed = 0.0
        self._values: dict[str, Number] = {}
        if session.state is RunState.READY:
            session.start()
        self._read()

    def _read(self) -> None:
        session = self._session
        values: dict[str, Number] = {TIME: self.elapsed}
        for name, ref in self._reads:
            assert not isinstance(ref, PlcRef)
            value = session.read(ref)
            assert not isinstance(value, str)
            values[name] = value
        self._values = values

    @property
    def values(self) -> Mapping[str, Number]:
        return self._values

    async def sample(self) -> None:
        session = self._session
        if session.state is not RunState.RUNNING:
            raise TargetStopped(_stopped(session))
        session.tick()
        if session.state is not RunState.RUNNING:  # halted in that tick (fault, model end)
            raise TargetStopped(_stopped(session))
        self._ticks += 1
        self.elapsed = self._ticks * self.step_size
        self._read()
        if self._ticks % YIELD_EVERY == 0:
            await asyncio.sleep(0)

    async def write(self, ref: Ref, value: Number | str) -> None:
        assert not isinstance(ref, PlcRef)
        self._session.write(ref, value)
        self._read()

    async def release(self, ref: Ref) -> None:
        assert not isinstance(ref, PlcRef)
        self._session.release(ref)
        self._read()

    async def call(self, method: str, label: str) -> None:
        session = self._session
        if method == "Snapshot":
            self._snapshots[label] = session.snapshot()
        elif method == "Restore":
            snapshot = self._snapshots.get(label)
            if snapshot is None:
                raise NotFound(f"no snapshot labelled {label!r} taken in this scenario "
                               f"(taken: {', '.join(self._snapshots) or 'none'}); a call = "
                               "'Snapshot' step with that label must come first")
            was_running = session.state is RunState.RUNNING
            if was_running:
                session.suspend()
            session.restore(snapshot)
            if was_running:
                _run(session)
        elif method == "Reset":
            was_running = session.state is RunState.RUNNING
            session.reset()
            if was_running:
                session.start()
        else:
            getattr(session, method.lower())()
        self._read()

    async def inject_fault(self, step: InjectFaultStep | ClearFaultStep,
                           ref: Ref | None) -> None:
        """``Session.inject_fault`` with the step's name as the fault's id, or
        ``clear_fault`` (``*``: every fault); a refusal breaks the run off."""
        session = self._session
        if isinstance(step, InjectFaultStep):
            assert isinstance(ref, VarKey)
            parameters = {k: float(v) for k, v in step.parameters.items()
                          if not isinstance(v, str)}
            session.inject_fault(FaultSpec(
                target=f"{ref.component}.{ref.kind.folder}.{ref.name}", kind=step.kind,
                parameters=parameters, duration=step.duration, id=step.inject_fault))
        elif step.clear_fault == "*":
            session.clear_faults()
        else:
            session.clear_fault(step.clear_fault)
        self._read()

    async def link_fault(self, step: InjectLinkFaultStep | ClearLinkFaultStep) -> None:
        """Never reached: ``bind`` refuses link fault steps offline."""
        raise InvalidState(f"{step.model_dump(by_alias=True)}: link faults act on a HIL "
                           "peer of a daemon, in a live run (--endpoint URL)")


def _run(session: Session) -> None:
    if session.state is RunState.SUSPENDED:
        session.resume()
    elif session.state is RunState.READY:
        session.start()


def _stopped(session: Session) -> str:
    if session.fault is not None:
        return f"session {session.name!r} halted on a fault: {session.fault}"
    if session.ended is not None:
        return f"session {session.name!r} halted: {session.ended}"
    return (f"session {session.name!r} is {session.state}: time does not pass; "
            "a call = 'Resume' (or 'Start') step must come first")


async def run_prepared(prepared: Prepared, *, mode: str = "offline",
                       listener: Listener | None = None) -> ScenarioResult:
    """Run a prepared scenario to its end; the session is closed afterwards."""
    try:
        target = SessionTarget(prepared.session, prepared.binding)
        runner = Runner(prepared.scenario, prepared.binding, target, mode=mode,
                        listener=listener, seed=prepared.seed)
        return await runner.run()
    finally:
        prepared.session.close()


def run_offline(scenario: ScenarioFile, loaded: LoadedConfig, *, seed: int | None = None,
                listener: Listener | None = None) -> ScenarioResult:
    """Prepare and run ``scenario`` in-process (ConfigErrors before anything runs)."""
    return asyncio.run(run_prepared(prepare(scenario, loaded, seed=seed), listener=listener))



def drive(scenario: ScenarioFile, session: Session, *, seed: int | None = None,
          target: Callable[[Session, Binding], SessionTarget] = SessionTarget,
          mode: str = "offline") -> ScenarioResult:
    """Run ``scenario`` on ``session``, built by the caller with the parameters it
    wants (the scenario's own ``parameters`` and ``session`` are not applied: see
    ``scenario_parameters``), and leave it open; ``target`` builds the runner's target
    (a ``SessionTarget`` subclass that also records, say). ConfigErrors for names the
    session lacks; synchronous (its own event loop: call it where none runs)."""
    binding = bind(scenario, (key for key, _ in session.variables()), live=False)

    async def main() -> ScenarioResult:
        runner = Runner(scenario, binding, target(session, binding), mode=mode, seed=seed)
        return await runner.run()

    return asyncio.run(main())
