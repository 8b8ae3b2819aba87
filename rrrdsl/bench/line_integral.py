"""``rrr bench line_integral [--n N] [--seeds S ...]``: Metropolis through the line-integral
energy estimate against ULA at equal NFE.

On ``model("ring", param="score") * model("bar", param="score")`` (learned score models) and on
``oracle("ring") * oracle("bar")`` presented as score-only (the exact score, no energies, so the
sampler error is told apart from the model error), each sampler runs with the defaults of
:func:`rrrdsl.sample` (1000 gradient evaluations per particle, MCMC at the last ten levels):

* ``ula``: unadjusted Langevin;
* ``mala`` / ``hmc`` with ``mh="line_integral"``: the Metropolis test on the quadrature estimate
  of the energy difference (:mod:`rrrdsl.samplers.line_integral`, default points, default steps
  divided by ``points - 1``), step sizes adapted toward the kernel's target acceptance;
* ``mala`` with ``mh="line_integral"`` at ULA's step sizes (no adaptation): the correction alone;
* as a reference, ``hmc`` with exact energies on the oracles (``mh="exact"``).

Reported: the RBF MMD (bandwidth 0.05, N samples) to ``rrrdsl.truth.exact_samples`` of the
oracle product, per seed and as mean ± standard deviation over seeds, against the exact-vs-exact
floor. Writes ``line_integral.md`` (prose in ``templates/line_integral.md``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from ..lang.ir import model, oracle
from .common import (
    BANDWIDTH,
    FLOOR_SEEDS,
    format_row,
    line_integral_target_accept,
    markdown_table,
    provenance,
    render,
    ula_step_scale,
    write_report,
)

#: seed of the exact reference sample
TRUTH_SEED = 123
LI = {"mh": "line_integral"}
LEARNED = "learned score models"


def runs() -> dict[str, tuple[str, dict]]:
    """Label -> (sampler, options); every row spends 1000 gradient evaluations per particle."""
    return {
        "ULA": ("ula", {}),
        "MALA-LI": ("mala", LI),
        "HMC-LI": ("hmc", LI),
        "MALA-LI at ULA's step": ("mala", dict(LI, adapt=False, step_scale=ula_step_scale())),
    }


class ScoreOnly:
    """A compiled target presented without energies (only its score), like a score model."""

    has_energy = False

    def __init__(self, target: Any) -> None:
        self.target = target
        self.dim, self.num_levels, self.schedule = target.dim, target.num_levels, target.schedule

    def score(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self.target.score(x, t)

    def log_prob(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        raise TypeError("a score-only target has no log density")

    log_prob_and_grad = log_prob


def targets() -> dict:
    """Label -> (target, runs): the learned score product, and the oracle product without energies."""
    from ..compiler import compile as compile_expr

    oracles = compile_expr(oracle("ring") * oracle("bar"))
    learned = compile_expr(model("ring", param="score") * model("bar", param="score"))
    return {
        LEARNED: (learned, runs()),
        "exact oracles, score-only": (ScoreOnly(oracles), runs()),
        "exact oracles, with energies": (oracles, {"HMC (exact energies)": ("hmc", {"mh": "exact"})}),
    }


def measure(n: int, seeds: list[int]) -> tuple[list[dict], dict, float]:
    """One row per (target, sampler), the per-seed MMDs by ``(target, sampler)``, and the floor."""
    from .. import truth
    from ..metrics import mmd, mmd_floor
    from ..samplers.api import sample

    expr = oracle("ring") * oracle("bar")
    exact = truth.exact_samples(expr, n, seed=TRUTH_SEED)
    floor = mmd_floor(expr, n, BANDWIDTH, seeds=FLOOR_SEEDS)
    rows, per_seed = [], {}
    for label, (target, cells) in targets().items():
        for name, (sampler, options) in cells.items():
            values, nfe, accept, start = [], 0.0, [], time.perf_counter()
            for seed in seeds:
                result = sample(target, sampler, n=n, seed=seed, progress=False, **options)
                values.append(mmd(result.x, exact, BANDWIDTH))
                nfe = result.diagnostics["nfe"]
                accept.append(float(result.diagnostics["levels"].accept_mean.nanmean()))
            rows.append({
                "target": label,
                "sampler": name,
                "NFE": nfe,
                "mean acceptance": statistics.mean(accept),
                "MMD mean": statistics.mean(values),
                "MMD std": statistics.stdev(values) if len(values) > 1 else float("nan"),
                "MMD/floor": statistics.mean(values) / floor,
                "MMD per seed": ", ".join(f"{v:.4f}" for v in values),
                "seconds": time.perf_counter() - start,
            })
            per_seed[label, name] = values
            print(format_row(rows[-1]), flush=True)
    return rows, per_seed, floor


def verdict(rows: list[dict], per_seed: dict) -> list[str]:
    """Line-integral MH on the learned score product improves on ULA at equal NFE (mean MMD over
    seeds; the seeds where it is lower than ULA's with the same seed are counted)."""
    learned = {r["sampler"]: r for r in rows if r["target"] == LEARNED}
    ula = learned["ULA"]
    lines = []
    for name in ("MALA-LI", "HMC-LI"):
        row = learned[name]
        better = row["MMD mean"] < ula["MMD mean"] and row["NFE"] <= ula["NFE"]
        pairs = list(zip(per_seed[LEARNED, name], per_seed[LEARNED, "ULA"]))
        wins = sum(mine < theirs for mine, theirs in pairs)
        lines.append(
            f"- {name} on the learned score product: MMD {row['MMD mean']:.4f} ± {row['MMD std']:.4f} vs ULA "
            f"{ula['MMD mean']:.4f} ± {ula['MMD std']:.4f} at NFE {row['NFE']:.0f} vs {ula['NFE']:.0f} "
            f"(lower on {wins} of {len(pairs)} seeds): "
            + ("improves on ULA (met)" if better else "does NOT improve on ULA")
        )
    return lines


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``line_integral.md`` under ``args.out``."""
    rows, per_seed, floor = measure(args.n, args.seeds)
    text = render(
        "line_integral",
        provenance=provenance(command),
        n=args.n,
        seeds=str(args.seeds),
        truth_seed=TRUTH_SEED,
        bandwidth=BANDWIDTH,
        floor=f"{floor:.4g}",
        floor_pairs=len(FLOOR_SEEDS),
        target_accept=line_integral_target_accept(),
        rows=markdown_table(rows),
        verdict=verdict(rows, per_seed),
    )
    print(text)
    write_report(args.out / "line_integral.md", text)
    return 0
