"""Checkpoints of the 2D zoo (kind ``toy2d``) and their registration as ``model("NAME")``.

A checkpoint ``NAME-PARAM`` uses the zoo's one format (:mod:`rrrdsl.zoo.checkpoints`) with
these keys of its own::

    {"kind": "toy2d", "name": "ring", "param": "energy", "architecture": "residual_mlp",
     "dim": 2, "width": 128, "depth": 4, "data": "ring", "steps": 4000, "seed": 0, ...}

Learned models become ``model("NAME")`` (energy) and ``model("NAME", param="score")`` through
:func:`register_directory`: the shipped zoo in ``rrrdsl/zoo/toy2d/checkpoints/`` via
:func:`register_shipped`, and any user directory the same way. Networks are loaded lazily, on
the first resolve of a leaf, and cached per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ...errors import CheckpointError, UnknownNameError, at_argument, suggest
from ...models.registry import load_zoo, register_model
from ...schedules import Schedule
from .. import checkpoints
from ..checkpoints import PathLike, check_schedule, checkpoint_paths
from ..nets import ResidualMLP
from .models import PARAMS, NetModel, model_class

KIND = "toy2d"
ARCHITECTURE = "residual_mlp"
#: the directory of the shipped zoo (packaged with the wheel)
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
#: the parameterisation ``model("NAME")`` resolves to when none is given
DEFAULT_PARAM = "energy"
#: the keys of a toy2d checkpoint besides the envelope, with their JSON types
REQUIRED = {"name": str, "param": str, "architecture": str, "dim": int, "width": int, "depth": int}


def save(model: NetModel, path: PathLike, **info: Any) -> tuple[Path, Path]:
    """Write ``model`` as a checkpoint at ``path`` (``.pt`` and ``.json``), atomically.

    Parameters
    ----------
    model
        A learned model (:class:`~rrrdsl.zoo.toy2d.models.EnergyModel` or ``ScoreModel``).
    path
        ``DIR/NAME-PARAM`` with or without a suffix; missing directories are created.
    info
        Extra metadata: ``name`` (default: the file stem up to the last ``-``), ``data``,
        ``steps``, ``seed``, ``description`` and anything JSON-serialisable.

    Returns
    -------
    The paths of the weights and metadata files.
    """
    net = model.net
    metadata = {
        "name": checkpoint_paths(path)[0].stem.rsplit("-", 1)[0],
        "description": model.description,
        **info,
        "param": model.param,
        "architecture": ARCHITECTURE,
        "dim": net.dim,
        "width": net.width,
        "depth": net.depth,
    }
    return checkpoints.write(path, KIND, net.state_dict(), model.schedule, metadata)


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The validated metadata of the toy2d checkpoint at ``path`` (either file, or the stem)."""
    return _check_architecture(checkpoints.read_metadata(path, (KIND,), REQUIRED), path)


def load(path: PathLike, schedule: Optional[Schedule] = None) -> NetModel:
    """Load the checkpoint at ``path`` into a model (in eval mode).

    Raises
    ------
    CheckpointError
        Missing, truncated, foreign or altered files (wrong kind, hash mismatch), or weights
        that do not fit the architecture in the metadata; the message names the file.
    InvalidValueError
        When ``schedule`` is given and differs from the schedule the model was trained with.
    """
    checkpoint = checkpoints.read(path, (KIND,), REQUIRED)
    metadata = _check_architecture(checkpoint.metadata, path)
    check_schedule(checkpoint.schedule, schedule, checkpoint.weights_path.name)
    sizes = {key: metadata[key] for key in ("dim", "width", "depth")}
    checkpoints.check_sizes(sizes, checkpoint.meta_path)
    checkpoints.check_fits(lambda: ResidualMLP(**sizes), checkpoint)
    net = checkpoints.load_state(ResidualMLP(**sizes), checkpoint)
    return model_class(metadata["param"])(net, checkpoint.schedule, metadata.get("description", ""))


def _check_architecture(metadata: dict[str, Any], path: PathLike) -> dict[str, Any]:
    if metadata["architecture"] != ARCHITECTURE or metadata["param"] not in PARAMS:
        raise CheckpointError(
            f"{checkpoint_paths(path)[1]}: unknown architecture {metadata['architecture']!r} or parameterisation {metadata['param']!r}",
            hint=f"expected architecture {ARCHITECTURE!r} and param one of {', '.join(PARAMS)}",
        )
    return metadata


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
    load_zoo()  # the shipped zoo first, so that this directory replaces its names, not the reverse
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory of checkpoints")
    names = set()
    for meta_path in sorted(directory.glob("*.json")):
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
    """Register the shipped zoo (``rrrdsl/zoo/toy2d/checkpoints``); nothing when it is absent."""
    return register_directory(SHIPPED_DIR) if SHIPPED_DIR.is_dir() else []


def _factory(name: str) -> Callable[..., NetModel]:
    def factory(schedule: Optional[Schedule] = None, param: str = DEFAULT_PARAM, **condition: Any) -> NetModel:
        if condition:
            key = next(iter(condition))
            message = f"model({name!r}) takes no argument {key!r}"
            raise at_argument(UnknownNameError(message, hint=suggest(key, ["param"]) or "learned models take only param='energy' or param='score'"), key)
        available = _TABLE[name]
        if param not in available:
            hint = (suggest(str(param), available) or f"available: {', '.join(sorted(available))}") + f"; train one with `rrr train {name} --param {param}`"
            raise at_argument(UnknownNameError(f"model({name!r}) has no {param!r} checkpoint", hint=hint), "param")
        meta_path = available[param]
        if meta_path not in _LOADED:
            _LOADED[meta_path] = load(meta_path)
        model = _LOADED[meta_path]
        check_schedule(model.schedule, schedule, f"model({name!r}, param={param!r})")
        return model

    return factory
