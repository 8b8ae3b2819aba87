"""The fast oracle evaluation against straightforward references (issue 20, wall time).

* a Gaussian mixture's fused ``log_prob_and_score`` and ``log_prob`` vs ``torch.distributions``
  summed by ``torch.logsumexp`` in float64, and its score vs autograd of that reference, for
  ``K = 1`` and ``K > 1``, ``D = 1, 2, 5``, at int and per-chain levels, on points near the data
  and far in the tails;
* a box's log density and score vs 30-digit mpmath (``log(Φ(m + h) - Φ(m - h))`` and
  ``(φ(m + h) - φ(m - h)) / mass``) on points inside, at the edges and up to 40 ``sigma_t``
  outside, at levels where the central, far-tail and narrow-interval formulas all occur, and
  mixed within one call;
* a compiled product with per-chain levels vs the autograd gradient of its ``log_prob``, and
  float32 within float32 error of float64;
* the responsibilities of far components are normal numbers (subnormals are a 50-100x slow path).
"""

from __future__ import annotations

import itertools

import mpmath
import pytest
import torch

from rrrdsl.compiler import compile
from rrrdsl.lang.ir import box, gmm
from rrrdsl.models.numerics import logsumexp_and_softmax
from rrrdsl.models.oracles import Box, GaussianMixture

F64 = torch.float64
LEVELS = [0, 37, "per-chain"]


def _levels(t, n: int, schedule):
    if t == "per-chain":
        return torch.arange(n) * 7 % schedule.num_levels
    return t


def _gmm(k: int, d: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(10 * k + d)
    means = torch.randn(k, d, generator=g, dtype=F64)
    std = 0.05 + torch.rand(k, d, generator=g, dtype=F64)
    weights = 0.2 + torch.rand(k, generator=g, dtype=F64)
    return GaussianMixture(means, std, weights)


def _gmm_reference(oracle: GaussianMixture, x: torch.Tensor, t) -> torch.Tensor:
    """``logsumexp_k(log π_k + Σ_d log N(x_d; sqrt(ᾱ_t) μ_kd, ᾱ_t s_kd^2 + σ_t^2))``, float64."""
    alpha_bar = oracle.schedule.alpha_bar[t]
    if isinstance(t, torch.Tensor):
        alpha_bar = alpha_bar[:, None, None]
    normal = torch.distributions.Normal(alpha_bar.sqrt() * oracle.means, (alpha_bar * oracle.std**2 + 1 - alpha_bar).sqrt())
    return torch.logsumexp(oracle.weights.log() + normal.log_prob(x[:, None, :]).sum(-1), -1)


def _points(n: int, d: int, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    near = torch.randn(n, d, generator=g, dtype=F64)
    far = spread * torch.sign(torch.randn(n // 4, d, generator=g, dtype=F64))
    return torch.cat([near, far])


@pytest.mark.parametrize("k,d", [(1, 1), (1, 2), (4, 1), (4, 2), (3, 5)])
@pytest.mark.parametrize("t", LEVELS)
def test_gmm_evaluation_matches_distributions_and_autograd(k, d, t):
    oracle = _gmm(k, d)
    x = _points(16, d, 30.0, k + d)
    t = _levels(t, x.shape[0], oracle.schedule)
    x_ref = x.clone().requires_grad_(True)
    reference = _gmm_reference(oracle, x_ref, t)
    (grad,) = torch.autograd.grad(reference.sum(), x_ref)
    log_prob, score = oracle.log_prob_and_score(x, t)
    torch.testing.assert_close(log_prob, reference.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(oracle.log_prob(x, t), reference.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(score, grad, rtol=1e-10, atol=1e-10)


def _box_reference(oracle: Box, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """30-digit ``Σ_d log mass_d - log(r (b - a))`` and its gradient, per point."""
    mpmath.mp.dps = 30
    ts = t.tolist() if isinstance(t, torch.Tensor) else [t] * x.shape[0]
    log_probs, scores = [], []
    for row, level in zip(x.tolist(), ts):
        alpha_bar = mpmath.mpf(float(oracle.schedule.alpha_bar[level]))
        r, sigma = mpmath.sqrt(alpha_bar), mpmath.sqrt(1 - alpha_bar)
        total, grad = mpmath.mpf(0), []
        for xd, lo, hi in zip(row, oracle.low.tolist(), oracle.high.tolist()):
            m = (mpmath.mpf(xd) - r * (lo + hi) / 2) / sigma
            h = r * (hi - lo) / (2 * sigma)
            mass = mpmath.ncdf(-abs(m) + h) - mpmath.ncdf(-abs(m) - h)
            total += mpmath.log(mass) - mpmath.log(r * (hi - lo))
            grad.append(float((mpmath.npdf(m + h) - mpmath.npdf(m - h)) / (mass * sigma)))
        log_probs.append(float(total))
        scores.append(grad)
    return torch.tensor(log_probs, dtype=F64), torch.tensor(scores, dtype=F64)


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("t", [0, 60, 99, "per-chain"])
def test_box_evaluation_matches_mpmath(d, t):
    """At level 0 the points beyond the edges are in the far tail (up to 40 sigma_0), at 99 the
    interval is narrow (the series), per chain all three formulas meet in one call."""
    oracle = Box(torch.linspace(-0.6, -0.2, d), torch.linspace(0.3, 0.9, d))
    sigma0 = float(oracle.schedule.sigma[0])
    g = torch.Generator().manual_seed(d)
    edges = torch.stack([oracle.low, oracle.high])[torch.randint(0, 2, (12, d), generator=g), torch.arange(d)]
    offsets = sigma0 * torch.tensor([-40.0, -10.0, -3.0, -0.5, 0.0, 0.5, 3.0, 10.0, 40.0, 2.0, -7.0, 25.0], dtype=F64)
    x = torch.cat([edges + offsets[:, None], 0.5 * torch.randn(12, d, generator=g, dtype=F64)])
    t = _levels(t, x.shape[0], oracle.schedule)
    ref_log_prob, ref_score = _box_reference(oracle, x, t)
    log_prob, score = oracle.log_prob_and_score(x, t)
    torch.testing.assert_close(log_prob, ref_log_prob, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(oracle.log_prob(x, t), ref_log_prob, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(score, ref_score, rtol=1e-10, atol=1e-10)


def test_box_clean_log_prob_has_the_zero_gradient_of_a_flat_density():
    """At the clean level the box is flat on its support: autograd of ``log_prob`` (what graphs
    with learned leaves use) must give 0 there, as ``score`` does (it gave 1 per coordinate)."""
    oracle = Box(torch.tensor([-0.5, -0.2], dtype=F64), torch.tensor([0.5, 0.4], dtype=F64))
    x = torch.tensor([[0.0, 0.0], [0.3, -0.1], [-0.4, 0.3]], dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(oracle.log_prob(x, "clean").sum(), x)
    assert torch.equal(grad, torch.zeros_like(grad))
    torch.testing.assert_close(grad, oracle.score(x.detach(), "clean"))


@pytest.mark.parametrize("t", LEVELS)
def test_compiled_product_float64_and_float32(t):
    target = compile(gmm(means=[[0.0, 0.5], [0.4, -0.3], [-0.5, 0.0]], std=0.05) * box(low=[-0.2, -1.0], high=[0.2, 1.0]) ** 1.5)
    x = _points(40, 2, 3.0, 7)
    t = _levels(t, x.shape[0], target.schedule)
    x_ref = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_prob(x_ref, t).sum(), x_ref)
    log_prob, score = target.log_prob_and_grad(x, t)
    torch.testing.assert_close(log_prob, target.log_prob(x, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
    log_prob32, score32 = target.log_prob_and_grad(x.float(), t)
    sigma = target.schedule.sigma[t]
    scale = (1.0 / sigma).reshape(-1, 1) if isinstance(t, torch.Tensor) else 1.0 / float(sigma)
    assert log_prob32.dtype == score32.dtype == torch.float32
    assert ((log_prob32.double() - log_prob).abs() <= 1e-5 * log_prob.abs().clamp(min=1)).all()
    assert ((score32.double() - score).abs() <= 1e-3 * (score.abs() + scale)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_responsibilities_are_normal_numbers(dtype):
    """A component 10^4 nats below the best gets the floor weight, a normal number, not a subnormal."""
    z = torch.tensor([[0.0, 0.0], [-1e4, -30.0], [-1e4, -700.0]], dtype=dtype)
    for inplace in (False, True):
        log_total, weights = logsumexp_and_softmax(z.clone(), 0, inplace=inplace)
        assert (weights >= torch.finfo(dtype).tiny).all()
        torch.testing.assert_close(log_total, torch.logsumexp(z, 0))
        torch.testing.assert_close(weights, torch.softmax(z, 0), rtol=1e-6, atol=1e-6)
    gmm_oracle = GaussianMixture([[0.0], [50.0]], 0.01)
    assert (gmm_oracle.log_prob_and_score(torch.zeros(3, 1, dtype=dtype), 0)[1].abs() < 1e-20).all()


def test_per_chain_levels_equal_int_levels_bitwise():
    """The per-chain table gathers exactly the constants an int level forms."""
    for oracle in (_gmm(3, 2), Box([-0.3, 0.0], [0.2, 0.4])):
        x = _points(8, 2, 2.0, 5)
        t = torch.tensor(list(itertools.islice(itertools.cycle([0, 5, 99]), x.shape[0])))
        log_prob, score = oracle.log_prob_and_score(x, t)
        for i, level in enumerate(t.tolist()):
            one = oracle.log_prob_and_score(x[i : i + 1], level)
            torch.testing.assert_close(log_prob[i : i + 1], one[0], rtol=1e-14, atol=0.0)
            torch.testing.assert_close(score[i : i + 1], one[1], rtol=1e-13, atol=1e-13)
