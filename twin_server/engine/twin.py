"""Compiled twin definitions: a config's twin resolved against the model registry.

``compile_twin`` turns a ``TwinConfig`` into a ``TwinDefinition`` whose components
are in evaluation order, with every parameter filled in and coerced, or raises
``ConfigErrors`` naming every offender at once (unknown model, unknown parameter,
out-of-range value, unknown port, input connected twice, algebraic loop).

Error key paths start at ``twins.<name>`` (or the ``prefix`` given), so that the
compile step (``runtime.compile``) only adds the file::

    twins.tank.components.tank.parameters.area: parameter 'area' must be within
    [0.001, inf] m^2 (got -1.0)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twin_server.engine.alarms import AlarmDefinition, compile_alarms
from twin_server.engine.graph import CycleError, evaluation_order
from twin_server.errors import ConfigError, ConfigErrors, ValueRejected
from twin_server.models import registry
from twin_server.models.base import DataType, Kind, Model, Value, Variable

if TYPE_CHECKING:
    from twin_server.config.schema import ComponentConfig, TwinConfig

Resolver = Callable[[str], type[Model]]
"""Model name -> model class; raises ConfigError for an unknown name (``registry.get``)."""


@dataclass(frozen=True, slots=True)
class Connection:
    """An output of one component feeding an input of another."""

    source: str
    source_port: str
    target: str
    target_port: str

    def __str__(self) -> str:
        return f"{self.source}.{self.source_port} -> {self.target}.{self.target_port}"


@dataclass(frozen=True, slots=True)
class ComponentDefinition:
    """A component ready to instantiate: the model class and complete values.

    ``parameters`` holds every parameter (configured, else the default) and
    ``inputs`` every input (configured, else the default: the value an input takes
    while nothing forces it and no connection feeds it); ``initial`` only the state
    values the config sets (a model derives the others, e.g. from a parameter).
    ``variables`` and ``direct_feedthrough`` are what the checks used
    (``Model.declare(options)`` and the class attribute).
    """

    name: str
    model: str
    factory: type[Model]
    parameters: Mapping[str, Value]
    initial: Mapping[str, Value] = field(default_factory=dict)
    inputs: Mapping[str, Value] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    variables: tuple[Variable, ...] = ()
    direct_feedthrough: bool = True

    def instantiate(self) -> Model:
        return self.factory(self.options)

    def declared(self) -> tuple[Variable, ...]:
        """The component's variables (as checked at compile time)."""
        return self.variables or self.factory.declare(self.options)


@dataclass(frozen=True, slots=True)
class TwinDefinition:
    """A validated twin: components in evaluation (topological) order."""

    name: str
    components: tuple[ComponentDefinition, ...]
    connections: tuple[Connection, ...] = ()
    description: str = ""
    #: step its sessions in a worker of their own (None: only if it has an FMU)
    isolate: bool | None = None
    #: the alarms of its sessions (``engine.alarms``; a session may override them)
    alarms: tuple[AlarmDefinition, ...] = ()

    def component(self, name: str) -> ComponentDefinition:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def check_overrides(
        self, overrides: Mapping[str, Mapping[str, Any]], *, prefix: str = ""
    ) -> dict[str, dict[str, Value]]:
        """Parameter overrides (component -> parameter -> value) coerced against the
        models, or ConfigErrors naming every unknown component, unknown parameter and
        bad value at ``prefix.component.parameter``."""
        errors: list[ConfigError] = []
        checked: dict[str, dict[str, Value]] = {}
        names = [c.name for c in self.components]
        for cname, values in overrides.items():
            if cname not in names:
                errors.append(
                    ConfigError(
                        f"unknown component {cname!r} in twin {self.name!r} "
                        f"(its components: {', '.join(names)}){_did_you_mean(cname, names)}",
                        path=_join(prefix, cname),
                    )
                )
                continue
            comp = self.component(cname)
            checked[cname] = _check_values(
                comp.declared(),
                Kind.PARAMETER,
                values,
                model=comp.model,
                path=_join(prefix, cname),
                errors=errors,
                fill=False,
            )
        if errors:
            raise ConfigErrors(errors)
        return checked


def compile_twin(
    name: str,
    twin: TwinConfig,
    *,
    resolve: Resolver = registry.get,
    prefix: str | None = None,
) -> TwinDefinition:
    """Resolve ``twin`` against the models and the connection graph.

    Raises ConfigErrors with every problem found, each at its key path below
    ``prefix`` (default ``twins.<name>``; ``""`` for a twin given on its own).
    """
    where = f"twins.{name}" if prefix is None else prefix
    errors: list[ConfigError] = []

    def fail(path: str, message: str) -> None:
        errors.append(ConfigError(message, path=_join(where, path)))

    # -- components: model, variables, values --------------------------------------
    built: dict[str, ComponentDefinition] = {}
    for cname, comp in twin.components.items():
        base = f"components.{cname}"
        try:
            factory = resolve(comp.model)
        except ConfigError as exc:
            fail(f"{base}.model", exc.message)
            continue
        try:
            variables = tuple(factory.declare(comp.options))
        except ConfigError as exc:  # the model's own words (an FMU's missing file)
            fail(f"{base}.{exc.path or 'options'}", exc.message)
            continue
        except Exception as exc:  # a plug-in's check that raised anything else
            fail(f"{base}.options", f"model {comp.model!r} rejected its options: {exc}")
            continue
        built[cname] = _component(cname, comp, factory, variables, where, errors)

    # -- connections: ports, types, one connection per input ----------------------
    components = list(twin.components)
    connections: list[Connection] = []
    fed_by: dict[tuple[str, str], tuple[int, Connection]] = {}
    for i, spec in enumerate(twin.connections):
        conn = Connection(spec.source, spec.source_port, spec.target, spec.target_port)
        path = f"connections[{i}]"
        ends = [
            _port(conn, conn.source, conn.source_port, Kind.OUTPUT, twin.components, built),
            _port(conn, conn.target, conn.target_port, Kind.INPUT, twin.components, built),
        ]
        problems = [p for p in ends if isinstance(p, str)]
        for problem in problems:
            fail(path, problem)
        if problems or None in ends:
            continue  # a component whose model failed was reported already
        out, inp = ends
        assert isinstance(out, Variable) and isinstance(inp, Variable)
        if not _compatible(out.datatype, inp.datatype):
            fail(
                path,
                f"cannot connect output {conn.source}.{out.name} ({out.datatype}) "
                f"to input {conn.target}.{inp.name} ({inp.datatype})",
            )
            continue
        key = (conn.target, conn.target_port)
        if key in fed_by:
            j, first = fed_by[key]
            fail(
                path,
                f"input {conn.target}.{conn.target_port} is connected twice: "
                f"'{first}' (connections[{j}]) and '{conn}' (connections[{i}]); "
                "an input takes one connection",
            )
            continue
        fed_by[key] = (i, conn)
        connections.append(conn)

    # An input both connected and given a value: the value would never be used
    # (a connection wins over the configured value), so it is a mistake to report.
    for (target, port), (i, conn) in fed_by.items():
        if port in twin.components[target].inputs:
            fail(
                f"components.{target}.inputs.{port}",
                f"input {port!r} is connected by '{conn}' (connections[{i}]) and also "
                "given a value here, which would never be used; remove one of the two",
            )

    # -- evaluation order and algebraic loops --------------------------------------
    feedthrough = {n for n, c in built.items() if c.direct_feedthrough}
    edges = [(c.source, c.target) for c in connections]
    order = components
    try:
        order = evaluation_order(components, edges, feedthrough)
    except CycleError as exc:
        for cycle in exc.cycles:
            fail(
                "connections",
                f"algebraic loop: {_loop_text(cycle, connections)} "
                "(every component in it has direct feedthrough; put one with state, "
                "such as a first_order_lag, in the loop)",
            )

    alarms = compile_alarms(twin.alarms, {n: c.variables for n, c in built.items()}, fail)

    if errors:
        raise ConfigErrors(errors)
    return TwinDefinition(
        name=name,
        components=tuple(built[n] for n in order),
        connections=tuple(connections),
        description=twin.description,
        isolate=twin.isolate,
        alarms=alarms,
    )


# -- helpers ----------------------------------------------------------------------------


def _component(
    name: str,
    comp: ComponentConfig,
    factory: type[Model],
    variables: tuple[Variable, ...],
    where: str,
    errors: list[ConfigError],
) -> ComponentDefinition:
    base = _join(where, f"components.{name}")
    parameters = _check_values(
        variables,
        Kind.PARAMETER,
        comp.parameters,
        model=comp.model,
        path=f"{base}.parameters",
        errors=errors,
    )
    initial = _check_values(
        variables,
        Kind.STATE,
        comp.initial,
        model=comp.model,
        path=f"{base}.initial",
        errors=errors,
        fill=False,
    )
    inputs = _check_values(
        variables, Kind.INPUT, comp.inputs, model=comp.model, path=f"{base}.inputs", errors=errors
    )
    return ComponentDefinition(
        name=name,
        model=comp.model,
        factory=factory,
        parameters=parameters,
        initial=initial,
        inputs=inputs,
        options=dict(comp.options),
        description=comp.description,
        variables=variables,
        direct_feedthrough=bool(factory.direct_feedthrough),
    )


_SECTION = {Kind.PARAMETER: "parameters", Kind.STATE: "initial", Kind.INPUT: "inputs"}


def _check_values(
    variables: Iterable[Variable],
    kind: Kind,
    given: Mapping[str, Any],
    *,
    model: str,
    path: str,
    errors: list[ConfigError],
    fill: bool = True,
) -> dict[str, Value]:
    """``given`` coerced against the variables of ``kind``; with ``fill``, every
    variable of that kind not given takes its default."""
    variables = tuple(variables)
    of_kind = {v.name: v for v in variables if v.kind is kind}
    others = {v.name: v for v in variables if v.kind is not kind}
    values: dict[str, Value] = {}
    for key, raw in given.items():
        var = of_kind.get(key)
        if var is None:
            hint = _did_you_mean(key, of_kind)
            other = others.get(key)
            if other is not None and other.kind in _SECTION:
                hint = f"; {key!r} is {_a(other.kind)} (set it under {_SECTION[other.kind]})"
            elif other is not None:
                hint = f"; {key!r} is {_a(other.kind)}, which the config does not set"
            errors.append(
                ConfigError(
                    f"unknown {kind} {key!r} of model {model!r} "
                    f"(its {kind}s: {', '.join(of_kind) or 'none'}){hint}",
                    path=f"{path}.{key}",
                )
            )
            continue
        try:
            values[key] = var.coerce(raw)
        except ValueRejected as exc:
            errors.append(ConfigError(str(exc), path=f"{path}.{key}"))
    if fill:  # in declaration order, so every consumer sees the names in one order
        values = {n: values.get(n, v.default) for n, v in of_kind.items()}
    return values


def _port(
    conn: Connection,
    component: str,
    port: str,
    kind: Kind,
    components: Mapping[str, object],
    built: Mapping[str, ComponentDefinition],
) -> Variable | str | None:
    """The variable at one end of a connection, a message saying why there is none,
    or None when the component's model could not be resolved (reported already)."""
    if component not in components:
        return (
            f"unknown component {component!r} in '{conn}' "
            f"(components: {', '.join(components)}){_did_you_mean(component, components)}"
        )
    comp = built.get(component)
    if comp is None:
        return None
    same = {v.name: v for v in comp.variables if v.kind is kind}
    if port in same:
        return same[port]
    names = ", ".join(same) or "none"
    other = next((v for v in comp.variables if v.name == port), None)
    if other is not None:
        return (
            f"{component}.{port} is {_a(other.kind)}, not {_a(kind)}, in '{conn}': a "
            f"connection goes from an output to an input ({component}'s {kind}s: {names})"
        )
    return (
        f"component {component!r} ({comp.model}) has no {kind} {port!r} in '{conn}' "
        f"(its {kind}s: {names}){_did_you_mean(port, same)}"
    )


def _compatible(source: DataType, target: DataType) -> bool:
    return source is target or (source is DataType.INT32 and target is DataType.DOUBLE)


def _loop_text(cycle: tuple[str, ...], connections: list[Connection]) -> str:
    """``a.y -> b.u -> b.y -> a.u``: the connections around the cycle, in order."""
    hops = []
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        hops.append(next(str(c) for c in connections if c.source == a and c.target == b))
    return " -> ".join(hops)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _a(kind: Kind) -> str:
    return f"an {kind}" if kind in (Kind.INPUT, Kind.OUTPUT) else f"a {kind}"


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)
