"""The batched leapfrog against a per-chain reference when chains stop at different steps: the
whole-batch path (every chain moving) hands over to the per-chain path at the first
non-finite point with the same positions, momenta, finite flags and gradient counts."""

from __future__ import annotations

import math

import torch

from rrrdsl.samplers.chains import chain_column
from rrrdsl.samplers.leapfrog import Point, leapfrog

#: log p = -x^2 / 2 inside |x| < EDGE, NaN outside (a target that fails past a wall)
EDGE = 3.0


def evaluate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inside = x.abs() < EDGE
    log_prob = torch.where(inside, -0.5 * x**2, math.nan).sum(-1)
    return log_prob, torch.where(inside, -x, math.nan)


def reference(x: float, p: float, eps: float, steps: int) -> tuple[float, float, bool, int]:
    """One chain in Python floats: stop (keeping the last finite point) at the first NaN gradient."""
    grad, nfe = -x, 0
    for _ in range(steps):
        p_half = p + eps / 2 * grad
        x_new = x + eps * p_half
        nfe += 1
        if abs(x_new) >= EDGE:
            return x, p, False, nfe
        grad = -x_new
        x, p = x_new, p_half + eps / 2 * grad
    return x, p, True, nfe


def test_chains_that_stop_at_different_steps_match_the_per_chain_reference():
    x0 = torch.tensor([[0.0], [2.0], [1.0], [0.5], [2.5], [-1.0]], dtype=torch.float64)
    p0 = torch.tensor([[0.0], [2.5], [3.0], [3.0], [-3.0], [0.5]], dtype=torch.float64)
    eps, steps = 0.5, 4
    log_prob, grad = evaluate(x0)
    trajectory = leapfrog(Point(x0, p0, log_prob, grad), evaluate, chain_column(eps, x0), steps)
    expected = [reference(float(x), float(p), eps, steps) for x, p in zip(x0[:, 0], p0[:, 0])]
    assert [(e[2], e[3]) for e in expected] == [(True, 4), (False, 1), (False, 2), (False, 3), (False, 4), (True, 4)]
    end = trajectory.end
    for i, (x, p, finite, nfe) in enumerate(expected):
        assert math.isclose(float(end.x[i, 0]), x, abs_tol=1e-12) and math.isclose(float(end.p[i, 0]), p, abs_tol=1e-12)
        assert bool(trajectory.finite[i]) == finite and int(trajectory.nfe[i]) == nfe
        assert math.isclose(float(end.log_prob[i]), -0.5 * x * x, abs_tol=1e-12)


def test_every_chain_finite_gives_one_shared_count():
    x0 = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(-1, 1)
    log_prob, grad = evaluate(x0)
    trajectory = leapfrog(Point(x0, torch.zeros_like(x0), log_prob, grad), evaluate, chain_column(0.1, x0), 3)
    assert trajectory.finite.all() and (trajectory.nfe == 3).all()
