"""The shipped objects models, registered through the diffusers adapter.

``model("objects", cell=c)`` is the energy-parameterised UNet conditioned on cell ``c``
(``0..15``), ``model("objects")`` the same network's null condition (the unconditional model);
``model("objects_score", ...)`` is its score twin. Both are diffusers pipeline folders in
:data:`SHIPPED_DIR` (:mod:`.train` writes them), loaded by
:func:`rrrdsl.zoo.diffusers.loading.load_pipeline` on the first leaf that names them (so that
diffusers is imported only then), on :data:`LEVELS` evenly spaced levels of the 1000 training
steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...models.registry import register_model
from ..diffusers.adapter import DiffusersBackbone, leaf_factory
from ..diffusers.loading import load_pipeline

#: the shipped pipeline folders
SHIPPED_DIR = Path(__file__).parent / "checkpoints"
#: parameterisation -> folder name
FOLDERS = {"energy": "objects-energy", "score": "objects-score"}
#: model name -> parameterisation
NAMES = {"objects": "energy", "objects_score": "score"}
#: the keyword of the condition (``model("objects", cell=3)``), declared in each folder's ``rrrdsl.json``
LABEL_KEYWORD = "cell"
#: levels the models are sampled on (evenly spaced among the 1000 training timesteps)
LEVELS = 100


def backbone(param: str, folder: Path = SHIPPED_DIR) -> Callable[[], DiffusersBackbone]:
    """A function returning the backbone of the model ``param`` in ``folder`` (loaded once, at its first call)."""
    loaded: list[DiffusersBackbone] = []

    def load() -> DiffusersBackbone:
        if not loaded:
            loaded.append(load_pipeline(folder / FOLDERS[param], levels=LEVELS))
        return loaded[0]

    return load


def register() -> None:
    """Register ``model("objects")`` and ``model("objects_score")`` (lazily: nothing is read now)."""
    for name, param in NAMES.items():
        register_model(name, leaf_factory(name, backbone(param)), f"objects on a 4x4 grid, 16x16 images ({param}; {LABEL_KEYWORD}=0..15)")
