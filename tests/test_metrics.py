"""Metrics: MMD (biased RBF), its exact-vs-exact floor, sliced Wasserstein, mode weights, log-likelihood, Fréchet distance."""

import math

import pytest
import torch

import rrrdsl
from rrrdsl import metrics


def brute_force_mmd(x, y, h):
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h**2)).mean()  # noqa: E731
    return math.sqrt(float(k(x, x) + k(y, y) - 2 * k(x, y)))


def test_mmd_matches_the_formula_blockwise(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(200, 2, generator=generator, dtype=torch.float64) + 0.3
    expected = brute_force_mmd(x, y, 0.5)
    assert metrics.mmd(x, y, 0.5) == pytest.approx(expected, rel=1e-9)
    monkeypatch.setattr(metrics, "_BLOCK", 7)
    assert metrics.mmd(x, y, 0.5) == pytest.approx(expected, rel=1e-9)
    assert metrics.mmd(x, x, 0.5) == pytest.approx(0.0, abs=1e-6)


def test_mmd_separates_a_shift_from_the_floor():
    expr = rrrdsl.gmm(means=[[0.0, 0.0]], std=0.1)
    floor = metrics.mmd_floor(expr, 500, 0.05, seeds=range(3))
    exact = rrrdsl.truth.exact_samples(expr, 500, seed=7)
    assert 0 < floor < 0.2
    assert metrics.mmd(exact, rrrdsl.truth.exact_samples(expr, 500, seed=8), 0.05) < 2 * floor
    assert metrics.mmd(exact + torch.tensor([0.1, 0.0]), rrrdsl.truth.exact_samples(expr, 500, seed=8), 0.05) > 3 * floor


def test_sliced_wasserstein_of_a_shift():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 1, generator=generator, dtype=torch.float64)
    assert metrics.sliced_wasserstein(x, x + 0.7, 16) == pytest.approx(0.7, rel=1e-9)  # every 1D projection
    x2 = torch.randn(2000, 2, generator=generator, dtype=torch.float64)
    shift = torch.tensor([0.6, 0.8], dtype=torch.float64)  # |v| = 1: E[(θ·v)^2] = 1/2 over directions
    assert metrics.sliced_wasserstein(x2, x2 + shift, 1000, seed=0) == pytest.approx(math.sqrt(0.5), rel=0.05)
    assert metrics.sliced_wasserstein(x2, x2[:1000] + shift, 1000, seed=0) == pytest.approx(math.sqrt(0.5), rel=0.06)


def test_mode_weights_and_error():
    centers = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    x = torch.tensor([[0.01, 0.0], [0.99, 0.0], [1.0, 0.05], [0.5, 0.5]])
    torch.testing.assert_close(metrics.mode_weights(x, centers, 0.1), torch.tensor([0.25, 0.5], dtype=torch.float64))
    reference = torch.tensor([[0.0, 0.0], [0.0, 0.01], [1.0, 0.0], [0.9999, 0.0]])
    # bins (mode 0, mode 1, rest): x (1/4, 1/2, 1/4) vs reference (1/2, 1/2, 0)
    assert metrics.mode_weight_error(x, reference, centers, 0.1) == pytest.approx(0.25)


def test_mean_log_likelihood_of_exact_samples_is_minus_the_entropy():
    std = 0.2
    expr = rrrdsl.gmm(means=[[0.1, -0.3]], std=std)
    n = 4000
    x = rrrdsl.truth.exact_samples(expr, n, seed=0)
    alpha_bar = float(rrrdsl.schedules.default().alpha_bar[0])
    var = alpha_bar * std**2 + 1 - alpha_bar
    entropy = math.log(2 * math.pi * math.e * var)  # 2D isotropic Gaussian
    # the log-likelihood of a 2D Gaussian sample has standard deviation 1 (chi-square with 2 dof / 2)
    assert metrics.mean_log_likelihood(x, expr) == pytest.approx(-entropy, abs=5 / math.sqrt(n))
    assert metrics.mean_log_likelihood(x + 0.3, expr) < -entropy - 0.5


def test_frechet_distance():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, 3, generator=generator), torch.randn(4000, 3, generator=generator)
    assert metrics.frechet_distance(a, b) < 0.02
    # shift by 1 along every axis: distance 3 exactly in the limit
    assert abs(metrics.frechet_distance(a, b + 1) - 3) < 0.1
