"""The objects family's judge of samples: the detector's verdict on the cells a graph asks for.

A graph of the family's models (``model("objects", cell=c)`` and its score twin
``model("objects_score", cell=c)``) that is a product of powers of leaves asks for an object in
every cell whose leaves have a positive total exponent and for none in every cell with a
negative one (a negation such as ``... / model("objects", cell=c) ** 0.5``); the unconditional
``model("objects")`` asks for nothing. The judge runs the family's deterministic detector
(:func:`rrrdsl.zoo.objects.detector.detect`) on the samples, pixels clipped to ``[-1, 1]``, and
reports per requested cell the fraction of samples with an object, per negated cell the fraction
without, and the fraction with every requested cell filled (the accuracy of the CLEVR position
experiment of Du et al., 2023). It is registered with
:func:`rrrdsl.models.registry.register_judge`, so that ``rrr run`` prints its line under the
sample's summary.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from ...lang.ir import Expr, Leaf, Power, Product
from ...models.registry import register_judge
from .data import GRID
from .detector import detect

#: the family's models, whose ``cell=`` leaves the judge reads
MODELS = ("objects", "objects_score")


class Requested(NamedTuple):
    """The cells a graph asks to hold an object (``present``) and to stay empty (``absent``)."""

    present: tuple[int, ...]
    absent: tuple[int, ...]


def requested(expr: Expr) -> Optional[Requested]:
    """The cells ``expr`` asks for, from the total exponent of each cell's leaves; None when
    ``expr`` is not a product of powers of leaves (a mixture, a crop)."""
    base = expr.base
    terms = base.terms if isinstance(base, Product) else (base,)
    exponents: dict[int, float] = {}
    for term in terms:
        leaf, exponent = (term.term, term.exponent) if isinstance(term, Power) else (term, 1.0)
        if not isinstance(leaf, Leaf):
            return None
        cell = leaf.param("cell")
        if leaf.kind == "model" and leaf.name in MODELS and cell is not None:
            exponents[int(cell)] = exponents.get(int(cell), 0.0) + exponent
    return Requested(tuple(c for c, w in exponents.items() if w > 0), tuple(c for c, w in exponents.items() if w < 0))


def detected(x: torch.Tensor) -> torch.Tensor:
    """The detector's verdict on samples ``x`` ``[N, 256]`` clipped to ``[-1, 1]``: bool ``[N, 16]``."""
    return detect(x.detach().float().clamp(-1, 1))


def all_present(x: torch.Tensor, cells: Sequence[int]) -> torch.Tensor:
    """Bool ``[N]``: every cell of ``cells`` holds an object in the sample."""
    return detected(x)[:, list(cells)].all(dim=1)


def _where(cell: int) -> str:
    return f"cell {cell} (row {cell // GRID}, column {cell % GRID})"


def judge(expr: Expr, x: torch.Tensor) -> list[str]:
    """One verdict line on samples ``x`` of ``expr`` (none when it asks for no cell)."""
    cells = requested(expr)
    if cells is None or not (cells.present or cells.absent):
        return []
    found = detected(x)
    parts = [f"{_where(c)} has an object in {float(found[:, c].float().mean()):.2f}" for c in cells.present]
    parts += [f"{_where(c)} (negated) is empty in {float((~found[:, c]).float().mean()):.2f}" for c in cells.absent]
    if len(cells.present) > 1:
        every = found[:, list(cells.present)].all(dim=1)
        parts.append(f"all {len(cells.present)} requested cells in {float(every.float().mean()):.2f}")
    return ["objects detector: " + "; ".join(parts) + f" of {len(x)} samples"]


def register() -> None:
    """Register :func:`judge` for the family's models."""
    for name in MODELS:
        register_judge(name, judge)
