"""The model zoo: every learned model family, its networks, checkpoints and training.

==================  ===========================================================================
module              holds
==================  ===========================================================================
``nets``            the residual MLP shared by the families
``checkpoints``     the one checkpoint format (``state_dict`` + JSON with ``kind`` and sha256)
``training``        the one :class:`~rrrdsl.zoo.training.Trainer` (ε-prediction, Adam, EMA)
``cli``             ``rrr train [FAMILY] ...``
``toy2d/``          the 2D zoo: energy/score models of the named 2D datasets (``model("ring")``)
``digits/``         8×8 digits: data, nets, conditional backbone, classifier, evaluator, training
``objects/``       objects on a 4×4 grid (16×16 scenes): data, detector, a cell-conditional diffusers UNet
                    (energy and score twins, loaded through ``diffusers/``), training
``diffusers/``      your own models: diffusers pipelines and torch modules through one adapter
==================  ===========================================================================

The registry (:mod:`rrrdsl.models.registry`) imports this package by name on the first lookup
of a name it does not know and calls :func:`register`; nothing below the zoo imports it. A new
family is a subpackage with its data, nets, models and training apart, a ``register`` step
here, and a module in :data:`rrrdsl.zoo.cli.FAMILIES`.
"""

from __future__ import annotations

from .diffusers.modules import register as register_modules
from .digits.loading import register as register_digits
from .objects.judge import register as register_objects_judge
from .objects.loading import register as register_objects
from .toy2d.loading import register_shipped


def register() -> None:
    """Register every family's models with :func:`rrrdsl.models.registry.register_model`:
    the shipped 2D zoo (``model("ring")``, ...), then ``model("digits")`` and ``classifier("digits")``,
    ``model("objects")`` and ``model("objects_score")`` (read at their first use) with the objects
    detector as the judge of their samples; and let ``register_model`` take torch modules (the
    diffusers adapter)."""
    register_modules()
    register_shipped()
    register_digits()
    register_objects()
    register_objects_judge()
