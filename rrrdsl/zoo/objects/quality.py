"""How well a single-condition objects model places its object: the fraction of samples of
``model(name, cell=c)`` in which the detector (:mod:`.detector`) finds an object in cell ``c``.

This is the first check of issue 16: under reverse diffusion (DDPM ancestral sampling, Ho et
al., 2020) the model must place the object in at least 90% of samples, so that the
composition benchmark measures the samplers rather than the model. Command::

    python -c "from rrrdsl.zoo.objects.quality import main; main()"
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import torch

from ...lang.ir import model
from ...samplers.api import sample
from .data import CELLS
from .detector import detect


def placement(name: str, cells: Iterable[int] = range(CELLS), n: int = 64, seed: int = 0, sampler: str = "reverse", **options: Any) -> torch.Tensor:
    """For each cell ``c`` of ``cells``, the fraction of ``n`` samples of ``model(name, cell=c)``
    (``sampler``, seed ``seed + c``) with an object in cell ``c``; ``[len(cells)]`` float64."""
    fractions = []
    for cell in cells:
        x = sample(model(name, cell=cell), sampler, n=n, seed=seed + cell, **options).x
        fractions.append(detect(x)[:, cell].to(torch.float64).mean())
    return torch.stack(fractions)


def main(names: tuple[str, ...] = ("objects", "objects_score"), n: int = 64, seed: int = 0) -> dict[str, Any]:
    """Print and return, for each model, the placement per cell under reverse diffusion, its
    mean over the cells and the mean's standard error (binomial, ``16 n`` samples)."""
    report: dict[str, Any] = {}
    for name in names:
        per_cell = placement(name, n=n, seed=seed)
        mean = float(per_cell.mean())
        report[name] = {"per_cell": [round(float(p), 3) for p in per_cell], "mean": round(mean, 4),
                        "standard_error": round((mean * (1 - mean) / (CELLS * n)) ** 0.5, 4), "n_per_cell": n}
    print(json.dumps(report, indent=1))
    return report
