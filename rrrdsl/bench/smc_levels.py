"""``rrr bench smc [--n N] [--seeds S ...]``: the default sampler (SMC) on every composition of
the 2D table and on an unequal-weight mixture of narrow Gaussians, against exact samples.

Issue 14's criterion: on exact oracles, the default sampler within 1.2x of the exact-vs-exact
MMD floor (mean over seeds) at <= 600 gradient evaluations per particle. Each composition of
:data:`rrrdsl.bench.table.COMPOSITIONS` (exact oracles) and :func:`narrow_mixture` runs with
``rrrdsl.sample(target, n=N, seed=s)`` (every default: adaptive levels, ``oversample=3, steps=8``),
and for comparison with ``oversample=1, steps=16`` (the previous default: N particles on the
whole budget) and with ``levels="schedule"`` (the fixed walk over all 100 levels with reverse
moves, the default before that). Each seed is scored against its own exact sample
(``truth.exact_samples(expr, N, seed=TRUTH_SEED + s)``, as ``rrr bench samplers --seed S``);
reported: MMD / floor per seed and mean ± standard error, the NFE per particle, the levels the
walk visited and the mass of the smallest mode (narrow mixture). Writes ``smc.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ..lang.ir import Expr, gmm
from .common import BANDWIDTH, FLOOR_SEEDS, TRUTH_SEED, format_row, markdown_table, provenance, render, write_report

#: the walks compared: label -> options of ``rrrdsl.sample`` beside the defaults
WALKS = {
    "adaptive levels (default)": {},
    "adaptive, oversample=1, steps=16 (the previous default)": {"oversample": 1, "steps": 16},
    "every level (the default before)": {"levels": "schedule", "steps": 8},
}
#: issue 14's bounds on the default sampler
RATIO_BOUND, NFE_BOUND = 1.2, 600


def narrow_mixture() -> Expr:
    """Issue 14 item 6's example: an unequal-weight mixture of narrow Gaussians (weights 0.2 / 0.8)."""
    return 0.2 * gmm(means=[[0.6, 0.6]], std=0.05) + 0.8 * gmm(means=[[-0.4, 0.1], [0.2, -0.5]], std=0.08)


def targets() -> dict[str, Expr]:
    """Name -> exact expression: the table's compositions and the narrow mixture."""
    from .table import COMPOSITIONS, model_expr

    named = {c.name: model_expr(c, "exact") for c in COMPOSITIONS}
    named["narrow mixture (0.2 / 0.8)"] = narrow_mixture()
    return named


def run(n: int, seeds: list[int]) -> list[dict]:
    """One row per (target, walk): MMD / floor per seed and its mean ± standard error."""
    from .. import truth
    from ..compiler import compile as compile_expr
    from ..metrics import mmd, mmd_floor
    from ..samplers.api import sample

    rows = []
    for name, expr in targets().items():
        target = compile_expr(expr)
        floor = mmd_floor(expr, n, BANDWIDTH, seeds=FLOOR_SEEDS)
        exact = {s: truth.exact_samples(expr, n, seed=TRUTH_SEED + s) for s in seeds}
        for walk, options in WALKS.items():
            ratios, nfe, visited, seconds = [], [], [], []
            for seed in seeds:
                start = time.perf_counter()
                result = sample(target, n=n, seed=seed, progress=False, **options)
                seconds.append(time.perf_counter() - start)
                ratios.append(mmd(result.x, exact[seed], BANDWIDTH) / floor)
                nfe.append(result.diagnostics["nfe"])
                visited.append(int((result.diagnostics["levels"].nfe > 0).sum()))
            se = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
            rows.append({
                "target": name,
                "walk": walk,
                "MMD/floor": f"{statistics.mean(ratios):.3g} ± {se:.2g}",
                "per seed": " ".join(f"{r:.3g}" for r in ratios),
                "NFE / particle": max(nfe),
                "levels visited": f"{min(visited)}-{max(visited)}",
                "wall s": statistics.mean(seconds),
            })
            print(format_row(rows[-1]), flush=True)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """Issue 14's criterion for the default walk, per target."""
    lines = []
    for row in rows:
        if row["walk"] != next(iter(WALKS)):
            continue
        mean = float(row["MMD/floor"].split(" ")[0])
        met = mean <= RATIO_BOUND and row["NFE / particle"] <= NFE_BOUND
        lines.append(f"- {row['target']}: {mean:.3g}x at {row['NFE / particle']:.0f} NFE: " + ("met" if met else "NOT met"))
    return lines


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``smc.md``; 0."""
    rows = run(args.n, args.seeds)
    text = render(
        "smc",
        provenance=provenance(command),
        n=args.n,
        seeds=" ".join(map(str, args.seeds)),
        bandwidth=BANDWIDTH,
        rows=markdown_table(rows),
        verdicts=verdicts(rows),
        ratio_bound=RATIO_BOUND,
        nfe_bound=NFE_BOUND,
    )
    path = write_report(args.out / "smc.md", text)
    print(f"wrote {path}")
    return 0
