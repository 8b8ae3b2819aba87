"""Canvas frames: the coordinates each term of an energy graph is evaluated on.

A graph lives on a canvas, a flat vector ``(D,)`` or an image ``(H, W)`` (row-major, flat index
``r * W + c``); a :class:`~rrrdsl.lang.ir.View` evaluates its term on a crop of its parent's
frame. This module infers the canvas, applies crops, and lists the distinct ``(leaf, frame)``
atoms after checking that every leaf's dimension equals its frame's size.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

from ..errors import InvalidValueError, ShapeError
from ..lang.ir import Expr, Leaf, Mixture, Power, Product, Region, View
from ..lang.printer import format_region

Canvas = Union[int, tuple[int, ...], None]
#: most coordinates a canvas may have (a 4096 x 4096 image): crops and frames list positions,
#: so a canvas is checked against this before anything of its size is allocated
MAX_CANVAS = 2**24


class Frame(NamedTuple):
    """The coordinates a term is evaluated on: a crop of the canvas (or the canvas itself).

    ``index`` holds the flat canvas positions of the frame's coordinates in order (None for the
    whole canvas); ``shape`` is ``(D,)`` for a vector or ``(H, W)`` for an image (row-major,
    flat index ``r * W + c``); ``label`` names the frame in error messages.
    """

    index: Optional[tuple[int, ...]]
    shape: tuple[int, ...]
    label: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def positions(self) -> tuple[int, ...]:
        return self.index if self.index is not None else tuple(range(self.size))


def crop_frame(frame: Frame, node: View) -> Frame:
    """The frame of ``node.term``: ``node.region`` applied to ``frame``; ShapeError if outside."""
    region: Region = node.region
    label = f"crop(..., {format_region(region)})"
    if len(frame.shape) == 1:
        if region.dims is None:
            raise ShapeError(
                f"{label} crops rows/cols, but {frame.label} is a flat vector of {frame.size} coordinates",
                hint="use dims=a:b on a vector, or pass canvas=(H, W) to compile an image",
            )
        (size,) = frame.shape
        a, b = region.dims
        if b > size:
            raise ShapeError(f"{label} lies outside {frame.label}: dims={a}:{b} but it has {size} coordinates (0:{size})")
        local = list(range(a, b))
        shape: tuple[int, ...] = (b - a,)
    else:
        height, width = frame.shape
        if region.dims is not None:
            raise ShapeError(
                f"{label} crops dims, but {frame.label} is an image of {height}x{width}",
                hint="use rows=/cols= on an image",
            )
        r0, r1 = region.rows or (0, height)
        c0, c1 = region.cols or (0, width)
        if r1 > height or c1 > width:
            raise ShapeError(
                f"{label} lies outside {frame.label} of {height}x{width} (rows 0:{height}, cols 0:{width})",
                hint="pass a larger canvas=(H, W) or move the crop",
            )
        local = [r * width + c for r in range(r0, r1) for c in range(c0, c1)]
        shape = (r1 - r0, c1 - c0)
    parent = frame.positions()
    return Frame(tuple(parent[i] for i in local), shape, label)


def top_parts(node: Expr) -> tuple[list[View], list[Leaf]]:
    """The views and the uncropped leaves of ``node`` that sit directly in its frame."""
    views: list[View] = []
    plain: list[Leaf] = []
    stack = [node]
    while stack:
        match stack.pop():
            case Leaf() as leaf:
                plain.append(leaf)
            case View() as view:
                views.append(view)
            case Product(terms=terms) | Mixture(terms=terms):
                stack.extend(reversed(terms))
            case Power(term=term):
                stack.append(term)
    return views, plain


def canvas_shape(root: Expr, canvas: Canvas, dims: dict[Leaf, int]) -> tuple[int, ...]:
    """The canvas: ``canvas`` when given, else inferred from the crops and leaves (see
    :func:`rrrdsl.compiler.compile`); ShapeError when it has more than :data:`MAX_CANVAS`
    coordinates."""
    shape = _canvas_shape(root, canvas, dims)
    if math.prod(shape) > MAX_CANVAS:
        raise ShapeError(
            f"the canvas {'x'.join(map(str, shape))} has {math.prod(shape):,} coordinates, more than the {MAX_CANVAS:,} allowed",
            hint="a crop's offsets set the canvas size: check its rows=, cols= or dims=",
        )
    return shape


def _canvas_shape(root: Expr, canvas: Canvas, dims: dict[Leaf, int]) -> tuple[int, ...]:
    if canvas is not None:
        shape = (canvas,) if isinstance(canvas, int) else tuple(canvas)
        if not (1 <= len(shape) <= 2 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise InvalidValueError(f"canvas must be a size D or an image shape (H, W) of positive integers, got {canvas!r}")
        return shape
    views, plain = top_parts(root)
    if not views:
        return (dims[plain[0]],)
    regions = [v.region for v in views]
    if any(r.dims is not None for r in regions) and any(r.dims is None for r in regions):
        raise ShapeError("crops mix dims= (a flat vector) with rows=/cols= (an image) on one canvas")
    if regions[0].dims is not None:
        return (dims[plain[0]] if plain else max(r.dims[1] for r in regions),)  # type: ignore[index]
    extent = {axis: max((getattr(r, axis)[1] for r in regions if getattr(r, axis) is not None), default=None) for axis in ("rows", "cols")}
    for axis, other in (("rows", "cols"), ("cols", "rows")):
        if extent[axis] is not None:
            continue
        # every crop spans this whole axis: its leaves' dim / its extent along the other axis
        for v in views:
            inner = top_parts(v.term)[1]
            span = getattr(v.region, other)
            if inner and span is not None and dims[inner[0]] % (span[1] - span[0]) == 0:
                extent[axis] = dims[inner[0]] // (span[1] - span[0])
                break
        else:
            raise ShapeError(f"cannot infer the canvas {axis}: no crop bounds them", hint="pass canvas=(H, W) to compile")
    return (extent["rows"], extent["cols"])  # type: ignore[return-value]


def frame_atoms(root: Expr, frame: Frame, dims: dict[Leaf, int], inferred: bool) -> list[tuple[Leaf, Frame]]:
    """Every distinct ``(leaf, frame)`` atom of ``root`` in order of first appearance, after
    checking that each leaf's dim equals the size of its frame (ShapeError naming the leaves
    and dims otherwise)."""
    atoms: dict[tuple[Leaf, Optional[tuple[int, ...]]], tuple[Leaf, Frame]] = {}

    def visit(node: Expr, fr: Frame, is_root: bool) -> None:
        views, plain = top_parts(node)
        for leaf in plain:
            if dims[leaf] != fr.size:
                if is_root and inferred and not views:
                    first = plain[0]
                    raise ShapeError(
                        f"{first} has dim {dims[first]} but {leaf} has dim {dims[leaf]}",
                        hint="all factors of a composition live on one space; use crop(...) to place a smaller model on part of a canvas",
                    )
                raise ShapeError(
                    f"{leaf} has dim {dims[leaf]} but {fr.label} has {fr.size} coordinates"
                    + (f" (shape {'x'.join(map(str, fr.shape))})" if len(fr.shape) > 1 else "")
                )
            atoms.setdefault((leaf, fr.index), (leaf, fr))
        for v in views:
            visit(v.term, crop_frame(fr, v), False)

    visit(root, frame, True)
    return list(atoms.values())
