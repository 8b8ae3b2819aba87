"""Checkpoints of learned models: a ``state_dict`` file plus a JSON metadata file.

A checkpoint ``NAME-PARAM`` is two files side by side:

* ``NAME-PARAM.pt``: the network's ``state_dict`` (``torch.save``), loaded with
  ``torch.load(weights_only=True)`` so that a checkpoint can never run code;
* ``NAME-PARAM.json``: what is needed to rebuild the model and to trust the weights::

      {"format": "rrrdsl-checkpoint", "version": 1, "name": "ring", "param": "energy",
       "architecture": "residual_mlp", "dim": 2, "width": 128, "depth": 4,
       "schedule": {"kind": "cosine", "num_levels": 100}, "data": "ring", "steps": 4000,
       "seed": 0, "weights": "ring-energy.pt", "sha256": "...", ...}

Both files are written atomically (a temporary file in the same directory, then
``os.replace``). Loading checks the format tag, the required keys, the sha256 of the weights
file and that the ``state_dict`` fits the architecture; any failure is a
:class:`~rrrdsl.errors.CheckpointError` naming the file.

Learned models become ``model("NAME")`` (energy) and ``model("NAME", param="score")`` through
:func:`register_directory`: the shipped zoo in ``rrrdsl/checkpoints/`` via
:func:`register_shipped`, and any user directory the same way. Networks are loaded lazily, on
the first resolve of a leaf, and cached per file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..errors import CheckpointError, InvalidValueError, UnknownNameError, suggest
from ..files import write_atomic
from ..schedules import Schedule, get as get_schedule
from .nets import PARAMS, NetModel, ResidualMLP, model_class

FORMAT = "rrrdsl-checkpoint"
VERSION = 1
ARCHITECTURE = "residual_mlp"
#: the directory of the shipped zoo (packaged with the wheel)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
#: checkpoint name prefixes loaded and registered by their own module (rrrdsl.models.digits)
OWN_LOADERS = ("digits-",)
#: the parameterisation ``model("NAME")`` resolves to when none is given
DEFAULT_PARAM = "energy"

_REQUIRED = {
    "format": str,
    "version": int,
    "name": str,
    "param": str,
    "architecture": str,
    "dim": int,
    "width": int,
    "depth": int,
    "schedule": dict,
    "weights": str,
    "sha256": str,
}

PathLike = Union[str, os.PathLike]


def checkpoint_paths(path: PathLike) -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` for a path given with either suffix or none."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".pt", ".json") else path
    return stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".json")


def save(model: NetModel, path: PathLike, **info: Any) -> tuple[Path, Path]:
    """Write ``model`` as a checkpoint at ``path`` (``.pt`` and ``.json``), atomically.

    Parameters
    ----------
    model
        A learned model (:class:`~rrrdsl.models.nets.EnergyModel` or ``ScoreModel``).
    path
        ``DIR/NAME-PARAM`` with or without a suffix; missing directories are created.
    info
        Extra metadata: ``name`` (default: the file stem up to the last ``-``), ``data``,
        ``steps``, ``seed``, ``description`` and anything JSON-serialisable.

    Returns
    -------
    The paths of the weights and metadata files.
    """
    weights_path, meta_path = checkpoint_paths(path)
    net = model.net
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "name": weights_path.stem.rsplit("-", 1)[0],
        "description": model.description,
        **info,
        "param": model.param,
        "architecture": ARCHITECTURE,
        "dim": net.dim,
        "width": net.width,
        "depth": net.depth,
        "schedule": {"kind": model.schedule.kind, "num_levels": model.schedule.num_levels},
    }
    return write_checkpoint(weights_path, meta_path, net.state_dict(), metadata)


def write_checkpoint(
    weights_path: Path, meta_path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``state_dict`` and its JSON ``metadata`` atomically, adding the weights' file name,
    their sha256 and the torch version to the metadata; the two paths."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    weights = buffer.getvalue()
    metadata = {
        **metadata,
        "weights": weights_path.name,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "torch_version": torch.__version__,
    }
    write_atomic(weights_path, weights)
    write_atomic(meta_path, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
    return weights_path, meta_path


def read_weights(weights_path: Path, meta_path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """The state dict in ``weights_path``, checked against the ``sha256`` its metadata records,
    loaded with ``torch.load(weights_only=True)``; :class:`CheckpointError` naming the file."""
    try:
        weights = weights_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: checkpoint weights file not found (named in {meta_path})") from None
    if hashlib.sha256(weights).hexdigest() != sha256:
        raise CheckpointError(
            f"{weights_path}: sha256 of the weights does not match {meta_path.name}",
            hint="the file is truncated, altered or belongs to another checkpoint; retrain or copy it again",
        )
    try:
        return torch.load(io.BytesIO(weights), weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises several unrelated types for unreadable files
        raise CheckpointError(f"{weights_path}: not a readable torch weights file ({error})") from None


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The validated metadata of the checkpoint at ``path`` (either file, or the stem)."""
    _, meta_path = checkpoint_paths(path)
    try:
        metadata = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: checkpoint metadata file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{meta_path}: not a JSON checkpoint metadata file ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not an rrrdsl checkpoint", hint=f'expected a JSON object with "format": "{FORMAT}"')
    for key, kind in _REQUIRED.items():
        if not isinstance(metadata.get(key), kind):
            raise CheckpointError(
                f"{meta_path}: metadata key {key!r} is missing or not a {kind.__name__}",
                hint="the file was not written by rrrdsl.models.checkpoints.save, or was edited",
            )
    if metadata["version"] > VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format version {metadata['version']} is newer than {VERSION}")
    if metadata["architecture"] != ARCHITECTURE or metadata["param"] not in PARAMS:
        raise CheckpointError(
            f"{meta_path}: unknown architecture {metadata['architecture']!r} or parameterisation {metadata['param']!r}",
            hint=f"expected architecture {ARCHITECTURE!r} and param one of {', '.join(PARAMS)}",
        )
    return metadata


def load(path: PathLike, schedule: Optional[Schedule] = None) -> NetModel:
    """Load the checkpoint at ``path`` into a model (in eval mode).

    Raises
    ------
    CheckpointError
        Missing, truncated, foreign or altered files (hash mismatch), or weights that do not
        fit the architecture in the metadata; the message names the file.
    InvalidValueError
        When ``schedule`` is given and differs from the schedule the model was trained with.
    """
    metadata = read_metadata(path)
    _, meta_path = checkpoint_paths(path)
    weights_path = meta_path.with_name(metadata["weights"])
    state = read_weights(weights_path, meta_path, metadata["sha256"])
    trained_schedule = _schedule(metadata, meta_path)
    check_schedule(trained_schedule, schedule, weights_path.name)
    net = ResidualMLP(metadata["dim"], metadata["width"], metadata["depth"])
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{weights_path}: weights do not fit a {ARCHITECTURE} of the metadata ({error})") from None
    net.eval()
    return model_class(metadata["param"])(net, trained_schedule, metadata.get("description", ""))


# --- registration as model("NAME", param=...) ----------------------------------------------

#: name -> param -> metadata path, for every registered checkpoint
_TABLE: dict[str, dict[str, Path]] = {}
#: loaded models, per metadata path
_LOADED: dict[Path, NetModel] = {}


def register_directory(directory: PathLike) -> list[str]:
    """Register every checkpoint in ``directory`` as ``model("NAME")`` / ``model("NAME", param=...)``.

    Names and parameterisations come from the metadata; a checkpoint registered later
    replaces an earlier one of the same name and param (a user directory can override the
    shipped zoo). Only metadata is read here; weights load on first resolve.

    Returns
    -------
    The names registered (sorted).
    """
    from .registry import register_model

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory of checkpoints")
    names = set()
    for meta_path in sorted(directory.glob("*.json")):
        if meta_path.name.startswith(OWN_LOADERS):
            continue
        metadata = read_metadata(meta_path)
        name = metadata["name"]
        _TABLE.setdefault(name, {})[metadata["param"]] = meta_path.resolve()
        _LOADED.pop(meta_path.resolve(), None)
        names.add(name)
    for name in sorted(names):
        params = _TABLE[name]
        description = f"learned diffusion model of {name!r} ({', '.join(sorted(params))})"
        register_model(name, _factory(name), description)
    return sorted(names)


def register_shipped() -> list[str]:
    """Register the shipped zoo (``rrrdsl/checkpoints``); nothing when it is absent."""
    return register_directory(SHIPPED_DIR) if SHIPPED_DIR.is_dir() else []


def _factory(name: str):
    def factory(schedule: Optional[Schedule] = None, param: str = DEFAULT_PARAM, **condition: Any) -> NetModel:
        if condition:
            key = next(iter(condition))
            raise UnknownNameError(
                f"model({name!r}) takes no argument {key!r}",
                hint=suggest(key, ["param"]) or "learned models take only param='energy' or param='score'",
            )
        available = _TABLE[name]
        if param not in available:
            raise UnknownNameError(
                f"model({name!r}) has no {param!r} checkpoint",
                hint=(suggest(str(param), available) or f"available: {', '.join(sorted(available))}")
                + f"; train one with `rrr train {name} --param {param}`",
            )
        meta_path = available[param]
        if meta_path not in _LOADED:
            _LOADED[meta_path] = load(meta_path)
        model = _LOADED[meta_path]
        check_schedule(model.schedule, schedule, f"model({name!r}, param={param!r})")
        return model

    return factory


def check_schedule(trained: Schedule, requested: Optional[Schedule], what: str) -> None:
    """Raise :class:`InvalidValueError` when ``requested`` is given and is not ``trained``."""
    if requested is not None and requested != trained:
        raise InvalidValueError(
            f"{what} was trained with schedule {trained}, not {requested}",
            hint="compose learned models that share one schedule, or retrain with `rrr train`",
        )


def _schedule(metadata: dict[str, Any], meta_path: Path) -> Schedule:
    spec = metadata["schedule"]
    if not isinstance(spec.get("kind"), str) or not isinstance(spec.get("num_levels"), int):
        raise CheckpointError(f"{meta_path}: schedule must be {{'kind': str, 'num_levels': int}}, got {spec!r}")
    try:
        return get_schedule(spec["kind"], spec["num_levels"])
    except Exception as error:
        raise CheckpointError(f"{meta_path}: invalid schedule {spec!r} ({error})") from None
