"""rrrdsl: compose diffusion models as energy-based models and sample them with annealed MCMC.

The same expressions are valid ``.rrr`` text and valid Python::

    from rrrdsl import model
    p = model("ring") * model("bar")

Public names are imported lazily, so that ``import rrrdsl`` (and the ``rrr`` command) stays
fast and loads torch only when a stage that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CheckpointError,
    CompileError,
    InvalidValueError,
    RrrdslError,
    RrrdslSyntaxError,
    SamplerError,
    ShapeError,
    UnknownNameError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "parse": "rrrdsl.lang.parse",
    "parse_expr": "rrrdsl.lang.parse",
    "model": "rrrdsl.lang.ir",
    "oracle": "rrrdsl.lang.ir",
    "gmm": "rrrdsl.lang.ir",
    "box": "rrrdsl.lang.ir",
    "classifier": "rrrdsl.lang.ir",
    "crop": "rrrdsl.lang.ir",
    "Expr": "rrrdsl.lang.ir",
    "compile": "rrrdsl.compiler",
    "AnnealedTarget": "rrrdsl.compiler",
    "list_models": "rrrdsl.models.registry",
    "register_model": "rrrdsl.models.registry",
    "register_directory": "rrrdsl.zoo.toy2d.loading",
    "register_diffusers": "rrrdsl.zoo.diffusers.loading",
    "sample": "rrrdsl.samplers.api",
}
_SUBMODULES = {"truth", "schedules", "metrics"}

__all__ = sorted(
    [
        *_LAZY,
        *_SUBMODULES,
        "RrrdslError",
        "RrrdslSyntaxError",
        "UnknownNameError",
        "InvalidValueError",
        "ShapeError",
        "CompileError",
        "CheckpointError",
        "SamplerError",
    ]
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"rrrdsl.{name}")
    else:
        raise AttributeError(f"module 'rrrdsl' has no attribute {name!r}")
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rrrdsl``: the ``%%rrr`` and ``%rrr`` magics (:mod:`rrrdsl.notebook`)."""
    from .notebook import load

    load(ipython)


def __dir__() -> list[str]:
    return __all__
