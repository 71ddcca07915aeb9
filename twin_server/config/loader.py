"""Read a config file and describe it: TOML, then its structure (pydantic), then every
check that needs no model.

Every problem is collected and reported together as one ``ConfigErrors``, each a
``ConfigError`` with the file, the dotted key path and what was expected::

    configs/demo.toml: sessions.tank.step_size: must be greater than 0 (got -1)
    configs/demo.toml: twins.t.components.tank: unknown key 'paramters' (allowed: model,
        description, parameters, initial, inputs, options); did you mean 'parameters'?
    configs/demo.toml: TOML syntax error at line 3, column 9: invalid value

The config describes; the runtime compiles. ``read_config`` and ``describe_config``
return a ``ConfigDescription``: the validated ``Config``, each twin and session that
is valid on its own (so that a twin whose structure is fine is still compiled when
another part of the file is not, and one run of ``twin-server check`` reports
everything), and the errors found so far, none raised yet but a file that cannot be
read or parsed. ``runtime.compile`` compiles the twins (model registry, connection
graph), checks what refers into them (session parameters, HIL bindings, history
variables) and raises the description's errors and its own together, in the file's
order (``ConfigDescription.valid``). ``read_twin`` does the same for one twin from a
client (DefineTwin). This package imports neither the engine nor the models.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from twin_server.config.fmu_files import (
    NO_FOLDERS,
    FmuFolders,
    client_options,
    operator_options,
    with_fmu_dirs,
)
from twin_server.config.nesting import MAX_DEPTH, toml_too_deep
from twin_server.config.schema import (
    NAME_PATTERN,
    UNION_TAG,
    BindingFields,
    Config,
    HilLinkFaultConfig,
    HilSecurity,
    ServerConfig,
    SessionConfig,
    TwinConfig,
)
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.logs import excerpt

STRING_FILE = "<string>"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ConfigDescription:
    """A config file read and checked as far as it can be without the models."""

    file: str  # the file's path as given, or STRING_FILE
    raw: Mapping[str, Any]  # the TOML document
    config: Config | None  # the whole file validated; None when it did not
    #: every twin valid on its own, its file options (an FMU's path) resolved
    twins: dict[str, TwinConfig]
    sessions: dict[str, SessionConfig]  # every session valid on its own
    errors: tuple[ConfigError, ...] = ()  # found so far, in the order found
    path: Path | None = None

    def valid(self, more: Iterable[ConfigError] = ()) -> Config:
        """The Config, when neither this description nor ``more`` (the compile step's
        findings) holds an error; else ConfigErrors with all of them, in the file's order."""
        errors = [*self.errors, *more]
        if errors:
            raise ConfigErrors(sorted(errors, key=lambda e: _file_order(self.raw, e.path)))
        assert self.config is not None  # (it is None only with an error)
        return self.config


@dataclass(frozen=True, slots=True)
class TwinDescription:
    """One twin given as TOML text by a client, valid in structure, its FMU options
    checked; ``prefix`` is its key path in the text (``twins.<name>`` or empty), and
    ``shown`` maps each FMU path found to the client's own text (``in_client_words``)."""

    name: str
    config: TwinConfig
    file: str
    prefix: str = ""
    shown: Mapping[str, str] = dataclasses.field(default_factory=dict)


def read_config(path: str | Path) -> ConfigDescription:
    """Read and describe the config file at ``path``; raise ConfigErrors at once only
    when it cannot be read, decoded or parsed (every other error is in ``errors``)."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigErrors(
            [ConfigError(f"cannot read the config file: {reason}", file=file)]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigErrors(
            [
                ConfigError(
                    f"the config file is not UTF-8 text (line {line}, column {column}: "
                    f"byte 0x{data[exc.start]:02x}); save it as UTF-8",
                    file=file,
                )
            ]
        ) from None
    described = describe_config(text, file=file, base_dir=Path(path).parent)
    return dataclasses.replace(described, path=Path(path))


def describe_config(
    text: str, *, file: str = STRING_FILE, base_dir: Path | None = None
) -> ConfigDescription:
    """Like ``read_config`` for TOML text; errors name ``file``. Relative file
    options (an FMU's ``path``) and ``server.fmu_dirs`` entries resolve against
    ``base_dir`` (the cwd if None)."""
    errors: list[ConfigError] = []
    raw = _toml(text, file)

    config: Config | None = None
    try:
        config = with_hil_files(Config.model_validate(raw), base_dir)
    except ValidationError as exc:
        errors.extend(translate(exc, root=Config, file=file))
    twin_configs = dict(config.twins) if config else _valid_entries(raw, "twins", TwinConfig)
    session_configs = (
        dict(config.sessions) if config else _valid_entries(raw, "sessions", SessionConfig)
    )

    fmu = FmuFolders.of(config.server if config else _server(raw), base_dir)
    errors.extend(fmu.check(file))
    if config is not None:
        config = with_fmu_dirs(config, fmu)
    twins: dict[str, TwinConfig] = {}
    for name, twin in twin_configs.items():
        try:
            twins[name] = operator_options(twin, base_dir, fmu, f"twins.{name}")
        except ConfigErrors as group:
            errors.extend(in_file(group, file))

    declared = _keys(raw.get("twins"))
    raw_sessions = raw.get("sessions")
    for name, body in raw_sessions.items() if isinstance(raw_sessions, Mapping) else ():
        # checked on the raw table, so that a session with other errors gets this one too
        twin_name = body.get("twin") if isinstance(body, Mapping) else None
        if isinstance(twin_name, str) and twin_name not in declared:
            known = ", ".join(declared) or "none"
            errors.append(
                ConfigError(
                    f"unknown twin {twin_name!r} (twins in this file: {known})"
                    f"{did_you_mean(twin_name, declared)}",
                    path=f"sessions.{quoted_key(name)}.twin",
                    file=file,
                )
            )
    errors.extend(_check_hil(raw, file))
    return ConfigDescription(file, raw, config, twins, session_configs, tuple(errors))


def read_twin(
    text: str,
    name: str | None = None,
    *,
    file: str = STRING_FILE,
    fmu: FmuFolders = NO_FOLDERS,
) -> TwinDescription:
    """Read and check one twin given as TOML text (DefineTwin), exactly as in a file,
    except for the files it may name: a client's twin takes FMUs only from ``fmu``'s
    folders (none by default) and may not choose a ``cache_dir`` (``fmu_files``).

    The text is either the twin's own table (``description``, ``connections``,
    ``[components.<name>]``), which needs ``name``, or a ``[twins.<name>]`` table
    holding one twin (``name``, if given, must match). Raises ConfigErrors, or
    InvalidArgument for a refused FMU option (before any FMU file is read).
    """
    raw = _toml(text, file)
    prefix: tuple[str, ...] = ()
    body: Any = raw
    if "twins" in raw and "components" not in raw:
        entries = raw["twins"]
        if not isinstance(entries, dict) or len(entries) != 1:
            count = len(entries) if isinstance(entries, dict) else 0
            raise ConfigErrors(
                [
                    ConfigError(
                        f"expected exactly one twin under [twins] (got {count})",
                        path="twins",
                        file=file,
                    )
                ]
            )
        ((found, body),) = entries.items()
        if name is not None and name != found:
            raise ConfigErrors(
                [
                    ConfigError(
                        f"the twin is named {excerpt(found, 100)!r} here but {name!r} was "
                        f"asked for",
                        path=f"twins.{quoted_key(found)}",
                        file=file,
                    )
                ]
            )
        name, prefix = found, ("twins", found)
    if name is None:
        raise ConfigErrors(
            [
                ConfigError(
                    "a twin given on its own needs a name (or write it as [twins.<name>])",
                    file=file,
                )
            ]
        )
    if not re.match(NAME_PATTERN, name) or len(name) > 64:
        raise ConfigErrors([ConfigError(_bad_name(name), path=_dotted(prefix), file=file)])
    try:
        twin = TwinConfig.model_validate(body)
    except ValidationError as exc:
        raise ConfigErrors(translate(exc, root=TwinConfig, file=file, prefix=prefix)) from None
    twin, shown = client_options(twin, fmu, _dotted(prefix), file)
    return TwinDescription(name, twin, file, _dotted(prefix), shown)


# -- TOML ---------------------------------------------------------------------------

_TOML_WHERE = re.compile(
    r"^(?P<msg>.*?)\s*\((?:at line (?P<line>\d+), column (?P<col>\d+)"
    r"|at end of document)\)$",
    re.DOTALL,
)


def _toml(text: str, file: str) -> dict[str, Any]:
    """The TOML document, or ConfigErrors: a syntax error, or nesting deeper than
    ``MAX_DEPTH`` (counted before parsing: tomllib recurses into inline tables and
    arrays, and every later walk of the data would too)."""
    too_deep = toml_too_deep(text, MAX_DEPTH)
    if too_deep is not None:
        raise ConfigErrors([ConfigError(
            _too_deep(f" at line {too_deep.line}, column {too_deep.column}"), file=file)])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError(_toml_message(str(exc)), file=file)]) from None
    except RecursionError:  # (only were the count and the parser to disagree)
        raise ConfigErrors([ConfigError(_too_deep(""), file=file)]) from None


def _too_deep(where: str) -> str:
    return (f"tables, arrays and dotted keys nest more than {MAX_DEPTH} levels deep{where}; "
            "a twin-server config needs fewer than 10")


def _toml_message(text: str) -> str:
    m = _TOML_WHERE.match(text)
    if m is None:
        return f"TOML syntax error: {text}"
    msg = m["msg"][:1].lower() + m["msg"][1:]
    if m["line"] is None:
        return f"TOML syntax error at the end of the file: {msg}"
    return f"TOML syntax error at line {m['line']}, column {m['col']}: {msg}"


# -- pydantic's errors, in words a person reads ---------------------------------------

_EXPECTED = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "tuple_type": "an array",
    "list_type": "an array",
    "scalar_type": "a number, boolean or string",
    "connection_type": "a string 'component.output -> component.input'",
}


def translate(
    exc: ValidationError,
    *,
    root: type[BaseModel] = Config,
    file: str | None = None,
    prefix: tuple[str | int, ...] = (),
) -> list[ConfigError]:
    """Each of pydantic's errors as a ConfigError at its dotted key path below ``prefix``."""
    result = []
    for error in exc.errors(include_url=False):
        # (a tagged union's tag is no key of the file: schema.UNION_TAG)
        error["loc"] = tuple(p for p in error["loc"]
                             if not (isinstance(p, str) and p.startswith(UNION_TAG)))
        path, message = _explain(error, root)
        result.append(ConfigError(message, path=_dotted((*prefix, *path)), file=file))
    return result


def _explain(error: ErrorDetails, root: type[BaseModel]) -> tuple[tuple[str | int, ...], str]:
    kind = error["type"]
    loc = tuple(error["loc"])
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] == "[key]":  # a table key (a name) failed its own check
        return loc[:-1], _bad_name(value)
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        allowed = list(model.model_fields) if model else []
        key = str(loc[-1])
        return loc[:-1], (
            f"unknown key {excerpt(key, 100)!r} (allowed: {', '.join(allowed)})"
            f"{did_you_mean(key, allowed)}"
        )
    if kind == "missing":
        return loc[:-1], f"missing required key {loc[-1]!r}"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    got = f" (got {_show(value)})"
    bounds = {
        "greater_than": ("gt", "greater than"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "less than"),
        "less_than_equal": ("le", "at most"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return loc, f"must be {words} {_show(ctx.get(key))}{got}"
    if kind == "finite_number":
        return loc, f"must be a finite number{got}"
    if kind == "literal_error":
        return loc, f"must be {ctx.get('expected')}{got}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == NAME_PATTERN:
            return loc, _bad_name(value)
        if loc and loc[-1] == "endpoint":
            return loc, f"must be an opc.tcp URL such as 'opc.tcp://0.0.0.0:4840/twin-server'{got}"
        return loc, f"must match the pattern {ctx.get('pattern')}{got}"
    if kind == "string_too_long":
        if isinstance(value, str) and re.match(NAME_PATTERN, value):
            return loc, _bad_name(value)
        return loc, f"must be at most {ctx.get('max_length')} characters long{got}"
    if kind == "too_short":
        if loc and loc[-1] == "components":
            return loc, "a twin needs at least one component"
        if loc and loc[-1] == "bindings":
            return loc, "a HIL peer needs at least one binding"
        return loc, f"must have at least {ctx.get('min_length')} entries"
    if kind in ("connection_syntax", "hil_syntax"):
        return loc, error["msg"]
    return loc, f"{error['msg'][:1].lower()}{error['msg'][1:]}{got}"


def _model_at(root: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The pydantic model found by following ``loc`` down from ``root``'s annotations."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp = info.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is tuple:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while hasattr(tp, "__metadata__"):  # Annotated[X, ...]
        tp = get_args(tp)[0]
    if get_origin(tp) is Union:  # X | None, a Literal | a model
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) > 1:
            args = [a for a in map(_unwrap, args)
                    if isinstance(a, type) and issubclass(a, BaseModel)]
        tp = args[0] if len(args) == 1 else tp
    return tp


def _bad_name(value: object) -> str:
    return (
        f"invalid name {_show(value)}: a name is at most 64 letters, digits and '_', "
        "not starting with a digit (it becomes part of OPC UA NodeIds)"
    )


def _describe(value: object) -> str:
    """A TOML value as its TOML type and value: ``string 'abc'``, ``integer 3``."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {excerpt(value)!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, _dt.date | _dt.time):
        return f"date-time {value.isoformat()}"
    return f"{type(value).__name__} {excerpt(value)}"


def _show(value: object) -> str:
    """A value in a message: an excerpt (a value from a client's DefineTwin may be
    as long as the definition)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return repr(excerpt(value)) if isinstance(value, str) else excerpt(str(value))


def _dotted(parts: Iterable[str | int]) -> str:
    """``twins.t.connections[2]``; a key that is not a plain name is quoted as in TOML."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + quoted_key(part)
    return text


def quoted_key(part: str) -> str:
    part = excerpt(part, 100)
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    if len(word) > 100:
        return ""  # no misspelling of a name; and difflib's time grows with the length
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def in_file(group: ConfigErrors, file: str) -> list[ConfigError]:
    return [e.with_context(file=file) for e in group.exceptions if isinstance(e, ConfigError)]


def _file_order(raw: Mapping[str, Any], path: str) -> tuple[int, int]:
    """Where an error's section (``twins``) and entry (``t``) come in the file, so the
    errors of one twin or session are listed together, in the file's order."""
    parts = path.split(".", 2)
    sections = _keys(raw)
    first = sections.index(parts[0]) if parts[0] in sections else -1
    entries = _keys(raw.get(parts[0])) if len(parts) > 1 else []
    name = parts[1].split("[", 1)[0] if len(parts) > 1 else ""
    return first, entries.index(name) if name in entries else -1


def _keys(table: object) -> list[str]:
    return [str(k) for k in table] if isinstance(table, Mapping) else []


def _valid_entries(raw: Mapping[str, Any], section: str, model: type[M]) -> dict[str, M]:
    """When the whole file failed validation: the entries of ``section`` that pass on
    their own, so their deeper (semantic) checks still run."""
    table = raw.get(section)
    if not isinstance(table, Mapping):
        return {}
    valid: dict[str, M] = {}
    for name, body in table.items():
        if not (isinstance(name, str) and re.match(NAME_PATTERN, name) and len(name) <= 64):
            continue
        try:
            valid[name] = model.model_validate(body)
        except ValidationError:
            continue  # reported by the whole-file validation
    return valid


def _server(raw: Mapping[str, Any]) -> ServerConfig:
    """The ``[server]`` table when the whole file failed validation: as written if it
    passes on its own (its ``fmu_dirs`` then still apply), else the defaults."""
    try:
        return ServerConfig.model_validate(raw.get("server", {}))
    except ValidationError:
        return ServerConfig()  # reported by the whole-file validation


# -- hardware in the loop ---------------------------------------------------------------

def _check_hil(raw: Mapping[str, Any], file: str) -> list[ConfigError]:
    """What the ``[hil.<peer>]`` tables' structure cannot say and the twins need not:
    the session exists, each binding gives exactly one of ``node`` and
    ``browse_path`` and a fallback only where one applies; security settings agree.
    (Whether each binding names a variable of its twin, of the right kind, once, with
    a fallback of its type, is checked once the twins are compiled: ``runtime.compile``.)

    Checked on the raw tables, entry by entry, so that a peer with a structural error
    elsewhere still gets these checks."""
    errors: list[ConfigError] = []
    peers = raw.get("hil")
    declared = _keys(raw.get("sessions"))
    for peer, body in peers.items() if isinstance(peers, Mapping) else ():
        if not isinstance(body, Mapping):
            continue
        where = f"hil.{quoted_key(str(peer))}"

        def fail(path: str, message: str, where: str = where) -> None:
            errors.append(ConfigError(message, path=f"{where}.{path}" if path else where,
                                      file=file))

        _check_security(body.get("security"), fail)
        session_name = body.get("session")
        if isinstance(session_name, str) and session_name not in declared:
            known = ", ".join(declared) or "none"
            fail("session", f"unknown session {session_name!r} (sessions in this file: "
                            f"{known}){did_you_mean(session_name, declared)}")
        bindings = body.get("bindings")
        for bname, bbody in bindings.items() if isinstance(bindings, Mapping) else ():
            binding = BindingFields.of(bbody)
            if binding is None:
                continue  # reported by the whole-file validation
            path = f"bindings.{quoted_key(str(bname))}"
            if binding.has_node == binding.has_browse_path:
                fail(path, "a binding names its PLC node with exactly one of 'node' "
                           "(a NodeId) and 'browse_path'")
            if binding.fallback is not None and binding.direction == "to_plc":
                fail(f"{path}.fallback", "only a from_plc binding has a fallback (the value "
                                         "its input takes while the PLC is unreachable)")
        _check_link_faults(body.get("faults"), bindings, fail)
    return errors


def _check_link_faults(faults: object, bindings: object,
                       fail: Callable[[str, str], None]) -> None:
    """``[[hil.<peer>.faults]]`` as InjectLinkFault checks them (``hil.link_faults``,
    which this package does not import): a delay only for kind delay and there > 0,
    known bindings, and no two acting on one binding."""
    if not isinstance(faults, list) or not isinstance(bindings, Mapping):
        return  # (reported by the whole-file validation)
    names = sorted(str(name) for name in bindings)
    taken: dict[str, int] = {}
    for index, body in enumerate(faults):
        try:
            fault = HilLinkFaultConfig.model_validate(body)
        except ValidationError:
            continue  # reported by the whole-file validation
        where = f"faults[{index}]"
        if fault.kind == "delay" and fault.delay <= 0:
            fail(f"{where}.delay", "a delay link fault needs its delay in s (> 0)")
        if fault.kind != "delay" and fault.delay:
            fail(f"{where}.delay", f"a {fault.kind} link fault has no delay (leave it out)")
        unknown = [b for b in fault.bindings if b not in names]
        if unknown:
            fail(f"{where}.bindings", f"the peer has no binding "
                                      f"{', '.join(map(repr, unknown))} (its bindings: "
                                      f"{', '.join(names)})")
        for binding in fault.bindings or names:
            if binding in taken:
                fail(where, f"it acts on binding {binding!r}, as faults[{taken[binding]}] "
                            f"does: one link fault per binding at a time")
                break
        for binding in fault.bindings or names:
            taken.setdefault(binding, index)


def _check_security(body: object, fail: Callable[[str, str], None]) -> None:
    try:
        security = HilSecurity.model_validate(body if body is not None else {})
    except ValidationError:
        return  # reported by the whole-file validation
    if (security.policy == "None") != (security.mode == "None"):
        fail("security", f"policy {security.policy!r} with mode {security.mode!r}: either both "
                         f"are 'None' or a policy goes with mode 'Sign' or 'SignAndEncrypt'")
    if security.policy != "None" and not (security.certificate and security.private_key):
        fail("security", f"policy {security.policy!r} needs the client's 'certificate' and "
                         f"'private_key'")
    if (security.password is not None or security.password_env is not None) \
            and not security.username:
        fail("security.username", "a password needs a username")
    if security.password is not None and security.password_env is not None:
        fail("security", "give either 'password' or 'password_env', not both")


#: the HIL security settings that name files
_HIL_FILES = ("certificate", "private_key", "server_certificate")


def with_hil_files(config: Config, base_dir: Path | None) -> Config:
    """``config`` with the HIL peers' certificate and key paths made absolute
    against the config file's folder (as an FMU's path is)."""
    if base_dir is None or not config.hil:
        return config
    peers = {}
    for name, peer in config.hil.items():
        security = peer.security
        update = {key: str((base_dir / value).resolve()) for key in _HIL_FILES
                  if isinstance(value := getattr(security, key), str)
                  and not Path(value).is_absolute()}
        peers[name] = peer.model_copy(
            update={"security": security.model_copy(update=update)}) if update else peer
    return config.model_copy(update={"hil": peers})
