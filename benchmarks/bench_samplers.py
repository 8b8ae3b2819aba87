"""Every sampler on ``oracle("ring") * oracle("bar")`` against exact samples, at equal NFE.

For each sampler (defaults of :data:`rrrdsl.samplers.api.DEFAULTS`, at most 1000 gradient
evaluations per particle) the benchmark reports the RBF MMD (bandwidth 0.05, biased estimate)
to exact samples from :func:`rrrdsl.truth.exact_samples`, divided by the exact-vs-exact MMD
floor, the mass near the true modes, the mode-weight error, the sliced Wasserstein distance and
the NFE per particle, and writes ``benchmarks/results/samplers.md``.

Targets (issue 4): annealed MALA/HMC at least 5x lower MMD than reverse diffusion; SMC within
1.5x of the floor; reverse diffusion is the failing baseline.

    .venv/bin/python benchmarks/bench_samplers.py [--n 2000] [--seed 0] [--sweep]

``--sweep`` also measures the step-size defaults ``c * beta_t ** b`` per kernel (without
adaptation, MMD / floor) and appends the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import rrrdsl
from rrrdsl.bench import BANDWIDTH, FLOOR_SEEDS, RADIUS, TRUTH_SEED, format_row, markdown_table, provenance, ring_centers
from rrrdsl.metrics import mmd, mmd_floor, mode_weight_error, mode_weights, sliced_wasserstein
from rrrdsl.samplers.api import DEFAULTS, SAMPLERS

MAX_NFE = 1000
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "samplers.md")


def ring_bar():
    return rrrdsl.oracle("ring") * rrrdsl.oracle("bar")


def evaluate(x: torch.Tensor, exact: torch.Tensor, floor: float, true_modes: torch.Tensor) -> dict:
    centers = ring_centers()
    return {
        "mmd": mmd(x, exact, BANDWIDTH),
        "mmd/floor": mmd(x, exact, BANDWIDTH) / floor,
        "mass near true modes": float(mode_weights(x, true_modes, RADIUS).sum()),
        "mode-weight error": mode_weight_error(x, exact, centers, RADIUS),
        "sliced W2": sliced_wasserstein(x, exact, 256, seed=0),
    }


def run(n: int, seed: int) -> tuple[list[dict], float, dict]:
    expr = ring_bar()
    target = rrrdsl.compile(expr)
    exact = rrrdsl.truth.exact_samples(expr, n, seed=TRUTH_SEED + seed)
    floor = mmd_floor(expr, n, BANDWIDTH, seeds=FLOOR_SEEDS)
    true_modes = ring_centers()[[2, 6]]  # (0, ±0.5): the ring modes inside the bar
    rows = []
    for sampler in SAMPLERS:
        start = time.perf_counter()
        result = rrrdsl.sample(target, sampler, n=n, seed=seed, progress=False)
        row = {"sampler": sampler, "nfe": result.diagnostics["nfe"], "seconds": time.perf_counter() - start}
        row.update(evaluate(result.x, exact, floor, true_modes))
        row["log Z"] = result.diagnostics["log_z"]
        rows.append(row)
        print(format_row(row), flush=True)
    reference = {"exact mass near true modes": float(mode_weights(exact, true_modes, RADIUS).sum())}
    return rows, floor, reference


def sweep(n: int, seed: int, floor: float, exact: torch.Tensor) -> list[dict]:
    """MMD / floor of each kernel without adaptation for a grid of (c, b)."""
    target = rrrdsl.compile(ring_bar())
    rows = []
    for sampler in ("ula", "mala", "hmc", "uha"):
        for b in (0.5, 1.0):
            for c in (0.1, 0.3, 1.0, 3.0):
                result = rrrdsl.sample(
                    target, sampler, n=n, seed=seed, step_scale=c, step_exponent=b, adapt=False, progress=False
                )
                levels = result.diagnostics["levels"]
                rows.append(
                    {
                        "sampler": sampler,
                        "c": c,
                        "b": b,
                        "mmd/floor": mmd(result.x, exact, BANDWIDTH) / floor,
                        "mean acceptance": float(levels.accept_mean.nanmean()),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def verdicts(rows: list[dict], floor: float) -> list[str]:
    by_name = {r["sampler"]: r for r in rows}
    reverse = by_name["reverse"]["mmd"]
    lines = []
    for name in ("mala", "hmc"):
        ratio = reverse / by_name[name]["mmd"]
        lines.append(f"- annealed {name}: MMD {ratio:.2f}x lower than reverse diffusion (target >= 5x): "
                     + ("met" if ratio >= 5 else "NOT met"))
    smc_ratio = by_name["smc"]["mmd/floor"]
    lines.append(f"- smc: MMD {smc_ratio:.2f}x the floor (target <= 1.5x): " + ("met" if smc_ratio <= 1.5 else "NOT met"))
    over = [r["sampler"] for r in rows if r["nfe"] > MAX_NFE]
    lines.append(f"- NFE per particle <= {MAX_NFE}: " + ("met" if not over else "NOT met by " + ", ".join(over)))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also sweep the step-size defaults (c, b)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, floor, reference = run(args.n, args.seed)
    lines = [
        "# Samplers on `oracle(\"ring\") * oracle(\"bar\")`",
        "",
        *provenance(" ".join([os.path.relpath(sys.executable), *sys.argv])),
        f"- N = {args.n} particles, seed {args.seed}; truth: `rrrdsl.truth.exact_samples` (N draws)",
        f"- MMD: RBF, bandwidth {BANDWIDTH}, biased estimate; exact-vs-exact floor = {floor:.4g} (mean of 5 pairs)",
        f"- mass near true modes: within {RADIUS} of (0, ±0.5) at level 0; exact: "
        f"{reference['exact mass near true modes']:.4f}",
        "- mode-weight error: total variation between the 8 ring-mode weights (+ the rest) of the sampler and exact",
        "- every sampler with its defaults (`rrrdsl.samplers.api.DEFAULTS`): "
        + "; ".join(f"{k}: {v}" for k, v in DEFAULTS.items()),
        "",
        *markdown_table(rows),
        "",
        "## Targets",
        "",
        *verdicts(rows, floor),
    ]
    if args.sweep:
        exact = rrrdsl.truth.exact_samples(ring_bar(), args.n, seed=TRUTH_SEED + args.seed)
        lines += [
            "",
            "## Step-size sweep (no adaptation): `c * beta_t ** b`",
            "",
            "Each kernel with its default steps and levels but a fixed `c * beta_t ** b`. For ULA/UHA",
            "'mean acceptance' is the fraction of moves taken (only non-finite moves are refused);",
            "`nan`: the unadjusted chains blew up to huge (finite) values for that step size.",
            "",
            *markdown_table(sweep(args.n, args.seed, floor, exact)),
        ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(verdicts(rows, floor)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
