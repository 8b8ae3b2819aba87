"""``rrr bench modes``: how much the mass in each mode scatters from seed to seed under the
default sampler, against independent exact draws of the same size (issue 14, item 6).

For each target (:func:`mode_targets`: the narrow unequal-weight mixture and ``ring * bar`` on exact
oracles) every sampling seed gives a sample of ``N`` particles and its mass in each mode: the
fraction of particles nearest to each mode's centre (:func:`rrrdsl.metrics.mode_weights` with an
infinite radius, so the masses sum to 1). The same statistic of independent exact draws
(``truth.exact_samples``, ``N`` points, seeds ``TRUTH_SEED + s``) gives the reference scatter,
``sqrt(p (1 - p) / N)`` for a mode of mass ``p``. Reported per mode: the mean mass and its standard
deviation over seeds for both, and the ratio of the standard deviations pooled over the modes,
``sqrt(Σ_k var_k(sampler) / Σ_k var_k(exact))``, with a percentile bootstrap interval (seeds
resampled with replacement within each set, :func:`sd_ratio`). A ratio of 1 is a sampler whose
mode masses are as reliable as independent draws; item 6 asks for about 1.2 or less.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from ..lang.ir import Expr
from .common import TRUTH_SEED, markdown_table, provenance, render, ring_centers, write_report

#: independent exact samples per target (cheap: the reference scatter's own error stays small)
EXACT_SEEDS = 200
#: bootstrap resamples of the interval, and its coverage
RESAMPLES, COVERAGE = 2000, 0.95
#: a mode enters the table when its exact mass is at least this (``ring * bar`` uses 2 of the 8 ring modes)
MIN_MASS = 0.01
#: the samplers compared: label -> options of ``rrrdsl.sample`` beside ``n`` and ``seed``
SAMPLERS: dict[str, dict[str, Any]] = {
    "SMC, adaptive levels (default)": {},
    "SMC, resampling='systematic' (the previous default)": {"resampling": "systematic"},  # in storage order
}
#: item 6's bound on the ratio of standard deviations
SD_BOUND = 1.2


def mode_targets() -> dict[str, tuple[Expr, torch.Tensor]]:
    """Name -> (exact expression, mode centres ``[K, 2]``)."""
    from .smc_levels import narrow_mixture
    from .table import COMPOSITIONS, model_expr

    product = next(c for c in COMPOSITIONS if c.name == "product")
    narrow = torch.tensor([[0.6, 0.6], [-0.4, 0.1], [0.2, -0.5]], dtype=torch.float64)
    return {"narrow mixture (0.2 / 0.8)": (narrow_mixture(), narrow), "product (ring * bar)": (model_expr(product, "exact"), ring_centers())}


def masses(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The fraction of the rows of ``x`` nearest to each centre, ``[K]`` (summing to 1)."""
    from ..metrics import mode_weights

    return mode_weights(x, centres, math.inf)


def sd_ratio(sampled: torch.Tensor, exact: torch.Tensor, seed: int = 0) -> tuple[float, float, float]:
    """``sqrt(Σ_k var_k(sampled) / Σ_k var_k(exact))`` of per-seed masses ``[S, K]`` and ``[E, K]``,
    and its percentile bootstrap interval (:data:`RESAMPLES`, :data:`COVERAGE`): the rows of each
    set resampled with replacement, independently (Efron & Tibshirani, 1993, ch. 13)."""

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # a, b: [..., rows, K]
        return (a.var(-2).sum(-1) / b.var(-2).sum(-1)).sqrt()

    generator = torch.Generator().manual_seed(seed)
    rows_s = torch.randint(0, sampled.shape[0], (RESAMPLES, sampled.shape[0]), generator=generator)
    rows_e = torch.randint(0, exact.shape[0], (RESAMPLES, exact.shape[0]), generator=generator)
    boot = ratio(sampled[rows_s], exact[rows_e])
    tail = (1 - COVERAGE) / 2
    low, high = torch.quantile(boot, torch.tensor([tail, 1 - tail], dtype=boot.dtype)).tolist()
    return float(ratio(sampled, exact)), low, high


def _cells(values: torch.Tensor) -> str:
    return " / ".join(f"{v:.4f}" for v in values.tolist())


def run(n: int, seeds: list[int], exact_seeds: int = EXACT_SEEDS) -> list[dict]:
    """One row per (target, sampler): mode masses of every seed against ``exact_seeds`` exact samples."""
    from .. import truth
    from ..compiler import compile as compile_expr
    from ..samplers.api import sample

    rows = []
    for name, (expr, centres) in mode_targets().items():
        grid = truth.grid(expr)  # what ``truth.exact_samples`` draws from, computed once
        exact = torch.stack([masses(truth.sample_grid(grid, n, TRUTH_SEED + s), centres) for s in range(exact_seeds)])
        kept = exact.mean(0) >= MIN_MASS
        exact = exact[:, kept]
        target = compile_expr(expr)
        for label, options in SAMPLERS.items():
            sampled = torch.stack([masses(sample(target, n=n, seed=s, progress=False, **options).x, centres) for s in seeds])[:, kept]
            ratio, low, high = sd_ratio(sampled, exact)
            rows.append({
                "target": name,
                "sampler": label,
                "mean mass (sampler)": _cells(sampled.mean(0)),
                "mean mass (exact)": _cells(exact.mean(0)),
                "sd over seeds (sampler)": _cells(sampled.std(0)),
                "sd over seeds (exact)": _cells(exact.std(0)),
                "sd ratio [95% CI]": f"{ratio:.2f} [{low:.2f}, {high:.2f}]",
                f"within {SD_BOUND}x": "yes" if ratio <= SD_BOUND else "no",
            })
    return rows


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``modes.md``; 0."""
    seeds = f"{len(args.seeds)} ({' '.join(map(str, args.seeds))})"
    table = markdown_table(run(args.n, args.seeds))
    text = render("modes", provenance=provenance(command), n=args.n, seeds=seeds, exact_seeds=EXACT_SEEDS, rows=table)
    print(f"wrote {write_report(args.out / 'modes.md', text)}")
    return 0
