"""``rrr bench adapter [--quick]``: the CPU cost of one step through the diffusers adapter
against the same UNet called directly, and the samples of a trained model through the adapter
against diffusers' own ``DDPMPipeline`` on the same schedule.

One step of ``model("m", label=3) * model("m", label=5) ** 2 / model("m")`` is
``target.score(x, t)``: one batched ``UNet2DModel`` forward over 3·N rows (the backbone
batching of :mod:`rrrdsl.compiler.plan`), the conversion ε̂ → score and the weighted sum
(:mod:`rrrdsl.zoo.diffusers.adapter`). The direct call is the same forward on inputs assembled
beforehand (``unet(x, timesteps, class_labels=labels).sample`` under ``no_grad``). Both run on
one thread, interleaved, and the report gives medians; the ratio must stay within
:data:`MAX_RATIO` (exit status 1 otherwise, full runs only). Needs the ``diffusers`` extra.

**Agreement** (:func:`agreement`): a ``UNet2DModel`` trained on the 8x8 digits
(:mod:`rrrdsl.zoo.digits.data`, the train split) with the zoo's :class:`~rrrdsl.zoo.training.Trainer`
on a cosine schedule of :data:`TIMESTEPS` steps is saved as a ``DDPMPipeline`` folder. Samples
of ``DDPMPipeline(num_inference_steps=TIMESTEPS)`` (no clipping) with two seeds, and of
``rrrdsl.sample(model("ddpm"), "reverse")`` on the folder loaded by ``register_diffusers`` (all
its levels: the same DDPM steps) with two seeds, are compared by MMD (RBF, bandwidth the median
distance between test digits, pixels in ``[0, 1]``). The band is :data:`BAND` times the MMD
between the pipeline's own two seeds; a broken variant (the network called :data:`SHIFT`
timesteps late) must fall outside it.

Writes ``adapter.md`` (prose in ``templates/adapter.md``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from ..compiler import compile as compile_expr
from ..errors import RrrdslError
from ..lang.ir import model
from ..models import registry
from ..zoo.diffusers.loading import hushed, register_diffusers, require
from .common import markdown_table, provenance, render, write_report

#: adapter / direct time per step, at most
MAX_RATIO = 1.1
#: training timesteps of the compared model (cosine schedule), all of them sampled
TIMESTEPS = 100
#: adapter-vs-pipeline MMD at most BAND times the pipeline's two-seed MMD
BAND = 1.3
#: the broken variant's timestep offset
SHIFT = 5


class Case(NamedTuple):
    """One UNet2DModel (random weights) and the chains N of the timed step."""

    name: str
    size: int
    channels: int
    widths: tuple[int, int]
    n: int


FULL = (Case("8x8x1, blocks (32, 64)", 8, 1, (32, 64), 64), Case("32x32x3, blocks (64, 128)", 32, 3, (64, 128), 16))
QUICK = (Case("8x8x1, blocks (32, 64)", 8, 1, (32, 64), 8),)


class Cost(NamedTuple):
    """Median milliseconds per step, direct and through the adapter."""

    unet: str
    rows: int
    direct_ms: float
    adapter_ms: float
    ratio: float


def _save_unet(case: Case, folder: Path) -> None:
    """A class-conditional ``UNet2DModel`` (11 slots) with a DDPM scheduler, saved as a pipeline."""
    diffusers = require("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=case.size, in_channels=case.channels, out_channels=case.channels, layers_per_block=1,
        block_out_channels=case.widths, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
        norm_num_groups=8, num_class_embeds=11,
    )
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)


def cost(case: Case, folder: Path, repeats: int) -> Cost:
    """:class:`Cost` of one case: ``repeats`` interleaved timings of each call after two warm-ups."""
    _save_unet(case, folder)
    register_diffusers("bench_adapter", folder, levels=50)
    target = compile_expr(model("bench_adapter", label=3) * model("bench_adapter", label=5) ** 2 / model("bench_adapter"))
    backbone = registry.resolve(model("bench_adapter")).backbone
    net, t = backbone.denoiser, 25
    x = torch.randn(case.n, backbone.dim, generator=torch.Generator().manual_seed(0))
    images = x.reshape(case.n, case.channels, case.size, case.size).repeat(3, 1, 1, 1)
    timesteps = backbone.timesteps[[t]].float().expand(3 * case.n)
    labels = torch.tensor([3, 5, 10]).repeat_interleave(case.n)

    def direct() -> torch.Tensor:
        with torch.no_grad():
            return net(images, timesteps, class_labels=labels).sample

    calls: dict[str, Callable[[], torch.Tensor]] = {"adapter": lambda: target.score(x, t), "direct": direct}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(2):
        for call in calls.values():
            call()
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    adapter, direct_s = statistics.median(times["adapter"]), statistics.median(times["direct"])
    print(f"  {case.name}: direct {1e3 * direct_s:.1f} ms, adapter {1e3 * adapter:.1f} ms, ratio {adapter / direct_s:.3f}", flush=True)
    return Cost(case.name, 3 * case.n, 1e3 * direct_s, 1e3 * adapter, adapter / direct_s)


class Distance(NamedTuple):
    """The MMD between two sample sets."""

    samples: str
    mmd: float


class Setting(NamedTuple):
    """Training steps and samples per set of the agreement check."""

    train_steps: int
    n: int


class Shifted(torch.nn.Module):
    """A denoiser called ``shift`` timesteps late: the broken variant."""

    def __init__(self, net: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.net, self.shift = net, shift

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t + self.shift).sample


class _Digits:
    """The UNet as a :class:`~rrrdsl.zoo.training.Trainable` ε-predictor of the digits."""

    def __init__(self, net: torch.nn.Module, alphas_cumprod: torch.Tensor) -> None:
        from ..zoo.diffusers.schedule import native_schedule

        self.net, self.dim, self.param = net, 64, "score"
        self.schedule = native_schedule(alphas_cumprod).schedule  # level k is timestep k

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, 8, 8), t.float()).sample.reshape(-1, 64)


def agreement(setting: Setting, folder: Path) -> tuple[list[Distance], float]:
    """The MMDs between the compared sample sets and the band (see the module doc)."""
    from ..metrics import mmd
    from ..samplers.api import sample
    from ..zoo.digits.data import load
    from ..zoo.training import TrainConfig, Trainer

    diffusers = require("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=8,
    )
    config = TrainConfig(steps=setting.train_steps, batch_size=128, lr=2e-3, ema_decay=0.99)
    trained = Trainer(_Digits(unet, scheduler.alphas_cumprod), load("train")[0], config, progress=False).fit().model.net
    net = getattr(trained, "module", trained)
    diffusers.DDPMPipeline(unet=net, scheduler=scheduler).save_pretrained(folder)
    with hushed():
        pipeline = diffusers.DDPMPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    register_diffusers("bench_ddpm", folder, quiet=True)
    registry.register_model("bench_ddpm_late", Shifted(net.eval(), SHIFT), shape=(1, 8, 8), alphas_cumprod=scheduler.alphas_cumprod)

    def through_pipeline(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        images = pipeline(batch_size=setting.n, generator=generator, num_inference_steps=TIMESTEPS, output_type="np").images
        return torch.from_numpy(images).reshape(setting.n, 64)

    def through_adapter(name: str, seed: int) -> torch.Tensor:
        return (sample(model(name), "reverse", n=setting.n, seed=seed, progress=False).x / 2 + 0.5).clamp(0, 1)

    sets = {"pipeline seed 1": through_pipeline(1), "pipeline seed 2": through_pipeline(2)}
    sets.update({"adapter seed 3": through_adapter("bench_ddpm", 3), "adapter seed 4": through_adapter("bench_ddpm", 4)})
    sets[f"adapter, {SHIFT} timesteps late"] = through_adapter("bench_ddpm_late", 3)
    test = load("test")[0] / 2 + 0.5
    bandwidth = float(torch.cdist(test, test).median())
    pairs = [("pipeline seed 1", "pipeline seed 2")] + [(a, b) for a in list(sets)[2:] for b in list(sets)[:2]]
    rows = [Distance(f"{a} vs {b}", mmd(sets[a], sets[b], bandwidth)) for a, b in pairs]
    rows += [Distance(f"{name} vs the test digits", mmd(sets[name], test, bandwidth)) for name in ("pipeline seed 1", "adapter seed 3")]
    return rows, BAND * rows[0].mmd


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``adapter.md`` under ``args.out``; 2 without the ``diffusers`` extra, 1 when the
    ratio exceeds :data:`MAX_RATIO` (full runs only)."""
    try:
        diffusers = require("diffusers")
    except RrrdslError as error:
        print(f"rrr bench adapter: {error.message}", file=sys.stderr)
        return 2
    cases, repeats = (QUICK, 3) if args.quick else (FULL, 15)
    setting = Setting(20, 16) if args.quick else Setting(800, 300)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [cost(case, Path(tmp) / str(k), repeats) for k, case in enumerate(cases)]
        mmds, band = agreement(setting, Path(tmp) / "ddpm")
    agree = all(row.mmd <= band for row in mmds if row.samples.startswith("adapter seed") and "pipeline" in row.samples)
    broken = all(row.mmd > band for row in mmds if "late vs pipeline" in row.samples)
    ok = all(row.ratio <= MAX_RATIO for row in rows) and agree and broken
    text = render(
        "adapter",
        provenance=provenance(command) + f"\n- diffusers {diffusers.__version__}",
        repeats=repeats,
        costs=markdown_table(rows, ("UNet (random weights)", "rows per forward", "direct (ms)", "adapter (ms)", "ratio")),
        max_ratio=MAX_RATIO,
        verdict=("met" if all(row.ratio <= MAX_RATIO for row in rows) else "NOT met") + ("" if not args.quick else " (quick run: not enforced)"),
        timesteps=TIMESTEPS,
        train_steps=setting.train_steps,
        n=setting.n,
        mmds=markdown_table(mmds, ("samples", "MMD")),
        band=f"{band:.4f}",
        band_factor=BAND,
        shift=SHIFT,
        agreement=("met" if agree else "NOT met") + ("" if not args.quick else " (quick run: not enforced)"),
        broken=("outside the band, as it must be" if broken else "INSIDE the band: the check has no power here") + ("" if not args.quick else " (quick run)"),
    )
    print(f"wrote {write_report(args.out / 'adapter.md', text)}")
    return 1 if not args.quick and not ok else 0
