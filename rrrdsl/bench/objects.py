"""``rrr bench objects [--quick] [--n N]``: the CLEVR object-position experiment of Du et al.
(2023) on 16×16 synthetic images — compose ``k`` object positions, judge every sample with a
deterministic detector.

For ``k = 1..5`` and fixed random sets of ``k`` distinct cells of the 4×4 grid (seeded), the
composition

    ``model("objects", cell=c1) * ... * model("objects", cell=ck) / model("objects") ** (k-1)``

(``log p(x | c1..ck) = log p(x) + Σ_i (log p(x | c_i) − log p(x))``, built from its ``.rrr``
text by the language's parser) is sampled at equal gradient evaluations (NFE) per sample,
counted as the samplers count them (``diagnostics["nfe"]``):

* reverse diffusion (DDPM ancestral steps with the summed score: Composable Diffusion, Liu et
  al., 2022) on a finer sub-schedule of the model's ``ᾱ`` with as many levels as the budget buys,
  on the energy model and on the score twin (the baseline of the line-integral samplers, which
  separates the sampler's effect from the model's);
* annealed ULA, MALA, HMC (one leapfrog step, partial momentum refresh) and SMC (MALA moves,
  every level, exact weights) on the energy-parameterised model, ``steps`` kernel steps at every
  level of a sub-schedule of the model's ``ᾱ`` (``Plan.levels`` levels; the model was trained
  on 1000 timesteps);
* MALA and HMC with the line-integral Metropolis test (:mod:`rrrdsl.samplers.line_integral`) on
  the score twin ``model("objects_score", ...)``, with ``steps`` divided by the quadrature's cost.

Accuracy is the fraction of samples in which every requested cell holds an object
(:func:`rrrdsl.zoo.objects.judge.all_present`, the family's detector), averaged over runs
(cell sets × seeds) with the standard error over runs; each Metropolis-corrected sampler is
compared with reverse diffusion on its own model by the mean paired difference over the same
runs. A second
table sweeps the MCMC steps per level (MALA, ULA) at ``k = 3`` and ``5``. Writes
``objects.md`` (prose in ``templates/objects.md``) and ``objects-k*.png`` (sample grids with
the requested cells outlined).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from ..compiler import compile as compile_expr
from ..errors import InvalidValueError
from ..lang.ir import Expr, model
from ..lang.parse import parse_expr
from ..models.registry import resolve
from ..samplers.api import sample
from ..samplers.line_integral import quadrature_cost
from ..zoo.diffusers.schedule import native_schedule
from ..zoo.objects.data import CELLS, GRID, SIZE
from ..zoo.objects.judge import all_present
from .common import markdown_table, provenance, render, write_report

#: the energy-parameterised model and its score twin
ENERGY, SCORE = "objects", "objects_score"


class Spec(NamedTuple):
    """One sampler of the table: its label, the model it samples, the sampler and its options."""

    label: str
    model: str
    sampler: str
    options: dict
    levels: int  # the levels of the walk (a sub-schedule of the model's ᾱ)


class Plan(NamedTuple):
    """What one benchmark run measures."""

    n: int  # samples per run (one cell set, one seed)
    seeds: tuple[int, ...]
    sets: int  # cell sets per k
    ks: tuple[int, ...]
    levels: int  # levels of the annealed samplers (evenly spaced in the model's timesteps)
    steps: int  # MCMC steps per level of the equal-NFE table
    sweep: tuple[int, ...]  # MCMC steps per level of the second table
    sweep_ks: tuple[int, ...]


#: the full run: 96 samples per entry (6 cell sets x 2 seeds x 8), the sweep to 8 steps per level
FULL = Plan(n=8, seeds=(0, 1), sets=6, ks=(1, 2, 3, 4, 5), levels=10, steps=2, sweep=(0, 1, 2, 4, 8), sweep_ks=(3, 5))
#: ``--quick``: a smoke test of every part
QUICK = Plan(n=4, seeds=(0,), sets=2, ks=(1, 3), levels=6, steps=2, sweep=(0, 2), sweep_ks=(3,))
#: the Metropolis-corrected samplers that must beat reverse diffusion at k >= 3, each with the
#: reverse diffusion of its own model (energy or score twin) as the baseline
CORRECTED = {"MALA": "reverse", "HMC": "reverse", "SMC": "reverse", "MALA-LI": "reverse (score)", "HMC-LI": "reverse (score)"}
#: seed of the cell sets
SETS_SEED = 1234


def composition_text(cells: Sequence[int], name: str = ENERGY) -> str:
    """The ``.rrr`` text of the composition of the cells ``cells`` (distinct, each in 0..15)."""
    cells = list(cells)
    if not 1 <= len(cells) <= CELLS:
        raise InvalidValueError(f"a composition needs 1 to {CELLS} cells, got {len(cells)}")
    for c in cells:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < CELLS:
            raise InvalidValueError(f"a cell is an integer 0..{CELLS - 1}, got {c!r}")
    repeated = sorted({c for c in cells if cells.count(c) > 1})
    if repeated:
        raise InvalidValueError(f"cell {repeated[0]} is requested twice", hint="each cell of a composition is distinct")
    k = len(cells)
    text = " * ".join(f'model("{name}", cell={c})' for c in cells)
    return text + (f' / model("{name}") ** {k - 1}' if k > 1 else "")


def composition(cells: Sequence[int], name: str = ENERGY) -> Expr:
    """``model(name, cell=c1) * ... * model(name, cell=ck) / model(name) ** (k-1)``, parsed."""
    return parse_expr(composition_text(cells, name))


def cell_sets(k: int, count: int, seed: int = SETS_SEED) -> list[tuple[int, ...]]:
    """``count`` distinct sets of ``k`` distinct cells (sorted), drawn uniformly with ``seed``
    (the same sets every run)."""
    if count > math.comb(CELLS, k):
        raise InvalidValueError(f"there are only {math.comb(CELLS, k)} sets of {k} cells, {count} requested")
    generator = torch.Generator().manual_seed(seed * 100 + k)
    sets: list[tuple[int, ...]] = []
    while len(sets) < count:
        cells = tuple(sorted(torch.randperm(CELLS, generator=generator)[:k].tolist()))
        if cells not in sets:
            sets.append(cells)
    return sets


def samplers(levels: int, steps: int) -> tuple[Spec, ...]:
    """The samplers at equal NFE: ``steps`` kernel steps at each of ``levels`` levels (a reverse
    step between levels reuses the kernel's cached gradient), which costs ``levels * (1 + steps)``
    gradients; reverse diffusion spends them on ``levels * (1 + steps) + 1`` levels of the same
    ``ᾱ`` (one score per step)."""
    walk = {"steps": steps, "mcmc_levels": None}
    li = {"mh": "line_integral", "steps": steps // quadrature_cost("line_integral", None), "mcmc_levels": None}
    return (
        Spec("reverse", ENERGY, "reverse", {}, levels * (1 + steps) + 1),
        Spec("reverse (score)", SCORE, "reverse", {}, levels * (1 + steps) + 1),
        Spec("ULA", ENERGY, "ula", walk, levels),
        Spec("MALA", ENERGY, "mala", walk, levels),
        Spec("HMC", ENERGY, "hmc", {**walk, "leapfrog": 1}, levels),
        Spec("SMC", ENERGY, "smc", {**walk, "levels": "schedule", "reverse_levels": None}, levels),
        Spec("MALA-LI", SCORE, "mala", li, levels),
        Spec("HMC-LI", SCORE, "hmc", {**li, "leapfrog": 1}, levels),
    )


def draw(spec: Spec, cells: Sequence[int], n: int, seed: int) -> tuple[torch.Tensor, float]:
    """Samples ``[n, 256]`` of the composition of ``cells`` under ``spec`` and their NFE per sample."""
    schedule = native_schedule(resolve(model(spec.model)).backbone.native.alphas_cumprod, spec.levels).schedule
    result = sample(compile_expr(composition(cells, spec.model), schedule), spec.sampler, n=n, seed=seed, progress=False, **spec.options)
    return result.x, result.diagnostics["nfe"]


class Cell(NamedTuple):
    """Accuracy over runs: mean, standard error, the per-run values, NFE per sample, seconds,
    and the samples of the first run (first cell set, first seed) for the grids."""

    mean: float
    se: float
    runs: list[float]
    nfe: float
    seconds: float
    first: torch.Tensor


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(R))."""
    x = torch.tensor(values, dtype=torch.float64)
    return float(x.mean()), float(x.std() / math.sqrt(len(x))) if len(x) > 1 else math.nan


def measure(spec: Spec, k: int, plan: Plan) -> Cell:
    """``spec``'s accuracy at ``k`` over every cell set and seed of ``plan``."""
    start, runs, samples = time.perf_counter(), [], []
    for cells in cell_sets(k, plan.sets):
        for seed in plan.seeds:
            x, nfe = draw(spec, cells, plan.n, seed)
            runs.append(float(all_present(x, cells).float().mean()))
            samples.append(x)
    return Cell(*mean_se(runs), runs, nfe, time.perf_counter() - start, samples[0])


def paired(a: Cell, b: Cell) -> tuple[float, float]:
    """Mean and standard error of the paired differences ``a - b`` over the same runs."""
    return mean_se([x - y for x, y in zip(a.runs, b.runs)])


def verdict(difference: tuple[float, float]) -> str:
    """``yes`` when a difference exceeds two standard errors, else ``no``."""
    mean, se = difference
    return "yes" if mean > 2 * se else "no"


def table(plan: Plan) -> tuple[list[str], list[str], dict[tuple[str, int], Cell]]:
    """The equal-NFE table, the claim lines (corrected vs reverse at k >= 3), and the cells."""
    cells: dict[tuple[str, int], Cell] = {}
    rows = []
    for spec in samplers(plan.levels, plan.steps):
        for k in plan.ks:
            cells[spec.label, k] = cell = measure(spec, k, plan)
            rows.append({"sampler": spec.label, "k": k, "NFE/sample": f"{cell.nfe:.0f}", "accuracy": f"{cell.mean:.3f} ± {cell.se:.3f}", "seconds": f"{cell.seconds:.0f}"})
            print(markdown_table([rows[-1]])[-1], flush=True)
    claims = []
    for label, baseline in CORRECTED.items():
        for k in (k for k in plan.ks if k >= 3):
            difference = paired(cells[label, k], cells[baseline, k])
            claims.append({"sampler": label, "k": k, "baseline": baseline, "accuracy − baseline (paired)": f"{difference[0]:+.3f} ± {difference[1]:.3f}", "> 2 SE": verdict(difference)})
    return markdown_table(rows), markdown_table(claims) if claims else ["(no k >= 3 in this run)"], cells


def sweep(plan: Plan) -> tuple[list[str], list[str]]:
    """Accuracy against MCMC steps per level (MALA, ULA; 0 steps is reverse diffusion on the
    same levels), and whether it rises (most steps against none, paired)."""
    rows, rises = [], []
    for k in plan.sweep_ks:
        none = measure(Spec("reverse", ENERGY, "reverse", {}, plan.levels), k, plan) if 0 in plan.sweep else None
        for sampler in ("mala", "ula"):
            cells = {}
            for steps in plan.sweep:
                walk = {"steps": steps, "mcmc_levels": None}
                cells[steps] = cell = measure(Spec(sampler, ENERGY, sampler, walk, plan.levels), k, plan) if steps else none
                rows.append({"k": k, "sampler": sampler.upper() if steps else "reverse", "steps/level": steps, "NFE/sample": f"{cell.nfe:.0f}", "accuracy": f"{cell.mean:.3f} ± {cell.se:.3f}"})
                print(markdown_table([rows[-1]])[-1], flush=True)
            most = max(plan.sweep)
            difference = paired(cells[most], cells[min(plan.sweep)])
            drops = [f"{a}→{b}" for a, b in zip(plan.sweep, plan.sweep[1:]) if paired(cells[b], cells[a])[0] < -2 * paired(cells[b], cells[a])[1]]
            rises.append({"k": k, "sampler": sampler.upper(), f"{most} steps − {min(plan.sweep)} (paired)": f"{difference[0]:+.3f} ± {difference[1]:.3f}",
                          "rises (> 2 SE)": verdict(difference), "drops > 2 SE between steps": ", ".join(drops) or "none"})
    return markdown_table(rows), markdown_table(rises)


def figures(plan: Plan, cells: dict[tuple[str, int], Cell], out: Path) -> list[str]:
    """Sample grids at k = 3 and 5 (reverse diffusion, ULA, MALA, SMC: the first samples of the
    first cell set and seed), requested cells outlined; the file names written."""
    names = []
    for k in (k for k in (3, 5) if k in plan.ks):
        shown = {label: cells[label, k].first[:8] for label in ("reverse", "ULA", "MALA", "SMC")}
        requested = cell_sets(k, 1)[0]
        name = f"objects-k{k}.png"
        count = len(next(iter(shown.values())))
        sample_grid(shown, requested, f"k = {k}, cells {', '.join(map(str, requested))} (outlined): {count} samples per sampler, equal NFE", out / name)
        names.append(name)
    return names


def sample_grid(rows: dict[str, torch.Tensor], cells: Sequence[int], title: str, path: Path) -> Path:
    """One row of images per sampler (pixels clipped to [-1, 1]), the requested cells outlined in red."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from ..plot import save_figure

    count = max(len(x) for x in rows.values())
    fig = Figure(figsize=(0.9 * count + 0.8, 0.95 * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), count, squeeze=False)
    side = SIZE // GRID
    for row, (label, x) in zip(axes, rows.items()):
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        for ax, image in zip(row, x.float().clamp(-1, 1).reshape(-1, SIZE, SIZE)):
            ax.imshow(image.numpy(), cmap="gray", vmin=-1, vmax=1)
            for c in cells:
                ax.add_patch(Rectangle(((c % GRID) * side - 0.5, (c // GRID) * side - 0.5), side, side, fill=False, edgecolor="red", linewidth=0.8))
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``objects.md`` and the sample grids under ``args.out``."""
    plan = QUICK if args.quick else FULL
    plan = plan._replace(n=args.n or plan.n)
    start = time.perf_counter()
    equal, claims, cells = table(plan)
    by_steps, rises = sweep(plan)
    pictures = figures(plan, cells, args.out)
    text = render(
        "objects",
        provenance=provenance(command),
        plan=f"N = {plan.n} samples per run, seeds {', '.join(map(str, plan.seeds))}, {plan.sets} cell sets per k: "
        f"{plan.sets * len(plan.seeds)} runs per entry",
        sets=[f"- k = {k}: " + "; ".join(" ".join(map(str, s)) for s in cell_sets(k, plan.sets)) for k in plan.ks],
        levels=plan.levels,
        steps=plan.steps,
        equal=equal,
        claims=claims,
        sweep=by_steps,
        rises=rises,
        pictures=", ".join(f"`{name}`" for name in pictures),
        minutes=f"{(time.perf_counter() - start) / 60:.1f}",
    )
    print("wrote", write_report(args.out / "objects.md", text))
    return 0


