"""Sample-quality metrics against exact ground truth (:mod:`rrrdsl.truth`).

* :func:`mmd`: maximum mean discrepancy with the RBF kernel
  ``k(a, b) = exp(-|a - b|^2 / (2 h^2))`` (Gretton et al., 2012), the **biased** (V-statistic)
  estimate ``sqrt(mean K_xx + mean K_yy - 2 mean K_xy)``. It is never negative and has a
  positive floor of order ``1/sqrt(n)`` for two samples of the same law, which
  :func:`mmd_floor` measures (exact vs exact), so that ``mmd / floor`` reads "times the noise".
* :func:`sliced_wasserstein`: sliced 2-Wasserstein distance over random directions
  (Rabin et al., 2011; Bonneel et al., 2015).
* :func:`mode_weights`, :func:`mode_weight_error`: mass near given mode centres.
* :func:`mean_log_likelihood`: average log density of samples under the exact normalised target.
* :func:`frechet_distance`: Fréchet distance between Gaussians fitted to two feature sets
  (Heusel et al., 2017); the digits benchmark feeds it the evaluator's features.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

#: rows per block of the kernel matrix (keeps memory at a few MB for any n)
_BLOCK = 2048


def _rbf_mean(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``mean_{i,j} exp(-|x_i - y_j|^2 / (2 h^2))`` computed block by block (float64)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _BLOCK):
        distance2 = torch.cdist(x[start : start + _BLOCK], y) ** 2
        total = total + torch.exp(-distance2 / (2 * bandwidth**2)).sum()
    return total / (x.shape[0] * y.shape[0])


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """Biased RBF MMD between samples ``x`` ``[n, D]`` and ``y`` ``[m, D]`` (see module doc)."""
    squared = _rbf_mean(x, x, bandwidth) + _rbf_mean(y, y, bandwidth) - 2 * _rbf_mean(x, y, bandwidth)
    return math.sqrt(max(float(squared), 0.0))


def mmd_floor(expr, n: int, bandwidth: float, seeds: Iterable[int] = range(5), level=0, bounds=None) -> float:
    """Mean :func:`mmd` between two independent exact samples of size ``n`` (one pair per seed).

    Each pair is ``2 n`` exact draws (:func:`rrrdsl.truth.exact_samples`, same ``bounds``)
    split in halves.
    """
    from . import truth

    return grid_mmd_floor(truth.grid(expr, level, bounds=bounds), n, bandwidth, seeds)


def grid_mmd_floor(grid, n: int, bandwidth: float, seeds: Iterable[int] = range(5)) -> float:
    """:func:`mmd_floor` of a normalised :class:`rrrdsl.truth.Grid` already evaluated."""
    from . import truth

    values = []
    for seed in seeds:
        both = truth.sample_grid(grid, 2 * n, seed)
        values.append(mmd(both[:n], both[n:], bandwidth))
    return sum(values) / len(values)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance ``sqrt(E_θ W_2^2(θ·x, θ·y))`` over random unit directions.

    Samples of different sizes are compared through their quantiles at ``max(n, m)`` levels.
    """
    x, y = x.to(torch.float64), y.to(torch.float64)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    directions = torch.randn((x.shape[1], n_projections), generator=generator, dtype=torch.float64, device=x.device)
    directions = directions / directions.norm(dim=0, keepdim=True)
    px, py = torch.sort(x @ directions, dim=0).values, torch.sort(y @ directions, dim=0).values
    if px.shape[0] != py.shape[0]:
        size = max(px.shape[0], py.shape[0])
        levels = (torch.arange(size, dtype=torch.float64, device=x.device) + 0.5) / size
        px, py = torch.quantile(px, levels, dim=0), torch.quantile(py, levels, dim=0)
    return math.sqrt(float(((px - py) ** 2).mean()))


def mode_weights(x: torch.Tensor, centers: torch.Tensor, radius: float) -> torch.Tensor:
    """Fraction of samples within ``radius`` of each centre (nearest centre wins), shape ``[K]``.

    ``1 - mode_weights(...).sum()`` is the mass away from every mode.
    """
    centers = torch.as_tensor(centers, dtype=torch.float64, device=x.device)
    distance = torch.cdist(x.to(torch.float64), centers)
    nearest = distance.min(dim=1)
    near = nearest.values <= radius
    counts = torch.bincount(nearest.indices[near], minlength=centers.shape[0]).to(torch.float64)
    return counts / x.shape[0]


def mode_weight_error(x: torch.Tensor, reference: torch.Tensor, centers: torch.Tensor, radius: float) -> float:
    """Total-variation distance between the mode weights of ``x`` and ``reference``, counting
    the mass away from every mode as one more bin."""
    wx, wr = mode_weights(x, centers, radius), mode_weights(reference, centers, radius)
    wx, wr = torch.cat([wx, 1 - wx.sum(0, keepdim=True)]), torch.cat([wr, 1 - wr.sum(0, keepdim=True)])
    return 0.5 * float((wx - wr).abs().sum())


def mean_log_likelihood(x: torch.Tensor, expr, level=0, bounds=None) -> float:
    """Mean of ``log p(x)`` under the exact, normalised density of ``expr`` at ``level``.

    ``log p`` is the compiled target's ``log_prob`` minus its log normaliser, integrated on the
    ground-truth grid of :func:`rrrdsl.truth.grid` (midpoint rule, float64; ``bounds`` as there).
    """
    from . import truth
    from .compiler import compile as compile_expr

    target = compile_expr(expr, levels=(level,))
    grid = truth.grid(expr, level=level, bounds=bounds)
    log_z = torch.logsumexp(target.log_prob(grid.points(), level), 0) + math.log(grid.cell_area)
    return float(target.log_prob(x.to(torch.float64), level).mean() - log_z)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (Heusel et al., 2017):
    ``‖μ_a - μ_b‖² + tr(Σ_a + Σ_b - 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})``."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)
