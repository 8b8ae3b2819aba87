"""The nodes of the energy graph: immutable, hashable, and able to walk themselves.

=============  ==========================================  ==============================
Node           meaning                                     text
=============  ==========================================  ==============================
``Leaf``       a model's ``log q_t(x)``                     ``model("ring")``, ``gmm(...)``
``Product``    ``Σ log term``                               ``a * b``, ``a / b``
``Power``      ``w · log term`` (any real ``w != 0, 1``)     ``a ** 2``, ``a ** -0.5``
``Mixture``    ``logsumexp_j(log π_j + log term_j)``        ``0.3 * a + 0.7 * b``
``View``       a term evaluated on a crop of ``x``          ``crop(a, cols=0:8)``
``Unit``       the constant density 1 (empty product)       ``1``
``Weighted``   ``c · term``: a constant factor ``c > 0``    ``0.3 * a``
=============  ==========================================  ==============================

Every node exposes ``children`` (its sub-graphs, ``()`` for leaves) and ``payload`` (what it
holds besides them), so generic walks need no per-class code: :func:`postorder` lists the
distinct nodes of a graph children-first without recursion. A node's hash is computed once,
when it is built, from its payload and its children's (already computed) hashes, and ``==``
walks both graphs with an explicit stack, so hashing and comparing are linear in the size of
the graph and never hit the recursion limit, however deep it is.

Python operators on nodes build canonical graphs through :mod:`rrrdsl.lang.algebra`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional, Union

from ..errors import InvalidValueError

#: a leaf parameter value: string, int, float, bool, or a (nested) tuple of numbers
Value = Union[str, int, float, bool, tuple]

SIGNIFICANT_DIGITS = 12


def canonical_float(value: float) -> float:
    """Snap ``value`` to :data:`SIGNIFICANT_DIGITS` significant digits when it lies within
    floating-point noise (relative 1e-14) of that rounding; otherwise keep it (idempotent)."""
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return rounded if abs(rounded - value) <= 1e-14 * abs(value) else value


class Expr:
    """Base class of every graph node; Python operators build canonical graphs."""

    __slots__ = ()

    # --- structure ---------------------------------------------------------------------
    @property
    def children(self) -> tuple["Expr", ...]:
        """The node's sub-graphs in order (``()`` for a leaf)."""
        return ()

    @property
    def payload(self) -> tuple:
        """What the node holds besides its children (compared and hashed with them)."""
        return ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((type(self), self.payload, self.children)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        pending: list[tuple[Expr, Expr]] = [(self, other)]  # type: ignore[list-item]
        compared: set[tuple[int, int]] = set()
        while pending:
            a, b = pending.pop()
            if a is b or (id(a), id(b)) in compared:
                continue
            compared.add((id(a), id(b)))
            if type(a) is not type(b):
                if a != b:  # a Weighted inside a hand-built graph
                    return False
            elif hash(a) != hash(b) or a.payload != b.payload or len(a.children) != len(b.children):
                return False
            else:
                pending.extend(zip(a.children, b.children))
        return True

    def __reduce__(self) -> tuple:
        # rebuild through the constructor: the cached hash is only valid in this process
        return type(self), tuple(getattr(self, f.name) for f in fields(self))  # type: ignore[arg-type]

    # --- algebra ---------------------------------------------------------------------
    def __mul__(self, other: object) -> "Expr":
        from .algebra import as_expr, product

        return product(self, as_expr(other, "*"))

    def __rmul__(self, other: object) -> "Expr":
        from .algebra import as_expr, product

        return product(as_expr(other, "*"), self)

    def __truediv__(self, other: object) -> "Expr":
        from .algebra import as_expr, power, product

        return product(self, power(as_expr(other, "/"), -1.0))

    def __rtruediv__(self, other: object) -> "Expr":
        from .algebra import as_expr, power, product

        return product(as_expr(other, "/"), power(self, -1.0))

    def __pow__(self, exponent: object) -> "Expr":
        from .algebra import power

        if isinstance(exponent, Expr):
            raise InvalidValueError(
                "an exponent must be a number, not a density",
                hint="write `a ** 2` or `a ** -0.5`; to multiply densities use `*`",
            )
        return power(self, exponent)  # type: ignore[arg-type]

    def __rpow__(self, base: object) -> "Expr":
        raise InvalidValueError("a density cannot be an exponent", hint="write `a ** 2`, with a number after `**`")

    def __add__(self, other: object) -> "Expr":
        from .algebra import as_expr, mixture

        return mixture([(self, 1.0), (as_expr(other, "+"), 1.0)])

    def __radd__(self, other: object) -> "Expr":
        from .algebra import as_expr, mixture

        return mixture([(as_expr(other, "+"), 1.0), (self, 1.0)])

    def __neg__(self) -> "Expr":
        raise InvalidValueError(
            "unary minus applies to numbers, not densities",
            hint="to negate a model raise it to a negative power: `a ** -1` or `b / a`",
        )

    def __sub__(self, other: object) -> "Expr":
        raise InvalidValueError(
            "densities cannot be subtracted",
            hint="use `/` for negation (`a / b ** 0.5`) or `+` for a mixture",
        )

    __rsub__ = __sub__

    def __bool__(self) -> bool:
        return True

    # --- views ------------------------------------------------------------------------
    def __str__(self) -> str:
        from .printer import to_text

        return to_text(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython shows a graph as its canonical text (``%rrr EXPR``, a cell's last value)."""
        printer.text(str(self))

    def _repr_svg_(self) -> Optional[str]:
        """Jupyter draws a graph with Graphviz when ``dot`` is installed (else None: its text)."""
        from .printer import to_svg

        return to_svg(self)

    def to_dot(self) -> str:
        """Graphviz ``dot`` text of this graph."""
        from .printer import to_dot

        return to_dot(self)

    @property
    def base(self) -> "Expr":
        """The node without its constant factor (itself, except for :class:`Weighted`)."""
        return self

    @property
    def constant(self) -> float:
        """The constant factor ``c`` of ``c · term`` (1 except for :class:`Weighted`)."""
        return 1.0


@dataclass(frozen=True, eq=False, repr=False)
class Leaf(Expr):
    """A model's log-density. ``kind`` is ``model``, ``oracle``, ``gmm``, ``box`` or
    ``classifier``; ``name`` the positional name (None for ``gmm``/``box``); ``params`` the
    keyword arguments sorted by key, lists as tuples."""

    kind: str
    name: Optional[str]
    params: tuple[tuple[str, Value], ...] = ()

    @property
    def payload(self) -> tuple:
        return self.kind, self.name, self.params

    def param(self, key: str, default: Value = None) -> Value:
        return dict(self.params).get(key, default)


@dataclass(frozen=True, eq=False, repr=False)
class Unit(Expr):
    """The constant density 1: the empty product, the identity of ``*``."""


@dataclass(frozen=True, eq=False, repr=False)
class Product(Expr):
    """``Σ_i log terms[i]``; at least two factors, none a product, a unit or weighted."""

    terms: tuple[Expr, ...]

    @property
    def children(self) -> tuple[Expr, ...]:
        return self.terms


@dataclass(frozen=True, eq=False, repr=False)
class Power(Expr):
    """``exponent · log term``; ``exponent`` finite, not 0 or 1; ``term`` not a product or power."""

    term: Expr
    exponent: float

    @property
    def children(self) -> tuple[Expr, ...]:
        return (self.term,)

    @property
    def payload(self) -> tuple:
        return (self.exponent,)


@dataclass(frozen=True, eq=False, repr=False)
class Mixture(Expr):
    """``logsumexp_j(log weights[j] + log terms[j])``; weights positive, summing to 1."""

    terms: tuple[Expr, ...]
    weights: tuple[float, ...]

    @property
    def children(self) -> tuple[Expr, ...]:
        return self.terms

    @property
    def payload(self) -> tuple:
        return self.weights


@dataclass(frozen=True)
class Region:
    """A crop of the canvas: ``rows``/``cols`` of an image, or ``dims`` of a flat vector.

    Each is a half-open range ``(start, stop)`` or None (the whole axis).
    """

    rows: Optional[tuple[int, int]] = None
    cols: Optional[tuple[int, int]] = None
    dims: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        for axis in ("rows", "cols", "dims"):
            r = getattr(self, axis)
            if r is None:
                continue
            if isinstance(r, slice):
                if r.step not in (None, 1):
                    raise InvalidValueError(f"crop {axis} cannot have a step")
                r = (r.start if r.start is not None else 0, r.stop)
            if not isinstance(r, tuple) or len(r) != 2 or not all(_is_index(v) for v in r):
                raise InvalidValueError(f"crop {axis} must be a range start:stop of integers, got {r!r}")
            start, stop = int(r[0]), int(r[1])
            if start < 0:
                raise InvalidValueError(f"crop {axis}={start}:{stop} starts before 0")
            if stop <= start:
                what = "empty" if stop == start else "reversed"
                raise InvalidValueError(f"crop {axis}={start}:{stop} is {what}", hint="a range start:stop needs start < stop")
            object.__setattr__(self, axis, (start, stop))
        if self.dims is not None and (self.rows is not None or self.cols is not None):
            raise InvalidValueError("a crop takes either rows/cols (images) or dims (vectors), not both")
        if self.rows is None and self.cols is None and self.dims is None:
            raise InvalidValueError("a crop needs rows=, cols= or dims=")


def _is_index(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False, repr=False)
class View(Expr):
    """``term`` evaluated on the crop ``region`` of ``x``; gradients flow back to the canvas."""

    term: Expr
    region: Region

    @property
    def children(self) -> tuple[Expr, ...]:
        return (self.term,)

    @property
    def payload(self) -> tuple:
        return (self.region,)


class Weighted(Expr):
    """``constant · term`` with ``constant > 0``: equal (and hashing equal) to ``term``.

    Only ever the root of a graph; :func:`~rrrdsl.lang.algebra.product`, ``power``,
    ``mixture`` and ``view`` absorb it, and ``+`` reads it as a mixture weight.
    """

    __slots__ = ("term", "weight")

    def __init__(self, term: Expr, weight: float) -> None:
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "weight", weight)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Weighted is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Weighted):
            return self.term == other.term
        return self.term == other

    def __hash__(self) -> int:
        return hash(self.term)

    def __reduce__(self) -> tuple:
        return Weighted, (self.term, self.weight)

    @property
    def children(self) -> tuple[Expr, ...]:
        return (self.term,)

    @property
    def base(self) -> Expr:
        return self.term

    @property
    def constant(self) -> float:
        return self.weight


def postorder(root: Expr) -> Iterator[Expr]:
    """The distinct nodes of ``root`` (by identity), every node after its children.

    Iterative (an explicit stack), so a graph of any depth is walked without recursion; a
    shared sub-graph is yielded once.
    """
    seen: set[int] = set()
    stack: list[tuple[Expr, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            yield node
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.children))
