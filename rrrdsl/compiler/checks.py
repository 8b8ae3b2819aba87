"""The checks :func:`rrrdsl.compiler.compile` makes on the models before anything is evaluated:
one noise schedule for every learned model, one space (data, or one decoder's latents) for
every leaf, and densities under every mixture. (Shapes are
checked with the frames, :mod:`rrrdsl.compiler.frames`; tails in :mod:`rrrdsl.compiler.tails`.)
"""

from __future__ import annotations

from typing import Optional

from ..errors import CompileError
from ..lang.ir import Expr, Leaf, Mixture, Power, Product, View
from ..models.base import Decoder, Model
from ..schedules import Schedule


def check_schedules(learned: dict[Leaf, Model], schedule: Optional[Schedule]) -> None:
    """Learned models fix their schedule: they must agree with each other and with ``schedule``."""
    owner: Optional[Leaf] = None
    reference = schedule
    for leaf, m in learned.items():
        if reference is None:
            owner, reference = leaf, m.schedule
        elif m.schedule != reference:
            if owner is None:
                raise CompileError(
                    f"{leaf} was trained on schedule {m.schedule}, but compile was asked for schedule {reference}",
                    hint=f"omit schedule= or pass schedule={m.schedule}",
                )
            raise CompileError(
                f"{owner} uses schedule {reference} but {leaf} uses {m.schedule}",
                hint="models composed in one target must share one noise schedule",
            )


def check_decoders(models: dict[Leaf, Model], dim: int) -> Optional[Decoder]:
    """The decoder of the target's samples: that of its leaves when they all model the latents
    of one decoder on the whole canvas (``dim``); None for data-space leaves, or crops of latents
    (a latent canvas wider than one model's is not decoded). Leaves of different spaces (two
    decoders, or latents with data) are refused: their scores live in different spaces."""
    (first, reference), *others = [(leaf, m.decoder) for leaf, m in models.items()]
    for leaf, decoder in others:
        if decoder != reference:
            space = ["latents", "data (it has no decoder)"]
            message = (
                f"{first} and {leaf} model the latents of different decoders"
                if None not in (reference, decoder)
                else f"{first} models {space[reference is None]} but {leaf} models {space[decoder is None]}"
            )
            raise CompileError(message, hint="models composed in one target must share one space: one decoder's latents, or the data")
    return reference if reference is not None and models[first].dim == dim else None


def check_mixtures(root: Expr, models: dict[Leaf, Model]) -> None:
    """A mixture needs every component's density: no score-only leaf below a ``+``.

    One pass over the graph in order, naming the first score-only leaf below a mixture.
    """
    stack: list[tuple[Expr, bool]] = [(root, False)]
    while stack:
        node, in_mixture = stack.pop()
        match node:
            case Leaf() if in_mixture and not models[node].has_energy:
                raise CompileError(
                    f"a mixture needs densities, but {node} is score-only (it has no energy)",
                    hint="a mixture weighs its components by their densities; use an energy-parameterised model, or a product instead of `+`",
                )
            case Mixture(terms=terms):
                stack.extend((term, True) for term in reversed(terms))
            case Product(terms=terms):
                stack.extend((term, in_mixture) for term in reversed(terms))
            case Power(term=term) | View(term=term):
                stack.append((term, in_mixture))
