"""How deeply a JSON or TOML text nests, found without parsing it.

Python's ``json`` and ``tomllib`` parse nested arrays and tables by recursion: a
text nested some thousand levels deep raises RecursionError (with a traceback of
thousands of frames) instead of a syntax error, and a shallower one still costs
a deep stack in every walk that follows (pydantic, ``repr``). Method arguments
(JSON parameters, TOML twin definitions) and config files are therefore measured
first, by a scan of their brackets that skips strings and comments, and refused
past a limit with a message that says where.

Depth counts containers: ``{"tank": {"area": 2.0}}`` is 2 deep; in TOML the
document is one level, each part of a table header or dotted key one more, and
each inline table or array one more: ``[twins.t.components.c]`` puts ``model``
at depth 5 and ``parameters = { area = 2.0 }`` reaches 6.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate

#: the deepest nesting accepted by default (method arguments; server.limits)
DEFAULT_MAX_DEPTH = 32
#: the deepest nesting any config file or twin definition may have, whatever the
#: setting (the setting may not go higher): far from Python's recursion limit
MAX_DEPTH = 64

_JSON_STRING = r'"(?:[^"\\]|\\.)*"?'  # (an unterminated one runs to the end)
_JSON_TOKEN = re.compile(_JSON_STRING + r"|[\[\]{}]", re.DOTALL)
_JSON_STRINGS = re.compile(_JSON_STRING, re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

_TOML_TOKEN = re.compile(
    r'"""(?:[^\\]|\\.)*?""""{0,2}'  # multi-line basic string (ends with 3 to 5 quotes)
    r"|'''.*?''''{0,2}"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[\]{}.=,\n]",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class TooDeep:
    """Where a text first nests deeper than its limit."""

    limit: int
    offset: int  # of the bracket (or key part) that went past it
    line: int
    column: int


def _where(text: str, limit: int, offset: int) -> TooDeep:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return TooDeep(limit, offset, line, column)


def json_too_deep(text: str, limit: int) -> TooDeep | None:
    """Where ``text`` (JSON) first nests more than ``limit`` arrays and objects deep,
    or None. Brackets inside strings do not count; malformed text is measured as
    far as it goes (the parser reports what is wrong with it)."""
    # the depth at C speed (64 KiB in a few ms); the place only when it is too deep
    brackets = _NOT_BRACKETS.sub("", _JSON_STRINGS.sub("", text))
    if max(accumulate(map(_STEP.__getitem__, brackets)), default=0) <= limit:
        return None
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return _where(text, limit, match.start())
        elif token in "]}":
            depth -= 1
    return None


def toml_too_deep(text: str, limit: int) -> TooDeep | None:
    """Where ``text`` (TOML) first nests more than ``limit`` levels deep (the
    document, table header parts, dotted key parts, inline tables and arrays), or
    None. Strings and comments do not count; malformed text is measured as far as
    it goes (tomllib reports what is wrong with it)."""
    if limit < 1:
        return _where(text, limit, 0)
    table = 1  # depth of the table the last [header] opened (the document: 1)
    stack: list[tuple[str, int]] = []  # open inline tables and arrays: bracket, depth
    expect = "key"  # what comes next: "key", "value", or "end" (of a value)
    dots = 0  # dots of the key being read: each is a table one level deeper
    tokens = _TOML_TOKEN.finditer(text)
    for match in tokens:
        token, at = match.group(), match.start()
        level = stack[-1][1] if stack else table
        if token == "\n":
            if not stack:
                expect, dots = "key", 0
        elif token[0] in "\"'":
            if expect == "value":
                expect = "end"
        elif token[0] == "#":
            continue
        elif token == "[" and not stack and expect == "key":
            # a table header, [a.b] or [[a.b]] (an array of tables: one level more)
            array = text.startswith("[[", at)
            depth = 2 if array else 1
            for part in tokens:
                if part.group() == ".":
                    depth += 1
                elif part.group() in ("]", "\n"):
                    break  # (a second ']' or '[' of [[...]] is read as nothing)
                if depth + 1 > limit:
                    return _where(text, limit, part.start())
            table, expect = depth + 1, "end"
            if table > limit:
                return _where(text, limit, at)
        elif token in "[{":
            if expect != "value":
                continue  # malformed
            depth = level + dots + 1
            if depth > limit:
                return _where(text, limit, at)
            stack.append((token, depth))
            expect, dots = ("key" if token == "{" else "value"), 0
        elif token in "]}":
            if stack:
                stack.pop()
            expect, dots = "end", 0
        elif token == ",":
            if stack:
                expect, dots = ("key" if stack[-1][0] == "{" else "value"), 0
        elif token == "=":
            if expect == "key":
                expect = "value"
        elif token == "." and expect == "key":
            dots += 1
            if level + dots > limit:
                return _where(text, limit, at)
    return None
