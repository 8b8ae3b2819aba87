"""Exact oracles against independent ground truth.

* ``log_prob`` at level t vs numerical convolution of the clean density with the Gaussian
  kernel ``N(x; sqrt(alpha_bar_t) y, sigma_t^2 I)`` (composite Gauss-Legendre quadrature in y,
  summed in log space), in 1D, 2D and 3D;
* the log normal-interval mass vs 50-digit mpmath;
* ``score`` vs autograd of ``log_prob`` and central finite differences;
* normalisation on a 2D grid, exact sampling vs analytic moments, per-chain levels, float32.

Deliberately broken oracles (a wrong noised variance, a missing ``sqrt(alpha_bar)`` in the box
normaliser) are fed to the same convolution check, which must reject them.
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import torch

from rrrdsl import schedules
from rrrdsl.errors import InvalidValueError, ShapeError
from rrrdsl.models.oracles import Box, GaussianMixture, OracleMixture, log_normal_interval

SCHEDULE = schedules.default()
LEVELS = [0, 1, 50, SCHEDULE.num_levels - 1]
F64 = torch.float64


# --- quadrature helpers -----------------------------------------------------------------


def gauss_legendre(lo: float, hi: float, panels: int, order: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite Gauss-Legendre nodes and log weights on ``[lo, hi]``."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    nodes = (0.5 * (edges[:-1] + edges[1:]))[:, None] + half * x
    return torch.tensor(nodes.ravel()), torch.tensor(np.log(half * w).ravel())


def product_grid(axes: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor-product nodes ``[M, D]`` and log weights ``[M]`` of 1D rules."""
    nodes = torch.cartesian_prod(*[a[0] for a in axes]).reshape(-1, len(axes))
    log_w = torch.cartesian_prod(*[a[1] for a in axes]).reshape(-1, len(axes)).sum(-1)
    return nodes, log_w


def convolve(log_q0: torch.Tensor, nodes: torch.Tensor, log_w: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
    """``log ∫ q_0(y) N(x; sqrt(ab) y, sigma^2 I) dy`` by quadrature, at points ``x [N, D]``."""
    ab = SCHEDULE.alpha_bar[t]
    var = 1.0 - ab
    d = nodes.shape[1]
    sq = ((x[:, None, :] - ab.sqrt() * nodes[None]) ** 2).sum(-1)
    log_kernel = -0.5 * sq / var - 0.5 * d * torch.log(2 * math.pi * var)
    return torch.logsumexp(log_w + log_q0 + log_kernel, dim=-1)


def clean_gmm_log_prob(means, std, weights, y):
    """Independent clean GMM density (torch.distributions)."""
    dist = torch.distributions
    mix = dist.Categorical(probs=torch.as_tensor(weights, dtype=F64), validate_args=False)
    normal = dist.Normal(torch.as_tensor(means, dtype=F64), torch.as_tensor(std, dtype=F64), validate_args=False)
    comp = dist.Independent(normal, 1, validate_args=False)
    return dist.MixtureSameFamily(mix, comp, validate_args=False).log_prob(y)


def windowed_convolution(log_q0, support, feature, x, t):
    """``log q_t`` at each point of ``x`` by quadrature over ``y`` in ``support`` (per-axis
    ``(lo, hi)``, outside which ``q_0 = 0``), cut to the window ``x / r ± 12 sigma / r`` where
    the kernel is non-negligible, with panels no wider than ``feature`` (the finest length
    scale of ``q_0``) or three kernel widths ``sigma / r``. Points must lie within 12 sigma
    of the support."""
    r, s = SCHEDULE.alpha_bar[t].sqrt().item(), SCHEDULE.sigma[t].item()
    width = 3 * min(feature, s / r)
    out = []
    for point in x:
        axes = []
        for (lo, hi), xd in zip(support, point.tolist()):
            a, b = max(lo, xd / r - 12 * s / r), min(hi, xd / r + 12 * s / r)
            axes.append(gauss_legendre(a, b, max(2, math.ceil((b - a) / width))))
        nodes, log_w = product_grid(axes)
        out.append(convolve(log_q0(nodes), nodes, log_w, point[None], t)[0])
    return torch.stack(out)


def box_convolution(low, high, x, t):
    log_volume = sum(math.log(b - a) for a, b in zip(low, high))
    support = list(zip(low, high))
    return windowed_convolution(lambda y: torch.full(y.shape[:1], -log_volume, dtype=F64), support, math.inf, x, t)


def gmm_convolution(means, std, weights, x, t, lo, hi):
    feature = float(torch.as_tensor(std, dtype=F64).min())
    log_q0 = lambda y: clean_gmm_log_prob(means, std, weights, y)  # noqa: E731
    return windowed_convolution(log_q0, [(lo, hi)] * len(means[0]), feature, x, t)


def test_quadrature_helpers_are_exact_on_a_gaussian():
    nodes, log_w = gauss_legendre(-10, 10, 40)
    mass = torch.logsumexp(log_w - 0.5 * nodes**2 - 0.5 * math.log(2 * math.pi), 0).exp()
    assert abs(mass.item() - 1.0) < 1e-12


# --- GMM and box vs convolution ------------------------------------------------------------

GMM_1D = dict(means=[[-1.0], [0.5], [2.0]], std=[[0.3], [0.08], [1.0]], weights=[0.2, 0.5, 0.3])


class WrongVarianceGMM(GaussianMixture):
    """Broken on purpose: noised variance ``s^2 + sigma^2`` (forgets to scale s^2 by alpha_bar)."""

    def noised_variances(self, t, device=torch.device("cpu")):
        return super().noised_variances(t, device) + (1 - SCHEDULE.alpha_bar[t]) * self.std.to(device) ** 2


class WrongNormaliserBox(Box):
    """Broken on purpose: normalises by ``b - a`` instead of ``sqrt(alpha_bar) (b - a)``."""

    def _standardise(self, x, t):
        m, h, sigma, _ = super()._standardise(x, t)
        return m, h, sigma, torch.log(self.high - self.low).to(x)


def max_gmm_error(cls, t: int) -> float:
    g = cls(GMM_1D["means"], torch.tensor(GMM_1D["std"], dtype=F64).squeeze(1), GMM_1D["weights"])
    x = torch.linspace(-4, 5, 61, dtype=F64)[:, None]
    ref = gmm_convolution(GMM_1D["means"], GMM_1D["std"], GMM_1D["weights"], x, t, -9.0, 10.0)
    return (g.log_prob(x, t) - ref).abs().max().item()


def max_box_error(cls, low, high, t: int, x: torch.Tensor) -> float:
    return (cls(low, high).log_prob(x, t) - box_convolution(low, high, x, t)).abs().max().item()


@pytest.mark.parametrize("t", LEVELS)
def test_gmm_1d_matches_convolution(t):
    assert max_gmm_error(GaussianMixture, t) < 1e-9


@pytest.mark.parametrize("t", [0, 50])
def test_convolution_check_rejects_wrong_variance(t):
    assert max_gmm_error(WrongVarianceGMM, t) > 1e-4


def _box_points_1d(low, high, t):
    """Inside, on the edges and up to 6 sigma_t outside."""
    r, s = SCHEDULE.alpha_bar[t].sqrt().item(), SCHEDULE.sigma[t].item()
    edges = [r * low, r * high]
    offsets = [-6, -3, -1, -0.3, 0, 0.3, 1, 3, 6]
    pts = [e + k * s for e in edges for k in offsets] + list(np.linspace(r * low, r * high, 7))
    return torch.tensor(pts, dtype=F64)[:, None]


@pytest.mark.parametrize("t", LEVELS)
def test_box_1d_matches_convolution(t):
    low, high = [-0.3], [0.5]
    assert max_box_error(Box, low, high, t, _box_points_1d(low[0], high[0], t)) < 1e-9


@pytest.mark.parametrize("t", [0, 50])
def test_convolution_check_rejects_wrong_box_normaliser(t):
    low, high = [-0.3], [0.5]
    assert max_box_error(WrongNormaliserBox, low, high, t, _box_points_1d(low[0], high[0], t)) > 1e-5


@pytest.mark.parametrize("t", LEVELS)
def test_gmm_2d_diagonal_matches_grid_convolution(t):
    means = [[0.0, 0.5], [1.0, -0.5], [-1.0, -0.2]]
    std = [[0.2, 0.4], [0.3, 0.25], [0.5, 0.2]]
    weights = [0.5, 0.2, 0.3]
    g = GaussianMixture(means, std, weights)
    x = torch.cartesian_prod(torch.linspace(-2.5, 2.5, 3, dtype=F64), torch.linspace(-2, 2, 3, dtype=F64))
    ref = gmm_convolution(means, std, weights, x, t, -6.0, 6.0)
    assert (g.log_prob(x, t) - ref).abs().max().item() < 1e-8


@pytest.mark.parametrize("t", LEVELS)
def test_box_2d_matches_grid_convolution(t):
    low, high = [-0.7, -0.2], [0.7, 0.3]
    r, s = SCHEDULE.alpha_bar[t].sqrt().item(), SCHEDULE.sigma[t].item()
    # from the centre to 8 sigma_t beyond each edge
    x = torch.cartesian_prod(
        torch.linspace(0.0, r * 0.7 + 8 * s, 5, dtype=F64), torch.linspace(-0.2 * r - 8 * s, 0.3 * r + 8 * s, 5, dtype=F64)
    )
    assert max_box_error(Box, low, high, t, x) < 1e-8


def test_box_3d_product_form_matches_per_axis_quadrature_at_level_0():
    low, high = [-0.7, -0.2, 0.0], [0.7, 0.3, 1.5]
    x = torch.tensor([[0.0, 0.0, 0.5], [0.69, -0.21, 1.49], [-0.75, 0.33, -0.05], [0.1, 0.25, 1.52]], dtype=F64)
    ref = sum(box_convolution([a], [b], x[:, d : d + 1], 0) for d, (a, b) in enumerate(zip(low, high)))
    assert (Box(low, high).log_prob(x, 0) - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("t", [50, SCHEDULE.num_levels - 1])
def test_box_3d_matches_coarse_grid_convolution(t):
    low, high = [-0.7, -0.2, 0.0], [0.7, 0.3, 1.5]
    x = torch.tensor([[0.0, 0.0, 0.5], [1.0, -1.0, 2.0], [-2.0, 0.5, -1.0]], dtype=F64)
    assert max_box_error(Box, low, high, t, x) < 1e-9


def test_clean_level_densities():
    means, std, weights = [[0.0, 0.5], [1.0, -0.5]], [[0.2, 0.4], [0.3, 0.25]], [0.4, 0.6]
    y = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    gmm_lp = GaussianMixture(means, std, weights).log_prob(y, "clean")
    torch.testing.assert_close(gmm_lp, clean_gmm_log_prob(means, std, weights, y))
    b = Box([-0.7, -0.2], [0.7, 0.3])
    inside = (y[:, 0].abs() <= 0.7) & (y[:, 1] >= -0.2) & (y[:, 1] <= 0.3)
    lp = b.log_prob(y, "clean")
    assert inside.any() and (~inside).any()
    torch.testing.assert_close(lp[inside], torch.full_like(lp[inside], -math.log(1.4 * 0.5)))
    assert torch.isneginf(lp[~inside]).all()
    assert (b.score(y, "clean") == 0).all()


# --- the log normal-interval mass ---------------------------------------------------------


def test_log_normal_interval_matches_mpmath():
    """Relative error against 50-digit arithmetic, over centres to 90 and widths from 1e-6 to 40
    (both the direct formula and the narrow-interval series)."""
    mpmath.mp.dps = 50
    ms = [-90.0, -50.3, -20.0, -3.0, -1.0, -0.1, 0.0, 0.05, 0.7, 2.0, 10.0, 51.0]
    hs = [1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.3, 1.0, 5.0, 40.0]
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-6)]:
        for m, h in itertools.product(ms, hs):
            mm, hh = torch.tensor([m], dtype=dtype), torch.tensor([h], dtype=dtype)
            m_exact, h_exact = mpmath.mpf(mm.item()), mpmath.mpf(hh.item())
            ref = float(mpmath.log(mpmath.ncdf(m_exact + h_exact) - mpmath.ncdf(m_exact - h_exact)))
            got = log_normal_interval(mm, hh).item()
            assert abs(got - ref) <= tol * max(1.0, abs(ref)), (dtype, m, h, got, ref)


# --- scores ---------------------------------------------------------------------------------


def _oracles():
    gmm = GaussianMixture([[0.0, 0.5], [1.0, -0.5], [-1.0, 0.0]], [[0.2, 0.4], [0.3, 0.25], [0.05, 0.1]], [0.5, 0.2, 0.3])
    box = Box([-0.7, -0.2], [0.7, 0.3])
    return {"gmm": gmm, "box": box, "mixture": OracleMixture([gmm, box], [0.3, 0.7])}


def _score_points(t):
    g = torch.Generator().manual_seed(1)
    s = 1.0 if isinstance(t, str) else SCHEDULE.sigma[t].item()
    near = 0.8 * torch.randn(40, 2, generator=g, dtype=F64)
    far = torch.tensor([[0.7 + 30 * s, 0.0], [0.0, -0.2 - 30 * s], [-0.7 - 10 * s, 0.3 + 10 * s]], dtype=F64)
    return torch.cat([near, far])


@pytest.mark.parametrize("name", ["gmm", "box", "mixture"])
@pytest.mark.parametrize("t", LEVELS)
def test_score_matches_autograd_and_finite_differences(name, t):
    oracle = _oracles()[name]
    x = _score_points(t)
    if name == "mixture":  # keep to where both components have comparable mass
        x = x[:40]
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(oracle.log_prob(x, t).sum(), x)
    score = oracle.score(x.detach(), t)
    assert torch.isfinite(score).all()
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
    eps = 1e-5
    fd = torch.stack(
        [(oracle.log_prob(x.detach() + eps * e, t) - oracle.log_prob(x.detach() - eps * e, t)) / (2 * eps) for e in torch.eye(2, dtype=F64)],
        dim=1,
    )
    torch.testing.assert_close(score, fd, rtol=1e-5, atol=1e-5 * score.abs().max().item())


def test_clean_gmm_score_matches_autograd():
    gmm = _oracles()["gmm"]
    x = _score_points("clean").requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x, "clean").sum(), x)
    torch.testing.assert_close(gmm.score(x.detach(), "clean"), grad)


# --- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,t,half_width,panels",  # panels no wider than about 2x the finest length scale of q_t
    [
        ("gmm", 0, 2.5, 50),
        ("gmm", "clean", 2.5, 50),
        ("box", 0, 1.5, 60),
        ("box", 50, 6.0, 16),
        ("mixture", 1, 2.5, 50),
        ("mixture", 99, 7.0, 14),
    ],
)
def test_oracles_normalise_on_a_2d_grid(name, t, half_width, panels):
    nodes, log_w = product_grid([gauss_legendre(-half_width, half_width, panels)] * 2)
    mass = torch.logsumexp(log_w + _oracles()[name].log_prob(nodes, t), 0).exp().item()
    assert abs(mass - 1.0) < 1e-6


def test_normalisation_check_rejects_wrong_box_normaliser():
    nodes, log_w = product_grid([gauss_legendre(-6.0, 6.0, 16)] * 2)
    mass = torch.logsumexp(log_w + WrongNormaliserBox([-0.7, -0.2], [0.7, 0.3]).log_prob(nodes, 50), 0).exp().item()
    assert abs(mass - 1.0) > 0.1


# --- per-chain levels and float32 -----------------------------------------------------------


@pytest.mark.parametrize("name", ["gmm", "box", "mixture"])
def test_per_chain_levels_equal_a_loop_over_levels(name):
    oracle = _oracles()[name]
    x = _score_points(0)[:40]
    t = torch.randint(0, SCHEDULE.num_levels, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    lp, score = oracle.log_prob(x, t), oracle.score(x, t)
    for i, ti in enumerate(t.tolist()):
        torch.testing.assert_close(lp[i], oracle.log_prob(x[i : i + 1], ti)[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(score[i], oracle.score(x[i : i + 1], ti)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", LEVELS)
def test_box_float32_is_finite_and_accurate_far_from_the_box(t):
    box = Box([-0.7, -0.2], [0.7, 0.3])
    r, s = SCHEDULE.alpha_bar[t].sqrt().item(), SCHEDULE.sigma[t].item()
    ks = torch.tensor([-50.0, -20.0, -5.0, -1.0, 0.0, 1.0, 5.0, 20.0, 50.0], dtype=F64)
    # along each axis beyond each edge, and diagonally beyond the corners, to 50 sigma_t
    x = torch.cat(
        [
            torch.stack([r * 0.7 + ks * s, torch.zeros_like(ks)], 1),
            torch.stack([torch.zeros_like(ks), r * -0.2 - ks * s], 1),
            torch.stack([r * -0.7 - ks * s, r * 0.3 + ks * s], 1),
        ]
    )
    x32 = x.float()
    lp64, sc64 = box.log_prob(x32.double(), t), box.score(x32.double(), t)  # the same points in float64
    lp32, sc32 = box.log_prob(x32, t), box.score(x32, t)
    assert lp32.dtype == sc32.dtype == torch.float32
    assert torch.isfinite(lp32).all() and torch.isfinite(sc32).all()
    # measured: log_prob within 2e-6 relative, score within 3e-4 of |score| + 1/sigma_t
    assert ((lp32.double() - lp64).abs() <= 1e-5 * lp64.abs().clamp(min=1)).all()
    assert ((sc32.double() - sc64).abs() <= 1e-3 * (sc64.abs() + 1 / s)).all()


def test_gmm_float32_follows_dtype_and_stays_close():
    gmm = _oracles()["gmm"]
    x = _score_points(0)
    for t in [0, 99, "clean"]:
        lp32 = gmm.log_prob(x.float(), t)
        assert lp32.dtype == torch.float32
        torch.testing.assert_close(lp32.double(), gmm.log_prob(x, t), rtol=1e-5, atol=1e-4)


# --- tail precisions --------------------------------------------------------------------------


def test_tail_precisions():
    o = _oracles()
    ab, sigma = SCHEDULE.alpha_bar[10], SCHEDULE.sigma[10]
    torch.testing.assert_close(o["gmm"].tail_precisions(10), 1 / (ab * o["gmm"].std ** 2 + sigma**2))
    torch.testing.assert_close(o["gmm"].tail_precisions("clean"), 1 / o["gmm"].std ** 2)
    torch.testing.assert_close(o["box"].tail_precisions(10), torch.full((1, 2), 1 / sigma.item() ** 2, dtype=F64))
    assert torch.isinf(o["box"].tail_precisions("clean")).all()
    assert o["mixture"].tail_precisions(10).shape == (4, 2)
    with pytest.raises(InvalidValueError):
        o["gmm"].tail_precisions(torch.tensor([1, 2]))


# --- exact sampling ----------------------------------------------------------------------------


def assert_moments(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Sample mean and variance per coordinate within 5 standard errors of the analytic ones."""
    n = samples.shape[0]
    centred = samples - samples.mean(0)
    se_mean = (var / n).sqrt()
    se_var = (centred**2).std(0) / math.sqrt(n)
    assert ((samples.mean(0) - mean).abs() < 5 * se_mean).all(), (samples.mean(0), mean)
    assert ((samples.var(0) - var).abs() < 5 * se_var).all(), (samples.var(0), var)


def _clean_moments(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    o = _oracles()
    g, b = o["gmm"], o["box"]
    g_mean = (g.weights[:, None] * g.means).sum(0)
    g_var = (g.weights[:, None] * (g.std**2 + g.means**2)).sum(0) - g_mean**2
    b_mean, b_var = (b.low + b.high) / 2, (b.high - b.low) ** 2 / 12
    if name == "gmm":
        return g_mean, g_var
    if name == "box":
        return b_mean, b_var
    w = o["mixture"].weights
    mean = w[0] * g_mean + w[1] * b_mean
    return mean, w[0] * (g_var + g_mean**2) + w[1] * (b_var + b_mean**2) - mean**2


@pytest.mark.parametrize("name", ["gmm", "box", "mixture"])
@pytest.mark.parametrize("t", ["clean", 0, 50, 99])
def test_exact_samples_match_analytic_moments(name, t):
    oracle = _oracles()[name]
    x = oracle.sample(20000, torch.Generator().manual_seed(3), t=t)
    assert x.shape == (20000, 2) and x.dtype == F64
    mean, var = _clean_moments(name)
    if not isinstance(t, str):
        ab = SCHEDULE.alpha_bar[t]
        mean, var = ab.sqrt() * mean, ab * var + (1 - ab)
    assert_moments(x, mean, var)


def test_moment_check_rejects_unnoised_samples():
    x = _oracles()["gmm"].sample(20000, torch.Generator().manual_seed(3))
    ab = SCHEDULE.alpha_bar[50]
    mean, var = _clean_moments("gmm")
    with pytest.raises(AssertionError):
        assert_moments(x, ab.sqrt() * mean, ab * var + (1 - ab))


def test_box_samples_in_range_and_sampling_is_reproducible():
    box = _oracles()["box"]
    x = box.sample(5000, torch.Generator().manual_seed(4))
    assert ((x >= box.low) & (x <= box.high)).all()
    torch.testing.assert_close(x, box.sample(5000, torch.Generator().manual_seed(4)))
    assert box.sample(0).shape == (0, 2)


# --- validation -------------------------------------------------------------------------------


def test_invalid_parameters_and_inputs():
    with pytest.raises(ShapeError, match=r"\[K, D\]"):
        GaussianMixture([0.0, 1.0])
    with pytest.raises(ShapeError, match="std"):
        GaussianMixture([[0.0, 1.0]], [[0.1, 0.2, 0.3]])
    with pytest.raises(InvalidValueError, match="positive"):
        GaussianMixture([[0.0, 1.0]], -1.0)
    with pytest.raises(InvalidValueError, match="low < high"):
        Box([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ShapeError, match="dimension"):
        OracleMixture([Box([0.0], [1.0]), Box([0.0, 0.0], [1.0, 1.0])])
    box = Box([0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ShapeError, match=r"\[N, 2\]"):
        box.log_prob(torch.zeros(3, 3), 0)
    with pytest.raises(InvalidValueError, match="outside"):
        box.log_prob(torch.zeros(3, 2), 100)
    with pytest.raises(InvalidValueError, match="unknown level"):
        box.score(torch.zeros(3, 2), "dirty")


def test_oracle_flags():
    for oracle in _oracles().values():
        assert oracle.is_normalized and oracle.has_energy and oracle.dim == 2
        assert oracle.schedule == SCHEDULE and oracle.description
