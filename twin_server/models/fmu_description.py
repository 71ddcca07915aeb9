"""What an FMU offers, read once: its modelDescription mapped onto our variables,
its unpacked copy in the cache, and the ``fmu inspect`` table.

Reading is the unavoidable I/O of an FMU component (DESIGN: models do no I/O
while stepping): it happens when a config is checked (``FMU.declare``) or an
instance is made, never in ``step``. Both the parsed description (keyed by the
file's path, size and mtime) and the unpacked directory (keyed by the file's
SHA-256, so that two paths to one FMU share it and a rebuilt FMU never reuses a
stale copy) are cached for the life of the process.

Names: FMI names may hold dots, brackets and spaces (``body.pos[1]``,
``der(x)``); ours become OPC UA NodeId parts, so each is mapped to an identifier
(``body_pos_1``, ``der_x``), made unique with a suffix on a clash; the FMI name
is kept in the description and ``fmu inspect`` shows both.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import fmpy
from fmpy.model_description import ModelDescription, ModelVariable, read_model_description

from twin_server.errors import ConfigError
from twin_server.models.base import DataType, Kind, Value, Variable

#: FMI type -> our data type. Int64/UInt32/UInt64 do not fit an Int32 and are
#: carried as Double (exact up to 2**53).
DATATYPES: dict[str, DataType] = {
    "Real": DataType.DOUBLE, "Float64": DataType.DOUBLE, "Float32": DataType.DOUBLE,
    "Integer": DataType.INT32, "Enumeration": DataType.INT32, "Int8": DataType.INT32,
    "UInt8": DataType.INT32, "Int16": DataType.INT32, "UInt16": DataType.INT32,
    "Int32": DataType.INT32, "UInt32": DataType.DOUBLE, "Int64": DataType.DOUBLE,
    "UInt64": DataType.DOUBLE, "Boolean": DataType.BOOLEAN, "String": DataType.STRING,
}

#: the values each narrower or wider FMI type can hold, as the closed range our
#: checks use (64-bit bounds rounded inwards to the nearest Double)
TYPE_RANGES: dict[str, tuple[float, float]] = {
    "Int8": (-128.0, 127.0), "UInt8": (0.0, 255.0),
    "Int16": (-32768.0, 32767.0), "UInt16": (0.0, 65535.0),
    "UInt32": (0.0, 2.0**32 - 1),
    "Int64": (-(2.0**63), 2.0**63 - 1024), "UInt64": (0.0, 2.0**64 - 2048),
    "Float32": (-3.4028234663852886e38, 3.4028234663852886e38),
}  # Int32 and Integer: Int32 variables are checked as such; enumerations by their items

#: FMI types carried as Double that hold whole numbers only
_INTEGRAL_DOUBLES = frozenset({"UInt32", "Int64", "UInt64"})

_INTERFACES = {"co-simulation": "cs", "cs": "cs", "model-exchange": "me", "me": "me"}


@dataclass(frozen=True, slots=True)
class FMUVariable:
    """One modelDescription variable exposed as ours: the declaration and what is
    needed to get and set it."""

    variable: Variable
    fmi_name: str
    value_reference: int
    fmi_type: str
    causality: str
    variability: str
    initial: str | None
    #: may be set before initialization (parameters, inputs and exact/approx locals)
    settable: bool


@dataclass(frozen=True, slots=True)
class FMUDescription:
    """A parsed FMU: version, interfaces, our variables, locals that may become states."""

    path: Path
    md: ModelDescription
    fmi_version: int
    interfaces: tuple[str, ...]  # "cs" and/or "me"
    variables: tuple[FMUVariable, ...]  # inputs, outputs, parameters
    locals: tuple[FMUVariable, ...]  # candidates for ``states``, declared as STATE
    skipped: tuple[tuple[str, str], ...]  # (FMI name, why it is not exposed)

    def model_identifier(self, interface: str) -> str:
        element = self.md.coSimulation if interface == "cs" else self.md.modelExchange
        return str(element.modelIdentifier)

    def can_get_and_set_state(self, interface: str) -> bool:
        element = self.md.coSimulation if interface == "cs" else self.md.modelExchange
        return bool(element.canGetAndSetFMUstate)

    def can_serialize_state(self, interface: str) -> bool:
        element = self.md.coSimulation if interface == "cs" else self.md.modelExchange
        return bool(element.canSerializeFMUstate)

    def local(self, name: str) -> FMUVariable | None:
        """A local by our name or its FMI name."""
        for fv in self.locals:
            if name in (fv.variable.name, fv.fmi_name):
                return fv
        return None


@dataclass(frozen=True, slots=True)
class FMUOptions:
    """The ``options`` table of an FMU component, checked."""

    path: Path
    cache_dir: Path
    states: tuple[str, ...]
    interface: str | None  # None: co-simulation when offered, else model exchange
    tolerance: float

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> FMUOptions:
        known = {"path", "cache_dir", "states", "interface", "tolerance"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown FMU option(s) {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(sorted(known))})")
        path = options.get("path")
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ConfigError("an FMU component needs options.path, the .fmu file "
                              "(e.g. options = { path = \"plant.fmu\" })")
        states = options.get("states", ())
        if isinstance(states, str):  # config options are scalars: "x, v" lists two
            states = [s for s in re.split(r"[,\s]+", states) if s]
        if not isinstance(states, list | tuple) or not all(isinstance(s, str) for s in states):
            raise ConfigError(f"options.states must list local variable names (got {states!r})")
        interface = options.get("interface")
        if interface is not None:
            if interface not in _INTERFACES:
                raise ConfigError(f"options.interface must be 'co-simulation' or "
                                  f"'model-exchange' (got {interface!r})")
            interface = _INTERFACES[interface]
        tolerance = options.get("tolerance", 1e-6)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not (
            0 < tolerance < 1
        ):
            raise ConfigError(f"options.tolerance must be a number in (0, 1) (got {tolerance!r})")
        cache = options.get("cache_dir")
        return cls(
            path=Path(path).expanduser().absolute(),
            cache_dir=Path(cache).expanduser() if cache else default_cache_dir(),
            states=tuple(states), interface=interface, tolerance=float(tolerance),
        )


def default_cache_dir() -> Path:
    """Where FMUs are unpacked when the component names no ``cache_dir``: the
    daemon passes ``<state_dir>/fmu-cache``; otherwise a per-user temp folder."""
    return Path(tempfile.gettempdir()) / f"twin-server-fmu-{os.getuid()}"


# -- reading ---------------------------------------------------------------------------


def describe(path: Path) -> FMUDescription:
    """The description of the FMU at ``path``, or a ConfigError naming the file and
    the problem (missing, not a zip, invalid modelDescription, no binary for us)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"FMU file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"FMU file {str(path)!r} cannot be read: {exc.strerror}") from None
    if not path.is_file():
        raise ConfigError(f"FMU path {str(path)!r} is not a file")
    return _describe(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _describe(path: str, size: int, mtime_ns: int) -> FMUDescription:
    del size, mtime_ns  # the cache key: a changed file is read again
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"FMU file {path!r} is not an FMU (not a zip archive)")
    try:
        md = read_model_description(path, validate=True)
    except KeyError:
        raise ConfigError(f"FMU file {path!r} has no modelDescription.xml") from None
    except Exception as exc:  # lxml, schema and FMPy's own checks all raise plain exceptions
        raise ConfigError(f"FMU file {path!r} has an invalid modelDescription.xml: "
                          f"{_first_line(exc)}") from None
    try:
        version = int(str(md.fmiVersion).split(".")[0])
    except ValueError:
        version = 0
    if version not in (2, 3):
        raise ConfigError(f"FMU file {path!r} is FMI {md.fmiVersion}; twin-server runs "
                          f"FMI 2.0 and 3.0 FMUs")
    interfaces = tuple(i for i, e in (("cs", md.coSimulation), ("me", md.modelExchange)) if e)
    if not interfaces:
        raise ConfigError(f"FMU file {path!r} offers neither co-simulation nor model "
                          f"exchange (only scheduled execution, which is not supported)")
    variables, local_vars, skipped = _variables(md, _unsigned_ranges(path, version))
    return FMUDescription(Path(path), md, version, interfaces, variables, local_vars, skipped)


def check_binary(desc: FMUDescription, interface: str) -> str:
    """The binary's path inside the FMU for this platform, or a ConfigError."""
    platform = fmpy.platform if desc.fmi_version == 2 else fmpy.platform_tuple
    identifier = desc.model_identifier(interface)
    member = f"binaries/{platform}/{identifier}{fmpy.sharedLibraryExtension}"
    with zipfile.ZipFile(desc.path) as zf:
        names = zf.namelist()
    if member not in names:
        found = sorted({n.split("/")[1] for n in names
                        if n.startswith("binaries/") and n.count("/") >= 2 and n.split("/")[1]})
        has = f"it has binaries for {', '.join(found)}" if found else "it has no binaries"
        raise ConfigError(f"FMU file {str(desc.path)!r} has no binary for this platform "
                          f"({member} is missing; {has}); export the FMU for {platform} "
                          f"from the modelling tool")
    return member


def choose_interface(desc: FMUDescription, wanted: str | None) -> str:
    if wanted is None:
        return desc.interfaces[0]
    if wanted not in desc.interfaces:
        offered = " and ".join({"cs": "co-simulation", "me": "model exchange"}[i]
                               for i in desc.interfaces)
        raise ConfigError(f"FMU file {str(desc.path)!r} does not offer "
                          f"{'co-simulation' if wanted == 'cs' else 'model exchange'} "
                          f"(it offers {offered})")
    return wanted


def unpack(path: Path, cache_dir: Path) -> Path:
    """The FMU extracted under ``cache_dir`` (once per content; concurrent callers
    and processes are safe: extraction goes to a temp folder renamed into place)."""
    digest = _digest(str(path), path.stat().st_mtime_ns)
    target = cache_dir / f"{path.stem}-{digest[:16]}"
    if (target / "modelDescription.xml").is_file():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache_dir))
        with zipfile.ZipFile(path) as zf:
            zf.extractall(tmp)  # extractall strips absolute and '..' member paths
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"FMU file {str(path)!r} could not be unpacked into "
                          f"{str(cache_dir)!r}: {exc}") from None
    return target


@functools.lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int) -> str:
    del mtime_ns
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- mapping onto our variables ----------------------------------------------------------


def _unsigned_ranges(path: str, version: int) -> dict[str, tuple[str | None, str | None]]:
    """min and max of FMI 3.0 UInt8..UInt64 variables (their own, else their declared
    type's), by variable name: FMPy does not read them (it reads them for Int* only)."""
    if version != 3:
        return {}
    try:
        with zipfile.ZipFile(path) as zf:
            root = ElementTree.fromstring(zf.read("modelDescription.xml"))
    except (KeyError, zipfile.BadZipFile, ElementTree.ParseError):
        return {}
    types = {t.get("name"): (t.get("min"), t.get("max"))
             for t in root.iterfind("TypeDefinitions/*") if t.tag.startswith("UInt")}
    ranges = {}
    for v in root.iterfind("ModelVariables/*"):
        if v.tag.startswith("UInt"):
            low, high = types.get(v.get("declaredType"), (None, None))
            ranges[str(v.get("name"))] = (v.get("min", low), v.get("max", high))
    return ranges


def _variables(
    md: ModelDescription, unsigned: Mapping[str, tuple[str | None, str | None]],
) -> tuple[tuple[FMUVariable, ...], tuple[FMUVariable, ...], tuple[tuple[str, str], ...]]:
    exposed: list[FMUVariable] = []
    local_vars: list[FMUVariable] = []
    skipped: list[tuple[str, str]] = []
    taken: set[str] = set()
    for v in md.modelVariables:
        causality = v.causality or "local"
        kind = {"input": Kind.INPUT, "output": Kind.OUTPUT, "parameter": Kind.PARAMETER,
                "structuralParameter": Kind.PARAMETER, "local": Kind.STATE}.get(causality)
        if kind is None:
            if causality != "independent":
                skipped.append((v.name, f"causality {causality} is not exposed"))
            continue
        datatype = DATATYPES.get(v.type)
        if datatype is None:
            skipped.append((v.name, f"type {v.type} is not supported"))
            continue
        if v.dimensions or v.dimensionValueReferences:
            skipped.append((v.name, "array variables are not supported"))
            continue
        if kind is Kind.STATE and datatype is DataType.STRING:
            skipped.append((v.name, "String locals cannot be states"))
            continue
        if kind is Kind.STATE and v.variability == "constant":
            skipped.append((v.name, "a constant: it never changes, so it is no state"))
            continue
        name = _identifier(v.name, taken)
        fv = FMUVariable(
            variable=_declare(v, name, kind, datatype, unsigned.get(v.name)),
            fmi_name=v.name, value_reference=int(v.valueReference), fmi_type=v.type,
            causality=causality, variability=v.variability or "continuous", initial=v.initial,
            settable=causality in ("parameter", "structuralParameter", "input")
            or (v.initial in ("exact", "approx") and v.variability != "constant"),
        )
        (local_vars if kind is Kind.STATE else exposed).append(fv)
    return tuple(exposed), tuple(local_vars), tuple(skipped)


def _declare(v: ModelVariable, name: str, kind: Kind, datatype: DataType,
             unsigned: tuple[str | None, str | None] | None) -> Variable:
    """Our declaration of ``v``: its range is the declared min/max within what its
    FMI type holds (so that nothing wraps on its way into the FMU)."""
    declared = v.declaredType
    unit = v.unit or (declared.unit if declared is not None else None) or ""
    display = v.displayUnit or (declared.displayUnit if declared is not None else None)
    if unsigned is not None:
        low, high = _number(unsigned[0]), _number(unsigned[1])
    else:
        low = _number(v.min if v.min is not None
                      else declared.min if declared is not None else None)
        high = _number(v.max if v.max is not None
                       else declared.max if declared is not None else None)
    bounds = TYPE_RANGES.get(v.type)
    if bounds is not None:
        low = bounds[0] if low is None else max(low, bounds[0])
        high = bounds[1] if high is None else min(high, bounds[1])
    choices: tuple[tuple[int, str], ...] = ()
    if v.type == "Enumeration" and declared is not None and declared.items:
        choices = tuple((int(item.value), str(item.name)) for item in declared.items)
    parts = [v.description or (declared.description if declared is not None else "") or ""]
    if name != v.name:
        parts.append(f"FMI name {v.name}")
    if display and display != unit:
        parts.append(f"display unit {display}")
    numeric = datatype in (DataType.DOUBLE, DataType.INT32)
    default = parse_value(v.start, datatype)
    if numeric and isinstance(default, int | float):  # UInt64's largest start, say
        default = type(default)(min(max(default, low if low is not None else default),
                                    high if high is not None else default))
    return Variable(
        name=name, kind=kind, unit=unit,
        low=low if numeric else None,
        high=high if numeric else None,
        default=default,
        datatype=datatype,
        description="; ".join(p for p in parts if p),
        # a structural parameter changes the FMU's structure: only at Reset
        tunable=v.variability == "tunable" and v.causality != "structuralParameter"
        if kind is Kind.PARAMETER else True,
        integral=v.type in _INTEGRAL_DOUBLES,
        choices=choices,
    )


def parse_value(text: str | None, datatype: DataType) -> Value:
    """A start value of the modelDescription as our type (absent: 0, False, "")."""
    if datatype is DataType.STRING:
        return text or ""
    if datatype is DataType.BOOLEAN:
        return (text or "").strip() in ("true", "1")
    if text is None or not text.strip():
        return 0 if datatype is DataType.INT32 else 0.0
    if datatype is DataType.INT32:
        return int(text) if re.fullmatch(r"\s*[-+]?\d+\s*", text) else int(float(text))
    return float(text)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _identifier(name: str, taken: set[str]) -> str:
    ident = re.sub(r"\W+", "_", name).strip("_") or "v"
    if ident[0].isdigit():
        ident = f"_{ident}"
    ident = ident[:60]
    candidate, n = ident, 2
    while candidate in taken:
        candidate, n = f"{ident}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) < 400 else text[:400] + "..."


# -- fmu inspect -----------------------------------------------------------------------


def inspect_fmu(path: str | os.PathLike[str]) -> str:
    """A table of the FMU's variables (our name, FMI causality, type, unit, range,
    start, description) and how to use it in a config: ``twin-server fmu inspect``."""
    desc = describe(Path(path).expanduser().absolute())
    md = desc.md
    offered = ", ".join({"cs": "co-simulation", "me": "model exchange"}[i]
                        for i in desc.interfaces)
    lines = [f"{desc.path.name}: {md.modelName} (FMI {md.fmiVersion}; {offered})"]
    if md.description:
        lines.append(f"  {md.description}")
    if md.generationTool:
        lines.append(f"  generated by {md.generationTool}")
    for interface in desc.interfaces:
        snap = "yes" if desc.can_get_and_set_state(interface) else "no"
        lines.append(f"  {interface}: model identifier {desc.model_identifier(interface)}, "
                     f"snapshot/fork {snap}")
    lines.append("")
    rows = [("name", "causality", "type", "unit", "range", "start", "description")]
    order = {"input": 0, "output": 1, "parameter": 2, "structuralParameter": 2, "local": 3}
    continuous, derivatives = _continuous_states(desc), _derivatives(desc)
    for fv in sorted((*desc.variables, *desc.locals), key=lambda f: order[f.causality]):
        var = fv.variable
        causality = fv.causality
        if var.kind is Kind.PARAMETER:
            causality += " (tunable)" if var.tunable else " (fixed)"
        elif fv.fmi_name in continuous:
            causality += " (state)"
        elif fv.fmi_name in derivatives:
            causality += " (derivative)"
        if var.choices:
            shown = "{" + ", ".join(f"{value} {name}" for value, name in var.choices) + "}"
        elif var.low is not None or var.high is not None:
            shown = var.range_text()
        else:
            shown = ""
        rows.append((
            var.name, causality, f"{fv.fmi_type}->{var.datatype.value}", var.unit, shown,
            "(calculated)" if fv.initial == "calculated"
            else repr(var.default) if var.datatype is DataType.STRING else str(var.default),
            var.description,
        ))
    lines.extend(_table(rows))
    if desc.skipped:
        lines.append("")
        lines.append("not exposed:")
        lines.extend(f"  {name}: {why}" for name, why in desc.skipped)
    lines.append("")
    lines.extend(_states_hint(desc))
    return "\n".join(lines)


def _continuous_states(desc: FMUDescription) -> set[str]:
    """FMI names of the continuous-time states (ModelStructure's derivatives' states)."""
    return {str(d.variable.derivative.name) for d in desc.md.derivatives
            if d.variable.derivative is not None}


def _derivatives(desc: FMUDescription) -> set[str]:
    return {str(d.variable.name) for d in desc.md.derivatives}


def _states_hint(desc: FMUDescription) -> list[str]:
    """What may go into options.states: locals that hold state (continuous-time states
    first), not derivatives (the FMU calculates them) nor constants."""
    continuous, derivatives = _continuous_states(desc), _derivatives(desc)
    offered = sorted((fv for fv in desc.locals if fv.fmi_name not in derivatives),
                     key=lambda fv: fv.fmi_name not in continuous)
    if not offered:
        return ["no locals to offer as states (options.states)"]
    names = [fv.variable.name for fv in offered]
    lines = ["locals become STATE variables when listed in options.states:"]
    states = [fv.variable.name for fv in offered if fv.fmi_name in continuous]
    others = [fv.variable.name for fv in offered if fv.fmi_name not in continuous]
    if states:
        lines.append(f"  continuous-time states (model exchange may overwrite them while "
                     f"running): {', '.join(states)}")
    if others:
        lines.append(f"  other locals (read-only while running): {', '.join(others)}")
    lines.append(f"  e.g. states = \"{', '.join(names[:2])}\"")
    return lines


def _table(rows: Iterable[tuple[str, ...]]) -> list[str]:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 11)
    return out
