"""The networks shared by the zoo's families: the residual MLP of the paper's 2D experiments.

The network ``f_θ(x, t)`` (:class:`ResidualMLP`) is the 2D architecture of Du et al. (2023),
"Reduce, Reuse, Recycle", appendix: a linear input layer, ``depth`` residual blocks of width
``width`` (default 4 blocks of 128), each ``h + W_2 SiLU(W_1 LayerNorm(h) + e_t)`` with a
sinusoidal embedding ``e_t`` of the level (Vaswani et al., 2017; Ho et al., 2020), and a
SiLU + linear output layer to ``R^D``. The 2D zoo's energy and score models
(:mod:`rrrdsl.zoo.toy2d.models`) sit on it; the digits family (:mod:`rrrdsl.zoo.digits.nets`)
adds a label embedding or a classification head.

Learned models are defined at the levels ``0 .. T-1`` of their schedule only: the clean level
(``σ = 0``) has no noise to predict (:func:`check_level`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..errors import InvalidValueError
from ..models.base import Model
from ..schedules import CLEAN, Level


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
    this keeps ``log_prob_and_grad`` close to the matmul rate (``rrr bench models``).
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
        return self.body(x, self.time(self.embed(t)))

    def body(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """The network on ``x`` given the blocks' conditioning features ``time`` ``[N or 1, width * depth]``."""
        h = self.input(x.to(self.input.weight.dtype))
        for block, features in zip(self.blocks, time.chunk(self.depth, dim=-1)):
            h = block(h, features)
        return self.output(h).to(x.dtype)


def check_level(t: Level, model: Optional[Model]) -> Level:
    """``t`` unchanged, or :class:`InvalidValueError` for the clean level (no noise to predict)."""
    if isinstance(t, str) and t == CLEAN:
        raise InvalidValueError(
            f"{model.description if model else 'a learned model'} is defined at noise levels 0..T-1 only, not at 'clean'",
            hint="learned models predict noise, and the clean level has none; use level 0",
        )
    return t


def flatten_conditions(x: torch.Tensor, t: Level, count: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of one batched forward over ``count`` conditions of a backbone.

    ``x`` is ``[N, D]`` (the same points under every condition) or ``[count, N, D]`` (one set
    per condition); it comes back flattened condition-major to ``[count*N, D]``, with the levels
    as a long tensor: ``[count*N]`` for per-chain levels ``t`` ``[N]``, ``[1]`` for one level.
    """
    t = check_level(t, None)
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(count, *x.shape)
    if x.dim() != 3 or x.shape[0] != count or x.shape[2] != dim:
        raise InvalidValueError(f"expected x of shape [N, {dim}] or [{count}, N, {dim}], got {list(x.shape)}")
    if isinstance(t, torch.Tensor) and t.dim() > 0:
        levels = t.to(device=x.device, dtype=torch.long).repeat(count)
    else:
        levels = torch.full((1,), int(t), dtype=torch.long, device=x.device)
    return x.reshape(count * x.shape[1], dim), levels
