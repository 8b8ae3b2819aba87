"""Batched velocity Verlet (leapfrog) for the potential ``-log p``, with non-finite chains frozen.

Each step is one batched target call on the chains that are still moving; a chain whose
position, momentum, log density or gradient becomes NaN or infinite stops at its last finite
point and is reported in :attr:`Trajectory.finite`. For a score-only target the log density is
tracked by Gauss-Lobatto quadrature along each segment of the path
(:mod:`rrrdsl.samplers.line_integral`).

References
----------
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. Handbook of MCMC, ch. 5 (leapfrog, eq. 5.18-5.20).
Leimkuhler, B. & Reich, S. (2004). Simulating Hamiltonian Dynamics (velocity Verlet).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .chains import GradFn, is_finite, where_chains
from .line_integral import line_integral


def kinetic(p: torch.Tensor) -> torch.Tensor:
    """Kinetic energy ``|p|^2 / 2`` per chain (identity mass matrix)."""
    return 0.5 * (p * p).sum(dim=-1)


class Point(NamedTuple):
    """A phase-space point of every chain: position, momentum, log density and its gradient."""

    x: torch.Tensor  # [N, D]
    p: torch.Tensor  # [N, D]
    log_prob: Optional[torch.Tensor]  # [N]; None when not tracked
    grad: torch.Tensor  # [N, D]


class Trajectory(NamedTuple):
    """The end of a batched leapfrog trajectory.

    ``log_prob`` is exact when the target gives energies; for a score-only target it is the
    start value plus the line integral of the gradient along the leapfrog path
    (:mod:`rrrdsl.samplers.line_integral`), reusing the leapfrog gradients at the segment ends.
    """

    end: Point
    finite: torch.Tensor  # [N] bool: every point of the path was finite (else frozen at the last finite one)
    nfe: torch.Tensor  # [N] gradient evaluations spent per chain


def leapfrog(
    start: Point,
    evaluate: GradFn,
    step_size: torch.Tensor,
    num_steps: int,
    active: Optional[torch.Tensor] = None,
    points: int = 2,
) -> Trajectory:
    """``num_steps`` velocity-Verlet steps of signed size ``step_size`` for the potential ``-log p``.

    One step: ``p <- p + ε/2 ∇log p(x)``, ``x <- x + ε p``, ``p <- p + ε/2 ∇log p(x)`` (Neal 2011,
    eq. 5.18-5.20). The gradient at the start is taken from ``start.grad`` (cached), so the path
    costs ``num_steps`` evaluations; each step is one batched target call on the chains that are
    still moving.

    Parameters
    ----------
    start
        Where every chain starts. ``start.log_prob`` is ``None`` to skip log-density tracking.
    evaluate
        :func:`grad_fn` of the target and level.
    step_size
        ``[N, 1]`` per-chain (signed) step sizes, see :func:`chain_column`.
    num_steps
        Leapfrog steps ``L >= 1``.
    active
        ``[N]`` bool: only these chains move and are evaluated (all when ``None``); the others keep
        their start point and spend no evaluations.
    points
        Gauss-Lobatto points of the line integral along each segment of a score-only path
        (:func:`~rrrdsl.samplers.line_integral.line_integral`; 2, the trapezoid, costs nothing
        extra, each further point one gradient evaluation per step).
    """
    x, p, log_prob, grad = start
    n = x.shape[0]
    moving = torch.ones(n, dtype=torch.bool, device=x.device) if active is None else active.clone()
    finite = torch.ones(n, dtype=torch.bool, device=x.device)
    nfe = torch.zeros(n, dtype=torch.long, device=x.device)
    half = 0.5 * step_size
    for _ in range(num_steps):
        if not bool(moving.any()):
            break
        idx = moving.nonzero().squeeze(-1)
        x_old, grad_old = x.index_select(0, idx), grad.index_select(0, idx)
        eps, half_eps = step_size.index_select(0, idx), half.index_select(0, idx)
        p_half = p.index_select(0, idx) + half_eps * grad_old
        x_new = x_old + eps * p_half
        lp_new, grad_new = evaluate(x_new)
        p_new = p_half + half_eps * grad_new
        extra = 0
        if log_prob is not None and lp_new is None:  # score-only: quadrature estimate of the change
            score = lambda y: evaluate(y)[1]  # noqa: E731
            lp_new = log_prob.index_select(0, idx) + line_integral(x_old, grad_old, x_new, grad_new, score, points)
            extra = points - 2
        ok = torch.zeros_like(moving).index_copy(0, idx, is_finite(x_new, p_new, grad_new, lp_new))
        nfe += moving * (1 + extra)
        x = where_chains(ok, x.index_copy(0, idx, x_new), x)
        p = where_chains(ok, p.index_copy(0, idx, p_new), p)
        grad = where_chains(ok, grad.index_copy(0, idx, grad_new), grad)
        if log_prob is not None:
            log_prob = where_chains(ok, log_prob.index_copy(0, idx, lp_new), log_prob)
        finite &= ok | ~moving
        moving &= ok
    return Trajectory(Point(x, p, log_prob, grad), finite, nfe)
