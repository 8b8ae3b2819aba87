"""The model registry: resolves graph leaves to :class:`~rrrdsl.models.base.Model` objects.

=====================  ===========================================================
leaf                   resolves to
=====================  ===========================================================
``oracle("ring")``     a named exact oracle (the 2D datasets below)
``gmm(...)``           a custom :class:`~rrrdsl.models.oracles.GaussianMixture`
``box(...)``           a custom :class:`~rrrdsl.models.oracles.Box`
``model("name", ...)`` a registered model, built by its factory with the leaf's condition
``classifier(...)``    a registered noise-aware classifier
=====================  ===========================================================

A model family may also register a *judge* of samples (:func:`register_judge`): a function of
a graph and its samples that returns verdict lines (the objects family's detector says which
requested cells hold an object); :func:`judge` collects the lines of the judges of a graph's
models, and ``rrr run`` prints them under each sample's summary line.

The named oracles are the 2D toy datasets of Du et al. (2023), "Reduce, Reuse, Recycle",
with the parameters in :data:`ORACLES`' descriptions. The learned models (the 2D zoo, the
digits backbone and classifier) live in the zoo, which sits above this module: it is imported
by name (:data:`ZOO`), once, on the first lookup of a name that is not registered, by
:func:`list_models` and before the first :func:`register_model` (so that later registrations
replace the zoo's, never the reverse), and registers its names through :func:`register_model`.
Importing this module imports no network code. Resolved models are cached, so resolving the
same leaf with the same schedule twice returns the same object.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, NamedTuple, Optional, Union

import torch

from .. import schedules
from ..errors import InvalidValueError, RrrdslError, UnknownNameError, at_argument, suggest
from ..lang.ir import Expr, Leaf, leaves
from ..schedules import Schedule
from .base import Model
from .oracles import Box, GaussianMixture, Oracle

#: a named-oracle factory: schedule -> oracle
OracleFactory = Callable[[Schedule], Oracle]
#: a registered-model factory: (schedule or None, **condition) -> model
ModelFactory = Callable[..., Model]
#: a judge of samples: (graph, samples [N, D]) -> verdict lines (none when it has nothing to say)
Judge = Callable[[Expr, torch.Tensor], list[str]]

RING_RADIUS = 0.5
RING_STD = 0.03
RING_SIZE = 8


class _Entry(NamedTuple):
    factory: Callable[..., Model]
    description: str


def _ring(components: range) -> OracleFactory:
    """Components ``k`` of the ring: ``N(0.5 (cos 2πk/8, sin 2πk/8), 0.03^2 I)``, equal weights."""

    def build(schedule: Schedule) -> Oracle:
        angles = torch.tensor([2 * math.pi * k / RING_SIZE for k in components], dtype=torch.float64)
        means = RING_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        return GaussianMixture(means, RING_STD, schedule=schedule)

    return build


def _box(low: tuple[float, float], high: tuple[float, float]) -> OracleFactory:
    return lambda schedule: Box(low, high, schedule=schedule)


#: the named 2D oracles: name -> (factory, one-line description)
ORACLES: dict[str, _Entry] = {
    "ring": _Entry(_ring(range(8)), "8 Gaussians on a circle of radius 0.5 (component k at angle 2πk/8), std 0.03, equal weights"),
    "ring_left": _Entry(_ring(range(0, 4)), "components 0-3 of ring (angles 0 to 3π/4), std 0.03, equal weights"),
    "ring_right": _Entry(_ring(range(4, 8)), "components 4-7 of ring (angles π to 7π/4), std 0.03, equal weights"),
    "bar": _Entry(_box((-0.2, -1.0), (0.2, 1.0)), "uniform vertical bar: x in [-0.2, 0.2], y in [-1, 1]"),
    "bar_h": _Entry(_box((-1.0, -0.2), (1.0, 0.2)), "uniform horizontal bar: x in [-1, 1], y in [-0.2, 0.2]"),
    "left_bar": _Entry(_box((-0.3, -1.0), (-0.1, 1.0)), "uniform bar left of centre: x in [-0.3, -0.1], y in [-1, 1]"),
    "right_bar": _Entry(_box((0.1, -1.0), (0.3, 1.0)), "uniform bar right of centre: x in [0.1, 0.3], y in [-1, 1]"),
    "box": _Entry(_box((-0.7, -0.7), (0.7, 0.7)), "uniform square [-0.7, 0.7]^2"),
    "box_small": _Entry(_box((-0.3, -0.3), (0.3, 0.3)), "uniform square [-0.3, 0.3]^2"),
    "gauss": _Entry(lambda schedule: GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule), "Gaussian N(0, 0.5^2 I)"),
}

#: registered models and classifiers: kind -> name -> (factory, description)
_REGISTERED: dict[str, dict[str, _Entry]] = {"model": {}, "classifier": {}}

#: judges of samples: model name -> judge (:func:`register_judge`)
_JUDGES: dict[str, Judge] = {}

#: resolved models: (leaf, schedule) -> model
_CACHE: dict[tuple[Leaf, Optional[Schedule]], Model] = {}

#: turns an object registered in place of a factory into a factory: ``(type, wrap)`` pairs with
#: ``wrap(name, obj, **options) -> ModelFactory``, installed by the zoo (a torch module becomes a
#: diffusion model through the diffusers adapter) with :func:`register_wrapper`
_WRAPPERS: list[tuple[type, Callable[..., ModelFactory]]] = []

#: the package of learned model families, imported by :func:`load_zoo` (a name, not an import:
#: the zoo sits above this layer); its ``register()`` calls :func:`register_model`
ZOO = "rrrdsl.zoo"
_zoo_loaded = False


def load_zoo() -> None:
    """Let the zoo (:data:`ZOO`) register its learned models, once per process (again after a
    failure, so that the error is raised at every lookup rather than turning into unknown names)."""
    global _zoo_loaded
    if not _zoo_loaded:
        _zoo_loaded = True  # first: the zoo's own registrations call back into this module
        try:
            importlib.import_module(ZOO).register()
        except BaseException:
            _zoo_loaded = False
            raise


def register_wrapper(type_: type, wrap: Callable[..., ModelFactory]) -> None:
    """Let :func:`register_model` take objects of ``type_`` in place of a factory:
    ``wrap(name, obj, **options)`` returns the factory (the zoo registers one for torch modules)."""
    _WRAPPERS[:] = [(t, w) for t, w in _WRAPPERS if t is not type_] + [(type_, wrap)]


def register_model(name: str, factory: Union[ModelFactory, Model, Any], description: str = "", kind: str = "model", **options: Any) -> None:
    """Make ``model(name, **condition)`` (or ``classifier(name, ...)``) resolvable.

    Parameters
    ----------
    name
        The name used in expressions.
    factory
        ``factory(schedule, **condition) -> Model``; ``schedule`` is the one requested by the
        compiler, or None to let the model use its own (a trained checkpoint's). Or a
        :class:`~rrrdsl.models.base.Model` itself (the same model for every leaf), or a torch
        module, wrapped by the zoo's diffusers adapter with ``options``
        (:func:`rrrdsl.zoo.diffusers.modules.wrap_module`: ``shape``, ``alphas_cumprod``,
        ``prediction``, ``levels``, ...).
    description
        One line, shown by :func:`list_models`.
    kind
        ``"model"`` or ``"classifier"``.

    Registering a name again replaces the entry and drops its cached models; the zoo is
    loaded first, so that a name registered here replaces the zoo's.
    """
    load_zoo()
    wraps = [wrap for type_, wrap in _WRAPPERS if isinstance(factory, type_)]
    if wraps:
        factory = wraps[0](name, factory, **options)
    elif options:
        raise InvalidValueError(f"register_model({name!r}, ...) takes the options {', '.join(sorted(options))} only with a torch module")
    elif isinstance(factory, Model):
        factory = _constant(name, factory)
    if kind not in _REGISTERED:
        raise InvalidValueError(f"cannot register a {kind!r}", hint="kind is 'model' or 'classifier'")
    if not isinstance(name, str) or not name:
        raise InvalidValueError(f"a registered {kind} needs a non-empty name, got {name!r}")
    if not callable(factory):
        raise InvalidValueError(f"the factory for {kind}({name!r}) must be callable, got {type(factory).__name__}")
    _REGISTERED[kind][name] = _Entry(factory, str(description))
    for key in [k for k in _CACHE if (k[0].kind, k[0].name) == (kind, name)]:
        del _CACHE[key]


def register_judge(name: str, judge: Judge) -> None:
    """Let ``judge(graph, x)`` give verdicts on samples ``x`` ``[N, D]`` of any graph with a
    ``model(name, ...)`` leaf (registering a name again replaces its judge)."""
    if not callable(judge):
        raise InvalidValueError(f"the judge of model({name!r}) must be callable, got {type(judge).__name__}")
    _JUDGES[name] = judge


def judge(expr: Expr, x: torch.Tensor) -> list[str]:
    """The verdict lines on samples ``x`` of ``expr`` from the judges of its models, in the
    order of their first leaves (each judge once)."""
    names = dict.fromkeys(leaf.name for leaf in leaves(expr) if leaf.kind == "model")
    return [line for name in names if name in _JUDGES for line in _JUDGES[name](expr, x)]


def _constant(name: str, instance: Model) -> ModelFactory:
    """The factory of a registered model instance: the same model for ``model(name)``."""

    def factory(schedule: Optional[Schedule] = None, **condition: Any) -> Model:
        if condition:
            key = next(iter(condition))
            raise at_argument(UnknownNameError(f"model({name!r}) takes no argument {key!r}", hint="a model registered as an instance has no conditions"), key)
        return instance

    return factory


def list_models() -> dict[str, str]:
    """Every resolvable name, qualified (``oracle("ring")``, ``model("digits")``), with its description."""
    load_zoo()
    out = {f'oracle("{name}")': entry.description for name, entry in ORACLES.items()}
    for kind, table in _REGISTERED.items():
        out.update({f'{kind}("{name}")': entry.description for name, entry in table.items()})
    return out


def resolve(leaf: Leaf, schedule: Optional[Schedule] = None) -> Model:
    """The model behind ``leaf`` (cached per leaf and schedule).

    Oracles (named, ``gmm``, ``box``) use ``schedule``, or :func:`rrrdsl.schedules.default`
    when it is None; registered models receive ``schedule`` as given.
    """
    if not isinstance(leaf, Leaf):
        raise InvalidValueError(f"only a leaf resolves to a model, got {leaf!r}")
    if leaf.kind in ("oracle", "gmm", "box") and schedule is None:
        schedule = schedules.default()
    key = (leaf, schedule)
    if key not in _CACHE:
        _CACHE[key] = _build(leaf, schedule)
    return _CACHE[key]


def _build(leaf: Leaf, schedule: Optional[Schedule]) -> Model:
    text = str(leaf)
    if leaf.kind == "oracle":
        if leaf.name not in ORACLES:
            raise UnknownNameError(f"unknown oracle {leaf.name!r}", hint=suggest(leaf.name, ORACLES) or _known("oracles", ORACLES))
        model = ORACLES[leaf.name].factory(schedule)
        model.description = text
        return model
    if leaf.kind == "gmm":
        return GaussianMixture(leaf.param("means"), leaf.param("std"), leaf.param("weights"), schedule=schedule, description=text)
    if leaf.kind == "box":
        return Box(leaf.param("low"), leaf.param("high"), schedule=schedule, description=text)
    if leaf.kind in _REGISTERED:
        if leaf.name not in _REGISTERED[leaf.kind]:
            load_zoo()
        table = _REGISTERED[leaf.kind]
        if leaf.name not in table:
            raise UnknownNameError(f"unknown {leaf.kind} {leaf.name!r}", hint=_unknown_registered_hint(leaf.kind, leaf.name))
        try:
            model = table[leaf.name].factory(schedule, **dict(leaf.params))
        except RrrdslError as error:
            error.leaf = leaf  # where an argument at fault is (error.argument)
            raise
        if not isinstance(model, Model):
            raise InvalidValueError(f"the factory for {text} returned {type(model).__name__}, not a Model")
        model.description = model.description or text
        return model
    raise InvalidValueError(f"a leaf of kind {leaf.kind!r} does not name a model")


def _known(what: str, names: dict) -> str:
    return f"known {what}: " + ", ".join(sorted(names)) if names else f"no {what} are registered"


def _unknown_registered_hint(kind: str, name: str) -> str:
    table = _REGISTERED[kind]
    parts = [suggest(name, table) or _known(f"{kind}s", table)]
    if kind == "model" and name in ORACLES:
        parts.append(f'an exact oracle of that name exists: use oracle("{name}") for the exact model')
    if not table:
        parts.append(f"register one with rrrdsl.register_model(name, factory, description, kind={kind!r})")
    return "; ".join(parts)

