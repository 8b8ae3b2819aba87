"""Learned diffusion models: the residual MLP of the paper's 2D experiments, in two parameterisations.

The network ``f_θ(x, t)`` (:class:`ResidualMLP`) is the 2D architecture of Du et al. (2023),
"Reduce, Reuse, Recycle", appendix: a linear input layer, ``depth`` residual blocks of width
``width`` (default 4 blocks of 128), each ``h + W_2 SiLU(W_1 LayerNorm(h) + e_t)`` with a
sinusoidal embedding ``e_t`` of the level (Vaswani et al., 2017; Ho et al., 2020), and a
SiLU + linear output layer to ``R^D``.

Two :class:`~rrrdsl.models.base.Model` parameterisations sit on top of it:

* :class:`ScoreModel` (``has_energy=False``): the network predicts the noise,
  ``ε̂ = f_θ(x, t)``, and ``∇_x log q_t(x) = -ε̂ / σ_t`` (Ho et al., 2020; Song et al., 2021).
* :class:`EnergyModel` (``has_energy=True``): a scalar energy
  ``E_θ(x, t) = ½ ‖x - f_θ(x, t)‖²`` (Salimans & Ho, 2021; Du et al., 2023, section 3.3) whose
  input gradient is the noise prediction, ``ε̂ = ∇_x E_θ``. Since ``ε̂ ≈ -σ_t ∇_x log q_t``,
  ``log q_t(x) = -E_θ(x, t) / σ_t`` up to a constant per level, and the score is ``-ε̂ / σ_t``
  by autograd.

Learned models are defined at the levels ``0 .. T-1`` of their schedule only: the clean level
(``σ = 0``) has no noise to predict.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..errors import InvalidValueError
from ..schedules import CLEAN, Level, Schedule
from .base import Model

#: the parameterisations of a learned model
PARAMS = ("energy", "score")


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal features of the level ``t`` (Vaswani et al., 2017), ``[N] -> [N, width]``.

    Frequencies are geometric between 1 and ``max_period``; the level is used as is (an
    integer ``0 .. T-1``), so ``max_period`` should exceed ``T``.
    """

    def __init__(self, width: int, max_period: float = 10_000.0) -> None:
        super().__init__()
        half = width // 2
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.width = width

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.to(self.frequencies.dtype)[:, None] * self.frequencies[None, :]
        features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        if self.width % 2:
            features = torch.nn.functional.pad(features, (0, 1))
        return features


class ResidualBlock(nn.Module):
    """``h + W_2 SiLU(W_1 LayerNorm(h) + b_1 + e_t)``: a pre-norm residual MLP block.

    The inner bias and the level embedding are added inside the first matmul and the residual
    inside the second (``torch.addmm``), so a block costs two GEMMs, one LayerNorm and one SiLU:
    this keeps ``log_prob_and_grad`` close to the matmul rate (benchmarks/bench_models.py).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width, bias=False)

    def forward(self, h: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        z = torch.addmm(self.inner.bias + time, self.norm(h), self.inner.weight.t())
        return torch.addmm(h, nn.functional.silu(z), self.outer.weight.t())


class ResidualMLP(nn.Module):
    """``f_θ(x, t) : R^D × {0..T-1} -> R^D``, the residual MLP of the paper's 2D experiments.

    Parameters
    ----------
    dim
        Data dimension ``D``.
    width
        Hidden width (default 128).
    depth
        Number of residual blocks (default 4).
    """

    def __init__(self, dim: int, width: int = 128, depth: int = 4) -> None:
        super().__init__()
        if dim < 1 or width < 2 or depth < 1:
            raise InvalidValueError(f"a network needs dim >= 1, width >= 2 and depth >= 1, got {dim}, {width}, {depth}")
        self.dim, self.width, self.depth = dim, width, depth
        self.embed = SinusoidalEmbedding(width)
        # one projection of the time features for all blocks, split per block
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width * depth))
        self.input = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.output = nn.Sequential(nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, D]``; ``t`` integer levels ``[N]`` or ``[1]`` (one level for all points).

        The network runs in the dtype of its weights; the output has the dtype of ``x``.
        """
        times = self.time(self.embed(t)).chunk(self.depth, dim=-1)
        h = self.input(x.to(self.input.weight.dtype))
        for block, time in zip(self.blocks, times):
            h = block(h, time)
        return self.output(h).to(x.dtype)


class NetModel(Model):
    """A diffusion model whose noise prediction ``ε̂(x, t)`` comes from a :class:`ResidualMLP`.

    Subclasses define :meth:`predict_eps`; the score is ``-ε̂ / σ_t`` for both.
    """

    param: str

    def __init__(self, net: ResidualMLP, schedule: Schedule, description: str = "") -> None:
        self.net = net
        self.schedule = schedule
        self.dim = net.dim
        self.description = description or f"learned {self.param} model ({net.width}x{net.depth} MLP)"

    def predict_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> torch.Tensor:
        """The noise prediction ``ε̂(x, t)``, ``[N, D]``; ``create_graph`` keeps it differentiable
        in the parameters and ``x`` (for training)."""
        raise NotImplementedError

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return -self.predict_eps(x, t) / self.sigma(t, x)

    def sigma(self, t: Level, like: torch.Tensor) -> torch.Tensor:
        """``σ_t`` broadcastable against ``like`` ``[N, D]``; the clean level is rejected."""
        return self.schedule.at(_check_level(t, self), like)[1]

    def levels(self, t: Level, x: torch.Tensor) -> torch.Tensor:
        """The level(s) as an integer tensor ``[1]`` or ``[N]`` for the network."""
        t = _check_level(t, self)
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return t.to(device=x.device, dtype=torch.long)
        return torch.full((1,), int(t), dtype=torch.long, device=x.device)


class ScoreModel(NetModel):
    """ε-prediction model: ``ε̂ = f_θ(x, t)``, score ``-ε̂ / σ_t``; no energy (Ho et al., 2020)."""

    param = "score"
    has_energy = False

    def predict_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> torch.Tensor:
        return self.net(x, self.levels(t, x))


class EnergyModel(NetModel):
    """Energy model ``E_θ(x, t) = ½ ‖x - f_θ(x, t)‖²`` with ``ε̂ = ∇_x E_θ`` and
    ``log q_t = -E_θ / σ_t`` up to a constant (Salimans & Ho, 2021; Du et al., 2023)."""

    param = "energy"
    has_energy = True

    def energy(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``E_θ(x, t)``, shape ``[N]``, differentiable in ``x``."""
        return 0.5 * (x - self.net(x, self.levels(t, x))).square().sum(-1)

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return -self.energy(x, t) / self.sigma(t, x).reshape(-1)

    def predict_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> torch.Tensor:
        return self.energy_and_eps(x, t, create_graph)[1]

    def energy_and_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E_θ, ∇_x E_θ)`` with one forward and one backward pass."""
        with torch.enable_grad():
            if not (create_graph and x.requires_grad):
                x = x.detach().requires_grad_(True)
            energy = self.energy(x, t)
            (eps,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        return (energy, eps) if create_graph else (energy.detach(), eps)

    def log_prob_and_grad(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log q_t(x), ∇_x log q_t(x))`` with one forward and one backward pass."""
        energy, eps = self.energy_and_eps(x, t)
        sigma = self.sigma(t, x)
        return -energy / sigma.reshape(-1), -eps / sigma


MODELS = {"energy": EnergyModel, "score": ScoreModel}


def make_model(
    param: str, dim: int, schedule: Schedule, width: int = 128, depth: int = 4, description: str = ""
) -> NetModel:
    """A freshly initialised learned model of parameterisation ``param`` (``"energy"`` or ``"score"``)."""
    return model_class(param)(ResidualMLP(dim, width, depth), schedule, description)


def model_class(param: str) -> type[NetModel]:
    """The :class:`NetModel` subclass for ``param``."""
    if param not in MODELS:
        from ..errors import suggest

        raise InvalidValueError(
            f"unknown parameterisation {param!r}", hint=suggest(param, MODELS) or "expected 'energy' or 'score'"
        )
    return MODELS[param]


def _check_level(t: Level, model: Optional[Model]) -> Level:
    if isinstance(t, str) and t == CLEAN:
        raise InvalidValueError(
            f"{model.description if model else 'a learned model'} is defined at noise levels 0..T-1 only, not at 'clean'",
            hint="learned models predict noise, and the clean level has none; use level 0",
        )
    return t
