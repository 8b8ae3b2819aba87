"""The exactness checks of issue 14 with closed-form answers, shared by ``tests/test_exactness.py``
and ``rrr bench exactness``: the tests assert them, the benchmark tabulates them.

**SMC's Ẑ/Z.** On products of two 1-D Gaussian mixtures (:data:`TARGETS`) the normaliser of
``p_0`` is closed-form (:func:`exact_log_z`), so the mean of ``Ẑ / Z`` over independent runs
(seeds ``0..runs-1``) must be 1 within three standard errors (:func:`within_three_standard_errors`)
for every SMC configuration the API accepts (:data:`SMC_CONFIGURATIONS`): the fixed walk with
each exact MCMC move, with and without reverse-diffusion moves (DDPM, and DDIM at ``eta = 1``),
and the adaptive walk with each exact move, with its schedule chosen by a pilot walk
(``pilot``) and with systematic resampling in storage order (``resampling="systematic"``; the
others resample in Hilbert order, :mod:`rrrdsl.samplers.ordering`). The adaptive walk without a pilot chooses its schedule on the particles it weights,
which biases Ẑ by O(1/N) (Beskos, Jasra, Kantas & Thiery, 2016): within three standard errors at
these N and runs, visible at a few particles with many runs (:data:`BIAS_WALK`), where the pilot
walk's is not. A short schedule (:data:`SCHEDULE`) keeps the runs
cheap; :data:`RUNS` gives a standard error of a few percent at ``N = 8`` and ``N = 512``.

**One chain from exact draws.** Annealed MALA, HMC and NUTS on ``N(0, 1)`` (the same density at
every level) start from an exact draw at level 1 and run :data:`CHAIN_STEPS` steps at level 0
with their default adaptation, one chain per run (:func:`chain_second_moments`): the chain's own
history is then the adaptation statistic, the worst case for invariance, and ``E x² = 1``
(``var x² = 2``) must hold within three standard errors.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..schedules import Schedule, cosine

#: the short schedule of the Ẑ/Z checks; a reverse move across its top levels (beta from 0.24 to
#: 0.999) is a poor proposal whose exact weights are heavy-tailed, so the reverse moves go into
#: levels 0..3 only (beta <= 0.18)
SCHEDULE = cosine(10)
REVERSE_LEVELS = (0, 3)
#: MCMC moves per level in the Ẑ/Z checks
STEPS = 1
#: independent runs per particle count: a standard error of a few percent
RUNS = {8: 40, 512: 12}
#: the adaptive walk's options in the Ẑ/Z checks: a conditional-ESS fraction of 0.9 makes it
#: visit 4-6 of the 10 levels (0.5 visits 2-3), and a small budget (the moves at the target
#: after the last resampling do not change log Z)
ADAPTIVE = {"ess": 0.9, "budget": 20}
#: the MCMC moves SMC weights exactly (``rrrdsl.samplers.smc.EXACT_KERNELS``)
EXACT_MOVES = ("mala", "hmc", "nuts")
#: particles of the pilot walk in :data:`SMC_CONFIGURATIONS` (``pilot=P``: the schedule chosen on them)
PILOT = 16
#: the adaptive walk whose Ẑ is biased by O(1/N) (it chooses its levels and step sizes on the
#: particles it weights) on the Gaussian product, with ``N`` particles through the walk and
#: ``pilot=N`` or none (0): :data:`BIAS_RUNS` runs at each ``N`` of :data:`BIAS_N` in ``rrr bench
#: exactness``, and the lean test's ``N`` and runs (``tests/test_exactness.py``)
BIAS_WALK = {"kernel": "mala", "oversample": 1, **ADAPTIVE}
BIAS_N, BIAS_RUNS = (4, 8, 16, 32, 64), 800
BIAS_TEST_N, BIAS_TEST_RUNS = 4, 200


def _configurations() -> dict[str, dict[str, Any]]:
    fixed = {"levels": "schedule", "reverse_levels": REVERSE_LEVELS}
    configurations: dict[str, dict[str, Any]] = {}
    for kernel in EXACT_MOVES:
        configurations[f"fixed walk, {kernel}, DDPM moves"] = {"kernel": kernel, "reverse": "ddpm", **fixed}
        configurations[f"fixed walk, {kernel}, no reverse moves"] = {"kernel": kernel, "reverse": None, **fixed}
    configurations["fixed walk, mala, DDIM moves (eta = 1)"] = {"kernel": "mala", "reverse": "ddim", "eta": 1.0, **fixed}
    for kernel in EXACT_MOVES:
        configurations[f"adaptive walk, {kernel}"] = {"kernel": kernel, **ADAPTIVE}
    configurations[f"adaptive walk, mala, pilot walk of {PILOT}"] = {"kernel": "mala", "pilot": PILOT, **ADAPTIVE}
    configurations["adaptive walk, mala, resampling in storage order"] = {"kernel": "mala", "resampling": "systematic", **ADAPTIVE}
    return configurations


#: every SMC configuration the API accepts: label -> options of ``rrrdsl.sample(target, "smc")``
SMC_CONFIGURATIONS = _configurations()


def _gaussian_product() -> Any:
    from ..lang.ir import gmm

    return gmm(means=[[0.5]], std=0.3) * gmm(means=[[-0.3]], std=0.5)


def _two_component_product() -> Any:
    from ..lang.ir import gmm

    return gmm(means=[[-0.6], [0.4]], std=0.2) * gmm(means=[[0.2]], std=0.4)


#: name -> (expression, its first factor's equal-weight components (mean, std), its second factor (mean, std))
TARGETS: dict[str, tuple[Callable[[], Any], list[tuple[float, float]], tuple[float, float]]] = {
    "gaussian product": (_gaussian_product, [(0.5, 0.3)], (-0.3, 0.5)),
    "two-component product": (_two_component_product, [(-0.6, 0.2), (0.4, 0.2)], (0.2, 0.4)),
}


def _log_normal(x: float, mean: float, var: float) -> float:
    return -0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)


def exact_log_z(name: str, schedule: Schedule) -> float:
    """Exact ``log Z`` at level 0 of ``TARGETS[name]``: a Gaussian oracle is ``N(sqrt(a) mu, a s^2 + 1 - a)``
    at a level with ``alpha_bar = a``, and ``∫ Σ_k π_k N(x; m_k, v_k) N(x; m, v) dx
    = Σ_k π_k N(m_k; m, v_k + v)`` (equal weights ``π_k``)."""
    alpha_bar = float(schedule.alpha_bar[0])

    def noised(mean: float, std: float) -> tuple[float, float]:
        return math.sqrt(alpha_bar) * mean, alpha_bar * std**2 + 1 - alpha_bar

    _, components, other = TARGETS[name]
    m, v = noised(*other)
    terms = [_log_normal(mk, m, vk + v) for mk, vk in (noised(*c) for c in components)]
    return math.log(sum(math.exp(term) for term in terms) / len(terms))


def z_ratios(name: str, n: int, runs: int, schedule: Schedule = SCHEDULE, **options: Any) -> torch.Tensor:
    """``Ẑ / Z`` of ``runs`` independent SMC runs (seeds ``0..runs-1``) with ``n`` particles on
    ``TARGETS[name]`` (float64, :data:`STEPS` moves per level unless ``options`` say otherwise)."""
    from ..compiler import compile as compile_expr
    from ..samplers.api import sample

    target = compile_expr(TARGETS[name][0](), schedule)
    options = {"steps": STEPS, "dtype": "float64", "progress": False, **options}
    log_zs = [sample(target, "smc", n=n, seed=seed, **options).diagnostics["log_z"] for seed in range(runs)]
    return torch.exp(torch.tensor(log_zs, dtype=torch.float64) - exact_log_z(name, schedule))


def mean_and_error(values: torch.Tensor) -> tuple[float, float]:
    """The mean of independent ``values`` and its standard error."""
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def within_three_standard_errors(values: torch.Tensor, truth: float) -> tuple[bool, str]:
    """Whether the mean of independent ``values`` is within three standard errors of ``truth``,
    and a one-line summary."""
    mean, se = mean_and_error(values)
    return abs(mean - truth) < 3 * se, f"mean {mean:.4f} ± {se:.4f} (truth {truth})"


#: independent single-chain runs per kernel and steps at level 0: MALA's is the run that failed
#: with adaptation at every step (E x² = 0.72)
CHAIN_RUNS = {"mala": 400, "hmc": 200, "nuts": 60}
CHAIN_STEPS = 30


def chain_second_moments(kernel: str, runs: int, steps: int = CHAIN_STEPS) -> torch.Tensor:
    """``x²`` at the end of ``runs`` one-chain annealed runs (seeds ``0..runs-1``) of ``kernel`` on
    ``N(0, 1)`` at every level of ``cosine(2)``: an exact draw at level 1, ``steps`` steps at
    level 0 adapting as they do by default; ``E x² = 1`` for an exact kernel."""
    from ..compiler import compile as compile_expr
    from ..lang.ir import gmm
    from ..samplers.api import sample

    target = compile_expr(gmm(means=[[0.0]], std=1.0), cosine(2))
    x = torch.cat([
        sample(target, kernel, n=1, seed=s, steps=steps, mcmc_levels=(0, 0), reverse=None, dtype="float64", progress=False).x
        for s in range(runs)
    ])
    return x[:, 0] ** 2
