"""Training the zoo's learned diffusion models: one :class:`Trainer` for every family.

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
under 10%). Measured with ``rrr bench models`` (the ``mode masses`` table). Adam (Kingma & Ba, 2015) with a cosine-decayed learning rate, an
exponential moving average of the weights (the EMA weights are the trained model), and fixed
seeds: the same arguments give the same weights on the same machine.

A family whose data or loss differ (labels, a classifier's cross-entropy) subclasses
:class:`Trainer` and overrides :meth:`Trainer.draw` and :meth:`Trainer.loss`
(:class:`rrrdsl.zoo.digits.train.LabelledTrainer`); the optimisation loop is this one.

Python::

    trainer = Trainer(make_model("energy", dim=2, schedule=schedules.default()), data)
    result = trainer.fit()          # result.model (EMA weights), result.losses

Command line: ``rrr train FAMILY ...`` (:mod:`rrrdsl.zoo.cli`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Protocol, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InvalidValueError
from ..schedules import Schedule

#: a data source: a tensor ``[M, D]`` of examples, or ``draw(n, generator) -> [n, D]``
Data = Union[torch.Tensor, Callable[[int, torch.Generator], torch.Tensor]]


class Trainable(Protocol):
    """What :class:`Trainer` needs of a model: its network, schedule, dimension and
    parameterisation (the default loss also uses ``predict_eps`` and, for energies, ``log_prob``)."""

    net: nn.Module
    schedule: Schedule
    dim: int
    param: str


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

    model: Trainable
    losses: list[float]


class Trainer:
    """ε-prediction training of a learned model on any data (Ho et al., 2020).

    Parameters
    ----------
    model
        The model to train (e.g. :func:`rrrdsl.zoo.toy2d.models.make_model`); its parameters are updated
        in place, and :meth:`fit` returns a copy holding the EMA weights.
    data
        A tensor ``[M, D]`` (minibatches drawn with replacement) or a callable
        ``draw(n, generator) -> [n, D]`` giving fresh samples each step.
    config
        Steps, batch size, learning rate, EMA decay and seed.
    progress
        Show a tqdm progress bar.
    """

    def __init__(self, model: Trainable, data: Data, config: TrainConfig = TrainConfig(), progress: bool = True) -> None:
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


