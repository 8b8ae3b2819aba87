"""Benchmarks (``rrr bench``): the paper's 2D table against exact truth, pyro's NUTS, scaling.

``rrr bench table [--quick] [--out DIR]``
    Compositions x samplers x models at (at most) equal NFE per particle, against exact samples
    of the oracle composition at level 0 (:func:`rrrdsl.truth.exact_samples`), reproducing the
    2D experiment of Du et al. (2023), "Reduce, Reuse, Recycle" (Table 1 / Figure 4). Metrics
    (:mod:`rrrdsl.metrics`): mean log-likelihood under the exact normalised target; RBF MMD
    (Gretton et al., 2012; bandwidth :data:`BANDWIDTH`) divided by the exact-vs-exact floor;
    sliced 2-Wasserstein (Bonneel et al., 2015); mode-weight error (total variation over the
    ring modes) where the target has modes. Writes ``table.md`` and ``table.png``.
``rrr bench pyro``
    The exact 8-Gaussian ring at level 0: rrrdsl's annealed HMC over many independent chains
    against pyro's ``NUTS`` (Hoffman & Gelman, 2014; one chain, its own warmup adaptation)
    with the same total number of gradient evaluations and, separately, the same wall time.
    Writes ``pyro.md``.
``rrr bench scaling [--quick]``
    Wall time and peak resident memory against the number of particles and of leaves, with
    least-squares slopes on log-log axes, and the overhead of the compiled graph against a
    hand-written torch loop at the same NFE. Writes ``scaling.md`` and ``scaling.png``.

Every benchmark fixes its seeds, runs with one torch thread, and writes its results atomically
(:func:`rrrdsl.files.write_atomic`) with the command, date, machine and torch version.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch

from .errors import RrrdslError
from .lang.ir import Expr, gmm, model, oracle

#: RBF bandwidth of every MMD
BANDWIDTH = 0.05
#: radius around a ring mode that counts as "in the mode"
RADIUS = 0.1
#: seeds of the exact reference sample and of the floor's exact pairs
TRUTH_SEED = 10_000
FLOOR_SEEDS = range(20_000, 20_005)
#: default output directory (relative to the working directory: the repository root)
RESULTS = Path("benchmarks") / "results"
#: the model kinds of the table: how leaves are built and which samplers apply
MODEL_KINDS = ("exact", "energy", "score", "score + MH")
#: grid bounds of the learned energies' own composed density (every shipped composition has
#: less than 1e-7 of its level-0 mass beyond |x| = 1.2)
MODEL_BOUNDS = ((-1.5, 1.5), (-1.5, 1.5))

Leaf = Callable[[str], Expr]


# --- shared pieces (also used by benchmarks/bench_samplers.py) --------------------------------


def ring_centers() -> torch.Tensor:
    """The 8 ring means at level 0 (``sqrt(alpha_bar_0)`` times the clean ones), ``[8, 2]``."""
    from . import schedules
    from .models.registry import RING_RADIUS, RING_SIZE

    angle = torch.arange(RING_SIZE, dtype=torch.float64) * 2 * torch.pi / RING_SIZE
    scale = float(schedules.default().alpha_bar[0]) ** 0.5
    return RING_RADIUS * scale * torch.stack([torch.cos(angle), torch.sin(angle)], 1)


def format_row(row: dict) -> str:
    """One markdown table row: floats with 4 significant digits, ``None`` as a dash."""
    cells = []
    for value in row.values():
        if isinstance(value, float):
            cells.append(f"{value:.4g}")
        else:
            cells.append("—" if value is None else str(value))
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: Sequence[dict]) -> list[str]:
    """A markdown table of dicts sharing their keys (the header is the first row's keys)."""
    header = list(rows[0])
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *(format_row(r) for r in rows)]


def provenance(command: str) -> list[str]:
    """Markdown bullet lines: the command, UTC date, machine, torch and python versions."""
    return [
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}; {torch.get_num_threads()} torch thread(s)",
        f"- torch {torch.__version__}, python {platform.python_version()}",
    ]


def _write_text(path: Path, lines: Sequence[str]) -> Path:
    from .files import write_atomic

    write_atomic(path, ("\n".join(lines) + "\n").encode())
    return path


# --- the table ---------------------------------------------------------------------------------


class Composition(NamedTuple):
    """A row group of the table: ``build(leaf)`` makes the expression from a leaf factory;
    ``exact`` overrides it for the exact-oracle rows; ``has_modes``: the ring modes apply."""

    name: str
    build: Callable[[Leaf], Expr]
    exact: Optional[Expr] = None
    has_modes: bool = False


class SamplerSpec(NamedTuple):
    """A column of the table: ``rrrdsl.sample(expr, sampler, **options)``."""

    label: str
    sampler: str
    options: dict


class TableConfig(NamedTuple):
    """What one table run covers."""

    n: int
    compositions: tuple[Composition, ...]
    samplers: tuple[SamplerSpec, ...]
    models: tuple[str, ...]
    seed: int = 0


class Truth(NamedTuple):
    """Exact reference of one oracle composition at level 0."""

    expr: Expr
    samples: torch.Tensor
    floor: float
    log_likelihood: float
    centres: Optional[torch.Tensor]


class Metrics(NamedTuple):
    """The metric row of one sample set against a :class:`Truth`."""

    log_likelihood: float
    mmd_over_floor: float
    sliced_w2: float
    mode_weight_error: Optional[float]


COMPOSITIONS: tuple[Composition, ...] = (
    Composition("product", lambda f: f("ring") * f("bar"), has_modes=True),
    Composition("mixture", lambda f: f("left_bar") + f("right_bar")),
    Composition("weighted mixture", lambda f: 0.3 * f("left_bar") + 0.7 * f("right_bar")),
    Composition(
        "negation",
        lambda f: f("box") ** 1.3 / f("box_small") ** 0.3,
        exact=oracle("gauss") / gmm(means=[[0.25, 0.25], [0, 0]], std=[0.1, 1.0]) ** 0.5,
    ),
    Composition("sharpening", lambda f: f("ring") ** 2, has_modes=True),
    Composition("CFG-shaped", lambda f: f("ring_left") ** 3 / f("ring") ** 2, has_modes=True),
)

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("reverse", "reverse", {}),
    SamplerSpec("ULA", "ula", {}),
    SamplerSpec("UHA", "uha", {}),
    SamplerSpec("MALA", "mala", {}),
    SamplerSpec("HMC", "hmc", {}),
    SamplerSpec("NUTS", "nuts", {}),
    SamplerSpec("SMC (MALA)", "smc", {"kernel": "mala"}),
    # HMC moves with the annealed HMC defaults (one leapfrog step, partial refresh): same NFE as MALA moves
    SamplerSpec("SMC (HMC)", "smc", {"kernel": "hmc", "leapfrog": 1, "damping": 0.5}),
)
#: samplers per model kind: score models run the unadjusted samplers, or MALA/HMC with the
#: line-integral Metropolis test; NUTS and SMC need exact energy differences
_KIND_SAMPLERS = {
    "exact": {s.label for s in SAMPLERS},
    "energy": {s.label for s in SAMPLERS},
    "score": {"reverse", "ULA", "UHA"},
    "score + MH": {"MALA", "HMC"},
}
_METROPOLIS = ("MALA", "HMC", "NUTS", "SMC (MALA)", "SMC (HMC)")

FULL = TableConfig(2000, COMPOSITIONS, SAMPLERS, MODEL_KINDS)
#: the quick table: exact oracles only (a learned row costs 10-20x an oracle row on a CPU)
QUICK = TableConfig(
    500,
    tuple(c for c in COMPOSITIONS if c.name in ("product", "mixture", "sharpening")),
    tuple(s for s in SAMPLERS if s.label in ("reverse", "ULA", "MALA", "SMC (MALA)")),
    ("exact",),
)


def leaf_factory(kind: str) -> Leaf:
    """How a composition's leaves are built for a model kind."""
    if kind == "exact":
        return oracle
    if kind == "energy":
        return model
    return lambda name: model(name, param="score")


def model_expr(composition: Composition, kind: str) -> Expr:
    """The composition's expression for one model kind."""
    if kind == "exact" and composition.exact is not None:
        return composition.exact
    return composition.build(leaf_factory(kind))


def exact_expr(composition: Composition, kind: str) -> Expr:
    """The ground-truth expression of a row: the same composition of exact oracles."""
    return model_expr(composition, "exact") if kind == "exact" else composition.build(oracle)


def make_truth(expr: Expr, n: int, has_modes: bool) -> Truth:
    """Exact samples, the exact-vs-exact MMD floor and the exact samples' own log-likelihood."""
    from . import truth
    from .metrics import mean_log_likelihood, mmd_floor

    samples = truth.exact_samples(expr, n, seed=TRUTH_SEED)
    floor = mmd_floor(expr, n, BANDWIDTH, seeds=FLOOR_SEEDS)
    centres = ring_centers() if has_modes else None
    return Truth(expr, samples, floor, mean_log_likelihood(samples, expr), centres)


class ModelTruth(NamedTuple):
    """Exact draws of the density a composition of learned energies defines at level 0."""

    grid: Any  # rrrdsl.truth.Grid over MODEL_BOUNDS
    samples: torch.Tensor
    floor: float
    #: (lowest, highest) MMD/floor of BAND_DRAWS further exact draws against ``samples``
    band: tuple[float, float]


#: independent exact draws that give the band a perfect sampler of the learned density scores in
BAND_DRAWS = 20
#: seed of the "exact draws of the model" row (beside TRUTH_SEED and FLOOR_SEEDS)
MODEL_DRAW_SEED = 30_000


def make_model_truth(expr: Expr, n: int) -> ModelTruth:
    """Exact samples of the density that a composition of *learned energies* defines at level 0
    (on a grid over :data:`MODEL_BOUNDS`), their MMD floor, and the band of MMD/floor that
    independent exact draws score against them.

    A sampler's MMD to these samples is its sampling error alone; its MMD to the exact oracle
    truth adds the models' error, which no sampler can remove.
    """
    from . import truth
    from .metrics import grid_mmd_floor, mmd

    grid = truth.grid(expr, 0, bounds=MODEL_BOUNDS)
    samples = truth.sample_grid(grid, n, TRUTH_SEED)
    floor = grid_mmd_floor(grid, n, BANDWIDTH, FLOOR_SEEDS)
    draws = [mmd(truth.sample_grid(grid, n, MODEL_DRAW_SEED + 1 + k), samples, BANDWIDTH) / floor for k in range(BAND_DRAWS)]
    return ModelTruth(grid, samples, floor, (min(draws), max(draws)))


def metric_row(x: torch.Tensor, truth: Truth) -> Metrics:
    """Every metric of samples ``x`` against ``truth`` (NaN when ``x`` is not finite)."""
    from .metrics import mean_log_likelihood, mmd, mode_weight_error, sliced_wasserstein

    if not torch.isfinite(x).all():
        nan = math.nan
        return Metrics(nan, nan, nan, nan if truth.centres is not None else None)
    modes = None if truth.centres is None else mode_weight_error(x, truth.samples, truth.centres, RADIUS)
    return Metrics(
        mean_log_likelihood(x, truth.expr),
        mmd(x, truth.samples, BANDWIDTH) / truth.floor,
        sliced_wasserstein(x, truth.samples, 256, seed=0),
        modes,
    )


def _sample_options(kind: str, spec: SamplerSpec) -> dict:
    options = dict(spec.options, progress=False)
    if kind == "score + MH":
        options["mh"] = "line_integral"
    return options


class TableRun(NamedTuple):
    """What :func:`table_rows` returns: the rows (one dict per cell: ``status`` is ``"ok"`` or
    why the row is missing), the samples per ``(composition, model, sampler label)`` plus
    ``(composition, model, "exact")`` for the figure, and per composition the band of
    :class:`ModelTruth` (or why the learned composition has no density on the grid)."""

    rows: list[dict]
    samples: dict
    bands: dict[str, Union[tuple[float, float], str]]


#: the sampler label of the energy rows drawn exactly from the learned composition's density
MODEL_DRAWS = "exact draws of the model"


def table_rows(config: TableConfig, log: Callable[[str], None] = print) -> TableRun:
    """Run every (composition, model, sampler) cell of ``config``.

    Energy groups start with a :data:`MODEL_DRAWS` row: exact samples of the learned
    composition's own density (no sampler can do better on these models), and every energy
    row is also scored against that density (``MMD/floor (model)``).
    """
    from . import truth as grids
    from .compiler import compile as compile_expr

    run = TableRun([], {}, {})
    for composition in config.compositions:
        truths: dict[Expr, Any] = {}
        for kind in config.models:
            reference = exact_expr(composition, kind)
            if reference not in truths:
                try:
                    truths[reference] = make_truth(reference, config.n, composition.has_modes)
                except RrrdslError as error:
                    truths[reference] = f"no exact truth: {_first_line(error)}"
            truth = truths[reference]
            if isinstance(truth, Truth):
                run.samples[(composition.name, kind, "exact")] = truth.samples
            model_truth = None
            if kind == "energy":
                try:
                    model_truth = make_model_truth(model_expr(composition, kind), config.n)
                except RrrdslError as error:
                    run.bands[composition.name] = f"no density of the learned composition: {_first_line(error)}"
                else:
                    run.bands[composition.name] = model_truth.band
                    x = grids.sample_grid(model_truth.grid, config.n, MODEL_DRAW_SEED)
                    run.samples[(composition.name, kind, MODEL_DRAWS)] = x
                    base = {"composition": composition.name, "model": kind, "sampler": MODEL_DRAWS, "nfe": None, "seconds": None}
                    run.rows.append(_scored(base, x, truth, model_truth))
                    log(format_row(run.rows[-1]))
            try:
                target = compile_expr(model_expr(composition, kind))
                missing = None
            except RrrdslError as error:
                target, missing = None, f"model missing: {_first_line(error)}"
            for spec in config.samplers:
                if spec.label not in _KIND_SAMPLERS[kind]:
                    continue
                row = {"composition": composition.name, "model": kind, "sampler": spec.label}
                result = missing if missing is not None else _sample_or_why(target, spec, kind, config)
                if isinstance(result, str):
                    run.rows.append(_missing(row, result))
                else:
                    run.samples[(composition.name, kind, spec.label)] = result.x
                    row.update(nfe=result.diagnostics["nfe"], seconds=result.diagnostics["wall_time"])
                    run.rows.append(_scored(row, result.x, truth, model_truth))
                log(format_row(run.rows[-1]))
    return run


def _sample_or_why(target: Any, spec: SamplerSpec, kind: str, config: TableConfig) -> Any:
    """The sampler's result, or why it refused (a string)."""
    from .samplers.api import sample

    try:
        return sample(target, spec.sampler, n=config.n, seed=config.seed, **_sample_options(kind, spec))
    except RrrdslError as error:
        return f"sampler refused: {_first_line(error)}"


def _scored(row: dict, x: torch.Tensor, truth: Any, model_truth: Optional[ModelTruth]) -> dict:
    """``row`` with the metrics of samples ``x`` (against the exact truth, when there is one)."""
    if not isinstance(truth, Truth):
        return {**row, **_empty_metrics(), "MMD/floor (model)": _model_mmd(x, model_truth), "status": truth}
    metrics = metric_row(x, truth)
    return {
        **row,
        "mean log-lik": metrics.log_likelihood,
        "exact log-lik": truth.log_likelihood,
        "MMD/floor": metrics.mmd_over_floor,
        "MMD/floor (model)": _model_mmd(x, model_truth),
        "sliced W2": metrics.sliced_w2,
        "mode-weight err": metrics.mode_weight_error,
        "status": "ok",
    }


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0]


def _model_mmd(x: torch.Tensor, model_truth: Optional[ModelTruth]) -> Optional[float]:
    """MMD/floor of ``x`` against the learned composition's own density (energy rows only)."""
    from .metrics import mmd

    if model_truth is None or not torch.isfinite(x).all():
        return None
    return mmd(x, model_truth.samples, BANDWIDTH) / model_truth.floor


def _empty_metrics() -> dict:
    return dict.fromkeys(("mean log-lik", "exact log-lik", "MMD/floor", "MMD/floor (model)", "sliced W2", "mode-weight err"))


def _missing(row: dict, why: str) -> dict:
    return {**row, "nfe": None, "seconds": None, **_empty_metrics(), "status": why}


def table_verdicts(rows: Sequence[dict], bands: Optional[dict] = None) -> list[str]:
    """The issue's two claims, checked row by row (compositions without truth are named).

    The claim for energy models is checked against the exact target and against the learned
    composition's own density. Against the latter, when reverse diffusion already scores inside
    the band of exact draws (``bands[composition]``, :class:`ModelTruth`), there is nothing to
    beat (mixtures): the verdict says so and which corrected samplers are inside the band too.
    """
    bands = bands or {}
    ok = [r for r in rows if r["status"] == "ok"]
    lines = []
    for composition in dict.fromkeys(r["composition"] for r in rows):
        cells = {(r["model"], r["sampler"]): r["MMD/floor"] for r in ok if r["composition"] == composition}
        ran_energy = any(r["model"] == "energy" for r in rows if r["composition"] == composition)
        band = bands.get(composition)
        for key, against in (("MMD/floor", "the exact target"), ("MMD/floor (model)", "the learned composition's own density")):
            energy = {r["sampler"]: r.get(key) for r in rows if r["composition"] == composition and r["model"] == "energy"}
            reverse = energy.get("reverse")
            corrected = {s: energy[s] for s in _METROPOLIS if energy.get(s) is not None}
            head = f"- {composition}, energy models, against {against}"
            if ran_energy and (reverse is None or not corrected):
                lines.append(f"{head}: no comparison (rows missing or no truth)")
            elif ran_energy:
                losers = [s for s, v in corrected.items() if not v < reverse]
                verdict = "met" if not losers else "NOT met by " + ", ".join(losers)
                if losers and key == "MMD/floor (model)" and isinstance(band, tuple) and reverse <= band[1]:
                    outside = [s for s, v in corrected.items() if v > band[1]]
                    verdict = (
                        f"tie: reverse diffusion is already inside the band of exact draws ({band[0]:.3g}-{band[1]:.3g}), "
                        "nothing to beat; " + ("every corrected sampler is inside it too" if not outside else "above it: " + ", ".join(outside))
                    )
                lines.append(f"{head}: Metropolis-corrected samplers beat reverse diffusion ({key} {reverse:.3g}): {verdict}")
        smc = {s: cells[("exact", s)] for s in ("SMC (MALA)", "SMC (HMC)") if ("exact", s) in cells}
        if smc:
            best = min(smc.values())
            lines.append(
                f"- {composition}, exact oracles: best SMC within 1.5x of the floor: {best:.3g}x "
                + ("met" if best <= 1.5 else "NOT met")
            )
    return lines


def table_figure(rows: Sequence[dict], samples: dict, config: TableConfig):
    """A grid of scatter plots: one row per (composition, model), one column per sampler
    (the first column: exact samples; the second: exact draws of the learned energies' own
    density, energy rows only), over the exact level-0 density where it exists."""
    import numpy as np
    from matplotlib.figure import Figure

    from . import truth
    from .plot import draw_2d

    groups = list(dict.fromkeys((r["composition"], r["model"]) for r in rows))
    drawn = [MODEL_DRAWS] if any(key[2] == MODEL_DRAWS for key in samples) else []
    columns = ["exact", *drawn, *(s.label for s in config.samplers)]
    figure = Figure(figsize=(1.9 * len(columns), 1.9 * len(groups) + 0.3), layout="constrained")
    axes = figure.subplots(len(groups), len(columns), squeeze=False)
    by_name = {c.name: c for c in config.compositions}
    bounds = np.array([[-1.1, 1.1], [-1.1, 1.1]])
    for i, (name, kind) in enumerate(groups):
        try:
            g = truth.grid(exact_expr(by_name[name], kind), resolution=160)
            density = (tuple(a.numpy() for a in g.axes), g.density.numpy())
        except RrrdslError:
            density = None
        for j, label in enumerate(columns):
            ax = axes[i, j]
            x = samples.get((name, kind, label))
            if x is None and label != "exact":
                ax.set_axis_off()
                continue
            draw_2d(ax, density, x, bounds, f"{name} · {kind}\n{label}" if j == 0 else label)
            ax.title.set_fontsize(7)
            ax.tick_params(labelsize=5)
    return figure


def table_report(run: TableRun, config: TableConfig, command: str, seconds: float) -> list[str]:
    """The lines of ``table.md``."""
    rows = run.rows
    from .samplers.api import DEFAULTS

    lines = [
        "# The 2D composition table (issue 6)",
        "",
        *provenance(command),
        f"- N = {config.n} particles per cell, sampling seed {config.seed}; total wall time {seconds:.0f} s",
        "- ground truth: `rrrdsl.truth.exact_samples` of the *exact oracle* composition at level 0 "
        f"(N draws, seed {TRUTH_SEED}), also for the learned rows",
        f"- MMD: RBF kernel, bandwidth {BANDWIDTH}, biased estimate, divided by the exact-vs-exact floor "
        f"(mean over {len(FLOOR_SEEDS)} independent exact pairs of size N); 1.0 = indistinguishable",
        "- MMD/floor (model), energy rows only: the same against exact samples of the density the *learned* "
        f"energies' composition defines at level 0 (a grid over {MODEL_BOUNDS}, `rrrdsl.bench.make_model_truth`), "
        "over that density's own floor: the sampler's error without the models' error. On a mixture, reverse "
        "diffusion follows the exact score of every noised level (the noised mixture is the mixture of the noised "
        "components), so there is nothing for a Metropolis correction to fix and the order of the samplers is noise; "
        f"the band that {BAND_DRAWS} independent exact draws of the learned density score is listed under each composition",
        f"- `{MODEL_DRAWS}` (energy rows): N exact draws of the learned composition's density (seed {MODEL_DRAW_SEED}); "
        "its MMD/floor against the exact target is the models' own error, which no sampler of these models can remove",
        "- mean log-lik: mean log density of the samples under the exact normalised target "
        "(`rrrdsl.metrics.mean_log_likelihood`); 'exact log-lik' is the same for the exact samples",
        "- sliced W2: 256 random directions; mode-weight err: total variation between the 8 ring-mode "
        f"weights (+ the mass farther than {RADIUS} from every mode) of the samples and of the exact samples",
        "- equal NFE: every annealed sampler uses its defaults (`rrrdsl.samplers.api.DEFAULTS`), "
        "at most 1000 gradient evaluations per particle (the NFE column is the measured mean); "
        "reverse diffusion cannot spend more than one evaluation per level of the 100-level schedule",
        "- defaults: " + "; ".join(f"{k}: {v}" for k, v in DEFAULTS.items() if k != "ddim"),
        "- models: exact = `oracle(...)` leaves; energy = `model(...)` (learned energy checkpoints); "
        "score = `model(..., param=\"score\")` under unadjusted samplers; score + MH = MALA/HMC with "
        "`mh=\"line_integral\"` (NUTS and SMC need exact energies and do not run on score models)",
        "- a row whose status is not `ok` is missing, and says why (a checkpoint that is not shipped, a "
        "composition the compiler rejects, or no exact truth)",
        "",
        "## Claims",
        "",
        *table_verdicts(rows, run.bands),
    ]
    for composition in dict.fromkeys(r["composition"] for r in rows):
        group = [r for r in rows if r["composition"] == composition]
        expressions = {kind: str(model_expr(c, kind)) for c in config.compositions if c.name == composition for kind in config.models}
        lines += ["", f"## {composition}", ""]
        lines += [f"- {kind}: `{text}`" for kind, text in expressions.items()]
        band = run.bands.get(composition)
        if isinstance(band, tuple):
            lines.append(
                f"- {BAND_DRAWS} independent exact draws of the learned composition's density score MMD/floor (model) "
                f"{band[0]:.3g}-{band[1]:.3g}: a sampler inside that band is as good as exact sampling"
            )
        elif band is not None:
            lines.append(f"- {band}")
        lines += ["", *markdown_table(group)]
    return lines


def write_table(run: TableRun, config: TableConfig, out: Path, command: str, seconds: float) -> None:
    """Write ``table.md`` and ``table.png`` under ``out`` (each atomically)."""
    from .plot import save_figure

    _write_text(out / "table.md", table_report(run, config, command, seconds))
    save_figure(table_figure(run.rows, run.samples, config), out / "table.png", dpi=80)


def run_table(config: TableConfig, out: Path, command: str) -> int:
    """Run the table and write its results under ``out``."""
    start = time.perf_counter()
    run = table_rows(config)
    write_table(run, config, out, command, time.perf_counter() - start)
    print("\n".join(table_verdicts(run.rows, run.bands)))
    print(f"wrote {out / 'table.md'} and {out / 'table.png'}")
    return 0


# --- pyro NUTS ---------------------------------------------------------------------------------


class ChainSummary(NamedTuple):
    """Mode statistics of one sample set of the ring at level 0."""

    label: str
    draws: int
    gradients: int
    seconds: float
    modes_covered: int
    max_weight_error: float
    ess: float

    def row(self) -> dict:
        return {
            "sampler": self.label,
            "draws": self.draws,
            "gradient evaluations": self.gradients,
            "seconds": self.seconds,
            "modes covered (of 8)": self.modes_covered,
            "largest mode-weight deviation from 1/8": self.max_weight_error,
            "ESS": self.ess,
            "ESS / s": self.ess / self.seconds,
        }


def ring_summary(label: str, x: torch.Tensor, gradients: int, seconds: float, ess: float) -> ChainSummary:
    """Modes covered (weight > 1%) and the largest deviation of a mode weight from 1/8."""
    from .metrics import mode_weights

    weights = mode_weights(x, ring_centers(), RADIUS)
    return ChainSummary(label, x.shape[0], gradients, seconds, int((weights > 0.01).sum()),
                        float((weights - 1 / 8).abs().max()), ess)


#: pyro's ESS estimator needs memory quadratic in the draws: longer chains are thinned to this
ESS_MAX_DRAWS = 2000


def chain_ess(x: torch.Tensor) -> float:
    """The smaller per-coordinate ESS of one chain ``[draws, D]`` (``pyro.ops.stats``), computed on
    the chain thinned to at most :data:`ESS_MAX_DRAWS` draws (a lower bound for the whole chain)."""
    from pyro.ops.stats import effective_sample_size

    thinned = x[:: max(1, math.ceil(x.shape[0] / ESS_MAX_DRAWS))]
    return float(effective_sample_size(thinned.double().unsqueeze(0), chain_dim=0, sample_dim=1).min())


def pyro_nuts(potential_fn: Callable, gradient_budget: Optional[int], seconds: Optional[float],
              warmup: int, seed: int) -> tuple[torch.Tensor, int, float]:
    """One pyro NUTS chain (its own step-size and mass adaptation for ``warmup`` draws), run until
    ``gradient_budget`` gradient evaluations or ``seconds`` of wall time (warmup included) are spent.

    Returns the post-warmup draws ``[M, D]``, the gradient evaluations and the wall time.
    """
    import pyro
    from pyro.infer import NUTS

    count = [0]

    def counted(params: dict) -> torch.Tensor:
        count[0] += 1
        return potential_fn(params)

    pyro.set_rng_seed(seed)
    kernel = NUTS(potential_fn=counted)
    start = time.perf_counter()
    kernel.initial_params = {"x": torch.tensor([0.5, 0.0])}
    kernel.setup(warmup)
    params, draws, step = kernel.initial_params, [], 0
    while (gradient_budget is None or count[0] < gradient_budget) and (
        seconds is None or time.perf_counter() - start < seconds
    ):
        params = kernel.sample(params)
        if step >= warmup:
            draws.append(params["x"].detach().clone())
        step += 1
    kernel.cleanup()
    elapsed = time.perf_counter() - start
    return (torch.stack(draws) if draws else torch.empty(0, 2)), count[0], elapsed


#: rrrdsl's sampler for the pyro comparison: annealed HMC, a reverse step at every level and
#: ``steps`` HMC transitions at each of the last ten levels
PYRO_RRRDSL = {"sampler": "hmc", "steps": 5}


def run_pyro(n: int, out: Path, command: str, seed: int = 0, warmup: int = 500) -> int:
    """Write ``pyro.md``: rrrdsl (``n`` chains) vs pyro NUTS at equal gradients / equal time."""
    from .compiler import compile as compile_expr
    from .samplers.api import sample

    expr = oracle("ring")
    target = compile_expr(expr)
    options = dict(PYRO_RRRDSL)
    result = sample(target, options.pop("sampler"), n=n, seed=seed, progress=False, **options)
    gradients = int(round(result.diagnostics["nfe"] * n))
    seconds = result.diagnostics["wall_time"]
    ours = ring_summary(f"rrrdsl annealed HMC, {n} chains", result.x, gradients, seconds, float(n))
    rows = [ours.row()]
    for label, budget, limit in (("pyro NUTS, equal gradients", gradients, None), ("pyro NUTS, equal wall time", None, seconds)):
        x, used, elapsed = pyro_nuts(target.at(0).potential_fn, budget, limit, warmup, seed)
        ess = chain_ess(x) if x.shape[0] > 3 else 0.0
        rows.append(ring_summary(label, x, used, elapsed, ess).row())
        print(format_row(rows[-1]), flush=True)
    lines = [
        "# rrrdsl vs pyro NUTS on the exact 8-Gaussian ring at level 0",
        "",
        *provenance(command),
        "- target: `oracle(\"ring\")` at level 0 (8 equal modes, std about 0.03, radius 0.5)",
        f"- rrrdsl: `rrrdsl.sample(oracle(\"ring\"), \"hmc\", n={n}, steps={PYRO_RRRDSL['steps']}, seed={seed})`: "
        f"{n} independent annealed chains (a reverse-diffusion step per level, HMC at the last ten), "
        f"{result.diagnostics['nfe']:.0f} gradient evaluations per chain; its ESS is N (independent final states)",
        f"- pyro: `pyro.infer.NUTS(potential_fn=target.at(0).potential_fn)`, one chain from (0.5, 0), "
        f"{warmup} warmup draws (step size and diagonal mass adaptation), stopped when it has spent rrrdsl's total "
        "gradient evaluations (warmup included), or separately rrrdsl's wall time; ESS by "
        f"`pyro.ops.stats.effective_sample_size` on the post-warmup draws thinned to at most {ESS_MAX_DRAWS} "
        "(smaller coordinate; a lower bound)",
        f"- modes covered: ring modes holding more than 1% of the draws within {RADIUS} of their centre; "
        "mode weight: fraction of draws in that mode (exact: 1/8 each)",
        "",
        *markdown_table(rows),
        "",
        "Expectation (issue 6): rrrdsl covers all 8 modes within 0.02 of 1/8: "
        + ("met" if ours.modes_covered == 8 and ours.max_weight_error <= 0.02 else "NOT met")
        + f" (largest deviation {ours.max_weight_error:.4f}).",
    ]
    _write_text(out / "pyro.md", lines)
    print(f"wrote {out / 'pyro.md'}")
    return 0


# --- scaling -----------------------------------------------------------------------------------


class ScalingConfig(NamedTuple):
    """Particle counts and leaf counts of a scaling run."""

    particles: tuple[int, ...]
    leaves: tuple[int, ...]
    leaves_n: int
    fit_from_particles: int
    fit_from_leaves: int


#: N up to 1e6: below ~3e4 particles a 2D step costs less than the ~0.2 ms of python per step
#: (the kernel, the driver and the graph), so the slope is fitted from 3e4 up (the range where
#: the per-particle cost dominates). Against leaves the sampler's own work per step (noise,
#: updates, diagnostics) does not grow with the leaves and is ~20% of a one-leaf run at 1e5
#: particles, so that slope is fitted from 2 leaves. The affine fit ``a + b x`` over all
#: points names both costs.
SCALING = ScalingConfig(
    (100, 300, 1000, 3000, 10_000, 30_000, 100_000, 300_000, 1_000_000), (1, 2, 4, 8, 16), 100_000, 30_000, 2
)
SCALING_QUICK = ScalingConfig((100, 1000, 10_000), (1, 4, 16), 2000, 1000, 4)
#: the scaling workload: annealed ULA with a fixed step size, 10 steps at each of the last ten
#: levels and a reverse step at every level (199 gradient evaluations per particle)
WORKLOAD = {"steps": 10, "step_size": 1e-4, "adapt": False}


def leaves_expr(k: int) -> Expr:
    """A product of ``k`` distinct Gaussian leaves (distinct means, so nothing is shared)."""
    expr = gmm(means=[[0.0, 0.0]], std=1.0)
    for i in range(1, k):
        expr = expr * gmm(means=[[0.05 * i, -0.05 * i]], std=1.0)
    return expr


def measure_point(k: int, n: int) -> dict:
    """Wall time and peak-RSS growth of one :data:`WORKLOAD` run (``k`` leaves, ``n`` particles).

    Meant to run in a fresh process (:func:`_measure_in_subprocess`): ``ru_maxrss`` is the
    process's peak resident set size, so its growth over the run is the run's peak memory.
    """
    import resource

    from .compiler import compile as compile_expr
    from .samplers.api import sample

    torch.set_num_threads(1)
    target = compile_expr(leaves_expr(k))
    sample(target, "ula", n=min(n, 100), seed=0, progress=False, **WORKLOAD)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = sample(target, "ula", n=n, seed=0, progress=False, **WORKLOAD)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"leaves": k, "N": n, "nfe": result.diagnostics["nfe"], "seconds": result.diagnostics["wall_time"],
            "peak RSS growth (MiB)": (peak - before) / 1024}


def _measure_in_subprocess(k: int, n: int) -> dict:
    code = f"import json; from rrrdsl.bench import measure_point; print(json.dumps(measure_point({k}, {n})))"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def hand_written_ula(n: int, seed: int = 0) -> tuple[torch.Tensor, float, int]:
    """The :data:`WORKLOAD` on ``gmm(means=[[0, 0]], std=1)`` written directly in torch: a DDPM
    step per level (Ho et al., 2020) and ULA steps ``x + eps * score + sqrt(2 eps) z`` at the last
    ten levels, calling the same oracle's ``score`` that the compiled graph calls, so that the
    difference in time is the overhead of the compiled graph and the driver alone.

    Returns the samples, the wall time and the gradient evaluations per particle.
    """
    from .models.registry import resolve

    oracle_model = resolve(leaves_expr(1))
    alpha_bar = oracle_model.schedule.alpha_bar.to(torch.float32)
    generator = torch.Generator().manual_seed(seed)
    eps = WORKLOAD["step_size"]
    score = oracle_model.score

    start = time.perf_counter()
    nfe = 0
    x = torch.randn(n, 2, generator=generator)
    last = oracle_model.schedule.num_levels - 1
    for t in range(last - 1, -1, -1):
        beta = 1 - alpha_bar[t + 1] / alpha_bar[t]
        mean = (x + beta * score(x, t + 1)) / (1 - beta).sqrt()
        x = mean + beta.sqrt() * torch.randn(n, 2, generator=generator)
        nfe += 1
        if t <= 9:
            for _ in range(WORKLOAD["steps"]):
                x = x + eps * score(x, t) + math.sqrt(2 * eps) * torch.randn(n, 2, generator=generator)
                nfe += 1
    return x, time.perf_counter() - start, nfe


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx = torch.tensor([math.log(v) for v in xs], dtype=torch.float64)
    ly = torch.tensor([math.log(v) for v in ys], dtype=torch.float64)
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


def affine_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b x``: the fixed cost and the cost per unit of ``x``."""
    x = torch.tensor(list(xs), dtype=torch.float64)
    y = torch.tensor(list(ys), dtype=torch.float64)
    xc = x - x.mean()
    b = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    return float(y.mean()) - b * float(x.mean()), b


def scaling_rows(
    config: ScalingConfig, measure: Callable[[int, int], dict] = _measure_in_subprocess, repeats: int = 3
) -> tuple[list[dict], list[dict]]:
    """Measurements against N (one leaf) and against leaves (``config.leaves_n`` particles); each
    point is the fastest of ``repeats`` fresh runs (the least disturbed by other load)."""

    def best(k: int, n: int) -> dict:
        return min((measure(k, n) for _ in range(repeats)), key=lambda row: row["seconds"])

    by_n = [best(1, n) for n in config.particles]
    by_k = [best(k, config.leaves_n) for k in config.leaves]
    return by_n, by_k


def scaling_fits(by_n: Sequence[dict], by_k: Sequence[dict], config: ScalingConfig) -> list[dict]:
    """Log-log slopes of wall time and memory over the upper ranges named in ``config``."""
    fits = []
    for axis, rows, key, lower in (("N", by_n, "N", config.fit_from_particles), ("leaves", by_k, "leaves", config.fit_from_leaves)):
        upper = [r for r in rows if r[key] >= lower]
        for quantity in ("seconds", "peak RSS growth (MiB)"):
            usable = [r for r in upper if r[quantity] > 0]
            slope = loglog_slope([r[key] for r in usable], [r[quantity] for r in usable]) if len(usable) >= 2 else math.nan
            fixed, per_unit = affine_fit([r[key] for r in rows], [r[quantity] for r in rows]) if len(rows) >= 2 else (math.nan, math.nan)
            fits.append({"against": axis, "quantity": quantity, "fit range": f"{lower}..{upper[-1][key]}",
                         "points": len(usable), "slope": slope, "within 0.9..1.1": 0.9 <= slope <= 1.1,
                         "affine a (all points)": fixed, "affine b (per particle or leaf)": per_unit})
    return fits


def scaling_figure(by_n: Sequence[dict], by_k: Sequence[dict]):
    """Log-log plots of wall time and peak-RSS growth against N and against leaves."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, rows, key in zip(figure.subplots(1, 2), (by_n, by_k), ("N", "leaves")):
        xs = [r[key] for r in rows]
        ax.loglog(xs, [r["seconds"] for r in rows], "o-", label="wall time (s)")
        memory = [(r[key], r["peak RSS growth (MiB)"]) for r in rows if r["peak RSS growth (MiB)"] > 0]
        if memory:
            ax.loglog(*zip(*memory), "s--", label="peak RSS growth (MiB)")
        ax.set_xlabel(key)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def run_scaling(config: ScalingConfig, out: Path, command: str) -> int:
    """Write ``scaling.md`` and ``scaling.png``."""
    from .compiler import compile as compile_expr
    from .plot import save_figure
    from .samplers.api import sample

    by_n, by_k = scaling_rows(config)
    fits = scaling_fits(by_n, by_k, config)
    overhead = []
    for n in sorted({min(config.particles[-1], 10_000), config.leaves_n}):
        _, hand_seconds, hand_nfe = hand_written_ula(n)
        compiled = sample(compile_expr(leaves_expr(1)), "ula", n=n, seed=0, progress=False, **WORKLOAD)
        overhead.append({"N": n, "NFE (hand)": hand_nfe, "NFE (rrrdsl)": compiled.diagnostics["nfe"],
                         "hand-written torch loop (s)": hand_seconds, "rrrdsl.sample (s)": compiled.diagnostics["wall_time"],
                         "ratio": compiled.diagnostics["wall_time"] / hand_seconds})
    lines = [
        "# Scaling: wall time and memory against particles and leaves",
        "",
        *provenance(command),
        f"- workload: `rrrdsl.sample(target, \"ula\", n=N, **{WORKLOAD})`: a DDPM step at every one of the 100 "
        "levels and 10 ULA steps at each of the last ten, fixed step size, no adaptation "
        f"({by_n[0]['nfe']:.0f} gradient evaluations per particle)",
        "- targets: a product of k distinct Gaussian leaves `gmm(means=[[0.05 i, -0.05 i]], std=1)`, i = 0..k-1 "
        f"(k = 1 for the N sweep; N = {config.leaves_n} for the leaves sweep)",
        "- each point: the fastest of three runs, each in a fresh python process",
        "- memory: growth of the process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) "
        "over the run, each point in a fresh python process after a 100-particle warm-up run; tracemalloc "
        "is not used because it does not see torch's allocator. RSS grows in pages, so small runs read 0",
        "- slopes: least squares on log-log axes over the upper range given (below it the run is bound by "
        "per-call python overhead, which does not grow with N); the affine fit `seconds = a + b x` over all "
        "points separates that fixed cost `a` from the cost `b` per particle or per leaf",
        "",
        "## Against N",
        "",
        *markdown_table(by_n),
        "",
        "## Against leaves",
        "",
        *markdown_table(by_k),
        "",
        "## Fitted slopes",
        "",
        *markdown_table(fits),
        "",
        "## Overhead of the compiled graph",
        "",
        "The same workload on one Gaussian leaf, once through `rrrdsl.sample` (compiled graph, kernel "
        "contract, annealed driver with per-level diagnostics) and once as a hand-written torch loop "
        "(`rrrdsl.bench.hand_written_ula`: the same oracle's score, plain updates).",
        "",
        *markdown_table(overhead),
    ]
    _write_text(out / "scaling.md", lines)
    save_figure(scaling_figure(by_n, by_k), out / "scaling.png", dpi=100)
    print("\n".join(format_row(f) for f in fits))
    print(f"wrote {out / 'scaling.md'} and {out / 'scaling.png'}")
    return 0


# --- command line ------------------------------------------------------------------------------


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench {table,pyro,scaling}`` to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser("bench", help="benchmarks: the 2D table, pyro NUTS, scaling",
                                   description=__doc__.splitlines()[0])
    parser.set_defaults(handler=bench_command)
    which = parser.add_subparsers(dest="bench", metavar="{table,pyro,scaling}", required=True)
    table = which.add_parser("table", help="compositions x samplers x models against exact truth")
    table.add_argument("--quick", action="store_true", help="N = 500, 3 compositions, 4 samplers, exact oracles only")
    pyro = which.add_parser("pyro", help="the 8-Gaussian ring: rrrdsl vs pyro NUTS")
    pyro.add_argument("--n", type=int, default=2000, help="rrrdsl chains (default 2000)")
    scaling = which.add_parser("scaling", help="wall time and memory against N and leaves")
    scaling.add_argument("--quick", action="store_true", help="three N and three leaf counts")
    for sub in (table, pyro, scaling):
        sub.add_argument("--out", type=Path, default=RESULTS, metavar="DIR", help=f"output directory (default {RESULTS})")
    return parser


def bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark named by ``args.bench`` with one torch thread; 0 on success."""
    torch.set_num_threads(1)
    command = _command(args)
    if args.bench == "table":
        return run_table(QUICK if args.quick else FULL, args.out, command)
    if args.bench == "pyro":
        return run_pyro(args.n, args.out, command)
    return run_scaling(SCALING_QUICK if args.quick else SCALING, args.out, command)


def _command(args: argparse.Namespace) -> str:
    flags = [f"--{k}" for k in ("quick",) if getattr(args, k, False)]
    if args.bench == "pyro" and args.n != 2000:
        flags.append(f"--n {args.n}")
    if args.out != RESULTS:
        flags.append(f"--out {args.out}")
    return " ".join(["rrr bench", args.bench, *flags])
