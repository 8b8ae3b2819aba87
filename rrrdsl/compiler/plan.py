"""The evaluation plan of a compiled graph: atoms (one per distinct ``(leaf, crop)``, backbone
atoms batched into one call) and combination steps (weighted sums for products and powers,
``logsumexp`` for mixtures), with common subexpressions evaluated once.

A mixture weighs normalised densities: ``p_t = Σ_j π_j p^j_t / Z^j_t``. A component that is an
exact oracle leaf is normalised already; any other (a product, a power, a learned model) gets its
per-level ``log Z^j_t`` from a :class:`Normaliser` table once one is attached
(:meth:`Lowering.normalise`; the tables are estimated by the samplers,
:mod:`rrrdsl.samplers.normalisers`). Until then its weight acts on the unnormalised term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, NamedTuple, Optional, Sequence, Union

import torch

from ..lang.ir import Expr, Leaf, Mixture, Power, Product, View
from ..errors import CompileError
from ..models.base import Backbone, Model
from ..models.oracles import Oracle
from ..schedules import Level
from .frames import Frame, crop_frame

#: how an atom reads its input from the canvas: the whole canvas, a contiguous range, or indices
Select = Union[None, slice, torch.Tensor]
Values = list
#: ``∂ log p / ∂ values[slot]``: a number, or one per chain ``[N]`` below a mixture
Adjoint = Union[float, torch.Tensor]

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


def _accumulate(out: Optional[torch.Tensor], x: torch.Tensor, select: Select, coef: Adjoint, value: torch.Tensor) -> torch.Tensor:
    """``out + coef * value`` placed at ``select`` on the canvas (the adjoint of :func:`_take`);
    ``out = None`` is zero, ``coef`` a number or one per chain ``[N]``. Out of place, so a model's
    own tensor is never written to, and without a multiplication by 1 or an addition to zero for
    a single uncropped atom."""
    if isinstance(coef, torch.Tensor):
        term = coef.unsqueeze(-1) * value
    else:
        term = value if coef == 1.0 else coef * value
    if select is not None:
        placed = torch.zeros_like(x)
        if isinstance(select, slice):
            placed[:, select] = term
        else:
            placed.index_add_(1, select.to(x.device), term)
        term = placed
    return term if out is None else out + term


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

    @property
    def fused(self) -> bool:
        """Whether :meth:`log_prob_and_score` is one analytic pass (an exact oracle)."""
        return isinstance(self.atom.model, Oracle)

    def score(self, x: torch.Tensor, t: Level, out: Optional[torch.Tensor], coefs: dict[int, float]) -> Optional[torch.Tensor]:
        atom = self.atom
        coef = coefs.get(atom.slot)
        if coef is None:
            return out
        return _accumulate(out, x, atom.select, coef, atom.model.score(_take(x, atom.select), t))

    def log_prob_and_score(self, x: torch.Tensor, t: Level, values: Values) -> torch.Tensor:
        """The atom's log density into its slot, and its score on its frame ``[N, d]`` (one
        fused oracle evaluation, :meth:`rrrdsl.models.oracles.Oracle.log_prob_and_score`)."""
        atom = self.atom
        values[atom.slot], score = atom.model.log_prob_and_score(_take(x, atom.select), t)
        return score

    def add_score(self, out: Optional[torch.Tensor], x: torch.Tensor, adjoints: dict[int, Adjoint], score: torch.Tensor) -> Optional[torch.Tensor]:
        """``out`` plus the atom's ``score`` times its adjoint (:func:`backward`), on the canvas."""
        coef = adjoints.get(self.atom.slot)
        return out if coef is None else _accumulate(out, x, self.atom.select, coef, score)

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

    fused = False

    def score(self, x: torch.Tensor, t: Level, out: Optional[torch.Tensor], coefs: dict[int, float]) -> Optional[torch.Tensor]:
        scores = self.backbone.score(self._input(x), t, self.conditions)
        for c, atom in enumerate(self.atoms):
            coef = coefs.get(atom.slot)
            if coef is not None:
                out = _accumulate(out, x, atom.select, coef, scores[c])
        return out

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


class Normaliser(NamedTuple):
    """The estimated ``log Z_t`` of one mixture component at every level, float64 ``[T]``, with
    its standard error ``[T]`` and how it was estimated (shown by ``describe()``)."""

    log_z: torch.Tensor
    std_error: torch.Tensor
    method: str

    def at(self, t: Level, like: torch.Tensor) -> torch.Tensor:
        """``log Z_t`` in the dtype and on the device of ``like``: a scalar, or ``[N]`` for a per-chain ``t``."""
        if isinstance(t, str):
            raise CompileError(
                f"a mixture component's normaliser is estimated at the noisy levels only, not at {t!r}",
                hint="evaluate the mixture at an integer level",
            )
        table = self.log_z.to(dtype=like.dtype, device=like.device)
        return table[t.to(like.device)] if isinstance(t, torch.Tensor) else table[t]

    def summary(self) -> str:
        """``log Z`` at level 0 with its standard error and the largest standard error over levels."""
        return (
            f"log Z_0 = {float(self.log_z[0]):.4f} ± {float(self.std_error[0]):.4f} "
            f"(largest s.e. over levels {float(self.std_error.max()):.4f}; {self.method})"
        )


def normalised(term: Expr, models: dict[Leaf, Model]) -> bool:
    """Whether a mixture component is an exactly normalised density: an exact oracle leaf, or a
    mixture (its weights sum to 1 and each of its components is normalised in turn, by its own
    :class:`Normaliser` where it needs one)."""
    return isinstance(term, Mixture) or (isinstance(term, Leaf) and isinstance(models[term], Oracle))


class _CombineStep:
    """A weighted sum of slots (products, powers) or a logsumexp with log weights (mixtures);
    a mixture's ``components`` are its terms, divided by their :class:`Normaliser` where one
    is attached (``normalisers``, shared with the target)."""

    def __init__(
        self,
        kind: str,
        terms: tuple[tuple[int, float], ...],
        slot: int,
        components: tuple[Expr, ...] = (),
        normalisers: Optional[dict[Expr, Normaliser]] = None,
    ) -> None:
        self.kind = kind
        self.terms = terms
        self.slot = slot
        self.components = components
        self.normalisers = normalisers if normalisers is not None else {}
        if kind == "sum":
            self._run = _linear(terms)

    def log_prob(self, x: torch.Tensor, t: Level, values: Values) -> None:
        self.forward(t, values, responsibilities=False)

    def forward(self, t: Level, values: Values, responsibilities: bool) -> Optional[torch.Tensor]:
        """Evaluate the step into its slot; for a mixture with ``responsibilities``, also return
        each component's posterior weight ``r_j = π_j p^j_t / (Z^j_t p_t)`` ``[K, N]`` (the
        gradient of the logsumexp in its parts, :func:`backward`)."""
        if self.kind == "sum":
            values[self.slot] = self._run(values)
            return None
        parts = []
        for (s, w), term in zip(self.terms, self.components):
            part = values[s] + math.log(w)
            normaliser = self.normalisers.get(term)
            parts.append(part if normaliser is None else part - normaliser.at(t, part))
        stacked = torch.stack(parts)
        values[self.slot] = torch.logsumexp(stacked, dim=0)
        return _responsibilities(stacked, values[self.slot]) if responsibilities else None

    def describe(self) -> str:
        if self.kind == "sum":
            return f"%{self.slot} = " + " + ".join(f"{c:g} * %{s}" for s, c in self.terms)
        parts = []
        for (s, w), term in zip(self.terms, self.components):
            parts.append(f"log {w:g} + %{s}" + (" - log Z_t" if term in self.normalisers else ""))
        return f"%{self.slot} = logsumexp(" + ", ".join(parts) + ")"


def _responsibilities(parts: torch.Tensor, log_total: torch.Tensor) -> torch.Tensor:
    """``softmax(parts)`` over the components ``[K, N]``, from the logsumexp already taken."""
    return torch.exp(parts - log_total)


def backward(steps: Sequence[_CombineStep], t: Level, values: Values, root: int) -> dict[int, Adjoint]:
    """Run the combination ``steps`` on the atoms' ``values`` and return ``∂ log p / ∂ values[a]``
    of every atom ``a`` (reverse-mode differentiation of the plan, done by hand).

    A weighted sum passes its adjoint to each slot times the slot's coefficient; a mixture
    ``log Σ_j exp(log π_j + v_j - log Z^j_t)`` passes it times the responsibilities
    ``r_j = softmax_j(...)`` (the normalisers are constants in ``x``). Without mixtures every
    adjoint is a number; below a mixture it is one per chain ``[N]``. The gradient of ``log p``
    is then ``Σ_a adjoint_a ∇ log p_a``, placed on each atom's frame."""
    weights = [step.forward(t, values, responsibilities=True) for step in steps]
    adjoints: dict[int, Adjoint] = {root: 1.0}
    for step, r in zip(reversed(steps), reversed(weights)):
        a = adjoints.pop(step.slot, None)
        if a is None:
            continue
        for j, (slot, coef) in enumerate(step.terms):
            d = coef * a if r is None else r[j] * a
            adjoints[slot] = d if slot not in adjoints else adjoints[slot] + d
    return adjoints


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
        self.models = models
        #: the mixture components that need a normaliser, each with the frame it is evaluated on
        self.unnormalised: dict[Expr, Frame] = {}
        #: their attached normalisers (shared by every mixture step)
        self.normalisers: dict[Expr, Normaliser] = {}

    def _new(self, kind: str, terms: tuple[tuple[int, float], ...], components: tuple[Expr, ...] = ()) -> int:
        key = (kind, terms)
        if key not in self.memo:
            self.memo[key] = self.num_slots
            self.combine.append(_CombineStep(kind, terms, self.num_slots, components, self.normalisers))
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
                    self.memo[key] = self._new("logsumexp", components, terms)
                    for term in terms:
                        if not normalised(term, self.models):
                            self.unnormalised.setdefault(term, frame)
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
