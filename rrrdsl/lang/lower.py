"""Lowering: lark parse trees of ``grammars/rrr.lark`` -> energy graphs and statements.

:class:`Lowering` is a lark ``Transformer_NonRecursive`` with one method per rule or alias of
the grammar, statements included: it walks the tree bottom-up with an explicit stack, so
deep nesting cannot overflow the Python stack. Every method receives the node's ``meta``
(its position) and its children, tokens as they are and sub-trees already lowered; one
decorator, :func:`_at_node`, places any error a method raises at that node, unless the
method has already placed it more precisely (at an operator, operand or argument token,
:class:`~rrrdsl.lang.arguments.Located`).

Every graph is built through the smart constructors (``product``, ``power``, ``mixture``,
``constant`` and the leaf functions), so text and Python build identical graphs. A chain
``a * b / c * d`` lowers with one ``product(a, b, power(c, -1), d)`` and a chain
``x + y + z`` with one ``mixture``, so long chains lower in linear time. Arithmetic among
numbers is folded here; a number where a density is needed becomes ``constant(...)``.

Names are looked up in the bindings and in the fixed table
:data:`~rrrdsl.lang.functions.FUNCTIONS`; nothing is ever evaluated as Python.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Callable, Mapping, NamedTuple, Optional, Sequence, Union

from lark import Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import VisitError

from ..errors import InvalidValueError, RrrdslError, RrrdslSyntaxError, UnknownNameError, suggest
from . import algebra, grammar
from .grammar import Span
from .arguments import SAMPLE_CLAUSES, SIGNATURES, Keyword, Located, Range, at, bind, decode_string, keyword_value
from .arguments import literal, options
from .functions import FUNCTIONS
from .nodes import Expr, Leaf
from .printer import format_number
from .program import LOAD_OPTIONS, Assign, Binding, Load, Places, Plot, Sample, Show, Statement


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

    def span(self, meta: Span) -> Optional[str]:
        """The text a one-line node covers (None for a node across lines)."""
        if meta.empty or meta.line != meta.end_line or not 0 < meta.line <= len(self.lines):
            return None
        return self.lines[meta.line - 1][meta.column - 1 : meta.end_column - 1]


@functools.lru_cache(maxsize=None)
def reserved() -> frozenset[str]:
    """Names that cannot be assigned to: the grammar's keywords and the leaf functions."""
    return frozenset({*grammar.keywords().values(), *FUNCTIONS})


class Cascade(Exception):
    """A statement refers to a name whose own statement failed: skip it, report nothing."""


#: marks a name whose assignment failed, so its uses do not cascade into more errors
POISONED = object()


class Subject(NamedTuple):
    """The expression a statement is about, where it starts, and its name when it is one."""

    value: Binding
    name: Optional[str]
    line: int
    column: int


class Using(NamedTuple):
    """``using SAMPLER(key=value, ...)``, as written (checked by ``sample``)."""

    sampler: Token
    options: list[Keyword]


class Output(NamedTuple):
    """``-> "path"``: the STRING token (decoded and checked by the statement)."""

    path: Token


def _fold(op: Token, left: float, right: float) -> float:
    """Arithmetic among numbers, checked: division by 0, no real value, non-finite result."""
    text = f"{format_number(left)} {op} {format_number(right)}"
    try:
        match op.type:
            case "STAR":
                value = left * right
            case "SLASH":
                if right == 0:
                    raise Located(InvalidValueError("division by zero"), op)
                value = left / right
            case "PLUS":
                value = left + right
            case "MINUS":
                value = left - right
            case _:
                value = math.pow(left, right)
    except OverflowError:
        value = math.inf
    except (ValueError, ZeroDivisionError):
        raise Located(InvalidValueError(f"{text} has no real value"), op) from None
    if not math.isfinite(value):
        raise Located(InvalidValueError(f"{text} is not finite", hint="numbers must stay finite"), op)
    return value


def _fold_chain(values: list, ops: list) -> float:
    result = values[0]
    for op, value in zip(ops, values[1:]):
        result = _fold(op, result, value)
    return result


def _density(value: Binding, where: object) -> Expr:
    """A density, or a number as ``constant(value)``, with errors reported at ``where``."""
    return value if isinstance(value, Expr) else at(where, lambda: algebra.constant(value))  # type: ignore[return-value]


def _at_node(rule: Callable[[Span, list], object], data: str, children: list, meta: Span) -> object:
    """The one place where a rule's errors get the node's position (lark's ``v_args`` wrapper)."""
    try:
        return rule(meta, children)
    except RrrdslError as error:
        raise Located(error, meta) from None


@v_args(wrapper=_at_node)
class Lowering(Transformer_NonRecursive):
    """One method per rule or alias of ``grammars/rrr.lark``: ``(meta, children) -> value``.

    Expressions lower to a graph (:class:`~rrrdsl.lang.nodes.Expr`) or a number; statements
    to :mod:`~rrrdsl.lang.program` statements. ``env`` holds the bindings; an assignment
    adds to it.
    """

    def __init__(self, source: Source, env: dict[str, object]) -> None:
        super().__init__(visit_tokens=False)  # tokens reach the rules as they are
        self.source = source
        self.env = env
        #: where the keyword arguments of each leaf are, at its first call in the source
        self.arguments: dict[Leaf, Places] = {}
        # lark's v_args wrapper binds itself anew on every attribute access; bind each rule once
        for name, member in vars(Lowering).items():
            if not name.startswith("_") and callable(member):
                setattr(self, name, getattr(self, name))

    # --- atoms ----------------------------------------------------------------------
    def number(self, meta: Span, children: list) -> float:
        return float(literal(children[0]))

    def name(self, meta: Span, children: list) -> Binding:
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
        raise Located(error, token)

    def call(self, meta: Span, children: list) -> Expr:
        token, args = children[0], children[1:]
        key = str(token)
        function = SIGNATURES.get(key)
        if function is None:
            hint = suggest(key, FUNCTIONS) or "the functions are " + ", ".join(FUNCTIONS)
            what = "is not a function" if key in self.env else "is an unknown function"
            raise Located(UnknownNameError(f"'{key}' {what}", hint=hint), token)
        kwargs = bind(key, function, args, token)
        built = at(token, lambda: function.build(**kwargs))
        if isinstance(built, Leaf):
            self.arguments.setdefault(built, tuple((str(a.token), a.token.line, a.token.column) for a in args if isinstance(a, Keyword)))
        return built  # type: ignore[return-value]

    # --- operators ------------------------------------------------------------------
    def neg(self, meta: Span, children: list) -> Binding:
        op, value = children
        return -value if not isinstance(value, Expr) else at(op, lambda: -value)  # type: ignore[return-value]

    def pow(self, meta: Span, children: list) -> Binding:
        base, op, exponent = children
        if isinstance(base, Expr) or isinstance(exponent, Expr):
            return at(op, lambda: base**exponent)  # type: ignore[return-value]
        return _fold(op, base, exponent)

    def product(self, meta: Span, children: list) -> Binding:
        """``a * b / c * ...``: folded among numbers, else ONE ``product(a, b, c ** -1, ...)``."""
        values, ops = children[::2], children[1::2]
        if not any(isinstance(v, Expr) for v in values):
            return _fold_chain(values, ops)
        factors = [_density(values[0], meta)]
        for op, value in zip(ops, values[1:]):
            if op.type == "SLASH" and value == 0 and not isinstance(value, Expr):
                raise Located(InvalidValueError("division by zero"), op)
            factor = _density(value, op)
            factors.append(factor if op.type == "STAR" else at(op, lambda f=factor: algebra.power(f, -1.0)))
        return algebra.product(*factors)

    def sum(self, meta: Span, children: list) -> Binding:
        """``x + y + ...``: folded among numbers, else ONE ``mixture([(x, 1), (y, 1), ...])``."""
        values, ops = children[::2], children[1::2]
        if not any(isinstance(v, Expr) for v in values):
            return _fold_chain(values, ops)
        terms = [_density(values[0], meta)]
        for op, value in zip(ops, values[1:]):
            if op.type == "MINUS":
                at(op, lambda left=terms[-1], right=value: left - right)  # the IR rejects it
            terms.append(_density(value, op))
        return algebra.mixture([(t, 1.0) for t in terms])

    # --- arguments and values -------------------------------------------------------
    def kwargs(self, meta: Span, children: list) -> list:
        return children

    def kwarg(self, meta: Span, children: list) -> Keyword:
        return Keyword(children[0], keyword_value(children[1]))

    def range(self, meta: Span, children: list) -> Range:
        return Range(*(keyword_value(c) for c in children))  # type: ignore[arg-type]

    def negative(self, meta: Span, children: list) -> Union[int, float]:
        return literal(children[1], negative=True)

    def array(self, meta: Span, children: list) -> tuple:
        return tuple(keyword_value(c) for c in children)

    # --- statements -----------------------------------------------------------------
    def subject(self, meta: Span, children: list) -> Subject:
        """The expression of ``sample``/``plot``/``show``; named when its text is a name."""
        text = self.source.span(meta)
        name = text if text is not None and re.fullmatch(grammar.pattern("NAME"), text) else None
        return Subject(children[0], name, meta.line, meta.column)

    def assign(self, meta: Span, children: list) -> Assign:
        token, value = children
        name = str(token)
        if name in reserved():
            error = RrrdslSyntaxError(f"cannot assign to `{name}`: it is a keyword", hint="choose another name")
            raise Located(error, token)
        self.env[name] = value
        return Assign(name, value, meta.line, meta.column)

    def show(self, meta: Span, children: list) -> Show:
        subject = children[1]
        return Show(subject.value, subject.name, meta.line, meta.column)

    def plot(self, meta: Span, children: list) -> Plot:
        subject = children[1]
        expr = _density_of(subject, "plot")
        rest = children[2:]
        places = _places(rest)
        return Plot(expr, subject.name, _output(rest), meta.line, meta.column, places)

    def sample(self, meta: Span, children: list) -> Sample:
        subject, rest = children[1], children[2:]
        expr = _density_of(subject, "sample")
        places = _places(rest)
        out = _output(rest)
        sampler, chosen = None, ()
        if rest and isinstance(rest[0], Using):
            sampler, chosen = str(rest[0].sampler), tuple(options(rest.pop(0).options, "sampler option"))
        clauses = dict(options(rest, "sample clause", SAMPLE_CLAUSES))
        n, seed = clauses.get("n"), clauses.get("seed")
        return Sample(expr, subject.name, sampler, chosen, n, seed, out, meta.line, meta.column, places)

    def load(self, meta: Span, children: list) -> Load:
        path, name, keywords = children[1], children[3], children[4:]
        text = decode_string(name)
        if not text:
            raise Located(InvalidValueError("the model name is empty", hint='load "folder" as "name"'), name)
        places = (("path", path.line, path.column), ("name", name.line, name.column), *_places(keywords))
        chosen = tuple(options(keywords, "load option", LOAD_OPTIONS))
        return Load(decode_string(path), text, chosen, meta.line, meta.column, places)

    def using(self, meta: Span, children: list) -> Using:
        return Using(children[1], children[2] if len(children) > 2 else [])

    def output(self, meta: Span, children: list) -> Output:
        return Output(children[1])


def _density_of(subject: Subject, statement: str) -> Expr:
    """The subject of ``sample``/``plot`` as a density: a number there is an error at it."""
    if isinstance(subject.value, Expr):
        return subject.value
    error = InvalidValueError(f"{statement} needs a density, got the number {format_number(subject.value)}")
    raise Located(error, subject)


def _places(rest: list) -> Places:
    """Where the output path, the clauses and the sampler options of a statement are."""
    keywords = [*(rest[0].options if rest and isinstance(rest[0], Using) else ()), *rest]
    tokens = [(str(k.token), k.token) for k in keywords if isinstance(k, Keyword)]
    tokens += [("out", item.path) for item in rest if isinstance(item, Output)]
    return tuple((name, token.line, token.column) for name, token in tokens)


def _output(rest: list) -> Optional[str]:
    """The statement's ``-> "path"`` (removed from ``rest``), or None."""
    if not rest or not isinstance(rest[-1], Output):
        return None
    token = rest.pop().path
    out = decode_string(token)
    if out == "":
        raise Located(InvalidValueError("the output path is empty"), token)
    return out


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
        self._lowering = Lowering(source, self.env)

    @property
    def arguments(self) -> dict[Leaf, Places]:
        """Where the keyword arguments of each leaf lowered so far are (its first call)."""
        return self._lowering.arguments

    @property
    def bindings(self) -> dict[str, Binding]:
        """The names bound so far (not those whose assignment failed)."""
        return {k: v for k, v in self.env.items() if v is not POISONED}  # type: ignore[misc]

    def poison(self, name: str) -> None:
        """Mark ``name`` as failed: later uses are skipped instead of reported again."""
        self.env[name] = POISONED

    def lower(self, tree: Tree) -> Union[Statement, Subject]:
        """Lower one tree: a statement, or an expression (its value, a graph or a number).

        Raises :class:`RrrdslError` (positioned) or :class:`Cascade`.
        """
        try:
            return self._lowering.transform(tree)
        except VisitError as failure:
            error = failure.orig_exc
            if isinstance(error, Located):
                raise self.source.locate(error.error, error.line, error.column) from None
            raise error from None
