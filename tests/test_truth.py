"""Ground truth on a grid: normalisation, exact-sample moments of a Gaussian product, mode
masses of a ring product, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from rrrdsl import truth
from rrrdsl.errors import CompileError, InvalidValueError, ShapeError
from rrrdsl.lang.ir import gmm, model, oracle
from rrrdsl.models.registry import register_model, resolve
from rrrdsl.zoo.toy2d.models import make_model
from rrrdsl.models.oracles import GaussianMixture
from rrrdsl.schedules import default

MU = torch.tensor([0.4, -0.3], dtype=torch.float64)
STD = torch.tensor([0.3, 0.6], dtype=torch.float64)
PRODUCT = oracle("gauss") * gmm(means=[MU.tolist()], std=[STD.tolist()])


def product_moments(level) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variances of N(0, 0.5^2 I) x N(MU, diag STD^2), both noised to ``level``."""
    alpha_bar = torch.tensor(1.0, dtype=torch.float64) if level == "clean" else default().alpha_bar[level]
    precision_gauss = 1 / (alpha_bar * 0.25 + 1 - alpha_bar)
    precision_gmm = 1 / (alpha_bar * STD**2 + 1 - alpha_bar)
    var = 1 / (precision_gauss + precision_gmm)
    return var * precision_gmm * alpha_bar.sqrt() * MU, var


@pytest.mark.parametrize("level", [0, 60, "clean"])
def test_grid_is_normalised_and_equals_the_analytic_product(level) -> None:
    g = truth.grid(PRODUCT, level)
    assert float(g.density.sum() * g.cell_area) == pytest.approx(1.0, abs=1e-12)
    mean, var = product_moments(level)
    exact = GaussianMixture([mean.tolist()], [var.sqrt().tolist()]).log_prob(g.points(), "clean").reshape(g.density.shape)
    peak = g.density > 1e-3 * g.density.max()
    torch.testing.assert_close(g.log_density[peak], exact[peak], rtol=0, atol=1e-4)  # midpoint-rule error


def test_grid_in_1d() -> None:
    g = truth.grid(gmm(means=[[0.3], [-0.4]], std=[0.1, 0.2]) * gmm(means=[[0.0]], std=0.5), "clean", resolution=2048)
    assert g.density.shape == (2048,)
    assert float(g.density.sum() * g.cell_area) == pytest.approx(1.0, abs=1e-12)
    assert float(g.density[0] + g.density[-1]) * g.cell_area < 1e-6


def moments_agree(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, z: float = 5.0) -> bool:
    """Sample mean and variance within ``z`` standard errors of independent draws."""
    n = samples.shape[0]
    mean_ok = ((samples.mean(0) - mean).abs() <= z * (var / n).sqrt()).all()
    var_ok = ((samples.var(0) - var).abs() <= z * var * math.sqrt(2 / (n - 1))).all()
    return bool(mean_ok and var_ok)


@pytest.mark.parametrize("level", [0, "clean"])
def test_exact_samples_match_the_analytic_moments(level) -> None:
    samples = truth.exact_samples(PRODUCT, 20000, seed=1, level=level)
    assert samples.shape == (20000, 2) and samples.dtype == torch.float64
    mean, var = product_moments(level)
    assert moments_agree(samples, mean, var)
    # the same check rejects a wrong target: the first factor alone
    assert not moments_agree(samples, torch.zeros(2, dtype=torch.float64), torch.full((2,), 0.25, dtype=torch.float64))


def test_mode_masses_of_a_ring_product() -> None:
    """ring * N(m, s^2 I) at the clean level is a GMM with weights ∝ N(μ_k; m, (0.03^2 + s^2) I)."""
    m, s = torch.tensor([0.5, 0.1], dtype=torch.float64), 0.3
    expr = oracle("ring") * gmm(means=[m.tolist()], std=s)
    ring = resolve(oracle("ring"))
    log_w = -((ring.means - m) ** 2).sum(-1) / (2 * (ring.std[:, 0] ** 2 + s**2))
    weights = torch.softmax(log_w, 0)
    n = 20000
    samples = truth.exact_samples(expr, n, seed=2, level="clean")
    nearest = torch.cdist(samples, ring.means).argmin(-1)
    fractions = torch.bincount(nearest, minlength=8).double() / n
    se = (weights * (1 - weights) / n).sqrt()
    assert ((fractions - weights).abs() <= 5 * se + 1e-4).all()
    # the grid's own mode masses are exact up to the midpoint rule
    g = truth.grid(expr, "clean")
    cell_mass = (g.density * g.cell_area).reshape(-1)
    grid_masses = torch.zeros(8, dtype=torch.float64).index_add_(0, torch.cdist(g.points(), ring.means).argmin(-1), cell_mass)
    torch.testing.assert_close(grid_masses, weights, rtol=0, atol=1e-4)
    # a deliberately wrong weighting (equal modes) is rejected by the same check
    assert not ((fractions - 1 / 8).abs() <= 5 * se + 1e-4).all()


def test_errors() -> None:
    with pytest.raises(ShapeError, match="1D and 2D targets; this one has dim 3"):
        truth.grid(gmm(means=[[0.0, 0.0, 0.0]]))
    register_model("_test_truth_learned", lambda schedule: make_model("energy", 2, schedule or default(), width=8, depth=1), "an untrained net")
    with pytest.raises(CompileError, match=r'automatic grid bounds need exact oracles, but model\("_test_truth_learned"\) is a learned model'):
        truth.grid(model("_test_truth_learned") * oracle("gauss"))
    register_model("_test_truth_score", lambda schedule: make_model("score", 2, schedule or default(), width=8, depth=1), "an untrained net")
    with pytest.raises(CompileError, match=r'needs energies, but model\("_test_truth_score"\) has only a score'):
        truth.grid(model("_test_truth_score"), 0, bounds=[(-3, 3), (-3, 3)])
    with pytest.raises(InvalidValueError, match="border cells"):
        truth.grid(oracle("gauss"), 0, bounds=[(-0.5, 0.5), (-0.5, 0.5)], resolution=64)


def test_level_restricted_truth_of_a_box_quotient():
    """``box ** 1.3 / box_small ** 0.3`` is infinite at the clean level but proper at level 0,
    where its mass sits outside ``box`` (box_small's Gaussian tail in the denominator outgrows
    box's): the automatic bounds widen to hold it, and the clean level is still refused."""
    from rrrdsl import compile, parse_expr
    from rrrdsl.errors import CompileError, InvalidValueError

    quotient = parse_expr('oracle("box") ** 1.3 / oracle("box_small") ** 0.3')
    with pytest.raises(CompileError, match="'clean'"):
        compile(quotient)
    compile(quotient, levels=(0, 5))
    with pytest.raises(InvalidValueError, match="not a level"):
        compile(quotient, levels=(100,))
    # box's own extent (0.7 + 8 sigma_0) leaves 6e-6 of the mass in the border cells: widened
    g = truth.grid(quotient, level=0, resolution=128)
    assert g.bounds[0][1] > 1.0
    x = truth.exact_samples(quotient, 2000, seed=0, level=0)
    assert (x.abs() > 0.7).all(-1).float().mean() > 0.99  # the corners just outside box hold the mass
    with pytest.raises(CompileError, match="'clean'"):
        truth.grid(quotient, level="clean")


def test_learned_energies_on_a_grid_with_bounds() -> None:
    """A composition with a learned leaf is a density on a grid once bounds are given: the grid
    is normalised and proportional to ``exp(log_prob)`` of the compiled composition."""
    from rrrdsl import compile

    torch.manual_seed(0)
    register_model("_test_truth_energy", lambda schedule: make_model("energy", 2, schedule or default(), width=8, depth=1), "an untrained net")
    expr = model("_test_truth_energy") * oracle("gauss")
    g = truth.grid(expr, 0, bounds=[(-2.0, 2.0), (-2.0, 2.0)], resolution=64)
    assert float(g.density.sum()) * g.cell_area == pytest.approx(1.0)
    points = g.points()
    log_p = compile(expr).log_prob(points, 0).double()
    ratio = (g.log_density.reshape(-1) - log_p).detach()
    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), rtol=0, atol=1e-4)
    x = truth.exact_samples(expr, 1000, seed=0, bounds=[(-2.0, 2.0), (-2.0, 2.0)])
    assert x.shape == (1000, 2) and (x.abs() <= 2.0).all()
