"""``rrr bench samplers [--n N] [--seed S] [--sweep]``: every sampler on
``oracle("ring") * oracle("bar")`` against exact samples, at equal NFE.

For each sampler (its defaults, at most 1000 gradient evaluations per particle) the benchmark
reports the RBF MMD (bandwidth 0.05, biased estimate; Gretton et al., 2012) to exact samples
from :func:`rrrdsl.truth.exact_samples`, divided by the exact-vs-exact MMD floor, the mass near
the true modes, the mode-weight error, the sliced Wasserstein distance (Bonneel et al., 2015)
and the NFE per particle, and writes ``samplers.md`` (prose in ``templates/samplers.md``).

Targets: annealed MALA/HMC at least 5x lower MMD than reverse diffusion; SMC within 1.5x of
the floor; reverse diffusion is the failing baseline. ``--sweep`` also measures the step-size
defaults ``c * beta_t ** b`` per kernel (without adaptation, MMD / floor).
"""

from __future__ import annotations

import argparse
import time

import torch

from ..lang.ir import Expr, oracle
from .common import (
    BANDWIDTH,
    FLOOR_SEEDS,
    RADIUS,
    TRUTH_SEED,
    format_row,
    markdown_table,
    provenance,
    render,
    ring_centers,
    sampler_defaults,
    write_report,
)

MAX_NFE = 1000


def ring_bar() -> Expr:
    return oracle("ring") * oracle("bar")


def evaluate(x: torch.Tensor, exact: torch.Tensor, floor: float, true_modes: torch.Tensor) -> dict:
    """The metric columns of samples ``x`` against ``exact`` (with its MMD ``floor``)."""
    from ..metrics import mmd, mode_weight_error, mode_weights, sliced_wasserstein

    return {
        "mmd": mmd(x, exact, BANDWIDTH),
        "mmd/floor": mmd(x, exact, BANDWIDTH) / floor,
        "mass near true modes": float(mode_weights(x, true_modes, RADIUS).sum()),
        "mode-weight error": mode_weight_error(x, exact, ring_centers(), RADIUS),
        "sliced W2": sliced_wasserstein(x, exact, 256, seed=0),
    }


def run(n: int, seed: int) -> tuple[list[dict], float, torch.Tensor, float]:
    """One row per sampler, the MMD floor, the exact samples and their mass near the true modes."""
    from .. import truth
    from ..compiler import compile as compile_expr
    from ..metrics import mmd_floor, mode_weights
    from ..samplers.api import SAMPLERS, sample

    expr = ring_bar()
    target = compile_expr(expr)
    exact = truth.exact_samples(expr, n, seed=TRUTH_SEED + seed)
    floor = mmd_floor(expr, n, BANDWIDTH, seeds=FLOOR_SEEDS)
    true_modes = ring_centers()[[2, 6]]  # (0, ±0.5): the ring modes inside the bar
    rows = []
    for sampler in SAMPLERS:
        start = time.perf_counter()
        result = sample(target, sampler, n=n, seed=seed, progress=False)
        row = {"sampler": sampler, "nfe": result.diagnostics["nfe"], "seconds": time.perf_counter() - start}
        row.update(evaluate(result.x, exact, floor, true_modes))
        row["log Z"] = result.diagnostics["log_z"]
        rows.append(row)
        print(format_row(row), flush=True)
    return rows, floor, exact, float(mode_weights(exact, true_modes, RADIUS).sum())


def sweep(n: int, seed: int, floor: float, exact: torch.Tensor) -> list[dict]:
    """MMD / floor of each kernel without adaptation for a grid of (c, b)."""
    from ..compiler import compile as compile_expr
    from ..metrics import mmd
    from ..samplers.api import sample

    target = compile_expr(ring_bar())
    rows = []
    for sampler in ("ula", "mala", "hmc", "uha"):
        for b in (0.5, 1.0):
            for c in (0.1, 0.3, 1.0, 3.0):
                result = sample(target, sampler, n=n, seed=seed, step_scale=c, step_exponent=b, adapt=False, progress=False)
                levels = result.diagnostics["levels"]
                rows.append({"sampler": sampler, "c": c, "b": b, "mmd/floor": mmd(result.x, exact, BANDWIDTH) / floor,
                             "mean acceptance": float(levels.accept_mean.nanmean())})
                print(format_row(rows[-1]), flush=True)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """The targets, each met or not."""
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


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``samplers.md`` under ``args.out`` (with the step-size sweep under ``--sweep``)."""
    rows, floor, exact, exact_mass = run(args.n, args.seed)
    text = render(
        "samplers",
        provenance=provenance(command),
        n=args.n,
        seed=args.seed,
        bandwidth=BANDWIDTH,
        floor=f"{floor:.4g}",
        floor_pairs=len(FLOOR_SEEDS),
        radius=RADIUS,
        exact_mass=f"{exact_mass:.4f}",
        defaults="; ".join(f"{k}: {v}" for k, v in sampler_defaults().items()),
        rows=markdown_table(rows),
        targets=verdicts(rows),
    )
    if args.sweep:
        text += render("samplers-sweep", rows=markdown_table(sweep(args.n, args.seed, floor, exact)))
    path = write_report(args.out / "samplers.md", text)
    print("\n".join(verdicts(rows)))
    print(f"wrote {path}")
    return 0
