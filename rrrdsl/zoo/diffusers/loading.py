"""Loading a diffusers pipeline folder as a backbone, and naming it: :func:`register_diffusers`.

A pipeline folder is what ``pipeline.save_pretrained(folder)`` writes: ``model_index.json``
naming the components, and one subfolder per component (``unet/``, ``scheduler/``, and for
text-conditional pipelines ``text_encoder/`` and ``tokenizer/``). rrrdsl reads:

* ``unet`` (a ``UNet2DModel`` or ``UNet2DConditionModel``) from safetensors only: a folder
  holding a pickle (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, ``.pickle``) is refused
  before anything is read, since unpickling can run code;
* ``scheduler``'s config: ``alphas_cumprod`` (through ``DDPMScheduler``, which computes it
  from any diffusers scheduler's ``beta_schedule``) and ``prediction_type``;
* the conditions (:mod:`.conditions`): class labels when the UNet has ``num_class_embeds``,
  prompts through ``text_encoder`` and ``tokenizer`` when the pipeline has them;
* an optional ``rrrdsl.json`` beside ``model_index.json``: ``{"energy": "norm"}`` declares an
  energy-parameterised network (:data:`.parameterisation.ENERGIES`), ``{"null_label": 10}`` its
  unconditional class slot (default: the last class embedding), ``{"label_keyword": "cell"}``
  the keyword of its class labels (``model("name", cell=3)``; default ``label``).

Everything loads with ``local_files_only``; a hub id (``"org/name"``) is fetched (its configs
and safetensors files only) only with ``download=True``. diffusers and transformers are
imported on the first load, so the rest of rrrdsl runs without them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Union

import torch

from ...errors import CheckpointError, InvalidValueError, RrrdslError
from ...models.registry import register_model
from ..checkpoints import PathLike
from .adapter import DiffusersBackbone, leaf_factory
from .conditions import Conditions, Labels, Prompts, Unconditional
from .parameterisation import ENERGIES
from .schedule import native_schedule

#: file suffixes of pickled weights, which are never loaded
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: the denoisers the adapter loads from a pipeline's ``unet`` entry
DENOISERS = ("UNet2DModel", "UNet2DConditionModel")
#: rrrdsl's own settings in a pipeline folder
SETTINGS = "rrrdsl.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def require(name: str) -> ModuleType:
    """Import ``diffusers`` or ``transformers``, or raise one line saying how to install them."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise RrrdslError(f"diffusers models need {name}: install rrrdsl[diffusers] ({error})") from None


def check_folder(path: PathLike) -> Path:
    """The pipeline folder ``path``, checked without reading any weights: it exists, has
    ``model_index.json`` and holds no pickle."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"no diffusers pipeline folder at {str(path)!r}", hint="a hub id downloads only with download=True")
    if not (folder / "model_index.json").is_file():
        raise CheckpointError(f"{folder} is not a diffusers pipeline folder: it has no model_index.json", hint="save one with pipeline.save_pretrained(folder)")
    pickles = sorted(p for p in folder.rglob("*") if p.suffix in PICKLES)
    if pickles:
        raise CheckpointError(f"{pickles[0]} is a pickle: rrrdsl loads weights from safetensors only", hint="save the pipeline with safe_serialization=True and remove the pickles")
    if not any((folder / "unet").glob("*.safetensors")):
        raise CheckpointError(f"{folder / 'unet'} holds no .safetensors weights", hint="save the pipeline with safe_serialization=True")
    return folder


def fetch(hub_id: str) -> Path:
    """The local copy of the hub pipeline ``hub_id`` (configs, tokenizer files and safetensors only)."""
    hub = require("huggingface_hub")
    try:
        return Path(hub.snapshot_download(hub_id, allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors"]))
    except Exception as error:
        raise CheckpointError(f"cannot download {hub_id!r} ({type(error).__name__}): offline, or no such pipeline on the hub") from None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def _settings(folder: Path) -> dict[str, Any]:
    settings = _json(folder / SETTINGS) if (folder / SETTINGS).is_file() else {}
    unknown = set(settings) - {"energy", "null_label", "label_keyword"}
    if unknown:
        raise CheckpointError(f"{folder / SETTINGS}: unknown key {sorted(unknown)[0]!r}", hint="its keys are energy, null_label and label_keyword")
    null_label = settings.get("null_label")
    if null_label is not None and (isinstance(null_label, bool) or not isinstance(null_label, int)):
        raise CheckpointError(f"{folder / SETTINGS}: null_label must be an integer, got {null_label!r}")
    keyword = settings.get("label_keyword", "label")
    if not isinstance(keyword, str) or not keyword.isidentifier() or keyword in ("prompt", "schedule"):
        raise CheckpointError(f"{folder / SETTINGS}: label_keyword must be a keyword name other than prompt and schedule, got {keyword!r}")
    if settings.get("energy") not in (None, *ENERGIES):
        raise CheckpointError(f"{folder / SETTINGS}: energy must be one of {', '.join(ENERGIES)}, got {settings['energy']!r}")
    return settings


def _loader(module: ModuleType, entry: Any, folder: Path, sub: str, allowed: Optional[tuple[str, ...]], **options: Any) -> Callable[[], Any]:
    """A function loading the component ``sub`` of the pipeline, of the class its
    ``model_index.json`` entry names (checked now; the weights are read when it is called)."""
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)) or (allowed and entry[1] not in allowed):
        raise CheckpointError(f"{folder / 'model_index.json'}: {sub} is {entry!r}", hint=f"rrrdsl loads {' or '.join(allowed or ('a class',))} here")
    if not hasattr(module, entry[1]):
        raise CheckpointError(f"{folder / 'model_index.json'}: {module.__name__} has no {entry[1]}")

    def load() -> Any:
        try:
            return getattr(module, entry[1]).from_pretrained(folder, subfolder=sub, local_files_only=True, **options)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot load {folder / sub}: {str(error).splitlines()[0]}") from None

    return load


def load_pipeline(
    path: PathLike, levels: Optional[int] = None, max_batch: Optional[int] = None, device: Union[str, torch.device] = "cpu", dtype: str = "float32"
) -> DiffusersBackbone:
    """The pipeline folder ``path`` as a :class:`~.adapter.DiffusersBackbone` on ``levels``
    evenly spaced levels of its scheduler (all of them when None), in eval mode on ``device``.

    Only the configs are read here: the networks load at the first evaluation (the UNet) and
    the first prompt encoded (the text encoder), so that compiling a graph reads no weights.
    """
    if dtype not in DTYPES:
        raise InvalidValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = check_folder(path)
    diffusers, index, settings = require("diffusers"), _json(folder / "model_index.json"), _settings(folder)
    for sub in ("unet", "scheduler"):
        if sub not in index:
            raise CheckpointError(f"{folder / 'model_index.json'} names no {sub}")
    weights = {"use_safetensors": True, "torch_dtype": DTYPES[dtype]}
    unet_options = {"low_cpu_mem_usage": False}  # without accelerate, diffusers warns otherwise
    load_unet = _loader(diffusers, index["unet"], folder, "unet", DENOISERS, **weights, **unet_options)
    config = _json(folder / "unet" / "config.json")
    scheduler = diffusers.DDPMScheduler.from_config(_json(folder / "scheduler" / "scheduler_config.json"))
    conditions: Conditions = Unconditional()
    if config.get("num_class_embeds"):
        conditions = Labels(config["num_class_embeds"], settings.get("null_label"), settings.get("label_keyword", "label"))
    elif "text_encoder" in index and "tokenizer" in index:
        transformers = require("transformers")
        load_encoder = _loader(transformers, index["text_encoder"], folder, "text_encoder", None, **weights)
        load_tokenizer = _loader(transformers, index["tokenizer"], folder, "tokenizer", None)
        conditions = Prompts(lambda: (load_tokenizer(), load_encoder().to(device).eval().requires_grad_(False)))
    size = config.get("sample_size")
    shape = (config.get("in_channels"), *((size, size) if isinstance(size, int) else size or ()))
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise CheckpointError(f"{folder / 'unet' / 'config.json'}: in_channels and sample_size must give an image shape (C, H, W), got {shape}")
    native = native_schedule(scheduler.alphas_cumprod, levels)
    return DiffusersBackbone(
        lambda: load_unet().to(device).eval().requires_grad_(False), native, shape, scheduler.config.prediction_type, settings.get("energy"), conditions, max_batch
    )


def register_diffusers(
    name: str,
    path: PathLike,
    *,
    levels: Optional[int] = None,
    max_batch: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: str = "float32",
    download: bool = False,
    description: Optional[str] = None,
) -> None:
    """Make ``model(name, ...)`` the diffusers pipeline at ``path`` (a folder, or a hub id with
    ``download=True``).

    A local folder's configs are read and checked now (:func:`load_pipeline`), a hub id is
    fetched at the first resolve of a leaf; the weights load at the first evaluation, once.
    ``levels``, ``max_batch``, ``device`` and ``dtype`` are those of :func:`load_pipeline`.
    Leaves take the pipeline's conditions (``label=`` or ``prompt=``).
    """
    loaded: list[DiffusersBackbone] = []
    if not download or Path(path).is_dir():
        loaded.append(load_pipeline(path, levels, max_batch, device, dtype))

    def backbone() -> DiffusersBackbone:
        if not loaded:
            loaded.append(load_pipeline(fetch(str(path)), levels, max_batch, device, dtype))
        return loaded[0]

    register_model(name, leaf_factory(name, backbone), description or f"diffusers pipeline {path}")
