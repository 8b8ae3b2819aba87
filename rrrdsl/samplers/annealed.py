"""The annealed driver: reverse diffusion between levels, MCMC targeting ``p_t`` at each level.

Starting from ``x ~ N(0, I)`` at the noisiest level ``T - 1``, the driver walks
``t = T - 1, ..., 0``. At each level it optionally moves the particles from level ``t + 1`` to
``t`` with a reverse-diffusion step (:mod:`rrrdsl.samplers.diffusion`; at the levels in
``reverse_levels``, otherwise the particles stay where they are), then runs ``K`` kernel
steps targeting ``p_t(x) ∝ Π_i q^i_t(x)^{w_i}`` (Du et al., 2023, "Reduce, Reuse, Recycle",
section 4). The kernel is re-initialised at every level (its cached log density and gradient
belong to the previous level). Step sizes start at ``c * beta_t ** b`` and adapt by dual
averaging carried across levels (:mod:`rrrdsl.samplers.adapt`): during the first half of each
level's steps, frozen for the rest; under SMC only between levels, never during a level.

With a reweighting object (:class:`rrrdsl.samplers.smc.SMCWeights`) the same walk is sequential
Monte Carlo: the driver hands it every move and resamples the kernel state when it asks.

Gradient evaluations are reused across the two halves of a level: a kernel whose state caches
``log_prob``/``grad`` (fields of those names, as every kernel of this package does) supplies the
score for the next reverse step and the log density for SMC weights without a new evaluation.
NFE per particle counts one evaluation per kernel ``init``, the kernel's own ``StepInfo.nfe``,
and every extra score / log-density evaluation made by the driver.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, NamedTuple, Optional, Protocol, Union

import torch

from .adapt import LevelStepSizeAdapter, StepSizeAdapter, base_step_sizes
from .base import Kernel, LevelSet, StepInfo, Target
from .diffusion import Transition, reverse_moments, reverse_step
from .distributed import Resampling, current


#: a progress bar over the levels: tqdm or one of its front ends (``bar(levels, desc=..., leave=False)``)
ProgressBar = Callable[..., Iterable[int]]


class AnnealedConfig(NamedTuple):
    """Options of the annealed walk (validated by :func:`rrrdsl.sample`)."""

    steps: int = 0  # K kernel steps per MCMC level
    reverse: Optional[str] = "ddpm"  # reverse move between levels: "ddpm", "ddim", or None
    reverse_levels: LevelSet = None  # destination levels t that get the reverse move from t + 1
    eta: float = 1.0  # DDIM stochasticity
    mcmc_levels: LevelSet = None
    step_scale: float = 1.0  # c in c * beta_t ** b
    step_exponent: float = 1.0  # b in c * beta_t ** b
    adapt: bool = True  # dual-averaging adaptation toward the kernel's target_accept
    snapshots: tuple[int, ...] = ()  # levels at which to keep a copy of the particles


class LevelDiagnostics(NamedTuple):
    """Per-level records, each a float64 tensor of shape ``[T]`` indexed by level.

    Acceptance statistics are per-chain averages over the level's kernel steps, summarised by
    their mean/min/max over chains (NaN at levels without MCMC); ``step_size`` is the mean step
    size used at the level; ``divergences`` counts divergent proposals over steps and chains;
    ``nfe`` is gradient evaluations per particle (mean over chains); ``ess`` and ``resampled``
    are SMC's effective sample size before resampling (of the walk's population: ``oversample``
    times ``n`` on the adaptive walk) and whether it resampled (NaN / 0 without SMC).
    """

    accept_mean: torch.Tensor
    accept_min: torch.Tensor
    accept_max: torch.Tensor
    step_size: torch.Tensor
    divergences: torch.Tensor
    nfe: torch.Tensor
    ess: torch.Tensor
    resampled: torch.Tensor


class AnnealedResult(NamedTuple):
    """Final particles ``x`` ``[N, D]`` at level 0, per-level diagnostics, SMC's log Z, snapshots,
    and the log Z of SMC's pilot walk when it had one (:mod:`rrrdsl.samplers.pilot`)."""

    x: torch.Tensor
    levels: LevelDiagnostics
    log_z: Optional[float]
    snapshots: dict[int, torch.Tensor]
    pilot_log_z: Optional[float] = None


class Reweighting(Protocol):
    """What the driver asks of an SMC weighting scheme (:class:`rrrdsl.samplers.smc.SMCWeights`)."""

    def start(self, x: torch.Tensor, log_prob: torch.Tensor) -> None:
        ...

    def move(
        self,
        t: int,
        x_prev: torch.Tensor,
        log_prob_prev: torch.Tensor,
        x: torch.Tensor,
        log_prob: torch.Tensor,
        transition: Optional[Transition],
    ) -> None:
        ...

    def ess(self) -> float:
        ...

    def conditional_ess(self, increment: torch.Tensor) -> float:
        ...

    def resample(self, x: torch.Tensor, generator: Optional[torch.Generator], final: bool = False) -> Optional[Resampling]:
        ...

    def thin(self, offset: int, m: int) -> None:
        ...

    def log_z(self) -> float:
        ...


def in_level_set(t: int, levels: LevelSet) -> bool:
    """Whether level ``t`` belongs to ``levels`` (see :data:`LevelSet`)."""
    if levels is None:
        return True
    if isinstance(levels, range):
        return t in levels
    if callable(levels):
        return bool(levels(t))
    lo, hi = levels
    return lo <= t <= hi


def anneal(
    target: Target,
    kernel: Optional[Kernel],
    config: AnnealedConfig,
    n: int,
    generator: Optional[torch.Generator],
    *,
    weights: Optional[Reweighting] = None,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device] = "cpu",
    progress: Optional[ProgressBar] = None,
) -> AnnealedResult:
    """Run the annealed walk from ``N(0, I)`` at level ``T - 1`` down to level 0.

    Parameters
    ----------
    target
        The annealed target (``log_prob``/``score``/``log_prob_and_grad`` at every level).
    kernel
        The MCMC kernel, or ``None`` for pure reverse diffusion.
    config
        Steps per level, reverse move, levels with MCMC, step sizes, snapshots.
    n
        Number of particles (chains).
    generator
        Source of every random number (fixed seed -> identical output).
    weights
        An SMC reweighting scheme, or ``None`` for an unweighted walk.
    dtype, device
        Of the particles.
    progress
        The bar to show over the levels (:func:`rrrdsl.samplers.api.progress_bar` chooses
        one), or ``None`` for none.
    """
    num_levels, schedule = target.num_levels, target.schedule
    records = Records(num_levels)
    adapter = None
    if kernel is not None:
        base = base_step_sizes(schedule, config.step_scale, config.step_exponent)
        adapter_class = StepSizeAdapter if weights is None else LevelStepSizeAdapter
        adapter = adapter_class(base, kernel.target_accept if config.adapt else None)
    x = torch.randn((n, target.dim), generator=generator, dtype=dtype, device=device)
    log_prob: Optional[torch.Tensor] = None  # log p_t(x) at the current level, when known
    grad: Optional[torch.Tensor] = None  # ∇ log p_t(x) at the current level, when known
    snapshots: dict[int, torch.Tensor] = {}
    levels = range(num_levels - 1, -1, -1)
    for t in progress(levels, desc="levels", leave=False) if progress else levels:
        nfe = 0.0
        x_prev, log_prob_prev, transition = x, log_prob, None
        if t < num_levels - 1 and config.reverse is not None and in_level_set(t, config.reverse_levels):
            if grad is None:
                grad = target.score(x, t + 1)
                nfe += 1
            transition = reverse_moments(x, grad, schedule, t, config.reverse, config.eta)
            x = reverse_step(transition, generator)
        run_mcmc = kernel is not None and config.steps > 0 and in_level_set(t, config.mcmc_levels)
        state: Any = None
        log_prob = grad = None
        if run_mcmc:
            state = kernel.init(x, target, t)
            nfe += 1
            log_prob, grad = cached(state, kernel)
        if weights is not None:
            if log_prob is None:
                log_prob, grad = target.log_prob_and_grad(x, t)
                nfe += 1
            if t == num_levels - 1:
                weights.start(x, log_prob)
            else:
                weights.move(t, x_prev, log_prob_prev, x, log_prob, transition)
            records.ess[t] = weights.ess()
            plan = weights.resample(x, generator, final=t == 0)
            if plan is not None:
                records.resampled[t] = 1.0
                x, log_prob, grad = (current().exchange(v, plan) for v in (x, log_prob, grad))
                state = select(state, lambda f: current().exchange(f, plan), n) if state is not None else None
        if run_mcmc:
            state, nfe = mcmc_level(state, target, kernel, adapter, config.steps, t, generator, records, nfe)
            x = state.x
            log_prob, grad = cached(state, kernel)
            if weights is not None and log_prob is None:
                log_prob, grad = target.log_prob_and_grad(x, t)
                nfe += 1
        records.nfe[t] = nfe
        if t in config.snapshots:
            snapshots[t] = x.detach().clone()
    return AnnealedResult(x.detach(), records.finish(), None if weights is None else weights.log_z(), snapshots)


def mcmc_level(
    state: Any,
    target: Target,
    kernel: Kernel,
    adapter: Union[StepSizeAdapter, LevelStepSizeAdapter],
    steps: int,
    t: int,
    generator: Optional[torch.Generator],
    records: "Records",
    nfe: float,
) -> tuple[Any, float]:
    """``steps`` kernel steps at level ``t`` with step-size adaptation; fills the level's records."""
    adapter.start_level(steps)
    sums = StepSums()
    step_sum = 0.0
    fixed_steps = getattr(kernel, "fixed_steps", None)
    if fixed_steps is not None and adapter.target_accept is None:  # one step size for the level
        step_size = adapter.step_size(t)
        state, infos = fixed_steps(state, target, t, step_size, generator, steps)
        for info in infos:
            sums.add(info)
            step_sum += step_size
    else:
        for _ in range(steps):
            step_size = adapter.step_size(t)
            state, info = kernel.step(state, target, t, step_size, generator)
            adapter.update(info.accept_prob)
            sums.add(info)
            step_sum += step_size
    accept, (accept_mean, accept_min, accept_max, divergences, mean_nfe) = sums.finish(steps)
    nfe += mean_nfe
    adapter.end_level(accept)
    records.accept_mean[t], records.accept_min[t], records.accept_max[t] = accept_mean, accept_min, accept_max
    records.step_size[t] = step_sum / steps
    records.divergences[t] = divergences
    return state, nfe


class StepSums:
    """The :class:`~rrrdsl.samplers.base.StepInfo` of one level's steps, summed per chain and
    summarised once per level (one host read). Kernels return the same read-only tensor for a
    field that does not change between steps (the gradient evaluations of MALA; every field of a
    ULA step in which every chain moved): a run of such steps is kept as the tensor and the run's
    length, and added once."""

    def __init__(self) -> None:
        # per field of StepInfo (accept_prob, divergent, nfe): runs [value, length] of the same tensor
        self._runs: tuple[list[list], ...] = ([], [], [])

    def add(self, info: StepInfo) -> None:
        for runs, value in zip(self._runs, (info.accept_prob, info.divergent, info.nfe)):
            if runs and runs[-1][0] is value:
                runs[-1][1] += 1
            else:
                runs.append([value, 1])

    @staticmethod
    def _per_chain(runs: list[list]) -> torch.Tensor:
        """``Σ k · value`` over the runs, per chain, float64 ``[N]`` (a new tensor: a kernel's own is never written to)."""
        (value, k), *rest = runs
        total = value.to(torch.float64, copy=True) if k == 1 else k * value.to(torch.float64)
        for value, k in rest:
            total.add_(value if k == 1 else k * value.to(torch.float64))
        return total

    @staticmethod
    def _count(runs: list[list]) -> torch.Tensor:
        """``Σ k · value`` over the runs and the chains: an exact integer, as a 0-dim float64 tensor."""
        return sum(k * value.sum(dtype=torch.long) for value, k in runs).to(torch.float64)

    def finish(self, steps: int) -> tuple[torch.Tensor, list[float]]:
        """Per-chain mean acceptance ``[N]``, and, in one host read, its mean, min and max over
        chains, the divergent proposals over steps and chains, and the gradient evaluations per
        chain (the mean over chains)."""
        accept_runs, divergent_runs, nfe_runs = self._runs
        accept = self._per_chain(accept_runs) / steps
        lowest, highest = torch.aminmax(accept)
        summary = torch.stack((accept.mean(), lowest, highest, self._count(divergent_runs), self._count(nfe_runs)))
        accept_mean, accept_min, accept_max, divergences, nfe_total = summary.tolist()
        return accept, [accept_mean, accept_min, accept_max, divergences, nfe_total / accept.shape[0]]


def cached(state: Any, kernel: Kernel) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The ``log_prob`` and ``grad`` a kernel state caches at its ``x`` (``None`` where absent).

    ``log_prob`` counts only from a kernel that evaluates exact energies (``needs_energy``): a
    line-integral estimate is relative to each chain's start and unfit for SMC weights.
    """
    log_prob = getattr(state, "log_prob", None) if kernel.needs_energy else None
    return log_prob, getattr(state, "grad", None)


def select(state: Any, take: Callable[[torch.Tensor], torch.Tensor], n: int) -> Any:
    """A kernel state with ``take`` applied to every per-chain tensor field (leading dimension
    ``n``): a resampling exchange (:meth:`~rrrdsl.samplers.distributed.Group.exchange`) or a subset."""
    return type(state)(
        *(take(f) if isinstance(f, torch.Tensor) and f.dim() > 0 and f.shape[0] == n else f for f in state)
    )


class Records:
    """Per-level diagnostics being filled in, as Python lists (a write per level costs no tensor
    operation; NaN where a quantity does not apply), made tensors by :meth:`finish`."""

    def __init__(self, num_levels: int) -> None:
        self.accept_mean, self.accept_min, self.accept_max = ([math.nan] * num_levels for _ in range(3))
        self.step_size, self.ess = [math.nan] * num_levels, [math.nan] * num_levels
        self.divergences, self.nfe, self.resampled = ([0.0] * num_levels for _ in range(3))

    def finish(self) -> LevelDiagnostics:
        return LevelDiagnostics(*(torch.tensor(getattr(self, name), dtype=torch.float64) for name in LevelDiagnostics._fields))
