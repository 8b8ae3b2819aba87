"""The kernel contract shared by every MCMC method (DESIGN.md, "Samplers").

A kernel moves ``N`` independent chains at once, all targeting ``p_t`` at one level ``t``::

    state = kernel.init(x, target, t)                       # evaluates and caches what it needs
    state, info = kernel.step(state, target, t, step_size, generator)

``state`` is a kernel-specific ``NamedTuple`` of tensors with a leading chain dimension and
always a field ``x`` of shape ``[N, D]``; ``info`` is a :class:`StepInfo`. Accept/reject is
decided **per chain** with ``torch.where``; a proposal with a NaN or infinite position, log
density or gradient is rejected and flagged ``divergent``, never propagated.

``target`` is anything with the :class:`Target` protocol (an ``AnnealedTarget`` from
:func:`rrrdsl.compile`, or a hand-written one in tests). ``step_size`` is a float or a
per-chain tensor ``[N]``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Protocol, Union

import torch

from ..schedules import Level, Schedule

StepSize = Union[float, torch.Tensor]


class Target(Protocol):
    """What a kernel needs from an annealed target."""

    dim: int
    num_levels: int
    schedule: Schedule
    has_energy: bool

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:  # [N]
        ...

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:  # [N, D]
        ...

    def log_prob_and_grad(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:  # [N], [N, D]
        ...


class StepInfo(NamedTuple):
    """Per-chain diagnostics of one kernel step (all ``[N]``)."""

    accept_prob: torch.Tensor  # Metropolis acceptance probability (1 for unadjusted kernels)
    accepted: torch.Tensor  # bool: the chain moved to the proposal
    divergent: torch.Tensor  # bool: the proposal was non-finite (or its energy error exploded)
    nfe: torch.Tensor  # gradient evaluations spent by this chain in this step


class Kernel(Protocol):
    """An MCMC transition kernel over a batch of chains."""

    name: str
    #: True when the kernel needs log densities (a Metropolis test) and not only scores
    needs_energy: bool
    #: the acceptance rate that step-size adaptation aims for (None: no adaptation target)
    target_accept: Optional[float]

    def init(self, x: torch.Tensor, target: Target, t: Level) -> Any:
        ...

    def step(
        self, state: Any, target: Target, t: Level, step_size: StepSize, generator: Optional[torch.Generator]
    ) -> tuple[Any, StepInfo]:
        ...
