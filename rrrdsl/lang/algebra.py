"""Smart constructors that keep energy graphs canonical, and the generic walks over them.

Every node is built through :func:`product`, :func:`power`, :func:`mixture` and
:func:`view`, which keep the graph in **canonical form**: products are flat with repeated
factors merged (``a * a ** 2`` → ``a ** 3``) in order of first appearance; powers fold
(``(a ** u) ** v`` → ``a ** (u v)``) and distribute over products; ``** 0`` drops out;
mixtures are flat with repeated components merged and weights normalised to sum 1; constant
factors float to the top as a :class:`~rrrdsl.lang.nodes.Weighted` node.

A constant factor does not change a density, so ``Weighted`` compares and hashes equal to the
term it scales: ``0.3 * a == a``. The factor matters only as a mixture weight: ``+`` adds
densities, so ``0.3 * a + 0.7 * b`` mixes with weights 0.3 / 0.7, ``a + b + c`` is a uniform
mixture however it is bracketed, and ``2 * (a + b) + c`` gives ``c`` half the mass.

Exponents and weights that come out of arithmetic (merged exponents, normalised weights)
are snapped to 12 significant digits when they lie within rounding noise of that value
(``0.1 + 0.2`` → ``0.3``), so that equal expressions are equal graphs; printed numbers are
exact (``repr``), so printed text parses back to the same graph.

Every constructor is linear in the size of its arguments, and :func:`simplify` and
:func:`leaves` visit each distinct node once, without recursion
(:func:`~rrrdsl.lang.nodes.postorder`).
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Iterable, Sequence

from ..errors import InvalidValueError
from .nodes import Expr, Leaf, Mixture, Power, Product, Region, Unit, View, Weighted, canonical_float, postorder


def is_number(value: object) -> bool:
    """A real number, not a boolean."""
    return type(value) in (float, int) or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def describe(value: object) -> str:
    """``value`` in words, for error messages."""
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, Expr):
        return f"the density {value}"
    return f"{type(value).__name__} {value!r}"


def number(value: object, what: str = "a number") -> float:
    """A finite real as a canonical float, or :class:`InvalidValueError`."""
    if not is_number(value):
        raise InvalidValueError(f"{what} must be a number, got {describe(value)}")
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


def as_expr(value: object, op: str) -> Expr:
    """The operand of a Python operator as a density (a number becomes a constant)."""
    if isinstance(value, Expr):
        return value
    if is_number(value):
        return constant(value)
    raise InvalidValueError(f"cannot combine a density with {describe(value)} using `{op}`")


def _factors(expr: Expr) -> tuple[float, list[tuple[Expr, float]]]:
    """Split a canonical node into its constant and its (base, exponent) factors."""
    c = expr.constant
    match expr.base:
        case Unit():
            return c, []
        case Product(terms=terms):
            return c, [f for t in terms for f in _factors(t)[1]]
        case Power(term=term, exponent=exponent):
            return c, [(term, exponent)]
        case node:
            return c, [(node, 1.0)]


def _build(c: float, factors: Iterable[tuple[Expr, float]]) -> Expr:
    merged: dict[Expr, float] = {}
    for base, exponent in factors:
        merged[base] = canonical_float(merged.get(base, 0.0) + exponent)
        if not math.isfinite(merged[base]):
            raise InvalidValueError(f"the exponent of {base} overflows: it must be finite after folding, got {merged[base]:g}")
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
    try:
        scaled = c**w
    except OverflowError:
        raise InvalidValueError(f"the constant factor {c:g} ** {w:g} overflows", hint="a constant factor must stay below 1.8e308") from None
    return _build(scaled, [(base, e * w) for base, e in factors])


def mixture(components: Sequence[tuple[Expr, float]]) -> Expr:
    """Canonical mixture ``Σ_j w_j · term_j`` of (term, weight) pairs.

    Components that are mixtures are flattened (their weights scaled), repeated components
    merged, and weights normalised; the total mass is kept as the constant factor.
    """
    merged: dict[Expr, float] = {}
    for term, weight in components:
        w = number(weight, "a mixture weight") * term.constant
        if not (w > 0 and math.isfinite(w)):
            raise InvalidValueError(f"a mixture weight must be positive and finite, got {w:g}")
        match term.base:
            case Unit():
                raise InvalidValueError("a constant cannot be a mixture component", hint="each term of `+` must be a density")
            case Mixture(terms=terms, weights=weights):
                parts: Iterable[tuple[Expr, float]] = zip(terms, weights)
            case node:
                parts = [(node, 1.0)]
        for part, pw in parts:
            merged[part] = merged.get(part, 0.0) + w * pw
    largest = max(merged.values())  # summed relative to the largest: no intermediate overflow
    total = largest * math.fsum(w / largest for w in merged.values())
    if not math.isfinite(total):
        raise InvalidValueError(f"mixture weights must be finite, but they sum to more than {sys.float_info.max:g}")
    if len(merged) == 1:
        (only,) = merged
        return _build(total, [(only, 1.0)])
    # weights that already sum to 1 (as printed canonical text does) are kept exactly
    scale = 1.0 if abs(total - 1.0) <= 1e-12 else total
    weights = [canonical_float(w / scale) for w in merged.values()]
    return _build(total, [(Mixture(tuple(merged), tuple(weights)), 1.0)])


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
    by hand from the dataclasses. Each distinct node is rebuilt once, children first.
    """
    done: dict[int, Expr] = {}
    for node in postorder(expr):
        kids = [done[id(child)] for child in node.children]
        match node:
            case Leaf() | Unit():
                out: Expr = node
            case Product():
                out = product(*kids)
            case Power(exponent=exponent):
                out = power(kids[0], exponent)
            case Mixture(weights=weights):
                out = mixture(list(zip(kids, weights)))
            case View(region=region):
                out = view(kids[0], region)
            case Weighted(weight=weight):
                out = product(constant(weight), kids[0]) if weight != 1.0 else kids[0]
            case _:
                raise InvalidValueError(f"not a graph node: {describe(node)}")
        done[id(node)] = out
    return done[id(expr)]


def leaves(expr: Expr) -> list[Leaf]:
    """Distinct leaves of ``expr`` in order of first appearance (left to right)."""
    return list(dict.fromkeys(node for node in postorder(expr) if isinstance(node, Leaf)))
