"""Training the objects models: ``rrr train objects`` (and ``make objects``).

Two class-conditional diffusers ``UNet2DModel`` networks of one architecture (:data:`UNET`),
conditioned on a cell (17 class embeddings, the last the null cell), trained on fresh scenes
every step (:func:`.data.examples`: the cell of one object, or the null cell with probability
0.15) with the ε-prediction loss of Ho et al. (2020) at uniform timesteps of diffusers' linear
DDPM schedule (1000 steps, ``β`` from 1e-4 to 0.02):

* ``energy``: ``E_θ(x, t, c) = ½ ‖f_θ(x, t, c)‖²`` and ``ε̂ = ∇_x E_θ = J_fᵀ f_θ`` (the energy
  parameterisation of Salimans & Ho, 2021, in the norm form of Du et al., 2023, section 3.3;
  :data:`rrrdsl.zoo.diffusers.parameterisation.ENERGIES` ``"norm"``), so that
  ``log q_t(x | c) = -E_θ / σ_t`` up to a constant per level; the loss is differentiated
  through ``∇_x E_θ`` (a double backward: 0.27 CPU-seconds per step of 32 against 0.09 for
  the score model, measured under load), so it trains 4000 steps to the score model's 2000.
  Measured (placement under reverse diffusion over 1024 samples, :mod:`.quality`; ``--energy``
  chooses the form): after 2000 steps the norm form had a loss of 0.0232 and placed 78% of
  objects, the inner form ``⟨x, f⟩`` 0.0201 and 88%; after 4000 steps the norm form 0.0178
  and 98.1% (the score twin after 2000: 0.0207 and 98.3%);
* ``score``: ``ε̂ = f_θ(x, t, c)``, the usual ε-network (its twin, for the line-integral
  samplers).

Both use :class:`rrrdsl.zoo.training.Trainer`'s loop (Adam, cosine learning rate, EMA
weights; no level-ratio loss) and are saved as diffusers pipeline folders (``unet/`` in
safetensors, ``scheduler/``, ``model_index.json``) with ``rrrdsl.json`` (the energy form and
the condition keyword ``cell``), ``training.json`` (settings, time, final loss) and
``loss.png``, which :mod:`.loading` registers through the diffusers adapter.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ...errors import InvalidValueError
from ...schedules import Schedule
from ..diffusers.loading import SETTINGS, require
from ..diffusers.modules import linear_alphas_cumprod
from ..diffusers.parameterisation import ENERGIES
from ..diffusers.schedule import native_schedule
from ..training import TrainConfig, Trainer, noised, save_loss_curve
from .data import CELLS, NULL_CELL, SIZE, examples
from .loading import FOLDERS, LABEL_KEYWORD, SHIPPED_DIR

DESCRIPTION = "the energy-parameterised objects UNet and its score twin (no NAME)"
#: the UNet of both models (diffusers ``UNet2DModel`` keyword arguments); no attention, whose
#: CPU kernel has no double backward
UNET: dict[str, Any] = {
    "sample_size": SIZE, "in_channels": 1, "out_channels": 1, "layers_per_block": 1,
    "block_out_channels": (16, 32, 32), "down_block_types": ("DownBlock2D",) * 3, "up_block_types": ("UpBlock2D",) * 3,
    "norm_num_groups": 4, "num_class_embeds": CELLS + 1, "add_attention": False,
}
#: the energy form of the energy model
ENERGY = "norm"
#: optimisation steps of each model in ``rrr train objects`` (measured: see the README)
DEFAULT_STEPS = {"energy": 4000, "score": 2000}
#: optimisation settings shared by both models
CONFIG = TrainConfig(batch_size=32, lr=1.5e-3, ema_decay=0.998, seed=0, ratio_weight=0.0)
PARAMETERISATIONS = ("energy", "score")

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Denoiser:
    """A cell-conditional UNet as a :class:`rrrdsl.zoo.training.Trainable` on ``[N, 256]`` rows."""

    net: nn.Module
    schedule: Schedule
    param: str
    energy: str = ENERGY
    dim: int = SIZE * SIZE

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor, cells: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """``ε̂`` ``[B, 256]`` at rows ``x`` ``[B, 256]``, timesteps ``t`` ``[B]`` and cells ``[B]``:
        the network's output (score) or ``∇_x E_θ`` (energy)."""
        if self.param == "score":
            return self._output(x, t, cells)
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            energy = ENERGIES[self.energy](x, self._output(x, t, cells))
            (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        return grad

    def _output(self, x: torch.Tensor, t: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        images = x.reshape(-1, 1, SIZE, SIZE)
        return self.net(images, t.to(torch.float32), class_labels=cells).sample.reshape(x.shape)


class CellTrainer(Trainer):
    """The shared loop on fresh scenes with their cells (:func:`.data.examples`)."""

    def draw(self, n: int, generator: torch.Generator) -> Batch:  # type: ignore[override]
        """``n`` fresh training examples ``([n, 256], [n])``, seeded from ``generator``."""
        images, cells = examples(n, int(torch.randint(2**62, (1,), generator=generator)))
        return images.reshape(n, -1), cells

    def loss(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:  # type: ignore[override]
        x0, cells = batch
        x_t, t, eps = noised(x0, self.model.schedule, generator)
        return (self.model.predict_eps(x_t, t, cells, create_graph=True) - eps).square().mean()


def schedule() -> Schedule:
    """The training schedule: diffusers' linear DDPM schedule, level ``k`` at timestep ``k``."""
    return native_schedule(linear_alphas_cumprod()).schedule


def build(param: str, seed: int = 0, energy: str = ENERGY) -> Denoiser:
    """A freshly initialised model ``param`` (``"energy"`` with the form ``energy``, or
    ``"score"``); its weights depend only on ``seed`` (the global random state is untouched)."""
    diffusers = require("diffusers")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = diffusers.UNet2DModel(**UNET)
    return Denoiser(net, schedule(), param, energy)


def save(model: Denoiser, folder: Path, **info: Any) -> Path:
    """Write ``model`` as a diffusers pipeline folder with ``rrrdsl.json`` and ``training.json``."""
    diffusers = require("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon")
    diffusers.DDPMPipeline(unet=model.net, scheduler=scheduler).save_pretrained(folder, safe_serialization=True)
    settings = {"label_keyword": LABEL_KEYWORD, "null_label": NULL_CELL}
    if model.param == "energy":
        settings["energy"] = model.energy
    (folder / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    (folder / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def train_one(param: str, steps: int, out: Path, energy: str = ENERGY, progress: bool = False) -> dict[str, Any]:
    """Train the model ``param`` (energy form ``energy``) for ``steps`` steps into
    ``out / FOLDERS[param]``; return its record."""
    config = CONFIG._replace(steps=steps)
    start = time.perf_counter()
    result = CellTrainer(build(param, config.seed, energy), None, config, progress).fit()  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    tail = result.losses[-max(1, steps // 20):]
    info = {
        "parameterisation": param, **({"energy": energy} if param == "energy" else {}), "steps": steps, "batch_size": config.batch_size, "lr": config.lr,
        "ema_decay": config.ema_decay, "seed": config.seed, "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1), "final_loss": round(sum(tail) / len(tail), 5), "unet": UNET, "losses_every_10": result.losses[::10],
    }
    folder = save(result.model, out / FOLDERS[param], **info)  # type: ignore[arg-type]
    save_loss_curve(result.losses, folder / "loss.png", title=f"objects {param}: ε-prediction loss")
    return {key: info[key] for key in ("parameterisation", "steps", "seconds", "final_loss")}


def add_arguments(group: argparse._ArgumentGroup) -> list[argparse.Action]:
    """``--only energy|score``: train one of the two models; ``--energy FORM``: the energy form."""
    return [
        group.add_argument("--only", choices=PARAMETERISATIONS, default=None, help="train only the energy or only the score model"),
        group.add_argument("--energy", choices=tuple(ENERGIES), default=ENERGY, help=f"the energy model's form E(x, f) (default {ENERGY})"),
    ]


def train(args: argparse.Namespace, out: Path) -> int:
    """``rrr train objects [--only P] [--steps N]``: train the models into ``out`` and print their records."""
    if args.name is not None:
        raise InvalidValueError(f"rrr train objects takes no NAME, got {args.name!r}", hint="e.g. `rrr train objects --steps 4000`")
    for param in (args.only,) if args.only else PARAMETERISATIONS:
        steps: Optional[int] = args.steps
        print(json.dumps(train_one(param, DEFAULT_STEPS[param] if steps is None else steps, out, args.energy)), flush=True)
    return 0
