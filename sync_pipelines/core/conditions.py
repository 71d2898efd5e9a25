"""The ``when`` of a quality expectation: a small typed condition language, never an evaluator.

A stack file used to reach ``DataFrame.query`` (any Python, run with the sync's credentials), so a condition is now
parsed into the typed nodes below and evaluated as a boolean mask with vectorised pandas operations on named
columns. Grammar (keywords in any case)::

    condition := and ("or" and)*
    and       := unary ("and" unary)*
    unary     := "not" unary | "(" condition ")" | test
    test      := column "is" ["not"] "null"
               | column ("==" | "!=" | "<" | "<=" | ">" | ">=") literal
               | column ["not"] "in" "[" literal ("," literal)* "]"
               | column ".isnull()" | column ".notnull()"          (the pandas spelling of older stacks)
    column    := [A-Za-z_][A-Za-z0-9_]*
    literal   := 'text' | "text" (a backslash takes the next character as it is) | number | true | false

As with pandas' operators, a missing value meets no comparison and no list, so it meets their negations
(``!=``, ``not in``, ``not``), whatever the column's dtype.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, Union

import numpy as np
import pandas as pd

Literal = Union[str, int, float, bool]

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_KEYWORDS = frozenset({"and", "or", "not", "is", "null", "in", "true", "false"})
_MAX_DEPTH = 50  # nested parentheses and nots: deeper is no condition a person wrote, and would exhaust the stack
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<nullcall>\.\s*(?:isnull|notnull)\s*\(\s*\))
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<punct>[()\[\],])""",
    re.VERBOSE,
)
_TESTS = "'is [not] null', '==', '!=', '<', '<=', '>', '>=', '[not] in [...]', '.isnull()' or '.notnull()'"


class ConditionError(ValueError):
    """A condition that does not parse; the message names the character (1-based) and what was found there."""


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool = False
    at: int = field(default=0, compare=False)  # where the column is named in the text, for error messages

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        missing = frame[self.column].isna().to_numpy()
        return ~missing if self.negated else missing

    def tests(self) -> Iterator[Test]:
        yield self


@dataclass(frozen=True)
class Compare:
    column: str
    op: str  # a key of _OPERATORS
    value: Literal
    at: int = field(default=0, compare=False)

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.column]
        result = _OPERATORS[self.op](values, self.value).to_numpy(dtype=bool, na_value=False)
        return result | values.isna().to_numpy() if self.op == "!=" else result

    def tests(self) -> Iterator[Test]:
        yield self


@dataclass(frozen=True)
class In:
    column: str
    values: tuple[Literal, ...]  # distinct
    negated: bool = False
    at: int = field(default=0, compare=False)

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        # for a short list, faster than an index lookup; nullable dtypes answer with a BooleanArray
        found = frame[self.column].isin(self.values).to_numpy(dtype=bool, na_value=False)
        return ~found if self.negated else found

    def tests(self) -> Iterator[Test]:
        yield self


@dataclass(frozen=True)
class Not:
    operand: Condition

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        return ~self.operand.mask(frame)

    def tests(self) -> Iterator[Test]:
        return self.operand.tests()


@dataclass(frozen=True)
class And:
    operands: tuple[Condition, ...]

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        return np.logical_and.reduce([operand.mask(frame) for operand in self.operands])

    def tests(self) -> Iterator[Test]:
        return (test for operand in self.operands for test in operand.tests())


@dataclass(frozen=True)
class Or:
    operands: tuple[Condition, ...]

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        return np.logical_or.reduce([operand.mask(frame) for operand in self.operands])

    def tests(self) -> Iterator[Test]:
        return (test for operand in self.operands for test in operand.tests())


Test = Union[IsNull, Compare, In]
Condition = Union[IsNull, Compare, In, Not, And, Or]


def columns(condition: Condition) -> list[str]:
    """The columns a condition reads, in the order it names them first."""
    return list(dict.fromkeys(test.column for test in condition.tests()))


def evaluate(condition: Condition, frame: pd.DataFrame) -> np.ndarray:
    """The rows of ``frame`` (by position) that meet ``condition``; ValueError names a missing column or a
    comparison the column's type does not allow (a text column against a number)."""
    missing = [name for name in columns(condition) if name not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(missing)} not in the data")
    try:
        return condition.mask(frame)
    except TypeError as error:
        raise ValueError(str(error)) from None


def parse(text: str) -> Condition:
    """Parse a ``when`` condition; ConditionError names the character where it stops making sense."""
    return _Parser(text).condition()


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, nullcall, name, op, punct or end
    text: str
    at: int

    def is_(self, *words: str) -> bool:
        """Whether this is one of ``words`` (a keyword in any case, or a punctuation mark)."""
        return self.kind in ("name", "punct") and self.text.lower() in words


def _tokens(text: str) -> Iterator[_Token]:
    """The tokens of ``text``, read only as far as the parser gets, so an error is the first in reading order."""
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise ConditionError(f"at character {at + 1}: found {_snippet(text, at)}; a condition holds only column "
                                 "names, comparisons, quoted strings, numbers, true/false, and/or/not and parentheses")
        if match.lastgroup != "space":
            yield _Token(match.lastgroup, match.group(), at)
        at = match.end()
    yield _Token("end", "", len(text))


def _snippet(text: str, at: int) -> str:
    rest = text[at:]
    return "the end" if not rest else repr(rest if len(rest) <= 24 else rest[:24] + "…")


class _Parser:
    """Recursive descent over the grammar in the module docstring."""

    def __init__(self, text: str):
        self.text, self.unread, self.depth = text, _tokens(text), 0
        self.ahead = next(self.unread)  # the one token of lookahead the grammar needs

    def condition(self) -> Condition:
        operands = [self._and()]
        while self.ahead.is_("or"):
            self._take()
            operands.append(self._and())
        condition = operands[0] if len(operands) == 1 else Or(tuple(operands))
        if self.depth == 0 and self.ahead.kind != "end":
            self._fail("'and', 'or' or the end")
        return condition

    def _and(self) -> Condition:
        operands = [self._unary()]
        while self.ahead.is_("and"):
            self._take()
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _unary(self) -> Condition:
        token = self.ahead
        if token.is_("not", "("):
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise ConditionError(f"at character {token.at + 1}: over {_MAX_DEPTH} nested 'not's and parentheses")
            self._take()
            if token.is_("not"):
                inner: Condition = Not(self._unary())
            else:
                inner = self.condition()
                self._want(")", "'and', 'or' or ')'")
            self.depth -= 1
            return inner
        if token.kind != "name" or token.text.lower() in _KEYWORDS:
            self._fail("a column name, 'not' or '('")
        self._take()
        return self._test(token.text, token.at)

    def _test(self, column: str, at: int) -> Test:
        token = self.ahead
        if token.kind == "nullcall":
            self._take()
            return IsNull(column, negated="notnull" in token.text, at=at)
        if token.kind == "op":
            self._take()
            return Compare(column, token.text, self._literal(), at=at)
        if token.is_("is"):
            self._take()
            negated = self.ahead.is_("not")
            if negated:
                self._take()
            self._want("null", "'null'")
            return IsNull(column, negated=negated, at=at)
        negated = token.is_("not")
        if negated:
            self._take()
        self._want("in", "'in'" if negated else _TESTS)
        self._want("[", "'['")
        values = [self._literal()]
        while self.ahead.is_(","):
            self._take()
            values.append(self._literal())
        self._want("]", "',' or ']'")
        return In(column, tuple(dict.fromkeys(values)), negated=negated, at=at)

    def _literal(self) -> Literal:
        token = self.ahead
        if token.kind == "string":
            value: Literal = re.sub(r"\\(.)", r"\1", token.text[1:-1], flags=re.DOTALL)
        elif token.kind == "number":
            value = float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        elif token.is_("true", "false"):
            value = token.text.lower() == "true"
        else:
            self._fail("a quoted string, a number, true or false")
        self._take()
        return value

    def _take(self) -> _Token:
        """Move past ``ahead`` (never the end token: every rule stops there)."""
        token, self.ahead = self.ahead, next(self.unread)
        return token

    def _want(self, word: str, expected: str) -> None:
        if not self.ahead.is_(word):
            self._fail(expected)
        self._take()

    def _fail(self, expected: str) -> NoReturn:
        at = self.ahead.at
        raise ConditionError(f"at character {at + 1}: found {_snippet(self.text, at)}; expected {expected}")
