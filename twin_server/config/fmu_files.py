"""Which FMU files the daemon may load, and where it unpacks them: ``server.fmu_dirs``.

An FMU carries a native library that runs inside the daemon, so which files may be
FMUs is the operator's decision, written in the config file::

    [server]
    fmu_dirs = ["fmus", "/srv/fmus"]   # relative to this file; default: this file's folder

* Every FMU, the config file's own and a client's (DefineTwin, and the run-time
  twins brought back from the store at start), must lie in one of these folders or
  their subfolders. A path is resolved (symlinks, ``..``) before it is checked
  against the folders, themselves resolved, so neither leads out of them; the
  resolved path is what the model then opens.
* A config file (the operator) names an FMU relative to its own folder, as any file
  option, and may choose ``options.cache_dir``.
* A run-time definition (a client) names an FMU relative to the folders (the first
  folder that holds the file wins) or by an absolute path inside one, and may not
  choose where anything is written: ``options.cache_dir`` is refused, and its FMUs
  are unpacked under ``<state_dir>/fmu-cache``.
* A client's refused path gets one message whatever lies outside the folders: it
  quotes the client's own text and names ``server.fmu_dirs``, never whether the
  file exists, where the folders are or the daemon's working directory. Errors about
  a file it may use (not a zip, no binary for this platform) quote its text too,
  not the resolved path.

Decision: the config file's own FMUs are held to ``fmu_dirs`` as well, so that one
setting lists every place native code may come from; its default (the config file's
folder and its subfolders) keeps a config whose FMUs sit beside it working. With no
config file (a config given as text) the default and relative entries follow the
current directory, as relative file options do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twin_server.config.schema import Config, ServerConfig, TwinConfig
from twin_server.errors import ConfigError, ConfigErrors, InvalidArgument

#: the model whose ``options.path`` is a native library
FMU_MODEL = "fmu"
#: the setting an error tells the operator to change
SETTING = "server.fmu_dirs"
#: characters of a client's path that an error quotes
EXCERPT = 160

_REFUSED = (
    "FMU path {shown} names no FMU file in the folders this server loads FMUs from: "
    "give the file's path relative to one of them, or ask the server's operator to put "
    f"the FMU there or to add its folder to {SETTING} in the config file")
_CACHE_REFUSED = (
    "options.cache_dir cannot be chosen by a client: the server unpacks FMUs under its "
    f"own state directory; remove cache_dir (FMUs come from the folders of {SETTING})")


@dataclass(frozen=True, slots=True)
class FmuFolders:
    """The folders FMUs may come from (resolved; resolved again at each check, as a
    folder may be a symlink) and where the daemon unpacks FMUs."""

    folders: tuple[Path, ...]
    cache_dir: Path
    #: ``server.fmu_dirs`` is not set: the folders are the config file's folder
    default: bool = False

    @classmethod
    def of(cls, server: ServerConfig, base_dir: Path | None) -> FmuFolders:
        """``server.fmu_dirs``, relative entries against ``base_dir`` (the config
        file's folder; the current directory if None), and ``<state_dir>/fmu-cache``."""
        base = (base_dir if base_dir is not None else Path.cwd()).absolute()
        entries = server.fmu_dirs
        folders = tuple(_resolved(folder) or folder for folder in (
            (base,) if entries is None else (base / entry for entry in entries)))
        cache = (Path(server.state_dir) / "fmu-cache").resolve()
        return cls(folders, cache, default=entries is None)

    def check(self, file: str | None) -> list[ConfigError]:
        """A ConfigError for each configured entry that is not a folder (a typo would
        otherwise refuse every FMU in silence)."""
        errors = []
        for index, folder in enumerate(() if self.default else self.folders):
            if not _is(folder, Path.is_dir):
                errors.append(ConfigError(
                    f"{str(folder)!r} is not a folder; create it or correct the entry "
                    f"(a relative entry is relative to the config file's folder)",
                    path=f"{SETTING}[{index}]", file=file))
        return errors

    def contains(self, path: Path) -> Path | None:
        """``path`` resolved, if it lies in one of the folders (resolved too), else None."""
        real = _resolved(path)
        if real is None:
            return None
        for folder in self.folders:
            top = _resolved(folder)
            if top is not None and real.is_relative_to(top):
                return real
        return None

    def describe(self) -> str:
        """The folders, for the operator's own error messages."""
        if self.default:
            return (f"{SETTING} is not set: only the config file's folder "
                    f"{str(self.folders[0])!r} and its subfolders")
        if not self.folders:
            return f"{SETTING} = [] allows none"
        return f"{SETTING}: {', '.join(repr(str(f)) for f in self.folders)}"


#: refuses every FMU path (a run-time twin parsed without the daemon's folders)
NO_FOLDERS = FmuFolders((), Path("fmu-cache"))


def with_fmu_dirs(config: Config, fmu: FmuFolders) -> Config:
    """``config`` with ``server.fmu_dirs`` as absolute folders (the default filled in),
    so that the daemon checks run-time twins against what the file meant."""
    server = config.server.model_copy(update={"fmu_dirs": tuple(str(f) for f in fmu.folders)})
    return config.model_copy(update={"server": server})


def operator_options(twin: TwinConfig, base_dir: Path | None, fmu: FmuFolders,
                     where: str) -> TwinConfig:
    """``twin`` from a config file with each component's ``options.path`` made absolute
    against the file's folder, an FMU's resolved and checked against ``fmu``, and FMUs
    caching under the state directory unless the file says where. Raises ConfigErrors
    at ``<where>.components.<name>.options.path``."""
    errors: list[ConfigError] = []
    components = {}
    for name, comp in twin.components.items():
        options = dict(comp.options)
        path = options.get("path")
        if isinstance(path, str) and base_dir is not None and not Path(path).is_absolute():
            options["path"] = str((base_dir / path).resolve())
        if comp.model == FMU_MODEL:
            if isinstance(path, str) and path:
                given = Path(str(options["path"])).absolute()
                real = fmu.contains(given)
                if real is None:
                    resolved = _resolved(given)
                    shown = repr(str(given)) + (
                        f" (resolved: {str(resolved)!r})"
                        if resolved is not None and resolved != given else "")
                    errors.append(ConfigError(
                        f"FMU file {shown} is outside the folders FMUs may be loaded from "
                        f"({fmu.describe()}); move it into one of them, or add its folder "
                        f"to {SETTING}", path=f"{where}.components.{name}.options.path"))
                    continue
                options["path"] = str(real)
            options.setdefault("cache_dir", str(fmu.cache_dir))
        components[name] = comp if options == comp.options else comp.model_copy(
            update={"options": options})
    if errors:
        raise ConfigErrors(errors)
    return twin.model_copy(update={"components": components})


def client_options(twin: TwinConfig, fmu: FmuFolders, where: str, file: str | None
                   ) -> tuple[TwinConfig, dict[str, str]]:
    """``twin`` from a client (a run-time definition) with each FMU's path found in
    ``fmu``'s folders and its cache under the state directory; also each resolved
    path mapped to the client's text (``in_client_words``). Raises InvalidArgument
    naming every refused option, before any FMU file is read."""
    refusals: list[ConfigError] = []
    shown: dict[str, str] = {}
    components = {}
    for name, comp in twin.components.items():
        if comp.model != FMU_MODEL:
            components[name] = comp
            continue
        options = dict(comp.options)
        at = ".".join(p for p in (where, f"components.{name}.options") if p)
        if "cache_dir" in options:
            refusals.append(ConfigError(_CACHE_REFUSED, path=f"{at}.cache_dir", file=file))
        path = options.get("path")
        if isinstance(path, str) and path:  # else the model says what options.path is
            real = _find(path, fmu)
            if real is None:
                refusals.append(ConfigError(_REFUSED.format(shown=_excerpt(path)),
                                            path=f"{at}.path", file=file))
                continue
            options["path"] = str(real)
            shown[str(real)] = path
        options["cache_dir"] = str(fmu.cache_dir)
        components[name] = comp.model_copy(update={"options": options})
    if refusals:
        raise InvalidArgument("\n".join(str(e) for e in refusals))
    return twin.model_copy(update={"components": components}), shown


def in_client_words(errors: list[ConfigError], shown: dict[str, str]) -> list[ConfigError]:
    """``errors`` with each resolved FMU path replaced by the client's text for it, so
    that a message about a file the client may use does not show where it lies."""
    if not shown:
        return errors
    result = []
    for error in errors:
        message = error.message
        for real, text in shown.items():
            message = message.replace(repr(real), _excerpt(text)).replace(real, text)
        result.append(ConfigError(message, path=error.path, file=error.file))
    return result


def _find(text: str, fmu: FmuFolders) -> Path | None:
    """The resolved file a client's path names in ``fmu``'s folders, or None. Nothing
    outside the folders is looked at beyond resolving the path itself."""
    given = Path(text)
    candidates = [given] if given.is_absolute() else [f / given for f in fmu.folders]
    for candidate in candidates:
        real = fmu.contains(candidate)
        if real is not None and _is(real, Path.is_file):
            return real
    return None


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    try:
        return test(path)
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= EXCERPT else text[:EXCERPT] + "...")
