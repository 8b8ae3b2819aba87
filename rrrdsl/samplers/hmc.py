"""Hamiltonian kernels: generalised HMC with partial momentum refresh, and its unadjusted form UHA.

Both simulate the Hamiltonian ``H(x, p) = -log p_t(x) + |p|²/2`` (identity mass matrix) with
``L`` velocity-Verlet steps of size ``ε`` (:func:`rrrdsl.samplers.leapfrog.leapfrog`). The
momentum lives in the state and is partially refreshed before each trajectory,

    p <- ρ p + sqrt(1 - ρ²) ξ,    ξ ~ N(0, I),

with damping ``ρ`` (``ρ = 0``: a full refresh, standard HMC). **HMC** then accepts the end point
``(x_L, p_L)`` with probability ``min(1, exp(H(x, p) - H(x_L, p_L)))`` and, on rejection, keeps
``x`` and *negates* the momentum (Horowitz, 1991; Neal, 2011, §5.5.3), which keeps the joint
``p_t(x) N(p; 0, I)`` invariant for any ``ρ``. **UHA** (uncorrected Hamiltonian annealing) takes
every trajectory without a test (Geffner & Domke, 2021; Zhang et al., 2021); it needs only scores.

With ``mh="line_integral"`` HMC runs on score-only targets: ``log p(x_L) - log p(x)`` is
Gauss-Lobatto quadrature along each leapfrog segment, reusing the leapfrog gradients at the ends
(:mod:`rrrdsl.samplers.line_integral`; ``points - 2`` extra evaluations per leapfrog step).

References
----------
Horowitz, A. M. (1991). A generalized guided Monte Carlo algorithm. Phys. Lett. B 268, 247-252.
Neal, R. M. (2011). MCMC using Hamiltonian dynamics. Handbook of MCMC, ch. 5.
Geffner, T. & Domke, J. (2021). MCMC variational inference via uncorrected Hamiltonian annealing. NeurIPS.
Zhang, G., Hsu, K., Li, J., Finn, C. & Grosse, R. (2021). Differentiable annealed importance sampling
and the perils of gradient noise. NeurIPS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import torch

from ..schedules import Level
from .base import AnnealedDefaults, OptionsKernel, StepInfo, StepSize, Target
from .chains import chain_column, grad_fn, require_energy, standard_normal, where_chains
from .leapfrog import Point, Trajectory, kinetic, leapfrog
from .line_integral import MH_METHODS, POINTS, check_points, line_integral_accept, quadrature_cost
from .metropolis import metropolis
from .options import check_choice, check_int, check_real


@dataclass(frozen=True)
class UHAOptions:
    """Options of :class:`UHA` (and the dynamics shared with :class:`HMC`).

    Parameters
    ----------
    leapfrog
        Leapfrog steps per trajectory ``L >= 1`` (``L`` gradient evaluations per step).
    damping
        Momentum persistence ``ρ`` in ``[0, 1)``; 0 is a full refresh (standard HMC).

    Unadjusted: needs only scores and does not adapt its step size.
    """

    leapfrog: int = 5
    damping: float = 0.0

    needs_energy: ClassVar[bool] = False
    target_accept: ClassVar[Optional[float]] = None

    def __post_init__(self) -> None:
        check_int("leapfrog", self.leapfrog, 1)
        object.__setattr__(self, "damping", check_real("damping", self.damping, 0.0, 1.0, closed=(True, False)))

    @property
    def step_nfe(self) -> int:
        """Gradient evaluations of one step: one per leapfrog step."""
        return self.leapfrog


@dataclass(frozen=True)
class HMCOptions(UHAOptions):
    """Options of :class:`HMC`: those of :class:`UHAOptions`, ``mh``, ``"exact"`` (default) or
    ``"line_integral"`` for score-only targets, and ``points`` (Gauss-Lobatto points of the
    line integral, 2..5, only with ``mh="line_integral"``; default
    :data:`~rrrdsl.samplers.line_integral.POINTS`).

    ``target_accept`` is 0.65 (Neal, 2011), also for the line-integral test with 3 or more
    points, and :data:`~rrrdsl.samplers.line_integral.TARGET_ACCEPT` for the trapezoid
    (measured there).
    """

    mh: str = "exact"
    points: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("mh", self.mh, MH_METHODS)
        check_points(self.points, self.mh)

    @property  # type: ignore[override]
    def needs_energy(self) -> bool:
        return self.mh == "exact"

    @property  # type: ignore[override]
    def target_accept(self) -> float:
        return line_integral_accept(self.mh, self.points, 0.65)

    @property
    def quadrature_cost(self) -> int:
        """Gradient evaluations per leapfrog step relative to the exact test (``points - 1`` under the line integral)."""
        return quadrature_cost(self.mh, self.points)


#: annealed HMC: 90 transitions of one leapfrog step with partial momentum refresh (damping 0.5,
#: Horowitz's generalised HMC) at each of the last ten levels; at equal NFE this beat 3 or 5
#: leapfrog steps with full refresh (MMD / floor about 1.0-1.4 vs 1.4-1.7,
#: ``rrr bench samplers``). Step size adapted from ``beta_t ** 0.5``.
HMC_ANNEALED = AnnealedDefaults(
    steps=90, step_scale=1.0, step_exponent=0.5, kernel=HMCOptions(leapfrog=1, damping=0.5)
)
#: annealed UHA: 30 trajectories of 3 leapfrog steps at each of the last ten levels, step size
#: ``beta_t ** 0.5`` (no adaptation)
UHA_ANNEALED = AnnealedDefaults(steps=30, step_scale=1.0, step_exponent=0.5, kernel=UHAOptions(leapfrog=3))


class HMCState(NamedTuple):
    """HMC chains. With ``mh="line_integral"`` ``log_prob`` is the line-integral estimate of
    ``log p_t`` relative to each chain's starting point (0 at :meth:`HMC.init`)."""

    x: torch.Tensor  # [N, D]
    p: torch.Tensor  # [N, D] momentum, carried between steps (partial refresh)
    log_prob: torch.Tensor  # [N]
    grad: torch.Tensor  # [N, D]
    has_momentum: torch.Tensor  # [N] bool: False until the first full refresh


class UHAState(NamedTuple):
    """UHA chains (score-only: no log density)."""

    x: torch.Tensor  # [N, D]
    p: torch.Tensor  # [N, D]
    grad: torch.Tensor  # [N, D]
    has_momentum: torch.Tensor  # [N] bool


class _Hamiltonian(OptionsKernel):
    """Momentum handling and the trajectory shared by :class:`HMC` and :class:`UHA`."""

    options: UHAOptions

    @staticmethod
    def _initial_momentum(x: torch.Tensor, momentum: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p, has_momentum)``: a carried momentum, or zeros marked for a full refresh."""
        n = x.shape[0]
        if momentum is None:
            return torch.zeros_like(x), torch.zeros(n, dtype=torch.bool, device=x.device)
        return momentum.to(dtype=x.dtype, device=x.device), torch.ones(n, dtype=torch.bool, device=x.device)

    def refresh(self, p: torch.Tensor, has_momentum: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """``ρ p + sqrt(1 - ρ²) ξ`` (a full refresh ``ξ`` for chains without a momentum yet)."""
        xi = standard_normal(p, generator)
        rho = self.options.damping
        partial = rho * p + math.sqrt(1.0 - rho**2) * xi
        return where_chains(has_momentum, partial, xi)

    def reject_momentum(self, p: torch.Tensor) -> torch.Tensor:
        """The momentum kept by a rejected chain: negated (Horowitz, 1991)."""
        return -p

    def trajectory(
        self, start: Point, target: Target, t: Level, step_size: StepSize, energy: bool, points: int = 2
    ) -> Trajectory:
        """``L`` leapfrog steps from ``start`` (``points``: of a score-only line integral)."""
        column = chain_column(step_size, start.x)
        return leapfrog(start, grad_fn(target, t, energy), column, self.options.leapfrog, points=points)


class HMC(_Hamiltonian):
    """Generalised HMC: partial momentum refresh, ``L`` leapfrog steps, Metropolis test on the
    Hamiltonian, momentum flip on rejection (Horowitz, 1991; Neal, 2011).

    Options: :class:`HMCOptions` (``leapfrog``, ``damping``, ``mh``, ``points``).
    """

    name = "hmc"
    Options = HMCOptions
    annealed = HMC_ANNEALED

    def init(self, x: torch.Tensor, target: Target, t: Level, momentum: Optional[torch.Tensor] = None) -> HMCState:
        """Cache ``log p_t(x)`` (0 for the line-integral estimate) and its gradient.

        ``momentum`` carries the chains' momenta over from a previous state (e.g. the previous
        annealing level); without it the first step draws a full refresh.
        """
        if self.needs_energy:
            require_energy(self.name, target, hint="use HMC(mh='line_integral') or UHA")
        log_prob, grad = grad_fn(target, t, self.needs_energy)(x)
        if log_prob is None:
            log_prob = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        p, has_momentum = self._initial_momentum(x, momentum)
        return HMCState(x, p, log_prob, grad, has_momentum)

    def step(
        self, state: HMCState, target: Target, t: Level, step_size: StepSize, generator: Optional[torch.Generator]
    ) -> tuple[HMCState, StepInfo]:
        """Refresh, integrate, and accept or reject per chain."""
        x, p, log_prob, grad, has_momentum = state
        p0 = self.refresh(p, has_momentum, generator)
        points = self.options.points or POINTS
        trajectory = self.trajectory(Point(x, p0, log_prob, grad), target, t, step_size, self.needs_energy, points)
        end = trajectory.end
        log_ratio = (end.log_prob - kinetic(end.p)) - (log_prob - kinetic(p0))
        log_ratio = torch.where(trajectory.finite, log_ratio, -math.inf)
        accept_prob, accepted, divergent = metropolis(log_ratio, generator)
        new_state = HMCState(
            where_chains(accepted, end.x, x),
            where_chains(accepted, end.p, self.reject_momentum(p0)),
            where_chains(accepted, end.log_prob, log_prob),
            where_chains(accepted, end.grad, grad),
            torch.ones_like(has_momentum),
        )
        return new_state, StepInfo(accept_prob, accepted, divergent, trajectory.nfe)


class UHA(_Hamiltonian):
    """Uncorrected Hamiltonian annealing kernel: the HMC dynamics without the Metropolis test
    (Geffner & Domke, 2021; Zhang et al., 2021). Needs only scores.

    A trajectory that reaches a non-finite point is refused (the chain keeps its position, its
    momentum is negated) and flagged divergent.

    Options: :class:`UHAOptions` (``leapfrog``, ``damping``).
    """

    name = "uha"
    Options = UHAOptions
    annealed = UHA_ANNEALED

    def init(self, x: torch.Tensor, target: Target, t: Level, momentum: Optional[torch.Tensor] = None) -> UHAState:
        """Cache ``∇log p_t(x)``; ``momentum`` as in :meth:`HMC.init`."""
        p, has_momentum = self._initial_momentum(x, momentum)
        return UHAState(x, p, target.score(x, t), has_momentum)

    def step(
        self, state: UHAState, target: Target, t: Level, step_size: StepSize, generator: Optional[torch.Generator]
    ) -> tuple[UHAState, StepInfo]:
        """Refresh and integrate; every finite trajectory is taken."""
        x, p, grad, has_momentum = state
        p0 = self.refresh(p, has_momentum, generator)
        trajectory = self.trajectory(Point(x, p0, None, grad), target, t, step_size, energy=False)
        end, moved = trajectory.end, trajectory.finite
        new_state = UHAState(
            where_chains(moved, end.x, x),
            where_chains(moved, end.p, self.reject_momentum(p0)),
            where_chains(moved, end.grad, grad),
            torch.ones_like(has_momentum),
        )
        return new_state, StepInfo(moved.to(x.dtype), moved, ~moved, trajectory.nfe)
