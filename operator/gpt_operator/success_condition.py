"""Analysis success conditions: a tiny, whitelisted expression language over one number, `result`.

    condition  := or
    or         := and (("or" | "||") and)*
    and        := not (("and" | "&&") not)*
    not        := ("not" | "!") not | "(" or ")" | comparison
    comparison := operand ("<" | "<=" | ">" | ">=" | "==" | "!=") operand
    operand    := "result" | "result[0]" | ["-" | "+"] number

`result` is the metric's value (`result[0]` too, as Argo Rollouts writes it for a Prometheus vector), e.g.
`result < 0.05`, `result >= 0.99`, `result[0] > 0 && result[0] <= 2.5`. The text is parsed into a tree of
tuples and evaluated by walking it: nothing is ever passed to eval, and nothing but numbers, `result`,
comparisons and boolean operators is accepted.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 256
MAX_DEPTH = 16

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\[0\])?)"
    r"|(?P<op><=|>=|==|!=|&&|\|\||<|>|!|\(|\)|-|\+)"
    r")"
)
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_OR = ("or", "||")
_AND = ("and", "&&")
_NOT = ("not", "!")


class ConditionError(ValueError):
    """The text is not a condition this grammar accepts (the message says where)."""


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ConditionError(f"unexpected {text[pos:].strip()[:16]!r} at character {pos + 1}")
        out.append(match.group(match.lastgroup or "op"))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ConditionError("the condition ends too early")
        self.pos += 1
        return token

    def parse(self) -> Any:
        tree = self.or_(0)
        if self.peek() is not None:
            raise ConditionError(f"unexpected {self.peek()!r} after a complete condition")
        return tree

    def or_(self, depth: int) -> Any:
        tree = self.and_(depth)
        while self.peek() in _OR:
            self.take()
            tree = ("or", tree, self.and_(depth))
        return tree

    def and_(self, depth: int) -> Any:
        tree = self.not_(depth)
        while self.peek() in _AND:
            self.take()
            tree = ("and", tree, self.not_(depth))
        return tree

    def not_(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ConditionError(f"the condition nests more than {MAX_DEPTH} deep")
        token = self.peek()
        if token in _NOT:
            self.take()
            return ("not", self.not_(depth + 1))
        if token == "(":
            self.take()
            tree = self.or_(depth + 1)
            if self.take() != ")":
                raise ConditionError("a '(' is not closed")
            return tree
        return self.comparison()

    def comparison(self) -> Any:
        left = self.operand()
        op = self.take()
        if op not in _COMPARISONS:
            raise ConditionError(f"expected a comparison (<, <=, >, >=, ==, !=), found {op!r}")
        return ("cmp", op, left, self.operand())

    def operand(self) -> Any:
        token = self.take()
        if token in ("result", "result[0]"):
            return ("result",)
        sign = 1.0
        if token in ("-", "+"):
            sign = -1.0 if token == "-" else 1.0
            token = self.take()
        try:
            value = float(token)
        except ValueError:
            raise ConditionError(f"expected `result` or a number, found {token!r}") from None
        if not math.isfinite(value):
            raise ConditionError(f"{token!r} is not a finite number")
        return ("num", sign * value)


def _uses_result(tree: Any) -> bool:
    if tree[0] == "result":
        return True
    return any(isinstance(part, tuple) and _uses_result(part) for part in tree[1:])


def _evaluate(tree: Any, result: float) -> Any:
    kind = tree[0]
    if kind == "result":
        return result
    if kind == "num":
        return tree[1]
    if kind == "cmp":
        return _COMPARISONS[tree[1]](_evaluate(tree[2], result), _evaluate(tree[3], result))
    if kind == "not":
        return not _evaluate(tree[1], result)
    if kind == "and":
        return _evaluate(tree[1], result) and _evaluate(tree[2], result)
    return _evaluate(tree[1], result) or _evaluate(tree[2], result)


@dataclass(frozen=True)
class Condition:
    """A parsed success condition; call it with a measured value."""

    text: str
    tree: Any

    def __call__(self, result: float) -> bool:
        return bool(_evaluate(self.tree, result))


def parse_condition(text: str) -> Condition:
    """Parse `text`; raises ConditionError (a ValueError) when it is not in the grammar above."""
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"a condition has at most {MAX_LENGTH} characters")
    tokens = _tokens(text)
    if not tokens:
        raise ConditionError("the condition is empty")
    tree = _Parser(tokens).parse()
    if not _uses_result(tree):
        raise ConditionError("the condition never looks at `result`")
    return Condition(text, tree)
