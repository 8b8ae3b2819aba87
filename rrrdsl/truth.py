"""Exact ground truth for 1D and 2D compositions of exact oracles (and of learned energies).

The composed density ``p_t(x) ∝ exp(log p_t(x))`` of a compiled graph (:func:`rrrdsl.compile`)
is evaluated in float64 at the centres of a fine grid and normalised numerically (midpoint
rule); :func:`exact_samples` draws from it exactly up to the grid resolution: a cell is chosen
with probability equal to its mass, then a point uniformly inside it.

Bounds are chosen from the oracles: every leaf contributes a box that holds essentially all
of its mass at the level (Gaussian components: ``sqrt(alpha_bar) μ_k ± 8 sqrt(v_k)``; boxes:
``sqrt(alpha_bar) [low, high] ± 8 sigma``), the union of those boxes is evaluated on a coarse grid,
widened about its centre (doubling, up to :data:`WIDENINGS` times) while its border cells hold
more than 1e-6 of the mass (a quotient can put its mass outside every leaf's box:
``box ** 1.3 / box_small ** 0.3`` at level 0 peaks beyond the edge of ``box``, where
``box_small``'s Gaussian tail in the denominator outgrows ``box``'s), the edges where the
composed density is negligible (marginal mass below 1e-12 from each end) are clipped, and the
final grid on the clipped bounds is checked to hold less than 1e-6 of its mass in its border
cells.

A mixture weighs normalised components, as the samplers make it (:mod:`rrrdsl.samplers.normalisers`):
each component that is not an exact oracle is divided by its own mass, integrated on its own grid.

Learned energy models have a log density too (up to a constant), so the same grid gives the
density a composition of *learned* leaves defines: what a sampler of that composition should
return, apart from the models' own error. Their mass cannot be bounded from the leaves, so
learned leaves need explicit ``bounds`` (the border check still applies).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch

from .compiler import AnnealedTarget, compile
from .compiler.plan import Normaliser
from .errors import CompileError, InvalidValueError, ShapeError
from .lang.ir import Expr
from .models.base import Model
from .models.oracles import Box, GaussianMixture, Oracle, OracleMixture

Bounds = tuple[tuple[float, float], ...]
Level = Union[int, str]

#: half-width of a leaf's box, in standard deviations
SPREAD = 8.0
#: mass allowed in the border cells of the grid
BORDER_MASS = 1e-6
#: marginal mass below which a grid edge is clipped away
NEGLIGIBLE = 1e-12
#: cells per axis of the first pass that finds where the density is negligible
COARSE = 128
#: how many times the automatic bounds may double when the coarse grid's border holds mass
WIDENINGS = 4
#: points per evaluation batch
CHUNK = 1 << 16


class Grid(NamedTuple):
    """A normalised density on a regular grid of cell centres.

    ``axes`` holds one ``[R]`` tensor of cell centres per dimension; ``density`` and
    ``log_density`` have shape ``[R]`` (1D) or ``[R, R]`` indexed ``[i, j]`` = ``(axes[0][i],
    axes[1][j])``; ``density.sum() * cell_area == 1``; ``bounds`` are the outer edges.
    """

    axes: tuple[torch.Tensor, ...]
    density: torch.Tensor
    log_density: torch.Tensor
    bounds: Bounds
    cell_area: float
    #: ``log ∫ exp(log p)`` over the grid: the normaliser of the density as compiled
    log_mass: float = 0.0

    def points(self) -> torch.Tensor:
        """The cell centres as ``[R**D, D]``, in the order of ``density.reshape(-1)``."""
        return torch.stack(torch.meshgrid(*self.axes, indexing="ij"), dim=-1).reshape(-1, len(self.axes))


def _extent(m: Model, t: Level) -> torch.Tensor:
    """``[D, 2]``: a box holding essentially all of oracle ``m``'s mass at level ``t``."""
    alpha_bar, sigma = m.schedule.at(t, torch.empty(1, dtype=torch.float64))
    if isinstance(m, GaussianMixture):
        centres = alpha_bar.sqrt() * m.means
        half = SPREAD * m.noised_variances(t).sqrt()
        return torch.stack([(centres - half).min(0).values, (centres + half).max(0).values], dim=-1)
    if isinstance(m, Box):
        r = alpha_bar.sqrt()
        return torch.stack([r * m.low - SPREAD * sigma, r * m.high + SPREAD * sigma], dim=-1)
    if isinstance(m, OracleMixture):
        parts = torch.stack([_extent(c, t) for c in m.components])
        return torch.stack([parts[..., 0].min(0).values, parts[..., 1].max(0).values], dim=-1)
    raise CompileError(f"ground truth cannot bound the oracle {type(m).__name__}")


def _target(expr: Expr, level: Level, bounded: bool) -> AnnealedTarget:
    target = compile(expr, levels=(level,))  # proper at this level is enough
    learned = [str(leaf) for leaf, m in target.leaf_models.items() if not isinstance(m, Oracle)]
    if learned and not bounded:
        raise CompileError(
            f"automatic grid bounds need exact oracles, but {', '.join(learned)} is a learned model",
            hint='pass bounds=[(low, high), ...] for learned leaves, or use oracle("..."), gmm(...), box(...)',
        )
    unnormalised = [str(leaf) for leaf, m in target.leaf_models.items() if not m.has_energy]
    if unnormalised:
        raise CompileError(
            f"a density on a grid needs energies, but {', '.join(unnormalised)} has only a score",
            hint='use the energy parameterisation: model("...", param="energy")',
        )
    if target.dim > 2:
        raise ShapeError(f"ground truth on a grid covers 1D and 2D targets; this one has dim {target.dim}")
    return target


def _auto_bounds(target: AnnealedTarget, t: Level) -> torch.Tensor:
    """``[D, 2]``: the union of the leaves' boxes, placed on the canvas through their crops."""
    lows = torch.full((target.dim,), math.inf, dtype=torch.float64)
    highs = -lows
    for atom in target.atoms:
        box = _extent(atom.model, t)
        idx = list(atom.frame.positions())
        lows[idx] = torch.minimum(lows[idx], box[:, 0])
        highs[idx] = torch.maximum(highs[idx], box[:, 1])
    return torch.stack([lows, highs], dim=-1)


def _evaluate(target: AnnealedTarget, bounds: torch.Tensor, t: Level, resolution: int) -> Grid:
    width = (bounds[:, 1] - bounds[:, 0]) / resolution
    if not (torch.isfinite(bounds).all() and (width > 0).all() and math.isfinite(float(width.prod())) and float(width.prod()) > 0):
        raise InvalidValueError(
            f"a grid on {bounds.tolist()} cannot be drawn in float64: its cells would have a width of zero or infinity",
            hint="place the oracles within about 1e15 of their size from the origin",
        )
    axes = tuple(lo + (torch.arange(resolution, dtype=torch.float64) + 0.5) * h for (lo, _), h in zip(bounds.tolist(), width.tolist()))
    cell_area = float(width.prod())
    grid = Grid(axes, torch.empty(0), torch.empty(0), tuple(map(tuple, bounds.tolist())), cell_area)
    with torch.no_grad():
        log_p = torch.cat([target.log_prob(chunk, t) for chunk in grid.points().split(CHUNK)])
    if not torch.isfinite(log_p).any():
        raise InvalidValueError("the composed density is zero everywhere on the grid", hint="check the bounds or the composition")
    log_p = torch.nan_to_num(log_p, nan=-math.inf)
    log_mass = float(torch.logsumexp(log_p, 0)) + math.log(cell_area)
    log_density = (log_p - log_mass).reshape((resolution,) * target.dim)
    return grid._replace(density=log_density.exp(), log_density=log_density, log_mass=log_mass)


def _normalise_exactly(target: AnnealedTarget, level: Level, bounds: Optional[Sequence[Sequence[float]]], resolution: int) -> None:
    """Attach to each unnormalised mixture component (:attr:`AnnealedTarget.unnormalised`) its
    normaliser at ``level``, integrated on its own grid, so that the mixture's weights mean what
    they say, as the samplers make them (:mod:`rrrdsl.samplers.normalisers`). ``bounds`` serve
    a component on the whole canvas."""
    if not target.unnormalised:
        return
    if not isinstance(level, int):
        raise CompileError(
            f"ground truth of a mixture with unnormalised components is defined at the noisy levels, not at {level!r}",
            hint="pass an integer level",
        )
    tables = {}
    for term, shape in target.unnormalised.items():
        table = torch.full((target.num_levels,), math.nan, dtype=torch.float64)
        table[level] = grid(term, level, bounds if shape == target.canvas else None, resolution).log_mass
        tables[term] = Normaliser(table, torch.zeros_like(table), "grid quadrature")
    target.normalise(tables)


def _border_mass(grid: Grid) -> float:
    mass = grid.density * grid.cell_area
    inner = mass[(slice(1, -1),) * mass.dim()]
    return float(mass.sum() - inner.sum())


def _clip(grid: Grid) -> torch.Tensor:
    """``[D, 2]`` bounds without the edge slabs whose mass is negligible, padded by two cells."""
    mass = grid.density * grid.cell_area
    out = []
    for d, axis in enumerate(grid.axes):
        marginal = mass.sum(dim=[k for k in range(mass.dim()) if k != d]) if mass.dim() > 1 else mass
        keep = torch.nonzero((marginal.cumsum(0) > NEGLIGIBLE) & (marginal.flip(0).cumsum(0).flip(0) > NEGLIGIBLE)).reshape(-1)
        h = float(axis[1] - axis[0])
        out.append([float(axis[int(keep[0])]) - 2.5 * h, float(axis[int(keep[-1])]) + 2.5 * h])
    return torch.tensor(out, dtype=torch.float64)


def grid(expr: Expr, level: Level = 0, bounds: Optional[Sequence[Sequence[float]]] = None, resolution: int = 512) -> Grid:
    """The normalised density of a 1D or 2D composition of oracles on a ``resolution``-per-axis grid.

    Parameters
    ----------
    expr
        An energy graph whose leaves are exact oracles, or learned energy models (then with
        ``bounds``).
    level
        The noise level (int) or ``"clean"`` for the clean oracles.
    bounds
        ``[(low, high)]`` per dimension; chosen automatically for oracles when omitted (module
        docstring).
    resolution
        Cells per axis.

    Raises
    ------
    CompileError, ShapeError
        For learned leaves without ``bounds``, score-only leaves, or more than two dimensions
        (and every compile check).
    InvalidValueError
        When the grid holds more than ``BORDER_MASS`` in its border cells.
    """
    if not isinstance(resolution, int) or resolution < 8:
        raise InvalidValueError(f"resolution must be an integer >= 8, got {resolution!r}")
    target = _target(expr, level, bounded=bounds is not None)
    _normalise_exactly(target, level, bounds, resolution)
    if bounds is None:
        box = _auto_bounds(target, level)
        coarse = _evaluate(target, box, level, COARSE)
        for _ in range(WIDENINGS):
            if _border_mass(coarse) < BORDER_MASS:
                break
            centre, half = box.mean(-1, keepdim=True), (box[:, 1:] - box[:, :1]) / 2
            box = torch.cat([centre - 2 * half, centre + 2 * half], dim=-1)
            coarse = _evaluate(target, box, level, COARSE)
        box = _clip(coarse)
    else:
        box = torch.as_tensor(bounds, dtype=torch.float64).reshape(target.dim, 2)
        if not (box[:, 0] < box[:, 1]).all():
            raise InvalidValueError(f"bounds must be (low, high) pairs with low < high, got {bounds!r}")
    out = _evaluate(target, box, level, resolution)
    border = _border_mass(out)
    if border >= BORDER_MASS:
        raise InvalidValueError(
            f"the grid holds {border:.3g} of the mass in its border cells (must be < {BORDER_MASS:g})",
            hint="widen bounds=" if bounds is not None else "the composition has mass far outside its oracles; pass bounds=",
        )
    return out


def exact_samples(
    expr: Expr, n: int, seed: int, level: Level = 0, bounds: Optional[Sequence[Sequence[float]]] = None
) -> torch.Tensor:
    """``n`` exact samples ``[n, D]`` (float64) of a 1D or 2D composition (see :func:`grid`).

    A cell of :func:`grid` is drawn with probability equal to its mass, then a point uniformly
    inside it; the only approximation is the grid resolution.
    """
    return sample_grid(grid(expr, level, bounds=bounds), n, seed)


def sample_grid(g: Grid, n: int, seed: int) -> torch.Tensor:
    """``n`` draws ``[n, D]`` (float64) from a normalised :class:`Grid`: a cell with probability
    equal to its mass, then a point uniformly inside it."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.multinomial(g.density.reshape(-1) * g.cell_area, n, replacement=True, generator=generator)
    centres = g.points()[cells]
    widths = torch.tensor([float(a[1] - a[0]) for a in g.axes], dtype=torch.float64)
    return centres + (torch.rand(n, len(g.axes), generator=generator, dtype=torch.float64) - 0.5) * widths
