"""Compile an energy graph into an :class:`AnnealedTarget`: one differentiable density per level.

An energy graph (:mod:`rrrdsl.lang.ir`) denotes, at every noise level ``t``, the unnormalised
density of the composition of its leaves' noised marginals (Du et al., 2023, "Reduce, Reuse,
Recycle", section 3)::

    Product / Power / quotient   log p_t(x) = Σ_i w_i log q^i_t(x)          (scores likewise)
    Mixture                      log p_t(x) = logsumexp_j(log π_j + log p^j_t(x))
    View (crop)                  log p_t(x) = log p^term_t(x[crop])          (gradient flows back)

:func:`compile` simplifies the graph, runs every check before anything is evaluated, resolves
the leaves through :func:`rrrdsl.models.registry.resolve`, and builds a flat evaluation plan
once:

1. **Atoms.** Each distinct ``(leaf, crop)`` pair is one slot, evaluated once per call however
   often the graph uses it (common-subexpression elimination; repeated subgraphs share slots
   too). All atoms of one conditional :class:`~rrrdsl.models.base.Backbone` are evaluated in a
   single batched call, their crops gathered into one ``[C, N, d]`` input.
2. **Combinations.** Products and powers collapse into one weighted sum of slots per subgraph;
   mixtures become a ``logsumexp`` over their components' slots with log weights.

``log_prob_and_grad`` runs the plan once forward and once backward (autograd). ``score`` of a
graph without mixtures is the weighted sum of the leaves' own scores (no energy needed, so
score-only leaves work under products and powers); with mixtures it is the gradient of the
log density.

Checks (each raises before any evaluation):

* unknown model names (the registry's :class:`~rrrdsl.errors.UnknownNameError`, passed on);
* leaf schedules that disagree with each other or with the ``schedule`` argument
  (:class:`~rrrdsl.errors.CompileError`);
* leaves of different dimension, a crop outside the canvas, a crop whose leaves do not match
  its size (:class:`~rrrdsl.errors.ShapeError`);
* a mixture over a score-only leaf: a mixture weighs its components by their densities
  (:class:`~rrrdsl.errors.CompileError`);
* an oracle composition that is not normalisable at some level (:func:`check_normalisable`;
  only when every leaf is an exact oracle: a learned model's tails are unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, NamedTuple, Optional, Sequence, Union

import torch

from .. import schedules
from ..errors import CompileError, InvalidValueError, ShapeError
from ..lang.ir import Expr, Leaf, Mixture, Power, Product, Region, Unit, View, leaves, simplify
from ..lang.printer import format_region
from ..models.base import Backbone, Model
from ..schedules import CLEAN, Level, Schedule

#: leaf kinds that are exact analytic oracles (they follow the schedule they are given)
EXACT_KINDS = frozenset({"oracle", "gmm", "box"})

Canvas = Union[int, tuple[int, ...], None]
#: how an atom reads its input from the canvas: the whole canvas, a contiguous range, or indices
Select = Union[None, slice, torch.Tensor]
Values = list


# --- canvas frames ------------------------------------------------------------------------


class Frame(NamedTuple):
    """The coordinates a term is evaluated on: a crop of the canvas (or the canvas itself).

    ``index`` holds the flat canvas positions of the frame's coordinates in order (None for the
    whole canvas); ``shape`` is ``(D,)`` for a vector or ``(H, W)`` for an image (row-major,
    flat index ``r * W + c``); ``label`` names the frame in error messages.
    """

    index: Optional[tuple[int, ...]]
    shape: tuple[int, ...]
    label: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def positions(self) -> tuple[int, ...]:
        return self.index if self.index is not None else tuple(range(self.size))


def _crop(frame: Frame, node: View) -> Frame:
    """The frame of ``node.term``: ``node.region`` applied to ``frame``; ShapeError if outside."""
    region: Region = node.region
    label = f"crop(..., {format_region(region)})"
    if len(frame.shape) == 1:
        if region.dims is None:
            raise ShapeError(
                f"{label} crops rows/cols, but {frame.label} is a flat vector of {frame.size} coordinates",
                hint="use dims=a:b on a vector, or pass canvas=(H, W) to compile an image",
            )
        (size,) = frame.shape
        a, b = region.dims
        if b > size:
            raise ShapeError(f"{label} lies outside {frame.label}: dims={a}:{b} but it has {size} coordinates (0:{size})")
        local = list(range(a, b))
        shape: tuple[int, ...] = (b - a,)
    else:
        height, width = frame.shape
        if region.dims is not None:
            raise ShapeError(
                f"{label} crops dims, but {frame.label} is an image of {height}x{width}",
                hint="use rows=/cols= on an image",
            )
        r0, r1 = region.rows or (0, height)
        c0, c1 = region.cols or (0, width)
        if r1 > height or c1 > width:
            raise ShapeError(
                f"{label} lies outside {frame.label} of {height}x{width} (rows 0:{height}, cols 0:{width})",
                hint="pass a larger canvas=(H, W) or move the crop",
            )
        local = [r * width + c for r in range(r0, r1) for c in range(c0, c1)]
        shape = (r1 - r0, c1 - c0)
    parent = frame.positions()
    return Frame(tuple(parent[i] for i in local), shape, label)


def _top_parts(node: Expr) -> tuple[list[View], list[Leaf]]:
    """The views and the uncropped leaves of ``node`` that sit directly in its frame."""
    views: list[View] = []
    plain: list[Leaf] = []

    def walk(n: Expr) -> None:
        if isinstance(n, Leaf):
            plain.append(n)
        elif isinstance(n, View):
            views.append(n)
        elif isinstance(n, (Product, Mixture)):
            for term in n.terms:
                walk(term)
        elif isinstance(n, Power):
            walk(n.term)

    walk(node)
    return views, plain


def _canvas_shape(root: Expr, canvas: Canvas, dims: dict[Leaf, int]) -> tuple[int, ...]:
    """The canvas: ``canvas`` when given, else inferred from the crops and leaves (module doc)."""
    if canvas is not None:
        shape = (canvas,) if isinstance(canvas, int) else tuple(canvas)
        if not (1 <= len(shape) <= 2 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise InvalidValueError(f"canvas must be a size D or an image shape (H, W) of positive integers, got {canvas!r}")
        return shape
    views, plain = _top_parts(root)
    if not views:
        return (dims[plain[0]],)
    regions = [v.region for v in views]
    if any(r.dims is not None for r in regions) and any(r.dims is None for r in regions):
        raise ShapeError("crops mix dims= (a flat vector) with rows=/cols= (an image) on one canvas")
    if regions[0].dims is not None:
        return (dims[plain[0]] if plain else max(r.dims[1] for r in regions),)  # type: ignore[index]
    extent = {axis: max((getattr(r, axis)[1] for r in regions if getattr(r, axis) is not None), default=None) for axis in ("rows", "cols")}
    for axis, other in (("rows", "cols"), ("cols", "rows")):
        if extent[axis] is not None:
            continue
        # every crop spans this whole axis: its leaves' dim / its extent along the other axis
        for v in views:
            inner = _top_parts(v.term)[1]
            span = getattr(v.region, other)
            if inner and span is not None and dims[inner[0]] % (span[1] - span[0]) == 0:
                extent[axis] = dims[inner[0]] // (span[1] - span[0])
                break
        else:
            raise ShapeError(f"cannot infer the canvas {axis}: no crop bounds them", hint="pass canvas=(H, W) to compile")
    return (extent["rows"], extent["cols"])  # type: ignore[return-value]


def _check_shapes(root: Expr, frame: Frame, dims: dict[Leaf, int], inferred: bool) -> list[tuple[Leaf, Frame]]:
    """Every ``(leaf, frame)`` atom of ``root`` in order, after checking that each leaf's dim
    equals the size of its frame (ShapeError naming the leaves and dims otherwise)."""
    atoms: dict[tuple[Leaf, Optional[tuple[int, ...]]], tuple[Leaf, Frame]] = {}

    def visit(node: Expr, fr: Frame, is_root: bool) -> None:
        views, plain = _top_parts(node)
        for leaf in plain:
            if dims[leaf] != fr.size:
                if is_root and inferred and not views:
                    first = plain[0]
                    raise ShapeError(
                        f"{first} has dim {dims[first]} but {leaf} has dim {dims[leaf]}",
                        hint="all factors of a composition live on one space; use crop(...) to place a smaller model on part of a canvas",
                    )
                raise ShapeError(
                    f"{leaf} has dim {dims[leaf]} but {fr.label} has {fr.size} coordinates"
                    + (f" (shape {'x'.join(map(str, fr.shape))})" if len(fr.shape) > 1 else "")
                )
            atoms.setdefault((leaf, fr.index), (leaf, fr))
        for v in views:
            visit(v.term, _crop(fr, v), False)

    visit(root, frame, True)
    return list(atoms.values())


# --- checks -------------------------------------------------------------------------------


def _check_schedules(learned: dict[Leaf, Model], schedule: Optional[Schedule]) -> None:
    """Learned models fix their schedule: they must agree with each other and with ``schedule``."""
    owner: Optional[Leaf] = None
    reference = schedule
    for leaf, m in learned.items():
        if reference is None:
            owner, reference = leaf, m.schedule
        elif m.schedule != reference:
            if owner is None:
                raise CompileError(
                    f"{leaf} was trained on schedule {m.schedule}, but compile was asked for schedule {reference}",
                    hint=f"omit schedule= or pass schedule={m.schedule}",
                )
            raise CompileError(
                f"{owner} uses schedule {reference} but {leaf} uses {m.schedule}",
                hint="models composed in one target must share one noise schedule",
            )


def _check_mixtures(root: Expr, models: dict[Leaf, Model]) -> None:
    """A mixture needs every component's density: no score-only leaf below a ``+``."""

    def walk(node: Expr) -> None:
        if isinstance(node, Mixture):
            for leaf in leaves(node):
                if not models[leaf].has_energy:
                    raise CompileError(
                        f"a mixture needs densities, but {leaf} is score-only (it has no energy)",
                        hint="a mixture weighs its components by their densities; use an energy-parameterised model, or a product instead of `+`",
                    )
        elif isinstance(node, Product):
            for term in node.terms:
                walk(term)
        elif isinstance(node, (Power, View)):
            walk(node.term)

    walk(root)


def _levels(schedule: Schedule, levels: Optional[Sequence[Level]] = None) -> list[Union[int, str]]:
    """The levels to check: ``levels`` (validated) or every level and the clean one."""
    if levels is None:
        return [*range(schedule.num_levels), CLEAN]
    out = []
    for t in levels:
        if not (t == CLEAN or (isinstance(t, int) and not isinstance(t, bool) and 0 <= t < schedule.num_levels)):
            raise InvalidValueError(f"level {t!r} is not a level of {schedule}", hint=f"levels are 0..{schedule.num_levels - 1} or {CLEAN!r}")
        out.append(t)
    if not out:
        raise InvalidValueError("levels= names no level to check")
    return out


def _probe_directions(dim: int) -> torch.Tensor:
    """Points ``u = x**2 / |x|**2`` of the simplex to probe the tail in: the ``dim`` axes first,
    then a grid of spacing 1/64 for ``dim <= 3``, else 4096 seeded uniform draws."""
    axes = torch.eye(dim, dtype=torch.float64)
    if dim == 1:
        return axes
    if dim <= 3:
        steps = torch.arange(65, dtype=torch.float64) / 64
        grid = torch.cartesian_prod(*[steps] * (dim - 1)).reshape(-1, dim - 1)
        grid = grid[grid.sum(-1) <= 1 + 1e-12]
        inner = torch.cat([grid, (1 - grid.sum(-1, keepdim=True)).clamp(min=0)], dim=-1)
    else:
        draws = -torch.log(torch.rand(4096, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        inner = draws / draws.sum(-1, keepdim=True)
    return torch.cat([axes, inner])


class _Tail(NamedTuple):
    """The tail of ``log p``: ``lower``/``upper`` ``[L, D]`` per-axis bounds on the quadratic
    coefficient ``F`` at every level, and ``exact`` ``[L', M]``: ``F`` in each probe direction
    at the probed levels."""

    lower: torch.Tensor
    upper: torch.Tensor
    exact: torch.Tensor


def check_normalisable(
    root: Expr, frame: Frame, models: dict[Leaf, Model], schedule: Schedule, levels: Optional[Sequence[Level]] = None
) -> None:
    """Reject an oracle composition whose density is not normalisable at some level (of
    ``levels``, by default every level and the clean one).

    Every oracle's ``log q_t`` is, as ``|x| -> inf`` along a direction ``v``, a
    logsumexp of Gaussian components, so ``log q_t(s v) = -s^2 / 2 · min_k Σ_d λ_kd v_d^2 +
    O(s)`` with the per-axis precisions ``λ_kd = tail_precisions(t)``. With ``u = v^2 /
    |v|^2`` on the simplex, the composed density falls like ``exp(-s^2 F(u) / 2)`` with::

        F(u) = Σ_i w_i min_k Σ_d λ_ikd u_d        (a mixture term: min_j F_j(u))

    and it is normalisable when ``F > 0`` on the whole simplex (a zero coefficient leaves at
    best an exponential tail, which the tail precisions cannot decide; it is rejected).

    * **Sufficient** (a proof): per-axis coefficients ``lower`` with ``F(u) >= Σ_d lower_d u_d``. A factor under a positive power contributes its smallest
      component precision per axis (``min_k Σ λ_kd u_d >= Σ min_k λ_kd u_d``); under a
      negative power, ``log q >= log π_k + log N_k`` for *every* component ``k``, so
      ``-log q`` grows at most like one component's quadratic: the upper bound uses the single
      component with the smallest total precision. If ``lower > 0`` on every axis the level
      is accepted.
    * **Necessary** (a disproof): ``F`` is evaluated exactly in probe directions (every axis,
      and a grid of the simplex, :func:`_probe_directions`). ``F(u) <= 0`` (or NaN, e.g.
      ``inf - inf`` of clean boxes) in any of them means the density does not decay there:
      the composition is rejected with that level and direction.
    * Between the two (the bound fails, every probe is positive) the level is accepted: ``F``
      is piecewise linear in ``u``, so only a region narrower than the probe spacing could hide.

    A clean box has precision ``inf``: under a positive power it cuts the tail off, under a
    negative power it is infinite outside its support (``F = -inf``).
    """
    levels = _levels(schedule, levels)
    probes = _probe_directions(frame.size)
    precisions = {leaf: torch.stack([models[leaf].tail_precisions(t) for t in levels]) for leaf in models}  # type: ignore[attr-defined]

    def leaf_tail(leaf: Leaf, fr: Frame, probed: torch.Tensor) -> _Tail:
        lam = precisions[leaf]  # [L, K, d]
        idx = list(fr.positions())
        lower = torch.zeros(len(levels), frame.size, dtype=torch.float64)
        upper = torch.zeros_like(lower)
        lower[:, idx] = lam.min(dim=1).values
        best = lam.sum(-1).argmin(dim=1)  # the component with the smallest total precision
        upper[:, idx] = lam[torch.arange(len(levels)), best]
        u = probes[:, idx][None, :, None, :]  # [1, M, 1, d]
        quad = (lam[probed][:, None] * u).masked_fill(u == 0, 0.0)  # inf * 0 is 0 here
        return _Tail(lower, upper, quad.sum(-1).min(dim=-1).values)

    def tail(node: Expr, fr: Frame, probed: torch.Tensor) -> _Tail:
        if isinstance(node, Leaf):
            return leaf_tail(node, fr, probed)
        if isinstance(node, View):
            return tail(node.term, _crop(fr, node), probed)
        if isinstance(node, Power):
            inner = tail(node.term, fr, probed)
            w = node.exponent
            lower, upper = (inner.lower, inner.upper) if w > 0 else (inner.upper, inner.lower)
            return _Tail(w * lower, w * upper, w * inner.exact)
        parts = [tail(term, fr, probed) for term in node.terms]  # type: ignore[attr-defined]
        if isinstance(node, Product):
            return _Tail(*(torch.stack(field).sum(0) for field in zip(*parts)))
        # Mixture: the heaviest tail dominates; any one component bounds it from above
        best = min(range(len(parts)), key=lambda j: float(parts[j].upper.sum()))
        return _Tail(
            torch.stack([p.lower for p in parts]).min(0).values,
            parts[best].upper,
            torch.stack([p.exact for p in parts]).min(0).values,
        )

    bounds = tail(root, frame, torch.zeros(0, dtype=torch.long))
    unproven = torch.nonzero(~(bounds.lower > 0).all(-1)).reshape(-1)
    if unproven.numel() == 0:
        return
    exact = tail(root, frame, unproven).exact
    bad = ~(exact > 0)  # NaN counts as bad
    if bad.any():
        row = int(torch.nonzero(bad.any(-1))[0])
        worst = torch.where(torch.isnan(exact[row]), -math.inf, exact[row])
        on_axis = bad[row, : frame.size].any()  # name an axis when one fails
        probe_i = int(worst[: frame.size].argmin() if on_axis else worst.argmin())
        level = levels[int(unproven[row])]
        u = probes[probe_i]
        where = f"along axis {probe_i}" if on_axis else "in direction x^2 ∝ (" + ", ".join(f"{v:.3g}" for v in u.tolist()) + ")"
        raise CompileError(
            f"{root} is not normalisable: at level {level!r} its density does not decay "
            f"{where} (net tail precision Σ w_i λ_i = {float(exact[row, probe_i]):g}, must be > 0)",
            hint="a quotient a / b ** w needs b's tails to be w times wider than a's; "
            "an exact box under a negative power is infinite outside its support; "
            "every canvas coordinate needs a factor whose density decays along it",
        )


# --- the evaluation plan ------------------------------------------------------------------


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


class _Lowering:
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
        if isinstance(node, Leaf):
            slot = self.atoms[(node, frame.index)].slot
            acc[slot] = acc.get(slot, 0.0) + coef
        elif isinstance(node, Product):
            for term in node.terms:
                self.linear_form(term, frame, coef, acc)
        elif isinstance(node, Power):
            self.linear_form(node.term, frame, coef * node.exponent, acc)
        elif isinstance(node, View):
            self.linear_form(node.term, _crop(frame, node), coef, acc)
        else:  # Mixture
            key = (node, frame.index)
            if key not in self.memo:
                components = tuple((self.slot_of(term, frame), w) for term, w in zip(node.terms, node.weights))
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


# --- targets ------------------------------------------------------------------------------


class LevelTarget(NamedTuple):
    """An :class:`AnnealedTarget` frozen at one level ``t`` (for pyro's ``HMC``/``NUTS``)."""

    target: "AnnealedTarget"
    t: Level

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.log_prob(x, self.t)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.score(x, self.t)

    def log_prob_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target.log_prob_and_grad(x, self.t)

    def potential_fn(self, params: dict) -> torch.Tensor:
        """``-log p_t(params["x"])`` for one point ``x`` of shape ``[D]``: a scalar, differentiable."""
        return -self.target.log_prob(params["x"].unsqueeze(0), self.t).squeeze(0)


class AnnealedTarget:
    """The compiled density ``p_t`` of an energy graph at every level ``t`` of its schedule.

    Built by :func:`compile`; see the module docstring for the plan. ``t`` is an int level, a
    per-chain ``LongTensor`` ``[N]``, or ``"clean"`` (passed through to the leaves).

    Attributes
    ----------
    expr
        The simplified graph (without a constant factor).
    dim, canvas
        Dimension of ``x`` and the canvas shape (``(D,)`` or ``(H, W)``).
    num_levels, schedule
        The shared noise schedule.
    has_energy
        True when every leaf has a log density (``log_prob`` is available).
    leaf_models
        Each distinct leaf and the model it resolved to.
    atoms
        Each distinct ``(leaf, crop)`` evaluated per call.
    """

    def __init__(self, expr: Expr, canvas: tuple[int, ...], schedule: Schedule, leaf_models: dict[Leaf, Model], lowering: _Lowering, root_slot: int) -> None:
        self.expr = expr
        self.canvas = canvas
        self.dim = math.prod(canvas)
        self.schedule = schedule
        self.num_levels = schedule.num_levels
        self.leaf_models = leaf_models
        self.atoms = tuple(lowering.atoms.values())
        self.has_energy = all(m.has_energy for m in leaf_models.values())
        self._atom_steps = lowering.atom_steps()
        self._combine = tuple(lowering.combine)
        self._num_slots = lowering.num_slots
        self._root = root_slot
        # without mixtures log p is linear in the atoms: the score is a weighted sum of theirs
        self._score_coefs: Optional[dict[int, float]] = None
        if not any(step.kind == "logsumexp" for step in self._combine):
            self._score_coefs = dict(self._combine[-1].terms) if self._combine else {root_slot: 1.0}
        self._steps = tuple(self._atom_steps) + self._combine

    def _require_energy(self) -> None:
        if not self.has_energy:
            names = ", ".join(str(leaf) for leaf, m in self.leaf_models.items() if not m.has_energy)
            raise CompileError(
                f"this target has no log density: {names} is score-only (it has no energy)",
                hint="use score(x, t) with an unadjusted sampler, or an energy-parameterised model",
            )

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``log p_t(x)`` up to a constant per level, shape ``[N]`` (differentiable in ``x``)."""
        self._require_energy()
        values: Values = [None] * self._num_slots
        for step in self._steps:
            step.log_prob(x, t, values)
        return values[self._root]

    def log_prob_and_grad(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p_t(x), ∇_x log p_t(x))``: one forward and one backward pass; works under ``no_grad``."""
        self._require_energy()
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_prob = self.log_prob(x, t)
            (grad,) = torch.autograd.grad(log_prob.sum(), x)
        return log_prob.detach(), grad

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``∇_x log p_t(x)``, shape ``[N, D]``: the weighted sum of leaf scores for products and
        powers (score-only leaves allowed), the gradient of ``log_prob`` with mixtures."""
        if self._score_coefs is None:
            return self.log_prob_and_grad(x, t)[1]
        out = torch.zeros_like(x)
        for step in self._atom_steps:
            step.score(x, t, out, self._score_coefs)
        return out

    def at(self, t: Level) -> LevelTarget:
        """This target at the fixed level ``t``; its ``potential_fn`` plugs into pyro's NUTS."""
        return LevelTarget(self, t)

    def describe(self) -> str:
        """The evaluation plan, one step a line."""
        head = (
            f"AnnealedTarget {self.expr}\n  dim {self.dim} (canvas {'x'.join(map(str, self.canvas))}), "
            f"schedule {self.schedule}, {'energy' if self.has_energy else 'score only'}"
        )
        lines = [head] + [f"  {step.describe()}" for step in self._steps] + [f"  log p = %{self._root}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<AnnealedTarget {self.expr} dim={self.dim} {self.schedule}>"


def compile(
    expr: Expr, schedule: Optional[Schedule] = None, *, canvas: Canvas = None, levels: Optional[Sequence[Level]] = None
) -> AnnealedTarget:
    """Compile the energy graph ``expr`` into an :class:`AnnealedTarget`.

    Parameters
    ----------
    expr
        An energy graph (a constant factor at the root is ignored).
    schedule
        The noise schedule; by default that of the learned models, else
        :func:`rrrdsl.schedules.default`. Exact oracles follow it; learned models must match it.
    canvas
        The canvas for crops: a size ``D`` (``dims=`` crops) or an image shape ``(H, W)``
        (``rows=``/``cols=`` crops). Inferred when omitted: ``H`` the largest ``rows`` stop,
        ``W`` the largest ``cols`` stop (a crop without rows/cols spans that axis), ``D`` the
        dim of the uncropped leaves or the largest ``dims`` stop.
    levels
        The levels at which an all-oracle target must be normalisable (default: every level
        and ``"clean"``). Ground truth at one level passes that level alone: a quotient of
        exact boxes such as ``box ** 1.3 / box_small ** 0.3`` is proper at every noisy level
        but infinite at the clean one.

    Raises
    ------
    UnknownNameError, CompileError, ShapeError
        Before anything is evaluated; see the module docstring.
    """
    from ..models import registry
    from ..models.oracles import Oracle

    if not isinstance(expr, Expr):
        raise InvalidValueError(f"compile needs an energy graph, got {type(expr).__name__}")
    if schedule is not None and not isinstance(schedule, Schedule):
        raise InvalidValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    root = simplify(expr).base
    if isinstance(root, Unit):
        raise CompileError("the graph is a constant: there is no density to compile", hint="compose at least one model")
    graph_leaves = leaves(root)
    learned = {leaf: registry.resolve(leaf, schedule) for leaf in graph_leaves if leaf.kind not in EXACT_KINDS}
    _check_schedules(learned, schedule)
    if schedule is None:
        schedule = next(iter(learned.values())).schedule if learned else schedules.default()
    models = {leaf: learned[leaf] if leaf in learned else registry.resolve(leaf, schedule) for leaf in graph_leaves}
    dims = {leaf: m.dim for leaf, m in models.items()}
    shape = _canvas_shape(root, canvas, dims)
    frame = Frame(None, shape, "the canvas")
    atoms = _check_shapes(root, frame, dims, inferred=canvas is None)
    _check_mixtures(root, models)
    if all(isinstance(m, Oracle) for m in models.values()):
        check_normalisable(root, frame, models, schedule, levels)
    lowering = _Lowering(atoms, models, frame.size)
    root_slot = lowering.slot_of(root, frame)
    return AnnealedTarget(root, shape, schedule, models, lowering, root_slot)
