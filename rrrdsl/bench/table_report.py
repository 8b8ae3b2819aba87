"""The 2D table's report: the claims checked row by row, the scatter figure, ``table.md``
(prose in ``templates/table.md``) and ``rrr bench table [--quick]``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import RrrdslError
from .common import BANDWIDTH, FLOOR_SEEDS, RADIUS, TRUTH_SEED, markdown_table, provenance, render, sampler_defaults, write_report
from .table import (
    BAND_DRAWS,
    FULL,
    METROPOLIS,
    MODEL_BOUNDS,
    MODEL_DRAW_SEED,
    MODEL_DRAWS,
    QUICK,
    TableConfig,
    TableRun,
    exact_expr,
    model_expr,
    table_rows,
)


def table_verdicts(rows: Sequence[dict], bands: Optional[dict] = None) -> list[str]:
    """The table's two claims, checked row by row (compositions without truth are named).

    The claim for energy models is checked against the exact target and against the learned
    composition's own density. Against the latter, when reverse diffusion already scores inside
    the band of exact draws (``bands[composition]``, :class:`~rrrdsl.bench.table.ModelTruth`), there is nothing to
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
            corrected = {s: energy[s] for s in METROPOLIS if energy.get(s) is not None}
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

    from .. import truth
    from ..plot import draw_2d

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


def table_report(run: TableRun, config: TableConfig, command: str, seconds: float) -> str:
    """The text of ``table.md``."""
    groups = []
    for composition in dict.fromkeys(r["composition"] for r in run.rows):
        notes = [f"- {kind}: `{model_expr(c, kind)}`" for c in config.compositions if c.name == composition for kind in config.models]
        band = run.bands.get(composition)
        if isinstance(band, tuple):
            notes.append(
                f"- {BAND_DRAWS} independent exact draws of the learned composition's density score MMD/floor (model) "
                f"{band[0]:.3g}-{band[1]:.3g}: a sampler inside that band is as good as exact sampling"
            )
        elif band is not None:
            notes.append(f"- {band}")
        group = [r for r in run.rows if r["composition"] == composition]
        groups.append(render("table-group", composition=composition, notes=notes, rows=markdown_table(group)))
    return render(
        "table",
        provenance=provenance(command),
        n=config.n,
        seed=config.seed,
        seconds=f"{seconds:.0f}",
        truth_seed=TRUTH_SEED,
        bandwidth=BANDWIDTH,
        floor_pairs=len(FLOOR_SEEDS),
        model_bounds=MODEL_BOUNDS,
        band_draws=BAND_DRAWS,
        model_draws=MODEL_DRAWS,
        model_draw_seed=MODEL_DRAW_SEED,
        radius=RADIUS,
        defaults="; ".join(f"{k}: {v}" for k, v in sampler_defaults().items() if k != "ddim"),
        claims=table_verdicts(run.rows, run.bands),
        groups="".join(groups),
    )


def write_table(run: TableRun, config: TableConfig, out: Path, command: str, seconds: float) -> None:
    """Write ``table.md`` and ``table.png`` under ``out`` (each atomically)."""
    from ..plot import save_figure

    write_report(out / "table.md", table_report(run, config, command, seconds))
    save_figure(table_figure(run.rows, run.samples, config), out / "table.png", dpi=80)


def main(args: argparse.Namespace, command: str) -> int:
    """``rrr bench table [--quick]``: run the table and write its results under ``args.out``."""
    config = QUICK if args.quick else FULL
    start = time.perf_counter()
    run = table_rows(config)
    write_table(run, config, args.out, command, time.perf_counter() - start)
    print("\n".join(table_verdicts(run.rows, run.bands)))
    print(f"wrote {args.out / 'table.md'} and {args.out / 'table.png'}")
    return 0
