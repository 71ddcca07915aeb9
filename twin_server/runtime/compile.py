"""Compile a described config into what the daemon runs: the config describes, the
runtime compiles.

``config.loader`` reads a file and checks everything that needs no model
(``ConfigDescription``); ``compile_config`` compiles each twin with
``engine.twin.compile_twin`` (the model registry, the connection graph), coerces
the sessions' parameter overrides against the models, checks that each HIL binding
names a variable of its session's twin (of the kind its direction needs, bound
from the PLC once, a fallback of the variable's type) and that each session's
history patterns match a variable, and then raises the description's errors and
its own together, in the file's order, each with its file and key path. A twin
whose structure is fine is compiled even when another part of the file is not, so
that one run of ``twin-server check`` reports everything.

``load_config`` and ``parse_config`` read and compile in one call (the command,
the daemon and its reload use them); ``parse_twin`` does the same for a client's
twin (DefineTwin, and the run-time twins brought back from the store).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from twin_server.config.fmu_files import NO_FOLDERS, FmuFolders, in_client_words
from twin_server.config.loader import (
    STRING_FILE,
    ConfigDescription,
    describe_config,
    did_you_mean,
    in_file,
    quoted_key,
    read_config,
    read_twin,
)
from twin_server.config.schema import AlarmConfig, BindingFields, Config, SessionConfig
from twin_server.engine.alarms import AlarmDefinition, compile_alarms
from twin_server.engine.faults import NUMERIC_KINDS, FaultSpec, check_spec, parse_target
from twin_server.engine.twin import Resolver, TwinDefinition, compile_twin
from twin_server.errors import ConfigError, ConfigErrors, InvalidArgument, ValueRejected
from twin_server.faces.variables import resolve_variable
from twin_server.models import registry
from twin_server.models.base import DataType, Kind, Value, Variable


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A checked config: its structure, its compiled twins and the session overrides
    coerced against the models (session -> component -> parameter -> value)."""

    config: Config
    twins: dict[str, TwinDefinition]
    path: Path | None = None
    session_parameters: dict[str, dict[str, dict[str, Value]]] = field(default_factory=dict)
    #: per session: its alarms that replace or add to its twin's (``engine.alarms``)
    session_alarms: dict[str, dict[str, AlarmDefinition]] = field(default_factory=dict)
    #: what is valid but likely not meant (``twin-server check`` prints them, the
    #: daemon logs them as ``config_warning``)
    warnings: tuple[ConfigError, ...] = ()

    @property
    def file(self) -> str:
        return str(self.path) if self.path is not None else STRING_FILE


def load_config(path: str | Path, *, resolve: Resolver = registry.get) -> LoadedConfig:
    """Read, parse, check and compile the config file at ``path``; raise ConfigErrors
    with every problem (a missing or unreadable file is one too)."""
    return compile_config(read_config(path), resolve=resolve)


def parse_config(
    text: str, *, file: str = STRING_FILE, resolve: Resolver = registry.get,
    base_dir: Path | None = None,
) -> LoadedConfig:
    """Like ``load_config`` for TOML text; errors name ``file``. Relative file
    options (an FMU's ``path``) and ``server.fmu_dirs`` entries resolve against
    ``base_dir`` (the cwd if None)."""
    return compile_config(describe_config(text, file=file, base_dir=base_dir), resolve=resolve)


def compile_config(described: ConfigDescription, *,
                   resolve: Resolver = registry.get) -> LoadedConfig:
    """Compile ``described``'s twins and check what refers into them; raise ConfigErrors
    with the description's errors and these together."""
    errors: list[ConfigError] = []
    file = described.file
    twins: dict[str, TwinDefinition] = {}
    for name, twin in described.twins.items():
        try:
            twins[name] = compile_twin(name, twin, resolve=resolve)
        except ConfigErrors as group:
            errors.extend(in_file(group, file))

    parameters: dict[str, dict[str, dict[str, Value]]] = {}
    alarms: dict[str, dict[str, AlarmDefinition]] = {}
    for name, session in described.sessions.items():
        twin_def = twins.get(session.twin)
        if twin_def is None:
            continue  # an unknown twin, or one with errors of its own: reported already
        try:
            parameters[name] = twin_def.check_overrides(
                session.parameters, prefix=f"sessions.{name}.parameters"
            )
        except ConfigErrors as group:
            errors.extend(in_file(group, file))
        if session.alarms:
            alarms[name] = _session_alarms(name, session.alarms, twin_def, file, errors)

    warnings: list[ConfigError] = []
    errors.extend(_check_bindings(described, twins, warnings))
    errors.extend(_check_faults(described, twins))
    if described.config is not None:
        errors.extend(_check_history_variables(described.config, twins, file))
        errors.extend(_check_faces(described.config, twins, file))

    config = described.valid(errors)
    return LoadedConfig(config, twins, described.path, parameters,
                        session_alarms=alarms, warnings=tuple(warnings))


def _session_alarms(name: str, configs: Mapping[str, AlarmConfig], twin: TwinDefinition,
                    file: str, errors: list[ConfigError]) -> dict[str, AlarmDefinition]:
    """``[sessions.<name>.alarms]`` compiled against the session's twin; problems go
    to ``errors`` at their key paths."""

    def fail(path: str, message: str) -> None:
        errors.append(ConfigError(message, path=f"sessions.{name}.{path}", file=file))

    variables = {c.name: c.declared() for c in twin.components}
    return {d.name: d for d in compile_alarms(configs, variables, fail)}


def parse_twin(
    text: str,
    name: str | None = None,
    *,
    file: str = STRING_FILE,
    resolve: Resolver = registry.get,
    fmu: FmuFolders = NO_FOLDERS,
) -> TwinDefinition:
    """Check and compile one twin given as TOML text (DefineTwin), exactly as in a file,
    except for the files it may name (``config.loader.read_twin``). Raises ConfigErrors,
    or InvalidArgument for a refused FMU option (before any FMU file is read)."""
    described = read_twin(text, name, file=file, fmu=fmu)
    try:
        return compile_twin(described.name, described.config, resolve=resolve,
                            prefix=described.prefix)
    except ConfigErrors as group:
        raise ConfigErrors(
            in_client_words(in_file(group, file), dict(described.shown))) from None


# -- hardware in the loop ---------------------------------------------------------------

_READ_KINDS = (Kind.OUTPUT, Kind.STATE)


def _check_bindings(described: ConfigDescription, twins: Mapping[str, TwinDefinition],
                    warnings: list[ConfigError]) -> list[ConfigError]:
    """Each HIL binding of a peer whose session and twin are sound names a variable of
    that twin, of the kind its direction needs; an input is bound from the PLC once;
    a fallback is of the variable's type. An input that a connection drives is
    ``warnings`` (a PLC in place of a twin's controller is what HIL is for, but a
    binding onto the wrong input is an easy mistake). (The rest of the
    ``[hil.<peer>]`` tables is checked by ``config.loader``.) Checked on the raw
    tables, field by field, so that a binding with a structural error in one field
    still gets these checks: every error of a binding at once."""
    errors: list[ConfigError] = []
    peers = described.raw.get("hil")
    for peer, body in peers.items() if isinstance(peers, Mapping) else ():
        if not isinstance(body, Mapping):
            continue
        session_name = body.get("session")
        session = (described.sessions.get(session_name)
                   if isinstance(session_name, str) else None)
        twin = twins.get(session.twin) if session is not None else None
        if twin is None:
            continue  # an unknown session or a broken twin: reported already
        where = f"hil.{quoted_key(str(peer))}"

        def fail(path: str, message: str, where: str = where) -> None:
            errors.append(ConfigError(message, path=f"{where}.{path}", file=described.file))

        bindings = body.get("bindings")
        forced: dict[str, str] = {}
        driven = {f"{c.target}.{c.target_port}": str(c) for c in twin.connections}
        for bname, bbody in bindings.items() if isinstance(bindings, Mapping) else ():
            binding = BindingFields.of(bbody)
            if binding is None or binding.variable is None or binding.direction is None:
                continue  # reported by the whole-file validation
            path = f"bindings.{quoted_key(str(bname))}"

            def fail_variable(message: str, where: str = path) -> None:
                fail(f"{where}.variable", message)

            variable = _binding_variable(twin, binding.variable, binding.direction,
                                         str(session_name), fail_variable)
            if variable is None:
                continue
            if binding.direction == "from_plc":
                other = forced.setdefault(binding.variable, str(bname))
                if other != bname:
                    fail(f"{path}.variable", f"input {binding.variable!r} is already bound "
                                             f"from the PLC by binding {other!r}")
                connection = driven.get(binding.variable)
                if connection is not None:
                    warnings.append(ConfigError(
                        f"input {binding.variable!r} is driven by the connection "
                        f"'{connection}' of twin {twin.name!r}: the PLC's values override "
                        f"it (the PLC takes that output's place) from its first value on; "
                        f"until then, and never again after it, the connection drives it. "
                        f"If the PLC is meant to replace the component that drives it, "
                        f"this is right; else bind another input",
                        path=f"{where}.{path}.variable", file=described.file))
                if binding.fallback is not None:
                    try:
                        variable.coerce(binding.fallback)
                    except ValueRejected as exc:
                        fail(f"{path}.fallback", f"fallback for {binding.variable!r}: {exc}")
    return errors


def _binding_variable(twin: TwinDefinition, name: str, direction: str, session: str,
                      fail: Callable[[str], None]) -> Variable | None:
    """The variable ``name`` a binding in ``direction`` mirrors, or None after
    reporting why there is none."""
    cname, _, vname = name.partition(".")
    names = [c.name for c in twin.components]
    if cname not in names:
        fail(f"session {session!r} (twin {twin.name!r}) has no component {cname!r} "
             f"(its components: {', '.join(names)}){did_you_mean(cname, names)}")
        return None
    declared = twin.component(cname).declared()
    kinds = _READ_KINDS if direction == "to_plc" else (Kind.INPUT,)
    for kind in kinds:
        for var in declared:
            if var.kind is kind and var.name == vname:
                return var
    wanted = "an output or state" if direction == "to_plc" else "an input"
    # (a name once: a tank's level is its state and its output)
    fitting = list(dict.fromkeys(v.name for v in declared if v.kind in kinds))
    other = next((v for v in declared if v.name == vname), None)
    if other is not None:
        hint = ("inputs come from the PLC: use direction = 'from_plc'"
                if other.kind is Kind.INPUT else
                "outputs and states go to the PLC: use direction = 'to_plc'"
                if other.kind in _READ_KINDS else
                "parameters are not mirrored")
        fail(f"{name!r} is {_a(other.kind)} {other.kind}, but a "
             f"{direction} binding needs {wanted}; {hint}")
    else:
        fail(f"component {cname!r} has no {vname!r} (a {direction} binding needs "
             f"{wanted}; it has: {', '.join(fitting) or 'none'})"
             f"{did_you_mean(vname, fitting)}")
    return None


def fault_specs(session: SessionConfig) -> tuple[FaultSpec, ...]:
    """The engine's specs of a session's configured faults."""
    return tuple(FaultSpec(f.target, f.kind, dict(f.parameters), f.duration, f.id or "")
                 for f in session.faults)


def _check_faults(described: ConfigDescription,
                  twins: Mapping[str, TwinDefinition]) -> list[ConfigError]:
    """Each configured fault is sound (``engine.faults.check_spec``), names an input or
    output of its session's twin, fits its type, and has an id of its own."""
    errors: list[ConfigError] = []
    for name, session in described.sessions.items():
        twin = twins.get(session.twin)
        if twin is None:
            continue  # reported already
        ids: set[str] = set()
        for i, (fault, spec) in enumerate(zip(session.faults, fault_specs(session),
                                              strict=True)):
            path = f"sessions.{quoted_key(name)}.faults[{i}]"

            def fail(key: str, message: str, path: str = path) -> None:
                errors.append(ConfigError(message, path=f"{path}.{key}", file=described.file))

            if fault.id is not None:
                if fault.id in ids:
                    fail("id", f"fault id {fault.id!r} is used twice in session {name!r}")
                ids.add(fault.id)
            try:
                kind, _, _ = check_spec(spec)
            except InvalidArgument as exc:
                fail("parameters", str(exc))
                continue
            try:
                cname, vkind, vname = parse_target(fault.target)
            except InvalidArgument as exc:
                fail("target", str(exc))
                continue
            names = [c.name for c in twin.components]
            if cname not in names:
                fail("target", f"twin {twin.name!r} has no component {cname!r} (its "
                               f"components: {', '.join(names)}){did_you_mean(cname, names)}")
                continue
            declared = [v for v in twin.component(cname).declared() if v.kind is vkind]
            var = next((v for v in declared if v.name == vname), None)
            if var is None:
                fitting = [v.name for v in declared]
                fail("target", f"component {cname!r} has no {vkind} {vname!r} (its "
                               f"{vkind}s: {', '.join(fitting) or 'none'})"
                               f"{did_you_mean(vname, fitting)}")
                continue
            if kind in NUMERIC_KINDS and var.datatype not in (DataType.DOUBLE,
                                                              DataType.INT32):
                fail("kind", f"a {kind} fault needs a Double or Int32 variable; "
                             f"{fault.target} is {var.datatype} (stuck, delay and dropout "
                             f"fit any type)")
    return errors


def _a(kind: Kind) -> str:
    return "an" if kind.value[0] in "aeiou" else "a"


# -- machine faces ----------------------------------------------------------------------

def _check_faces(config: Config, twins: Mapping[str, TwinDefinition],
                 file: str) -> list[ConfigError]:
    """A face's session is one of the file's, and each binding names a variable of its
    twin (its nodes are checked against the NodeSets when they load: faces/binding.py)."""
    errors: list[ConfigError] = []
    for name, face in config.faces.items():
        where = f"faces.{quoted_key(name)}"
        if face.session is None:
            continue
        session = config.sessions.get(face.session)
        if session is None:
            known = ", ".join(config.sessions) or "none"
            errors.append(ConfigError(
                f"no session {face.session!r} in this file (its sessions: {known})"
                f"{did_you_mean(face.session, config.sessions)}",
                path=f"{where}.session", file=file))
            continue
        twin = twins.get(session.twin)
        if twin is None:
            continue  # reported already
        for node, variable in face.bindings.items():
            def fail(message: str, at: str = f"{where}.bindings.{quoted_key(node)}") -> None:
                errors.append(ConfigError(message, path=at, file=file))
            resolve_variable(twin, variable, fail)
    return errors


# -- history ----------------------------------------------------------------------------

def _check_history_variables(config: Config, twins: Mapping[str, TwinDefinition],
                             file: str) -> list[ConfigError]:
    """Each session's ``history.variables`` patterns (its own, else ``[history]``'s)
    must each match a variable of its twin, as ``component.variable`` or a pattern."""
    errors = []
    for name, session in config.sessions.items():
        twin = twins.get(session.twin)
        own = session.history.variables
        patterns = own if own is not None else config.history.variables
        if twin is None or not patterns:
            continue
        names = sorted({f"{c.name}.{v.name}" for c in twin.components for v in c.declared()})
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            where = (f"sessions.{name}.history.variables" if own is not None
                     else "history.variables")
            errors.append(ConfigError(
                f"{', '.join(repr(p) for p in unmatched)} "
                f"{'matches' if len(unmatched) == 1 else 'match'} no variable of twin "
                f"{twin.name!r} (session {name!r}); write 'component.variable' or a pattern "
                f"such as 'tank.*' (its variables: {', '.join(names)})", path=where, file=file))
    return errors
