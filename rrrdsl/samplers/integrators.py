"""Numerics shared by the MCMC kernels: target evaluation with non-finite detection, batched
velocity Verlet (leapfrog), Gaussian momenta, and option validation.

Every function works on a batch of ``N`` independent chains (leading dimension) in the dtype and
on the device of ``x``. A chain whose position, momentum, log density or gradient becomes NaN or
infinite is *frozen* at its last finite point and reported through a per-chain ``finite`` mask, so
a non-finite value is never written into a kernel state (the kernels reject such chains and flag
them divergent).

References
----------
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. Handbook of MCMC, ch. 5 (leapfrog, eq. 5.18-5.20).
Leimkuhler, B. & Reich, S. (2004). Simulating Hamiltonian Dynamics (velocity Verlet).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from ..errors import SamplerError, suggest
from ..schedules import Level
from .base import StepSize, Target
from .line_integral import trapezoid

#: an energy error ``H(proposal) - H(start)`` above this counts as a divergence (Stan, pyro)
MAX_ENERGY_ERROR = 1000.0

#: ``x -> (log_prob or None, grad)``; ``None`` when only the score is available
GradFn = Callable[[torch.Tensor], tuple[Optional[torch.Tensor], torch.Tensor]]


def grad_fn(target: Target, t: Level, energy: bool) -> GradFn:
    """The evaluation a kernel needs at level ``t``: ``target.log_prob_and_grad`` when it needs
    energies (one forward and one backward pass), otherwise ``target.score`` (score-only targets)."""
    if energy:
        return lambda x: target.log_prob_and_grad(x, t)
    return lambda x: (None, target.score(x, t))


def require_energy(kernel_name: str, target: Target, hint: str) -> None:
    """Raise :class:`SamplerError` when a kernel needs log densities that ``target`` lacks."""
    if not target.has_energy:
        raise SamplerError(f"kernel {kernel_name!r} needs log densities but the target is score-only", hint=hint)


def is_finite(*tensors: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-chain mask ``[N]``: every entry of every given tensor (``[N]`` or ``[N, D]``) is finite."""
    masks = [torch.isfinite(v).reshape(v.shape[0], -1).all(dim=-1) for v in tensors if v is not None]
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out


def chain_column(step_size: StepSize, x: torch.Tensor) -> torch.Tensor:
    """``step_size`` (a float or a per-chain tensor ``[N]``) as a column ``[N, 1]`` in x's dtype/device."""
    eps = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    return eps.reshape(-1, 1).expand(x.shape[0], 1)


def standard_normal(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` (Langevin noise; momenta with identity mass matrix)."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def uniform(n: int, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``n`` uniforms on [0, 1) in the dtype/device of ``like`` (one per chain)."""
    return torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)


def kinetic(p: torch.Tensor) -> torch.Tensor:
    """Kinetic energy ``|p|^2 / 2`` per chain (identity mass matrix)."""
    return 0.5 * (p * p).sum(dim=-1)


def where_chains(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per-chain ``torch.where``: ``new`` for chains where ``mask`` (``[N]``) holds, else ``old``
    (tensors ``[N]`` or ``[N, D]``); non-finite values of unselected chains never leak through."""
    return torch.where(mask.reshape(mask.shape + (1,) * (new.dim() - 1)), new, old)


class Point(NamedTuple):
    """A phase-space point of every chain: position, momentum, log density and its gradient."""

    x: torch.Tensor  # [N, D]
    p: torch.Tensor  # [N, D]
    log_prob: Optional[torch.Tensor]  # [N]; None when not tracked
    grad: torch.Tensor  # [N, D]


class Trajectory(NamedTuple):
    """The end of a batched leapfrog trajectory.

    ``log_prob`` is exact when the target gives energies; for a score-only target it is the
    start value plus the trapezoid-rule line integral of the gradient along the leapfrog path
    (:mod:`rrrdsl.samplers.line_integral`), reusing the leapfrog gradients.
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
        if log_prob is not None and lp_new is None:  # score-only: trapezoid estimate of the change
            lp_new = log_prob.index_select(0, idx) + trapezoid(x_old, grad_old, x_new, grad_new)
        ok = torch.zeros_like(moving).index_copy(0, idx, is_finite(x_new, p_new, grad_new, lp_new))
        nfe += moving
        x = where_chains(ok, x.index_copy(0, idx, x_new), x)
        p = where_chains(ok, p.index_copy(0, idx, p_new), p)
        grad = where_chains(ok, grad.index_copy(0, idx, grad_new), grad)
        if log_prob is not None:
            log_prob = where_chains(ok, log_prob.index_copy(0, idx, lp_new), log_prob)
        finite &= ok | ~moving
        moving &= ok
    return Trajectory(Point(x, p, log_prob, grad), finite, nfe)


def check_choice(option: str, value: str, choices: Sequence[str]) -> str:
    """Validate a string option against its allowed values (with a 'did you mean' hint)."""
    if value not in choices:
        hint = suggest(str(value), choices) or "expected one of " + ", ".join(repr(c) for c in choices)
        raise SamplerError(f"unknown value {value!r} for option {option!r}", hint=hint)
    return value


def check_int(option: str, value: int, low: int, high: Optional[int] = None) -> int:
    """Validate an integer option in ``[low, high]`` (``high=None``: unbounded)."""
    bad_type = isinstance(value, bool) or not isinstance(value, int)
    if bad_type or value < low or (high is not None and value > high):
        expected = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise SamplerError(f"option {option!r} = {value!r} is out of range", hint=f"expected {expected}")
    return value


def check_unit_interval(option: str, value: float) -> float:
    """Validate a real option in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
        raise SamplerError(f"option {option!r} = {value!r} is out of range", hint="expected a number in [0, 1)")
    return float(value)


def metropolis(
    log_ratio: torch.Tensor, generator: Optional[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-chain Metropolis-Hastings test.

    Returns ``(accept_prob, accepted, divergent)``: ``min(1, exp(log_ratio))`` with a NaN ratio
    read as a rejection, the per-chain decision ``u < accept_prob`` with one uniform per chain,
    and the divergence flag ``-log_ratio > MAX_ENERGY_ERROR`` (which includes every non-finite
    proposal, whose ratio the caller sets to ``-inf``). A divergent proposal is never accepted.
    """
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    accept_prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    divergent = log_ratio < -MAX_ENERGY_ERROR
    accepted = (uniform(log_ratio.shape[0], log_ratio, generator) < accept_prob) & ~divergent
    return accept_prob, accepted, divergent


__all__ = [
    "MAX_ENERGY_ERROR",
    "GradFn",
    "Point",
    "Trajectory",
    "grad_fn",
    "require_energy",
    "is_finite",
    "chain_column",
    "standard_normal",
    "uniform",
    "kinetic",
    "leapfrog",
    "check_choice",
    "check_int",
    "check_unit_interval",
    "where_chains",
    "metropolis",
]
