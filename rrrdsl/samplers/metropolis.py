"""The per-chain Metropolis-Hastings test, with non-finite proposals rejected as divergences."""

from __future__ import annotations

import math
from typing import Optional

import torch

from .chains import uniform


#: an energy error ``H(proposal) - H(start)`` above this counts as a divergence (Stan, pyro)
MAX_ENERGY_ERROR = 1000.0


def metropolis(
    log_ratio: torch.Tensor, generator: Optional[torch.Generator], finite: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-chain Metropolis-Hastings test.

    Returns ``(accept_prob, accepted, divergent)``: ``min(1, exp(log_ratio))`` with a NaN ratio
    read as a rejection, the per-chain decision ``u < accept_prob`` with one uniform per chain,
    and the divergence flag ``-log_ratio > MAX_ENERGY_ERROR`` (which includes every non-finite
    proposal, whose ratio the caller sets to ``-inf``). A divergent proposal is never accepted:
    its ``accept_prob`` is below ``exp(-1000)``, which is 0 in every floating dtype, and
    ``u >= 0``. ``finite``: the caller has checked that every ratio is finite (no NaN to read).
    """
    if not finite:
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    accept_prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    divergent = log_ratio < -MAX_ENERGY_ERROR
    accepted = uniform(log_ratio.shape[0], log_ratio, generator) < accept_prob
    return accept_prob, accepted, divergent
