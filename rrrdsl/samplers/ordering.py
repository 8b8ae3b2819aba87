"""The order in which systematic resampling sees the particles: along a Hilbert curve.

Systematic resampling (Kitagawa, 1996) gives output ``j`` of ``N`` to the particle whose
cumulative-weight interval holds ``(u + j) / N``, so the particles of any run of consecutive
indices whose weights sum to ``W`` get ``N W`` children, give or take one. In the order the
particles are stored (their ancestors' draw order, unrelated to where they lie) that guarantee
is worth nothing: the children a mode gets scatter nearly as much as under multinomial
resampling. Sorted along a space-filling curve first, the particles of one region, and so of
one mode, are consecutive, and each mode gets its weight's share of children within one or two;
Gerber, Chopin & Whiteley (2019, *Ann. Statist.* 47(4), "Negative association, ordering and
convergence of resampling methods") prove this Hilbert-ordered systematic resampling consistent
and of lower variance. The order is a function of the particles only, drawn before the uniform
``u``, so every particle still gets ``N w_i`` children in expectation: weights, ``log Z`` and its
unbiasedness do not change.

:func:`hilbert_order` maps each coordinate through a logistic of its standardised value (the
transform of Gerber & Chopin's SQMC, 2015) to ``bits`` bits and sorts by the index along the
``d``-dimensional Hilbert curve (Skilling, 2004, "Programming the Hilbert curve", AIP Conf.
Proc. 707). Above :data:`MAX_DIM` dimensions it sorts the particles' coordinates on their
:data:`MAX_DIM` leading principal components (subspace iteration, Halko, Martinsson & Tropp,
2011), where the particles of separated modes still lie apart.
"""

from __future__ import annotations

import functools

import torch

#: the most dimensions the curve runs through; above, the leading principal components
MAX_DIM = 4
#: bits of one Hilbert index: ``TABLE_BITS // d`` bits per coordinate
TABLE_BITS = 20
#: from this many particles on, the index is read from a table of every cell's
#: (:func:`hilbert_table`, 2^20 entries, built once per process in about 0.7 s) instead of
#: computed per particle (0.4 s against 1.1 s per ordering of 3 10^6 particles in 2-D; a few
#: orderings of 2^17 cost about the table); the same numbers either way
TABLE_FROM = 1 << 17
#: subspace-iteration passes for the principal components
POWER_ITERATIONS = 4


def hilbert_order(x: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts the rows of ``x`` ``[N, d]`` along a Hilbert curve.

    Deterministic (no random numbers) and invariant to shifting and scaling each coordinate.
    Rows that are not finite come last, in their storage order.
    """
    n, d = x.shape
    if n < 2:
        return torch.arange(n, device=x.device)
    z = x.detach()
    finite = torch.isfinite(z).all(dim=1)
    z = torch.where(finite[:, None], z, torch.zeros((), dtype=z.dtype, device=z.device))
    if d > MAX_DIM:
        z = leading_components(z, finite, MAX_DIM)
    dim = z.shape[1]
    bits = TABLE_BITS // dim
    cells = _cells(z, finite, bits)
    if n >= TABLE_FROM:
        cell = cells[:, 0]
        for i in range(1, dim):  # the cell's row-major number
            cell = (cell << bits) | cells[:, i]
        index = hilbert_table(dim, bits, x.device)[cell]
    else:
        index = hilbert_index(cells.to(torch.int32), bits)  # TABLE_BITS < 32
    index = torch.where(finite, index, torch.full_like(index, 1 << TABLE_BITS))
    return torch.sort(index, stable=True).indices


@functools.lru_cache(maxsize=None)
def hilbert_table(d: int, bits: int, device: torch.device) -> torch.Tensor:
    """The Hilbert index (:func:`hilbert_index`) of every cell of the ``d``-dimensional grid of
    side ``2^bits``, by the cell's row-major number (int32, computed once per shape)."""
    side = torch.arange(1 << bits, dtype=torch.int64)
    cells = torch.cartesian_prod(*[side] * d).reshape(-1, d)
    return hilbert_index(cells, bits).to(device=device, dtype=torch.int32)


def _cells(z: torch.Tensor, finite: torch.Tensor, bits: int) -> torch.Tensor:
    """Each coordinate's cell ``0 .. 2^bits - 1`` after a logistic of its standardised value."""
    rows = z[finite] if bool(finite.any()) else z
    sd, mean = torch.std_mean(rows.to(torch.float64), dim=0, correction=0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    u = torch.sigmoid((z - mean.to(z.dtype)) / sd.to(z.dtype))
    return torch.clamp(u * (1 << bits), 0, (1 << bits) - 1).to(torch.int64)  # truncation: the floor of u >= 0


def hilbert_index(cells: torch.Tensor, bits: int) -> torch.Tensor:
    """The index along the ``d``-dimensional Hilbert curve of order ``bits`` of each row of integer
    coordinates ``cells`` ``[N, d]`` in ``0 .. 2^bits - 1`` (Skilling, 2004: axes to transpose,
    then the transpose's bits interleaved), in ``cells``' dtype; ``d * bits`` must be at most 63
    (31 in int32)."""
    d = cells.shape[1]
    if d * bits > 63:
        raise ValueError(f"a Hilbert index of {d} x {bits} bits does not fit in an int64")
    x = [cells[:, i].clone() for i in range(d)]
    q = 1 << (bits - 1)
    while q > 1:  # undo the excess work of the inverse transform
        p = q - 1
        for i in range(d):
            high = (x[i] & q) != 0
            swap = (x[0] ^ x[i]) & p
            x0 = torch.where(high, x[0] ^ p, x[0] ^ swap)
            xi = torch.where(high, x[i], x[i] ^ swap) if i else x0
            x[0], x[i] = x0, xi
        q >>= 1
    for i in range(1, d):  # Gray encode
        x[i] = x[i] ^ x[i - 1]
    flip = torch.zeros_like(x[0])
    q = 1 << (bits - 1)
    while q > 1:
        flip = torch.where((x[d - 1] & q) != 0, flip ^ (q - 1), flip)
        q >>= 1
    x = [xi ^ flip for xi in x]
    index = torch.zeros_like(x[0])
    for b in range(bits - 1, -1, -1):  # bit b of every coordinate, the first coordinate highest
        for i in range(d):
            index = (index << 1) | ((x[i] >> b) & 1)
    return index


def leading_components(z: torch.Tensor, finite: torch.Tensor, k: int) -> torch.Tensor:
    """The coordinates of the rows of ``z`` ``[N, d]`` on their ``k`` leading principal components,
    by subspace iteration from the first ``k`` centred finite rows (deterministic; Halko,
    Martinsson & Tropp, 2011, alg. 4.3)."""
    rows = z[finite]
    centred = rows - rows.mean(dim=0) if rows.shape[0] else rows
    start = torch.cat([centred[:k], torch.eye(k, z.shape[1], dtype=z.dtype, device=z.device)])[:k]
    basis = torch.linalg.qr(start.T).Q  # [d, k]
    for _ in range(POWER_ITERATIONS):
        basis = torch.linalg.qr(centred.T @ (centred @ basis)).Q
    mean = rows.mean(dim=0) if rows.shape[0] else torch.zeros_like(z[0])
    return (z - mean) @ basis
