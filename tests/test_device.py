"""On a GPU (skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them): reverse, MALA and SMC
draw on ``cuda`` the law they draw on the CPU, and ``rrr run --device cuda`` writes its sample.

The bands are those of the two-process tests (``tests/test_distributed.py``): MMD against a CPU
run with another seed, in units of the floor between independent exact samples of size N.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import rrrdsl
from distributed_worker import SAMPLERS
from rrrdsl import metrics
from rrrdsl.cli import main
from test_distributed import BAND, BANDWIDTH, N, RING_BAR

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def floor() -> float:
    return metrics.mmd_floor(RING_BAR, N, BANDWIDTH, seeds=range(3))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_gpu_samples_the_law_of_the_cpu(sampler, floor):
    gpu = rrrdsl.sample(RING_BAR, sampler, n=N, seed=0, device=DEVICE, progress=False, **SAMPLERS[sampler])
    cpu = rrrdsl.sample(RING_BAR, sampler, n=N, seed=1, progress=False, **SAMPLERS[sampler])
    assert gpu.x.device.type == DEVICE and gpu.x.shape == (N, 2) and bool(torch.isfinite(gpu.x).all())
    assert metrics.mmd(gpu.x.cpu(), cpu.x, BANDWIDTH) < BAND[sampler] * floor


def test_rrr_run_on_the_gpu_writes_its_sample(tmp_path: Path):
    script = tmp_path / "s.rrr"
    script.write_text('sample oracle("ring") * oracle("bar") using smc(steps=2) n=500 seed=0 -> "p.npz"\n')
    assert main(["run", str(script), "--out", str(tmp_path / "out"), "--quiet", "--device", DEVICE]) == 0
    x = np.load(tmp_path / "out" / "p.npz")["x"]
    assert x.shape == (500, 2) and np.isfinite(x).all()
