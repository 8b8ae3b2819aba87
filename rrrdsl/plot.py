"""Pictures of compositions and their samples (matplotlib, headless).

Figures are built with :class:`matplotlib.figure.Figure` directly (the Agg canvas), never
through ``pyplot``, so nothing here opens a window or changes the global backend.

=====================  ===========================================================================
figure                 content
=====================  ===========================================================================
:func:`samples_figure` 2D: one panel per sample run, particles over the target's density
                       contours (exact and normalised, :func:`rrrdsl.truth.grid`, for compositions
                       of oracles; the level-0 unnormalised ``log_prob`` of the compiled target
                       otherwise; none for a score-only target); for oracles an exact-sample panel
                       first. 1D: histograms over the density. Image-like targets: a grid of samples.
:func:`diagnostics`    per level: acceptance (mean with the min-max band over chains), step size,
                       SMC's ESS / N
:func:`annealing_strip`  the particles at several levels (the ``snapshots`` option of
                       :func:`rrrdsl.sample`) over the density of that level
:func:`result_figure`  one small panel of a sample alone (no density): what a notebook shows
                       for a :class:`~rrrdsl.samplers.result.SampleResult`
=====================  ===========================================================================

Titles say what was sampled and how: the expression, the sampler, N and NFE per particle.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .lang.ir import Expr

#: grid cells per axis for density contours
RESOLUTION = 160
#: fraction of the samples allowed outside the plotted box (per side and axis)
TAIL = 0.005
#: at most this many points are drawn per panel
MAX_POINTS = 4000
#: samples per image grid
IMAGE_GRID = 8
PANEL = 3.2  # inches per panel


def sample_title(result: Any) -> str:
    """``mala, N=1000, NFE 1000``: how a result was drawn."""
    d = result.diagnostics
    return f"{d['sampler']}, N={result.x.shape[0]}, NFE {d['nfe']:.0f}"


def _shorten(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def image_shape(target: Any) -> Optional[tuple[int, int]]:
    """``(H, W)`` when the target is image-like: its decoder's images, an image canvas, or a square
    dim of at least 16."""
    if getattr(target, "decoder", None) is not None:
        return tuple(target.decoder.shape[1:])  # type: ignore[return-value]
    if len(target.canvas) == 2:
        return tuple(target.canvas)  # type: ignore[return-value]
    side = math.isqrt(target.dim)
    return (side, side) if target.dim >= 16 and side * side == target.dim else None


def _is_exact(target: Any) -> bool:
    """Whether :mod:`rrrdsl.truth` covers the target: a 1D or 2D composition of oracles."""
    from .models.oracles import Oracle

    return target.dim <= 2 and all(isinstance(m, Oracle) for m in target.leaf_models.values())


def _exact_grid(expr: Expr, level: Any, bounds: Optional[np.ndarray], resolution: int) -> Optional[Any]:
    """:func:`rrrdsl.truth.grid`, or None when its grid check fails (mass outside the bounds)."""
    from . import truth
    from .errors import InvalidValueError

    try:
        return truth.grid(expr, level, bounds=None if bounds is None else bounds.tolist(), resolution=resolution)
    except InvalidValueError:
        return None


def _bounds(expr: Expr, target: Any, points: Sequence[torch.Tensor], level: Any = 0) -> np.ndarray:
    """``[D, 2]`` plotting box: the oracles' exact-grid box joined with the bulk of the samples."""
    exact = _exact_grid(expr, level, None, 64) if _is_exact(target) else None
    boxes = [np.asarray(exact.bounds)] if exact is not None else []
    return _join(boxes, points, target.dim)


def _join(boxes: list[np.ndarray], points: Sequence[torch.Tensor], dim: int) -> np.ndarray:
    """The smallest box holding ``boxes`` and the bulk of each of ``points`` (``[-1.5, 1.5]^dim`` for none)."""
    for x in points:
        x = x.detach().cpu().double()
        finite = x[torch.isfinite(x).all(-1)]
        if finite.shape[0]:
            lo, hi = torch.quantile(finite, torch.tensor([TAIL, 1 - TAIL], dtype=torch.float64), dim=0)
            pad = 0.1 * (hi - lo).clamp(min=1e-3)
            boxes.append(torch.stack([lo - pad, hi + pad], -1).numpy())
    if not boxes:
        return np.tile([-1.5, 1.5], (dim, 1))
    stacked = np.stack(boxes)
    return np.stack([stacked[:, :, 0].min(0), stacked[:, :, 1].max(0)], -1)


def density(expr: Expr, target: Any, bounds: np.ndarray, level: Any = 0, resolution: int = RESOLUTION) -> Optional[tuple]:
    """``(axes, density)`` of the target at ``level`` on a grid over ``bounds`` (1D or 2D).

    Exact and normalised (:func:`rrrdsl.truth.grid`) for oracle compositions whose mass lies
    within ``bounds``; otherwise ``exp(log_prob - max)`` of the compiled target (unnormalised);
    None when score-only.
    """
    exact = _exact_grid(expr, level, bounds, resolution) if _is_exact(target) else None
    if exact is not None:
        return tuple(a.numpy() for a in exact.axes), exact.density.numpy()
    if not target.has_energy:
        return None
    axes = [torch.linspace(lo, hi, resolution, dtype=torch.float64) for lo, hi in bounds]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes)).float()
    with torch.no_grad():
        log_p = torch.cat([target.log_prob(chunk, level) for chunk in points.split(8192)]).double()
    log_p = torch.nan_to_num(log_p, nan=-math.inf)
    values = (log_p - log_p.max()).exp().reshape((resolution,) * len(axes))
    return tuple(a.numpy() for a in axes), values.numpy()


def _points(x: torch.Tensor) -> np.ndarray:
    x = x.detach().cpu().double().numpy()
    return x[: MAX_POINTS]


def draw_2d(ax: Any, grid: Optional[tuple], x: Optional[torch.Tensor], bounds: np.ndarray, title: str) -> None:
    if grid is not None:
        (gx, gy), values = grid
        ax.contourf(gx, gy, values.T, levels=12, cmap="Blues")
    if x is not None:
        p = _points(x)
        ax.scatter(p[:, 0], p[:, 1], s=2, c="tab:orange", alpha=0.5, linewidths=0)
    ax.set_xlim(*bounds[0])
    ax.set_ylim(*bounds[1])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def _draw_1d(ax: Any, grid: Optional[tuple], x: Optional[torch.Tensor], bounds: np.ndarray, title: str) -> None:
    if x is not None:
        ax.hist(_points(x)[:, 0], bins=60, range=tuple(bounds[0]), density=True, color="tab:orange", alpha=0.6)
    if grid is not None:
        (gx,), values = grid
        mass = float(values.sum() * (gx[1] - gx[0]))  # normalise an unnormalised density on the grid
        ax.plot(gx, values / max(mass, 1e-300), color="tab:blue")
    ax.set_xlim(*bounds[0])
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def _figure(panels: int, rows: int = 1) -> tuple[Figure, list]:
    cols = math.ceil(panels / rows)
    fig = Figure(figsize=(PANEL * cols, PANEL * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_axis_off()
    return fig, axes[:panels]


def samples_figure(expr: Expr, target: Any, results: Sequence[Any], label: Optional[str] = None) -> Figure:
    """Samples of each result over the target's density (2D/1D), or image grids (image-like).

    With no results the figure shows the density alone; for oracle compositions an exact-sample
    panel comes first.
    """
    label = label or str(expr)
    shape = image_shape(target)
    if shape is not None:
        return images_figure(expr, target, results, label)
    if target.dim > 2:
        # no density picture in more than two dimensions: the first two coordinates
        fig, axes = _figure(max(len(results), 1))
        for ax, result in zip(axes, results):
            x = result.x[:, :2]
            draw_2d(ax, None, x, _bounds(expr, target, [x]), sample_title(result) + " (coordinates 0, 1)")
        fig.suptitle(_shorten(f"{label}: {str(expr)}"), fontsize=10)
        return fig
    panels: list[tuple[str, Optional[torch.Tensor]]] = []
    exact = _is_exact(target) and _exact_grid(expr, 0, None, 64) is not None
    if exact:
        from . import truth

        n = max([r.x.shape[0] for r in results] or [1000])
        panels.append((f"exact, N={n}", truth.exact_samples(expr, n, seed=0).float()))
    panels.extend((sample_title(r), r.x) for r in results)
    if not panels:
        panels.append(("density", None))
    bounds = _bounds(expr, target, [x for _, x in panels if x is not None])
    grid = density(expr, target, bounds)
    fig, axes = _figure(len(panels))
    draw = draw_2d if target.dim == 2 else _draw_1d
    for ax, (title, x) in zip(axes, panels):
        draw(ax, grid, x, bounds, title)
    what = "exact density" if exact else "level-0 density (unnormalised)" if grid is not None else "score-only: no density"
    heading = label if label == str(expr) else f"{label} = {expr}"
    fig.suptitle(_shorten(f"{heading}  [{what}]"), fontsize=10)
    return fig


def images_figure(expr: Expr, target: Any, results: Sequence[Any], label: Optional[str] = None) -> Figure:
    """A grid of the first samples of each result, shown as images of the target's shape (the
    decoded images, :attr:`~rrrdsl.samplers.result.SampleResult.images`, of a latent target).

    The grid has about as many rows as columns of *pixels* (a wide 8x20 tapestry gets fewer
    columns than a square digit), with a one-pixel blank gap between images."""
    shape = image_shape(target) or (1, target.dim)
    fig, axes = _figure(max(len(results), 1))
    for ax, result in zip(axes, results):
        images = result.images if getattr(result, "images", None) is not None else result.x.reshape(-1, 1, *shape)
        _draw_images(ax, images, sample_title(result))
    if not results:
        axes[0].text(0.5, 0.5, "no samples yet", ha="center", va="center")
        axes[0].set_axis_off()
    fig.suptitle(_shorten(f"{label or expr}"), fontsize=10)
    return fig


def mosaic(images: torch.Tensor, gap: float = float("nan")) -> np.ndarray:
    """The first ``IMAGE_GRID ** 2`` of ``images`` ``[k, C, H, W]`` in one picture, ``[rows, cols]``
    for one channel and ``[rows, cols, C]`` for colour (``C`` 3 or 4; else the first channel),
    about as many pixels high as wide, with ``gap`` in the one-pixel lines between images."""
    x = images[: IMAGE_GRID * IMAGE_GRID].detach().cpu().float()
    k, c, h, w = x.shape
    x = x if c in (3, 4) else x[:, :1]
    cols = max(1, min(k, round(math.sqrt(k * (h + 1) / (w + 1)))))
    rows = math.ceil(k / cols)
    tiles = torch.full((rows * cols, x.shape[1], h + 1, w + 1), gap)
    tiles[:k, :, :h, :w] = x
    grid = tiles.reshape(rows, cols, -1, h + 1, w + 1).permute(0, 3, 1, 4, 2).reshape(rows * (h + 1), cols * (w + 1), -1)
    grid = grid[:-1, :-1]
    return (grid[..., 0] if grid.shape[-1] == 1 else grid).numpy()


def _draw_images(ax: Any, images: torch.Tensor, title: str) -> None:
    """The first ``IMAGE_GRID ** 2`` of ``images`` ``[k, C, H, W]`` in one mosaic."""
    ax.imshow(mosaic(images), cmap="gray")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


def images_png(images: torch.Tensor) -> bytes:
    """The first ``IMAGE_GRID ** 2`` decoded images ``[k, C, H, W]`` (values in ``[0, 1]``) as one
    PNG at their own resolution (one pixel per pixel, white lines between them)."""
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    pixels = np.nan_to_num(mosaic(images.clamp(0, 1), gap=1.0), nan=0.0)
    imsave(buffer, pixels, format="png", cmap="gray", vmin=0.0, vmax=1.0)
    return buffer.getvalue()


def result_figure(result: Any, panel: float = PANEL) -> Figure:
    """One small panel of a sample alone (no target, so no density), the notebook's picture of a
    :class:`~rrrdsl.samplers.result.SampleResult`: coordinates 0 and 1 (a histogram in 1D), or
    an image mosaic where the dimension is a square of at least 16."""
    x, title = result.x, sample_title(result)
    side = math.isqrt(x.shape[1])
    fig = Figure(figsize=(panel, panel + 0.3), layout="constrained")
    ax = fig.subplots()
    if getattr(result, "images", None) is not None:
        _draw_images(ax, result.images, title)
    elif x.shape[1] >= 16 and side * side == x.shape[1]:
        _draw_images(ax, x.reshape(-1, 1, side, side), title)
    elif x.shape[1] == 1:
        _draw_1d(ax, None, x, _join([], [x], 1), title)
    else:
        suffix = "" if x.shape[1] == 2 else " (coordinates 0, 1)"
        draw_2d(ax, None, x[:, :2], _join([], [x[:, :2]], 2), title + suffix)
    return fig


def diagnostics(expr: Expr, results: Sequence[Any], label: Optional[str] = None) -> Optional[Figure]:
    """Per-level acceptance (mean, min-max band), step size and SMC ESS / N; one line per result.

    None when no result has any of these (pure reverse diffusion)."""
    quantities = [
        ("acceptance", lambda lv: lv.accept_mean, True),
        ("step size", lambda lv: lv.step_size, False),
        ("ESS / N (SMC)", lambda lv: lv.ess, False),
    ]
    shown = [(name, get, band) for name, get, band in quantities if any(_has_values(get(r.diagnostics["levels"])) for r in results)]
    if not shown:
        return None
    fig, axes = _figure(len(shown))
    for ax, (name, get, band) in zip(axes, shown):
        for i, result in enumerate(results):
            levels = result.diagnostics["levels"]
            values = get(levels).double().numpy()
            if name.startswith("ESS"):
                values = values / result.x.shape[0]
            if not np.isfinite(values).any():
                continue
            t = np.arange(values.shape[0])
            ax.plot(t, values, marker=".", markersize=3, lw=1, color=f"C{i}", label=sample_title(result))
            if band:
                ax.fill_between(t, levels.accept_min.numpy(), levels.accept_max.numpy(), color=f"C{i}", alpha=0.15, lw=0)
        if name == "step size":
            ax.set_yscale("log")
        ax.invert_xaxis()  # the walk goes from the noisiest level down to 0
        ax.set_xlabel("level t", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(_shorten(f"diagnostics per level: {label or expr}"), fontsize=10)
    return fig


def _has_values(values: torch.Tensor) -> bool:
    return bool(torch.isfinite(values).any())


def annealing_strip(expr: Expr, target: Any, result: Any, label: Optional[str] = None) -> Optional[Figure]:
    """The particles at each snapshot level over that level's density (for image-like targets,
    the first particle's image); None without snapshots, in more than 2D unless image-like, and
    for latent targets."""
    snapshots = result.diagnostics.get("snapshots") or {}
    if not snapshots or target.dim > 2 and image_shape(target) is None or getattr(target, "decoder", None) is not None:
        return None  # latents are decoded once, at the end: no strip of them
    levels = sorted(snapshots, reverse=True)
    fig, axes = _figure(len(levels))
    schedule = target.schedule
    for ax, t in zip(axes, levels):
        x = snapshots[t]
        _, sigma = schedule.at(t, torch.empty(1, dtype=torch.float64))
        title = f"level {t} (σ = {float(sigma):.2f})"
        shape = image_shape(target)
        if shape is not None:
            ax.imshow(x[0].detach().cpu().float().reshape(shape).numpy(), cmap="gray")
            ax.set_axis_off()
            ax.set_title(title, fontsize=9)
            continue
        bounds = _bounds(expr, target, [x], t)
        grid = density(expr, target, bounds, t, resolution=96)
        (draw_2d if target.dim == 2 else _draw_1d)(ax, grid, x, bounds, title)
    fig.suptitle(_shorten(f"annealing: {label or expr}, {sample_title(result)}"), fontsize=10)
    return fig


def figures(expr: Expr, target: Any, results: Sequence[Any], label: Optional[str] = None) -> dict[str, Figure]:
    """What the ``plot`` statement writes, by file-name suffix: ``""`` the samples, ``"-diagnostics"``,
    ``"-annealing"`` (of the last result with MCMC or SMC, else the last with snapshots)."""
    out = {"": samples_figure(expr, target, results, label)}
    figure = diagnostics(expr, results, label) if results else None
    if figure is not None:
        out["-diagnostics"] = figure
    with_snapshots = [r for r in results if r.diagnostics.get("snapshots")]
    mcmc = [r for r in with_snapshots if r.diagnostics["sampler"] not in ("reverse", "ddim")]
    chosen = (mcmc or with_snapshots)[-1:]
    strip = annealing_strip(expr, target, chosen[0], label) if chosen else None
    if strip is not None:
        out["-annealing"] = strip
    return out


def png(figure: Figure, dpi: int = 110) -> bytes:
    """``figure`` rendered as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> Path:
    """Render ``figure`` to PNG and write it atomically (:func:`rrrdsl.files.write_atomic`)."""
    from .files import write_atomic

    write_atomic(Path(path), png(figure, dpi))
    return Path(path)
