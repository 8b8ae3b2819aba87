"""``rrr bench exactness [--n N] [--seed S]``: the exactness checks of issue 14 as tables, with
seeds and standard errors.

**SMC's Ẑ/Z and one chain's E x².** The closed-form checks of ``tests/test_exactness.py``
(:mod:`rrrdsl.bench.exact_checks`, shared with the tests): ``Ẑ / Z`` of every SMC configuration
the API accepts on a product of two Gaussians and a two-component GMM product at N = 8 and 512,
the adaptive walk's O(1/N) bias at a few particles with and without a pilot walk (:func:`bias_rows`),
and ``E x²`` of one-chain annealed MALA, HMC and NUTS on ``N(0, 1)`` from exact draws.

**Line-integral Metropolis on the banana.** ``x1 ~ N(0, 1)``, ``x2 | x1 ~ N(x1² - 1, 1)``
(:class:`Banana`, the same density at every level): the chains start at ``N`` exact draws and
each kernel spends the same number of gradient evaluations per chain; an exact kernel keeps
``var x1 = 1`` and ``E x1⁴ = 3``, a biased one drifts away. Step sizes are those the default
annealed run adapts to (:func:`adapted_step_size`), so each row shows a kernel at its defaults;
ULA, which does not adapt, runs at line-integral MALA's step and at a smaller one.

**Mixture weights.** ``0.5 * (a * b) + 0.5 * c`` with 1-D Gaussian oracles (:data:`GAUSSIANS`):
the effective weight of ``a * b`` (its share of the compiled density's mass on a fine grid) at
levels 0, 50 and 90, with the normalisers :mod:`rrrdsl.samplers.normalisers` estimates, against
the weight the old unnormalised ``logsumexp`` gave it (closed form: ``π Z / (π Z + 1 - π)``).
And a mixture of shipped learned energies, ``0.25 * model("ring_left") + 0.75 *
model("box_small")``: the mass SMC puts on the ring (where the ring oracle's density exceeds the
box oracle's) with and without the normalisers, against exact samples of the same mixture of the oracles.

Writes ``exactness.md`` (prose in ``templates/exactness.md``).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any, NamedTuple, Optional

import torch

from ..schedules import Level, Schedule, default
from .common import markdown_table, mean_se, provenance, render, write_report
from .exact_checks import (
    BIAS_N,
    BIAS_RUNS,
    BIAS_WALK,
    CHAIN_RUNS,
    CHAIN_STEPS,
    RUNS,
    SMC_CONFIGURATIONS,
    TARGETS,
    chain_second_moments,
    mean_and_error,
    within_three_standard_errors,
    z_ratios,
)

#: the banana's exact moments of ``x1``: ``var x1`` and ``E x1⁴`` of ``N(0, 1)``
TRUE_VAR, TRUE_FOURTH = 1.0, 3.0
#: gradient evaluations per chain of each banana row
BUDGET = 200
#: (mean, std) of the 1-D Gaussian oracles a, b, c of ``0.5 * (a * b) + 0.5 * c``
GAUSSIANS = {"a": (0.5, 0.3), "b": (-0.3, 0.5), "c": (-2.0, 0.3)}
#: the levels at which the mixture weights are checked
MIXTURE_LEVELS = (0, 50, 90)


class Banana:
    """The banana ``x1 ~ N(0, 1)``, ``x2 | x1 ~ N(x1² - 1, 1)`` at every level of ``schedule``,
    a :class:`~rrrdsl.samplers.base.Target` (normalised: ``log p`` includes ``-log 2π``).

    ``has_energy=False`` presents it score-only, as a score model would be.
    """

    dim = 2

    def __init__(self, has_energy: bool = True, schedule: Optional[Schedule] = None) -> None:
        self.has_energy = has_energy
        self.schedule = schedule or default()
        self.num_levels = self.schedule.num_levels

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        return -0.5 * x1**2 - 0.5 * (x2 - x1**2 + 1) ** 2 - math.log(2 * math.pi)

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        x1, residual = x[:, 0], x[:, 1] - x[:, 0] ** 2 + 1
        return torch.stack([-x1 + 2 * x1 * residual, -residual], dim=-1)

    def log_prob_and_grad(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        return self.log_prob(x, t), self.score(x, t)

    @staticmethod
    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws, float64 ``[n, 2]``."""
        x1 = torch.randn(n, generator=generator, dtype=torch.float64)
        x2 = x1**2 - 1 + torch.randn(n, generator=generator, dtype=torch.float64)
        return torch.stack([x1, x2], dim=-1)


class Moments(NamedTuple):
    """``var x1`` and ``E x1⁴`` of the chains' final states with their standard errors, the
    gradient evaluations per chain and the mean acceptance."""

    var: float
    var_se: float
    fourth: float
    fourth_se: float
    nfe: float
    accept: float

    def within(self, tolerance: float) -> bool:
        """Both moments within ``tolerance`` (relative) of the truth."""
        return abs(self.var / TRUE_VAR - 1) < tolerance and abs(self.fourth / TRUE_FOURTH - 1) < tolerance


def adapted_step_size(sampler: str, n: int = 1000, seed: int = 0, **options: Any) -> float:
    """The level-0 step size the default annealed ``sampler`` adapts to on the banana (MCMC at
    the last ten levels from ``N(0, I)``, no reverse moves: the banana is no diffusion)."""
    from ..samplers.api import sample

    target = Banana(has_energy=options.get("mh", "exact") == "exact" and sampler != "ula")
    result = sample(target, sampler, n=n, seed=seed, progress=False, reverse=None, **options)
    return float(result.diagnostics["levels"].step_size[0])


def banana_moments(kernel: Any, step_size: float, n: int, seed: int, budget: int = BUDGET) -> Moments:
    """Run ``kernel`` from ``n`` exact banana draws until each chain has spent ``budget``
    gradient evaluations; the moments of ``x1`` at the end (standard errors of ``n`` independent
    chains: ``sqrt(2 / n)`` for the variance, the sample standard deviation of ``x1⁴`` over ``sqrt n``)."""
    generator = torch.Generator().manual_seed(seed)
    target = Banana(has_energy=kernel.needs_energy)
    state = kernel.init(Banana.sample(n, generator), target, 0)
    nfe, accept, steps = 0.0, 0.0, 0
    while nfe < budget:
        state, info = kernel.step(state, target, 0, step_size, generator)
        nfe += float(info.nfe.to(torch.float64).mean())
        accept += float(info.accept_prob.mean())
        steps += 1
    x1 = state.x[:, 0]
    fourth = x1**4
    return Moments(
        float(x1.var()), math.sqrt(2 / n), float(fourth.mean()), float(fourth.std() / math.sqrt(n)), nfe, accept / steps
    )


def banana_rows(n: int, seed: int) -> list[dict]:
    """One row per kernel at equal NFE (:data:`BUDGET`): exact MALA, line-integral MALA with 2
    (trapezoid), 3 and 4 Lobatto points, and ULA."""
    from ..samplers.langevin import MALA, ULA
    from ..samplers.line_integral import POINTS

    li = {"mh": "line_integral"}
    runs: list[tuple[str, Any, float]] = [("MALA, exact energies", MALA(), adapted_step_size("mala"))]
    for points in (2, 3, 4):
        kernel = MALA(**li, points=points)
        default = " (default)" if points == POINTS else ""
        runs.append((f"MALA-LI, {points} points{default}", kernel, adapted_step_size("mala", **li, points=points)))
    li_step = runs[1 + [2, 3, 4].index(POINTS)][2]
    runs += [("ULA at MALA-LI's step", ULA(), li_step), ("ULA", ULA(), 0.05), ("ULA", ULA(), 0.02)]
    rows = []
    for label, kernel, step_size in runs:
        start = time.perf_counter()
        m = banana_moments(kernel, step_size, n, seed)
        finite = math.isfinite(m.var) and math.isfinite(m.fourth)
        rows.append({
            "kernel": label,
            "step size": step_size,
            "NFE per chain": m.nfe,
            "acceptance": m.accept,
            "var x1 (truth 1)": f"{m.var:.3f} ± {m.var_se:.3f}" if finite else "diverged",
            "E x1⁴ (truth 3)": f"{m.fourth:.3f} ± {m.fourth_se:.3f}" if finite else "diverged",
            "z (var, E x1⁴)": f"{(m.var - TRUE_VAR) / m.var_se:.1f}, {(m.fourth - TRUE_FOURTH) / m.fourth_se:.1f}" if finite else "—",
            "within 5%": "yes" if finite and m.within(0.05) else "no",
            "seconds": time.perf_counter() - start,
        })
        print(rows[-1], flush=True)
    return rows


def gaussian_mixture() -> Any:
    """``0.5 * (a * b) + 0.5 * c`` of :data:`GAUSSIANS`."""
    from ..lang.ir import gmm

    a, b, c = (gmm(means=[[mean]], std=std) for mean, std in GAUSSIANS.values())
    return 0.5 * (a * b) + 0.5 * c


def product_log_z(t: int) -> float:
    """Closed-form ``log Z_t`` of ``a * b``: ``log N(m_a; m_b, v_a + v_b)`` with the noised means
    and variances at level ``t`` of the default schedule."""
    alpha_bar = float(default().alpha_bar[t])
    (ma, sa), (mb, sb) = GAUSSIANS["a"], GAUSSIANS["b"]
    mean, var = math.sqrt(alpha_bar) * (ma - mb), alpha_bar * (sa**2 + sb**2) + 2 * (1 - alpha_bar)
    return -0.5 * mean**2 / var - 0.5 * math.log(2 * math.pi * var)


def mass(target: Any, t: int) -> float:
    """``∫ p_t`` of a compiled 1-D density on ``[-12, 12]`` (midpoint rule, 100,000 cells)."""
    x = torch.linspace(-12, 12, 100_001, dtype=torch.float64)[:, None]
    return float(torch.exp(target.log_prob(x, t)).sum() * (x[1, 0] - x[0, 0]))


def gaussian_rows() -> list[dict]:
    """The effective weight of ``a * b`` per level: before (closed form) and now (grid)."""
    from ..compiler import compile as compile_expr
    from ..samplers.normalisers import normalise

    target = compile_expr(gaussian_mixture())
    (normaliser,) = normalise(target).values()
    rows = []
    for t in MIXTURE_LEVELS:
        z = math.exp(product_log_z(t))
        rows.append({
            "level": t,
            "weight written": 0.5,
            "old weight (unnormalised)": z / (z + 1),
            "weight now": 1 - 0.5 / mass(target, t),
            "log Z_t estimate - truth": f"{float(normaliser.log_z[t]) - product_log_z(t):+.4f}",
            "reported s.e.": float(normaliser.std_error[t]),
        })
    return rows


def learned_rows(n: int, seeds: list[int]) -> list[dict]:
    """Mass on the ring of ``0.25 * ring_left + 0.75 * box_small``: learned energies with and
    without the normalisers (zero tables reproduce the old weights), exact oracle samples."""
    from .. import truth
    from ..compiler import compile as compile_expr
    from ..compiler.plan import Normaliser
    from ..lang.ir import model, oracle
    from ..samplers.api import sample

    ring, box = compile_expr(oracle("ring_left")), compile_expr(oracle("box_small"))

    def on_ring(x: torch.Tensor) -> float:
        x = x.to(torch.float64)
        return float((ring.log_prob(x, 0) > box.log_prob(x, 0)).double().mean())

    def learned(normalised: bool) -> Any:
        target = compile_expr(0.25 * model("ring_left") + 0.75 * model("box_small"))
        if not normalised:
            zero = torch.zeros(target.num_levels, dtype=torch.float64)
            target.normalise({term: Normaliser(zero, zero, "none") for term in target.unnormalised})
        return target

    exact = [on_ring(truth.exact_samples(0.25 * oracle("ring_left") + 0.75 * oracle("box_small"), n, seed=s)) for s in seeds]
    rows = [{"what": "exact samples of the oracle mixture", "mass on the ring": mean_se(exact, ".3f", ".3f"), "seconds": 0.0}]
    for label, normalised in (("SMC, learned energies, normalised (now)", True), ("SMC, learned energies, unnormalised (before)", False)):
        start = time.perf_counter()
        target = learned(normalised)
        masses = [on_ring(sample(target, "smc", n=n, seed=s, progress=False).x) for s in seeds]
        rows.append({"what": label, "mass on the ring": mean_se(masses, ".3f", ".3f"), "seconds": time.perf_counter() - start})
        if normalised:
            rows[-1]["what"] += "; " + "; ".join(f"{term}: {nz.summary()}" for term, nz in target.normalisers.items())
        print(rows[-1], flush=True)
    return rows




def smc_rows() -> list[dict]:
    """Ẑ/Z of every SMC configuration the API accepts on each target of
    :data:`~rrrdsl.bench.exact_checks.TARGETS`, at N = 8 and 512 (the checks of ``tests/test_exactness.py``)."""
    rows = []
    for name in TARGETS:
        for configuration, options in SMC_CONFIGURATIONS.items():
            for n, runs in RUNS.items():
                ratios = z_ratios(name, n, runs, **options)
                rows.append(_check_row({"target": name, "configuration": configuration, "N": n}, runs, ratios))
                print(rows[-1], flush=True)
    return rows


def bias_rows() -> list[dict]:
    """Ẑ/Z of the adaptive walk at a few particles (:data:`~rrrdsl.bench.exact_checks.BIAS_N`,
    :data:`~rrrdsl.bench.exact_checks.BIAS_RUNS` runs) on the Gaussian product: the schedule
    chosen on the weighted particles, and by a pilot walk of as many particles of its own."""
    rows = []
    for n in BIAS_N:
        for pilot in (0, n):
            ratios = z_ratios("gaussian product", n, BIAS_RUNS, pilot=pilot, **BIAS_WALK)
            schedule = f"pilot walk of {pilot} (pilot={pilot})" if pilot else "on the weighted particles (pilot=0)"
            rows.append(_check_row({"N through the walk": n, "schedule chosen": schedule}, BIAS_RUNS, ratios))
            print(rows[-1], flush=True)
    return rows


def chain_rows() -> list[dict]:
    """``E x²`` of one-chain annealed MALA, HMC and NUTS on ``N(0, 1)`` from exact draws."""
    rows = []
    for kernel, runs in CHAIN_RUNS.items():
        rows.append(_check_row({"kernel": kernel, "steps at level 0": CHAIN_STEPS}, runs, chain_second_moments(kernel, runs)))
        print(rows[-1], flush=True)
    return rows


def _check_row(row: dict, runs: int, values: torch.Tensor) -> dict:
    """``row`` with the runs (seeds ``0..runs-1``), the mean of ``values`` ± its standard error,
    z against 1 and whether it is within three standard errors."""
    mean, se = mean_and_error(values)
    return {
        **row,
        "runs (seeds)": f"{runs} (0-{runs - 1})",
        "mean (truth 1)": f"{mean:.4f} ± {se:.4f}",
        "z": f"{(mean - 1) / se:+.2f}",
        "within 3 s.e.": "yes" if within_three_standard_errors(values, 1.0)[0] else "NO",
    }


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``exactness.md`` under ``args.out``."""
    text = render(
        "exactness",
        provenance=provenance(command),
        n=args.n,
        seed=args.seed,
        budget=BUDGET,
        banana=markdown_table(banana_rows(args.n, args.seed)),
        gaussians=markdown_table(gaussian_rows()),
        mixture_n=args.mixture_n,
        mixture_seeds=str(args.mixture_seeds),
        learned=markdown_table(learned_rows(args.mixture_n, args.mixture_seeds)),
        smc=markdown_table(smc_rows()),
        bias=markdown_table(bias_rows()),
        bias_walk=", ".join(f"{k}={v!r}" for k, v in BIAS_WALK.items()),
        chains=markdown_table(chain_rows()),
    )
    print(text)
    write_report(args.out / "exactness.md", text)
    return 0
