"""SMC's adaptive walk with its schedule chosen on a pilot population: ``Z_hat`` exactly unbiased.

The adaptive walk (:func:`rrrdsl.samplers.levels.adaptive_walk`) chooses its levels (conditional
ESS) and each level's step size (:func:`~rrrdsl.samplers.levels.pilot_step_size`) on the
particles it weights, which makes ``Z_hat`` consistent with a bias of order ``1 / N`` (Beskos,
Jasra, Kantas & Thiery, 2016). With ``pilot=P`` the choices are made on an independent
population instead:

1. a pilot walk, the adaptive walk itself on ``P`` particles of its own (random numbers from
   the same generator, no moves at level 0), records the levels it visits and the step size of
   each level's moves (a :class:`~rrrdsl.samplers.levels.Path`);
2. the main walk of the ``M N`` particles replays that path (:class:`FixedChoices`): an
   incremental weight ``p_s / p_t`` per recorded level, ESS-triggered resampling, MCMC moves
   with the recorded step size, no bisection probes and no step-size pilot.

Given the path, the main walk is SMC with a fixed schedule and fixed kernels, whose ``Z_hat`` is
unbiased (Del Moral, Doucet & Jasra, 2006), resampling triggered by its own ESS included
(Whiteley, Lee & Heine, 2016); the path is independent of the main walk's particles, so
``Z_hat`` is unbiased unconditionally. The moves at level 0 after the final resampling, which do
not touch the weights, keep their warm-up adaptation (starting from the pilot's step size there).

Cost: the pilot's gradient evaluations (its moves, probes and step-size pilots, about the main
walk's per particle) come out of the ``budget`` and count in the NFE per returned particle, at
the levels where they were spent; the main walk saves its probes and step-size pilots, and what
is left goes to the moves at level 0 as without a pilot. On ``ring * bar`` at the defaults the
pilot walk costs about 155 evaluations per pilot particle and replaying saves about 50 per
particle of the main walk (110 instead of 160, with ``oversample=1, budget=1``): a pilot of up to
about ``N`` costs the moves at level 0 little, and one much larger leaves them nothing and the NFE
passes the budget, as a walk too long for its budget does without a pilot. Under ``torchrun`` the pilot's ``P``
particles are sharded like ``N`` and its choices pooled, so every rank replays the same path.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from .annealed import AnnealedConfig, AnnealedResult, Reweighting
from .base import Kernel, Target
from .distributed import current
from .levels import AdaptiveChoices, AdaptiveLevels, Path, adaptive_walk


class FixedChoices:
    """A recorded :class:`~rrrdsl.samplers.levels.Path` replayed: the recorded step size at each
    level (nothing spent choosing it) and the recorded next level (one evaluation: ``log p_s``)."""

    def __init__(self, path: Path) -> None:
        self.next = dict(zip(path.levels, path.levels[1:]))
        self.step_sizes = dict(zip(path.levels, path.step_sizes))

    def step_size(
        self, kernel: Kernel, target: Target, state: Any, t: int, carried: float, generator: Optional[torch.Generator]
    ) -> tuple[float, float]:
        return self.step_sizes[t], 0.0

    def next_level(
        self, target: Target, weights: Reweighting, x: torch.Tensor, log_prob: torch.Tensor, t: int, lowest: int
    ) -> tuple[int, torch.Tensor, int]:
        s = self.next[t]  # ``lowest`` was kept by the pilot, which walked with the same snapshots
        return s, target.log_prob(x, s), 1


def piloted_walk(
    target: Target, kernel: Kernel, config: AnnealedConfig, levels: AdaptiveLevels, n: int,
    generator: Optional[torch.Generator], weighting: Callable[[int], Reweighting], **run: Any,
) -> AnnealedResult:
    """The adaptive walk of ``n`` particles on the path of a pilot walk (see the module doc).

    ``weighting(size)`` makes the weights of ``size`` particles (an
    :class:`rrrdsl.samplers.smc.SMCWeights`): the pilot's (this process's share of its
    ``P = levels.pilot`` particles, not oversampled) and the main walk's (``n``: ``levels.oversample``
    per returned particle); ``levels.budget`` is per returned particle, the pilot's evaluations
    included. The result's ``nfe`` per level includes the pilot's, per returned particle, and
    ``pilot_log_z`` is the pilot's own (biased) estimate. ``run``: :func:`adaptive_walk`'s
    ``dtype``, ``device`` and ``progress`` (the bar follows the main walk).
    """
    group = current()
    p = len(group.shard(levels.pilot))
    choices = AdaptiveChoices(levels.ess, kernel.target_accept if config.adapt else None)
    pilot = adaptive_walk(
        target, kernel, config, levels._replace(budget=math.inf, oversample=1), p, generator, weighting(p),
        choices=choices, **{**run, "progress": None},
    )
    share = group.sum(pilot.levels.nfe * p) / group.total(n // levels.oversample)  # the pilot's evaluations per returned particle, per level
    main = adaptive_walk(
        target,
        kernel,
        config,
        levels._replace(budget=levels.budget - float(share.sum())),
        n,
        generator,
        weighting(n),
        choices=FixedChoices(choices.path),
        **run,
    )
    return main._replace(levels=main.levels._replace(nfe=main.levels.nfe + share), pilot_log_z=pilot.log_z)
