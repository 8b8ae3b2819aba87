"""The evaluation plan of a compiled graph: atoms (one per distinct ``(leaf, crop)``, backbone
atoms batched into one call) and combination steps (weighted sums for products and powers,
``logsumexp`` for mixtures), with common subexpressions evaluated once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Optional, Sequence, Union

import torch

from ..lang.ir import Expr, Leaf, Mixture, Power, Product, View
from ..models.base import Backbone, Model
from ..schedules import Level
from .frames import Frame, crop_frame

#: how an atom reads its input from the canvas: the whole canvas, a contiguous range, or indices
Select = Union[None, slice, torch.Tensor]
Values = list

def _select(frame: Frame, canvas_size: int) -> Select:
    """How to read a frame from ``x``: None (whole canvas), a slice, or an index tensor."""
    pos = frame.positions()
    if pos == tuple(range(canvas_size)):
        return None
    if pos == tuple(range(pos[0], pos[0] + len(pos))):
        return slice(pos[0], pos[0] + len(pos))
    return torch.tensor(pos, dtype=torch.long)


def _take(x: torch.Tensor, select: Select) -> torch.Tensor:
    if select is None:
        return x
    if isinstance(select, slice):
        return x[:, select]
    return x.index_select(1, select.to(x.device))


def _add_at(out: torch.Tensor, select: Select, value: torch.Tensor) -> None:
    """``out[:, select] += value`` (the adjoint of :func:`_take`)."""
    if select is None:
        out.add_(value)
    elif isinstance(select, slice):
        out[:, select].add_(value)
    else:
        out.index_add_(1, select.to(out.device), value)


@dataclass(frozen=True)
class Atom:
    """One distinct ``(leaf, crop)``: evaluated once per call into ``slot``."""

    leaf: Leaf
    model: Model
    frame: Frame
    select: Select
    slot: int


class _ModelStep:
    """Evaluates one atom with its model."""

    def __init__(self, atom: Atom) -> None:
        self.atom = atom

    def log_prob(self, x: torch.Tensor, t: Level, values: Values) -> None:
        atom = self.atom
        values[atom.slot] = atom.model.log_prob(_take(x, atom.select), t)

    def score(self, x: torch.Tensor, t: Level, out: torch.Tensor, coefs: dict[int, float]) -> None:
        atom = self.atom
        coef = coefs.get(atom.slot)
        if coef is not None:
            _add_at(out, atom.select, coef * atom.model.score(_take(x, atom.select), t))

    def describe(self) -> str:
        where = "" if self.atom.select is None else f" on {self.atom.frame.label}"
        return f"%{self.atom.slot} = {self.atom.leaf}{where}"


class _BackboneStep:
    """Evaluates every atom of one backbone in a single batched call.

    Uncropped atoms (or atoms that all share one crop) pass ``x`` as ``[N, d]``; otherwise the
    crops are gathered with one index into ``[C, N, d]``.
    """

    def __init__(self, backbone: Backbone, atoms: Sequence[Atom], canvas_size: int) -> None:
        self.backbone = backbone
        self.atoms = tuple(atoms)
        self.conditions = [a.model.condition for a in atoms]
        self.slots = [a.slot for a in atoms]
        frames = {a.frame.positions() for a in atoms}
        self.shared: Select = atoms[0].select if len(frames) == 1 else None
        self.gather: Optional[torch.Tensor] = None if len(frames) == 1 else torch.tensor([a.frame.positions() for a in atoms], dtype=torch.long)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is None:
            return _take(x, self.shared)
        return x[:, self.gather.to(x.device)].transpose(0, 1)  # [C, N, d]

    def log_prob(self, x: torch.Tensor, t: Level, values: Values) -> None:
        out = self.backbone.log_prob(self._input(x), t, self.conditions)
        for c, slot in enumerate(self.slots):
            values[slot] = out[c]

    def score(self, x: torch.Tensor, t: Level, out: torch.Tensor, coefs: dict[int, float]) -> None:
        scores = self.backbone.score(self._input(x), t, self.conditions)
        for c, atom in enumerate(self.atoms):
            coef = coefs.get(atom.slot)
            if coef is not None:
                _add_at(out, atom.select, coef * scores[c])

    def describe(self) -> str:
        names = ", ".join(f"%{a.slot} = {a.leaf}" + ("" if a.select is None else f" on {a.frame.label}") for a in self.atoms)
        return f"one batched call of {type(self.backbone).__name__}: {names}"


def _linear(terms: tuple[tuple[int, float], ...]) -> Callable[[Values], torch.Tensor]:
    """``Σ coef · values[slot]``, without multiplications by 1."""
    (s0, c0), rest = terms[0], terms[1:]

    def run(values: Values) -> torch.Tensor:
        acc = values[s0] if c0 == 1.0 else c0 * values[s0]
        for slot, coef in rest:
            acc = acc + values[slot] if coef == 1.0 else acc + coef * values[slot]
        return acc

    return run


class _CombineStep:
    """A weighted sum of slots (products, powers) or a logsumexp with log weights (mixtures)."""

    def __init__(self, kind: str, terms: tuple[tuple[int, float], ...], slot: int) -> None:
        self.kind = kind
        self.terms = terms
        self.slot = slot
        if kind == "sum":
            self._run = _linear(terms)
        else:
            log_weights = [(s, math.log(w)) for s, w in terms]
            self._run = lambda values: torch.logsumexp(torch.stack([values[s] + lw for s, lw in log_weights]), dim=0)

    def log_prob(self, x: torch.Tensor, t: Level, values: Values) -> None:
        values[self.slot] = self._run(values)

    def describe(self) -> str:
        if self.kind == "sum":
            return f"%{self.slot} = " + " + ".join(f"{c:g} * %{s}" for s, c in self.terms)
        return f"%{self.slot} = logsumexp(" + ", ".join(f"log {w:g} + %{s}" for s, w in self.terms) + ")"


class Lowering:
    """Builds the plan: atoms (with backbone groups) and combination steps, with CSE."""

    def __init__(self, atoms: Sequence[tuple[Leaf, Frame]], models: dict[Leaf, Model], canvas_size: int) -> None:
        self.canvas_size = canvas_size
        self.atoms: dict[tuple[Leaf, Optional[tuple[int, ...]]], Atom] = {}
        for slot, (leaf, frame) in enumerate(atoms):
            self.atoms[(leaf, frame.index)] = Atom(leaf, models[leaf], frame, _select(frame, canvas_size), slot)
        self.num_slots = len(self.atoms)
        self.combine: list[_CombineStep] = []
        self.memo: dict[Hashable, int] = {}

    def _new(self, kind: str, terms: tuple[tuple[int, float], ...]) -> int:
        key = (kind, terms)
        if key not in self.memo:
            self.memo[key] = self.num_slots
            self.combine.append(_CombineStep(kind, terms, self.num_slots))
            self.num_slots += 1
        return self.memo[key]

    def linear_form(self, node: Expr, frame: Frame, coef: float, acc: dict[int, float]) -> None:
        """Add ``coef · log node`` to ``acc`` (slot -> coefficient)."""
        match node:
            case Leaf():
                slot = self.atoms[(node, frame.index)].slot
                acc[slot] = acc.get(slot, 0.0) + coef
            case Product(terms=terms):
                for term in terms:
                    self.linear_form(term, frame, coef, acc)
            case Power(term=term, exponent=exponent):
                self.linear_form(term, frame, coef * exponent, acc)
            case View(term=term):
                self.linear_form(term, crop_frame(frame, node), coef, acc)
            case Mixture(terms=terms, weights=weights):
                key = (node, frame.index)
                if key not in self.memo:
                    components = tuple((self.slot_of(term, frame), w) for term, w in zip(terms, weights))
                    self.memo[key] = self._new("logsumexp", components)
                slot = self.memo[key]
                acc[slot] = acc.get(slot, 0.0) + coef

    def slot_of(self, node: Expr, frame: Frame) -> int:
        acc: dict[int, float] = {}
        self.linear_form(node, frame, 1.0, acc)
        terms = tuple(acc.items())
        if len(terms) == 1 and terms[0][1] == 1.0:
            return terms[0][0]
        return self._new("sum", terms)

    def atom_steps(self) -> list[Union[_ModelStep, _BackboneStep]]:
        """One step per atom, except one batched step per backbone (at its first atom)."""
        groups: dict[int, list[Atom]] = {}
        order: list[Union[Atom, int]] = []
        for atom in self.atoms.values():
            backbone = atom.model.backbone
            if backbone is None:
                order.append(atom)
            else:
                if id(backbone) not in groups:
                    groups[id(backbone)] = []
                    order.append(id(backbone))
                groups[id(backbone)].append(atom)
        return [
            _ModelStep(item) if isinstance(item, Atom) else _BackboneStep(groups[item][0].model.backbone, groups[item], self.canvas_size)  # type: ignore[arg-type]
            for item in order
        ]
