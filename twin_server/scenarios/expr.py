"""The condition language of scenarios: a small, safe expression parser (never ``eval``).

A condition is text such as ``tank.level == 1.3 ± 0.05 and not tank.overflow``::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum (CMP sum)* [TOL sum]     CMP: < <= > >= == !=   TOL: ± or +/-
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | atom
    atom       := NUMBER | "true" | "false" | NAME | FUNC "(" condition ("," condition)* ")"
                | "(" condition ")"
    NAME       := identifier ("." identifier)*      (tank.level, plc.high_alarm, time)
    FUNC       := abs | min | max

Comparisons chain as in mathematics (``0.7 < tank.level <= 1.3`` is both). A
tolerance belongs to the last ``==`` or ``!=`` of its comparison:
``a == b ± tol`` holds when ``abs(a - b) <= tol``, ``a != b ± tol`` when it is
more (the tolerance is widened by a relative 1e-9 so that binary rounding does
not decide a value exactly on its edge). Names are looked up in a mapping of
values at evaluation; ``true``, ``false``, ``and``, ``or``, ``not`` and the
function names are reserved.

``parse`` returns an ``Expression`` (its text, the names it reads, and a compiled
evaluator made of closures); a syntax error is an ``ExpressionError`` with the
1-based column it was found at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Number = float | int | bool
Values = Mapping[str, Number]
Evaluator = Callable[[Values], Number]

FUNCTIONS: dict[str, tuple[int, int]] = {"abs": (1, 1), "min": (2, 99), "max": (2, 99)}
KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
_CMP = ("<=", ">=", "==", "!=", "<", ">")

_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<tol>±|\+/-)
      | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|,)
    """,
    re.VERBOSE,
)


class ExpressionError(ValueError):
    """A condition that does not parse: what was wrong and where (1-based column)."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}")


class EvaluationError(ValueError):
    """A condition that parsed but cannot be evaluated (an unknown name, 1/0)."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, name, tol, op, end
    text: str
    column: int  # 1-based


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed condition: ``evaluate(values)`` with a value for every name in ``names``."""

    text: str
    names: frozenset[str]
    _evaluate: Evaluator

    def evaluate(self, values: Values) -> Number:
        try:
            return self._evaluate(values)
        except KeyError as exc:
            raise EvaluationError(f"{self.text!r}: no value for {exc.args[0]!r}") from None
        except ZeroDivisionError:
            raise EvaluationError(f"{self.text!r}: division by zero") from None

    def holds(self, values: Values) -> bool:
        return bool(self.evaluate(values))


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError(
                f"unexpected character {text[pos]!r} (a condition has names, numbers, "
                f"comparisons, and/or/not, abs/min/max and ± tolerances)", pos + 1)
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group(), pos + 1))
        pos = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def parse(text: str) -> Expression:
    """Parse a condition; ExpressionError (with its column) if it is not one."""
    parser = _Parser(text)
    evaluate = parser.condition()
    end = parser.peek()
    if end.kind != "end":
        raise ExpressionError(f"unexpected {end.text!r} after a complete condition; "
                              "join conditions with 'and' or 'or'", end.column)
    return Expression(text, frozenset(parser.names), evaluate)


class _Parser:
    """Recursive descent over the tokens, building closures as it goes."""

    def __init__(self, text: str) -> None:
        if not text.strip():
            raise ExpressionError("the condition is empty", 1)
        self.tokens = tokenize(text)
        self.pos = 0
        self.names: set[str] = set()

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.kind in ("op", "name", "tol") and token.text == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str, after: str) -> None:
        if not self.accept(text):
            token = self.peek()
            found = f"{token.text!r}" if token.kind != "end" else "the end"
            raise ExpressionError(f"expected {text!r} {after}, found {found}", token.column)

    def condition(self) -> Evaluator:
        left = self.conjunction()
        while self.accept("or"):
            right = self.conjunction()
            left = _or(left, right)
        return left

    def conjunction(self) -> Evaluator:
        left = self.negation()
        while self.accept("and"):
            right = self.negation()
            left = _and(left, right)
        return left

    def negation(self) -> Evaluator:
        if self.accept("not"):
            inner = self.negation()
            return lambda v: not inner(v)
        return self.comparison()

    def comparison(self) -> Evaluator:
        operands = [self.sum()]
        operators: list[Token] = []
        while self.peek().kind == "op" and self.peek().text in _CMP:
            operators.append(self.take())
            operands.append(self.sum())
        tolerance: Evaluator | None = None
        if self.peek().kind == "tol":
            tol = self.take()
            if not operators or operators[-1].text not in ("==", "!="):
                raise ExpressionError(
                    f"a tolerance ({tol.text}) follows '==' or '!=' (as in "
                    "'tank.level == 1.2 ± 0.05')", tol.column)
            tolerance = self.sum()
        if not operators:
            return operands[0]
        checks = [_compare(op.text, operands[i], operands[i + 1],
                           tolerance if i == len(operators) - 1 else None)
                  for i, op in enumerate(operators)]
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(check(v) for check in checks)

    def sum(self) -> Evaluator:
        left = self.product()
        while self.peek().kind == "op" and self.peek().text in ("+", "-"):
            op = self.take().text
            right = self.product()
            left = _arith(op, left, right)
        return left

    def product(self) -> Evaluator:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/"):
            op = self.take().text
            right = self.unary()
            left = _arith(op, left, right)
        return left

    def unary(self) -> Evaluator:
        if self.accept("-"):
            inner = self.unary()
            return lambda v: -inner(v)
        return self.atom()

    def atom(self) -> Evaluator:
        token = self.take()
        if token.kind == "number":
            number = float(token.text)
            return lambda v: number
        if token.kind == "op" and token.text == "(":
            inner = self.condition()
            self.expect(")", "to close the '('")
            return inner
        if token.kind == "name":
            word = token.text
            if word in ("true", "false"):
                constant = word == "true"
                return lambda v: constant
            if word in FUNCTIONS:
                return self.call(token)
            if word in KEYWORDS:
                raise ExpressionError(f"'{word}' needs a condition before it", token.column)
            head = word.split(".")
            clash = next((part for part in head if part in KEYWORDS), None)
            if clash is not None:
                raise ExpressionError(f"'{clash}' is a keyword and cannot be part of the "
                                      f"name {word!r}", token.column)
            self.names.add(word)
            return lambda v: v[word]
        found = f"{token.text!r}" if token.kind != "end" else "the end of the condition"
        raise ExpressionError(f"expected a number, a name or '(', found {found}", token.column)

    def call(self, token: Token) -> Evaluator:
        name = token.text
        self.expect("(", f"after the function {name!r}")
        args = [self.condition()]
        while self.accept(","):
            args.append(self.condition())
        self.expect(")", f"to close {name}(")
        least, most = FUNCTIONS[name]
        if not least <= len(args) <= most:
            wanted = str(least) if least == most else f"at least {least}"
            raise ExpressionError(f"{name}() takes {wanted} argument"
                                  f"{'s' if least > 1 else ''} (got {len(args)})", token.column)
        if name == "abs":
            (only,) = args
            return lambda v: abs(only(v))
        pick = min if name == "min" else max
        return lambda v: pick(arg(v) for arg in args)


def _or(left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda v: bool(left(v)) or bool(right(v))


def _and(left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda v: bool(left(v)) and bool(right(v))


def _arith(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    if op == "+":
        return lambda v: left(v) + right(v)
    if op == "-":
        return lambda v: left(v) - right(v)
    if op == "*":
        return lambda v: left(v) * right(v)
    return lambda v: left(v) / right(v)


def _compare(op: str, left: Evaluator, right: Evaluator,
             tolerance: Evaluator | None) -> Evaluator:
    if tolerance is not None:
        if op == "==":
            return lambda v: abs(left(v) - right(v)) <= _widened(tolerance(v))
        return lambda v: abs(left(v) - right(v)) > _widened(tolerance(v))
    if op == "<":
        return lambda v: left(v) < right(v)
    if op == "<=":
        return lambda v: left(v) <= right(v)
    if op == ">":
        return lambda v: left(v) > right(v)
    if op == ">=":
        return lambda v: left(v) >= right(v)
    if op == "==":
        return lambda v: left(v) == right(v)
    return lambda v: left(v) != right(v)


def _widened(tolerance: Number) -> float:
    """A tolerance with room for binary rounding: 1.2 == 1.25 ± 0.05 holds although
    1.25 - 1.2 is 0.05000000000000004 in floating point."""
    return float(tolerance) * (1 + 1e-9) + 1e-12
