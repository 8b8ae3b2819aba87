"""Langevin kernels: the unadjusted Langevin algorithm (ULA) and its Metropolis-adjusted form (MALA).

Both propose the Euler-Maruyama step of the Langevin diffusion ``dx = ∇log p(x) dt + sqrt(2) dW``
with step size ``ε``::

    x' = x + ε ∇log p(x) + sqrt(2ε) ξ,    ξ ~ N(0, I),

i.e. ``x' ~ N(x + ε∇log p(x), 2ε I)`` with log density ``-|x' - x - ε∇log p(x)|² / (4ε)`` up to a
constant. ULA takes the step as it is (biased by O(ε)); MALA accepts it with probability

    min(1, p(x') q(x | x') / (p(x) q(x' | x)))

(Roberts & Tweedie, 1996). With ``mh="line_integral"`` MALA runs on score-only targets, with
``log p(x') - log p(x)`` estimated by Gauss-Lobatto quadrature along the segment ``x -> x'``
(:mod:`rrrdsl.samplers.line_integral`; ``points=2`` is the trapezoid).

References
----------
Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin distributions and
their discrete approximations. Bernoulli 2(4), 341-363.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import torch

from ..schedules import Level
from .base import AnnealedDefaults, OptionsKernel, StepInfo, StepSize, Target
from .chains import (
    chain_constant,
    finite_chains,
    grad_fn,
    is_finite,
    require_energy,
    standard_normal,
    step_tensor,
    where_chains,
)
from .line_integral import (
    MH_METHODS,
    POINTS,
    check_points,
    level_score,
    line_integral,
    line_integral_accept,
    quadrature_cost,
)
from .metropolis import metropolis
from .options import check_choice


@dataclass(frozen=True)
class ULAOptions:
    """ULA has no options; unadjusted, it needs only scores and does not adapt its step size."""

    needs_energy: ClassVar[bool] = False
    target_accept: ClassVar[Optional[float]] = None
    #: gradient evaluations of one step
    step_nfe: ClassVar[int] = 1


@dataclass(frozen=True)
class MALAOptions:
    """Options of :class:`MALA`.

    Parameters
    ----------
    mh
        ``"exact"`` (default): the Metropolis test uses ``target.log_prob_and_grad``;
        ``"line_integral"``: score-only, with a quadrature estimate of ``log p(x') - log p(x)``.
    points
        Gauss-Lobatto points of that estimate, 2..5 (only with ``mh="line_integral"``; default
        :data:`~rrrdsl.samplers.line_integral.POINTS`); ``points - 2`` extra gradient evaluations
        per step.

    ``target_accept`` is 0.57 (Roberts & Rosenthal, 1998), also for the line-integral test with
    3 or more points (it sees the discretisation error), and
    :data:`~rrrdsl.samplers.line_integral.TARGET_ACCEPT` for the trapezoid (measured there).
    """

    mh: str = "exact"
    points: Optional[int] = None

    #: gradient evaluations of one step
    step_nfe: ClassVar[int] = 1

    def __post_init__(self) -> None:
        check_choice("mh", self.mh, MH_METHODS)
        check_points(self.points, self.mh)

    @property
    def needs_energy(self) -> bool:
        return self.mh == "exact"

    @property
    def target_accept(self) -> float:
        return line_integral_accept(self.mh, self.points, 0.57)

    @property
    def quadrature_cost(self) -> int:
        """Gradient evaluations per step relative to the exact test (``points - 1`` under the line integral)."""
        return quadrature_cost(self.mh, self.points)


#: annealed ULA: 90 steps at each of the last ten levels, step size 0.5 * beta_t (no adaptation)
ULA_ANNEALED = AnnealedDefaults(steps=90, step_scale=0.5, step_exponent=1.0, kernel=ULAOptions())
#: annealed MALA: 90 steps at each of the last ten levels, step size adapted from 3 * beta_t
MALA_ANNEALED = AnnealedDefaults(steps=90, step_scale=3.0, step_exponent=1.0, kernel=MALAOptions())


class ULAState(NamedTuple):
    """ULA chains: positions and the cached gradient of ``log p_t`` there."""

    x: torch.Tensor  # [N, D]
    grad: torch.Tensor  # [N, D]


class MALAState(NamedTuple):
    """MALA chains: positions with cached log density and gradient.

    With ``mh="line_integral"`` ``log_prob`` is the line-integral estimate of ``log p_t`` relative
    to each chain's starting point (0 at :meth:`MALA.init`).
    """

    x: torch.Tensor  # [N, D]
    log_prob: torch.Tensor  # [N]
    grad: torch.Tensor  # [N, D]


def langevin_scales(step_size: StepSize, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ε, sqrt(2ε))`` as 0-dim tensors for one step size (kept per value: a fixed step size is
    converted once, not at every step) or columns ``[N, 1]`` for per-chain step sizes
    (:func:`~rrrdsl.samplers.chains.step_tensor`); read-only."""
    if isinstance(step_size, float):
        return _scalar_scales(step_size, x.dtype, x.device)
    eps = step_tensor(step_size, x)
    return eps, torch.sqrt(2.0 * eps)


@functools.lru_cache(maxsize=64)
def _scalar_scales(step_size: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    eps = torch.tensor(step_size, dtype=dtype, device=device)
    return eps, torch.sqrt(2.0 * eps)


def langevin_proposal(
    x: torch.Tensor, grad: torch.Tensor, scales: tuple[torch.Tensor, torch.Tensor], noise: torch.Tensor
) -> torch.Tensor:
    """``x + ε ∇log p(x) + sqrt(2ε) ξ`` with ``scales = (ε, sqrt(2ε))`` from :func:`langevin_scales`
    and the standard normal ``noise`` ``ξ`` (two fused multiply-adds, the second in place)."""
    eps, noise_scale = scales
    return torch.addcmul(x, eps, grad).addcmul_(noise_scale, noise)


@functools.lru_cache(maxsize=8)
def _every_chain_moved(n: int, dtype: torch.dtype, device: torch.device) -> StepInfo:
    """The :class:`StepInfo` of a ULA step in which all ``n`` chains moved, built once per shape."""
    moved = torch.ones(n, dtype=torch.bool, device=device)
    return StepInfo(moved.to(dtype), moved, ~moved, torch.ones(n, dtype=torch.long, device=device))


class ULA(OptionsKernel):
    """Unadjusted Langevin algorithm: the Langevin proposal, always taken.

    Needs only scores. A move to a non-finite position or gradient is refused (the chain keeps
    its old point) and flagged divergent. One gradient evaluation per step.
    """

    name = "ula"
    Options = ULAOptions
    annealed = ULA_ANNEALED

    def init(self, x: torch.Tensor, target: Target, t: Level) -> ULAState:
        """Cache ``∇log p_t(x)``."""
        return ULAState(x, target.score(x, t))

    def step(
        self, state: ULAState, target: Target, t: Level, step_size: StepSize, generator: Optional[torch.Generator]
    ) -> tuple[ULAState, StepInfo]:
        """One Euler-Maruyama step of the Langevin diffusion per chain."""
        x, grad = state
        x_new = langevin_proposal(x, grad, langevin_scales(step_size, x), standard_normal(x, generator))
        grad_new = target.score(x_new, t)
        moved = finite_chains(x_new, grad_new)
        if moved is None:  # every chain moved: no per-chain selection, the same (read-only) info
            return ULAState(x_new, grad_new), _every_chain_moved(x.shape[0], x.dtype, x.device)
        new_state = ULAState(where_chains(moved, x_new, x), where_chains(moved, grad_new, grad))
        return new_state, StepInfo(moved.to(x.dtype), moved, ~moved, torch.ones_like(moved, dtype=torch.long))

    def fixed_steps(
        self, state: ULAState, target: Target, t: Level, step_size: StepSize, generator: Optional[torch.Generator], steps: int
    ) -> tuple[ULAState, list[StepInfo]]:
        """``steps`` calls of :meth:`step` at one step size, with one finiteness test (one host
        read) at the end instead of one per step; the same states and infos, bit for bit.

        A non-finite entry is carried forward: whatever ``ε``, a non-finite entry of ``x`` or of
        ``∇log p(x)`` makes the same entry of ``x + ε ∇log p(x) + sqrt(2ε) ξ`` non-finite
        (``inf + c = inf``, ``0 · inf = NaN``, ``NaN`` absorbs). So a finite last position and
        gradient prove every step's proposal finite, in which case :meth:`step` refuses no move
        and the unchecked steps are its own. Otherwise the generator is rewound to its state at
        the start and the steps are rerun one by one with :meth:`step` (the same noise); without
        a generator (the global one) they are run one by one from the start."""
        rewind = generator.get_state() if generator is not None else None
        x, grad = state
        scales = langevin_scales(step_size, x)
        if rewind is not None:
            for _ in range(steps):
                x = langevin_proposal(x, grad, scales, standard_normal(x, generator))
                grad = target.score(x, t)
            if finite_chains(x, grad) is None:
                return ULAState(x, grad), [_every_chain_moved(x.shape[0], x.dtype, x.device)] * steps
            generator.set_state(rewind)
        infos = []
        for _ in range(steps):
            state, info = self.step(state, target, t, step_size, generator)
            infos.append(info)
        return state, infos


class MALA(OptionsKernel):
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie, 1996).

    Options: :class:`MALAOptions` (``mh``, ``points``). One gradient evaluation per step, plus
    ``points - 2`` for the line-integral test.
    """

    name = "mala"
    Options = MALAOptions
    annealed = MALA_ANNEALED

    def init(self, x: torch.Tensor, target: Target, t: Level) -> MALAState:
        """Cache ``log p_t(x)`` (or 0 for the line-integral estimate) and ``∇log p_t(x)``."""
        if self.needs_energy:
            require_energy(self.name, target, hint="use MALA(mh='line_integral') or an unadjusted kernel (ULA, UHA)")
        log_prob, grad = grad_fn(target, t, self.needs_energy)(x)
        if log_prob is None:
            log_prob = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return MALAState(x, log_prob, grad)

    def log_proposal_ratio(
        self, noise: torch.Tensor, grad: torch.Tensor, grad_new: torch.Tensor, noise_scale: torch.Tensor
    ) -> torch.Tensor:
        """``log q(x | x') - log q(x' | x)`` per chain, ``[N]``, from the proposal's own noise ``ξ``.

        With ``log q(y | z) = -|y - z - ε∇log p(z)|² / (4ε)`` (constants cancel) and
        ``x' = x + ε∇log p(x) + sqrt(2ε) ξ``, the forward residual is ``sqrt(2ε) ξ`` and the
        backward one ``x - x' - ε∇log p(x') = -sqrt(2ε) (ξ + e / 2)`` with
        ``e = sqrt(2ε) (∇log p(x) + ∇log p(x'))``, so the difference is
        ``(|ξ|² - |ξ + e/2|²) / 2 = -(ξ + e/4)·e / 2``: no difference of nearly equal positions is
        formed (no cancellation). ``noise_scale`` is ``sqrt(2ε)`` as :func:`langevin_scales` gives it."""
        e = (grad + grad_new) * noise_scale
        return -0.5 * (torch.add(noise, e, alpha=0.25) * e).sum(dim=-1)

    def step(
        self, state: MALAState, target: Target, t: Level, step_size: StepSize, generator: Optional[torch.Generator]
    ) -> tuple[MALAState, StepInfo]:
        """Propose ``x' ~ N(x + ε∇log p(x), 2ε I)`` and accept per chain with the Metropolis-Hastings ratio."""
        x, log_prob, grad = state
        scales = langevin_scales(step_size, x)
        noise = standard_normal(x, generator)
        x_new = langevin_proposal(x, grad, scales, noise)
        log_prob_new, grad_new = grad_fn(target, t, self.needs_energy)(x_new)
        points = self.options.points or POINTS
        if log_prob_new is None:
            log_prob_new = log_prob + line_integral(x, grad, x_new, grad_new, level_score(target, t), points)
        log_ratio = log_prob_new - log_prob + self.log_proposal_ratio(noise, grad, grad_new, scales[1])
        # a non-finite position, log density or gradient makes its chain's ratio non-finite, so a
        # finite sum of the ratios (one host read) proves every proposal finite; else the exact per-chain mask
        finite = math.isfinite(float(log_ratio.sum()))
        if not finite:
            log_ratio = torch.where(is_finite(x_new, log_prob_new, grad_new), log_ratio, -math.inf)
        accept_prob, accepted, divergent = metropolis(log_ratio, generator, finite=finite)
        column = accepted.unsqueeze(-1)
        new_state = MALAState(
            torch.where(column, x_new, x), torch.where(accepted, log_prob_new, log_prob), torch.where(column, grad_new, grad)
        )
        nfe = 1 if self.needs_energy else points - 1
        return new_state, StepInfo(accept_prob, accepted, divergent, chain_constant(x.shape[0], nfe, x.device))
