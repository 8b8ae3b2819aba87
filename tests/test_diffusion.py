"""Reverse diffusion (DDPM, DDIM): the transition formulas and sampling an exact GMM oracle."""

import math

import pytest
import torch

import rrrdsl
from rrrdsl.samplers.diffusion import (
    forward_log_prob,
    reverse_moments,
    reverse_step,
    transition_log_prob,
)
from rrrdsl.schedules import default

MEANS = [[-0.6, 0.0], [0.5, 0.4]]
STD = [[0.1, 0.2], [0.15, 0.1]]
WEIGHTS = [0.3, 0.7]


@pytest.mark.parametrize("t", [0, 40, 98])
def test_ddim_with_eta_one_is_the_ddpm_step(t):
    schedule = default()
    generator = torch.Generator().manual_seed(t)
    x = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    score = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    ddpm = reverse_moments(x, score, schedule, t, "ddpm")
    ddim = reverse_moments(x, score, schedule, t, "ddim", eta=1.0)
    torch.testing.assert_close(ddim.mean, ddpm.mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ddim.std, ddpm.std)
    alpha_bar = schedule.alpha_bar
    posterior_var = schedule.betas[t + 1] * (1 - alpha_bar[t]) / (1 - alpha_bar[t + 1])
    assert float(ddpm.std) ** 2 == pytest.approx(float(posterior_var))


def test_ddim_with_eta_zero_is_deterministic():
    schedule = default()
    x, score = torch.randn(8, 2), torch.randn(8, 2)
    transition = reverse_moments(x, score, schedule, 10, "ddim", eta=0.0)
    assert float(transition.std) == 0.0
    torch.testing.assert_close(reverse_step(transition, torch.Generator().manual_seed(0)), transition.mean)


def test_transition_and_forward_log_densities_are_gaussian():
    schedule = default()
    t = 30
    x_next, x = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    transition = reverse_moments(x_next, torch.randn(8, 2, dtype=torch.float64), schedule, t)
    expected = torch.distributions.Normal(transition.mean, transition.std).log_prob(x).sum(-1)
    torch.testing.assert_close(transition_log_prob(transition, x), expected)
    beta = schedule.betas[t + 1]
    forward = torch.distributions.Normal(torch.sqrt(1 - beta) * x, torch.sqrt(beta)).log_prob(x_next).sum(-1)
    torch.testing.assert_close(forward_log_prob(x_next, x, schedule, t), forward)


def test_ddpm_on_a_gaussian_matches_the_exact_recursion_of_its_moments():
    """With the exact (linear) score of ``N(m, s^2)`` a DDPM step is an affine map plus noise:
    ``x_t = k x_{t+1} + c + sqrt(β̃) ξ`` with ``k = (1 - β/v') / sqrt(α)``, ``c = β sqrt(ᾱ') m / (v' sqrt(α))``,
    ``v' = ᾱ' s^2 + 1 - ᾱ'`` (Ho et al., 2020). Iterating it from ``N(0, I)`` gives the output's mean
    and variance exactly (including the O(1/T) discretisation bias of a 100-level schedule)."""
    mean, std = torch.tensor([0.3, -0.2], dtype=torch.float64), torch.tensor([0.15, 0.4], dtype=torch.float64)
    schedule = default()
    betas, alpha_bar = schedule.betas, schedule.alpha_bar
    mu, var = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for t in range(schedule.num_levels - 2, -1, -1):
        beta = betas[t + 1]
        v_next = alpha_bar[t + 1] * std**2 + 1 - alpha_bar[t + 1]
        k = (1 - beta / v_next) / torch.sqrt(1 - beta)
        c = beta * torch.sqrt(alpha_bar[t + 1]) * mean / (v_next * torch.sqrt(1 - beta))
        mu, var = k * mu + c, k**2 * var + beta * (1 - alpha_bar[t]) / (1 - alpha_bar[t + 1])
    n = 4000
    x = rrrdsl.sample(rrrdsl.gmm(means=[mean.tolist()], std=[std.tolist()]), "reverse", n=n, seed=1, progress=False).x
    x = x.to(torch.float64)
    assert ((x.mean(0) - mu).abs() < 5 * torch.sqrt(var / n)).all()
    assert ((x.var(0) - var).abs() < 5 * var * math.sqrt(2 / n)).all()
    # the recursion is not the exact level-0 law: a 100-level DDPM is visibly biased in variance
    exact_var = alpha_bar[0] * std**2 + 1 - alpha_bar[0]
    assert ((var - exact_var).abs() > 0.05 * exact_var).any()


@pytest.mark.parametrize("sampler", ["reverse", "ddim"])
def test_reverse_diffusion_with_the_exact_score_reproduces_a_gmm_oracle(sampler):
    """Mode weights and per-mode means of the level-0 GMM within 5 standard errors."""
    expr = rrrdsl.gmm(means=MEANS, std=STD, weights=WEIGHTS)
    n = 4000
    result = rrrdsl.sample(expr, sampler, n=n, seed=0, progress=False)
    assert result.x.shape == (n, 2)
    assert result.diagnostics["nfe"] == 99  # one score evaluation per reverse step
    alpha_bar = float(default().alpha_bar[0])
    means = torch.tensor(MEANS, dtype=torch.float64) * math.sqrt(alpha_bar)
    variances = alpha_bar * torch.tensor(STD, dtype=torch.float64) ** 2 + (1 - alpha_bar)
    x = result.x.to(torch.float64)
    nearest = torch.cdist(x, means).argmin(1)
    for k, weight in enumerate(WEIGHTS):
        members = x[nearest == k]
        assert abs(members.shape[0] / n - weight) < 5 * math.sqrt(weight * (1 - weight) / n)
        assert ((members.mean(0) - means[k]).abs() < 5 * torch.sqrt(variances[k] / members.shape[0])).all()
