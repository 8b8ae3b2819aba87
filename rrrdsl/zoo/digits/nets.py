"""The digits networks: a label-conditioned residual MLP, a noise-aware classifier net and the
clean-digit evaluator (see :mod:`rrrdsl.zoo.digits`)."""

from __future__ import annotations

import torch
from torch import nn

from ..nets import ResidualMLP
from .data import DIM, NUM_CLASSES


class ConditionalMLP(ResidualMLP):
    """``f_θ(x, t, y)``: the residual MLP of :mod:`rrrdsl.zoo.nets` with a label embedding.

    The embedding of the label (``0 .. num_labels-1``, or ``num_labels`` for "none") is added
    to the per-block level features, so the blocks see ``e_t + e_y``.
    """

    def __init__(self, dim: int, num_labels: int, width: int = 128, depth: int = 3) -> None:
        super().__init__(dim, width, depth)
        self.num_labels = num_labels
        self.label = nn.Embedding(num_labels + 1, width * depth)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x`` ``[N, D]``, ``t`` ``[N]`` or ``[1]``, ``labels`` ``[N]`` -> ``[N, D]``."""
        return self.body(x, self.time(self.embed(t)) + self.label(labels))


def classifier_net(width: int = 128, depth: int = 2) -> ResidualMLP:
    """A time-conditioned residual MLP ``R^64 × levels -> R^10`` (logits)."""
    net = ResidualMLP(DIM, width, depth)
    net.output = nn.Sequential(nn.SiLU(), nn.Linear(width, NUM_CLASSES))
    return net


class Evaluator(nn.Module):
    """Clean-digit classifier ``64 -> width -> features -> 10`` (ReLU MLP) with a feature layer."""

    def __init__(self, width: int = 256, features: int = 64) -> None:
        super().__init__()
        self.width, self.num_features = width, features
        self.body = nn.Sequential(nn.Linear(DIM, width), nn.ReLU(), nn.Linear(width, features), nn.ReLU())
        self.head = nn.Linear(features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[N, features]`` (for the Fréchet distance)."""
        return self.body(x.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most likely label of each image ``[N]``."""
        return self(x).argmax(-1)
