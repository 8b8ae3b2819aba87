"""The model protocol: a time-indexed family of densities ``q_t`` on R^D sharing one schedule.

Every model has ``dim``, ``schedule``, ``has_energy`` and

* ``score(x, t) -> [N, D]``: ``∇_x log q_t(x)``;
* ``log_prob(x, t) -> [N]``: ``log q_t(x)`` up to a constant per level, differentiable in
  ``x`` with autograd; only when ``has_energy``.

``x`` has shape ``[N, D]``; ``t`` is an int level, a per-chain integer tensor ``[N]``, or
``"clean"`` (alpha_bar = 1) for models that know their clean density (the exact oracles).

Conditional models that share one network (``model("digits", label=3)``) point to a common
:class:`Backbone` and carry their ``condition``; the compiler evaluates all leaves of one
backbone in a graph with a single batched call.

A model of a latent space (a latent diffusion pipeline) has a :class:`Decoder` taking its
samples to images; the samplers never call it, :func:`rrrdsl.sample` does once at the end.
"""

from __future__ import annotations

import abc
from typing import Any, Hashable, Optional, Sequence

import torch

from ..errors import CompileError
from ..schedules import Level, Schedule


class Decoder(abc.ABC):
    """Takes samples of a latent space ``[N, D]`` to images ``[N, C, H, W]`` with values in ``[0, 1]``.

    Two decoders are equal when they decode the same way (so that leaves of two registrations
    of one pipeline share a latent space)."""

    #: the image shape ``(C, H, W)`` of one decoded sample
    shape: tuple[int, int, int]

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The images of latents ``z`` ``[N, D]``: ``[N, C, H, W]``, float32 on the CPU, in ``[0, 1]``."""


class Model(abc.ABC):
    """A diffusion model (learned or exact) seen as an energy-based model at every level."""

    dim: int
    schedule: Schedule
    has_energy: bool = True
    #: shared network for batched evaluation of several conditions, or None
    backbone: Optional["Backbone"] = None
    #: this model's condition within its backbone (hashable), or None
    condition: Hashable = None
    #: the decoder of a latent model's samples, or None for models of the data space itself
    decoder: Optional["Decoder"] = None
    #: a short human-readable description (used in graphs and error messages)
    description: str = ""

    @abc.abstractmethod
    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``∇_x log q_t(x)``, shape ``[N, D]``."""

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``log q_t(x)`` up to a per-level constant, shape ``[N]``."""
        raise CompileError(f"{self.description or type(self).__name__} has no energy (score-only model)")

    @property
    def is_normalized(self) -> bool:
        """True when ``log_prob`` is exactly normalised (the analytic oracles)."""
        return False


class Backbone(abc.ABC):
    """A network shared by several conditional models; evaluates many conditions at once."""

    dim: int
    schedule: Schedule
    has_energy: bool = True
    #: as :attr:`Model.decoder`, shared by the backbone's conditional models
    decoder: Optional[Decoder] = None

    @abc.abstractmethod
    def log_prob(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        """Log densities for every condition in one pass: shape ``[C, N]``.

        ``x`` is ``[N, D]`` (the same points under every condition) or ``[C, N, D]`` (one set
        of points per condition, e.g. different crops of a tapestry canvas).
        """

    @abc.abstractmethod
    def score(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        """Scores for every condition in one pass: shape ``[C, N, D]`` (``x`` as in ``log_prob``)."""


class ConditionalModel(Model):
    """One condition of a :class:`Backbone`, usable on its own as a :class:`Model`."""

    def __init__(self, backbone: Backbone, condition: Hashable, description: str = "") -> None:
        self.backbone = backbone
        self.condition = condition
        self.dim = backbone.dim
        self.schedule = backbone.schedule
        self.has_energy = backbone.has_energy
        self.decoder = backbone.decoder
        self.description = description

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return self.backbone.score(x, t, [self.condition])[0]

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        if not self.has_energy:
            return super().log_prob(x, t)
        return self.backbone.log_prob(x, t, [self.condition])[0]
