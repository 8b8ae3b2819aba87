"""The leaf functions of the language: ``model``, ``oracle``, ``classifier``, ``gmm``,
``box`` and ``crop``, the same in ``.rrr`` text and in Python.

Each validates its arguments and returns a canonical node; :data:`FUNCTIONS` is the fixed
table that text can call (nothing is ever evaluated as Python).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping, Union

from ..errors import InvalidValueError
from .algebra import describe, is_number, number, view
from .nodes import Expr, Leaf, Region, Value, canonical_float


def _param_value(key: str, value: object) -> Value:
    if isinstance(value, (str, bool)) or is_number(value):
        if is_number(value) and not isinstance(value, numbers.Integral):
            return number(value, f"{key}=")
        return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return tuple(_param_value(key, v) for v in value)
    raise InvalidValueError(f"{key}= must be a string, a number or a list of numbers, got {describe(value)}")


def _name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidValueError(f'{kind}(...) needs a name string first, as in {kind}("ring")')
    return name


#: keywords a model's condition cannot use: the compiler passes the schedule to its factory
RESERVED = ("schedule",)


def _condition(kind: str, condition: Mapping[str, object]) -> tuple[tuple[str, Value], ...]:
    for key in RESERVED:
        if key in condition:
            raise InvalidValueError(f"{kind}(...) takes no argument {key!r}", hint="the compiler chooses the noise schedule: compile(..., schedule=...) in Python")
    return tuple(sorted((k, _param_value(k, v)) for k, v in condition.items()))


def model(name: str, **condition: object) -> Leaf:
    """A registered diffusion model, optionally conditioned: ``model("digits", label=3)``."""
    return Leaf("model", _name("model", name), _condition("model", condition))


def oracle(name: str) -> Leaf:
    """A named exact analytic model: ``oracle("ring")``."""
    return Leaf("oracle", _name("oracle", name), ())


def classifier(name: str, **condition: object) -> Leaf:
    """A noise-aware classifier term ``log p(y | x_t, t)``: ``classifier("digits", label=3)``."""
    return Leaf("classifier", _name("classifier", name), _condition("classifier", condition))


def _matrix(value: object, what: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidValueError(f"{what} must be a non-empty list of points, as in [[0.5, 0], [-0.5, 0]]")
    rows = []
    for row in value:
        if is_number(row):
            row = [row]
        if not isinstance(row, (list, tuple)) or not row:
            raise InvalidValueError(f"{what} must be a list of points (lists of numbers), got {describe(row)}")
        rows.append(tuple(number(v, f"every entry of {what}") for v in row))
    if len({len(r) for r in rows}) != 1:
        raise InvalidValueError(f"{what} is ragged: its points have lengths {[len(r) for r in rows]}")
    return tuple(rows)


def _vector(value: object, what: str) -> tuple[float, ...]:
    if is_number(value):
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
    if is_number(std):
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
        raise InvalidValueError(f"crop needs a density first, got {describe(term)}")
    return view(term, Region(rows=rows, cols=cols, dims=dims))  # type: ignore[arg-type]


#: the leaf functions of the language: a fixed table, the only callables text can reach
FUNCTIONS: Mapping[str, Callable[..., Expr]] = {
    "model": model,
    "oracle": oracle,
    "gmm": gmm,
    "box": box,
    "classifier": classifier,
    "crop": crop,
}
