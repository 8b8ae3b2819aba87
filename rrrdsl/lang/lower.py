"""Lowering: lark parse trees of ``grammars/rrr.lark`` -> energy graphs and statements.

Every graph is built through the smart constructors of :mod:`rrrdsl.lang.ir` (``product``,
``power``, ``mixture``, ``constant`` and the leaf functions), so text and Python build
identical graphs. A chain ``a * b / c * d`` lowers with one ``product(a, b, power(c, -1), d)``
and a chain ``x + y + z`` with one ``mixture``, so long chains lower in linear time.
Arithmetic among numbers is folded here; a number where a density is needed becomes
``constant(...)``. Errors the IR raises get the position of the offending operator, operand
or argument.

Names are looked up in the bindings and in the fixed table :data:`FUNCTIONS`; nothing is
ever evaluated as Python. The tree walk is iterative (an explicit stack), so deep nesting
cannot overflow the stack here; a graph too deep for the IR's own recursive
hashing becomes :class:`~rrrdsl.errors.RrrdslSyntaxError` ("expression nested too deeply").
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Callable, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

from lark import Token, Tree

from ..errors import InvalidValueError, RrrdslError, RrrdslSyntaxError, UnknownNameError, suggest
from . import ir
from .ir import Expr
from .printer import format_number
from .program import Assign, Binding, Plot, Sample, Show, Statement

#: the leaf functions of the language: a fixed table, the only callables text can reach
FUNCTIONS: Mapping[str, Callable[..., Expr]] = {
    "model": ir.model,
    "oracle": ir.oracle,
    "gmm": ir.gmm,
    "box": ir.box,
    "classifier": ir.classifier,
    "crop": ir.crop,
}
#: names that cannot be assigned to: the grammar's keywords and the leaf functions
KEYWORDS = frozenset({"sample", "using", "plot", "show", "true", "false", *FUNCTIONS})
#: the trailing ``key=value`` clauses of ``sample``
SAMPLE_CLAUSES = ("n", "seed")


class Source(NamedTuple):
    """A source text split into lines, to attach ``file:line:col`` and a caret to errors."""

    filename: str
    lines: Sequence[str]

    @classmethod
    def of(cls, text: str, filename: Optional[str] = None) -> "Source":
        return cls(filename if filename is not None else "<string>", text.split("\n"))

    def locate(self, error: RrrdslError, line: Optional[int] = None, column: Optional[int] = None) -> RrrdslError:
        """``error`` with this file name and the text of its line; ``line`` and ``column``
        are used only when the error has no position yet."""
        if error.line is not None:
            line, column = error.line, error.column
        if line is None or error.source_line is not None:
            return error
        text = self.lines[line - 1].rstrip("\r") if 0 < line <= len(self.lines) else None
        return error.with_location(filename=self.filename, line=line, column=column, source_line=text)


class Keyword(NamedTuple):
    """A ``key=value`` argument; ``token`` is the key, for error positions."""

    token: Token
    value: object


class Range(NamedTuple):
    """A ``start:stop`` crop range (only valid as a ``crop`` keyword value)."""

    start: Union[int, float]
    stop: Union[int, float]


class Cascade(Exception):
    """A statement refers to a name whose own statement failed: skip it, report nothing."""


#: marks a name whose assignment failed, so its uses do not cascade into more errors
POISONED = object()


class _Located(Exception):
    """An :class:`RrrdslError` raised at a known place, more precise than the enclosing node.

    ``where`` is a token or a tree's meta: anything with ``line`` and ``column``.
    """

    def __init__(self, error: RrrdslError, where: object) -> None:
        super().__init__(error.message)
        self.error = error
        self.line: Optional[int] = getattr(where, "line", None)
        self.column: Optional[int] = getattr(where, "column", None)


def _at(where: object, action: Callable[[], object]) -> object:
    """Run ``action``; an :class:`RrrdslError` it raises is reported at ``where``."""
    try:
        return action()
    except RrrdslError as error:
        raise _Located(error, where) from None


def _literal(token: Token, negative: bool = False) -> Union[int, float]:
    """A NUMBER token as an int (digits only) or a finite float."""
    text = str(token)
    value: Union[int, float] = float(text) if not text.isdigit() or len(text) > 308 else int(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"
        raise _Located(InvalidValueError(f"the number {shown} is too large", hint="numbers must be finite"), token)
    return -value if negative else value


def decode_string(token: Token) -> str:
    """A STRING token's value (JSON escapes)."""
    try:
        value = json.loads(str(token), strict=False)
        value.encode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise _Located(
            RrrdslSyntaxError(
                f"invalid string {token}: {getattr(exc, 'msg', 'not valid unicode')}",
                hint='strings are double-quoted and use JSON escapes: \\" \\\\ \\n \\t \\uXXXX',
            ),
            token,
        ) from None
    return value


def _fold(op: Token, left: float, right: float) -> float:
    """Arithmetic among numbers, checked: division by 0, no real value, non-finite result."""
    text = f"{format_number(left)} {op} {format_number(right)}"
    try:
        if op == "*":
            value = left * right
        elif op == "/":
            if right == 0:
                raise _Located(InvalidValueError("division by zero"), op)
            value = left / right
        elif op == "+":
            value = left + right
        elif op == "-":
            value = left - right
        else:
            value = math.pow(left, right)
    except OverflowError:
        value = math.inf
    except (ValueError, ZeroDivisionError):
        raise _Located(InvalidValueError(f"{text} has no real value"), op) from None
    if not math.isfinite(value):
        raise _Located(InvalidValueError(f"{text} is not finite", hint="numbers must stay finite"), op)
    return value


def _density(value: Binding, where: object) -> Expr:
    """A density, or a number as ``constant(value)``, with errors reported at ``where``."""
    return value if isinstance(value, Expr) else _at(where, lambda: ir.constant(value))  # type: ignore[return-value]


def _value(item: object) -> object:
    """A keyword value: literal tokens decoded, lowered values (lists, negatives) as they are."""
    if isinstance(item, Token):
        if item.type == "NUMBER":
            return _literal(item)
        if item.type == "STRING":
            return decode_string(item)
        return item.type == "TRUE"  # TRUE or FALSE
    return item


def _fold_chain(values: list, ops: list) -> float:
    result = values[0]
    for op, value in zip(ops, values[1:]):
        result = _fold(op, result, value)
    return result


class _Function(NamedTuple):
    """A leaf function with its parameters, read once from its signature."""

    build: Callable[..., Expr]
    named: tuple[str, ...]  # parameters that positional arguments fill, in order
    required: tuple[str, ...]
    open_keywords: bool  # takes **condition

    @classmethod
    def of(cls, build: Callable[..., Expr]) -> "_Function":
        params = list(inspect.signature(build).parameters.values())
        named = tuple(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)
        required = tuple(p.name for p in params if p.name in named and p.default is inspect.Parameter.empty)
        return cls(build, named, required, len(named) < len(params))


_FUNCTIONS = {name: _Function.of(build) for name, build in FUNCTIONS.items()}


class _Expressions:
    """Bottom-up lowering of expression and argument subtrees, without recursion.

    One method per tree node (named as the node); each gets the node and its children,
    tokens as they are and subtrees already lowered.
    """

    def __init__(self, env: Mapping[str, object]) -> None:
        self.env = env
        self.handlers: dict[str, Callable[[Tree, list], object]] = {
            name: getattr(self, name)
            for name in ("number", "name", "call", "neg", "pow", "product", "sum", "kwargs", "kwarg", "range", "negative", "array")
        }

    def lower(self, root: Union[Tree, Token]) -> object:
        """Lower ``root`` with an explicit stack (post-order)."""
        stack: list[tuple[Union[Tree, Token], bool]] = [(root, False)]
        values: list[object] = []
        handlers = self.handlers
        while stack:
            node, ready = stack.pop()
            if not isinstance(node, Tree):
                values.append(node)
            elif ready:
                count = len(node.children)
                children = values[len(values) - count :]
                del values[len(values) - count :]
                try:
                    values.append(handlers[node.data](node, children))
                except RrrdslError as error:
                    raise _Located(error, node.meta) from None
            else:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.children))
        return values[0]

    # --- atoms ----------------------------------------------------------------------
    def number(self, node: Tree, children: list) -> float:
        return float(_literal(children[0]))

    def name(self, node: Tree, children: list) -> Binding:
        token = children[0]
        key = str(token)
        value = self.env.get(key)
        if value is POISONED:
            raise Cascade(key)
        if value is not None:
            return value  # type: ignore[return-value]
        if key in FUNCTIONS:
            error = UnknownNameError(f"`{key}` is a function, not a value", hint=f'call it, as in {key}("...")')
        else:
            bound = [k for k, v in self.env.items() if v is not POISONED]
            hint = suggest(key, bound) or f'assign it first, as in `{key} = model("...")`'
            error = UnknownNameError(f"unknown name '{key}'", hint=hint)
        raise _Located(error, token)

    def call(self, node: Tree, children: list) -> Expr:
        token, args = children[0], children[1:]
        key = str(token)
        function = _FUNCTIONS.get(key)
        if function is None:
            hint = suggest(key, FUNCTIONS) or "the functions are " + ", ".join(FUNCTIONS)
            what = "is not a function" if key in self.env else "is an unknown function"
            raise _Located(UnknownNameError(f"'{key}' {what}", hint=hint), token)
        kwargs = _bind(key, function, args, token)
        return _at(token, lambda: function.build(**kwargs))  # type: ignore[return-value]

    # --- operators ------------------------------------------------------------------
    def neg(self, node: Tree, children: list) -> Binding:
        op, value = children
        return -value if not isinstance(value, Expr) else _at(op, lambda: -value)  # type: ignore[return-value]

    def pow(self, node: Tree, children: list) -> Binding:
        base, op, exponent = children
        if isinstance(base, Expr) or isinstance(exponent, Expr):
            return _at(op, lambda: base**exponent)  # type: ignore[return-value]
        return _fold(op, base, exponent)

    def product(self, node: Tree, children: list) -> Binding:
        """``a * b / c * ...``: folded among numbers, else ONE ``product(a, b, c ** -1, ...)``."""
        values, ops = children[::2], children[1::2]
        if not any(isinstance(v, Expr) for v in values):
            return _fold_chain(values, ops)
        factors = [_density(values[0], node.meta)]
        for op, value in zip(ops, values[1:]):
            if op.type == "SLASH" and value == 0 and not isinstance(value, Expr):
                raise _Located(InvalidValueError("division by zero"), op)
            factor = _density(value, op)
            factors.append(factor if op.type == "STAR" else _at(op, lambda f=factor: ir.power(f, -1.0)))
        return _at(node.meta, lambda: ir.product(*factors))  # type: ignore[return-value]

    def sum(self, node: Tree, children: list) -> Binding:
        """``x + y + ...``: folded among numbers, else ONE ``mixture([(x, 1), (y, 1), ...])``."""
        values, ops = children[::2], children[1::2]
        if not any(isinstance(v, Expr) for v in values):
            return _fold_chain(values, ops)
        terms = [_density(values[0], node.meta)]
        for op, value in zip(ops, values[1:]):
            if op.type == "MINUS":
                _at(op, lambda left=terms[-1], right=value: left - right)  # the IR rejects it
            terms.append(_density(value, op))
        return _at(node.meta, lambda: ir.mixture([(t, 1.0) for t in terms]))  # type: ignore[return-value]

    # --- arguments and values -------------------------------------------------------
    def kwargs(self, node: Tree, children: list) -> list:
        return children

    def kwarg(self, node: Tree, children: list) -> Keyword:
        return Keyword(children[0], _value(children[1]))

    def range(self, node: Tree, children: list) -> Range:
        return Range(*(_value(c) for c in children))  # type: ignore[arg-type]

    def negative(self, node: Tree, children: list) -> Union[int, float]:
        return _literal(children[1], negative=True)

    def array(self, node: Tree, children: list) -> tuple:
        return tuple(_value(c) for c in children)


def _bind(name: str, function: _Function, args: Iterable[object], token: Token) -> dict[str, object]:
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
                raise _Located(InvalidValueError(f"{name}(...) got {key}= twice"), arg.token)
            if key not in function.named and not function.open_keywords:
                hint = suggest(key, function.named) or f"{name} takes " + ", ".join(f"{n}=" for n in function.named)
                raise _Located(UnknownNameError(f"unknown keyword '{key}' for {name}(...)", hint=hint), arg.token)
            value = arg.value
            if isinstance(value, Range):
                if name != "crop":
                    raise _Located(InvalidValueError(f"a range start:stop is only valid in crop(...), not as {key}="), arg.token)
                value = (value.start, value.stop)
            bound[key] = value
        else:
            if seen_keyword:
                raise _Located(RrrdslSyntaxError(f"a positional argument follows a keyword in {name}(...)"), token)
            if position >= len(function.named):
                message = f"{name}(...) takes at most {len(function.named)} positional argument(s)"
                raise _Located(InvalidValueError(message, hint=_USAGE[name]), token)
            bound[function.named[position]] = _value(arg)
            position += 1
    missing = [p for p in function.required if p not in bound]
    if missing:
        raise _Located(InvalidValueError(f"{name}(...) needs {missing[0]}", hint=_USAGE[name]), token)
    return bound


_USAGE = {
    "model": 'as in model("digits", label=3)',
    "oracle": 'as in oracle("ring")',
    "classifier": 'as in classifier("digits", label=3)',
    "gmm": "as in gmm(means=[[0.5, 0], [-0.5, 0]], std=0.1, weights=[0.3, 0.7])",
    "box": "as in box(low=[-0.2, -1], high=[0.2, 1])",
    "crop": 'as in crop(model("digits"), rows=0:8, cols=4:12)',
}


class Lowerer:
    """Lowers statement trees in order, keeping the environment of bindings.

    Parameters
    ----------
    source
        The program text, for error positions.
    bindings
        Names bound before the first statement (the REPL passes its session).
    """

    def __init__(self, source: Source, bindings: Optional[Mapping[str, Binding]] = None) -> None:
        self.source = source
        self.env: dict[str, object] = dict(bindings or {})
        self._expressions = _Expressions(self.env)

    @property
    def bindings(self) -> dict[str, Binding]:
        """The names bound so far (not those whose assignment failed)."""
        return {k: v for k, v in self.env.items() if v is not POISONED}  # type: ignore[misc]

    def poison(self, name: str) -> None:
        """Mark ``name`` as failed: later uses are skipped instead of reported again."""
        self.env[name] = POISONED

    def statement(self, tree: Tree) -> Statement:
        """Lower one statement tree; raises :class:`RrrdslError` (positioned) or :class:`Cascade`."""
        return self._guard(tree, lambda: self._statement(tree))  # type: ignore[return-value]

    def expression(self, tree: Union[Tree, Token]) -> Binding:
        """Lower one expression tree to a graph or a number."""
        return self._guard(tree, lambda: self._expressions.lower(tree))  # type: ignore[return-value]

    # --- internals ------------------------------------------------------------------
    def _guard(self, tree: Union[Tree, Token], action: Callable[[], object]) -> object:
        line, column = _position(tree)
        try:
            return action()
        except _Located as located:
            raise self.source.locate(located.error, located.line, located.column) from None
        except RrrdslError as error:
            raise self.source.locate(error, line, column) from None
        except RecursionError:
            error = RrrdslSyntaxError("expression nested too deeply", hint="split it into named parts: `a = ...` then use `a`")
            raise self.source.locate(error, line, column) from None

    def _density(self, tree: Tree, statement: str) -> Expr:
        value = self._expressions.lower(tree)
        if not isinstance(value, Expr):
            line, column = _position(tree)
            error = InvalidValueError(f"{statement} needs a density, got the number {format_number(value)}")
            raise self.source.locate(error, line, column)
        return value

    def _statement(self, tree: Tree) -> Statement:
        line, column = _position(tree)
        kind, children = tree.data, tree.children
        if kind == "assign":
            token, value_tree = children
            name = str(token)
            if name in KEYWORDS:
                raise _Located(
                    RrrdslSyntaxError(f"cannot assign to `{name}`: it is a keyword", hint="choose another name"), token
                )
            value = self._expressions.lower(value_tree)
            self.env[name] = value
            return Assign(name, value, line, column)  # type: ignore[arg-type]
        target = _target_name(children[1])
        if kind == "show":
            return Show(self._expressions.lower(children[1]), target, line, column)  # type: ignore[arg-type]
        expr = self._density(children[1], kind)
        rest = children[2:]
        out = decode_string(rest.pop().children[1]) if rest and rest[-1].data == "output" else None
        if out == "":
            raise _Located(InvalidValueError("the output path is empty"), children[-1].children[1])
        if kind == "plot":
            return Plot(expr, target, out, line, column)
        sampler, options = None, ()
        if rest and rest[0].data == "using":
            using = rest.pop(0).children
            sampler = str(using[1])
            options = tuple(_options(self._expressions.lower(using[2]) if len(using) > 2 else [], "sampler option"))
        clauses = dict(_options([self._expressions.lower(c) for c in rest], "sample clause", SAMPLE_CLAUSES))
        return Sample(expr, target, sampler, options, clauses.get("n"), clauses.get("seed"), out, line, column)


def _options(
    keywords: Iterable[Keyword], what: str, allowed: Optional[Sequence[str]] = None
) -> list[tuple[str, object]]:
    """``key=value`` pairs in order: keys unique (and among ``allowed``), no ranges; for the
    ``sample`` clauses ``n`` must be a positive and ``seed`` a non-negative integer."""
    pairs: dict[str, object] = {}
    for keyword in keywords:
        key, value = str(keyword.token), keyword.value
        if allowed is not None and key not in allowed:
            hint = suggest(key, allowed) or "sampler options go in `using SAMPLER(key=value)`"
            raise _Located(UnknownNameError(f"unknown {what} '{key}' (expected n= or seed=)", hint=hint), keyword.token)
        if key in pairs:
            raise _Located(InvalidValueError(f"{what} {key}= is given twice"), keyword.token)
        if isinstance(value, Range):
            raise _Located(InvalidValueError(f"a range start:stop is only valid in crop(...), not as {key}="), keyword.token)
        if allowed is not None:
            least = 1 if key == "n" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                kind = "a positive" if least else "a non-negative"
                raise _Located(InvalidValueError(f"{key}= must be {kind} integer, got {value!r}"), keyword.token)
        pairs[key] = value
    return list(pairs.items())


def _target_name(tree: Union[Tree, Token]) -> Optional[str]:
    """The identifier when an expression is a bare name."""
    return str(tree.children[0]) if isinstance(tree, Tree) and tree.data == "name" else None


def _position(node: Union[Tree, Token, object]) -> tuple[Optional[int], Optional[int]]:
    if isinstance(node, Token):
        return node.line, node.column
    if isinstance(node, Tree) and not node.meta.empty:
        return node.meta.line, node.meta.column
    return None, None
