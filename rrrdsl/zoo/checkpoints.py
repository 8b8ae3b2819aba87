"""The one checkpoint format of the zoo: a ``state_dict`` file plus a JSON metadata file.

A checkpoint ``STEM`` is two files side by side:

* ``STEM.pt``: the network's ``state_dict`` (``torch.save``), loaded with
  ``torch.load(weights_only=True)`` so that a checkpoint can never run code;
* ``STEM.json``: what is needed to rebuild the network and to trust the weights::

      {"format": "rrrdsl-checkpoint", "version": 2, "kind": "toy2d",
       "schedule": {"kind": "cosine", "num_levels": 100},
       "weights": "ring-energy.pt", "sha256": "...", "torch_version": "...",
       ... the keys of the kind (toy2d: name, param, architecture, dim, width, depth, ...)}

``kind`` names the family loader that can rebuild the network (``toy2d``; ``digits-backbone``,
``digits-classifier``, ``digits-evaluator``); every loader states the kinds it accepts and the
keys it needs. Version-1 files predate ``kind`` and are all ``toy2d`` checkpoints.

Both files are written atomically (:func:`rrrdsl.files.write_atomic`), never with non-finite
weights. Reading checks the format tag, the version, the kind, the required keys and their
types, the schedule (at most :data:`MAX_LEVELS` levels), that ``weights`` names a file beside the
metadata, the sha256 of the weights file, and (:func:`check_fits`, :func:`load_state`) that the
``state_dict`` fits the network. The metadata lies outside the hash, so nothing it says is
allocated before :func:`check_fits` has built the network on the meta device (no memory) and
compared its shapes with the weights'. Any failure is a :class:`~rrrdsl.errors.CheckpointError`
naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, NamedTuple, Optional, Union

import torch
from torch import nn

from ..errors import CheckpointError, InvalidValueError
from ..files import write_atomic
from ..schedules import Schedule, get as get_schedule

FORMAT = "rrrdsl-checkpoint"
VERSION = 2
#: the kind of version-1 files, written before the ``kind`` key existed
VERSION_1_KIND = "toy2d"
#: keys every checkpoint has, with their JSON types
ENVELOPE = {"format": str, "version": int, "kind": str, "schedule": dict, "weights": str, "sha256": str}

#: the most levels a checkpoint's schedule may have (diffusion models use up to 1000)
MAX_LEVELS = 100_000
#: the largest network size (width, depth, ...) a checkpoint's metadata may ask for
MAX_SIZE = 65_536

PathLike = Union[str, os.PathLike]


class Checkpoint(NamedTuple):
    """A read checkpoint: validated metadata, the weights, the trained schedule and the files."""

    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    schedule: Schedule
    weights_path: Path
    meta_path: Path


def checkpoint_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` for a path given with either suffix or none."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".pt", ".json") else path
    return stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".json")


def write(
    path: PathLike, kind: str, state_dict: dict[str, torch.Tensor], schedule: Schedule, metadata: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write a checkpoint of ``kind`` at ``path`` (``.pt`` and ``.json``), atomically.

    ``metadata`` (the kind's own keys, JSON-serialisable) gets the envelope: format, version,
    kind, schedule, the weights' file name, their sha256 and the torch version. Missing
    directories are created.

    Returns
    -------
    The paths of the weights and metadata files.
    """
    weights_path, meta_path = checkpoint_paths(path)
    diverged = [name for name, value in state_dict.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if diverged:
        raise CheckpointError(
            f"{weights_path}: not written: non-finite weights in {', '.join(diverged[:3])}{' ...' if len(diverged) > 3 else ''}",
            hint="training diverged; lower the learning rate (--lr) or check the data",
        )
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    weights = buffer.getvalue()
    metadata = {
        **metadata,
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "schedule": {"kind": schedule.kind, "num_levels": schedule.num_levels},
        "weights": weights_path.name,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "torch_version": torch.__version__,
    }
    write_atomic(weights_path, weights)
    write_atomic(meta_path, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
    return weights_path, meta_path


def read_metadata(path: PathLike, kinds: Collection[str], required: Mapping[str, type] = {}) -> dict[str, Any]:
    """The validated metadata of the checkpoint at ``path`` (either file, or the stem).

    Parameters
    ----------
    kinds
        The kinds the caller can load; any other is a :class:`CheckpointError`.
    required
        The keys the kind needs besides the envelope, with their JSON types.
    """
    _, meta_path = checkpoint_paths(path)
    try:
        metadata = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: checkpoint metadata file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{meta_path}: not a JSON checkpoint metadata file ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not an rrrdsl checkpoint", hint=f'expected a JSON object with "format": "{FORMAT}"')
    if metadata.get("version") == 1:
        metadata.setdefault("kind", VERSION_1_KIND)
    _check_keys(metadata, {"version": int, "kind": str}, meta_path)
    if metadata["version"] > VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format version {metadata['version']} is newer than {VERSION}")
    if metadata["kind"] not in kinds:
        raise CheckpointError(
            f"{meta_path}: a {metadata['kind']!r} checkpoint, not {' or '.join(map(repr, kinds))}",
            hint="load it with the loader of its family (rrrdsl.zoo)",
        )
    _check_keys(metadata, {**required, **ENVELOPE}, meta_path)
    weights = metadata["weights"]
    if Path(weights).name != weights or weights in ("", ".", "..") or "\\" in weights or "\0" in weights:
        raise CheckpointError(
            f"{meta_path}: weights file {weights!r} is not a file name beside the metadata",
            hint="a checkpoint's weights sit in the same folder as its .json",
        )
    return metadata


def read(path: PathLike, kinds: Collection[str], required: Mapping[str, type] = {}) -> Checkpoint:
    """Read the checkpoint at ``path``: metadata (:func:`read_metadata`), schedule and the
    sha256-checked weights, loaded with ``torch.load(weights_only=True)`` on the CPU."""
    metadata = read_metadata(path, kinds, required)
    _, meta_path = checkpoint_paths(path)
    weights_path = meta_path.with_name(metadata["weights"])
    schedule = _schedule(metadata, meta_path)
    try:
        weights = weights_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: checkpoint weights file not found (named in {meta_path})") from None
    if hashlib.sha256(weights).hexdigest() != metadata["sha256"]:
        raise CheckpointError(
            f"{weights_path}: sha256 of the weights does not match {meta_path.name}",
            hint="the file is truncated, altered or belongs to another checkpoint; retrain or copy it again",
        )
    try:
        state_dict = torch.load(io.BytesIO(weights), weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises several unrelated types for unreadable files
        raise CheckpointError(f"{weights_path}: not a readable torch weights file ({error})") from None
    return Checkpoint(metadata, state_dict, schedule, weights_path, meta_path)


def check_sizes(sizes: Mapping[str, Any], meta_path: Path) -> None:
    """Raise :class:`CheckpointError` unless every network size in the metadata is a whole
    number in ``[1, MAX_SIZE]`` (checked before anything is built from them)."""
    for key, value in sizes.items():
        if type(value) is not int or not 1 <= value <= MAX_SIZE:
            raise CheckpointError(f"{meta_path}: network size {key!r} must be a whole number in [1, {MAX_SIZE}], got {value!r}")


def check_fits(make: Callable[[], nn.Module], checkpoint: Checkpoint) -> None:
    """Raise :class:`CheckpointError` unless the network ``make()`` builds has exactly the
    checkpoint's parameter names and shapes; it is built on the meta device (no memory), so
    sizes from the metadata cannot allocate more than the weights hold."""
    try:
        with torch.device("meta"):
            expected = {name: tuple(value.shape) for name, value in make().state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoint.meta_path}: cannot build the network its metadata describes ({error})") from None
    stored = {name: tuple(value.shape) for name, value in checkpoint.state_dict.items() if isinstance(value, torch.Tensor)}
    if expected != stored or len(stored) != len(checkpoint.state_dict):
        raise CheckpointError(
            f"{checkpoint.weights_path}: weights do not fit a {checkpoint.metadata['kind']} network of the metadata's sizes",
            hint="the metadata was edited or belongs to other weights",
        )


def load_state(net: nn.Module, checkpoint: Checkpoint) -> nn.Module:
    """``net`` with the checkpoint's weights, in eval mode; :class:`CheckpointError` when they
    do not fit it."""
    try:
        net.load_state_dict(checkpoint.state_dict)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{checkpoint.weights_path}: weights do not fit a {checkpoint.metadata['kind']} network of the metadata ({error})"
        ) from None
    return net.eval()


def check_schedule(trained: Schedule, requested: Optional[Schedule], what: str) -> None:
    """Raise :class:`InvalidValueError` when ``requested`` is given and is not ``trained``."""
    if requested is not None and requested != trained:
        raise InvalidValueError(
            f"{what} was trained with schedule {trained}, not {requested}",
            hint="compose learned models that share one schedule, or retrain with `rrr train`",
        )


def _check_keys(metadata: dict[str, Any], types: Mapping[str, type], meta_path: Path) -> None:
    for key, type_ in types.items():
        value = metadata.get(key)
        if not isinstance(value, type_) or (isinstance(value, bool) and type_ is not bool):
            raise CheckpointError(
                f"{meta_path}: metadata key {key!r} is missing or not a {type_.__name__}",
                hint="the file was not written by rrrdsl.zoo.checkpoints.write, or was edited",
            )


def _schedule(metadata: dict[str, Any], meta_path: Path) -> Schedule:
    spec = metadata["schedule"]
    levels = spec.get("num_levels")
    if not isinstance(spec.get("kind"), str) or type(levels) is not int or not 2 <= levels <= MAX_LEVELS:
        raise CheckpointError(f"{meta_path}: schedule must be {{'kind': str, 'num_levels': int in [2, {MAX_LEVELS}]}}, got {spec!r}")
    try:
        return get_schedule(spec["kind"], spec["num_levels"])
    except Exception as error:
        raise CheckpointError(f"{meta_path}: invalid schedule {spec!r} ({error})") from None
