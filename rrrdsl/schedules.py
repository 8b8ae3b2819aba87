"""Discrete variance-preserving (VP) noise schedules.

A schedule with ``T`` levels holds ``betas[t]``, ``alphas = 1 - betas``,
``alpha_bar[t] = prod_{s <= t} alphas[s]`` and ``sigma = sqrt(1 - alpha_bar)``.
Level 0 is the least noisy, level ``T - 1`` the noisiest; the *clean* level
(``alpha_bar = 1``, ``sigma = 0``) is addressed as ``t = "clean"`` where a model supports it.

The noised marginal at level t is ``q_t(x) = ∫ q_0(y) N(x; sqrt(alpha_bar_t) y, sigma_t^2 I) dy``
(Ho et al., 2020). The cosine schedule follows Nichol & Dhariwal (2021), the linear one
Ho et al. (2020) with its endpoints rescaled to ``T`` levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

import torch

from .errors import InvalidValueError

CLEAN = "clean"
Level = Union[int, str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete VP schedule (float64 tensors of length ``num_levels``).

    Two schedules are equal when their kind and number of levels agree.
    """

    kind: str
    num_levels: int
    betas: torch.Tensor = field(repr=False)

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, dim=0)

    @property
    def sigma(self) -> torch.Tensor:
        return torch.sqrt(1.0 - self.alpha_bar)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and (self.kind, self.num_levels) == (other.kind, other.num_levels)

    def __hash__(self) -> int:
        return hash((self.kind, self.num_levels))

    def __str__(self) -> str:
        return f"{self.kind}(T={self.num_levels})"

    def at(self, t: Level, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_bar_t, sigma_t)`` broadcastable against ``like`` (shape ``[N, ...]``).

        ``t`` is an int, a per-chain integer tensor of shape ``[N]``, or ``"clean"``.
        """
        if isinstance(t, str):
            if t != CLEAN:
                raise InvalidValueError(f"unknown level {t!r}; a level is an integer or 'clean'")
            one = torch.ones((), dtype=like.dtype, device=like.device)
            return one, torch.zeros_like(one)
        alpha_bar = self.alpha_bar.to(device=like.device)
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            a = alpha_bar[t.to(device=like.device, dtype=torch.long)]
            a = a.reshape(a.shape + (1,) * (like.dim() - 1))
        else:
            t = int(t)
            if not 0 <= t < self.num_levels:
                raise InvalidValueError(f"level {t} is outside 0..{self.num_levels - 1}")
            a = alpha_bar[t]
        a = a.to(like.dtype)
        return a, torch.sqrt(1.0 - a)


def cosine(num_levels: int = 100, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Cosine schedule: ``f(t) = cos²(((t/T) + s)/(1 + s) · π/2)``, ``beta_t = 1 - f(t+1)/f(t)``,
    clipped at ``max_beta`` (Nichol & Dhariwal, 2021)."""
    _check_levels(num_levels)
    steps = torch.arange(num_levels + 1, dtype=torch.float64) / num_levels
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
    return Schedule("cosine", num_levels, betas)


def linear(num_levels: int = 100, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Linear schedule of Ho et al. (2020); the endpoints (given for 1000 levels) are scaled by
    ``1000 / T`` so that ``alpha_bar`` at the last level stays near zero for any ``T``."""
    _check_levels(num_levels)
    scale = 1000.0 / num_levels
    betas = torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), num_levels, dtype=torch.float64)
    return Schedule("linear", num_levels, betas)


SCHEDULES = {"cosine": cosine, "linear": linear}


def get(kind: str = "cosine", num_levels: int = 100) -> Schedule:
    """Schedule by name (``"cosine"`` or ``"linear"``)."""
    if kind not in SCHEDULES:
        from .errors import UnknownNameError, suggest

        raise UnknownNameError(f"unknown schedule {kind!r}", hint=suggest(kind, SCHEDULES) or "known: cosine, linear")
    return SCHEDULES[kind](num_levels)


def default() -> Schedule:
    """The schedule every shipped model uses: cosine with 100 levels."""
    return cosine(100)


def _check_levels(num_levels: int) -> None:
    if not isinstance(num_levels, int) or num_levels < 2:
        raise InvalidValueError(f"a schedule needs an integer number of levels >= 2, got {num_levels!r}")
