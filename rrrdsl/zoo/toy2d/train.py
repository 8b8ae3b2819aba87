"""Training the 2D zoo: energy and score models of the named 2D datasets, drawn exactly from the oracles.

The objective and the optimiser are :class:`rrrdsl.zoo.training.Trainer`'s (ε-prediction plus,
for energies, the adjacent-level density-ratio loss). Command line::

    rrr train ring --param energy --steps 4000 --out my-models     # or: rrr train toy2d ring ...
    rrr train toy2d --zoo --into-package --threads 1   # retrain the shipped zoo (rrrdsl/zoo/toy2d/checkpoints)

The zoo (:data:`ZOO`: 16 checkpoints, 2000 steps of batch 512 each, 4000 for the ring's score
model and the three ring energies) takes about 85 minutes on one CPU thread (the energies'
ratio loss costs about 2.5x the ε loss); each checkpoint is about 0.85 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Union

import torch

from ... import schedules
from ...errors import InvalidValueError
from .. import flags
from ...lang.ir import oracle
from ...models.registry import resolve
from ...schedules import CLEAN, Schedule
from ..training import TrainConfig, Trainer, save_loss_curve
from .loading import SHIPPED_DIR, save
from .models import PARAMS, NetModel, make_model

DESCRIPTION = "an energy or score model of a named 2D dataset (NAME), or the shipped 2D zoo (--zoo)"

#: the shipped zoo: energy models of every named 2D dataset, score models of six
ZOO_ENERGY = ("ring", "ring_left", "ring_right", "bar", "bar_h", "left_bar", "right_bar", "box", "box_small", "gauss")
ZOO_SCORE = ("ring", "bar", "left_bar", "right_bar", "box", "box_small")
ZOO = tuple((name, "energy") for name in ZOO_ENERGY) + tuple((name, "score") for name in ZOO_SCORE)
#: zoo entries that need more than the default steps: the ring's score model (narrow modes) is
#: 2.7x the MMD floor after 2000 steps and 1.1x after 4000 (``rrr bench models``); the
#: ring energies' level-0 mode masses are within TV 0.07 of exact after 2000 steps, 0.03 after 4000
ZOO_STEPS = {("ring", "score"): 4000, **{(name, "energy"): 4000 for name in ("ring", "ring_left", "ring_right")}}


def init_model(
    param: str, dim: int, schedule: Schedule, width: int = 128, depth: int = 4, seed: int = 0, description: str = ""
) -> NetModel:
    """A new model whose initial weights depend only on ``seed`` (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(param, dim, schedule, width, depth, description)


def oracle_data(name: str) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``draw(n, generator)``: fresh exact samples of the named dataset at the clean level."""
    source = resolve(oracle(name))
    return lambda n, generator: source.sample(n, generator, t=CLEAN)


class TrainedFiles(NamedTuple):
    weights: Path
    metadata: Path
    loss_curve: Path
    final_loss: float


def train_named(
    name: str,
    param: str,
    out: Union[str, os.PathLike],
    config: TrainConfig = TrainConfig(),
    width: int = 128,
    depth: int = 4,
    progress: bool = True,
) -> TrainedFiles:
    """Train ``param`` model of the named 2D dataset ``name`` and write ``OUT/NAME-PARAM.{pt,json,png}``."""
    data = oracle_data(name)
    model = init_model(param, 2, schedules.default(), width, depth, config.seed, f'learned {param} model of oracle("{name}")')
    result = Trainer(model, data, config, progress).fit()
    stem = Path(out) / f"{name}-{param}"
    final_loss = sum(result.losses[-100:]) / len(result.losses[-100:])
    weights, metadata = save(result.model, stem, name=name, data=name, final_loss=final_loss, **config._asdict())
    curve = save_loss_curve(result.losses, stem.with_name(stem.name + "-loss.png"), f"{name} ({param})")
    return TrainedFiles(weights, metadata, curve, final_loss)


def add_arguments(group: argparse._ArgumentGroup) -> list[argparse.Action]:
    """The options of ``rrr train toy2d`` besides NAME, ``--steps``, ``--out`` and ``--threads``."""
    defaults = TrainConfig()
    return [
        group.add_argument("--param", choices=PARAMS, default="energy", help="parameterisation (default: energy)"),
        group.add_argument("--batch-size", type=flags.count, default=defaults.batch_size, help=f"minibatch size (default {defaults.batch_size})"),
        group.add_argument("--lr", type=flags.positive, default=defaults.lr, help=f"Adam learning rate (default {defaults.lr})"),
        group.add_argument(
            "--ratio-weight", type=flags.non_negative, default=defaults.ratio_weight,
            help=f"weight of the adjacent-level density-ratio loss of energy models (default {defaults.ratio_weight}; 0: off)",
        ),
        group.add_argument("--width", type=flags.count, default=128, help="hidden width (default 128)"),
        group.add_argument("--depth", type=flags.count, default=4, help="residual blocks (default 4)"),
        group.add_argument("--seed", type=flags.seed, default=defaults.seed, help=f"seed of weights and data (default {defaults.seed})"),
        group.add_argument(
            "--zoo", action="store_true",
            help=f"retrain every checkpoint of the shipped zoo (ignores NAME and --param; --steps per entry, default {defaults.steps}; "
            "with --into-package they replace the shipped ones)",
        ),
    ]


def train(args: argparse.Namespace, out: Path) -> int:
    """``rrr train [toy2d] NAME|--zoo``: train, write the checkpoints into ``out``, print one
    line per checkpoint."""
    defaults = TrainConfig()
    config = TrainConfig(args.steps or defaults.steps, args.batch_size, args.lr, defaults.ema_decay, args.seed, args.ratio_weight)
    if args.zoo:
        jobs = ZOO
    elif args.name:
        resolve(oracle(args.name))  # unknown names fail here, with suggestions
        jobs = ((args.name, args.param),)
    else:
        raise InvalidValueError("rrr train needs a dataset NAME or --zoo", hint="e.g. `rrr train ring --param energy`")
    for index, (name, param) in enumerate(jobs, 1):
        if args.zoo and args.steps is None:
            config = config._replace(steps=ZOO_STEPS.get((name, param), defaults.steps))
        files = train_named(name, param, out, config, args.width, args.depth, progress=sys.stderr.isatty())
        print(
            f"[{index}/{len(jobs)}] {name} ({param}): final loss {files.final_loss:.4f} -> "
            f"{files.weights} ({files.weights.stat().st_size / 1024:.0f} KiB), {files.loss_curve}",
            flush=True,
        )
    return 0
