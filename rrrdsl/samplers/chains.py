"""Per-chain building blocks of the kernels: evaluating the target with non-finite masking,
per-chain selection, step-size columns and random draws.

Every function works on a batch of ``N`` independent chains (leading dimension) in the dtype and
on the device of ``x``. A chain whose position, momentum, log density or gradient becomes NaN or
infinite is reported through a per-chain ``finite`` mask (:func:`is_finite`) and kept at its last
finite point with :func:`where_chains`, so a non-finite value is never written into a kernel state
(the kernels reject such chains and flag them divergent).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch

from ..errors import SamplerError
from ..schedules import Level
from .base import StepSize, Target


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


def finite_chains(*tensors: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``None`` when every entry of every given tensor is finite (the common case: no per-chain
    mask), else the per-chain mask of :func:`is_finite`.

    The test is one sum per tensor: a NaN or infinite entry makes the sum NaN or infinite, so a
    finite sum proves every entry finite; a sum that overflows from finite entries only costs the
    exact per-chain mask. The sum is read back as one Python float (one host read, no
    tensor-side finiteness test)."""
    present = [v for v in tensors if v is not None]
    total = present[0].sum()
    for v in present[1:]:
        total = total + v.sum()
    if math.isfinite(float(total)):
        return None
    return is_finite(*present)


def step_tensor(step_size: StepSize, x: torch.Tensor) -> torch.Tensor:
    """``step_size`` in x's dtype/device, broadcastable against ``[N, D]``: a 0-dim tensor for a
    single step size (a scalar broadcast, cheaper than an expanded column), a column ``[N, 1]``
    for per-chain step sizes ``[N]``."""
    eps = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    return eps if eps.dim() == 0 else eps.reshape(-1, 1)


def chain_column(step_size: StepSize, x: torch.Tensor) -> torch.Tensor:
    """``step_size`` (a float or a per-chain tensor ``[N]``) as a column ``[N, 1]`` in x's dtype/device."""
    eps = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    return eps.reshape(-1, 1).expand(x.shape[0], 1)


@functools.lru_cache(maxsize=16)
def chain_constant(n: int, value: int, device: torch.device) -> torch.Tensor:
    """``value`` for each of ``n`` chains, ``[n]`` long, built once per shape and shared: read-only.
    The gradient evaluations of a step whose every chain spends the same; a kernel returning the
    same tensor at every step lets :class:`~rrrdsl.samplers.annealed.StepSums` add a run of them once."""
    return torch.full((n,), value, dtype=torch.long, device=device)


def standard_normal(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` (Langevin noise; momenta with identity mass matrix)."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def uniform(n: int, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``n`` uniforms on [0, 1) in the dtype/device of ``like`` (one per chain)."""
    return torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)


def where_chains(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per-chain ``torch.where``: ``new`` for chains where ``mask`` (``[N]``) holds, else ``old``
    (tensors ``[N]`` or ``[N, D]``); non-finite values of unselected chains never leak through."""
    return torch.where(mask.reshape(mask.shape + (1,) * (new.dim() - 1)), new, old)
