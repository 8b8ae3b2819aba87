"""Step sizes per noise level: the ``c * beta_t ** b`` default and dual averaging with a warm-up.

The default step size at level ``t`` is ``c * beta_t ** b`` (Du et al., 2023 scale their MCMC
step sizes with the schedule's ``beta_t``). Each kernel's ``(c, b)`` is in its module's
:class:`~rrrdsl.samplers.base.AnnealedDefaults` (``step_scale``, ``step_exponent``), with where
it was measured.

Adaptation (Hoffman & Gelman, 2014, section 3.2, Nesterov's dual averaging) works on the
log *ratio* ``u = log(step_size / (c * beta_t ** b))`` toward the kernel's ``target_accept``,
one scalar for the whole batch of chains (the batch-mean acceptance is the statistic), so the
shape ``beta_t ** b`` is followed while the scale ``c`` is learnt. A step size that keeps
changing with the chains' own history breaks the kernel's invariance (adapting at every step,
annealed MALA on ``N(0, 1)`` started from exact draws, one chain, 30 steps:
``E x^2 = 0.70 ± 0.05``; SMC with 2 particles: ``Z_hat / Z = 1.13 ± 0.03``;
``tests/test_exactness.py``), so adaptation never touches the steps whose output is used:

* :class:`StepSizeAdapter` (annealed MCMC): at each level the first :data:`WARMUP` fraction of
  the ``K`` kernel steps adapt, restarting :class:`pyro.ops.dual_averaging.DualAveraging` with
  its prox-centre at the ratio carried from the previous level; then the step size is frozen
  at the averaged iterate for the remaining steps and carried to the next level. The samples
  that leave a level come from a fixed Metropolis kernel, which leaves ``p_t`` invariant. With
  ``K = 1`` nothing adapts.
* :class:`LevelStepSizeAdapter` (SMC): no adaptation inside a level. The moves at level ``t``
  use a step size fixed before the level starts; the mean acceptance of the whole level is
  one dual-averaging observation, carried across levels, that sets the next level's step size.

What remains adaptive, and why it is harmless: the step size frozen at a level (annealed MCMC)
is a function of the warm-up, so a chain's position is correlated with the step size it then
uses; the frozen steps leave ``p_t`` invariant and forget that correlation geometrically fast
(on ``N(0, 1)`` with 15 frozen MALA steps it is below the test's standard error). For SMC the
weights of an MCMC level are computed before its moves and do not depend on the kernel, which
is ``p_t``-invariant for any step size chosen before the level; the step size depends on the
population's past only through a mean over all particles and steps of a level, a dependence of
order ``1 / N`` per particle (Beskos et al., 2016, "On the convergence of adaptive sequential
Monte Carlo methods", show such adaptation is consistent).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from pyro.ops.dual_averaging import DualAveraging

from ..schedules import Schedule
from .distributed import current

#: the fraction of a level's kernel steps that adapt the step size (annealed MCMC); the rest
#: run with the step size frozen at the averaged iterate
WARMUP = 0.5


def base_step_sizes(schedule: Schedule, c: float, b: float) -> torch.Tensor:
    """``c * beta_t ** b`` for every level, float64 tensor of shape ``[T]``."""
    return c * schedule.betas**b


def _batch_accept(accept_prob: torch.Tensor) -> float:
    """The batch-mean acceptance over the chains of every process (:mod:`rrrdsl.samplers.distributed`),
    a non-finite probability counting as a rejection."""
    return current().mean(accept_prob)


class _Adapter:
    """Shared state: the base step sizes, the target acceptance and the carried log ratio ``u``.

    Parameters
    ----------
    base
        ``c * beta_t ** b`` per level (:func:`base_step_sizes`).
    target_accept
        The acceptance rate to aim for; ``None`` keeps the base step sizes (no adaptation).
    gamma, t0, kappa
        Dual-averaging constants (Hoffman & Gelman, 2014; defaults of pyro).
    """

    def __init__(
        self,
        base: torch.Tensor,
        target_accept: Optional[float],
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ) -> None:
        self.base = base.tolist()  # read at every step: Python floats, no tensor indexing
        self.target_accept = target_accept
        self._averaging = DualAveraging(prox_center=0.0, t0=t0, kappa=kappa, gamma=gamma)
        self.log_ratio = 0.0

    def step_size(self, t: int) -> float:
        """The step size to use next at level ``t``."""
        return self.base[t] * math.exp(self.log_ratio)


class StepSizeAdapter(_Adapter):
    """Annealed MCMC: dual averaging during each level's warm-up, then a frozen step size."""

    _warmup = _done = 0

    def start_level(self, steps: int) -> None:
        """Restart dual averaging for a level of ``steps`` kernel steps, centred on the carried ratio."""
        self._averaging.prox_center = self.log_ratio
        self._averaging.reset()
        self._warmup = int(WARMUP * steps) if self.target_accept is not None else 0
        self._done = 0

    def update(self, accept_prob: torch.Tensor) -> None:
        """Feed the per-chain acceptance probabilities of one step; adapts only during the warm-up,
        and freezes the averaged iterate at its end."""
        if self._done >= self._warmup:
            return
        self._averaging.step(self.target_accept - _batch_accept(accept_prob))
        self._done += 1
        iterate, averaged = self._averaging.get_state()
        self.log_ratio = averaged if self._done == self._warmup else iterate

    def end_level(self, accept_prob: torch.Tensor) -> None:
        """Nothing to do: the frozen ratio is already the next level's starting point."""


class LevelStepSizeAdapter(_Adapter):
    """SMC: a step size fixed for each level, adapted between levels from the levels' acceptance."""

    def start_level(self, steps: int) -> None:
        """Nothing to do: the step size of the level is already fixed."""

    def update(self, accept_prob: torch.Tensor) -> None:
        """Nothing to do: no adaptation inside a level."""

    def end_level(self, accept_prob: torch.Tensor) -> None:
        """One dual-averaging step from the level's mean acceptance ``accept_prob`` (per chain,
        averaged over the level's steps); sets the next level's step size."""
        if self.target_accept is None:
            return
        self._averaging.step(self.target_accept - _batch_accept(accept_prob))
        self.log_ratio = self._averaging.get_state()[0]
