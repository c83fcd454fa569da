"""The `when` mini-language: one comparison on an earlier step's output.

A step's `when` ("evaluate.passed == true") decides whether it runs. It comes
from pipeline definitions that operators edit, so it is parsed by hand with a
tiny grammar instead of eval(): nothing in it can call, import or index.

    condition := step "." output op literal
    op        := "==" | "!=" | "<" | "<=" | ">" | ">="
    literal   := number | true | false | null | 'str' | "str"

Evaluation is total: a missing step/output or a type mismatch is False, never an
exception, because a step that did not report a number must not be "passed".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Condition", "ConditionError", "OPERATORS", "parse"]

OPERATORS = ("==", "!=", "<=", ">=", "<", ">")  # two-char ops first: longest match wins
_ORDERING = frozenset({"<", "<=", ">", ">="})

_STEP_RE = re.compile(r"[A-Za-z0-9_-]+")
_OUTPUT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_KEYWORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


class ConditionError(ValueError):
    """A `when` expression that does not parse; `.position` is the 0-based offset."""

    def __init__(self, message: str, expr: str, position: int) -> None:
        super().__init__(f"{message} at position {position} in {expr!r}")
        self.expr = expr
        self.position = position


@dataclass(frozen=True)
class Condition:
    step: str
    output: str
    op: str
    value: Any  # int | float | bool | str | None

    def evaluate(self, outputs: Mapping[str, Mapping[str, Any]]) -> bool:
        """True only if the output exists, has a compatible type and compares true."""
        step_outputs = outputs.get(self.step)
        if not isinstance(step_outputs, Mapping) or self.output not in step_outputs:
            return False
        return _compare(step_outputs[self.output], self.op, self.value)

    def __str__(self) -> str:
        return f"{self.step}.{self.output} {self.op} {_render_literal(self.value)}"


def parse(expr: str) -> Condition:
    """Parse one `when` expression or raise ConditionError saying what was expected where."""
    if not isinstance(expr, str):
        raise ConditionError(f"expected a string, got {type(expr).__name__}", repr(expr), 0)
    return _Parser(expr).condition()


class _Parser:
    """Recursive-descent over a fixed four-part shape; keeps the cursor for error positions."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.pos = 0

    def condition(self) -> Condition:
        self._skip_ws()
        step = self._match(_STEP_RE, "expected a step name")
        self._expect(".", "expected '.' after the step name")
        output = self._match(_OUTPUT_RE, "expected an output name after '.'")
        self._skip_ws()
        op = self._operator()
        self._skip_ws()
        literal_pos = self.pos
        value = self._literal()
        self._skip_ws()
        if self.pos != len(self.expr):
            self._fail(f"unexpected trailing input {self.expr[self.pos:]!r}")
        if op in _ORDERING and (value is None or isinstance(value, bool)):
            raise ConditionError(
                f"operator {op} cannot compare with {_render_literal(value)}", self.expr, literal_pos
            )
        return Condition(step=step, output=output, op=op, value=value)

    def _operator(self) -> str:
        for op in OPERATORS:
            if self.expr.startswith(op, self.pos):
                self.pos += len(op)
                return op
        self._fail("expected a comparison operator (==, !=, <, <=, >, >=)")

    def _literal(self) -> Any:
        if self.pos >= len(self.expr):
            self._fail("expected a literal (number, true, false, null or quoted string)")
        char = self.expr[self.pos]
        if char in "'\"":
            return self._string(char)
        number = _NUMBER_RE.match(self.expr, self.pos)
        if number:
            self.pos = number.end()
            text = number.group()
            return float(text) if any(c in text for c in ".eE") else int(text)
        word = re.compile(r"[A-Za-z_]+").match(self.expr, self.pos)
        if word and word.group() in _KEYWORDS:
            self.pos = word.end()
            return _KEYWORDS[word.group()]
        self._fail("expected a literal (number, true, false, null or quoted string)")

    def _string(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.expr):
            char = self.expr[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(chars)
            if char == "\\":
                escaped = self.expr[self.pos + 1 : self.pos + 2]
                if escaped not in _ESCAPES:
                    self.pos += 1
                    self._fail("unknown escape in string (use \\\\, \\', \\\", \\n or \\t)")
                chars.append(_ESCAPES[escaped])
                self.pos += 2
                continue
            chars.append(char)
            self.pos += 1
        raise ConditionError("unterminated string", self.expr, start)

    def _match(self, pattern: re.Pattern[str], expected: str) -> str:
        found = pattern.match(self.expr, self.pos)
        if not found:
            self._fail(expected)
        self.pos = found.end()
        return found.group()

    def _expect(self, token: str, expected: str) -> None:
        if not self.expr.startswith(token, self.pos):
            self._fail(expected)
        self.pos += len(token)

    def _skip_ws(self) -> None:
        while self.pos < len(self.expr) and self.expr[self.pos].isspace():
            self.pos += 1

    def _fail(self, expected: str):  # -> NoReturn
        got = self.expr[self.pos : self.pos + 10]
        detail = f", got {got!r}" if got else ", got end of input"
        raise ConditionError(expected + detail, self.expr, self.pos)


def _kind(value: Any) -> str | None:
    """Type family used for comparisons; bool is not a number here (True != 1)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _compare(actual: Any, op: str, expected: Any) -> bool:
    # null is checked by identity: "x == null" / "x != null" test presence of a value.
    if expected is None:
        return {"==": actual is None, "!=": actual is not None}.get(op, False)
    kind = _kind(actual)
    if kind is None or kind != _kind(expected):
        return False
    return _OPS[op](actual, expected)


_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _render_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
        return f"'{escaped}'"
    return repr(value)
