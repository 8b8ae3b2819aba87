"""CPU cost of one step through the diffusers adapter against the UNet called directly.

One step of a three-leaf composition ``model("m", label=3) * model("m", label=5) ** 2 /
model("m")`` is ``target.score(x, t)``: one batched UNet forward over 3·N rows, the conversion
to scores and their weighted sum. The direct call is the same forward on inputs assembled
beforehand (``unet(x, timesteps, class_labels=labels).sample`` under ``no_grad``). Both run on
one thread, interleaved, ``REPEATS`` times each; the table gives medians.

    .venv/bin/python benchmarks/diffusers_adapter.py   # writes benchmarks/results/diffusers-adapter.md
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import diffusers
import torch

import rrrdsl
from rrrdsl.lang.ir import model
from rrrdsl.models import registry

REPEATS = 15
#: (name, image size, channels, block widths, chains N)
CASES = [("8x8x1, blocks (32, 64)", 8, 1, (32, 64), 64), ("32x32x3, blocks (64, 128)", 32, 3, (64, 128), 16)]
RESULT = Path(__file__).resolve().parent / "results" / "diffusers-adapter.md"


def case(size: int, channels: int, widths: tuple[int, int], n: int, folder: Path) -> tuple[float, float]:
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1, block_out_channels=widths,
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=8, num_class_embeds=11,
    )
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
    rrrdsl.register_diffusers("bench", folder, levels=50)
    target = rrrdsl.compile(model("bench", label=3) * model("bench", label=5) ** 2 / model("bench"))
    backbone = registry.resolve(model("bench")).backbone
    net, dim, t = backbone.denoiser, backbone.dim, 25
    x = torch.randn(n, dim)
    images = x.reshape(n, channels, size, size).repeat(3, 1, 1, 1)
    timesteps = backbone.timesteps[[t]].float().expand(3 * n)
    labels = torch.tensor([3, 5, 10]).repeat_interleave(n)

    def direct() -> torch.Tensor:
        with torch.no_grad():
            return net(images, timesteps, class_labels=labels).sample

    times: dict[str, list[float]] = {"adapter": [], "direct": []}
    for _ in range(2):  # warm-up
        target.score(x, t), direct()
    for _ in range(REPEATS):
        for name, call in (("adapter", lambda: target.score(x, t)), ("direct", direct)):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["adapter"]), statistics.median(times["direct"])


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, size, channels, widths, n) in enumerate(CASES):
            adapter, direct = case(size, channels, widths, n, Path(tmp) / str(k))
            rows.append(f"| {name} | {3 * n} | {direct * 1e3:.1f} | {adapter * 1e3:.1f} | {adapter / direct:.3f} |")
    text = "\n".join([
        "# The diffusers adapter's cost per step",
        "",
        "One step of `model(\"m\", label=3) * model(\"m\", label=5) ** 2 / model(\"m\")` (`target.score`: one batched",
        "UNet2DModel forward over 3·N rows, scores, weighted sum) against the same UNet forward on inputs assembled",
        f"beforehand. CPU, one thread, medians of {REPEATS} interleaved repeats; torch {torch.__version__}, diffusers",
        f"{diffusers.__version__}, {platform.processor() or platform.machine()}. Command: `.venv/bin/python benchmarks/diffusers_adapter.py`.",
        "",
        "| UNet (random weights) | rows per forward | direct (ms) | adapter (ms) | ratio |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
    RESULT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
