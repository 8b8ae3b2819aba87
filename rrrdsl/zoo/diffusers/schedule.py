"""A diffusers model's own noise schedule as an rrrdsl :class:`~rrrdsl.schedules.Schedule`.

A diffusers scheduler holds ``alphas_cumprod`` ``ᾱ(τ)`` at its ``T`` training timesteps
``τ = 0 .. T-1`` (usually 1000). A composition runs on ``K`` levels taken from it: all ``T``
(level ``k`` at timestep ``τ_k = k``), or ``levels=K`` evenly spaced timesteps
``τ_k = k (T-1)/(K-1)`` (the usual sub-schedule of DDIM, Song et al., 2021), where ``ᾱ`` between
two training timesteps is interpolated linearly in ``log ᾱ`` and the network is called at the
float timestep ``τ_k`` itself. The level schedule has ``ᾱ_k = ᾱ(τ_k)`` and
``β_k = 1 - ᾱ_k / ᾱ_{k-1}`` (``β_0 = 1 - ᾱ_0``), so that the reverse (DDPM) steps of
:mod:`rrrdsl.samplers.diffusion` take the jumps of the sub-schedule.

Two schedules are equal when they have the same kind and number of levels; the kind names the
source and a digest of ``ᾱ_k`` (``alphas_cumprod-1f3a9c0b2d4e``), so that two leaves share one
schedule exactly when their ``ᾱ`` agree. Models trained on different schedules meet on ``ᾱ``
(:func:`retime`): on a level schedule given to them, each is called at its own timestep of the
level's ``ᾱ``, ``τ_k = ᾱ⁻¹(ᾱ_k)``, with its ``log ᾱ`` interpolated linearly between training steps.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Optional

import torch

from ...errors import InvalidValueError, at_argument
from ...schedules import Schedule


class NativeSchedule(NamedTuple):
    """The level schedule, the model's (float) timestep ``τ_k`` at every level ``k``, and the
    model's ``ᾱ`` at its training timesteps."""

    schedule: Schedule
    timesteps: torch.Tensor  # [K], float64
    alphas_cumprod: torch.Tensor  # [T], float64


def native_schedule(alphas_cumprod: torch.Tensor, levels: Optional[int] = None) -> NativeSchedule:
    """The levels of a model trained on ``alphas_cumprod`` (all ``T`` training steps, or ``levels``
    evenly spaced ones).

    Parameters
    ----------
    alphas_cumprod
        ``ᾱ(τ)`` at the training timesteps ``τ = 0 .. T-1``: decreasing, in ``(0, 1]``.
    levels
        ``K`` with ``2 <= K <= T``; None for all ``T`` steps.
    """
    alpha_bar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
    steps = alpha_bar.numel()
    if steps < 2 or not bool(torch.all((alpha_bar > 0) & (alpha_bar <= 1))) or bool(torch.any(alpha_bar[1:] >= alpha_bar[:-1])):
        raise InvalidValueError(f"alphas_cumprod must hold at least 2 strictly decreasing values in (0, 1], got {steps} values")
    if levels is None:
        levels = steps
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= steps:
        raise at_argument(InvalidValueError(f"levels must be an integer from 2 to {steps} (the model's training steps), got {levels!r}"), "levels")
    timesteps = torch.linspace(0, steps - 1, levels, dtype=torch.float64)
    below = timesteps.floor().long().clamp(max=steps - 2)
    weight = timesteps - below
    log_alpha_bar = (1 - weight) * alpha_bar[below].log() + weight * alpha_bar[below + 1].log()
    level_alpha_bar = log_alpha_bar.exp()
    previous = torch.cat([torch.ones(1, dtype=torch.float64), level_alpha_bar[:-1]])
    betas = 1.0 - level_alpha_bar / previous
    digest = hashlib.sha256(level_alpha_bar.numpy().tobytes()).hexdigest()[:12]
    return NativeSchedule(Schedule(f"alphas_cumprod-{digest}", levels, betas), timesteps, alpha_bar)


def retime(native: NativeSchedule, schedule: Schedule) -> NativeSchedule:
    """The model of ``native`` on the levels of ``schedule``: at level ``k`` it is called at the
    timestep ``τ_k`` where its own ``ᾱ(τ_k)`` is the level's ``ᾱ_k``.

    Raises :class:`InvalidValueError` when a level's ``ᾱ`` lies outside the model's training
    range ``[ᾱ(T-1), ᾱ(0)]``: the model has never seen that much (or that little) noise.
    """
    if schedule == native.schedule:
        return native
    log_trained = -native.alphas_cumprod.log()  # increasing in τ
    log_levels = -schedule.alpha_bar.log()
    outside = (log_levels < log_trained[0] * (1 - 1e-9)) | (log_levels > log_trained[-1] * (1 + 1e-9))
    if bool(outside.any()):
        k = int(outside.nonzero()[0])
        low, high = float(native.alphas_cumprod[-1]), float(native.alphas_cumprod[0])
        raise InvalidValueError(
            f"level {k} of schedule {schedule} has alpha_bar {float(schedule.alpha_bar[k]):.6g}, outside the model's trained range [{low:.6g}, {high:.6g}]",
            hint="compose it on a schedule within that range, e.g. the model's own (omit schedule=)",
        )
    above = torch.searchsorted(log_trained, log_levels).clamp(1, log_trained.numel() - 1)
    weight = (log_levels - log_trained[above - 1]) / (log_trained[above] - log_trained[above - 1])
    return NativeSchedule(schedule, (above - 1).to(torch.float64) + weight.clamp(0, 1), native.alphas_cumprod)
