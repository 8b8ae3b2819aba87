"""Reverse diffusion with a (composed) score: DDPM ancestral steps and DDIM.

Indexing follows :mod:`rrrdsl.schedules`: level 0 is the least noisy, ``T - 1`` the noisiest,
and the forward (noising) kernel from level ``t`` to ``t + 1`` is

    L(x_{t+1} | x_t) = N(sqrt(alpha_{t+1}) x_t, beta_{t+1} I),

so that ``alpha_bar_{t+1} = alpha_bar_t * alpha_{t+1}``. A reverse step goes from level
``t + 1`` to level ``t`` using the score ``s = ∇ log p_{t+1}(x_{t+1})``; with it the noise
estimate is ``eps = -sigma_{t+1} s`` and Tweedie's clean estimate is
``x0 = (x_{t+1} + sigma_{t+1}^2 s) / sqrt(alpha_bar_{t+1})``.

Both steps are Gaussian transitions ``N(mean, std^2 I)``; :func:`reverse_moments` returns
their moments (SMC needs the proposal density), :func:`reverse_step` draws from them.

* **DDPM** (Ho et al., 2020, eq. 11, posterior variance β̃):
  ``mean = (x_{t+1} + beta_{t+1} s) / sqrt(alpha_{t+1})``,
  ``std^2 = β̃_{t+1} = beta_{t+1} (1 - alpha_bar_t) / (1 - alpha_bar_{t+1})``.
* **DDIM** (Song et al., 2021, eq. 12 and 16):
  ``sigma_eta = eta * sqrt(β̃_{t+1})``,
  ``mean = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t - sigma_eta^2) eps``, ``std = sigma_eta``.
  ``eta = 1`` is the DDPM step (the same mean and variance), ``eta = 0`` is deterministic.

With the score of a *product* of models these steps are biased even with exact models: the
sum of the noisy scores is not the score of the noised product (Du et al., 2023).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch

from ..schedules import Schedule
from .options import check_choice, check_real

#: the reverse-diffusion methods: DDPM ancestral sampling and DDIM
METHODS = ("ddpm", "ddim")
#: DDIM's stochasticity when not given: 1, the DDPM step
ETA = 1.0
#: the defaults of the two reverse-diffusion samplers: DDPM, and deterministic DDIM
REVERSE_DEFAULTS: dict[str, dict[str, object]] = {
    "reverse": {"reverse": "ddpm"},
    "ddim": {"reverse": "ddim", "eta": 0.0},
}


def check_reverse(reverse: Optional[str], eta: float) -> None:
    """The move between levels is ``"ddpm"``, ``"ddim"`` or ``None`` and ``eta`` is in ``[0, 1]``."""
    check_choice("reverse", reverse, (*METHODS, None))
    check_real("eta", eta, 0.0, 1.0)


class Transition(NamedTuple):
    """A Gaussian reverse transition ``N(mean, std^2 I)`` from level ``t + 1`` to ``t``."""

    mean: torch.Tensor  # [N, D]
    std: torch.Tensor  # scalar tensor (the same for every chain)


def reverse_moments(
    x: torch.Tensor, score: torch.Tensor, schedule: Schedule, t: int, method: str = "ddpm", eta: float = ETA
) -> Transition:
    """Mean and standard deviation of the reverse step from level ``t + 1`` to level ``t``.

    Parameters
    ----------
    x
        Points at level ``t + 1``, shape ``[N, D]``.
    score
        ``∇ log p_{t+1}(x)``, shape ``[N, D]``.
    schedule
        The VP schedule of the target.
    t
        The destination level, ``0 <= t < T - 1``.
    method
        ``"ddpm"`` (Ho et al., 2020) or ``"ddim"`` (Song et al., 2021).
    eta
        DDIM stochasticity in ``[0, 1]`` (ignored by DDPM).
    """
    scale, shift, std = _coefficients(schedule, t, method, eta, x.dtype, x.device)
    if method == "ddpm":
        return Transition(torch.addcmul(x, shift, score).div_(scale), std)
    return Transition(torch.addcmul(scale * x, shift, score), std)


@functools.lru_cache(maxsize=4096)
def _coefficients(
    schedule: Schedule, t: int, method: str, eta: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 0-dim coefficients of the reverse step into level ``t``, formed in float64 once per
    level (cached): DDPM's ``(sqrt(alpha_{t+1}), beta_{t+1}, std)`` of
    ``mean = (x + beta s) / sqrt(alpha)``; DDIM's ``(a, b, std)`` of ``mean = a x + b s``, with
    ``a = sqrt(alpha_bar_t / alpha_bar_{t+1})`` and
    ``b = sqrt(alpha_bar_t) sigma_{t+1}^2 / sqrt(alpha_bar_{t+1}) - sqrt(1 - alpha_bar_t - sigma_eta^2) sigma_{t+1}``
    (Tweedie's ``x0`` and ``eps = -sigma_{t+1} s`` substituted into the DDIM mean)."""
    betas = schedule.betas.to(device=device, dtype=torch.float64)
    alpha_bar = schedule.alpha_bar.to(device=device)
    beta_next, alpha_bar_t, alpha_bar_next = betas[t + 1], alpha_bar[t], alpha_bar[t + 1]
    posterior_var = beta_next * (1.0 - alpha_bar_t) / (1.0 - alpha_bar_next)
    if method == "ddpm":
        return torch.sqrt(1.0 - beta_next).to(dtype), beta_next.to(dtype), torch.sqrt(posterior_var).to(dtype)
    var_next = 1.0 - alpha_bar_next
    var_eta = eta**2 * posterior_var
    root = torch.sqrt(alpha_bar_t / alpha_bar_next)
    shift = root * var_next - torch.sqrt(1.0 - alpha_bar_t - var_eta) * torch.sqrt(var_next)
    return root.to(dtype), shift.to(dtype), torch.sqrt(var_eta).to(dtype)


def reverse_step(transition: Transition, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Draw ``x_t ~ N(mean, std^2 I)`` from a reverse transition (deterministic when ``std = 0``)."""
    noise = torch.randn(
        transition.mean.shape, generator=generator, dtype=transition.mean.dtype, device=transition.mean.device
    )
    return torch.addcmul(transition.mean, transition.std, noise)


def transition_log_prob(transition: Transition, x: torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, std^2 I)`` per chain, shape ``[N]`` (the proposal density ``K`` of SMC)."""
    return _gaussian_log_prob(x, transition.mean, transition.std)


def forward_log_prob(x_next: torch.Tensor, x: torch.Tensor, schedule: Schedule, t: int) -> torch.Tensor:
    """``log L(x_{t+1} | x_t)`` of the forward noising kernel ``N(sqrt(alpha_{t+1}) x_t, beta_{t+1} I)``.

    SMC uses it as the backward kernel of a reverse-diffusion move (Del Moral et al., 2006).
    """
    beta_next = schedule.betas[t + 1].to(device=x.device, dtype=x.dtype)
    return _gaussian_log_prob(x_next, torch.sqrt(1.0 - beta_next) * x, torch.sqrt(beta_next))


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    dim = x.shape[-1]
    return (
        -0.5 * ((x - mean) ** 2).sum(-1) / std**2
        - dim * torch.log(std)
        - 0.5 * dim * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype, device=x.device))
    )
