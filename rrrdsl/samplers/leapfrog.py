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

from .chains import GradFn, chain_constant, finite_chains, is_finite, where_chains
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
    # while every chain moves (the common case) whole tensors are used, with no index selection,
    # and one finite sum per step (:func:`finite_chains`) stands for the per-chain masks
    moving = None if active is None else active.clone()
    finite = torch.ones(n, dtype=torch.bool, device=x.device)
    evals = 0  # evaluations of every chain while all move
    nfe = None if active is None else torch.zeros(n, dtype=torch.long, device=x.device)
    half = 0.5 * step_size
    for _ in range(num_steps):
        if moving is None:
            idx, x_old, grad_old, p_old, eps, half_eps = None, x, grad, p, step_size, half
        else:
            if not bool(moving.any()):
                break
            idx = moving.nonzero().squeeze(-1)
            x_old, grad_old, p_old = x.index_select(0, idx), grad.index_select(0, idx), p.index_select(0, idx)
            eps, half_eps = step_size.index_select(0, idx), half.index_select(0, idx)
        p_half = torch.addcmul(p_old, half_eps, grad_old)
        x_new = torch.addcmul(x_old, eps, p_half)
        lp_new, grad_new = evaluate(x_new)
        p_new = torch.addcmul(p_half, half_eps, grad_new)
        extra = 0
        if log_prob is not None and lp_new is None:  # score-only: quadrature estimate of the change
            score = lambda y: evaluate(y)[1]  # noqa: E731
            lp_old = log_prob if idx is None else log_prob.index_select(0, idx)
            lp_new = lp_old + line_integral(x_old, grad_old, x_new, grad_new, score, points)
            extra = points - 2
        if moving is None:
            evals += 1 + extra
            ok = finite_chains(x_new, p_new, grad_new, lp_new)
            if ok is None:
                x, p, grad = x_new, p_new, grad_new
                log_prob = lp_new if log_prob is not None else None
                continue
            moving = torch.ones(n, dtype=torch.bool, device=x.device)
            nfe = torch.full((n,), evals, dtype=torch.long, device=x.device)
        else:
            ok = torch.zeros_like(moving).index_copy(0, idx, is_finite(x_new, p_new, grad_new, lp_new))
            nfe += moving * (1 + extra)
        x, p, grad = (_merge(ok, idx, old, new) for old, new in ((x, x_new), (p, p_new), (grad, grad_new)))
        if log_prob is not None:
            log_prob = _merge(ok, idx, log_prob, lp_new)
        finite &= ok | ~moving
        moving &= ok
    if nfe is None:
        nfe = chain_constant(n, evals, x.device)
    return Trajectory(Point(x, p, log_prob, grad), finite, nfe)


def _merge(ok: torch.Tensor, idx: Optional[torch.Tensor], old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``new`` (the rows ``idx`` of the chains that moved; every chain when ``None``) where ``ok``, else ``old``."""
    return where_chains(ok, new if idx is None else old.index_copy(0, idx, new), old)
