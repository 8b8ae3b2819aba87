"""Training the digits networks: :class:`LabelledTrainer` and ``rrr train digits``.

All three networks use :class:`rrrdsl.zoo.training.Trainer`'s loop (Adam, cosine learning
rate, EMA) on labelled images; only the minibatches (images with their labels) and the losses
differ, by network:

* ``backbone``: the ε-prediction loss through ``∇_x E_θ`` (and the base) with condition
  dropout (Ho & Salimans, 2022). Not the adjacent-level ratio loss of the 2D energies: on
  digits it raised the Fréchet distance of guided reverse diffusion (w = 3) from about 11 to 24
  and did not help the MCMC samplers (session notes of issue 8);
* ``classifier``: cross-entropy on digits noised at uniform levels;
* ``evaluator``: cross-entropy on clean digits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import InvalidValueError
from ..training import TrainConfig, Trainer, noised
from .data import load
from .loading import SHIPPED_DIR, save
from .models import NULL_LABEL, DigitsModel, build

DESCRIPTION = "the digits backbone, guidance classifier and evaluator (no NAME)"
#: probability of replacing the label by the unconditional slot during training
CONDITION_DROPOUT = 0.15
#: backbone steps of ``rrr train digits`` (the classifier trains half as many, the evaluator a third)
DEFAULT_STEPS = 12000

Batch = tuple[torch.Tensor, torch.Tensor]


class LabelledTrainer(Trainer):
    """A :class:`~rrrdsl.zoo.training.Trainer` of the digits network ``kind`` on ``images``
    ``[M, 64]`` with their ``labels`` ``[M]``; the losses are in the module's docstring."""

    def __init__(
        self, kind: str, model: DigitsModel, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, progress: bool = False
    ) -> None:
        super().__init__(model, images, config, progress)
        self.kind = kind
        self.labels = labels

    def draw(self, n: int, generator: torch.Generator) -> Batch:  # type: ignore[override]
        """``n`` images with their labels, drawn with replacement."""
        index = torch.randint(len(self.data), (n,), generator=generator)
        return self.data[index], self.labels[index]

    def loss(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:  # type: ignore[override]
        x0, y = batch
        model = self.model
        match self.kind:
            case "evaluator":
                return nn.functional.cross_entropy(model.net(x0), y)
            case "classifier":
                x_t, t, _ = noised(x0, model.schedule, generator)
                return nn.functional.cross_entropy(model.net(x_t, t), y)
        x_t, t, eps = noised(x0, model.schedule, generator)
        y = drop_labels(y, generator)
        x_t.requires_grad_(True)
        (grad,) = torch.autograd.grad(model.log_density(x_t, t, y).sum(), x_t, create_graph=True)
        eps_hat = -model.schedule.at(t, x_t)[1] * grad
        return (eps_hat - eps).square().mean()


def drop_labels(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Condition dropout: each label becomes the null slot with probability :data:`CONDITION_DROPOUT`."""
    drop = torch.rand(len(y), generator=generator) < CONDITION_DROPOUT
    return torch.where(drop, torch.full_like(y, NULL_LABEL), y)


def trainer(kind: str, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, progress: bool = False) -> LabelledTrainer:
    """A :class:`LabelledTrainer` of a freshly built network ``kind`` (default sizes), whose
    initial weights depend only on ``config.seed`` (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build(kind)
    return LabelledTrainer(kind, model, images, labels, config, progress)


def train_all(steps: int, out: Path, progress: bool = True) -> dict[str, float]:
    """Train the three networks and save them in ``out``; return held-out accuracies."""
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


def add_arguments(group: argparse._ArgumentGroup) -> list[argparse.Action]:
    """``rrr train digits`` has only the shared options (``--steps``, ``--out``, ``--threads``)."""
    return []


def train(args: argparse.Namespace, out: Path) -> int:
    """``rrr train digits``: train the three networks into ``out`` (``--steps``: the
    backbone's, at least 3, default :data:`DEFAULT_STEPS`) and print the accuracies."""
    if args.name is not None:
        raise InvalidValueError(f"rrr train digits takes no NAME, got {args.name!r}", hint="e.g. `rrr train digits --steps 12000`")
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    if steps < 3:
        raise InvalidValueError(f"rrr train digits needs --steps >= 3, got {steps}", hint="the evaluator trains steps // 3 steps")
    print(json.dumps(train_all(steps, out, progress=sys.stderr.isatty()), indent=2))
    return 0
