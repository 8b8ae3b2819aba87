"""The tail proof: is a composition normalisable at every level?

Exact oracles know their tails. A learned model's tail is not known; the rule for it: the
learned models of one schedule share, at each noisy level, one Gaussian tail precision ``λ_t``
between that of noised data of standard deviation :data:`LEARNED_SCALE`
(``1 / (s^2 alpha_bar_t + sigma_t^2)``) and that of noised bounded data (``1 / sigma_t^2``, the
sharpest a VP marginal ``q_0 * N(0, sigma_t^2)`` can have). The net tail is linear in ``λ_t``,
so the composition is proper for every such ``λ_t`` when it is at both ends: the proof runs
with each stand-in (:func:`learned_tails`). So ``model("a") ** 3 / model("b") ** 2`` (net
exponent 1) is proper, while ``model("ring") ** -1`` and ``model("ring") / oracle("ring")``
are refused; the clean level, where learned models are not evaluated, is not checked for them.

:func:`check_normalisable` bounds and probes the quadratic coefficient of the composed log
density's tail. It runs in time linear in the number of leaves: each oracle is asked for its
tail precisions together with the other oracles of its kind (Gaussian mixtures, boxes) in one
call per level, their tails are stacked into one tensor, and every product of leaves is summed with one
``index_add_`` per stack instead of one dense ``[L, D]`` tensor per leaf.
"""

from __future__ import annotations

import math
from typing import Hashable, NamedTuple, Optional, Sequence, Union

import torch

from ..errors import CompileError, InvalidValueError
from ..lang.ir import Expr, Leaf, Mixture, Power, Product, View
from ..models.base import Model
from ..models.oracles import Box, GaussianMixture, Oracle
from ..schedules import CLEAN, Level, Schedule
from .frames import Frame, crop_frame

#: how many float64 entries one chunk of leaves may fill while probing (128 MiB)
_PROBE_CHUNK = 2**24


def check_levels(schedule: Schedule, levels: Optional[Sequence[Level]] = None) -> list[Union[int, str]]:
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


def probe_directions(dim: int) -> torch.Tensor:
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


def _batch(model: Oracle) -> Hashable:
    """Oracles with equal keys are asked for their tail precisions together (:func:`_precisions`)."""
    match model:
        case GaussianMixture() if type(model) is GaussianMixture:
            return GaussianMixture, model.schedule, model.std.shape
        case Box() if type(model) is Box:
            return Box, model.schedule, model.dim
        case _:
            return id(model)


def _precisions(models: list[Oracle], levels: list[Union[int, str]]) -> torch.Tensor:
    """``[L, n, K, d]``: ``tail_precisions(t)`` of ``n`` oracles of one :func:`_batch` at every level.

    A Gaussian mixture's tail precisions are per component and a box's per axis, each set by
    that component's (axis's) own parameters and the schedule: the components of ``n`` mixtures
    form one mixture, the axes of ``n`` boxes one box, which is asked once per level. Any
    other oracle is asked alone.
    """
    first, n = models[0], len(models)
    match first:
        case GaussianMixture() if n > 1:
            joint = GaussianMixture(torch.cat([m.means for m in models]), torch.cat([m.std for m in models]), schedule=first.schedule)  # type: ignore[attr-defined]
            lam = torch.stack([joint.tail_precisions(t) for t in levels])  # [L, n K, d]
            return lam.reshape(len(levels), n, -1, lam.shape[-1])
        case Box() if n > 1:
            joint = Box(torch.cat([m.low for m in models]), torch.cat([m.high for m in models]), schedule=first.schedule)  # type: ignore[attr-defined]
            lam = torch.stack([joint.tail_precisions(t) for t in levels])  # [L, 1, n d]
            return lam.reshape(len(levels), n, 1, -1)
        case _:
            return torch.stack([torch.stack([m.tail_precisions(t) for m in models]) for t in levels])


class _Tail(NamedTuple):
    """The tail of ``log p``: ``lower``/``upper`` ``[L, D]`` per-axis bounds on the quadratic
    coefficient ``F`` at every level, and ``exact`` ``[L', M]``: ``F`` in each probe direction
    at the probed levels."""

    lower: torch.Tensor
    upper: torch.Tensor
    exact: torch.Tensor


class _Stack(NamedTuple):
    """The ``n`` leaves of one batch (:func:`_batch`): ``precisions`` ``[L, n, K, d]``; ``lower``
    ``[L, n, d]`` the smallest component precision per axis; ``upper`` ``[L, n, d]`` the
    precisions of the component with the smallest total precision."""

    precisions: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor


class _Form(NamedTuple):
    """``Σ coef · log term`` of a mixture-free part of the graph: ``leaves`` holds
    ``(leaf, canvas positions, coef)``, ``mixtures`` ``(component forms, coef)``."""

    leaves: list[tuple[Leaf, tuple[int, ...], float]]
    mixtures: list[tuple[list["_Form"], float]]


def _form(node: Expr, frame: Frame, coef: float = 1.0, form: Optional[_Form] = None) -> _Form:
    """Collect ``coef · log node`` into ``form`` (a new one by default): powers multiply the
    coefficient, crops change the frame, each mixture becomes its components' forms."""
    form = form if form is not None else _Form([], [])
    match node:
        case Leaf():
            form.leaves.append((node, frame.positions(), coef))
        case Product(terms=terms):
            for term in terms:
                _form(term, frame, coef, form)
        case Power(term=term, exponent=exponent):
            _form(term, frame, coef * exponent, form)
        case View(term=term):
            _form(term, crop_frame(frame, node), coef, form)
        case Mixture(terms=terms):
            form.mixtures.append(([_form(term, frame) for term in terms], coef))
    return form


class _Tails:
    """The tails of every leaf, stacked by batch (:func:`_batch`), and the evaluation of forms
    over them."""

    def __init__(self, models: dict[Leaf, Model], levels: list[Union[int, str]], probes: torch.Tensor) -> None:
        batches: dict[Hashable, list[Leaf]] = {}
        for leaf, m in models.items():
            batches.setdefault(_batch(m), []).append(leaf)  # type: ignore[arg-type]
        self.stacks: list[_Stack] = []
        self.where: dict[Leaf, tuple[int, int]] = {}
        for s, members in enumerate(batches.values()):
            lam = _precisions([models[leaf] for leaf in members], levels)  # type: ignore[misc]
            best = lam.sum(-1).argmin(-1)  # [L, n]: the component with the smallest total precision
            upper = lam.gather(2, best[:, :, None, None].expand(-1, -1, 1, lam.shape[-1])).squeeze(2)
            self.stacks.append(_Stack(lam, lam.min(2).values, upper))
            self.where.update((leaf, (s, i)) for i, leaf in enumerate(members))
        self.num_levels = len(levels)
        self.probes = probes

    def evaluate(self, form: _Form, probed: torch.Tensor) -> _Tail:
        """The tail of ``form`` (``exact`` at the levels ``probed``): weighted sums of the leaves'
        bounds (a negative weight swaps lower and upper), the mixture rule for each mixture."""
        size = self.probes.shape[1]
        lower = torch.zeros(self.num_levels, size, dtype=torch.float64)
        upper = torch.zeros_like(lower)
        exact = torch.zeros(len(probed), len(self.probes), dtype=torch.float64)
        parts: dict[int, tuple[list[int], list[tuple[int, ...]], list[float]]] = {}
        for leaf, positions, coef in form.leaves:
            s, i = self.where[leaf]
            rows, places, coefs = parts.setdefault(s, ([], [], []))
            rows.append(i)
            places.append(positions)
            coefs.append(coef)
        for s, (rows, places, coefs) in parts.items():
            stack = self.stacks[s]
            index = torch.tensor(rows, dtype=torch.long)
            at = torch.tensor(places, dtype=torch.long)  # [a, d]: the canvas positions of each leaf
            c = torch.tensor(coefs, dtype=torch.float64)
            low, high = stack.lower[:, index], stack.upper[:, index]  # [L, a, d]
            flat, w = at.reshape(-1), c[:, None]
            lower.index_add_(1, flat, torch.where(w > 0, w * low, w * high).reshape(self.num_levels, -1))
            upper.index_add_(1, flat, torch.where(w > 0, w * high, w * low).reshape(self.num_levels, -1))
            if len(probed):
                exact += self._probe(stack.precisions[probed], index, at, c)
        for components, coef in form.mixtures:
            mix = self._mixture([self.evaluate(f, probed) for f in components])
            low, high = (mix.lower, mix.upper) if coef > 0 else (mix.upper, mix.lower)
            lower += coef * low
            upper += coef * high
            exact += coef * mix.exact
        return _Tail(lower, upper, exact)

    def _probe(self, precisions: torch.Tensor, index: torch.Tensor, at: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``Σ_i c_i min_k Σ_d λ_ikd u_d`` ``[L', M]`` for the ``precisions`` ``[L', n, K, d]``
        of the leaves ``index`` of one stack, in chunks of at most :data:`_PROBE_CHUNK` entries."""
        probed, _, k, d = precisions.shape
        step = max(1, _PROBE_CHUNK // (probed * len(self.probes) * k * d))
        out = torch.zeros(probed, len(self.probes), dtype=torch.float64)
        for a in range(0, len(index), step):
            lam = precisions[:, index[a : a + step], None]  # [L', a, 1, K, d]
            u = self.probes[:, at[a : a + step]].transpose(0, 1)[None, :, :, None, :]  # [1, a, M, 1, d]
            quad = (lam * u).masked_fill(u == 0, 0.0)  # inf * 0 is 0 here
            out += (c[None, a : a + step, None] * quad.sum(-1).min(dim=-1).values).sum(1)
        return out

    @staticmethod
    def _mixture(parts: list[_Tail]) -> _Tail:
        """The heaviest tail dominates a mixture; any one component bounds it from above."""
        best = min(range(len(parts)), key=lambda j: float(parts[j].upper.sum()))
        return _Tail(
            torch.stack([p.lower for p in parts]).min(0).values,
            parts[best].upper,
            torch.stack([p.exact for p in parts]).min(0).values,
        )


#: the standard deviation of the widest clean data a learned model is taken to describe
LEARNED_SCALE = 100.0


def learned_tails(model: Model, schedule: Schedule) -> tuple[Oracle, Oracle]:
    """The two stand-ins for a learned ``model`` in the tail proof, of its dimension: the
    sharpest tail (a box: precision ``1 / sigma_t^2``) and the widest (a Gaussian of standard
    deviation :data:`LEARNED_SCALE`)."""
    ones = torch.ones(model.dim, dtype=torch.float64)
    return Box(-ones, ones, schedule=schedule), GaussianMixture(torch.zeros(1, model.dim, dtype=torch.float64), LEARNED_SCALE, schedule=schedule)


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

    * **Sufficient** (a proof): per-axis coefficients ``lower`` with
      ``F(u) >= Σ_d lower_d u_d``. A factor under a positive power contributes its smallest
      component precision per axis (``min_k Σ λ_kd u_d >= Σ min_k λ_kd u_d``); under a
      negative power, ``log q >= log π_k + log N_k`` for *every* component ``k``, so
      ``-log q`` grows at most like one component's quadratic: the upper bound uses the single
      component with the smallest total precision. If ``lower > 0`` on every axis the level
      is accepted.
    * **Necessary** (a disproof): ``F`` is evaluated exactly in probe directions (every axis,
      and a grid of the simplex, :func:`probe_directions`). ``F(u) <= 0`` (or NaN, e.g.
      ``inf - inf`` of clean boxes) in any of them means the density does not decay there:
      the composition is rejected with that level and direction.
    * Between the two (the bound fails, every probe is positive) the level is accepted: ``F``
      is piecewise linear in ``u``, so only a region narrower than the probe spacing could hide.

    A clean box has precision ``inf``: under a positive power it cuts the tail off, under a
    negative power it is infinite outside its support (``F = -inf``).

    Products are flattened into one weighted sum of leaves (:func:`_form`), so the work is
    linear in the number of leaves; the sums may round differently in the last bit from a
    term-by-term evaluation.
    """
    levels = check_levels(schedule, levels)
    if all(isinstance(m, Oracle) for m in models.values()):
        return _prove(root, frame, models, levels, learned=False)  # type: ignore[arg-type]
    noisy = [t for t in levels if t != CLEAN]  # where learned models are evaluated
    for end in range(2):  # the sharpest and the widest learned tails
        stand_ins = {leaf: m if isinstance(m, Oracle) else learned_tails(m, schedule)[end] for leaf, m in models.items()}
        if noisy:
            _prove(root, frame, stand_ins, noisy, learned=True)


def _prove(root: Expr, frame: Frame, models: dict[Leaf, Oracle], levels: list[Union[int, str]], learned: bool) -> None:
    """:func:`check_normalisable` with oracles only (``learned``: some are stand-ins)."""
    probes = probe_directions(frame.size)
    tails = _Tails(models, levels, probes)
    form = _form(root, frame)
    bounds = tails.evaluate(form, torch.zeros(0, dtype=torch.long))
    unproven = torch.nonzero(~(bounds.lower > 0).all(-1)).reshape(-1)
    if unproven.numel() == 0:
        return
    exact = tails.evaluate(form, unproven).exact
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
            "every canvas coordinate needs a factor whose density decays along it"
            + (
                "; learned models are taken to share one tail, between that of noised bounded data and of data "
                f"of std {LEARNED_SCALE:g}, so their exponents on each coordinate must sum to more than 0 and outweigh the oracles' divisors"
                if learned
                else ""
            ),
        )

