"""A plain torch module as a diffusion model: ``rrrdsl.register_model("mine", module, shape=...)``.

Any ``nn.Module`` called as ``module(x, t)`` (``x`` ``[B, C, H, W]``, ``t`` float timesteps
``[B]``; with ``labels``, also ``class_labels=`` ``[B]``) that returns a tensor (or an object
with ``.sample``) of the shape of ``x`` is wrapped by the adapter (:mod:`.adapter`). Its
training schedule is ``alphas_cumprod`` (default: the linear schedule of Ho et al., 2020,
``β`` from 1e-4 to 0.02 over 1000 steps, diffusers' ``DDPMScheduler`` default).
:func:`wrap_module` is installed into the registry by :func:`register`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ...models.registry import ModelFactory, register_wrapper
from .adapter import DiffusersBackbone, leaf_factory
from .conditions import Conditions, Labels, Unconditional
from .schedule import native_schedule

#: training steps of the default schedule
DEFAULT_STEPS = 1000


def linear_alphas_cumprod(steps: int = DEFAULT_STEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """``ᾱ`` of the linear schedule of Ho et al. (2020): ``β`` linear from ``beta_start`` to
    ``beta_end``, computed in float32 as diffusers' ``DDPMScheduler`` does, so that a module and a
    pipeline on that schedule share one level schedule (:mod:`.schedule` compares ``ᾱ`` exactly)."""
    return torch.cumprod(1.0 - torch.linspace(beta_start, beta_end, steps, dtype=torch.float32), dim=0)


def wrap_module(
    name: str,
    module: nn.Module,
    *,
    shape: Sequence[int],
    alphas_cumprod: Optional[torch.Tensor] = None,
    prediction: str = "epsilon",
    levels: Optional[int] = None,
    energy: Optional[str] = None,
    labels: Optional[int] = None,
    max_batch: Optional[int] = None,
) -> ModelFactory:
    """The factory of ``model(name, ...)`` for the denoiser ``module``.

    Parameters
    ----------
    shape
        The image shape ``(C, H, W)`` the module takes.
    alphas_cumprod, levels
        The training schedule and the levels sampled (:func:`.schedule.native_schedule`).
    prediction, energy, max_batch
        As in :class:`.adapter.DiffusersBackbone`.
    labels
        The number of class embeddings of a class-conditional module (the last one is the
        unconditional slot), or None.
    """
    native = native_schedule(linear_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod, levels)
    conditions: Conditions = Unconditional() if labels is None else Labels(labels)
    backbone = DiffusersBackbone(module, native, shape, prediction, energy, conditions, max_batch)
    return leaf_factory(name, lambda: backbone)


def register() -> None:
    """Let :func:`rrrdsl.register_model` take torch modules."""
    register_wrapper(nn.Module, wrap_module)
