"""The energy graph: immutable, hashable nodes in log-density algebra.

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

Every node is built through the smart constructors :func:`product`, :func:`power`,
:func:`mixture` and :func:`view`, which keep the graph in **canonical form**: products are
flat with repeated factors merged (``a * a ** 2`` → ``a ** 3``) in order of first
appearance; powers fold (``(a ** u) ** v`` → ``a ** (u v)``) and distribute over products;
``** 0`` drops out; mixtures are flat with repeated components merged and weights normalised
to sum 1; constant factors float to the top as a :class:`Weighted` node.

A constant factor does not change a density, so ``Weighted`` compares and hashes equal to the
term it scales: ``0.3 * a == a``. The factor matters only as a mixture weight: ``+`` adds
densities, so ``0.3 * a + 0.7 * b`` mixes with weights 0.3 / 0.7, ``a + b + c`` is a uniform
mixture however it is bracketed, and ``2 * (a + b) + c`` gives ``c`` half the mass.

Python operators on these nodes build exactly the graph that the ``.rrr`` text builds.
Exponents and weights that come out of arithmetic (merged exponents, normalised weights)
are snapped to 12 significant digits when they lie within rounding noise of that value
(``0.1 + 0.2`` → ``0.3``), so that equal expressions are equal graphs; printed numbers are
exact (``repr``), so printed text parses back to the same graph.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

from ..errors import InvalidValueError

#: a leaf parameter value: string, int, float, bool, or a (nested) tuple of numbers
Value = Union[str, int, float, bool, tuple]

SIGNIFICANT_DIGITS = 12


def canonical_float(value: float) -> float:
    """Snap ``value`` to :data:`SIGNIFICANT_DIGITS` significant digits when it lies within
    floating-point noise (relative 1e-14) of that rounding; otherwise keep it (idempotent)."""
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return rounded if abs(rounded - value) <= 1e-14 * abs(value) else value


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Expr:
    """Base class of every graph node; Python operators build canonical graphs."""

    __slots__ = ()

    # --- algebra ---------------------------------------------------------------------
    def __mul__(self, other: object) -> "Expr":
        return product(self, _as_expr(other, "*"))

    def __rmul__(self, other: object) -> "Expr":
        return product(_as_expr(other, "*"), self)

    def __truediv__(self, other: object) -> "Expr":
        return product(self, power(_as_expr(other, "/"), -1.0))

    def __rtruediv__(self, other: object) -> "Expr":
        return product(_as_expr(other, "/"), power(self, -1.0))

    def __pow__(self, exponent: object) -> "Expr":
        if isinstance(exponent, Expr):
            raise InvalidValueError(
                "an exponent must be a number, not a density",
                hint="write `a ** 2` or `a ** -0.5`; to multiply densities use `*`",
            )
        return power(self, exponent)  # type: ignore[arg-type]

    def __rpow__(self, base: object) -> "Expr":
        raise InvalidValueError("a density cannot be an exponent", hint="write `a ** 2`, with a number after `**`")

    def __add__(self, other: object) -> "Expr":
        return _add(self, _as_expr(other, "+"))

    def __radd__(self, other: object) -> "Expr":
        return _add(_as_expr(other, "+"), self)

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


@dataclass(frozen=True, repr=False)
class Leaf(Expr):
    """A model's log-density. ``kind`` is ``model``, ``oracle``, ``gmm``, ``box`` or
    ``classifier``; ``name`` the positional name (None for ``gmm``/``box``); ``params`` the
    keyword arguments sorted by key, lists as tuples."""

    kind: str
    name: Optional[str]
    params: tuple[tuple[str, Value], ...] = ()

    def param(self, key: str, default: Value = None) -> Value:
        return dict(self.params).get(key, default)


@dataclass(frozen=True, repr=False)
class Unit(Expr):
    """The constant density 1: the empty product, the identity of ``*``."""


@dataclass(frozen=True, repr=False)
class Product(Expr):
    """``Σ_i log terms[i]``; at least two factors, none a product, a unit or weighted."""

    terms: tuple[Expr, ...]


@dataclass(frozen=True, repr=False)
class Power(Expr):
    """``exponent · log term``; ``exponent`` finite, not 0 or 1; ``term`` not a product or power."""

    term: Expr
    exponent: float


@dataclass(frozen=True, repr=False)
class Mixture(Expr):
    """``logsumexp_j(log weights[j] + log terms[j])``; weights positive, summing to 1."""

    terms: tuple[Expr, ...]
    weights: tuple[float, ...]


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
            if (
                not isinstance(r, tuple)
                or len(r) != 2
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in r)
            ):
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


@dataclass(frozen=True, repr=False)
class View(Expr):
    """``term`` evaluated on the crop ``region`` of ``x``; gradients flow back to the canvas."""

    term: Expr
    region: Region


class Weighted(Expr):
    """``constant · term`` with ``constant > 0``: equal (and hashing equal) to ``term``.

    Only ever the root of a graph; :func:`product`, :func:`power`, :func:`mixture` and
    :func:`view` absorb it, and ``+`` reads it as a mixture weight.
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

    @property
    def base(self) -> Expr:
        return self.term

    @property
    def constant(self) -> float:
        return self.weight


Node = Union[Leaf, Unit, Product, Power, Mixture, View]


# --- smart constructors ---------------------------------------------------------------


def number(value: object, what: str = "a number") -> float:
    """A finite real as a canonical float, or :class:`InvalidValueError`."""
    if not _is_number(value):
        raise InvalidValueError(f"{what} must be a number, got {_describe(value)}")
    v = float(value)  # type: ignore[arg-type]
    if not math.isfinite(v):
        raise InvalidValueError(f"{what} must be finite, got {v}")
    return v


def constant(value: object) -> Expr:
    """The number ``value`` as a density: ``value · 1`` (must be positive and finite)."""
    c = number(value, "a constant factor")
    if c <= 0:
        raise InvalidValueError(f"a weight or constant factor must be positive, got {c:g}")
    return Weighted(Unit(), c) if c != 1.0 else Unit()


def _factors(expr: Expr) -> tuple[float, list[tuple[Expr, float]]]:
    """Split a canonical node into its constant and its (base, exponent) factors."""
    c = expr.constant
    node = expr.base
    if isinstance(node, Unit):
        return c, []
    if isinstance(node, Product):
        return c, [f for t in node.terms for f in _factors(t)[1]]
    if isinstance(node, Power):
        return c, [(node.term, node.exponent)]
    return c, [(node, 1.0)]


def _build(c: float, factors: Iterable[tuple[Expr, float]]) -> Expr:
    merged: dict[Expr, float] = {}
    for base, exponent in factors:
        merged[base] = canonical_float(merged.get(base, 0.0) + exponent)
    terms = [base if w == 1.0 else Power(base, w) for base, w in merged.items() if w != 0.0]
    node: Expr = Unit() if not terms else terms[0] if len(terms) == 1 else Product(tuple(terms))
    c = canonical_float(c)
    if not (math.isfinite(c) and c > 0):
        raise InvalidValueError(f"a constant factor must be positive and finite, got {c:g}")
    return node if c == 1.0 else Weighted(node, c)


def product(*terms: Expr) -> Expr:
    """Canonical product of densities (``Σ log``)."""
    c = 1.0
    factors: list[tuple[Expr, float]] = []
    for term in terms:
        tc, tf = _factors(term)
        c *= tc
        factors.extend(tf)
    return _build(c, factors)


def power(term: Expr, exponent: float) -> Expr:
    """Canonical ``term ** exponent`` (any finite real exponent)."""
    w = number(exponent, "an exponent")
    c, factors = _factors(term)
    return _build(c**w, [(base, e * w) for base, e in factors])


def mixture(components: Sequence[tuple[Expr, float]]) -> Expr:
    """Canonical mixture ``Σ_j w_j · term_j`` of (term, weight) pairs.

    Components that are mixtures are flattened (their weights scaled), repeated components
    merged, and weights normalised; the total mass is kept as the constant factor.
    """
    merged: dict[Expr, float] = {}
    for term, weight in components:
        w = number(weight, "a mixture weight") * term.constant
        if not w > 0:
            raise InvalidValueError(f"a mixture weight must be positive, got {w:g}")
        node = term.base
        if isinstance(node, Unit):
            raise InvalidValueError("a constant cannot be a mixture component", hint="each term of `+` must be a density")
        parts = zip(node.terms, node.weights) if isinstance(node, Mixture) else [(node, 1.0)]
        for part, pw in parts:
            merged[part] = merged.get(part, 0.0) + w * pw
    total = math.fsum(merged.values())
    if not math.isfinite(total):
        raise InvalidValueError("mixture weights must be finite")
    if len(merged) == 1:
        (only,) = merged
        return _build(total, [(only, 1.0)])
    # weights that already sum to 1 (as printed canonical text does) are kept exactly
    scale = 1.0 if abs(total - 1.0) <= 1e-12 else total
    weights = [canonical_float(w / scale) for w in merged.values()]
    return _build(total, [(Mixture(tuple(merged), tuple(weights)), 1.0)])


def _add(left: Expr, right: Expr) -> Expr:
    return mixture([(left, 1.0), (right, 1.0)])


def view(term: Expr, region: Region) -> Expr:
    """Canonical crop: the constant factor floats out; cropping a constant is a constant."""
    if not isinstance(region, Region):
        raise InvalidValueError("a crop needs a Region")
    node = term.base
    if isinstance(node, Unit):
        return term
    return _build(term.constant, [(View(node, region), 1.0)])


def simplify(expr: Expr) -> Expr:
    """Rebuild ``expr`` bottom-up through the smart constructors (idempotent).

    Nodes made by the constructors are already canonical; this normalises graphs assembled
    by hand from the dataclasses.
    """
    c = expr.constant
    node = expr.base
    if isinstance(node, (Leaf, Unit)):
        out: Expr = node
    elif isinstance(node, Product):
        out = product(*(simplify(t) for t in node.terms))
    elif isinstance(node, Power):
        out = power(simplify(node.term), node.exponent)
    elif isinstance(node, Mixture):
        out = mixture([(simplify(t), w) for t, w in zip(node.terms, node.weights)])
    elif isinstance(node, View):
        out = view(simplify(node.term), node.region)
    else:
        raise InvalidValueError(f"not a graph node: {_describe(node)}")
    return product(constant(c), out) if c != 1.0 else out


def leaves(expr: Expr) -> list[Leaf]:
    """Distinct leaves of ``expr`` in order of first appearance."""
    seen: dict[Leaf, None] = {}

    def walk(node: Expr) -> None:
        node = node.base
        if isinstance(node, Leaf):
            seen.setdefault(node, None)
        elif isinstance(node, (Product, Mixture)):
            for t in node.terms:
                walk(t)
        elif isinstance(node, (Power, View)):
            walk(node.term)

    walk(expr)
    return list(seen)


# --- leaf constructors (the Python embedding) -------------------------------------------


def _as_expr(value: object, op: str) -> Expr:
    if isinstance(value, Expr):
        return value
    if _is_number(value):
        return constant(value)
    raise InvalidValueError(f"cannot combine a density with {_describe(value)} using `{op}`")


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, Expr):
        return f"the density {value}"
    return f"{type(value).__name__} {value!r}"


def _param_value(key: str, value: object) -> Value:
    if isinstance(value, (str, bool)) or _is_number(value):
        if _is_number(value) and not isinstance(value, numbers.Integral):
            return number(value, f"{key}=")
        return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return tuple(_param_value(key, v) for v in value)
    raise InvalidValueError(f"{key}= must be a string, a number or a list of numbers, got {_describe(value)}")


def _name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidValueError(f'{kind}(...) needs a name string first, as in {kind}("ring")')
    return name


def model(name: str, **condition: object) -> Leaf:
    """A registered diffusion model, optionally conditioned: ``model("digits", label=3)``."""
    return Leaf("model", _name("model", name), tuple(sorted((k, _param_value(k, v)) for k, v in condition.items())))


def oracle(name: str) -> Leaf:
    """A named exact analytic model: ``oracle("ring")``."""
    return Leaf("oracle", _name("oracle", name), ())


def classifier(name: str, **condition: object) -> Leaf:
    """A noise-aware classifier term ``log p(y | x_t, t)``: ``classifier("digits", label=3)``."""
    return Leaf("classifier", _name("classifier", name), tuple(sorted((k, _param_value(k, v)) for k, v in condition.items())))


def _matrix(value: object, what: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidValueError(f"{what} must be a non-empty list of points, as in [[0.5, 0], [-0.5, 0]]")
    rows = []
    for row in value:
        if _is_number(row):
            row = [row]
        if not isinstance(row, (list, tuple)) or not row:
            raise InvalidValueError(f"{what} must be a list of points (lists of numbers), got {_describe(row)}")
        rows.append(tuple(number(v, f"every entry of {what}") for v in row))
    if len({len(r) for r in rows}) != 1:
        raise InvalidValueError(f"{what} is ragged: its points have lengths {[len(r) for r in rows]}")
    return tuple(rows)


def _vector(value: object, what: str) -> tuple[float, ...]:
    if _is_number(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidValueError(f"{what} must be a non-empty list of numbers")
    return tuple(number(v, f"every entry of {what}") for v in value)


def gmm(means: object, std: object = 1.0, weights: object = None) -> Leaf:
    """A custom Gaussian-mixture oracle of any dimension.

    ``means`` is ``[K, D]``; ``std`` a scalar, ``K`` per-component scalars, or ``[K, D]``
    diagonal standard deviations; ``weights`` ``K`` positive numbers (normalised; default equal).
    """
    mu = _matrix(means, "gmm means")
    k, d = len(mu), len(mu[0])
    s: Value
    if _is_number(std):
        s = number(std, "gmm std")
        flat = [s]
    elif isinstance(std, (list, tuple)) and std and all(isinstance(r, (list, tuple)) for r in std):
        s = _matrix(std, "gmm std")
        if len(s) != k or len(s[0]) != d:
            raise InvalidValueError(f"gmm std has shape [{len(s)}, {len(s[0])}] but means have shape [{k}, {d}]")
        flat = [v for r in s for v in r]
    else:
        s = _vector(std, "gmm std")
        if len(s) != k:
            raise InvalidValueError(f"gmm std has {len(s)} entries but there are {k} components")
        flat = list(s)
    if any(v <= 0 for v in flat):
        raise InvalidValueError(f"gmm std must be positive, got {min(flat):g}")
    params: list[tuple[str, Value]] = [("means", mu), ("std", s)]
    if weights is not None:
        w = _vector(weights, "gmm weights")
        if len(w) != k:
            raise InvalidValueError(f"gmm weights has {len(w)} entries but there are {k} components")
        if any(v <= 0 for v in w):
            raise InvalidValueError(f"gmm weights must be positive, got {min(w):g}")
        total = math.fsum(w)
        scale = 1.0 if abs(total - 1.0) <= 1e-12 else total  # as in `mixture`: stable through print/parse
        w = tuple(canonical_float(v / scale) for v in w)
        if any(v != w[0] for v in w):
            params.append(("weights", w))
    return Leaf("gmm", None, tuple(sorted(params)))


def box(low: object, high: object) -> Leaf:
    """A custom uniform-box oracle on ``[low, high]`` (per coordinate; any dimension)."""
    lo, hi = _vector(low, "box low"), _vector(high, "box high")
    if len(lo) != len(hi):
        raise InvalidValueError(f"box low has {len(lo)} coordinates but high has {len(hi)}")
    for i, (a, b) in enumerate(zip(lo, hi)):
        if not a < b:
            raise InvalidValueError(f"box needs low < high in every coordinate; coordinate {i} has low={a:g}, high={b:g}")
    return Leaf("box", None, (("high", hi), ("low", lo)))


def crop(
    term: Expr,
    rows: Union[tuple[int, int], slice, None] = None,
    cols: Union[tuple[int, int], slice, None] = None,
    dims: Union[tuple[int, int], slice, None] = None,
) -> Expr:
    """``term`` evaluated on a crop of the canvas: ``crop(model("digits"), rows=(0, 8), cols=(4, 12))``."""
    if not isinstance(term, Expr):
        raise InvalidValueError(f"crop needs a density first, got {_describe(term)}")
    return view(term, Region(rows=rows, cols=cols, dims=dims))  # type: ignore[arg-type]
