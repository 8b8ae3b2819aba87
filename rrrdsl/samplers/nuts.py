"""Batched No-U-Turn sampler with multinomial trajectory sampling.

Every step draws a fresh momentum ``p ~ N(0, I)`` and grows a leapfrog trajectory around the
current point by repeated doubling (Hoffman & Gelman, 2014): at depth ``j`` each chain picks a
direction ``v = ±1`` and extends its trajectory by a subtree of ``2^j`` leapfrog steps of size
``v ε`` from the corresponding end. Points are weighted by ``exp(-H)`` (``H = -log p + |p|²/2``):

* inside a subtree the candidate is drawn in proportion to the weights (progressive uniform
  multinomial sampling), and
* the subtree's candidate replaces the current one with probability
  ``min(1, W_subtree / W_old)`` (biased progressive sampling, Betancourt, 2017, appendix A).

A chain stops when its trajectory makes a U-turn, by the generalised criterion on the momentum sum
``ρ = Σ p_i`` of a (sub)tree with end momenta ``p⁻, p⁺``: it continues while ``ρ·p⁻ > 0`` and
``ρ·p⁺ > 0`` (Betancourt, 2017, §4.2; identity mass matrix). The criterion is checked for the
whole trajectory after every doubling and, inside a new subtree, for every completed sub-subtree
(sizes 2, 4, ..., 2^j), as in the recursive algorithm; a U-turn inside a subtree, or a divergence
(non-finite point or energy error ``H - H_0 > 1000``), discards that subtree and stops the chain.
``max_tree_depth`` bounds the number of doublings.

Batching: the subtree is built leaf by leaf (an iterative form of the recursion, keeping for each
sub-subtree size the momentum of its first leaf and the momentum sum before it), all chains at
the same depth together; each leapfrog step is one batched target call on the chains that are
still running. Finished chains stop moving and spend no evaluations.

References
----------
Hoffman, M. D. & Gelman, A. (2014). The No-U-Turn sampler. JMLR 15, 1593-1623.
Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo. arXiv:1701.02434.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import torch

from ..schedules import Level
from .base import AnnealedDefaults, OptionsKernel, StepInfo, StepSize, Target
from .chains import GradFn, chain_column, grad_fn, require_energy, standard_normal, uniform, where_chains
from .leapfrog import Point, kinetic, leapfrog
from .metropolis import MAX_ENERGY_ERROR
from .options import check_int


@dataclass(frozen=True)
class NUTSOptions:
    """Options of :class:`NUTS`.

    Parameters
    ----------
    max_tree_depth
        Maximum number of trajectory doublings, 1..15 (at most ``2^max_tree_depth - 1`` leapfrog
        steps per step).

    ``target_accept`` is 0.8 for the mean of ``min(1, exp(H_0 - H))`` over the trajectory's
    leaves (Hoffman & Gelman, 2014, §3.2.1).
    """

    max_tree_depth: int = 10

    needs_energy: ClassVar[bool] = True
    target_accept: ClassVar[Optional[float]] = 0.8

    def __post_init__(self) -> None:
        check_int("max_tree_depth", self.max_tree_depth, 1, 15)

    @property
    def step_nfe(self) -> int:
        """Most gradient evaluations of one step: a full tree of ``2^max_tree_depth - 1`` leapfrog steps."""
        return 2**self.max_tree_depth - 1


#: annealed NUTS: 20 transitions of at most 3 doublings (7 leapfrog steps) at each of the last
#: ten levels, step size adapted from ``beta_t ** 0.5`` (HMC's)
NUTS_ANNEALED = AnnealedDefaults(steps=20, step_scale=1.0, step_exponent=0.5, kernel=NUTSOptions(max_tree_depth=3))


class NUTSState(NamedTuple):
    """NUTS chains: positions with cached log density and gradient (momentum is redrawn every step)."""

    x: torch.Tensor  # [N, D]
    log_prob: torch.Tensor  # [N]
    grad: torch.Tensor  # [N, D]


class Subtree(NamedTuple):
    """A subtree of ``2^j`` leaves grown from one end of the trajectory."""

    edge: Point  # its last leaf: the trajectory's new end
    candidate: Point  # the leaf drawn in proportion to exp(-H)
    log_weight: torch.Tensor  # [N] log Σ exp(-(H - H_0)) over its leaves
    momentum_sum: torch.Tensor  # [N, D]
    valid: torch.Tensor  # [N] bool: completed without U-turn or divergence
    divergent: torch.Tensor  # [N] bool
    accept_sum: torch.Tensor  # [N] Σ min(1, exp(H_0 - H)) over its leaves
    num_leaves: torch.Tensor  # [N] leaves computed (= gradient evaluations)


def is_turning(p_minus: torch.Tensor, p_plus: torch.Tensor, momentum_sum: torch.Tensor) -> torch.Tensor:
    """Generalised U-turn criterion (Betancourt, 2017): ``ρ·p⁻ <= 0`` or ``ρ·p⁺ <= 0``, per chain."""
    return ((momentum_sum * p_minus).sum(-1) <= 0) | ((momentum_sum * p_plus).sum(-1) <= 0)


def _choose(mask: torch.Tensor, new: Point, old: Point) -> Point:
    """Per-chain choice between two phase-space points."""
    return Point(*(where_chains(mask, a, b) for a, b in zip(new, old)))


class NUTS(OptionsKernel):
    """Batched multinomial No-U-Turn sampler (Hoffman & Gelman, 2014; Betancourt, 2017).

    Options: :class:`NUTSOptions` (``max_tree_depth``).

    ``StepInfo.accept_prob`` is the mean of ``min(1, exp(H_0 - H))`` over the trajectory's leaves
    (Hoffman & Gelman, 2014, §3.2.1), the statistic for step-size adaptation (target 0.8);
    ``nfe`` counts each chain's leapfrog steps.
    """

    name = "nuts"
    Options = NUTSOptions
    annealed = NUTS_ANNEALED

    def init(self, x: torch.Tensor, target: Target, t: Level) -> NUTSState:
        """Cache ``log p_t(x)`` and its gradient."""
        require_energy(self.name, target, hint="use an unadjusted kernel (ULA, UHA) or MALA/HMC with mh='line_integral'")
        return NUTSState(x, *target.log_prob_and_grad(x, t))

    def leaf_log_weight(self, delta_energy: torch.Tensor) -> torch.Tensor:
        """Log multinomial weight of a leaf, ``-(H - H_0)``."""
        return -delta_energy

    def step(
        self, state: NUTSState, target: Target, t: Level, step_size: StepSize, generator: Optional[torch.Generator]
    ) -> tuple[NUTSState, StepInfo]:
        """One NUTS transition per chain."""
        x = state.x
        n = x.shape[0]
        evaluate = grad_fn(target, t, energy=True)
        eps = chain_column(step_size, x)
        p0 = standard_normal(x, generator)
        start = Point(x, p0, state.log_prob, state.grad)
        energy0 = -state.log_prob + kinetic(p0)
        left = right = candidate = start
        log_weight = torch.zeros_like(energy0)  # the initial point has weight exp(0)
        momentum_sum = p0
        running = torch.ones(n, dtype=torch.bool, device=x.device)
        moved = torch.zeros_like(running)
        divergent = torch.zeros_like(running)
        accept_sum = torch.zeros_like(energy0)
        nfe = torch.zeros(n, dtype=torch.long, device=x.device)
        for depth in range(self.options.max_tree_depth):
            forward = uniform(n, x, generator) < 0.5
            direction = torch.where(forward, 1.0, -1.0).to(x.dtype)[:, None]
            begin = _choose(forward, right, left)
            sub = self._subtree(begin, evaluate, direction * eps, depth, running, energy0, generator)
            nfe += sub.num_leaves
            accept_sum += sub.accept_sum
            divergent |= sub.divergent
            # biased progressive sampling: prefer the new subtree (Betancourt, 2017, appendix A.3.2)
            take = sub.valid & (uniform(n, x, generator) < torch.exp(torch.clamp(sub.log_weight - log_weight, max=0.0)))
            candidate = _choose(take, sub.candidate, candidate)
            moved |= take
            log_weight = torch.where(sub.valid, torch.logaddexp(log_weight, sub.log_weight), log_weight)
            right = _choose(sub.valid & forward, sub.edge, right)
            left = _choose(sub.valid & ~forward, sub.edge, left)
            momentum_sum = where_chains(sub.valid, momentum_sum + sub.momentum_sum, momentum_sum)
            running = sub.valid & ~is_turning(left.p, right.p, momentum_sum)
            if not bool(running.any()):
                break
        accept_prob = accept_sum / nfe.clamp(min=1).to(x.dtype)
        new_state = NUTSState(candidate.x, candidate.log_prob, candidate.grad)
        return new_state, StepInfo(accept_prob, moved, divergent, nfe)

    def _subtree(
        self,
        begin: Point,
        evaluate: GradFn,
        step_size: torch.Tensor,
        depth: int,
        active: torch.Tensor,
        energy0: torch.Tensor,
        generator: Optional[torch.Generator],
    ) -> Subtree:
        """Grow ``2^depth`` leaves from ``begin`` (iteratively), for the chains in ``active``.

        Leaf ``i`` closes the sub-subtrees of size ``2^k`` with ``(i + 1) % 2^k == 0``; each is
        checked for a U-turn with the first-leaf momentum and momentum-sum checkpoints stored when
        it opened (``i % 2^k == 0``), ``k = 1..depth``.
        """
        n = begin.x.shape[0]
        active = active.clone()
        point = candidate = begin
        log_weight = torch.full_like(energy0, -math.inf)
        momentum_sum = torch.zeros_like(begin.p)
        divergent = torch.zeros_like(active)
        accept_sum = torch.zeros_like(energy0)
        num_leaves = torch.zeros(n, dtype=torch.long, device=begin.x.device)
        first_p: dict[int, torch.Tensor] = {}
        sum_before: dict[int, torch.Tensor] = {}
        for i in range(2**depth):
            if not bool(active.any()):
                break
            trajectory = leapfrog(point, evaluate, step_size, 1, active)
            point = trajectory.end
            num_leaves += trajectory.nfe
            delta_energy = -point.log_prob + kinetic(point.p) - energy0
            leaf_divergent = active & (~trajectory.finite | ~(delta_energy <= MAX_ENERGY_ERROR))
            divergent |= leaf_divergent
            alive = active & ~leaf_divergent
            accept_sum += torch.where(alive, torch.exp(torch.clamp(-delta_energy, max=0.0)), 0.0)
            # progressive multinomial sampling within the subtree
            leaf_log_weight = torch.where(alive, self.leaf_log_weight(delta_energy), -math.inf)
            new_log_weight = torch.logaddexp(log_weight, leaf_log_weight)
            take = alive & (uniform(n, energy0, generator) < torch.exp(leaf_log_weight - new_log_weight))
            candidate = _choose(take, point, candidate)
            log_weight = torch.where(alive, new_log_weight, log_weight)
            for k in range(1, depth + 1):
                if i % 2**k == 0:
                    first_p[k], sum_before[k] = point.p, momentum_sum
            momentum_sum = where_chains(alive, momentum_sum + point.p, momentum_sum)
            turning = torch.zeros_like(alive)
            for k in range(1, depth + 1):
                if (i + 1) % 2**k == 0:
                    turning |= is_turning(first_p[k], point.p, momentum_sum - sum_before[k])
            active = alive & ~turning
        return Subtree(point, candidate, log_weight, momentum_sum, active, divergent, accept_sum, num_leaves)
