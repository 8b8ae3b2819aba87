"""The 8×8 digits data set and its fixed splits (see :mod:`rrrdsl.zoo.digits`)."""

from __future__ import annotations

import torch

from ...errors import InvalidValueError, suggest

SIDE = 8
DIM = SIDE * SIDE
NUM_CLASSES = 10
#: fractions of the fixed permutation given to each split
SPLITS = {"train": (0.0, 0.55), "evaluator": (0.55, 0.80), "test": (0.80, 1.0)}


def load(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Digits of one split: images ``[M, 64]`` in ``[-1, 1]`` (float32) and labels ``[M]``."""
    if split not in SPLITS:
        raise InvalidValueError(f"unknown digits split {split!r}", hint=suggest(split, SPLITS) or f"one of {', '.join(SPLITS)}")
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.as_tensor(data.data, dtype=torch.float32) / 8.0 - 1.0
    labels = torch.as_tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    lo, hi = (round(f * len(order)) for f in SPLITS[split])
    return images[order[lo:hi]], labels[order[lo:hi]]

