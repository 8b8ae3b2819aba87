"""The adapter: a diffusers denoiser (``UNet2DModel``, ``UNet2DConditionModel``, or any module
called as ``net(sample, timestep, **inputs)``) as a :class:`~rrrdsl.models.base.Backbone`.

The samplers see an image ``[N, C, H, W]`` as a point of ``R^D``, ``D = C·H·W`` (row-major),
and call the backbone with ``x`` ``[N, D]`` (or ``[K, N, D]`` crops), a level ``t`` (an int or a
per-chain ``[N]`` tensor) and the conditions of the leaves that share the network. Every call
is one batched forward of the network over all ``K·N`` rows (split into chunks of at most
``max_batch`` rows when given), at the model's own timestep ``τ_t`` of level ``t``
(:mod:`.schedule`):

* score-only (the default): ``∇ log q_t(x) = -ε̂(x, τ_t) / σ_t`` with ``ε̂`` from the network's
  prediction (:data:`.parameterisation.PREDICTIONS`), evaluated without autograd;
* energy-parameterised: ``log q_t(x) = -E_θ(x, τ_t) / σ_t`` (:data:`.parameterisation.ENERGIES`),
  and the score is its autograd gradient ``-∇E_θ / σ_t = -ε̂ / σ_t``.

The network runs in the dtype and on the device of its weights; results come back in the
dtype of ``x``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ...errors import CompileError, InvalidValueError, at_argument, suggest
from ...models.base import Backbone, ConditionalModel, Decoder
from ...schedules import Level, Schedule
from ..nets import flatten_conditions
from .conditions import Conditions, Unconditional
from .parameterisation import ENERGIES, PREDICTIONS
from .schedule import NativeSchedule, retime


class _Batch(NamedTuple):
    x: torch.Tensor  # [K*N, D]
    levels: torch.Tensor  # [K*N], long
    inputs: dict[str, torch.Tensor]  # each [K*N, ...]
    shape: tuple[int, int]  # (K, N)


class DiffusersBackbone(Backbone):
    """A denoising network ``f_θ(x, τ, condition)`` as a backbone of conditional models.

    Parameters
    ----------
    denoiser
        The network (its output, or the output's ``.sample``, has the shape of its input), or a
        function that loads it, called on the first evaluation (so that a graph compiles and
        ``rrr check`` runs without reading weights).
    native
        The level schedule and the network's timestep at every level (:func:`.schedule.native_schedule`).
    shape
        The image shape ``(C, H, W)``.
    prediction
        What the network predicts: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
    energy
        None (score-only), or the energy form (``"norm"``, ``"inner"``, ``"residual"``) of an
        energy-parameterised ε-network.
    conditions
        The network's conditions (:mod:`.conditions`); unconditional by default.
    max_batch
        The most rows per forward (None: all rows in one forward).
    decoder
        The decoder of a latent pipeline (:mod:`.latents`): the samples are its latents.
    """

    def __init__(
        self,
        denoiser: Union[nn.Module, Callable[[], nn.Module]],
        native: NativeSchedule,
        shape: Sequence[int],
        prediction: str = "epsilon",
        energy: Optional[str] = None,
        conditions: Optional[Conditions] = None,
        max_batch: Optional[int] = None,
        decoder: Optional[Decoder] = None,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise InvalidValueError(f"unknown prediction type {prediction!r}", hint=suggest(prediction, PREDICTIONS) or f"one of {', '.join(PREDICTIONS)}")
        if energy is not None and energy not in ENERGIES:
            raise InvalidValueError(f"unknown energy form {energy!r}", hint=suggest(energy, ENERGIES) or f"one of {', '.join(ENERGIES)}")
        if energy is not None and prediction != "epsilon":
            raise InvalidValueError(f"an energy-parameterised network predicts the noise as ∇E, so its prediction type must be 'epsilon', got {prediction!r}")
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise at_argument(InvalidValueError(f"max_batch must be a positive integer or None, got {max_batch!r}"), "max_batch")
        self._denoiser = denoiser if isinstance(denoiser, nn.Module) else None
        self._load = denoiser
        self.native = native
        self.schedule = native.schedule
        self.timesteps = native.timesteps
        self.shape = tuple(int(s) for s in shape)
        self.dim = math.prod(self.shape)
        self.prediction = prediction
        self.energy = energy
        self.has_energy = energy is not None
        self.conditions = conditions or Unconditional()
        self.max_batch = max_batch
        self.decoder = decoder
        #: forwards of the network so far (tests count batching with it)
        self.forwards = 0
        self._retimed: dict[Schedule, DiffusersBackbone] = {}

    @property
    def denoiser(self) -> nn.Module:
        """The network, loaded on first use."""
        if self._denoiser is None:
            self._denoiser = self._load()  # type: ignore[operator]
        return self._denoiser

    def on(self, schedule: Optional[Schedule]) -> "DiffusersBackbone":
        """This network on the levels of ``schedule`` (:func:`.schedule.retime`): itself for None
        or its own schedule, else one backbone per schedule sharing the network and conditions."""
        if schedule is None or schedule == self.schedule:
            return self
        if schedule not in self._retimed:
            native = retime(self.native, schedule)
            self._retimed[schedule] = DiffusersBackbone(
                lambda: self.denoiser, native, self.shape, self.prediction, self.energy, self.conditions, self.max_batch, self.decoder
            )
        return self._retimed[schedule]

    def _batch(self, x: torch.Tensor, t: Level, conditions: Sequence[Hashable]) -> _Batch:
        count = len(conditions)
        flat, levels = flatten_conditions(x, t, count, self.dim)
        n = flat.shape[0] // count
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            self.schedule.at(t, flat)  # checks the range of one level
        weight = next(self.denoiser.parameters())
        inputs = {key: value.repeat_interleave(n, dim=0) for key, value in self.conditions.inputs(conditions, weight.device, weight.dtype).items()}
        return _Batch(flat, levels.expand(flat.shape[0]), inputs, (count, n))

    def _network(self, x: torch.Tensor, levels: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """The network's output on rows ``x`` ``[B, D]``, ``[B, D]`` in the dtype of ``x``."""
        weight = next(self.denoiser.parameters())
        timesteps = self.timesteps.to(device=x.device)[levels].to(torch.float32)
        step = self.max_batch or x.shape[0]
        outputs = []
        for start in range(0, x.shape[0], step):
            rows = slice(start, start + step)
            sample = x[rows].reshape(-1, *self.shape).to(weight.dtype)
            output = self.denoiser(sample, timesteps[rows], **{key: value[rows] for key, value in inputs.items()})
            self.forwards += 1
            outputs.append(getattr(output, "sample", output).reshape(sample.shape[0], self.dim))
        return torch.cat(outputs).to(x.dtype)

    def _log_prob(self, batch: _Batch) -> torch.Tensor:
        f = self._network(batch.x, batch.levels, batch.inputs)
        sigma = self.schedule.at(batch.levels, batch.x)[1].reshape(-1)
        return -ENERGIES[self.energy](batch.x, f) / sigma  # type: ignore[index]

    def log_prob(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        if not self.has_energy:
            raise CompileError("this diffusers network is score-only (it has no energy)", hint="declare an energy-parameterised network in rrrdsl.json, or sample with the score")
        batch = self._batch(x, t, conditions)
        return self._log_prob(batch).reshape(batch.shape)

    def score(self, x: torch.Tensor, t: Level, conditions: Sequence[Any]) -> torch.Tensor:
        batch = self._batch(x, t, conditions)
        if self.has_energy:
            with torch.enable_grad():
                rows = batch.x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self._log_prob(batch._replace(x=rows)).sum(), rows)
            return grad.reshape(*batch.shape, self.dim)
        with torch.no_grad():
            output = self._network(batch.x, batch.levels, batch.inputs)
        alpha_bar, sigma = self.schedule.at(batch.levels, batch.x)
        eps = PREDICTIONS[self.prediction](output, batch.x, alpha_bar, sigma)
        return (-eps / sigma).reshape(*batch.shape, self.dim)


def leaf_factory(name: str, backbone: Callable[[], DiffusersBackbone]) -> Callable[..., ConditionalModel]:
    """The registry factory of ``model(name, ...)``: the leaf's keyword arguments checked as the
    conditions of ``backbone()`` (obtained at the first resolve), on the schedule compile asks
    for (the model's own when None; another one is met on ``ᾱ``, :meth:`DiffusersBackbone.on`)."""

    def factory(schedule: Optional[Schedule] = None, **arguments: Any) -> ConditionalModel:
        net = backbone().on(schedule)
        return ConditionalModel(net, net.conditions.condition(f'model("{name}")', **arguments))

    return factory
