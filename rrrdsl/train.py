"""Training learned diffusion models, the ``rrr train`` command and the shipped zoo.

The objective is the ε-prediction loss of Ho et al. (2020), with levels drawn uniformly::

    L(θ) = E_{t ~ U{0..T-1}, x_0 ~ data, ε ~ N(0, I)} ‖ε̂_θ(sqrt(alpha_bar_t) x_0 + sigma_t ε, t) - ε‖² / D,

for both parameterisations; for an energy model ``ε̂_θ = ∇_x E_θ`` and the loss is
differentiated through that gradient (``create_graph=True``), as in Salimans & Ho (2021) and
Du et al. (2023).

That loss fits the *gradient* of ``log q_t`` only where the data lie, so it leaves the
relative heights of separated modes free: at low levels, where the ring's eight modes no
longer touch, the shipped energies trained on it alone put 0.79 of the mass of
``model("ring")`` at level 0 in one mode (exact: 0.125 each). Energy models therefore also
learn the density *ratio* of adjacent levels, by telling noised data at level ``t`` from
noised data at ``t + 1`` (noise-contrastive estimation, Gutmann & Hyvärinen, 2010, between
neighbouring levels as in the telescoping density-ratio estimation of Rhodes, Xu & Gutmann,
2020; :func:`level_ratio_loss`): the logit ``log q_t(x) - log q_{t+1}(x)`` comes from the energy
itself, with a learned log-normaliser per level, so the heights of every mode are tied level
by level to the high levels where the modes merge. It is applied on the lowest
``ratio_levels`` levels, where modes separate, with its own larger batch: it is
noise-limited (at batch 512 the mode masses at level 0 were off by up to 30%, at 2048 by
under 10%). Measured with ``benchmarks/bench_models.py`` (the ``mode masses`` table). Adam (Kingma & Ba, 2015) with a cosine-decayed learning rate, an
exponential moving average of the weights (the EMA weights are the trained model), and fixed
seeds: the same arguments give the same weights on the same machine.

Python::

    trainer = Trainer(make_model("energy", dim=2, schedule=schedules.default()), data)
    result = trainer.fit()          # result.model (EMA weights), result.losses

Command line::

    rrr train ring --param energy --steps 4000 --out my-models
    python -m rrrdsl.train --zoo --threads 1   # retrain the shipped zoo into rrrdsl/checkpoints

The zoo (:data:`ZOO`: 16 checkpoints, 2000 steps of batch 512 each, 4000 for the ring's score
model and the three ring energies) takes about 85 minutes on one CPU thread (the energies'
ratio loss costs about 2.5x the ε loss); each checkpoint is about 0.85 MB.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from . import schedules
from .errors import InvalidValueError
from .models import checkpoints
from .models.nets import PARAMS, NetModel, make_model
from .schedules import CLEAN, Schedule

#: a data source: a tensor ``[M, D]`` of examples, or ``draw(n, generator) -> [n, D]``
Data = Union[torch.Tensor, Callable[[int, torch.Generator], torch.Tensor]]


class TrainConfig(NamedTuple):
    """Optimisation settings (defaults: those of the shipped zoo)."""

    steps: int = 2000
    batch_size: int = 512
    lr: float = 3e-3
    ema_decay: float = 0.995
    seed: int = 0
    #: weight of :func:`level_ratio_loss` (energy models only; 0 turns it off)
    ratio_weight: float = 1.0
    #: the ratio loss compares levels t and t + 1 for t < ratio_levels
    ratio_levels: int = 30
    #: examples per step for the ratio loss
    ratio_batch: int = 2048


class TrainResult(NamedTuple):
    """A trained model (EMA weights, eval mode) and its loss per step."""

    model: NetModel
    losses: list[float]


class Trainer:
    """ε-prediction training of a learned model on any data (Ho et al., 2020).

    Parameters
    ----------
    model
        The model to train (:func:`rrrdsl.models.nets.make_model`); its parameters are updated
        in place, and :meth:`fit` returns a copy holding the EMA weights.
    data
        A tensor ``[M, D]`` (minibatches drawn with replacement) or a callable
        ``draw(n, generator) -> [n, D]`` giving fresh samples each step.
    config
        Steps, batch size, learning rate, EMA decay and seed.
    progress
        Show a tqdm progress bar.
    """

    def __init__(self, model: NetModel, data: Data, config: TrainConfig = TrainConfig(), progress: bool = True) -> None:
        if isinstance(data, torch.Tensor) and (data.dim() != 2 or data.shape[1] != model.dim or len(data) == 0):
            raise InvalidValueError(f"training data must have shape [M, {model.dim}] with M >= 1, got {list(data.shape)}")
        if (config.steps < 1 or config.batch_size < 1 or not 0.0 <= config.ema_decay < 1.0 or config.lr <= 0
                or config.ratio_weight < 0 or config.ratio_levels < 1 or config.ratio_batch < 1):
            raise InvalidValueError(
                f"invalid training settings {config}",
                hint="need steps, batch_size, ratio_levels, ratio_batch >= 1, lr > 0, ratio_weight >= 0, 0 <= ema_decay < 1",
            )
        self.model = model
        self.data = data
        self.config = config
        self.progress = progress
        #: the learned ``log Z_t`` of the ratio loss (a training-only nuisance parameter)
        self.log_normaliser = (
            torch.nn.Parameter(torch.zeros(model.schedule.num_levels))
            if getattr(model, "param", None) == "energy" and config.ratio_weight > 0
            else None
        )

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """A minibatch of ``n`` clean examples."""
        if isinstance(self.data, torch.Tensor):
            index = torch.randint(len(self.data), (n,), generator=generator)
            return self.data[index].to(torch.float32)
        return self.data(n, generator).to(torch.float32)

    def loss(self, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ε-prediction MSE on one minibatch of clean examples ``x0`` (uniform levels), plus,
        for energy models, ``ratio_weight`` times :func:`level_ratio_loss` on a fresh batch."""
        x_t, t, eps = noised(x0, self.model.schedule, generator)
        loss = (self.model.predict_eps(x_t, t, create_graph=True) - eps).square().mean()
        if self.log_normaliser is not None:
            ratio = level_ratio_loss(
                self.model.log_prob, self.draw(self.config.ratio_batch, generator), self.model.schedule,
                self.log_normaliser, self.config.ratio_levels, generator,
            )
            loss = loss + self.config.ratio_weight * ratio
        return loss

    def fit(self) -> TrainResult:
        """Run the optimisation; return the EMA model and the loss curve."""
        config = self.config
        generator = torch.Generator().manual_seed(config.seed)
        net = self.model.net.train()
        ema = torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
        )
        parameters = list(net.parameters()) + ([self.log_normaliser] if self.log_normaliser is not None else [])
        optimiser = torch.optim.Adam(parameters, lr=config.lr)
        lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.steps)
        losses: list[float] = []
        bar = tqdm(range(config.steps), desc=f"train {self.model.param}", disable=not self.progress, leave=False)
        for step in bar:
            loss = self.loss(self.draw(config.batch_size, generator), generator)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            lr_schedule.step()
            ema.update_parameters(net)
            losses.append(loss.item())
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        net.eval()
        trained = copy.copy(self.model)
        trained.net = ema.module.eval()
        return TrainResult(trained, losses)


def noised(x0: torch.Tensor, schedule: Schedule, generator: torch.Generator, t: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, t, ε)``: ``x_t = sqrt(alpha_bar_t) x_0 + sigma_t ε`` at levels ``t`` (uniform when omitted)."""
    if t is None:
        t = torch.randint(schedule.num_levels, (len(x0),), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    alpha_bar, sigma = schedule.at(t, x0)
    return alpha_bar.sqrt() * x0 + sigma * eps, t, eps


def level_ratio_loss(
    log_q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    schedule: Schedule,
    log_normaliser: torch.Tensor,
    ratio_levels: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Logistic loss of telling ``q_t`` from ``q_{t+1}`` with the model's own density ratio.

    Noise-contrastive estimation (Gutmann & Hyvärinen, 2010) between adjacent levels, as in
    telescoping density-ratio estimation (Rhodes, Xu & Gutmann, 2020). For each clean example
    a level ``t ~ U{0..ratio_levels-1}`` is drawn; ``x0`` is noised once to level ``t`` (label
    1) and once, independently, to ``t + 1`` (label 0); the logit is::

        log q_t(x) - log q_{t+1}(x) = log_q(x, t) - log_q(x, t + 1) - (log Z_t - log Z_{t+1}),

    with ``log_q`` the model's unnormalised ``-E_θ(x, t) / sigma_t`` and ``log Z`` the learned
    ``log_normaliser`` ``[T]``. Its minimum is at the true ratio, which fixes the difference of
    ``log q_t`` between any two points where noised data fall, modes included.

    Parameters
    ----------
    log_q
        ``log_q(x, levels) -> [N]``, differentiable in the parameters; rows align with ``x0``.
    x0
        Clean examples ``[N, D]``.
    ratio_levels
        Pairs ``(t, t + 1)`` with ``t < ratio_levels`` (at most ``T - 1``).
    """
    levels = min(ratio_levels, schedule.num_levels - 1)
    t = torch.randint(levels, (len(x0),), generator=generator)
    x_t = noised(x0, schedule, generator, t)[0]
    x_next = noised(x0, schedule, generator, t + 1)[0]

    def logit(x: torch.Tensor) -> torch.Tensor:
        return log_q(x, t) - log_q(x, t + 1) - (log_normaliser[t] - log_normaliser[t + 1])

    return nn.functional.softplus(-logit(x_t)).mean() + nn.functional.softplus(logit(x_next)).mean()


def init_model(
    param: str, dim: int, schedule: Schedule, width: int = 128, depth: int = 4, seed: int = 0, description: str = ""
) -> NetModel:
    """A new model whose initial weights depend only on ``seed`` (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(param, dim, schedule, width, depth, description)


def oracle_data(name: str) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``draw(n, generator)``: fresh exact samples of the named dataset at the clean level."""
    from .lang.ir import oracle
    from .models.registry import resolve

    source = resolve(oracle(name))
    return lambda n, generator: source.sample(n, generator, t=CLEAN)


def save_loss_curve(losses: Sequence[float], path: Union[str, os.PathLike], title: str = "") -> Path:
    """Plot the loss per step (and a running mean) to a PNG with matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses_t = torch.tensor(list(losses), dtype=torch.float64)
    window = max(1, len(losses_t) // 50)
    smooth = torch.nn.functional.avg_pool1d(losses_t[None, None], window, stride=1)[0, 0]
    figure = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(losses_t.numpy(), lw=0.5, alpha=0.4, label="loss per step")
    axes.plot(torch.arange(len(smooth)).add(window - 1).numpy(), smooth.numpy(), lw=1.5, label=f"running mean ({window})")
    axes.set(xlabel="step", ylabel="ε-prediction MSE", yscale="log", title=title)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


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
    weights, metadata = checkpoints.save(
        result.model, stem, name=name, data=name, final_loss=final_loss, **config._asdict()
    )
    curve = save_loss_curve(result.losses, stem.with_name(stem.name + "-loss.png"), f"{name} ({param})")
    return TrainedFiles(weights, metadata, curve, final_loss)


#: the shipped zoo: energy models of every named 2D dataset, score models of six
ZOO_ENERGY = ("ring", "ring_left", "ring_right", "bar", "bar_h", "left_bar", "right_bar", "box", "box_small", "gauss")
ZOO_SCORE = ("ring", "bar", "left_bar", "right_bar", "box", "box_small")
ZOO = tuple((name, "energy") for name in ZOO_ENERGY) + tuple((name, "score") for name in ZOO_SCORE)
#: zoo entries that need more than the default steps: the ring's score model (narrow modes) is
#: 2.7x the MMD floor after 2000 steps and 1.1x after 4000 (benchmarks/bench_models.py); the
#: ring energies' level-0 mode masses are within TV 0.07 of exact after 2000 steps, 0.03 after 4000
ZOO_STEPS = {("ring", "score"): 4000, **{(name, "energy"): 4000 for name in ("ring", "ring_left", "ring_right")}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``rrr train`` / ``python -m rrrdsl.train``."""
    defaults = TrainConfig()
    parser.add_argument("name", nargs="?", help="a named 2D dataset (ring, bar, box, ...)")
    parser.add_argument("--param", choices=PARAMS, default="energy", help="parameterisation (default: energy)")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"optimisation steps (default {defaults.steps}; for --zoo, per entry)"
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"minibatch size (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"Adam learning rate (default {defaults.lr})")
    parser.add_argument(
        "--ratio-weight", type=float, default=defaults.ratio_weight,
        help=f"weight of the adjacent-level density-ratio loss of energy models (default {defaults.ratio_weight}; 0: off)",
    )
    parser.add_argument("--width", type=int, default=128, help="hidden width (default 128)")
    parser.add_argument("--depth", type=int, default=4, help="residual blocks (default 4)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"seed of weights and data (default {defaults.seed})")
    parser.add_argument("--out", default=None, help="output directory (default: rrr-models, or the shipped zoo for --zoo)")
    parser.add_argument("--zoo", action="store_true", help="retrain every shipped checkpoint (ignores NAME and --param)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to ``rrr``'s sub-parsers."""
    parser = subparsers.add_parser(
        "train",
        help="train a learned diffusion model on a named 2D dataset",
        description="Train an energy- or score-parameterised diffusion model (ε-prediction, Adam, EMA) "
        "on a named 2D dataset; writes NAME-PARAM.pt/.json checkpoints and a loss-curve PNG.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=train_command)
    return parser


def train_command(args: argparse.Namespace) -> int:
    """Run ``rrr train`` from parsed arguments; return the exit status."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(args.steps or TrainConfig().steps, args.batch_size, args.lr, TrainConfig().ema_decay, args.seed,
                         args.ratio_weight)
    if args.zoo:
        jobs, out = ZOO, Path(args.out) if args.out else checkpoints.SHIPPED_DIR
    elif args.name:
        from .lang.ir import oracle
        from .models.registry import resolve

        resolve(oracle(args.name))  # unknown names fail here, with suggestions
        jobs, out = ((args.name, args.param),), Path(args.out or "rrr-models")
    else:
        raise InvalidValueError("rrr train needs a dataset NAME or --zoo", hint="e.g. `rrr train ring --param energy`")
    for index, (name, param) in enumerate(jobs, 1):
        if args.zoo and args.steps is None:
            config = config._replace(steps=ZOO_STEPS.get((name, param), TrainConfig().steps))
        files = train_named(name, param, out, config, args.width, args.depth, progress=sys.stderr.isatty())
        print(
            f"[{index}/{len(jobs)}] {name} ({param}): final loss {files.final_loss:.4f} -> "
            f"{files.weights} ({files.weights.stat().st_size / 1024:.0f} KiB), {files.loss_curve}",
            flush=True,
        )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m rrrdsl.train``: the same arguments as ``rrr train``."""
    parser = argparse.ArgumentParser(prog="python -m rrrdsl.train", description=add_train_parser.__doc__)
    add_arguments(parser)
    return train_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
