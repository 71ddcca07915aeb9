"""Nesting depth of JSON and TOML found by counting brackets, checked against the
depth of what the real parsers make of the same text."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_server.config.nesting import json_too_deep, toml_too_deep

#: strings that look like structure: brackets, quotes, escapes, comment marks, dots
TRICKY = st.sampled_from(["", "[", "]]", "{", "}", '"', "\\", "'", "#", "a.b", '"""', "'''",
                          "x = [", "\n"])
SCALARS = st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3, allow_nan=False), st.booleans(),
                    st.text(max_size=5), TRICKY)
KEYS = st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,4}", fullmatch=True), TRICKY)


def values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=3),
                     st.dictionaries(KEYS, children, max_size=3))


DATA = st.recursive(SCALARS, values, max_leaves=20)


def depth(value: Any) -> int:
    """Containers around the deepest value: ``{"a": {"b": 1}}`` is 2."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def measured(text: str, find: Any) -> int:
    """The smallest limit ``find`` accepts ``text`` under."""
    limit = 0
    while find(text, limit) is not None:
        limit += 1
    return limit


def _key(text: str) -> str:
    """A TOML basic string (JSON's, with DEL escaped as TOML wants)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (strings as JSON strings: valid TOML too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _key(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


class TestJson:
    @given(DATA)
    @settings(max_examples=300, deadline=None)
    def test_depth_as_parsed(self, data: Any) -> None:
        """The counted depth is the depth of the parsed value, whatever the strings hold."""
        text = json.dumps(data)
        assert measured(text, json_too_deep) == depth(json.loads(text))

    def test_where(self) -> None:
        """The refusal says where the limit was passed."""
        found = json_too_deep('{"a":\n  [[[1]]]}', 3)
        assert found is not None
        assert (found.line, found.column, found.limit) == (2, 5, 3)

    def test_largest_argument_counted(self) -> None:
        """64 KiB of the worst case for the count (all brackets) is within the limit
        (how long it takes: tests/bench/bench_arguments.py)."""
        text = "[" + "[]," * 21_800 + "[]]"
        assert json_too_deep(text, 32) is None
        assert json_too_deep("[" + text + "]", 2) is not None


class TestToml:
    @given(st.dictionaries(KEYS, DATA, min_size=1, max_size=4))
    @settings(max_examples=300, deadline=None)
    def test_inline_depth_as_parsed(self, document: dict[str, Any]) -> None:
        """Key/value lines with inline tables and arrays: the counted depth is the
        depth of what tomllib makes of them (the document is one level)."""
        text = "".join(f"{_key(k)} = {toml_value(v)}  # [[ {{\n"
                       for k, v in document.items())
        assert measured(text, toml_too_deep) == depth(tomllib.loads(text))

    @pytest.mark.parametrize(("text", "expected"), [
        pytest.param("a = 1\n", 1, id="flat"),
        pytest.param("[twins.t.components.c]\nmodel = 'x'\n", 5, id="header"),
        pytest.param("[twins.t.components.c]\nparameters = { area = 2.0 }\n", 6,
                     id="header-and-inline"),
        pytest.param("a.b.c = 1\n", 3, id="dotted-key"),
        pytest.param("[a]\nb.c = { d.e = [1] }\n", 6, id="dotted-inside-inline"),
        pytest.param("[[a.b]]\nc = 1\n", 4, id="array-of-tables"),
        pytest.param('["a.b".c]\nd = "]]]]"\n', 3, id="quoted-header"),
        pytest.param('a = """\n[[[[\n"""\nb = \'\'\'{{{\'\'\'\n', 1, id="multi-line-strings"),
        pytest.param('a = """x""""\nb = [1]\n', 2, id="string-ending-in-quotes"),
        pytest.param("a = [\n  [1],  # ]]]\n  [[2]],\n]\n", 4, id="multi-line-array"),
        pytest.param("a = 1.5\nb.c = 2.0\n", 2, id="floats-are-not-keys"),
    ])
    def test_counted_depth(self, text: str, expected: int) -> None:
        """Headers, dotted keys, inline tables and arrays each count one level;
        strings and comments nothing."""
        tomllib.loads(text)  # (valid TOML)
        assert measured(text, toml_too_deep) == expected

    def test_where(self) -> None:
        """The refusal says where the limit was passed."""
        found = toml_too_deep("[a]\nb = [[[1]]]\n", 3)
        assert found is not None
        assert (found.line, found.column) == (2, 6)
