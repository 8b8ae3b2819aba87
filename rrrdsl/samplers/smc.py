"""Sequential Monte Carlo / annealed importance sampling over the noise levels.

The particles walk the annealed driver (:func:`rrrdsl.samplers.annealed.anneal`) and carry
log-weights (Neal, 2001; Del Moral, Doucet & Jasra, 2006):

* the initial draw ``x ~ N(0, I)`` is weighted against the first target:
  ``log w = log p_{T-1}(x) - log N(x; 0, I)``;
* a pure MCMC level (no move between levels) adds ``log p_t(x) - log p_{t+1}(x)``;
* a reverse-diffusion move ``x_t ~ K(· | x_{t+1})`` adds
  ``log p_t(x_t) + log L(x_{t+1} | x_t) - log p_{t+1}(x_{t+1}) - log K(x_t | x_{t+1})`` with the
  forward noising kernel ``L = N(sqrt(alpha_{t+1}) x_t, beta_{t+1} I)`` as backward kernel,
  so the weights stay exact however biased the proposal ``K`` is;
* MCMC moves that leave ``p_t`` invariant add nothing.

Only moves whose weights are exact are accepted (:func:`check_moves`, before any work):
the MCMC kernels :data:`EXACT_KERNELS` with ``mh="exact"``, whose Metropolis test on exact
energies leaves ``p_t`` invariant. ULA, UHA and the line-integral test do not (weighting them as
if they did gave Ẑ/Z = 1.10-1.14 for ULA/UHA and 0.94 for line-integral MALA on a product of two
Gaussians, at every N); their exact weights would need the unadjusted-AIS backward kernels of
Thin et al. (2021) and Geffner & Domke (2021), not implemented. DDIM moves need ``eta = 1``:
``eta = 0`` has no transition density and a smaller ``eta`` makes the backward-kernel weights
heavy-tailed (Ẑ/Z = 0.83 at ``eta = 0.5`` on the ring). Step sizes are fixed during a level
(:class:`rrrdsl.samplers.adapt.LevelStepSizeAdapter`).

When the effective sample size ``(Σ w)^2 / Σ w^2`` drops below ``threshold * N`` the particles
are resampled systematically (Kitagawa, 1996) and the weights reset. Systematic resampling sees
the particles in the order of a Hilbert curve through their positions (``resampling="hilbert"``,
the default; Gerber, Chopin & Whiteley, 2019; :mod:`rrrdsl.samplers.ordering`), so the particles
of each separated mode are consecutive and the mode gets its weight's share of children within
one; ``"systematic"`` keeps their storage order, unrelated to where they lie. Either way every
particle gets ``N w_i`` children in expectation. At the last level they
are resampled whatever the ESS (unless every weight is already equal), before its MCMC moves:
the returned particles are an unweighted sample of ``p_0``; returning them with their weights
dropped would keep the proposal's bias since the last resampling. The normalising constant
of ``p_0`` (relative to the normalised ``N(0, I)``) is estimated by
``log Z = Σ_resampling-epochs (logsumexp(log w) - log N)``, unbiased for ``Z`` on a schedule
fixed in advance (every level, or the adaptive walk's with a pilot walk; below).

Two walks (``levels``). The default, ``"adaptive"`` (:mod:`rrrdsl.samplers.levels`), chooses
each next level by the conditional ESS of its incremental weights, moves by MCMC only (8 MALA
steps per visited level, step sizes set by a pilot on the population) and spends what is left
of a 600-gradient budget per returned particle on moves at level 0 after the last resampling; it
carries ``M N`` particles (``oversample=M``, default 3) and keeps every ``M``-th after its final
resampling (:func:`rrrdsl.samplers.levels.thin`; earlier when the walk is too long for its
budget, :data:`rrrdsl.samplers.levels.RESERVE`), which makes the mass in each mode
as reliable as that of independent draws with Hilbert-ordered resampling (1.01x and 1.12x their
scatter over 200 seeds, against 1.4-2.0x with ``oversample=1, steps=16`` in storage order;
``benchmarks/results/modes.md``). It chooses its levels
and step sizes on the particles it weights, so its ``log Z`` is biased by O(1/N); with
``pilot=P`` they are chosen by a pilot walk of ``P`` particles of its own and replayed
(:mod:`rrrdsl.samplers.pilot`), which makes ``Z_hat`` unbiased. ``"schedule"`` walks
every level of the schedule: MALA at every level and reverse-diffusion moves only into levels
10..89 (:data:`SMC_DEFAULTS`, measured on ``oracle("ring") * oracle("bar")``,
``rrr bench samplers``). At the top levels (``beta_t`` up to 0.999) a reverse step with a
summed score is far from the noising kernel's reverse and its weights degenerate (log-weight
std > 1 above level 95), and near level 0 the weights of a reverse move are noisier than those
of a pure MCMC level. The adaptive walk reaches MMD / floor 1.20 on ``ring * bar`` (1.13 over
seeds 0-29, where independent exact draws score 1.02) and 0.78 on ``ring ** 2`` at 600 gradients
per particle, where the fixed walk is at 1.37 and 1.23 with 900 (seeds 0-2, ``rrr bench smc``,
``benchmarks/results/smc.md``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Optional

import torch

from ..errors import SamplerError
from ..schedules import Schedule
from .annealed import AnnealedConfig, AnnealedResult, ProgressBar, anneal
from .base import Kernel, Target
from .diffusion import Transition, forward_log_prob, transition_log_prob
from .distributed import Resampling, current
from .levels import BUDGET, ESS_FRACTION, OVERSAMPLE, STEPS as ADAPTIVE_STEPS, AdaptiveLevels, adaptive_walk
from .options import check_choice, check_int, check_real
from .ordering import hilbert_order
from .pilot import piloted_walk

#: the defaults of the ``smc`` sampler (see the module doc): its MCMC move, steps per level (of the
#: fixed walk; the adaptive walk's default is :data:`ADAPTIVE_STEPS`), the levels that get a
#: reverse-diffusion move (fixed walk), the walk (:mod:`rrrdsl.samplers.levels`) with its
#: conditional-ESS fraction, gradient budget per returned particle and oversampling
SMC_DEFAULTS: dict[str, object] = {
    "kernel": "mala",
    "steps": 16,
    "reverse_levels": (10, 89),
    "levels": "adaptive",
    "ess": ESS_FRACTION,
    "budget": BUDGET,
    "oversample": OVERSAMPLE,
    "pilot": 0,
}
#: the options of the fixed walk over every level, which the adaptive walk does not take
SCHEDULE_ONLY = ("reverse", "reverse_levels", "mcmc_levels", "eta")
#: the MCMC moves SMC can weight exactly (with ``mh="exact"``, the default)
EXACT_KERNELS = ("mala", "hmc", "nuts")
#: resample when the ESS drops below this fraction of the particles
THRESHOLD = 0.5
#: the orders systematic resampling can see the particles in, and the default (:class:`SMCWeights`)
RESAMPLINGS = ("hilbert", "systematic")
RESAMPLING = "hilbert"


def check_moves(kernel: Optional[Kernel], reverse: Optional[str], eta: float) -> None:
    """Refuse the moves whose SMC weights would be wrong (see the module doc), with the reason.

    ``kernel`` is the MCMC move (``None``: reverse-diffusion moves only); a kernel is exact when
    it is one of :data:`EXACT_KERNELS` and its Metropolis test uses exact energies
    (``needs_energy``).
    """
    exact = ", ".join(repr(name) for name in EXACT_KERNELS)
    if kernel is not None and not (kernel.name in EXACT_KERNELS and kernel.needs_energy):
        why = (
            "its Metropolis test uses a trapezoid estimate of the energy difference (mh='line_integral')"
            if kernel.name in EXACT_KERNELS
            else "it is unadjusted (no Metropolis test), so its stationary law is biased by the step size"
        )
        raise SamplerError(
            f"SMC cannot use kernel {kernel.name!r} as its move: {why}; SMC's weights assume a move "
            "that leaves p_t invariant",
            hint=f"use kernel={exact.replace(', ', ' / ')} with mh='exact' (the default), or kernel=None",
        )
    if reverse == "ddim" and eta < 1:
        raise SamplerError(
            f"SMC cannot weight a DDIM move with eta = {eta:g} < 1: eta = 0 has no transition density "
            "and a smaller eta gives heavy-tailed weights (log Z biased: Ẑ/Z = 0.83 at eta = 0.5)",
            hint="use eta=1, reverse='ddpm' or reverse=None",
        )


def check_levels(
    options: dict[str, object], resolved: dict[str, object], kernel: Optional[Kernel]
) -> Optional[AdaptiveLevels]:
    """The adaptive walk's options from the ``resolved`` ones (``None``: ``levels="schedule"``).

    Refuses, with the reason, an adaptive walk without an MCMC move and the fixed walk's options
    (:data:`SCHEDULE_ONLY`) given explicitly in ``options`` with the adaptive walk, and the
    adaptive walk's (``ess``, ``budget``, ``oversample``, ``pilot``) with the fixed one; ``pilot``
    is 0 or at least the number of processes (each walks its share of the pilot's particles).
    """
    walk = check_choice("levels", resolved["levels"], ("adaptive", "schedule"))
    ess = check_real("ess", resolved["ess"], 0.0, 1.0, closed=(False, False))
    budget, oversample = check_int("budget", resolved["budget"], 1), check_int("oversample", resolved["oversample"], 1)
    levels = AdaptiveLevels(ess, budget, oversample, check_int("pilot", resolved["pilot"], 0))
    if walk == "schedule":
        given = [key for key in AdaptiveLevels._fields if key in options]
        if given:
            raise SamplerError(
                f"option {given[0]!r} belongs to the adaptive walk, not to levels='schedule'",
                hint="drop it, or use levels='adaptive'",
            )
        return None
    if kernel is None:
        raise SamplerError(
            "SMC with levels='adaptive' needs an MCMC move (kernel=None gives none)",
            hint="use kernel='mala' / 'hmc' / 'nuts', or levels='schedule'",
        )
    given = [key for key in SCHEDULE_ONLY if key in options]
    if given:
        raise SamplerError(
            f"option {given[0]!r} belongs to the fixed walk over every level (levels='schedule'): the adaptive "
            "walk skips levels and moves by MCMC only, so it has no reverse-diffusion moves or level sets",
            hint="pass levels='schedule' as well, or drop the option",
        )
    world = current().world
    if 0 < levels.pilot < world:
        raise SamplerError(
            f"option 'pilot' must be 0 or at least the {world} processes (each walks its share), got {levels.pilot}",
            hint=f"use pilot={world} or more, or pilot=0",
        )
    return levels


def initial_log_weight(x: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
    """``log p_{T-1}(x) - log N(x; 0, I)`` for the initial draw from the standard normal."""
    log_normal = -0.5 * (x**2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    return log_prob - log_normal


def incremental_log_weight(
    schedule: Schedule,
    t: int,
    x_prev: torch.Tensor,
    log_prob_prev: torch.Tensor,
    x: torch.Tensor,
    log_prob: torch.Tensor,
    transition: Optional[Transition],
) -> torch.Tensor:
    """The log-weight increment of the move from level ``t + 1`` (``x_prev``) to ``t`` (``x``).

    ``transition`` is the reverse-diffusion proposal
    ``K(x | x_prev)``, or ``None`` when the particles did not move between levels.
    """
    increment = log_prob - log_prob_prev
    if transition is None:
        return increment
    return increment + forward_log_prob(x_prev, x, schedule, t) - transition_log_prob(transition, x)


def conditional_ess(log_w: torch.Tensor, increment: torch.Tensor) -> float:
    """``(Σ W v)^2 / Σ W v^2`` in ``[0, 1]``: the conditional ESS over ``N`` of incremental weights
    ``v = exp(increment)`` under the normalised weights ``W = softmax(log_w)`` (Zhou, Johansen &
    Aston, 2016, eq. 3.16), over every particle of every process; 0 when every ``W v`` vanishes."""
    increment = torch.nan_to_num(increment.detach().to(log_w.dtype), nan=-math.inf, neginf=-math.inf)
    first, second, total = current().logsumexps(torch.stack([log_w + increment, log_w + 2 * increment, log_w]))
    if first == -math.inf:
        return 0.0
    return math.exp(2 * first - second - total)


class SMCWeights:
    """Log-weights, ESS-triggered systematic resampling and the log Z estimate.

    Parameters
    ----------
    schedule
        The target's schedule (for the backward kernel of reverse-diffusion moves).
    n
        Number of particles (of this process: with several, :mod:`rrrdsl.samplers.distributed`
        makes every sum, ESS and resampling global).
    device
        Where the particles live.
    threshold
        Resample when ``ESS < threshold * n`` (``0`` never resamples, ``1`` always).
    resampling
        The order systematic resampling sees the particles in: ``"hilbert"`` along a Hilbert
        curve (:mod:`rrrdsl.samplers.ordering`), ``"systematic"`` their storage order.
    """

    def __init__(
        self, schedule: Schedule, n: int, threshold: float = THRESHOLD, device="cpu", resampling: str = RESAMPLING
    ) -> None:
        self.schedule = schedule
        self.n = n
        self.threshold = threshold
        self.resampling = check_choice("resampling", resampling, RESAMPLINGS)
        self.log_w = torch.zeros(n, dtype=torch.float64, device=device)
        self._log_z_done = 0.0  # from finished resampling epochs

    def start(self, x: torch.Tensor, log_prob: torch.Tensor) -> None:
        self._add(initial_log_weight(x, log_prob))

    def move(
        self,
        t: int,
        x_prev: torch.Tensor,
        log_prob_prev: torch.Tensor,
        x: torch.Tensor,
        log_prob: torch.Tensor,
        transition: Optional[Transition],
    ) -> None:
        self._add(incremental_log_weight(self.schedule, t, x_prev, log_prob_prev, x, log_prob, transition))

    def _add(self, increment: torch.Tensor) -> None:
        increment = torch.nan_to_num(increment.detach().to(torch.float64), nan=-math.inf)
        self.log_w = self.log_w + increment

    def ess(self) -> float:
        """``(Σ w)^2 / Σ w^2`` of the current weights (0 when every weight vanished)."""
        return current().ess(self.log_w)

    def conditional_ess(self, increment: torch.Tensor) -> float:
        """:func:`conditional_ess` of ``increment`` under the current weights."""
        return conditional_ess(self.log_w, increment)

    def resample(self, x: torch.Tensor, generator: Optional[torch.Generator], final: bool = False) -> Optional[Resampling]:
        """A systematic resampling plan of the particles ``x`` when the ESS is below the
        threshold, or at the ``final`` level when the weights are not all equal; else ``None``."""
        group = current()
        ess = group.ess(self.log_w)
        if (ess >= self.threshold * group.total(self.n) and not final) or (final and group.all_equal(self.log_w)):
            return None
        if ess == 0.0:
            raise SamplerError("SMC: every particle has zero weight (the target density vanished everywhere)")
        self._log_z_done += self._epoch_log_z()
        order = hilbert_order(x) if self.resampling == "hilbert" else None
        plan = group.resample(self.log_w, generator, order)
        self.log_w = torch.zeros_like(self.log_w)
        return plan

    def thin(self, offset: int, m: int) -> None:
        """Keep the rows ``offset::m`` (right after a resampling, when every weight is equal, so
        the epoch's mean weight and ``log Z`` do not change: :func:`rrrdsl.samplers.levels.thin`)."""
        self.log_w = self.log_w[offset::m]
        self.n = self.log_w.shape[0]

    def _epoch_log_z(self) -> float:
        return current().log_mean_weight(self.log_w)

    def log_z(self) -> float:
        """The estimate of ``log ∫ p_0`` (``p_0`` as the target's ``log_prob`` gives it)."""
        return self._log_z_done + self._epoch_log_z()


def smc(
    target: Target,
    kernel: Optional[Kernel],
    config: AnnealedConfig,
    n: int,
    generator: Optional[torch.Generator],
    *,
    threshold: float = THRESHOLD,
    resampling: str = RESAMPLING,
    levels: Optional[AdaptiveLevels] = None,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    progress: Optional[ProgressBar] = None,
) -> AnnealedResult:
    """SMC over the annealed levels: the driver's walk plus exact importance weights.

    Parameters are those of :func:`rrrdsl.samplers.annealed.anneal`, plus ``threshold`` (the
    ESS fraction below which to resample), ``resampling`` (:class:`SMCWeights`) and ``levels``: the adaptive walk's options
    (:func:`rrrdsl.samplers.levels.adaptive_walk`, MCMC moves only), or ``None`` for the fixed
    walk over every level of the schedule. Raises :class:`SamplerError` on a score-only target
    (weights need log densities) and on a move whose weights would be wrong (:func:`check_moves`).
    """
    if not target.has_energy:
        raise SamplerError(
            "SMC needs log densities for its importance weights, but the target is score-only",
            hint="use an unadjusted sampler ('ula', 'uha', 'reverse') or models with energies",
        )
    check_moves(kernel, config.reverse, config.eta)
    weighting = partial(SMCWeights, target.schedule, threshold=threshold, device=device, resampling=resampling)
    if levels is not None:  # the walk carries M n particles, thinned to n (:func:`rrrdsl.samplers.levels.thin`)
        m = levels.oversample
        run = dict(dtype=dtype, device=device, progress=progress)
        if levels.pilot:  # the schedule chosen on a pilot population: Z_hat unbiased
            return piloted_walk(target, kernel, config, levels, m * n, generator, weighting, **run)
        return adaptive_walk(target, kernel, config, levels, m * n, generator, weighting(m * n), **run)
    return anneal(target, kernel, config, n, generator, weights=weighting(n), dtype=dtype, device=device, progress=progress)
