"""The asyncua version check: twin-server's hooks into asyncua's internals run only
on the minor version they were tested with, unless the user asks otherwise; and
those hooks stay in one place: no module outside ``opcua/patches/`` reads or writes
a private attribute of asyncua's.

An asyncua private attribute is, here, a name with one leading underscore that
asyncua's own source gives an attribute (``self._x = ...``), a method or a class.
The check reads our source: ``x._name``, and ``getattr``/``setattr``/``hasattr``/
``delattr`` with ``"_name"``, on anything but ``self`` and ``cls`` (a subclass of
an asyncua class may use its own), and ``from asyncua... import _name``. Our own
privates are not asyncua's names, so they pass (a clash would be flagged: rename
ours).
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import asyncua
import pytest

import twin_server
from twin_server.opcua.patches import OVERRIDE, TESTED, UntestedAsyncua, check_asyncua, minor

PACKAGE = Path(twin_server.__file__).parent
PATCHES = PACKAGE / "opcua" / "patches"
_ACCESSORS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


#: text that every definition of a private name contains (``x._name = ...``,
#: ``def _name``, ``class _Name``): asyncua's generated modules (13 MB, 12 s of
#: parsing unloaded, over 60 s on a loaded machine) have none and are not parsed
_MAY_DEFINE_PRIVATE = re.compile(r"\.\s*_\w|\b(?:def|class)\s+_\w")


@functools.cache
def asyncua_privates() -> frozenset[str]:
    """Every private name asyncua's source gives an attribute, a method or a class."""
    names: set[str] = set()
    for path in Path(asyncua.__file__).parent.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if not _MAY_DEFINE_PRIVATE.search(source):
            continue
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
    return frozenset(n for n in names if _private(n))


def _own(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _uses_private(node: ast.AST, privates: frozenset[str]) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in privates and not _own(node.value)
    if isinstance(node, ast.Call):
        return (isinstance(node.func, ast.Name) and node.func.id in _ACCESSORS
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in privates and not _own(node.args[0]))
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").startswith("asyncua") and any(
            _private(alias.name) for alias in node.names)
    return False


def private_uses(path: Path) -> list[str]:
    """Each place in ``path`` that reads or writes one of asyncua's private names on
    an object not its own (``file:line: expression``)."""
    privates = asyncua_privates()
    where = path.relative_to(PACKAGE.parent)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [f"{where}:{node.lineno}: {ast.unparse(node)}"
            for node in ast.walk(tree) if _uses_private(node, privates)]


class TestCheckAsyncua:
    def test_installed_version_is_the_tested_one(self) -> None:
        """The asyncua the project installs is the one its hooks were tested with."""
        assert minor(asyncua.__version__) == TESTED
        check_asyncua()

    @pytest.mark.parametrize("version", [
        pytest.param("2.2.0", id="newer minor"),
        pytest.param("3.0.1", id="newer major"),
        pytest.param("1.1.5", id="older"),
        pytest.param("dev", id="unparsable"),
    ])
    def test_other_versions_refused(self, version: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """Another version is refused with both versions and the way out named."""
        monkeypatch.delenv(OVERRIDE, raising=False)
        with pytest.raises(UntestedAsyncua) as refused:
            check_asyncua(version)
        message = str(refused.value)
        assert version in message and f"{TESTED[0]}.{TESTED[1]}" in message
        assert OVERRIDE in message

    def test_override_runs_anyway(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TWIN_SERVER_UNTESTED_ASYNCUA=1 lets another version run."""
        monkeypatch.setenv(OVERRIDE, "1")
        check_asyncua("2.9.0")

    def test_run_refuses_to_start(self, tmp_path: Path) -> None:
        """``twin-server run`` on an untested asyncua exits 1 with the message, no
        traceback, before binding anything."""
        config = Path(__file__).parents[2] / "configs" / "demo.toml"
        code = ("import asyncua, sys; asyncua.__version__ = '2.9.0'; "
                "from twin_server.cli import main; sys.exit(main())")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", code, "run", str(config)],
                              capture_output=True, text=True, timeout=60, env=env,
                              cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "asyncua 2.9.0 is installed" in done.stderr
        assert "not started" in done.stderr and "Traceback" not in done.stderr


class TestInternalsBehindPatches:
    def test_the_check_finds_private_uses(self) -> None:
        """The check sees what ``patches/`` does (so it can fail): fastpath reads a
        subscription's ``_triggered_datachanges``, internals the sessions by token."""
        assert any("_triggered_datachanges" in use
                   for use in private_uses(PATCHES / "fastpath.py"))
        assert any("_external_sessions" in use
                   for use in private_uses(PATCHES / "internals.py"))

    def test_none_outside_patches(self) -> None:
        """No module outside ``opcua/patches/`` reads or writes an asyncua private
        attribute: each goes through a named function of ``patches/internals.py``."""
        uses = [use for path in sorted(PACKAGE.rglob("*.py"))
                if PATCHES not in path.parents for use in private_uses(path)]
        assert uses == []

    def test_every_internal_named_still_exists(self) -> None:
        """Each private name ``patches/internals.py`` touches is still one asyncua's
        source defines (an upgrade that renames one fails here, not in production)."""
        tree = ast.parse((PATCHES / "internals.py").read_text(encoding="utf-8"))
        touched = {node.attr for node in ast.walk(tree)
                   if isinstance(node, ast.Attribute) and _private(node.attr)}
        touched |= {node.value for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and _private(node.value)}
        assert touched, "internals.py touches no private name?"
        assert sorted(touched - asyncua_privates()) == []
