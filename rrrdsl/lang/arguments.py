"""Literals and call arguments of ``.rrr`` text: numbers, strings, ``key=value`` pairs.

:func:`bind` binds a call's arguments to a leaf function's parameters as Python would (read
once from its signature); :func:`options` checks the ``key=value`` pairs of ``using
SAMPLER(...)`` and of ``sample``'s trailing clauses. Every error is raised as :class:`Located`
at the token it is about, which is more precise than the node that contains it.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Callable, Iterable, NamedTuple, Optional, Sequence, Union

from lark import Token

from ..errors import InvalidValueError, RrrdslError, RrrdslSyntaxError, UnknownNameError, suggest
from .functions import FUNCTIONS
from .nodes import Expr

#: the trailing ``key=value`` clauses of ``sample``
SAMPLE_CLAUSES = ("n", "seed")


class Located(Exception):
    """An :class:`RrrdslError` raised at a known place, more precise than the enclosing node.

    ``where`` is a token or a tree's meta: anything with ``line`` and ``column``.
    """

    def __init__(self, error: RrrdslError, where: object) -> None:
        super().__init__(error.message)
        self.error = error
        self.line: Optional[int] = getattr(where, "line", None)
        self.column: Optional[int] = getattr(where, "column", None)


def at(where: object, action: Callable[[], object]) -> object:
    """Run ``action``; an :class:`RrrdslError` it raises is reported at ``where``."""
    try:
        return action()
    except RrrdslError as error:
        raise Located(error, where) from None


def literal(token: Token, negative: bool = False) -> Union[int, float]:
    """A NUMBER token as an int (digits only) or a finite float."""
    text = str(token)
    value: Union[int, float] = float(text) if not text.isdigit() or len(text) > 308 else int(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"
        raise Located(InvalidValueError(f"the number {shown} is too large", hint="numbers must be finite"), token)
    return -value if negative else value


def decode_string(token: Token) -> str:
    """A STRING token's value (JSON escapes)."""
    try:
        value = json.loads(str(token), strict=False)
        value.encode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise Located(
            RrrdslSyntaxError(
                f"invalid string {token}: {getattr(exc, 'msg', 'not valid unicode')}",
                hint='strings are double-quoted and use JSON escapes: \\" \\\\ \\n \\t \\uXXXX',
            ),
            token,
        ) from None
    return value


class Keyword(NamedTuple):
    """A ``key=value`` argument; ``token`` is the key, for error positions."""

    token: Token
    value: object


class Range(NamedTuple):
    """A ``start:stop`` crop range (only valid as a ``crop`` keyword value)."""

    start: Union[int, float]
    stop: Union[int, float]


def keyword_value(item: object) -> object:
    """A keyword value: literal tokens decoded, lowered values (lists, negatives) as they are."""
    match item:
        case Token(type="NUMBER"):
            return literal(item)
        case Token(type="STRING"):
            return decode_string(item)
        case Token():
            return item.type == "TRUE"  # TRUE or FALSE
    return item


class Function(NamedTuple):
    """A leaf function with its parameters, read once from its signature."""

    build: Callable[..., Expr]
    named: tuple[str, ...]  # parameters that positional arguments fill, in order
    required: tuple[str, ...]
    open_keywords: bool  # takes **condition

    @classmethod
    def of(cls, build: Callable[..., Expr]) -> "Function":
        params = list(inspect.signature(build).parameters.values())
        named = tuple(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)
        required = tuple(p.name for p in params if p.name in named and p.default is inspect.Parameter.empty)
        return cls(build, named, required, len(named) < len(params))


SIGNATURES = {name: Function.of(build) for name, build in FUNCTIONS.items()}


def bind(name: str, function: Function, args: Iterable[object], token: Token) -> dict[str, object]:
    """Bind call arguments to the leaf function's parameters as Python would.

    Positional arguments (expressions, or STRING tokens) fill the named parameters in order;
    keywords must name a parameter (or go to ``**condition``); a parameter given twice, a
    missing one, or a range ``start:stop`` outside ``crop`` is an error at that argument.
    """
    bound: dict[str, object] = {}
    position = 0
    seen_keyword = False
    for arg in args:
        if isinstance(arg, Keyword):
            seen_keyword = True
            key = str(arg.token)
            if key in bound:
                raise Located(InvalidValueError(f"{name}(...) got {key}= twice"), arg.token)
            if key not in function.named and not function.open_keywords:
                hint = suggest(key, function.named) or f"{name} takes " + ", ".join(f"{n}=" for n in function.named)
                raise Located(UnknownNameError(f"unknown keyword '{key}' for {name}(...)", hint=hint), arg.token)
            value = arg.value
            if isinstance(value, Range):
                if name != "crop":
                    raise Located(InvalidValueError(f"a range start:stop is only valid in crop(...), not as {key}="), arg.token)
                value = (value.start, value.stop)
            bound[key] = value
        else:
            if seen_keyword:
                raise Located(RrrdslSyntaxError(f"a positional argument follows a keyword in {name}(...)"), token)
            if position >= len(function.named):
                message = f"{name}(...) takes at most {len(function.named)} positional argument(s)"
                raise Located(InvalidValueError(message, hint=USAGE[name]), token)
            bound[function.named[position]] = keyword_value(arg)
            position += 1
    missing = [p for p in function.required if p not in bound]
    if missing:
        raise Located(InvalidValueError(f"{name}(...) needs {missing[0]}", hint=USAGE[name]), token)
    return bound


USAGE = {
    "model": 'as in model("digits", label=3)',
    "oracle": 'as in oracle("ring")',
    "classifier": 'as in classifier("digits", label=3)',
    "gmm": "as in gmm(means=[[0.5, 0], [-0.5, 0]], std=0.1, weights=[0.3, 0.7])",
    "box": "as in box(low=[-0.2, -1], high=[0.2, 1])",
    "crop": 'as in crop(model("digits"), rows=0:8, cols=4:12)',
}


def options(
    keywords: Iterable[Keyword], what: str, allowed: Optional[Sequence[str]] = None
) -> list[tuple[str, object]]:
    """``key=value`` pairs in order: keys unique (and among ``allowed``), no ranges; for the
    ``sample`` clauses ``n`` must be a positive and ``seed`` a non-negative integer."""
    pairs: dict[str, object] = {}
    for keyword in keywords:
        key, value = str(keyword.token), keyword.value
        if allowed is not None and key not in allowed:
            expected = " or ".join(f"{k}=" for k in allowed)
            hint = suggest(key, allowed) or ("sampler options go in `using SAMPLER(key=value)`" if allowed == SAMPLE_CLAUSES else None)
            raise Located(UnknownNameError(f"unknown {what} '{key}' (expected {expected})", hint=hint), keyword.token)
        if key in pairs:
            raise Located(InvalidValueError(f"{what} {key}= is given twice"), keyword.token)
        if isinstance(value, Range):
            raise Located(InvalidValueError(f"a range start:stop is only valid in crop(...), not as {key}="), keyword.token)
        if allowed == SAMPLE_CLAUSES:
            least = 1 if key == "n" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                kind = "a positive" if least else "a non-negative"
                raise Located(InvalidValueError(f"{key}= must be {kind} integer, got {value!r}"), keyword.token)
        pairs[key] = value
    return list(pairs.items())


