"""The condition language: what it means, and its errors with their columns."""

from __future__ import annotations

import pytest

from twin_server.scenarios.expr import EvaluationError, ExpressionError, parse

VALUES = {"tank.level": 1.2, "tank.overflow": False, "pid.output": -0.5, "time": 3.0}


class TestMeaning:
    @pytest.mark.parametrize(("text", "expected"), [
        pytest.param("tank.level > 1", True, id="greater"),
        pytest.param("tank.level <= 1", False, id="at-most"),
        pytest.param("tank.level == 1.2", True, id="equal"),
        pytest.param("tank.level != 1.2", False, id="not-equal"),
        pytest.param("tank.level == 1.25 ± 0.05", True, id="tolerance-inside"),
        pytest.param("tank.level == 1.3 ± 0.05", False, id="tolerance-outside"),
        pytest.param("tank.level == 1.3 +/- 0.1", True, id="ascii-tolerance"),
        pytest.param("tank.level != 1.3 ± 0.05", True, id="tolerance-not-equal"),
        pytest.param("1 < tank.level < 1.5", True, id="chained"),
        pytest.param("1.3 < tank.level < 1.5", False, id="chained-false"),
        pytest.param("not tank.overflow and tank.level > 1", True, id="and-not"),
        pytest.param("tank.overflow or pid.output < 0", True, id="or"),
        pytest.param("abs(pid.output) == 0.5", True, id="abs"),
        pytest.param("max(tank.level, 2) == 2 and min(1, 3, -1) == -1", True, id="min-max"),
        pytest.param("-pid.output * 2 + 1 / 4 == 1.25", True, id="arithmetic"),
        pytest.param("(tank.level - 0.2) * 2 == 2", True, id="parentheses"),
        pytest.param("tank.overflow == false", True, id="boolean-literal"),
        pytest.param("time >= 3", True, id="time"),
        pytest.param("1e-3 < 2.5E2", True, id="exponent"),
        pytest.param("not not true", True, id="double-not"),
        pytest.param("true or 1 / 0", True, id="or-short-circuits"),
    ])
    def test_evaluates(self, text: str, expected: bool) -> None:
        """Each construct of the language evaluates as documented."""
        assert parse(text).holds(VALUES) is expected

    def test_names(self) -> None:
        """An expression lists the names it reads (not keywords, functions or numbers)."""
        assert parse("abs(tank.level - 1) < 0.1 and not tank.overflow").names == {
            "tank.level", "tank.overflow"}

    def test_unknown_name_at_evaluation(self) -> None:
        """A name without a value is an EvaluationError naming it."""
        with pytest.raises(EvaluationError, match=r"'room\.temp'"):
            parse("room.temp > 1").evaluate(VALUES)

    def test_never_eval(self) -> None:
        """Python is not the language: attribute access and calls of other names are refused."""
        with pytest.raises(ExpressionError):
            parse("__import__('os').system('true')")


class TestErrors:
    @pytest.mark.parametrize(("text", "column", "words"), [
        pytest.param("tank.level >", 13, "expected a number", id="missing-operand"),
        pytest.param("tank.level > 1 1", 16, "after a complete condition", id="trailing"),
        pytest.param("(tank.level > 1", 16, "expected ')'", id="unclosed"),
        pytest.param("tank.level ± 0.1", 12, "follows '==' or '!='", id="lonely-tolerance"),
        pytest.param("tank.level < 1 ± 0.1", 16, "follows '==' or '!='", id="tolerance-on-less"),
        pytest.param("tank.level $ 1", 12, "unexpected character '$'", id="bad-character"),
        pytest.param("abs(1, 2) > 0", 1, "abs() takes 1 argument", id="arity"),
        pytest.param("tank.and > 1", 1, "'and' is a keyword", id="keyword-in-name"),
        pytest.param("and tank.level", 1, "needs a condition before it", id="leading-and"),
        pytest.param("   ", 1, "empty", id="empty"),
    ])
    def test_column(self, text: str, column: int, words: str) -> None:
        """A syntax error says what was wrong and at which (1-based) column."""
        with pytest.raises(ExpressionError) as caught:
            parse(text)
        assert caught.value.column == column
        assert words in caught.value.message
