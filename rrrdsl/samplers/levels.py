"""SMC with adaptive levels: the next noise level chosen by the conditional ESS.

Adaptive tempering picks the next inverse temperature by bisection so that the incremental
weights keep a fixed conditional effective sample size (Jasra et al., 2011; Zhou, Johansen &
Aston, 2016). Here the bridge stays the diffusion path ``p_{T-1}, ..., p_0`` (it is what
composes models) and the bisection runs on its levels: from the current level ``t`` the walk
goes to the lowest level ``s < t`` whose incremental weights ``v_i = p_s(x_i) / p_t(x_i)`` keep

    CESS(s) / N = (Σ_i W_i v_i)^2 / Σ_i W_i v_i^2  >=  rho

(``W`` the current normalised weights; :func:`rrrdsl.samplers.smc.conditional_ess`), so the walk
takes as many levels as the composition needs: few where ``p_s`` barely changes, every level
where it changes fast. Each probe of the bisection is one log-density evaluation per particle,
counted in the NFE. The levels stay on the schedule's grid (the compiled targets are defined
there); where even the next grid level has ``CESS < rho`` the walk takes it anyway, and the
ESS-triggered resampling (:class:`rrrdsl.samplers.smc.SMCWeights`) absorbs the loss.

Moves: ``K`` MCMC steps at every visited level, by a kernel that leaves ``p_s`` invariant, with
one step size fixed before the level's moves start: a pilot (:func:`pilot_step_size`) tries
candidate step sizes for one step on a random subset of the population and keeps the largest
that reaches the kernel's target acceptance (its gradient evaluations are counted). One
dual-averaging step per level, as on the fixed walk, was too slow for a walk of about ten
levels: it left the top level at acceptance 0.01 and the next ones at 0.97-0.99 on
``oracle("ring") ** 2``. No reverse-diffusion moves: a reverse step is a transition between
adjacent levels ``t + 1 -> t`` whose weight needs the one-level noising kernel as backward
kernel, so it does not fit a walk that skips levels (the fixed walk, ``levels="schedule"``,
keeps them). The walk carries ``M N`` particles (``oversample``) and thins them to the ``N`` it
returns (:func:`thin`) after its final resampling at level 0, or earlier when it is too long
for its budget (:data:`RESERVE`). After level 0 is reached and the particles resampled and
thinned, the rest of the gradient budget (per returned particle: ``budget`` counts the pilot
walk, the walk's moves, probes and step-size pilots, and these moves) is spent on moves at the
target: the step size adapts during the first half of those
moves and is frozen for the rest (:class:`~rrrdsl.samplers.adapt.StepSizeAdapter`), so the
returned particles come from a fixed kernel that leaves ``p_0`` invariant; these moves do not
touch the weights or ``log Z``. Whether to thin early and how many moves a level gets depend
on the gradient evaluations spent so far, which for MALA and HMC are fixed by the path of levels
(so a replayed path, ``pilot``, keeps ``Z_hat`` unbiased); NUTS's depend on its trees.

Exactness: the weights are those of SMC with MCMC moves (an incremental weight
``p_s(x) / p_t(x)`` per visited level), whatever levels are chosen. The choice of the levels and
of the pilot's step sizes depends on the population, as the temperatures of adaptive tempering
do, which makes ``Z_hat`` consistent with a bias of order ``1 / N`` (Beskos, Jasra, Kantas &
Thiery, 2016) rather than exactly unbiased: Ẑ/Z = 1.155 ± 0.020 with 4 particles, 1.034 ± 0.008
with 16 (Gaussian product, 800 runs, ``benchmarks/results/exactness.md``), within three standard
errors of 1 at the N and runs of ``tests/test_exactness.py``. The walk's choices are made by a
:class:`Choices` (:class:`AdaptiveChoices` on its own population, recording its :class:`Path`);
with ``pilot=P`` a pilot walk of ``P`` particles of its own chooses the path and the main walk
replays it, which makes ``Z_hat`` exactly unbiased (:mod:`rrrdsl.samplers.pilot`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, NamedTuple, Optional, Protocol, Union

import torch

from .adapt import LevelStepSizeAdapter, StepSizeAdapter, base_step_sizes
from .annealed import AnnealedConfig, AnnealedResult, ProgressBar, Records, Reweighting, cached, mcmc_level, select
from .base import Kernel, Target
from .distributed import current

#: the conditional-ESS fraction ``rho`` the next level keeps: 0.8 visits 11-12 of the 100 levels on
#: ``ring * bar`` and ``ring ** 2`` (0.5: 6, 0.9: 16); chosen by MMD / floor over seeds
#: (``benchmarks/results/smc.md``, "How the defaults were chosen")
ESS_FRACTION = 0.8
#: gradient evaluations per returned particle of the whole run (the walk, its probes and the final moves)
BUDGET = 600
#: particles through the walk per returned particle (:func:`thin`) and MCMC steps per visited
#: level: with 3 and 8 (and Hilbert-ordered resampling) the mass in each mode scatters over seeds
#: 1.01x and 1.12x as much as in independent draws, where 1 and 16 gave 1.4-2.0x (``rrr bench
#: modes``, ``benchmarks/results/modes.md``)
OVERSAMPLE, STEPS = 3, 8
#: the share of the budget a walk keeps for the moves at level 0. An oversampled walk thins to
#: ``N`` particles (:func:`thin`) at the first level whose moves would leave less, so that a long
#: walk costs ``1 / M`` as much per returned particle from there on (a walk within its budget
#: thins at level 0 only, before the moves there); a walk of ``N`` that would still leave less
#: takes fewer moves per level (at least one), so that the particles it returns are not the
#: copies of its last resampling. Without it ``gmm(std=0.1) * gmm(std=0.2)`` in 10 dimensions
#: took 992 gradients per particle of a 600 budget and returned copies (8 moves at level 0)
RESERVE = 0.25
#: chains of the pilot that sets each level's step size (at most, and as a fraction of the
#: population: about 0.6 gradient evaluations per particle and level at N >= 1024), and its
#: candidates: the step size carried from the previous level times ``2 ** k``
PILOT_CHAINS, PILOT_FRACTION = 128, 1 / 8
PILOT_POWERS = range(-4, 5)


class AdaptiveLevels(NamedTuple):
    """Options of the adaptive walk (validated by :func:`rrrdsl.sample`)."""

    ess: float = ESS_FRACTION  # rho: the conditional ESS fraction the next level keeps
    budget: int = BUDGET  # gradient evaluations per returned particle, final moves included
    oversample: int = OVERSAMPLE  # M: particles through the walk per returned particle (:func:`thin`)
    pilot: int = 0  # P: particles of a pilot walk that chooses the schedule (:mod:`rrrdsl.samplers.pilot`); 0: none


def next_level(t: int, acceptable: Callable[[int], bool], lowest: int = 0, jump: Optional[int] = None) -> tuple[int, int]:
    """The lowest level ``s`` in ``lowest..t-1`` with ``acceptable(s)``, and the probes made.

    ``acceptable`` is assumed monotone (true from ``t - 1`` down to the answer, false below), as
    the conditional ESS falls when ``s`` moves away from ``t``; when no level is acceptable the
    answer is ``t - 1``, the nearest level of the grid. The first probe is ``t - jump`` (the
    previous jump; ``None``: ``lowest``, where the walk goes as soon as it can); from there an
    exponential search (steps 1, 2, 4, ... away from it) brackets the answer and a bisection
    finds it, so a jump like the previous one costs two probes and any jump ``O(log t)``.
    """
    if not 0 <= lowest < t:
        raise ValueError(f"no level in {lowest}..{t - 1}")
    first = lowest if jump is None else min(max(lowest, t - jump), t - 1)
    probes = 1
    if acceptable(first):  # search down: the answer is in lowest..first
        bad, good, step = None, first, 1
        while good > lowest:
            probes += 1
            s = max(lowest, good - step)
            if not acceptable(s):
                bad = s
                break
            good, step = s, 2 * step
        if bad is None:
            return good, probes
    else:  # search up: the answer is in first+1..t-1 (t-1 when nothing is acceptable)
        bad, good, step = first, t - 1, 1
        while bad < t - 1:
            probes += 1
            s = min(t - 1, bad + step)
            if acceptable(s):
                good = s
                break
            bad, step = s, 2 * step
    while good - bad > 1:  # acceptable(bad) is false, the answer is in bad+1..good
        middle = (bad + good) // 2
        probes += 1
        if acceptable(middle):
            good = middle
        else:
            bad = middle
    return good, probes


def adaptive_walk(
    target: Target,
    kernel: Kernel,
    config: AnnealedConfig,
    levels: AdaptiveLevels,
    n: int,
    generator: Optional[torch.Generator],
    weights: Reweighting,
    *,
    choices: Optional[Choices] = None,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device] = "cpu",
    progress: Optional[ProgressBar] = None,
) -> AnnealedResult:
    """Run SMC from ``N(0, I)`` at level ``T - 1`` to level 0 with adaptive levels (see the module doc).

    ``weights`` is an :class:`rrrdsl.samplers.smc.SMCWeights`; ``config`` gives the moves per
    level (``steps``), the step sizes and ``adapt``; its reverse-move and level-set fields are
    not used. ``choices`` makes each level's step size and the next level: by default an
    :class:`AdaptiveChoices` on this population (``levels.ess``); a recorded path replayed
    (:class:`rrrdsl.samplers.pilot.FixedChoices`) gives SMC with a fixed schedule.
    ``progress``: a bar over the levels (the skipped ones count as passed). Under ``torchrun``
    every choice (levels, pilot step sizes, the final moves) is made from statistics pooled over
    the processes (:mod:`rrrdsl.samplers.distributed`), so every rank walks the same levels.
    """
    top = target.num_levels - 1
    records = Records(target.num_levels)  # nfe per returned particle: per walk particle times ``m``
    base = base_step_sizes(target.schedule, config.step_scale, config.step_exponent)
    target_accept = kernel.target_accept if config.adapt else None
    choices = choices or AdaptiveChoices(levels.ess, target_accept)
    adapter = LevelStepSizeAdapter(base, None)  # fixed in a level, set by ``choices`` before it
    m = levels.oversample
    x = torch.randn((n, target.dim), generator=generator, dtype=dtype, device=device)
    log_prob = target.log_prob(x, top)
    weights.start(x, log_prob)
    records.nfe[top] = float(m)
    t, step_cost = top, 1.0
    snapshots: dict[int, torch.Tensor] = {}
    ticks = iter(progress(range(top, -1, -1), desc="levels", leave=False)) if progress else iter(())
    _advance(ticks, 1)
    while True:
        spent = _pooled(float(sum(records.nfe)), n)
        thinning = m > 1 and (t == 0 or spent + m * (config.steps * step_cost + 1) > levels.budget * (1 - RESERVE))
        x = _resample(weights, generator, records, t, x, final=t == 0 or thinning)
        if thinning:  # every m-th of the resampled particles: a systematic resampling to N (:func:`thin`)
            x, snapshots = thin(x, snapshots, m, weights, generator)
            n, m = n // m, 1
        state = kernel.init(x, target, t)
        step_size, cost = choices.step_size(kernel, target, state, t, adapter.step_size(t), generator)
        adapter.log_ratio, nfe = math.log(step_size / float(base[t])), 1.0 + cost
        steps = config.steps
        allowance = levels.budget * (1 - RESERVE) - spent - nfe  # what the walk may spend here per returned particle
        if t > 0 and m == 1 and steps * step_cost > allowance:  # a walk too long for its budget: fewer moves
            steps = max(1, int(allowance / step_cost))
        if t == 0:
            adapter = _final_adapter(base, target_accept, adapter)
            steps = max(0, int((levels.budget - spent - nfe) / step_cost)) if math.isfinite(levels.budget) else 0
        if steps > 0:
            before = nfe
            state, nfe = mcmc_level(state, target, kernel, adapter, steps, t, generator, records, nfe)
            step_cost = _pooled((nfe - before) / steps, n)
        x = state.x
        log_prob = cached(state, kernel)[0]
        records.nfe[t] += nfe * m
        if t in config.snapshots:
            snapshots[t] = x.detach().clone()
        if t == 0:
            _advance(ticks, 1)  # past the end: the bar closes
            break
        lowest = max((level for level in config.snapshots if level < t), default=0)
        level, probes = _move(choices, target, weights, x, log_prob, t, lowest)
        records.nfe[level] += probes * m
        _advance(ticks, t - level)
        t = level
    return AnnealedResult(x.detach(), records.finish(), weights.log_z(), snapshots)


class Path(NamedTuple):
    """The levels a walk visited, from the top level down to 0, and the step size of the moves at each."""

    levels: list[int]
    step_sizes: list[float]


class Choices(Protocol):
    """What :func:`adaptive_walk` asks of the maker of its choices."""

    def step_size(
        self, kernel: Kernel, target: Target, state: Any, t: int, carried: float, generator: Optional[torch.Generator]
    ) -> tuple[float, float]:
        """The step size of the moves at level ``t`` (``carried``: the previous level's) and the
        gradient evaluations per particle spent choosing it."""
        ...

    def next_level(
        self, target: Target, weights: Reweighting, x: torch.Tensor, log_prob: torch.Tensor, t: int, lowest: int
    ) -> tuple[int, torch.Tensor, int]:
        """The level after ``t`` (not below ``lowest``), ``log p`` there at ``x`` and the evaluations made."""
        ...


class AdaptiveChoices:
    """The adaptive walk's choices, made on its own population and recorded in :attr:`path`.

    Each level's step size by :func:`pilot_step_size` toward ``target_accept`` (``None``: the
    carried step size, no adaptation), the next level by the conditional ESS fraction ``rho``
    (:func:`next_level`, starting from the previous jump).
    """

    def __init__(self, rho: float, target_accept: Optional[float]) -> None:
        self.rho, self.target_accept = rho, target_accept
        self.jump: Optional[int] = None
        self.path = Path([], [])

    def step_size(
        self, kernel: Kernel, target: Target, state: Any, t: int, carried: float, generator: Optional[torch.Generator]
    ) -> tuple[float, float]:
        step_size, cost = carried, 0.0
        if self.target_accept is not None:
            step_size, cost = pilot_step_size(kernel, target, state, t, carried, self.target_accept, generator)
        self.path.levels.append(t)
        self.path.step_sizes.append(step_size)
        return step_size, cost

    def next_level(
        self, target: Target, weights: Reweighting, x: torch.Tensor, log_prob: torch.Tensor, t: int, lowest: int
    ) -> tuple[int, torch.Tensor, int]:
        probed: dict[int, torch.Tensor] = {}

        def acceptable(s: int) -> bool:
            probed[s] = target.log_prob(x, s)
            return weights.conditional_ess(probed[s] - log_prob) >= self.rho

        s, probes = next_level(t, acceptable, lowest, self.jump)
        if s not in probed:  # the nearest level, reached without an acceptable probe
            probed[s], probes = target.log_prob(x, s), probes + 1
        self.jump = t - s
        return s, probed[s], probes


def pilot_step_size(
    kernel: Kernel,
    target: Target,
    state: Any,
    t: int,
    step_size: float,
    target_accept: float,
    generator: Optional[torch.Generator],
) -> tuple[float, float]:
    """The step size of the moves at level ``t``, chosen on the population before they start.

    One kernel step from a few chains drawn at random (:data:`PILOT_CHAINS`), for each candidate
    ``step_size * 2 ** k`` (:data:`PILOT_POWERS`): each candidate moves its own copy of those
    chains, all in one batched step with per-chain step sizes (one target evaluation). The
    largest candidate whose mean acceptance reaches ``target_accept`` is chosen (the smallest
    when none does). The pilot's moves are
    discarded, so the level's moves run with one step size fixed before they start (it depends
    on the population only through a mean acceptance, as the between-level adaptation of
    :class:`~rrrdsl.samplers.adapt.LevelStepSizeAdapter` does). Returns the step size and the
    pilot's gradient evaluations per particle of the whole population. Under ``torchrun`` each
    process draws its pilot chains from its own particles and the acceptance is pooled, so
    every rank chooses the same step size.
    """
    group = current()
    n = state.x.shape[0]
    size = max(1, min(PILOT_CHAINS, int(PILOT_FRACTION * n)))
    index = torch.randperm(n, generator=generator, device=state.x.device)[:size]
    candidates = [step_size * 2.0**k for k in PILOT_POWERS]
    copies = index.repeat(len(candidates))
    pilot = select(state, lambda f: f[copies], n)
    step_sizes = torch.tensor(candidates, dtype=state.x.dtype, device=state.x.device).repeat_interleave(size)
    _, info = kernel.step(pilot, target, t, step_sizes, generator)
    cost = float(group.sum(info.nfe.to(torch.float64).sum().reshape(1))[0]) / group.total(n)
    accepts = group.row_means(info.accept_prob.reshape(len(candidates), size))
    passing = [candidate for candidate, accept in zip(candidates, accepts) if accept >= target_accept]
    return max(passing, default=min(candidates)), cost


def _move(
    choices: Choices,
    target: Target,
    weights: Reweighting,
    x: torch.Tensor,
    log_prob: Optional[torch.Tensor],
    t: int,
    lowest: int,
) -> tuple[int, int]:
    """Weight the particles ``x`` at level ``t`` for the next level ``choices`` make (in
    ``lowest..t-1``): the increment ``log p_s(x) - log p_t(x)``. Returns ``s`` and the evaluations
    made (the choice's, and one for ``log p_t`` when the kernel did not cache it)."""
    extra = 0
    if log_prob is None:
        log_prob, extra = target.log_prob(x, t), 1
    s, log_prob_s, evaluations = choices.next_level(target, weights, x, log_prob, t, lowest)
    weights.move(s, x, log_prob, x, log_prob_s, None)
    return s, evaluations + extra


def _resample(
    weights: Reweighting, generator: Optional[torch.Generator], records: Records, t: int, x: torch.Tensor, final: bool
) -> torch.Tensor:
    """Record the ESS at level ``t``; the particles, resampled when ``weights`` asks."""
    records.ess[t] = weights.ess()
    plan = weights.resample(x, generator, final=final)
    if plan is None:
        return x
    records.resampled[t] = 1.0
    return current().exchange(x, plan)


def _pooled(value: float, n: int) -> float:
    """The mean over every process of a per-particle ``value`` of this process's ``n`` particles
    (``value`` itself in one process): the final moves' budget is spent alike on every rank."""
    return current().mean(torch.full((n,), value, dtype=torch.float64))


def _advance(ticks: Iterator[int], levels: int) -> None:
    """Move a progress bar over ``levels`` levels (none: nothing)."""
    for _ in range(levels):
        next(ticks, None)


def thin(
    x: torch.Tensor, snapshots: dict[int, torch.Tensor], m: int, weights: Reweighting, generator: Optional[torch.Generator]
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Every ``m``-th of the walk's ``m N`` particles just resampled, from a random offset: ``N``.

    The walk thins right after a systematic resampling (or with every weight equal), whose
    outputs lie in the order of their ancestors (along a Hilbert curve by default,
    :mod:`rrrdsl.samplers.ordering`); taking every ``m``-th of them is a systematic resampling
    to ``N`` in that order (Kitagawa, 1996), so the descendants of one ancestor, and the
    particles of one mode, are kept in proportion, and the weights stay equal (``log Z``
    unchanged). The mode masses then rest on the weights of ``m N`` particles:
    their scatter over seeds fell from 1.4-2.0x that of independent draws to 0.8-1.4x with
    ``m = 3`` and 8 moves per level at the same gradient budget (two runs of ``rrr bench modes``
    in storage order; 1.01-1.12x over 200 seeds in Hilbert order, ``benchmarks/results/modes.md``). Every particle is kept with probability ``1 / m`` whatever
    the offset's distribution across processes, so each rank draws its own. The snapshots taken
    so far (of ``m N`` particles) are thinned alike; ``weights`` (an
    :class:`rrrdsl.samplers.smc.SMCWeights`) keep the same rows.
    """
    offset = int(torch.randint(m, (1,), generator=generator, device=x.device))
    weights.thin(offset, m)
    return x[offset::m], {t: snapshot[offset::m] for t, snapshot in snapshots.items()}


def _final_adapter(base: torch.Tensor, target_accept: Optional[float], walk: LevelStepSizeAdapter) -> StepSizeAdapter:
    """The adapter of the moves at the target: warm-up then frozen, starting from the pilot's ratio."""
    final = StepSizeAdapter(base, target_accept)
    final.log_ratio = walk.log_ratio
    return final
