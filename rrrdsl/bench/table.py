"""The 2D composition table: compositions x samplers x models against exact truth.

Compositions x samplers x models at (at most) equal NFE per particle, against exact samples of
the oracle composition at level 0 (:func:`rrrdsl.truth.exact_samples`), reproducing the 2D
experiment of Du et al. (2023), "Reduce, Reuse, Recycle" (Table 1 / Figure 4). Metrics
(:mod:`rrrdsl.metrics`): mean log-likelihood under the exact normalised target; RBF MMD
(Gretton et al., 2012; bandwidth :data:`~rrrdsl.bench.common.BANDWIDTH`) divided by the
exact-vs-exact floor; sliced 2-Wasserstein (Bonneel et al., 2015); mode-weight error (total
variation over the ring modes) where the target has modes. This module runs the cells;
:mod:`rrrdsl.bench.table_report` writes ``table.md`` and ``table.png``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import torch

from ..errors import RrrdslError
from ..lang.ir import Expr, gmm, model, oracle
from .common import BANDWIDTH, FLOOR_SEEDS, RADIUS, TRUTH_SEED, first_line, format_row, ring_centers

#: the model kinds of the table: how leaves are built and which samplers apply
MODEL_KINDS = ("exact", "energy", "score", "score + MH")
#: grid bounds of the learned energies' own composed density (every shipped composition has
#: less than 1e-7 of its level-0 mass beyond |x| = 1.2)
MODEL_BOUNDS = ((-1.5, 1.5), (-1.5, 1.5))

Leaf = Callable[[str], Expr]

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
#: the Metropolis-corrected samplers, which the claims compare with reverse diffusion
METROPOLIS = ("MALA", "HMC", "NUTS", "SMC (MALA)", "SMC (HMC)")

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
    from .. import truth
    from ..metrics import mean_log_likelihood, mmd_floor

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
    from .. import truth
    from ..metrics import grid_mmd_floor, mmd

    grid = truth.grid(expr, 0, bounds=MODEL_BOUNDS)
    samples = truth.sample_grid(grid, n, TRUTH_SEED)
    floor = grid_mmd_floor(grid, n, BANDWIDTH, FLOOR_SEEDS)
    draws = [mmd(truth.sample_grid(grid, n, MODEL_DRAW_SEED + 1 + k), samples, BANDWIDTH) / floor for k in range(BAND_DRAWS)]
    return ModelTruth(grid, samples, floor, (min(draws), max(draws)))


def metric_row(x: torch.Tensor, truth: Truth) -> Metrics:
    """Every metric of samples ``x`` against ``truth`` (NaN when ``x`` is not finite)."""
    from ..metrics import mean_log_likelihood, mmd, mode_weight_error, sliced_wasserstein

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
    from .. import truth as grids
    from ..compiler import compile as compile_expr

    run = TableRun([], {}, {})
    for composition in config.compositions:
        truths: dict[Expr, Any] = {}
        for kind in config.models:
            reference = exact_expr(composition, kind)
            if reference not in truths:
                try:
                    truths[reference] = make_truth(reference, config.n, composition.has_modes)
                except RrrdslError as error:
                    truths[reference] = f"no exact truth: {first_line(error)}"
            truth = truths[reference]
            if isinstance(truth, Truth):
                run.samples[(composition.name, kind, "exact")] = truth.samples
            model_truth = None
            if kind == "energy":
                try:
                    model_truth = make_model_truth(model_expr(composition, kind), config.n)
                except RrrdslError as error:
                    run.bands[composition.name] = f"no density of the learned composition: {first_line(error)}"
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
                target, missing = None, f"model missing: {first_line(error)}"
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
    from ..samplers.api import sample

    try:
        return sample(target, spec.sampler, n=config.n, seed=config.seed, **_sample_options(kind, spec))
    except RrrdslError as error:
        return f"sampler refused: {first_line(error)}"


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


def _model_mmd(x: torch.Tensor, model_truth: Optional[ModelTruth]) -> Optional[float]:
    """MMD/floor of ``x`` against the learned composition's own density (energy rows only)."""
    from ..metrics import mmd

    if model_truth is None or not torch.isfinite(x).all():
        return None
    return mmd(x, model_truth.samples, BANDWIDTH) / model_truth.floor


def _empty_metrics() -> dict:
    return dict.fromkeys(("mean log-lik", "exact log-lik", "MMD/floor", "MMD/floor (model)", "sliced W2", "mode-weight err"))


def _missing(row: dict, why: str) -> dict:
    return {**row, "nfe": None, "seconds": None, **_empty_metrics(), "status": why}


