"""What the package's folders import (DESIGN.md's layout), read from the source.

The stepping core (``engine/`` and ``models/``) stays synchronous and pure: no
module it runs, its own or one of ours it imports, imports asyncio, asyncua,
aiosqlite, a socket or anything else that does network, process or database work.
The check follows our own imports transitively (a package's ``__init__`` included,
since importing ``twin_server.x.y`` runs ``twin_server/x/__init__.py``), skips
``if TYPE_CHECKING:`` blocks, and counts imports inside functions too. It cannot
ask ``sys.modules``: structlog, which every module logs through, imports asyncio.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import twin_server

PACKAGE = Path(twin_server.__file__).parent

#: what the pure core must not import, directly or through a module of ours
IMPURE = frozenset({
    "asyncio", "asyncua", "aiosqlite", "sqlite3", "socket", "socketserver", "selectors",
    "ssl", "select", "multiprocessing", "concurrent", "subprocess", "http", "urllib",
    "uvloop", "dask", "distributed",
})


def module_file(name: str) -> Path | None:
    """The source of our module ``name`` (a package's ``__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] != "twin_server":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node`` but those of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def imports(name: str) -> set[str]:
    """The modules ``name``'s source imports at run time, as absolute names; for
    ``from package import x`` both the package and, where it is a module, ``x``."""
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            for alias in node.names:
                if module_file(f"{source}.{alias.name}") is not None:
                    found.add(f"{source}.{alias.name}")
    return found


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def reached(roots: list[str]) -> dict[str, list[str]]:
    """Every module of ours that importing ``roots`` runs, each with the chain of
    imports that reaches it."""
    chains: dict[str, list[str]] = {}
    todo = [(root, [root]) for root in roots]
    while todo:
        name, chain = todo.pop()
        if name in chains:
            continue
        chains[name] = chain
        for other in sorted(imports(name)):
            for step in _with_parents(other):
                if module_file(step) is not None and step not in chains:
                    todo.append((step, [*chain, step]))
    return chains


def modules_of(folder: str) -> list[str]:
    """Every module of ``twin_server/<folder>/``, as dotted names."""
    names = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(("twin_server", *parts)))
    return names


def violations(roots: list[str], refused: set[str] | frozenset[str],
               ours: tuple[str, ...] = ()) -> list[str]:
    """Each import below ``roots`` of a top-level module in ``refused`` or of one of
    our modules starting with a prefix in ``ours``, with the chain that leads to it."""
    found = []
    for name, chain in sorted(reached(roots).items()):
        if ours and name.startswith(ours):
            found.append(f"{' -> '.join(chain)}")
            continue
        for other in sorted(imports(name)):
            if other.split(".")[0] in refused:
                found.append(f"{' -> '.join(chain)} imports {other}")
    return found


class TestHelpers:
    def test_finds_an_import_it_should(self) -> None:
        """The walk finds what a module of ours really imports (the check can fail)."""
        assert "asyncio" in imports("twin_server.runtime.clock")
        assert violations(["twin_server.runtime.clock"], IMPURE) != []

    def test_follows_our_imports_and_parent_packages(self) -> None:
        """Importing a submodule reaches its package's ``__init__`` and what that imports."""
        chains = reached(["twin_server.runtime.host"])
        assert "twin_server.runtime" in chains
        assert "twin_server.engine.session" in chains


class TestPureCore:
    @pytest.mark.parametrize("folder", ["engine", "models"])
    def test_no_asyncio_nor_io(self, folder: str) -> None:
        """No module of the folder imports asyncio, asyncua, aiosqlite, sockets or
        processes, directly or through another module of ours."""
        assert violations(modules_of(folder), IMPURE) == []

    @pytest.mark.parametrize("folder", ["engine", "models"])
    def test_no_adapters(self, folder: str) -> None:
        """The core reaches none of the adapters at its edges (runtime, OPC UA, HIL,
        history, security, the command)."""
        adapters = tuple(f"twin_server.{name}" for name in (
            "runtime", "opcua", "hil", "history", "security", "cli", "app"))
        assert violations(modules_of(folder), frozenset(), adapters) == []


class TestConfigDescribes:
    def test_config_imports_no_engine(self) -> None:
        """``config/`` describes and the runtime compiles: no module of it reaches the
        engine, the models or any part of the daemon."""
        others = tuple(f"twin_server.{name}" for name in (
            "engine", "models", "runtime", "opcua", "hil", "history", "security", "cli",
            "app", "persistence", "recording"))
        assert violations(modules_of("config"), frozenset(), others) == []

    def test_config_does_no_io_but_reading_files(self) -> None:
        """``config/`` imports nothing that does network, process or database work."""
        assert violations(modules_of("config"), IMPURE) == []
