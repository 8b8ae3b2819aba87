"""Checkpoints of the digits networks and their registration as ``model("digits", label=...)``
and ``classifier("digits", label=...)``.

Each network is a checkpoint of the zoo's one format (:mod:`rrrdsl.zoo.checkpoints`) of kind
``digits-backbone``, ``digits-classifier`` or ``digits-evaluator``, with ``sizes`` (the keyword
arguments of :func:`~rrrdsl.zoo.digits.models.build`) and, for the backbone, ``base`` (absent
in backbones trained before the base existed: ``"none"``). The shipped ones live in
``rrrdsl/zoo/digits/checkpoints/`` and load on the first resolve of a leaf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ...errors import InvalidValueError, UnknownNameError, at_argument, suggest
from ...models.base import ConditionalModel
from ...models.registry import register_model
from ...schedules import Schedule
from .. import checkpoints
from ..checkpoints import PathLike, check_schedule
from .data import NUM_CLASSES
from .models import KINDS, DigitsModel, build, sizes

#: the directory of the shipped networks (packaged with the wheel)
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
#: the keys of a digits checkpoint besides the envelope, with their JSON types
REQUIRED = {"sizes": dict}


def checkpoint_kind(kind: str) -> str:
    """The checkpoint kind of the digits network ``kind`` (``"backbone"`` -> ``"digits-backbone"``)."""
    return f"digits-{kind}"


def save(kind: str, model: DigitsModel, path: PathLike, **info: Any) -> tuple[Path, Path]:
    """Write the digits network ``kind`` as a checkpoint (``state_dict`` + JSON with sizes,
    base, schedule and sha256) at ``path``, atomically."""
    base = {"base": model.base} if kind == "backbone" else {}
    metadata = {"sizes": sizes(model.net), **base, **info}
    return checkpoints.write(path, checkpoint_kind(kind), model.net.state_dict(), model.schedule, metadata)


def load_checkpoint(path: PathLike) -> DigitsModel:
    """Load a digits checkpoint (``weights_only``, sha256-checked) in eval mode; its kind says
    which network it is."""
    checkpoint = checkpoints.read(path, [checkpoint_kind(kind) for kind in KINDS], REQUIRED)
    metadata = checkpoint.metadata
    kind = metadata["kind"].removeprefix("digits-")
    base = {"base": metadata.get("base", "none")} if kind == "backbone" else {}
    checkpoints.check_sizes(metadata["sizes"], checkpoint.meta_path)
    checkpoints.check_fits(lambda: build(kind, checkpoint.schedule, **base, **metadata["sizes"]).net, checkpoint)
    model = build(kind, checkpoint.schedule, **base, **metadata["sizes"])
    checkpoints.load_state(model.net, checkpoint)
    return model


_LOADED: dict[str, DigitsModel] = {}


def shipped(kind: str) -> DigitsModel:
    """The shipped network of ``kind`` (loaded once from ``rrrdsl/zoo/digits/checkpoints/digits-KIND``)."""
    if kind not in _LOADED:
        _LOADED[kind] = load_checkpoint(SHIPPED_DIR / f"digits-{kind}")
    return _LOADED[kind]


def check_label(label: Any, what: str) -> Optional[int]:
    """``label`` as an int 0..9 (or None); anything else is an :class:`InvalidValueError`."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, (int, float)) or label != int(label) or not 0 <= label < NUM_CLASSES:
        raise InvalidValueError(f"{what}: label must be an integer 0..9, got {label!r}")
    return int(label)


def _factory(kind: str, requires_label: bool) -> Callable[..., ConditionalModel]:
    what = f'{"model" if kind == "backbone" else "classifier"}("digits")'

    def factory(schedule: Optional[Schedule] = None, label: Any = None, **condition: Any) -> ConditionalModel:
        if condition:
            key = next(iter(condition))
            raise at_argument(UnknownNameError(f"{what} takes no argument {key!r}", hint=suggest(key, ["label"]) or "the only argument is label=0..9"), key)
        try:
            label = check_label(label, what)
        except InvalidValueError as error:
            raise at_argument(error, "label") from None
        if requires_label and label is None:
            raise InvalidValueError(f"{what} needs a label", hint='write classifier("digits", label=3)')
        backbone = shipped(kind)
        check_schedule(backbone.schedule, schedule, what)
        suffix = "" if label is None else f", label={label}"
        return ConditionalModel(backbone, label, f'{what[:-1]}{suffix})')

    return factory


def register() -> None:
    """Register ``model("digits", label=...)`` and ``classifier("digits", label=...)`` (lazy loading)."""
    register_model("digits", _factory("backbone", False), "class-conditional energy model of 8x8 digits (label=0..9 or none)")
    register_model("digits", _factory("classifier", True), "noise-aware digits classifier log p(label | x_t, t)", kind="classifier")
