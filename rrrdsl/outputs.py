"""What a run produces: files checked before any work, a sample's pair, its summary line
(and the verdicts of its models' judges).

Guarantees (``README.md``, *Reliability*):

- every output lies inside the output folder (``--out``, else the current folder):
  :func:`rrrdsl.files.output_path` refuses ``..``, absolute paths, symbolic links and names a
  file system cannot hold;
- a run never replaces a file that it did not write itself unless ``force`` (``--force``);
- no two statements of a program write the same file;
- a sample's ``.npz`` and ``.json`` (and the ``.png`` of its decoded images, for latent models)
  are one unit (:func:`rrrdsl.files.write_together`, the ``.json`` last): a ``.json`` always
  describes the ``.npz`` beside it, and records that file's SHA-256 so that a reader can verify it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from .errors import InvalidValueError
from .files import MAX_NAME_BYTES, output_path, write_together
from .lang.ir import Expr

#: file-name suffixes of the pictures a ``plot`` statement writes (:func:`rrrdsl.plot.figures`)
PLOT_FIGURES = ("", "-diagnostics", "-annealing")


def snapshot_levels(num_levels: int) -> tuple[int, ...]:
    """Levels kept for the annealing strip: the start, the middle, and denser towards level 0."""
    last = num_levels - 1
    return tuple(sorted({last, last // 2, last // 5, last // 10, last // 20, 0}, reverse=True))


class SampleRecord(NamedTuple):
    """One executed ``sample`` statement: what was sampled, how, the result and the files written."""

    expr: Expr
    label: str
    line: int
    n: int
    seed: int
    result: Any  # rrrdsl.samplers.api.SampleResult
    files: tuple[Path, ...]


def sample_unit(path: Path, images: bool = False) -> tuple[Path, ...]:
    """The files of one sample: the ``.npz``, with ``images`` the ``.png`` of the decoded images,
    and the ``.json`` (the unit's marker, written last)."""
    return _named((path, *((path.with_suffix(".png"),) if images else ()), path.with_suffix(".json")))


def plot_unit(path: Path) -> tuple[Path, ...]:
    """The files a ``plot`` to ``path`` may write, one per figure."""
    return _named(tuple(path.with_name(path.stem + suffix + path.suffix) for suffix in PLOT_FIGURES))


def _named(files: tuple[Path, ...]) -> tuple[Path, ...]:
    """``files``, whose names (a ``.json`` or ``-diagnostics.png`` beside the one written in the
    script included) all fit a file system; :class:`InvalidValueError` if not."""
    for file in files:
        if len(file.name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise InvalidValueError(
                f"the output's file {file.name[:20]}...{file.name[-16:]} would be longer than {MAX_NAME_BYTES} bytes",
                hint="choose a shorter name",
            )
    return files


class Outputs:
    """The output folder of a run (or a REPL session): checks names, refuses to replace files
    it did not write, and remembers what it wrote.

    Parameters
    ----------
    folder
        The output folder (created when the first file is written).
    force
        Replace existing files that this run did not write.
    """

    def __init__(self, folder: Path, force: bool = False) -> None:
        self.folder = Path(folder)
        self.force = force
        self.created: set[Path] = set()

    def path(self, name: str, suffix: str) -> Path:
        """The checked path of an output name (:func:`rrrdsl.files.output_path`)."""
        return output_path(self.folder, name, suffix)

    def check_free(self, files: Iterable[Path]) -> None:
        """:class:`InvalidValueError` when one of ``files`` exists and this run did not write it
        (unless ``force``)."""
        for file in files:
            if not self.force and file not in self.created and os.path.lexists(file):
                raise InvalidValueError(
                    f"{file} already exists and this run did not write it",
                    hint="choose another name or --out folder, or pass --force to replace it",
                )

    def claim(self, files: Iterable[Path], claimed: dict[Path, int], line: int) -> None:
        """Record that the statement on ``line`` writes ``files``; :class:`InvalidValueError`
        when an earlier statement of the same program writes one of them."""
        for file in files:
            if file in claimed:
                raise InvalidValueError(f"{file} is also written by the statement on line {claimed[file]}", hint="give each output its own name")
        claimed.update({file: line for file in files})

    def write(self, files: dict[Path, bytes]) -> None:
        """Write ``files`` as one unit (the last one is the marker), after checking again that
        none appeared meanwhile."""
        self.check_free(files)
        write_together(files)
        self.created.update(files)


def sample_files(path: Path, result: Any, context: dict[str, Any]) -> dict[Path, bytes]:
    """The contents of a sample's unit: ``x`` (and the snapshots, and the decoded ``images``
    ``[n, C, H, W]`` in ``[0, 1]`` of a latent model) as ``.npz``; a mosaic of the decoded images
    as ``.png``; the context, the diagnostics and the ``.npz``'s SHA-256 as ``.json``."""
    import numpy as np

    from .plot import images_png

    snapshots = result.diagnostics.get("snapshots") or {}
    levels = sorted(snapshots, reverse=True)
    arrays = {"x": result.x.detach().cpu().numpy()}
    if levels:
        arrays["snapshot_levels"] = np.asarray(levels, dtype=np.int64)
        arrays["snapshots"] = np.stack([snapshots[t].detach().cpu().numpy() for t in levels])
    if result.images is not None:
        arrays["images"] = result.images.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    diagnostics = result.plain_diagnostics()
    meta = {**context, **diagnostics, "npz_sha256": hashlib.sha256(data).hexdigest()}
    npz, *picture, marker = sample_unit(path, result.images is not None)
    return {npz: data, **{png: images_png(result.images) for png in picture}, marker: (json.dumps(meta, indent=1) + "\n").encode()}


def _finite(values: Any) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


def nonfinite(record: SampleRecord) -> bool:
    """Whether a sample has non-finite rows that its options do not allow."""
    d = record.result.diagnostics
    return d.get("nonfinite_rows", 0) > 0 and not d["options"].get("allow_nonfinite", False)


def verdict_lines(record: SampleRecord) -> list[str]:
    """The verdicts of the judges of the sampled graph's models on its samples, indented under
    its summary line (:func:`rrrdsl.models.registry.judge`; none for most models)."""
    from .models.registry import judge

    return ["  " + line for line in judge(record.expr, record.result.x)]


def summary_line(record: SampleRecord) -> str:
    """``sample p (line 9): mala, N=1000, NFE/particle 1000, acceptance 0.55-0.81, 12.3 s -> files``."""
    d = record.result.diagnostics
    levels = d["levels"]
    parts = [f"sample {record.label} (line {record.line}): {d['sampler']}", f"N={record.n}", f"NFE/particle {d['nfe']:.0f}"]
    accept = _finite(levels.accept_mean)
    if accept:
        parts.append(f"acceptance {min(accept):.2f}-{max(accept):.2f}")
    ess = _finite(levels.ess)
    if ess:
        resampled = int(sum(float(r) for r in levels.resampled))
        parts.append(f"ESS min {min(ess) / record.n:.2f}N ({resampled} resamplings)")
    if d.get("log_z") is not None and math.isfinite(d["log_z"]):
        parts.append(f"log Z {d['log_z']:.3f}")
    if d.get("nonfinite_rows"):
        allowed = " (allowed)" if d["options"].get("allow_nonfinite") else ""
        parts.append(f"NON-FINITE {d['nonfinite_rows']}/{record.n} rows{allowed}")
    parts.append(f"{d['wall_time']:.1f} s")
    line = ", ".join(parts)
    if record.files:
        line += " -> " + ", ".join(map(str, record.files))
    return line
