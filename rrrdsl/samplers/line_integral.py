"""Metropolis tests for score-only targets: the energy difference as a line integral of the score.

For a path ``x_0 -> x_1 -> ... -> x_L`` the change of the log density is

    log p(x_L) - log p(x_0) = ∫ ∇log p · dx ≈ Σ_k (∇log p(x_k) + ∇log p(x_{k+1}))/2 · (x_{k+1} - x_k),

the trapezoid rule on each segment. It is exact when ``∇log p`` is linear along the segment
(a Gaussian, or any quadratic log density), and otherwise an approximation whose error makes
the Metropolis test only approximately exact. MALA uses the straight segment ``x -> x'`` with
the gradients at both ends (one evaluation, the same as exact MALA); HMC sums the segments of
its leapfrog path, reusing the leapfrog gradients (no extra evaluations).

Kernels that support it take ``mh="line_integral"``; the default ``mh="exact"`` needs a target
with energies (``target.has_energy``).
"""

from __future__ import annotations

import torch

#: the Metropolis-test variants of MALA and HMC
MH_METHODS = ("exact", "line_integral")


def trapezoid(x0: torch.Tensor, grad0: torch.Tensor, x1: torch.Tensor, grad1: torch.Tensor) -> torch.Tensor:
    """Trapezoid estimate ``(grad0 + grad1)/2 · (x1 - x0)`` of ``log p(x1) - log p(x0)``, per chain ``[N]``."""
    return 0.5 * ((grad0 + grad1) * (x1 - x0)).sum(dim=-1)
