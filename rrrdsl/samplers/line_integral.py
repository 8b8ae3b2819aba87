"""Metropolis tests for score-only targets: the energy difference as a line integral of the score.

For a path ``x_0 -> x_1 -> ... -> x_L`` the change of the log density is

    log p(x_L) - log p(x_0) = ∫ ∇log p · dx = Σ_k ∫_0^1 ∇log p(x_k + s d_k) · d_k ds,    d_k = x_{k+1} - x_k,

estimated by a quadrature rule on each straight segment. The trapezoid rule is exact when
``∇log p`` is linear along the segment (a Gaussian, or any quadratic log density), and otherwise
an approximation whose error makes the Metropolis test only approximately exact. MALA uses the
straight segment ``x -> x'`` with the gradients at both ends (which it evaluates anyway); HMC sums
the segments of its leapfrog path, reusing the leapfrog gradients.

What the trapezoid test then sees. For MALA, with ``d = x' - x`` and gradients ``g, g'``, the
trapezoid ``(g + g')·d / 2`` cancels exactly against the proposal ratio
``log q(x | x') - log q(x' | x)``, so the Metropolis log ratio is only ``-ε (|g'|² - |g|²) / 4``; for
HMC the same cancellation on each leapfrog segment telescopes to ``-ε² (|g_L|² - |g_0|²) / 8`` for
any number of leapfrog steps. The trapezoid test therefore corrects ULA (or UHA) only by the
weight ``exp(-c |∇log p|²)``: to first order in ``ε`` that removes the gradient-norm part of ULA's
O(ε) bias, which is all of it for a Gaussian, but leaves the part proportional to the Laplacian of
``log p`` for any other target (on the banana ``x1 ~ N(0, 1)``, ``x2 | x1 ~ N(x1² - 1, 1)``,
``var x1`` came out 0.83 instead of 1 at ``ε = 0.05``).

Higher order: Gauss-Lobatto quadrature. With ``points = m`` the integral along each segment is
the Gauss-Lobatto rule with ``m`` nodes (Abramowitz & Stegun, 1964, 25.4.32): the two ends (whose
gradients the kernel has anyway) and ``m - 2`` interior nodes, exact when ``∇log p · d`` is a
polynomial of degree ``2m - 3`` along the segment. ``m = 2`` is the trapezoid (Sjöberg et al.),
``m = 3`` Simpson's rule (degree 3: exact for any quartic log density, such as the banana). The
interior nodes cost ``m - 2`` gradient evaluations per segment, counted in the kernels'
``StepInfo.nfe``; the cancellation above no longer happens, so the test sees the curvature of
the score along the segment. :data:`POINTS` is the default, measured on the banana and on
``oracle("ring") * oracle("bar")`` at equal NFE (``rrr bench exactness``).

The acceptance rate of the trapezoid test does not measure the discretisation error, and adapting
its step size toward MALA's 0.57 (or HMC's 0.65) took steps 5-20x larger than ULA's, where the
remaining bias dominates (on the score-parameterised ``ring * bar`` it was worse than ULA at equal
NFE); with the trapezoid the kernels adapt toward :data:`TARGET_ACCEPT` instead, measured in
``rrr bench line_integral`` (``benchmarks/results/line_integral.md``). With 3 or more points the
test sees the error and the kernels keep the exact test's targets (:func:`line_integral_accept`).

Cost. The annealed samplers keep their budget of gradient evaluations: their default ``steps``
are divided by ``points - 1`` (:func:`quadrature_cost`), so Simpson takes half as many steps.
Measured at equal NFE (``rrr bench exactness``, ``benchmarks/results/exactness.md``): on the
banana from exact draws the trapezoid is far off (``var x1`` 0.73, ``E x1⁴`` 1.74 at its adapted
step) and Simpson within the standard error; on the score-only ``oracle("ring") *
oracle("bar")``, whose modes are nearly Gaussian (where the trapezoid is exact), the trapezoid's
twice as many steps mix better (MMD / floor 0.87 against 1.10 for Simpson; ULA 1.41; N = 1000,
3 seeds). Exactness wins the default; ``points=2`` remains for near-Gaussian targets.

Kernels that support it take ``mh="line_integral"`` and ``points``; the default ``mh="exact"``
needs a target with energies (``target.has_energy``).

References
----------
Sjöberg, S. et al. (2023). MCMC-correction of score-based diffusion models for model composition.
Abramowitz, M. & Stegun, I. A. (1964). Handbook of Mathematical Functions, 25.4.32 (Lobatto).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..schedules import Level
from .base import Target
from .options import check_int, fail

#: the Metropolis-test variants of MALA and HMC
MH_METHODS = ("exact", "line_integral")
#: the acceptance rate that step-size adaptation aims for under the trapezoid test (MALA, HMC)
TARGET_ACCEPT = 0.9


#: the Gauss-Lobatto rules on [0, 1]: number of points -> (nodes, weights)
LOBATTO: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] = {
    2: ((0.0, 1.0), (1 / 2, 1 / 2)),
    3: ((0.0, 0.5, 1.0), (1 / 6, 4 / 6, 1 / 6)),
    4: ((0.0, (1 - 1 / math.sqrt(5)) / 2, (1 + 1 / math.sqrt(5)) / 2, 1.0), (1 / 12, 5 / 12, 5 / 12, 1 / 12)),
    5: (
        (0.0, (1 - math.sqrt(3 / 7)) / 2, 0.5, (1 + math.sqrt(3 / 7)) / 2, 1.0),
        (1 / 20, 49 / 180, 64 / 180, 49 / 180, 1 / 20),
    ),
}
#: the default number of quadrature points of the line-integral test (Simpson's rule)
POINTS = 3

#: ``x -> ∇log p(x)`` at the kernel's level
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def level_score(target: Target, t: Level) -> ScoreFn:
    """``target.score`` at level ``t`` for the stacked interior nodes of :func:`line_integral`
    (a per-chain level tensor ``[N]`` is repeated to the ``(points - 2) N`` nodes)."""

    def score(y: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return target.score(y, t.repeat(y.shape[0] // t.shape[0]))
        return target.score(y, t)

    return score


def check_points(points: Optional[int], mh: str) -> Optional[int]:
    """``points`` of a kernel's options: ``None`` (the default :data:`POINTS` under
    ``mh="line_integral"``) or a number of Lobatto points in 2..5, only with ``mh="line_integral"``."""
    if points is None:
        return None
    check_int("points", points, min(LOBATTO), max(LOBATTO))
    if mh != "line_integral":
        fail("points", "unset with mh='exact' (the exact test needs no quadrature)", points, hint="pass mh='line_integral'")
    return points


def line_integral_accept(mh: str, points: Optional[int], exact_accept: float) -> float:
    """The acceptance a kernel adapts toward: ``exact_accept`` for the exact test and for 3 or
    more points (whose test sees the discretisation error: on the score-only ``ring * bar`` at
    equal NFE, Simpson at 0.57 gave MMD / floor 1.10 against 1.65 at 0.9), :data:`TARGET_ACCEPT`
    for the trapezoid."""
    return TARGET_ACCEPT if mh == "line_integral" and (points or POINTS) == 2 else exact_accept


def quadrature_cost(mh: str, points: Optional[int]) -> int:
    """Gradient evaluations per segment relative to the exact test: ``points - 1`` under
    ``mh="line_integral"`` (the annealed samplers divide their default steps by it), else 1."""
    return (points or POINTS) - 1 if mh == "line_integral" else 1


def line_integral(
    x0: torch.Tensor, grad0: torch.Tensor, x1: torch.Tensor, grad1: torch.Tensor, score: ScoreFn, points: int
) -> torch.Tensor:
    """Gauss-Lobatto estimate of ``log p(x1) - log p(x0)`` along the segment, per chain ``[N]``.

    ``∫_0^1 ∇log p(x0 + s d) · d ds`` with ``d = x1 - x0`` and ``points`` nodes; the end gradients
    are given, the ``points - 2`` interior ones are one batched ``score`` call on ``(points - 2) N``
    points (NaN or infinite where a score is). ``points = 2`` is the trapezoid rule (no score call).
    """
    nodes, weights = LOBATTO[points]
    d = x1 - x0
    total = weights[0] * grad0 + weights[-1] * grad1
    if points > 2:
        interior = torch.cat([x0 + s * d for s in nodes[1:-1]])
        grads = score(interior).reshape(points - 2, *x0.shape)
        for w, g in zip(weights[1:-1], grads):
            total = total + w * g
    return (total * d).sum(dim=-1)
