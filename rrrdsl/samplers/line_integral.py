"""Metropolis tests for score-only targets: the energy difference as a line integral of the score.

For a path ``x_0 -> x_1 -> ... -> x_L`` the change of the log density is

    log p(x_L) - log p(x_0) = ∫ ∇log p · dx ≈ Σ_k (∇log p(x_k) + ∇log p(x_{k+1}))/2 · (x_{k+1} - x_k),

the trapezoid rule on each segment. It is exact when ``∇log p`` is linear along the segment
(a Gaussian, or any quadratic log density), and otherwise an approximation whose error makes
the Metropolis test only approximately exact. MALA uses the straight segment ``x -> x'`` with
the gradients at both ends (one evaluation, the same as exact MALA); HMC sums the segments of
its leapfrog path, reusing the leapfrog gradients (no extra evaluations).

What the test then sees. For MALA, with ``d = x' - x`` and gradients ``g, g'``, the trapezoid
``(g + g')·d / 2`` cancels exactly against the proposal ratio ``log q(x | x') - log q(x' | x)``, so
the Metropolis log ratio is only ``-ε (|g'|² - |g|²) / 4``; for HMC the same cancellation on each
leapfrog segment telescopes to ``-ε² (|g_L|² - |g_0|²) / 8`` for any number of leapfrog steps (a
finer path adds no information). The test therefore corrects ULA (or UHA) only by the weight
``exp(-c |∇log p|²)`` (``c = ε/4``, resp. ``ε²/8``): to first order in ``ε`` that removes the
gradient-norm part of ULA's O(ε) bias, which is all of it for a Gaussian, but leaves the part
proportional to the Laplacian of ``log p`` for any other target, and the acceptance rate no
longer measures the discretisation error. Adapting the step
size toward MALA's 0.57 (or HMC's 0.65) then takes steps 5-20x larger than ULA's, where that
remaining bias dominates (on the score-parameterised ``ring * bar`` it was worse than ULA at equal
NFE); the kernels adapt toward :data:`TARGET_ACCEPT` instead, measured in
``rrr bench line_integral`` (``benchmarks/results/line_integral.md``).

Kernels that support it take ``mh="line_integral"``; the default ``mh="exact"`` needs a target
with energies (``target.has_energy``).
"""

from __future__ import annotations

import torch

#: the Metropolis-test variants of MALA and HMC
MH_METHODS = ("exact", "line_integral")
#: the acceptance rate that step-size adaptation aims for under ``mh="line_integral"`` (MALA, HMC)
TARGET_ACCEPT = 0.9


def trapezoid(x0: torch.Tensor, grad0: torch.Tensor, x1: torch.Tensor, grad1: torch.Tensor) -> torch.Tensor:
    """Trapezoid estimate ``(grad0 + grad1)/2 · (x1 - x0)`` of ``log p(x1) - log p(x0)``, per chain ``[N]``."""
    return 0.5 * ((grad0 + grad1) * (x1 - x0)).sum(dim=-1)
