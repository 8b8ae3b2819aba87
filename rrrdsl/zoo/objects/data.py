"""Synthetic scenes of objects on a grid (CLEVR-style positions, Du et al., 2023, section 5.3).

An image is ``SIZE × SIZE`` (16×16) pixels, one channel, values in ``[-1, 1]`` (background -1).
It is cut into ``GRID × GRID`` (4×4) cells of 4×4 pixels; cell ``i`` is row ``i // GRID``,
column ``i % GRID``. A scene holds 1 to 5 objects (the number uniform), in distinct cells drawn
uniformly without replacement; an object is a disc of radius ``RADIUS`` ± ``RADIUS_JITTER``
centred at its cell's centre moved by up to ``JITTER`` pixels along each axis (uniform). A disc
is drawn with an anti-aliased edge: a pixel at distance ``d`` from the centre has coverage
``clamp(r + ½ - d, 0, 1)``, and the image is ``-1 + 2 · max`` over the objects' coverages.

Pixel ``(row, column)`` has its centre at coordinates ``(row, column)``, so cell ``(a, b)`` has
its centre at ``(4a + 1.5, 4b + 1.5)`` (:func:`cell_centres`).

A training example (:func:`examples`) is a scene with the cell of one of its objects, drawn
uniformly, as its condition; with probability ``CONDITION_DROPOUT`` the condition is the null
slot :data:`NULL_CELL` instead (condition dropout, Ho & Salimans, 2022), which trains the
unconditional model ``p(x)`` in the same network.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ...errors import InvalidValueError

#: image side in pixels
SIZE = 16
#: cells per side
GRID = 4
#: number of cells
CELLS = GRID * GRID
#: the null condition (the unconditional model); the network has ``CELLS + 1`` condition slots
NULL_CELL = CELLS
#: pixels per cell side
CELL = SIZE // GRID
#: disc radius in pixels, and the half-width of its uniform jitter
RADIUS, RADIUS_JITTER = 1.5, 0.2
#: the largest shift of a disc's centre from its cell's centre, per axis (uniform)
JITTER = 0.5
#: the fewest and most objects of a scene
OBJECTS = (1, 5)
#: probability that a training example's condition is the null cell
CONDITION_DROPOUT = 0.15


def cell_centres() -> torch.Tensor:
    """Pixel coordinates ``(row, column)`` of the centres of the 16 cells, ``[16, 2]`` float32."""
    index = torch.arange(CELLS)
    return torch.stack([index // GRID, index % GRID], dim=1).to(torch.float32) * CELL + (CELL - 1) / 2


def scenes(n: int, seed: int, objects: Sequence[int] = OBJECTS) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random scenes: images ``[n, 1, 16, 16]`` (float32 in ``[-1, 1]``) and occupancy
    ``[n, 16]`` (bool, cell ``i`` holds an object).

    Parameters
    ----------
    n
        Number of scenes, ``>= 0``.
    seed
        The seed of the scenes' own generator: the same ``(n, seed, objects)`` give the same
        scenes, and the global random state is untouched.
    objects
        ``(low, high)``: each scene holds a uniform number of objects in ``low..high``,
        ``1 <= low <= high <= 16``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidValueError(f"scenes: n must be a whole number >= 0, got {n!r}")
    return _draw(n, torch.Generator().manual_seed(int(seed)), *_object_range(objects))


def examples(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training examples: scenes ``[n, 1, 16, 16]`` and their conditions ``[n]`` (long):
    the cell of one of the scene's objects, drawn uniformly, or :data:`NULL_CELL` with
    probability :data:`CONDITION_DROPOUT`."""
    generator = torch.Generator().manual_seed(int(seed))
    images, occupancy = _draw(n, generator, *OBJECTS)
    if n == 0:
        return images, torch.zeros(0, dtype=torch.long)
    cell = torch.multinomial(occupancy.to(torch.float32), 1, generator=generator)[:, 0]
    dropped = torch.rand(n, generator=generator) < CONDITION_DROPOUT
    return images, torch.where(dropped, torch.full_like(cell, NULL_CELL), cell)


def _draw(n: int, generator: torch.Generator, low: int, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    count = torch.randint(low, high + 1, (n,), generator=generator)
    # the first `count` cells of a uniform random permutation of the 16 cells
    order = torch.rand(n, CELLS, generator=generator).argsort(dim=1)
    rank = order.argsort(dim=1)  # rank[j, i]: position of cell i in scene j's permutation
    occupancy = rank < count[:, None]
    centres = cell_centres() + (2 * torch.rand(n, CELLS, 2, generator=generator) - 1) * JITTER  # [n, 16, 2]
    radius = RADIUS + (2 * torch.rand(n, CELLS, generator=generator) - 1) * RADIUS_JITTER  # [n, 16]
    pixels = torch.stack(torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij"), dim=-1).to(torch.float32)
    distance = (pixels[None, None] - centres[:, :, None, None]).norm(dim=-1)  # [n, 16, SIZE, SIZE]
    coverage = (radius[:, :, None, None] + 0.5 - distance).clamp(0, 1) * occupancy[:, :, None, None]
    images = -1 + 2 * coverage.amax(dim=1, keepdim=True)
    return images.to(torch.float32), occupancy


def _object_range(objects: Sequence[int]) -> tuple[int, int]:
    try:
        low, high = (int(k) for k in objects)
    except (TypeError, ValueError):
        raise InvalidValueError(f"scenes: objects must be a pair (low, high), got {objects!r}") from None
    if not 1 <= low <= high <= CELLS or tuple(objects) != (low, high):
        raise InvalidValueError(f"scenes: objects must be whole numbers 1 <= low <= high <= {CELLS}, got {tuple(objects)!r}")
    return low, high
