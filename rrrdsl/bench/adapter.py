"""``rrr bench adapter [--quick]``: the CPU cost of one step through the diffusers adapter
against the same UNet called directly.

One step of ``model("m", label=3) * model("m", label=5) ** 2 / model("m")`` is
``target.score(x, t)``: one batched ``UNet2DModel`` forward over 3·N rows (the backbone
batching of :mod:`rrrdsl.compiler.plan`), the conversion ε̂ → score and the weighted sum
(:mod:`rrrdsl.zoo.diffusers.adapter`). The direct call is the same forward on inputs assembled
beforehand (``unet(x, timesteps, class_labels=labels).sample`` under ``no_grad``). Both run on
one thread, interleaved, and the report gives medians; the ratio must stay within
:data:`MAX_RATIO` (exit status 1 otherwise, full runs only). Needs the ``diffusers`` extra.

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
from ..zoo.diffusers.loading import register_diffusers, require
from .common import markdown_table, provenance, render, write_report

#: adapter / direct time per step, at most
MAX_RATIO = 1.1


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


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``adapter.md`` under ``args.out``; 2 without the ``diffusers`` extra, 1 when the
    ratio exceeds :data:`MAX_RATIO` (full runs only)."""
    try:
        diffusers = require("diffusers")
    except RrrdslError as error:
        print(f"rrr bench adapter: {error.message}", file=sys.stderr)
        return 2
    cases, repeats = (QUICK, 3) if args.quick else (FULL, 15)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [cost(case, Path(tmp) / str(k), repeats) for k, case in enumerate(cases)]
    ok = all(row.ratio <= MAX_RATIO for row in rows)
    text = render(
        "adapter",
        provenance=provenance(command) + f"\n- diffusers {diffusers.__version__}",
        repeats=repeats,
        costs=markdown_table(rows, ("UNet (random weights)", "rows per forward", "direct (ms)", "adapter (ms)", "ratio")),
        max_ratio=MAX_RATIO,
        verdict=("met" if ok else "NOT met") + ("" if not args.quick else " (quick run: not enforced)"),
    )
    print(f"wrote {write_report(args.out / 'adapter.md', text)}")
    return 1 if not args.quick and not ok else 0
