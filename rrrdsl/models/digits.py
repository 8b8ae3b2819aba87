"""Class-conditional diffusion models, a noise-aware classifier and an evaluator on 8×8 digits.

Data: ``sklearn.datasets.load_digits`` (1,797 images of 8×8 pixels, values 0..16, 10 classes),
scaled to ``[-1, 1]`` and flattened row-major to ``D = 64``. One fixed permutation (seed 0)
splits them into ``train`` (55%: the diffusion backbone and the guidance classifier),
``evaluator`` (25%: the independent evaluation classifier) and ``test`` (20%: held out; the
reference set of the Fréchet distance and the evaluator's test accuracy).

Three networks, all trained by :class:`rrrdsl.train.Trainer` (Adam, cosine learning rate, EMA):

* :class:`DigitsBackbone` — an energy-parameterised conditional diffusion model
  ``E_θ(x, t, y) = ½ ‖x - f_θ(x, t, y)‖²`` with ``log q_t(x | y) = -E_θ / σ_t - ½ ‖x‖²``
  (Salimans & Ho, 2021; Du et al., 2023, section 3.3) over a standard-normal base (see
  :class:`DigitsBackbone` for why). ``f_θ`` is the residual MLP of
  :mod:`rrrdsl.models.nets` with a label embedding added to the level embedding; label slot 10
  is "no label", used with probability :data:`CONDITION_DROPOUT` during training (Ho &
  Salimans, 2022, classifier-free guidance), so one network serves ``model("digits")`` and
  ``model("digits", label=3)``. All conditions of a graph are evaluated in one forward pass.
* :class:`ClassifierBackbone` — a noise-aware classifier ``log p(y | x_t, t)`` (a log-softmax
  of a time-conditioned residual MLP trained on digits noised at uniform levels; Dhariwal &
  Nichol, 2021, classifier guidance): ``classifier("digits", label=3)``.
* :class:`Evaluator` — an independent classifier of *clean* digits (plain ReLU MLP, another
  seed and data split) whose penultimate layer gives features for a Fréchet distance
  (Heusel et al., 2017).

Train the shipped checkpoints (about 3 minutes on one free CPU thread)::

    python -m rrrdsl.models.digits --train [--steps 12000] [--out rrrdsl/checkpoints]

which writes ``digits-backbone``, ``digits-classifier`` and ``digits-evaluator`` (``.pt`` +
``.json``, each well under 1 MB) and prints the test accuracies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Hashable, NamedTuple, Optional, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, InvalidValueError, UnknownNameError, suggest
from ..schedules import Level, Schedule
from ..schedules import default as default_schedule
from ..schedules import get as get_schedule
from .base import Backbone, ConditionalModel
from .checkpoints import SHIPPED_DIR, check_schedule, checkpoint_paths, read_weights, write_checkpoint
from .nets import ResidualMLP, _check_level

SIDE = 8
DIM = SIDE * SIDE
NUM_CLASSES = 10
#: the label slot meaning "unconditional"
NULL_LABEL = NUM_CLASSES
#: probability of replacing the label by the unconditional slot during training
CONDITION_DROPOUT = 0.15
#: fractions of the fixed permutation given to each split
SPLITS = {"train": (0.0, 0.55), "evaluator": (0.55, 0.80), "test": (0.80, 1.0)}
FORMAT = "rrrdsl-digits-checkpoint"
KINDS = ("backbone", "classifier", "evaluator")
#: the backbone's base densities (:class:`DigitsBackbone`)
BASES = ("standard_normal", "none")


# --- data ----------------------------------------------------------------------------------


def load(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Digits of one split: images ``[M, 64]`` in ``[-1, 1]`` (float32) and labels ``[M]``."""
    if split not in SPLITS:
        raise InvalidValueError(f"unknown digits split {split!r}", hint=suggest(split, SPLITS) or f"one of {', '.join(SPLITS)}")
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.as_tensor(data.data, dtype=torch.float32) / 8.0 - 1.0
    labels = torch.as_tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    lo, hi = (round(f * len(order)) for f in SPLITS[split])
    return images[order[lo:hi]], labels[order[lo:hi]]


# --- networks ------------------------------------------------------------------------------


class ConditionalMLP(ResidualMLP):
    """``f_θ(x, t, y)``: the residual MLP of :mod:`rrrdsl.models.nets` with a label embedding.

    The embedding of the label (``0 .. num_labels-1``, or ``num_labels`` for "none") is added
    to the per-block level features, so the blocks see ``e_t + e_y``.
    """

    def __init__(self, dim: int, num_labels: int, width: int = 128, depth: int = 3) -> None:
        super().__init__(dim, width, depth)
        self.num_labels = num_labels
        self.label = nn.Embedding(num_labels + 1, width * depth)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x`` ``[N, D]``, ``t`` ``[N]`` or ``[1]``, ``labels`` ``[N]`` -> ``[N, D]``."""
        times = (self.time(self.embed(t)) + self.label(labels)).chunk(self.depth, dim=-1)
        h = self.input(x.to(self.input.weight.dtype))
        for block, time in zip(self.blocks, times):
            h = block(h, time)
        return self.output(h).to(x.dtype)


def classifier_net(width: int = 128, depth: int = 2) -> ResidualMLP:
    """A time-conditioned residual MLP ``R^64 × levels -> R^10`` (logits)."""
    net = ResidualMLP(DIM, width, depth)
    net.output = nn.Sequential(nn.SiLU(), nn.Linear(width, NUM_CLASSES))
    return net


class Evaluator(nn.Module):
    """Clean-digit classifier ``64 -> width -> features -> 10`` (ReLU MLP) with a feature layer."""

    def __init__(self, width: int = 256, features: int = 64) -> None:
        super().__init__()
        self.width, self.num_features = width, features
        self.body = nn.Sequential(nn.Linear(DIM, width), nn.ReLU(), nn.Linear(width, features), nn.ReLU())
        self.head = nn.Linear(features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[N, features]`` (for the Fréchet distance)."""
        return self.body(x.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most likely label of each image ``[N]``."""
        return self(x).argmax(-1)


# --- backbones -----------------------------------------------------------------------------


def label_index(condition: Hashable) -> int:
    """The label slot of a condition: ``None`` -> :data:`NULL_LABEL`, an int 0..9 -> itself."""
    return NULL_LABEL if condition is None else int(condition)  # type: ignore[arg-type]


class _Flat(NamedTuple):
    x: torch.Tensor  # [C*N, D]
    levels: torch.Tensor  # [C*N] or [1]
    sigma: torch.Tensor  # [C*N] or [1]
    labels: torch.Tensor  # [C*N]
    shape: tuple[int, int]  # (C, N)


class _DigitsBase(Backbone):
    """Shared batching: ``x`` ``[N, D]`` tiled over ``C`` conditions, or ``[C, N, D]`` crops, is
    flattened to ``[C*N, D]`` for one forward pass; scores come from autograd of ``log_prob``."""

    param = "energy"
    dim = DIM
    has_energy = True

    def __init__(self, net: nn.Module, schedule: Schedule) -> None:
        self.net = net
        self.schedule = schedule
        #: number of forward passes so far (tests count batching with it)
        self.calls = 0

    def _flatten(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> _Flat:
        t = _check_level(t, None)
        count = len(conditions)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(count, *x.shape)
        if x.dim() != 3 or x.shape[0] != count or x.shape[2] != self.dim:
            raise InvalidValueError(f"expected x of shape [N, {self.dim}] or [{count}, N, {self.dim}], got {list(x.shape)}")
        n = x.shape[1]
        flat = x.reshape(count * n, self.dim)
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            levels = t.to(device=x.device, dtype=torch.long).repeat(count)
        else:
            levels = torch.full((1,), int(t), dtype=torch.long, device=x.device)
        sigma = self.schedule.at(levels, flat)[1].reshape(-1)
        labels = torch.tensor([label_index(c) for c in conditions], device=x.device).repeat_interleave(n)
        return _Flat(flat, levels, sigma, labels, (count, n))

    def _log_prob(self, flat: _Flat) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        flat = self._flatten(x, t, conditions)
        self.calls += 1
        return self._log_prob(flat).reshape(flat.shape)

    def score(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        if x.dim() == 2:  # one copy of the points per condition, so that gradients stay apart
            x = x.unsqueeze(0).expand(len(conditions), *x.shape)
        with torch.enable_grad():
            x = x.detach().contiguous().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(x, t, conditions).sum(), x)
        return grad


class DigitsBackbone(_DigitsBase):
    """Energy-parameterised class-conditional digit model over a standard-normal base::

        log q_t(x | y) = -E_θ(x, t, y) / σ_t - ½ ‖x‖²        (base="standard_normal")
        log q_t(x | y) = -E_θ(x, t, y) / σ_t                  (base="none": version-1 checkpoints)

    Since ``E_θ >= 0``, the base bounds the density by ``N(0, I)``: it is proper, and far from
    the data it falls like the base. Without it the energy is free wherever no noised data
    fall, and ``E_θ = 0`` wherever ``f_θ(x) = x``, which the network reaches far outside
    ``[-1, 1]^64`` as easily as on the data: MALA/HMC at the last levels drifted to pixel values
    of 5-12. The base costs the model nothing on the data: the pixels lie in ``[-1, 1]`` and the
    schedule is variance-preserving, so ``q_t / N(0, I)`` is bounded at every level. The noise
    prediction is ``ε̂ = -σ_t ∇_x log q_t = ∇_x E_θ + σ_t x``.
    """

    def __init__(self, net: ConditionalMLP, schedule: Schedule, base: str = "standard_normal") -> None:
        super().__init__(net, schedule)
        if base not in BASES:
            raise InvalidValueError(f"unknown base {base!r}", hint=f"one of {', '.join(BASES)}")
        self.base = base

    def energy(self, x: torch.Tensor, levels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``E_θ(x, t, y) = ½ ‖x - f_θ(x, t, y)‖²``, shape ``[N]``."""
        return 0.5 * (x - self.net(x, levels, labels)).square().sum(-1)

    def log_density(self, x: torch.Tensor, levels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The unnormalised ``log q_t(x | y)``, shape ``[N]``, differentiable in ``x`` and ``θ``."""
        log_q = -self.energy(x, levels, labels) / self.schedule.at(levels, x)[1].reshape(-1)
        return log_q - 0.5 * x.square().sum(-1) if self.base == "standard_normal" else log_q

    def _log_prob(self, flat: _Flat) -> torch.Tensor:
        return self.log_density(flat.x, flat.levels, flat.labels)


class ClassifierBackbone(_DigitsBase):
    """Noise-aware classifier: ``log p(y | x_t, t)`` for every requested label, one pass."""

    param = "classifier"

    def _log_prob(self, flat: _Flat) -> torch.Tensor:
        logits = self.net(flat.x, flat.levels)
        return torch.log_softmax(logits, -1).gather(-1, flat.labels[:, None]).squeeze(-1)


# --- training ------------------------------------------------------------------------------


def trainer(kind: str, images: torch.Tensor, labels: torch.Tensor, config, progress: bool = False):
    """A :class:`rrrdsl.train.Trainer` for one of :data:`KINDS` on labelled images.

    * ``backbone``: the ε-prediction loss through ``∇_x E_θ`` (and the base) with condition
      dropout. Not the adjacent-level ratio loss of the 2D energies: on digits it raised the
      Fréchet distance of guided reverse diffusion (w = 3) from about 11 to 24 and did not help
      the MCMC samplers (session notes of issue 8);
    * ``classifier``: cross-entropy on digits noised at uniform levels;
    * ``evaluator``: cross-entropy on clean digits.
    """
    from ..train import Trainer, noised

    class LabelledTrainer(Trainer):
        def draw(self, n: int, generator: torch.Generator):  # type: ignore[override]
            index = torch.randint(len(images), (n,), generator=generator)
            return images[index], labels[index]

        def loss(self, batch, generator: torch.Generator) -> torch.Tensor:  # type: ignore[override]
            x0, y = batch
            model = self.model
            if kind == "evaluator":
                return nn.functional.cross_entropy(model.net(x0), y)
            x_t, t, eps = noised(x0, model.schedule, generator)
            if kind == "classifier":
                return nn.functional.cross_entropy(model.net(x_t, t), y)
            y = self.drop_labels(y, generator)
            x_t.requires_grad_(True)
            (grad,) = torch.autograd.grad(model.log_density(x_t, t, y).sum(), x_t, create_graph=True)
            eps_hat = -model.schedule.at(t, x_t)[1] * grad
            return (eps_hat - eps).square().mean()

        @staticmethod
        def drop_labels(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            """Condition dropout: each label becomes the null slot with probability ``CONDITION_DROPOUT``."""
            drop = torch.rand(len(y), generator=generator) < CONDITION_DROPOUT
            return torch.where(drop, torch.full_like(y, NULL_LABEL), y)

    return LabelledTrainer(build(kind), images, config, progress)


class EvaluatorModel:
    """The evaluator as :class:`rrrdsl.train.Trainer` and the checkpoints expect it (``net``, ``schedule``)."""

    param = "evaluator"
    dim = DIM

    def __init__(self, net: Evaluator, schedule: Schedule) -> None:
        self.net = net
        self.schedule = schedule


def build(kind: str, schedule: Optional[Schedule] = None, base: str = "standard_normal", **sizes: int):
    """A freshly initialised network of ``kind`` wrapped for training (sizes: ``width``,
    ``depth``; ``base``: the backbone's base density, :data:`BASES`)."""
    schedule = schedule or default_schedule()
    if kind == "backbone":
        return DigitsBackbone(ConditionalMLP(DIM, NUM_CLASSES, **sizes), schedule, base)
    if kind == "classifier":
        return ClassifierBackbone(classifier_net(**sizes), schedule)
    if kind == "evaluator":
        return EvaluatorModel(Evaluator(**sizes), schedule)
    raise InvalidValueError(f"unknown digits network {kind!r}", hint=suggest(kind, KINDS) or f"one of {', '.join(KINDS)}")


def _sizes(net: nn.Module) -> dict[str, int]:
    if isinstance(net, Evaluator):
        return {"width": net.width, "features": net.num_features}
    return {"width": net.width, "depth": net.depth}


# --- checkpoints ---------------------------------------------------------------------------


def save(kind: str, model, path, **info: Any) -> tuple[Path, Path]:
    """Write a digits checkpoint (``state_dict`` + JSON with sizes, schedule and sha256)."""
    weights_path, meta_path = checkpoint_paths(path)
    metadata = {
        "format": FORMAT,
        "version": 2,
        "kind": kind,
        "sizes": _sizes(model.net),
        **({"base": model.base} if kind == "backbone" else {}),
        "schedule": {"kind": model.schedule.kind, "num_levels": model.schedule.num_levels},
        **info,
    }
    return write_checkpoint(weights_path, meta_path, model.net.state_dict(), metadata)


def load_checkpoint(path):
    """Load a digits checkpoint (``weights_only``, sha256-checked) in eval mode."""
    weights_path, meta_path = checkpoint_paths(path)
    hint = "train them with `python -m rrrdsl.models.digits --train`"
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{meta_path}: digits checkpoint missing or unreadable ({error})", hint=hint) from None
    if metadata.get("format") != FORMAT or metadata.get("kind") not in KINDS:
        raise CheckpointError(f"{meta_path}: not a digits checkpoint", hint=f'expected "format": "{FORMAT}"')
    state = read_weights(weights_path, meta_path, metadata.get("sha256"))
    spec = metadata["schedule"]
    # version-1 backbones have no base
    base = {"base": metadata.get("base", "none")} if metadata["kind"] == "backbone" else {}
    model = build(metadata["kind"], get_schedule(spec["kind"], spec["num_levels"]), **base, **metadata["sizes"])
    model.net.load_state_dict(state)
    model.net.eval()
    return model


_LOADED: dict[str, Any] = {}


def shipped(kind: str):
    """The shipped network of ``kind`` (loaded once from ``rrrdsl/checkpoints/digits-KIND``)."""
    if kind not in _LOADED:
        _LOADED[kind] = load_checkpoint(SHIPPED_DIR / f"digits-{kind}")
    return _LOADED[kind]


# --- registration --------------------------------------------------------------------------


def check_label(label: Any, what: str) -> Optional[int]:
    """``label`` as an int 0..9 (or None); anything else is an :class:`InvalidValueError`."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, (int, float)) or label != int(label) or not 0 <= label < NUM_CLASSES:
        raise InvalidValueError(f"{what}: label must be an integer 0..9, got {label!r}")
    return int(label)


def _factory(kind: str, requires_label: bool):
    what = f'{"model" if kind == "backbone" else "classifier"}("digits")'

    def factory(schedule: Optional[Schedule] = None, label: Any = None, **condition: Any) -> ConditionalModel:
        if condition:
            key = next(iter(condition))
            raise UnknownNameError(f"{what} takes no argument {key!r}", hint=suggest(key, ["label"]) or "the only argument is label=0..9")
        label = check_label(label, what)
        if requires_label and label is None:
            raise InvalidValueError(f"{what} needs a label", hint='write classifier("digits", label=3)')
        backbone = shipped(kind)
        check_schedule(backbone.schedule, schedule, what)
        suffix = "" if label is None else f", label={label}"
        return ConditionalModel(backbone, label, f'{what[:-1]}{suffix})')

    return factory


def register() -> None:
    """Register ``model("digits", label=...)`` and ``classifier("digits", label=...)`` (lazy loading)."""
    from .registry import register_model

    register_model("digits", _factory("backbone", False), "class-conditional energy model of 8x8 digits (label=0..9 or none)")
    register_model("digits", _factory("classifier", True), "noise-aware digits classifier log p(label | x_t, t)", kind="classifier")


# --- evaluation ----------------------------------------------------------------------------


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (Heusel et al., 2017):
    ``‖μ_a - μ_b‖² + tr(Σ_a + Σ_b - 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})``."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


# --- command line --------------------------------------------------------------------------


def train_all(steps: int, out: Path, progress: bool = True) -> dict[str, float]:
    """Train the three networks and save them in ``out``; return held-out accuracies."""
    from ..train import TrainConfig

    train_x, train_y = load("train")
    eval_x, eval_y = load("evaluator")
    test_x, test_y = load("test")
    plan = {
        "backbone": (train_x, train_y, TrainConfig(steps=steps, batch_size=256, lr=2e-3, seed=0, ratio_weight=0.0)),
        "classifier": (train_x, train_y, TrainConfig(steps=steps // 2, batch_size=256, lr=2e-3, seed=1)),
        "evaluator": (eval_x, eval_y, TrainConfig(steps=steps // 3, batch_size=128, lr=1e-3, seed=2)),
    }
    report: dict[str, float] = {}
    for kind, (x, y, config) in plan.items():
        model = trainer(kind, x, y, config, progress).fit().model
        info: dict[str, Any] = {"steps": config.steps, "seed": config.seed, "split": "evaluator" if kind == "evaluator" else "train"}
        if kind == "evaluator":
            info["test_accuracy"] = report["evaluator_test_accuracy"] = float((model.net.predict(test_x) == test_y).float().mean())
        save(kind, model, out / f"digits-{kind}", **info)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrrdsl.models.digits", description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true", help="train and save the three digits networks")
    parser.add_argument("--steps", type=int, default=12000, help="backbone steps (classifier: half, evaluator: a third)")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.train:
        parser.print_help()
        return 1
    torch.set_num_threads(args.threads)
    print(json.dumps(train_all(args.steps, args.out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
