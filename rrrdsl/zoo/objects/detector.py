"""A deterministic object detector for the scenes of :mod:`.data`: no learned evaluator in the loop.

Cell ``i`` holds an object when the mean intensity of the ``PATCH × PATCH`` pixels nearest its
centre (rows and columns ``4a + 1 .. 4a + 2`` for a cell at row ``a``) exceeds
:data:`THRESHOLD`. On real scenes the two classes are separated by a gap (a disc of radius
``≥ 1.3`` shifted by at most half a pixel covers most of its patch; a neighbour's disc never
reaches it), and the threshold is the middle of that gap measured on calibration scenes
(:func:`calibrate`: the largest margin on both sides). Its accuracy per cell on held-out scenes
is :func:`accuracy` (1.0 on every cell for the shipped threshold, see ``tests/test_objects.py``).
"""

from __future__ import annotations

import torch

from ...errors import InvalidValueError
from .data import CELL, CELLS, GRID, SIZE, scenes

#: side of the patch averaged at each cell centre, in pixels
PATCH = 2
#: the calibrated threshold on a patch's mean intensity (:func:`calibrate` on :data:`CALIBRATION`)
THRESHOLD = -0.2364
#: (scenes, seed) of the calibration set and of the held-out set
CALIBRATION, HELD_OUT = (4000, 1001), (4000, 2002)


def patch_means(images: torch.Tensor) -> torch.Tensor:
    """Mean intensity of the patch at each cell centre, ``[n, 16]``, for images ``[n, 1, 16, 16]``
    or flat ``[n, 256]`` (the samplers' view)."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (2, 4) or images.shape[1:] not in ((SIZE * SIZE,), (1, SIZE, SIZE)):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidValueError(f"detect: images must be [n, 1, {SIZE}, {SIZE}] or [n, {SIZE * SIZE}], got {shape}")
    grid = images.reshape(-1, GRID, CELL, GRID, CELL).to(torch.float32)  # [n, row, y, column, x]
    start = (CELL - PATCH) // 2
    patch = grid[:, :, start:start + PATCH, :, start:start + PATCH]
    return patch.mean(dim=(2, 4)).reshape(-1, CELLS)


def detect(images: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """Which cells hold an object: bool ``[n, 16]`` (cell ``i`` = row ``i // 4``, column ``i % 4``)."""
    return patch_means(images) > threshold


def calibrate(n: int = CALIBRATION[0], seed: int = CALIBRATION[1]) -> float:
    """The threshold halfway between the largest patch mean of an empty cell and the smallest of
    an occupied one over ``n`` scenes (seed ``seed``), rounded to 4 decimals."""
    images, occupancy = scenes(n, seed)
    means = patch_means(images)
    empty, occupied = float(means[~occupancy].max()), float(means[occupancy].min())
    if empty >= occupied:
        raise InvalidValueError(f"calibration: the patch means of empty ({empty:.4f}) and occupied ({occupied:.4f}) cells overlap")
    return round((empty + occupied) / 2, 4)


def accuracy(threshold: float = THRESHOLD, n: int = HELD_OUT[0], seed: int = HELD_OUT[1]) -> torch.Tensor:
    """The detector's accuracy per cell ``[16]`` on ``n`` held-out scenes (seed ``seed``)."""
    images, occupancy = scenes(n, seed)
    return (detect(images, threshold) == occupancy).to(torch.float64).mean(dim=0)
