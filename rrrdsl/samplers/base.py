"""The kernel contract shared by every MCMC method (DESIGN.md, "Samplers").

A kernel moves ``N`` independent chains at once, all targeting ``p_t`` at one level ``t``::

    state = kernel.init(x, target, t)                       # evaluates and caches what it needs
    state, info = kernel.step(state, target, t, step_size, generator)

``state`` is a kernel-specific ``NamedTuple`` of tensors with a leading chain dimension and
always a field ``x`` of shape ``[N, D]``; ``info`` is a :class:`StepInfo`. Accept/reject is
decided **per chain** with ``torch.where``; a proposal with a NaN or infinite position, log
density or gradient is rejected and flagged ``divergent``, never propagated.

``target`` is anything with the :class:`Target` protocol (an ``AnnealedTarget`` from
:func:`rrrdsl.compile`, or a hand-written one in tests): kernels never compile an expression.
``step_size`` is a float or a per-chain tensor ``[N]``.

Each kernel module also says what it knows: its options as a frozen dataclass (defaults,
allowed ranges checked on construction, the target acceptance of step-size adaptation) and the
:class:`AnnealedDefaults` of the annealed sampler built on it. The sampling entry point
(:mod:`rrrdsl.samplers.api`) only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, NamedTuple, Optional, Protocol, Union

import torch

from ..schedules import Level, Schedule

StepSize = Union[float, torch.Tensor]

#: which levels get MCMC: None (all), an inclusive pair ``(lo, hi)``, a ``range``, or a predicate
LevelSet = Union[None, tuple[int, int], range, Callable[[int], bool]]

#: the levels that get MCMC by default in the annealed samplers: the last ten. Measured on
#: ``oracle("ring") * oracle("bar")`` at equal NFE (at most 1000 per particle,
#: ``rrr bench samplers``): many steps at each of the last ten levels and a plain
#: reverse step everywhere else beat a few steps at every level (MMD / floor 1.1 vs 2.7 for
#: MALA), because the product bias of reverse diffusion is made at the low-noise levels, while
#: mass stuck in a wrong mode at high noise cannot be moved by local MCMC anyway.
LAST_LEVELS = (0, 9)


@dataclass(frozen=True)
class AnnealedDefaults:
    """The defaults of the annealed sampler named after a kernel.

    Each annealed sampler spends at most 1000 gradient evaluations per particle on a 100-level
    schedule. The step size at level ``t`` starts at ``step_scale * beta_t ** step_exponent``
    (``c * beta_t ** b``, :mod:`rrrdsl.samplers.adapt`); SMC uses the same ``(c, b)`` for its
    kernel. The ``(c, b)`` were picked on ``oracle("ring") * oracle("bar")`` with the cosine-100
    schedule (``rrr bench samplers --sweep``, table in ``benchmarks/results/samplers.md``):
    for the unadjusted ULA/UHA, which do not adapt, the best (or near-best) MMD of the sweep
    without adaptation; for MALA/HMC/NUTS, which adapt, the best unadapted ``(c, b)`` is only the
    starting point (NUTS shares HMC's).

    Parameters
    ----------
    steps
        Kernel steps ``K`` per MCMC level.
    step_scale, step_exponent
        ``c`` and ``b`` of the default step size ``c * beta_t ** b``.
    kernel
        The kernel's options in the annealed sampler (an instance of the kernel's options
        dataclass); the fields that differ from the kernel's own defaults are the sampler's.
    mcmc_levels
        The levels that get MCMC (:data:`LAST_LEVELS`).
    """

    steps: int
    step_scale: float
    step_exponent: float
    kernel: Any
    mcmc_levels: LevelSet = LAST_LEVELS

    def as_options(self) -> dict[str, Any]:
        """The sampler's option defaults: ``steps``, the kernel options it changes, ``mcmc_levels``."""
        own = type(self.kernel)()
        changed = {f.name: getattr(self.kernel, f.name) for f in fields(self.kernel)}
        changed = {k: v for k, v in changed.items() if v != getattr(own, k)}
        return {"steps": self.steps, **changed, "mcmc_levels": self.mcmc_levels}


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
    """An MCMC transition kernel over a batch of chains.

    A kernel may also offer ``fixed_steps(state, target, t, step_size, generator, steps)``, which
    returns the state and the list of :class:`StepInfo` of ``steps`` calls of ``step`` at one step
    size; the annealed driver then calls it once per level where the step size does not adapt
    within the level (:meth:`rrrdsl.samplers.langevin.ULA.fixed_steps`: one finiteness test per level).
    """

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


class OptionsKernel:
    """A kernel configured by a frozen options dataclass (its class attribute ``Options``).

    ``kernel.options`` holds the checked options; ``needs_energy`` and ``target_accept`` are the
    options' (they can depend on them, e.g. ``mh``). ``annealed`` holds the defaults of the
    annealed sampler of the same name.
    """

    name: ClassVar[str]
    Options: ClassVar[type]
    annealed: ClassVar[AnnealedDefaults]

    def __init__(self, **options: Any) -> None:
        self.options = self.Options(**options)

    @property
    def needs_energy(self) -> bool:
        return self.options.needs_energy

    @property
    def target_accept(self) -> Optional[float]:
        return self.options.target_accept

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self.options, f.name)!r}" for f in fields(self.options))
        return f"{type(self).__name__}({shown})"
