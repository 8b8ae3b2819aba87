"""Metropolis through the line-integral energy estimate against ULA at equal NFE (issue 5).

On ``model("ring", param="score") * model("bar", param="score")`` (learned score models) and on
``oracle("ring") * oracle("bar")`` presented as score-only (the exact score, no energies, so the
sampler error is told apart from the model error), each sampler runs with its defaults of
:func:`rrrdsl.sample` (1000 gradient evaluations per particle, MCMC at the last ten levels):

* ``ula``: unadjusted Langevin;
* ``mala`` / ``hmc`` with ``mh="line_integral"``: the Metropolis test on the trapezoid estimate of
  the energy difference (:mod:`rrrdsl.samplers.line_integral`), step sizes adapted toward
  :data:`rrrdsl.samplers.line_integral.TARGET_ACCEPT`;
* ``mala`` with ``mh="line_integral"`` at ULA's step sizes (no adaptation): the correction alone;
* as a reference, ``hmc`` with exact energies on the oracles (``mh="exact"``).

Reported: the RBF MMD (bandwidth 0.05, N samples) to ``rrrdsl.truth.exact_samples`` of the
oracle product, per seed and as mean ± standard deviation over seeds, against the exact-vs-exact
floor. Writes ``benchmarks/results/line_integral.md``.

    .venv/bin/python benchmarks/bench_line_integral.py [--n 2000] [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import rrrdsl
from rrrdsl.bench import BANDWIDTH, FLOOR_SEEDS, markdown_table, provenance
from rrrdsl.metrics import mmd, mmd_floor
from rrrdsl.samplers.adapt import DEFAULT_STEP_SCHEDULE
from rrrdsl.samplers.line_integral import TARGET_ACCEPT

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "line_integral.md")
#: seed of the exact reference sample (as in issue 5's measurement)
TRUTH_SEED = 123
LI = {"mh": "line_integral"}
#: label -> (sampler, options); every row spends 1000 gradient evaluations per particle
RUNS = {
    "ULA": ("ula", {}),
    "MALA-LI": ("mala", LI),
    "HMC-LI": ("hmc", LI),
    "MALA-LI at ULA's step": ("mala", dict(LI, adapt=False, step_scale=DEFAULT_STEP_SCHEDULE["ula"][0])),
}


class ScoreOnly:
    """A compiled target presented without energies (only its score), like a score model."""

    has_energy = False

    def __init__(self, target) -> None:
        self.target = target
        self.dim, self.num_levels, self.schedule = target.dim, target.num_levels, target.schedule

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.target.score(x, t)

    def log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        raise TypeError("a score-only target has no log density")

    log_prob_and_grad = log_prob


def targets() -> dict:
    """Label -> (target, runs): the learned score product, and the oracle product without energies."""
    oracles = rrrdsl.compile(rrrdsl.oracle("ring") * rrrdsl.oracle("bar"))
    learned = rrrdsl.compile(rrrdsl.model("ring", param="score") * rrrdsl.model("bar", param="score"))
    with_energy = {"HMC (exact energies)": ("hmc", {"mh": "exact"})}
    return {
        "learned score models": (learned, RUNS),
        "exact oracles, score-only": (ScoreOnly(oracles), RUNS),
        "exact oracles, with energies": (oracles, with_energy),
    }


def run(n: int, seeds: list[int]) -> tuple[list[dict], dict, float]:
    """One row per (target, sampler), the per-seed MMDs by ``(target, sampler)``, and the floor."""
    expr = rrrdsl.oracle("ring") * rrrdsl.oracle("bar")
    exact = rrrdsl.truth.exact_samples(expr, n, seed=TRUTH_SEED)
    floor = mmd_floor(expr, n, BANDWIDTH, seeds=FLOOR_SEEDS)
    rows, per_seed = [], {}
    for label, (target, runs) in targets().items():
        for name, (sampler, options) in runs.items():
            values, nfe, accept, start = [], 0.0, [], time.perf_counter()
            for seed in seeds:
                result = rrrdsl.sample(target, sampler, n=n, seed=seed, progress=False, **options)
                values.append(mmd(result.x, exact, BANDWIDTH))
                nfe = result.diagnostics["nfe"]
                accept.append(float(result.diagnostics["levels"].accept_mean.nanmean()))
            row = {
                "target": label,
                "sampler": name,
                "NFE": nfe,
                "mean acceptance": statistics.mean(accept),
                "MMD mean": statistics.mean(values),
                "MMD std": statistics.stdev(values) if len(values) > 1 else float("nan"),
                "MMD/floor": statistics.mean(values) / floor,
                "MMD per seed": ", ".join(f"{v:.4f}" for v in values),
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            per_seed[label, name] = values
            print(row, flush=True)
    return rows, per_seed, floor


def verdict(rows: list[dict], per_seed: dict) -> list[str]:
    """Issue 5: line-integral MH on the learned score product improves on ULA at equal NFE
    (mean MMD over seeds; the seeds where it is lower than ULA's with the same seed are counted)."""
    learned = {r["sampler"]: r for r in rows if r["target"] == "learned score models"}
    ula = learned["ULA"]
    lines = []
    for name in ("MALA-LI", "HMC-LI"):
        row = learned[name]
        better = row["MMD mean"] < ula["MMD mean"] and row["NFE"] <= ula["NFE"]
        pairs = list(zip(per_seed["learned score models", name], per_seed["learned score models", "ULA"]))
        wins = sum(mine < theirs for mine, theirs in pairs)
        lines.append(
            f"- {name} on the learned score product: MMD {row['MMD mean']:.4f} ± {row['MMD std']:.4f} vs ULA "
            f"{ula['MMD mean']:.4f} ± {ula['MMD std']:.4f} at NFE {row['NFE']:.0f} vs {ula['NFE']:.0f} "
            f"(lower on {wins} of {len(pairs)} seeds): "
            + ("improves on ULA (met)" if better else "does NOT improve on ULA")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, per_seed, floor = run(args.n, args.seeds)
    lines = [
        "# Line-integral Metropolis vs ULA at equal NFE (`ring * bar`)",
        "",
        *provenance(" ".join([os.path.relpath(sys.executable), *sys.argv])),
        f"- N = {args.n} particles, sampler seeds {args.seeds}; truth: "
        f"`rrrdsl.truth.exact_samples(oracle(\"ring\") * oracle(\"bar\"), {args.n}, seed={TRUTH_SEED})`",
        f"- MMD: RBF, bandwidth {BANDWIDTH}, biased estimate; exact-vs-exact floor = {floor:.4g} (mean of 5 pairs)",
        "- defaults of `rrrdsl.sample`: 90 kernel steps at each of the last ten levels (1000 NFE per particle);"
        f" `mh=\"line_integral\"` adapts toward acceptance {TARGET_ACCEPT}",
        "",
        *markdown_table(rows),
        "",
        "## Issue 5 criterion",
        "",
        *verdict(rows, per_seed),
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
