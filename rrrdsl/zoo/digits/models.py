"""The digits networks as models: the conditional energy backbone, the noise-aware classifier
and the evaluator, batched over conditions (see :mod:`rrrdsl.zoo.digits`)."""

from __future__ import annotations

from typing import Any, Hashable, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ...errors import InvalidValueError, suggest
from ...models.base import Backbone
from ...schedules import Level, Schedule
from ...schedules import default as default_schedule
from ..nets import flatten_conditions
from .data import DIM, NUM_CLASSES
from .nets import ConditionalMLP, Evaluator, classifier_net

#: the label slot meaning "unconditional"
NULL_LABEL = NUM_CLASSES
#: the three networks
KINDS = ("backbone", "classifier", "evaluator")
#: the backbone's base densities (:class:`DigitsBackbone`)
BASES = ("standard_normal", "none")


def label_index(condition: Hashable) -> int:
    """The label slot of a condition: ``None`` -> :data:`NULL_LABEL`, an int 0..9 -> itself."""
    return NULL_LABEL if condition is None else int(condition)  # type: ignore[arg-type]


class _Flat(NamedTuple):
    x: torch.Tensor  # [C*N, D]
    levels: torch.Tensor  # [C*N] or [1]
    sigma: torch.Tensor  # [C*N] or [1]
    labels: torch.Tensor  # [C*N]
    shape: tuple[int, int]  # (C, N)


class _DigitsBase(Backbone):
    """Shared batching: ``x`` ``[N, D]`` tiled over ``C`` conditions, or ``[C, N, D]`` crops, is
    flattened to ``[C*N, D]`` for one forward pass; scores come from autograd of ``log_prob``."""

    param = "energy"
    dim = DIM
    has_energy = True

    def __init__(self, net: nn.Module, schedule: Schedule) -> None:
        self.net = net
        self.schedule = schedule
        #: number of forward passes so far (tests count batching with it)
        self.calls = 0

    def _flatten(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> _Flat:
        count = len(conditions)
        flat, levels = flatten_conditions(x, t, count, self.dim)
        n = flat.shape[0] // count
        sigma = self.schedule.at(levels, flat)[1].reshape(-1)
        labels = torch.tensor([label_index(c) for c in conditions], device=x.device).repeat_interleave(n)
        return _Flat(flat, levels, sigma, labels, (count, n))

    def _log_prob(self, flat: _Flat) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        flat = self._flatten(x, t, conditions)
        self.calls += 1
        return self._log_prob(flat).reshape(flat.shape)

    def score(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        if x.dim() == 2:  # one copy of the points per condition, so that gradients stay apart
            x = x.unsqueeze(0).expand(len(conditions), *x.shape)
        with torch.enable_grad():
            x = x.detach().contiguous().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(x, t, conditions).sum(), x)
        return grad


class DigitsBackbone(_DigitsBase):
    """Energy-parameterised class-conditional digit model over a standard-normal base::

        log q_t(x | y) = -E_θ(x, t, y) / σ_t - ½ ‖x‖²        (base="standard_normal")
        log q_t(x | y) = -E_θ(x, t, y) / σ_t                  (base="none": version-1 checkpoints)

    Since ``E_θ >= 0``, the base bounds the density by ``N(0, I)``: it is proper, and far from
    the data it falls like the base. Without it the energy is free wherever no noised data
    fall, and ``E_θ = 0`` wherever ``f_θ(x) = x``, which the network reaches far outside
    ``[-1, 1]^64`` as easily as on the data: MALA/HMC at the last levels drifted to pixel values
    of 5-12. The base costs the model nothing on the data: the pixels lie in ``[-1, 1]`` and the
    schedule is variance-preserving, so ``q_t / N(0, I)`` is bounded at every level. The noise
    prediction is ``ε̂ = -σ_t ∇_x log q_t = ∇_x E_θ + σ_t x``.
    """

    def __init__(self, net: ConditionalMLP, schedule: Schedule, base: str = "standard_normal") -> None:
        super().__init__(net, schedule)
        if base not in BASES:
            raise InvalidValueError(f"unknown base {base!r}", hint=f"one of {', '.join(BASES)}")
        self.base = base

    def energy(self, x: torch.Tensor, levels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``E_θ(x, t, y) = ½ ‖x - f_θ(x, t, y)‖²``, shape ``[N]``."""
        return 0.5 * (x - self.net(x, levels, labels)).square().sum(-1)

    def log_density(self, x: torch.Tensor, levels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The unnormalised ``log q_t(x | y)``, shape ``[N]``, differentiable in ``x`` and ``θ``."""
        log_q = -self.energy(x, levels, labels) / self.schedule.at(levels, x)[1].reshape(-1)
        return log_q - 0.5 * x.square().sum(-1) if self.base == "standard_normal" else log_q

    def _log_prob(self, flat: _Flat) -> torch.Tensor:
        return self.log_density(flat.x, flat.levels, flat.labels)


class ClassifierBackbone(_DigitsBase):
    """Noise-aware classifier: ``log p(y | x_t, t)`` for every requested label, one pass."""

    param = "classifier"

    def _log_prob(self, flat: _Flat) -> torch.Tensor:
        logits = self.net(flat.x, flat.levels)
        return torch.log_softmax(logits, -1).gather(-1, flat.labels[:, None]).squeeze(-1)


class EvaluatorModel:
    """The evaluator as :class:`rrrdsl.zoo.training.Trainer` and the checkpoints expect it (``net``, ``schedule``)."""

    param = "evaluator"
    dim = DIM

    def __init__(self, net: Evaluator, schedule: Schedule) -> None:
        self.net = net
        self.schedule = schedule


#: a digits network wrapped for sampling and training
DigitsModel = Union["DigitsBackbone", "ClassifierBackbone", "EvaluatorModel"]


def build(kind: str, schedule: Optional[Schedule] = None, base: str = "standard_normal", **sizes: int) -> DigitsModel:
    """A freshly initialised network of ``kind`` wrapped for training (sizes: ``width``,
    ``depth``; ``base``: the backbone's base density, :data:`BASES`)."""
    schedule = schedule or default_schedule()
    match kind:
        case "backbone":
            return DigitsBackbone(ConditionalMLP(DIM, NUM_CLASSES, **sizes), schedule, base)
        case "classifier":
            return ClassifierBackbone(classifier_net(**sizes), schedule)
        case "evaluator":
            return EvaluatorModel(Evaluator(**sizes), schedule)
    raise InvalidValueError(f"unknown digits network {kind!r}", hint=suggest(kind, KINDS) or f"one of {', '.join(KINDS)}")


def sizes(net: nn.Module) -> dict[str, int]:
    """The keyword arguments of :func:`build` that rebuild ``net`` (saved in its checkpoint)."""
    if isinstance(net, Evaluator):
        return {"width": net.width, "features": net.num_features}
    return {"width": net.width, "depth": net.depth}
