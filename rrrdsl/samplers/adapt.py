"""Step sizes per noise level: the ``c * beta_t ** b`` default and online dual averaging.

The default step size at level ``t`` is ``c * beta_t ** b`` (Du et al., 2023 scale their MCMC
step sizes with the schedule's ``beta_t``). Each kernel's ``(c, b)`` is in its module's
:class:`~rrrdsl.samplers.base.AnnealedDefaults` (``step_scale``, ``step_exponent``), with where
it was measured.

Adaptation (Hoffman & Gelman, 2014, section 3.2, Nesterov's dual averaging) works on the
log *ratio* ``u = log(step_size / (c * beta_t ** b))`` toward the kernel's ``target_accept``,
one scalar for the whole batch of chains (the batch-mean acceptance is the statistic). The
adaptation is carried from level to level: each new level restarts
:class:`pyro.ops.dual_averaging.DualAveraging` with its prox-centre at the previous level's
averaged ``u``, so the shape ``beta_t ** b`` is followed while the scale ``c`` is learnt.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from pyro.ops.dual_averaging import DualAveraging

from ..schedules import Schedule

def base_step_sizes(schedule: Schedule, c: float, b: float) -> torch.Tensor:
    """``c * beta_t ** b`` for every level, float64 tensor of shape ``[T]``."""
    return c * schedule.betas**b


class StepSizeAdapter:
    """Dual-averaging step-size adaptation carried across annealing levels.

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
        self.base = base
        self.target_accept = target_accept
        self._averaging = DualAveraging(prox_center=0.0, t0=t0, kappa=kappa, gamma=gamma)
        self._level_steps = 0
        self.log_ratio = 0.0

    def start_level(self) -> None:
        """Restart dual averaging for a new level, centred on the ratio learnt so far."""
        self._averaging.prox_center = self.log_ratio
        self._averaging.reset()
        self._level_steps = 0

    def step_size(self, t: int) -> float:
        """The step size to use next at level ``t``."""
        return float(self.base[t]) * math.exp(self.log_ratio)

    def update(self, accept_prob: torch.Tensor) -> None:
        """Feed the per-chain acceptance probabilities of one step (no-op without a target)."""
        if self.target_accept is None:
            return
        mean_accept = float(torch.nan_to_num(accept_prob, nan=0.0).mean())
        self._averaging.step(self.target_accept - mean_accept)
        self._level_steps += 1
        self.log_ratio = self._averaging.get_state()[0]

    def end_level(self) -> None:
        """Keep the averaged iterate of this level as the next level's starting ratio."""
        if self.target_accept is not None and self._level_steps > 0:
            self.log_ratio = self._averaging.get_state()[1]
