"""Mixture weights that mean what they say: the per-level normaliser ``log Z_t`` of each mixture
component, estimated by SMC down the levels.

A mixture ``Σ_j π_j p^j_t`` weighs *normalised* densities, but a product of models, a power or a
learned energy is known only up to its normaliser ``Z^j_t``, so ``logsumexp(log π_j + log p^j_t)``
weighs component ``j`` by ``π_j Z^j_t`` instead of ``π_j`` (for ``0.5 * (a * b) + 0.5 * c`` with
Gaussian oracles the effective weight of ``a * b`` was 8e-5 at level 0). The compiled target lists
those components (:attr:`~rrrdsl.compiler.AnnealedTarget.unnormalised`; exact oracle leaves, and mixtures, whose
weights sum to 1 over components normalised in turn, are skipped) and divides each by a :class:`~rrrdsl.compiler.plan.Normaliser` once
attached; :func:`normalise` estimates and attaches them.

The estimate, per component (compiled alone, on its own frame, with the target's schedule): at
the top level every diffusion model is close to ``N(0, I)``, so importance sampling from
``N(0, I)`` estimates ``Z_{T-1}`` well; SMC then anneals down the levels with exact weights
(reverse-diffusion moves with the noising kernel as backward kernel, exact MALA moves,
:mod:`rrrdsl.samplers.smc`), and its running estimate after the move into level ``t`` is an
unbiased estimate of ``Z_t`` (Del Moral, Doucet & Jasra, 2006), recorded at every level.
:data:`REPLICATES` independent runs are averaged (in ``Z``, keeping it unbiased) and their
spread gives the standard error of ``log Z_t``, reported by ``describe()`` and in the run's
diagnostics. A component that holds mixtures of its own is normalised first (recursively). A graph
may need at most :data:`MAX_ESTIMATES` of them (:func:`check_estimates`, before any work).
Estimates are cached in memory per component, frame shape and schedule, and made with a fixed
seed, so a table is a property of the component, not of a run.

References
----------
Del Moral, P., Doucet, A. & Jasra, A. (2006). Sequential Monte Carlo samplers. JRSS B 68(3).
Neal, R. M. (2001). Annealed importance sampling. Statistics and Computing 11, 125-139.
"""

from __future__ import annotations

import math
from typing import Any, Union

import torch

from ..compiler import compile as compile_expr
from ..compiler.plan import Normaliser
from ..errors import SamplerError
from ..lang.ir import Expr
from ..schedules import Schedule
from .annealed import AnnealedConfig, anneal
from .langevin import MALA
from .smc import SMC_DEFAULTS, THRESHOLD, SMCWeights

#: particles per SMC run, and independent runs per component
PARTICLES, REPLICATES = 512, 4
#: exact MALA moves per level
STEPS = 1
#: the seed of every estimate (a cached table does not depend on the run that asked for it)
SEED = 0
#: distinct components a graph may need estimated (each estimate is REPLICATES SMC runs of
#: PARTICLES particles over every level, through the component's own graph)
MAX_ESTIMATES = 16

_CACHE: dict[tuple[Expr, tuple[int, ...], Schedule], Normaliser] = {}


class LevelLogZ(SMCWeights):
    """SMC's weights, recording the running ``log Z_t`` estimate at every level (``[T]``)."""

    def __init__(self, schedule: Schedule, n: int, device: Union[str, torch.device]) -> None:
        super().__init__(schedule, n, THRESHOLD, device)
        self.table = torch.full((schedule.num_levels,), math.nan, dtype=torch.float64)

    def start(self, x: torch.Tensor, log_prob: torch.Tensor) -> None:
        super().start(x, log_prob)
        self.table[-1] = self.log_z()

    def move(self, t: int, *particles: Any) -> None:
        """:meth:`SMCWeights.move` into level ``t`` (``particles``: its other arguments), then record."""
        super().move(t, *particles)
        self.table[t] = self.log_z()


def estimate(term: Expr, shape: tuple[int, ...], schedule: Schedule, device: Union[str, torch.device] = "cpu") -> Normaliser:
    """The :class:`Normaliser` of the density ``term`` on a frame of ``shape`` (cached)."""
    key = (term, shape, schedule)
    if key in _CACHE:
        return _CACHE[key]
    target = compile_expr(term, schedule, canvas=shape[0] if len(shape) == 1 else shape)
    normalise(target, device)
    kernel = MALA()
    config = AnnealedConfig(
        steps=STEPS,
        reverse="ddpm",
        reverse_levels=SMC_DEFAULTS["reverse_levels"],
        step_scale=kernel.annealed.step_scale,
        step_exponent=kernel.annealed.step_exponent,
    )
    generator = torch.Generator(device=device).manual_seed(SEED)
    tables = []
    with torch.no_grad():
        for _ in range(REPLICATES):
            weights = LevelLogZ(schedule, PARTICLES, device)
            anneal(target, kernel, config, PARTICLES, generator, weights=weights, device=device)
            tables.append(weights.table)
    log_zs = torch.stack(tables)  # [R, T]
    log_z = torch.logsumexp(log_zs, 0) - math.log(REPLICATES)
    std_error = torch.exp(log_zs - log_z).std(0) / math.sqrt(REPLICATES)
    _CACHE[key] = Normaliser(log_z, std_error, f"SMC, {REPLICATES} runs of {PARTICLES} particles")
    return _CACHE[key]


def check_estimates(target: object) -> None:
    """Refuse, before any work, a graph whose mixtures need more than :data:`MAX_ESTIMATES`
    normalisers estimated (the target's :attr:`~rrrdsl.compiler.AnnealedTarget.unnormalised`
    components, found at every depth of the graph; the nested ones are the same estimates)."""
    count = len(getattr(target, "unnormalised", {}))
    if count > MAX_ESTIMATES:
        raise SamplerError(
            f"the mixtures of this graph weigh {count} components that are not normalised densities; each needs "
            f"its normaliser estimated ({REPLICATES} SMC runs of {PARTICLES} particles over every level), at most "
            f"{MAX_ESTIMATES} are allowed",
            hint="mix exact oracles or mixtures, or fewer distinct products, powers and learned models",
        )


def normalise(target: object, device: Union[str, torch.device] = "cpu") -> dict[Expr, Normaliser]:
    """Estimate and attach the normalisers of ``target``'s unnormalised mixture components
    (none for a target without them, or a hand-written target); returns the attached tables."""
    unnormalised = getattr(target, "unnormalised", {})
    missing = {term: shape for term, shape in unnormalised.items() if term not in target.normalisers}  # type: ignore[attr-defined]
    if missing:
        target.normalise({term: estimate(term, shape, target.schedule, device) for term, shape in missing.items()})  # type: ignore[attr-defined]
    return dict(getattr(target, "normalisers", {}))
