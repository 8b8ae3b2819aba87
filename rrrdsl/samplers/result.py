"""What :func:`rrrdsl.sample` returns: the samples and a JSON-ready record of the run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .annealed import AnnealedResult, LevelDiagnostics
from .distributed import Group


@dataclass
class SampleResult:
    """Samples ``x`` (``[n, dim]``; under ``torchrun``, on every rank but 0, only the rows of
    that rank's shard) and the run's ``diagnostics``.

    ``diagnostics`` holds ``sampler``, ``options`` (as resolved), ``levels`` (per-level
    :class:`~rrrdsl.samplers.annealed.LevelDiagnostics`: acceptance mean/min/max, step size,
    divergences, NFE, ESS, resampled), ``nfe`` (total gradient evaluations per particle),
    ``wall_time`` (seconds; the slowest process's), ``log_z`` (SMC, else ``None``), ``pilot_log_z``
    (the log Z of SMC's pilot walk, option ``pilot``; else ``None``), ``snapshots``
    (level -> particles, sharded like ``x``), ``nonfinite_rows`` (over every process) and
    ``processes`` (how many shared the particles).

    ``images`` are the samples decoded, ``[n, C, H, W]`` in ``[0, 1]``, when the target models
    the latents of a decoder (a latent diffusion pipeline's VAE); else None (sharded like ``x``).
    """

    x: torch.Tensor
    diagnostics: dict[str, Any] = field(default_factory=dict)
    images: Optional[torch.Tensor] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: tensors become (nested) lists, NaN becomes ``None``."""
        return {"x": _plain(self.x), "diagnostics": _plain(self.diagnostics)}

    def plain_diagnostics(self) -> dict[str, Any]:
        """The ``diagnostics`` but the snapshots, JSON-ready (what a sample's ``.json`` records;
        no particle becomes a Python number: at ``n = 10^6`` :meth:`to_dict` takes gigabytes)."""
        return _plain({k: v for k, v in self.diagnostics.items() if k != "snapshots"})


def diagnostics(name: str, resolved: dict[str, Any], result: AnnealedResult, wall_time: float) -> dict[str, Any]:
    """The ``diagnostics`` dict of a run of sampler ``name`` with its ``resolved`` options."""
    levels: LevelDiagnostics = result.levels
    options = {k: (v if not callable(v) or isinstance(v, range) else repr(v)) for k, v in resolved.items()}
    options.update(dtype=str(resolved["dtype"]).replace("torch.", ""), device=str(resolved["device"]))
    return {
        "sampler": name,
        "options": options,
        "levels": levels,
        "nfe": float(levels.nfe.sum()),
        "wall_time": wall_time,
        "log_z": result.log_z,
        "pilot_log_z": result.pilot_log_z,
        "snapshots": result.snapshots,
    }


def pooled(result: AnnealedResult, group: Group) -> AnnealedResult:
    """One process's share of a run made whole (:mod:`rrrdsl.samplers.distributed`): every
    rank's particles and snapshots in rank order on rank 0 (the other ranks keep their own),
    and on every rank acceptance means and NFE weighted by shard size, minima, maxima and
    divergence counts over all chains. The step sizes, ESS and resampling decisions are
    already the same on every rank."""
    levels, n = result.levels, result.x.shape[0]
    total = group.total(n)
    pooled_levels = levels._replace(
        accept_mean=group.sum(levels.accept_mean * n) / total,
        accept_min=group.extreme(levels.accept_min, "min"),
        accept_max=group.extreme(levels.accept_max, "max"),
        divergences=group.sum(levels.divergences),
        nfe=group.sum(levels.nfe * n) / total,
    )
    snapshots = {t: group.gather(x) for t, x in result.snapshots.items()}
    return result._replace(x=group.gather(result.x), levels=pooled_levels, snapshots=snapshots)


def _plain(value: Any) -> Any:
    """Tensors, ranges, tuples and NaN made JSON-ready."""
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "_asdict"):  # a NamedTuple such as LevelDiagnostics
        return _plain(value._asdict())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, range):
        return [value.start, value.stop, value.step]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
