"""``rrr bench models [--quick] [--seeds S] [--no-write]``: sample quality of the shipped learned
models, their mode masses, compositions of them, and the networks' speed.

1. **Quality.** For every shipped checkpoint, ``N = 2000`` reverse-diffusion samples (DDPM
   ancestral steps with the model's own score, from ``N(0, I)`` at the last level down to level
   0) against ``N`` exact samples of the dataset at level 0: the RBF MMD (bandwidth 0.05,
   :func:`rrrdsl.metrics.mmd`) divided by the exact-vs-exact floor (the same MMD between two
   independent exact samples, averaged over seeds). Pass: every model within 3x.
2. **Mode masses.** The learned densities themselves, on a 256x256 grid over [-1.3, 1.3]^2 at
   level 0: the mass in each of the eight angular sectors around the ring's modes for
   ``model("ring")``, ``model("ring") ** 2`` and ``model("ring") * model("bar")`` against the
   exact oracles, and the total variation between learned and exact grids. This is what the
   density-ratio loss of the training is for (without it one sector held 0.79 of
   ``model("ring")``); no pass/fail, the sampler checks below depend on it.
3. **Compositions.** ``ring * bar`` sampled with the same sampler (SMC, the default for energy
   targets, and HMC) on the learned energy models and on the exact oracles: MMD of each against
   exact samples of ``oracle("ring") * oracle("bar")`` (pass: learned within 2x of exact under
   SMC or under HMC), and exact samples of the learned density drawn on a grid: the MMD no
   sampler can beat on these models (their model error). The score-parameterised product
   sampled with MALA using the line-integral Metropolis test against ULA with the same steps
   per level (equal NFE: the trapezoid test reuses the gradients at both ends); pass: MALA's
   MMD is lower.
4. **Speed.** ``log_prob_and_grad`` of the default energy network (4 blocks, width 128) at
   ``N = 4096``: matmul FLOPs of the call (twice the forward count of
   :class:`torch.utils.flop_counter.FlopCounterMode`: the backward pass to the input repeats
   every matmul once) per second, beside a plain ``[N, 128] @ [128, 128]`` matmul timed in
   the same run (runs of as many matmuls as the network's FLOPs, interleaved with the network
   calls; medians; one thread). Pass: at least 50% of the matmul rate.

Writes ``models.md`` (prose in ``templates/models.md``); exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import metrics, schedules, truth
from ..lang.ir import Expr, model as learned, oracle
from ..lang.parse import parse_expr
from ..zoo.toy2d.loading import register_shipped
from ..zoo.toy2d.models import make_model
from ..zoo.toy2d.train import ZOO
from .common import BANDWIDTH, provenance, render, write_report

N_SAMPLES = 2000
QUALITY_LIMIT = 3.0
N_SPEED = 4096
SPEED_LIMIT = 0.5
MASS_TARGETS = ("ring", "ring ** 2", "ring * bar")
#: the grid of :func:`mode_masses` and :func:`learned_density_samples`
GRID_BOUNDS = [(-1.3, 1.3), (-1.3, 1.3)]


class Quality(NamedTuple):
    """Reverse-diffusion samples of one shipped checkpoint against its dataset."""

    name: str
    param: str
    mmd: float
    floor: float
    ratio: float


class Masses(NamedTuple):
    """Sector masses of a learned density and of its exact counterpart at level 0."""

    target: str
    exact: list[float]
    learned: list[float]
    total_variation: float


class Composition(NamedTuple):
    """One sampler on one ``ring * bar`` target, over several seeds."""

    target: str
    sampler: str
    mean_mmd: float
    nfe: int
    upper_mass: float
    per_seed: list[float]


def quality(n: int, floor_seeds: int) -> list[Quality]:
    """:class:`Quality` of every shipped checkpoint."""
    from ..samplers.api import sample

    register_shipped()
    rows, floors = [], {}
    for name, param in ZOO:
        if name not in floors:
            pairs = [truth.exact_samples(oracle(name), 2 * n, 100 + s, level=0) for s in range(floor_seeds)]
            floors[name] = statistics.mean(metrics.mmd(p[:n], p[n:], BANDWIDTH) for p in pairs)
        x = sample(learned(name, param=param), sampler="reverse", n=n, seed=1, progress=False).x
        value = metrics.mmd(x, truth.exact_samples(oracle(name), n, 2, level=0), BANDWIDTH)
        rows.append(Quality(name, param, value, floors[name], value / floors[name]))
        print(f"  {name:>10} {param:>6}: MMD {value:.4f}  floor {floors[name]:.4f}  ratio {value / floors[name]:.2f}", flush=True)
    return rows


def speed(repeats: int) -> tuple[float, float, float]:
    """``(network FLOP/s, matmul FLOP/s, ratio)`` at N = 4096, interleaved medians."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = make_model("energy", 2, schedules.default())
        x, a, b = torch.randn(N_SPEED, 2), torch.randn(N_SPEED, 128), torch.randn(128, 128)
    # matmul FLOPs of the forward pass; the backward pass to the input costs the same again
    # (one matmul per layer of the same size; weight gradients are not taken)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.log_prob(x, 50)
    network_flops = 2 * counter.get_total_flops()
    matmul_flops = 2 * N_SPEED * 128 * 128

    def seconds(call) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    # the matmul is timed in runs of the same total FLOPs as one network call, interleaved
    # with the network calls, so that both see the same machine load
    run = max(1, round(network_flops / matmul_flops))

    def matmuls() -> None:
        for _ in range(run):
            a @ b

    network, matmul = [], []
    for _ in range(3):  # warm-up
        net.log_prob_and_grad(x, 50), matmuls()
    for _ in range(repeats):
        network.append(seconds(lambda: net.log_prob_and_grad(x, 50)))
        matmul.append(seconds(matmuls))
    network_rate = network_flops / statistics.median(network)
    matmul_rate = run * matmul_flops / statistics.median(matmul)
    return network_rate, matmul_rate, network_rate / matmul_rate


def compositions(n: int, seeds: int) -> list[Composition]:
    """:class:`Composition` rows for the composition checks over sampling seeds ``1..seeds``
    (the product has two equal modes, at (0, 0.5) and (0, -0.5))."""
    from ..samplers.api import sample

    exact = truth.exact_samples(oracle("ring") * oracle("bar"), n, 2, level=0)
    energy, exact_product = learned("ring") * learned("bar"), oracle("ring") * oracle("bar")
    score = learned("ring", param="score") * learned("bar", param="score")
    runs = [
        ("learned energy: model(ring) * model(bar)", energy, "smc", {}),
        ("exact: oracle(ring) * oracle(bar)", exact_product, "smc", {}),
        ("learned energy: model(ring) * model(bar)", energy, "hmc", {}),
        ("exact: oracle(ring) * oracle(bar)", exact_product, "hmc", {}),
        ("learned score product", score, "ula", {}),
        ("learned score product", score, "mala", {"mh": "line_integral"}),
    ]
    rows = []

    def add(what: str, label: str, draws: list[torch.Tensor], nfe: int) -> None:
        values = [metrics.mmd(x, exact, BANDWIDTH) for x in draws]
        upper = statistics.mean(float((x[:, 1] > 0).double().mean()) for x in draws)
        rows.append(Composition(what, label, statistics.mean(values), nfe, upper, values))
        print(f"  {what} [{label}]: MMD {rows[-1].mean_mmd:.4f} (seeds: {' '.join(f'{v:.4f}' for v in values)}), "
              f"NFE {nfe}, mass with y > 0: {upper:.3f}", flush=True)

    # the best any sampler can do on these models: their model error
    add("learned energy: model(ring) * model(bar)", "exact sampler of the learned density (grid)",
        [learned_density_samples(n, seed) for seed in range(1, seeds + 1)], 0)
    for what, expr, sampler, options in runs:
        results = [sample(expr, sampler=sampler, n=n, seed=seed, progress=False, **options) for seed in range(1, seeds + 1)]
        add(what, sampler + "".join(f" {k}={v}" for k, v in options.items()), [r.x for r in results],
            int(results[0].diagnostics["nfe"]))
    return rows


def learned_density_samples(n: int, seed: int) -> torch.Tensor:
    """``n`` exact samples of the *learned* ``model("ring") * model("bar")`` density at level 0,
    drawn on a 512x512 grid by :func:`rrrdsl.truth.exact_samples` (as the exact one is): the
    best any sampler can do on these models, so the part of a sampler's MMD that is model error."""
    return truth.exact_samples(learned("ring") * learned("bar"), n, seed, bounds=GRID_BOUNDS)


def _leaves(source: str, leaf: str) -> Expr:
    return parse_expr(source.replace("ring", f'{leaf}("ring")').replace("bar", f'{leaf}("bar")'))


def mode_masses(level: int = 0, resolution: int = 256) -> list[Masses]:
    """:class:`Masses` of each of :data:`MASS_TARGETS` on a grid at ``level``."""
    rows = []
    for source in MASS_TARGETS:
        exact, model_grid = (truth.grid(_leaves(source, leaf), level, bounds=GRID_BOUNDS, resolution=resolution)
                             for leaf in ("oracle", "model"))
        points = exact.points()
        exact_mass, learned_mass = ((g.density * g.cell_area).reshape(-1) for g in (exact, model_grid))
        angle = torch.atan2(points[:, 1], points[:, 0]) % (2 * math.pi)
        sector = ((angle + math.pi / 8) // (math.pi / 4)).long() % 8
        by_sector = [torch.zeros(8, dtype=torch.float64).index_add_(0, sector, m).tolist() for m in (exact_mass, learned_mass)]
        tv = 0.5 * float((exact_mass - learned_mass).abs().sum())
        rows.append(Masses(source, *by_sector, tv))
        print(f"  {source}: TV {tv:.3f}; learned sector masses {[round(v, 3) for v in by_sector[1]]}", flush=True)
    return rows


def main(args: argparse.Namespace, command: str) -> int:
    """Run the four checks, write ``models.md`` (unless ``--no-write``); 0 when all pass."""
    print("speed: log_prob_and_grad of the default energy network at N = 4096", flush=True)
    network_rate, matmul_rate, ratio = speed(10 if args.quick else 30)
    print(f"  network {network_rate / 1e9:.1f} GFLOP/s, matmul {matmul_rate / 1e9:.1f} GFLOP/s, ratio {ratio:.2f}", flush=True)
    print("quality: shipped models, reverse diffusion", flush=True)
    rows = quality(N_SAMPLES, 2 if args.quick else 5)
    print("mode masses at level 0: learned vs exact on a grid", flush=True)
    masses = mode_masses()
    print("compositions: ring * bar, learned vs exact (same sampler), score product MH vs ULA (equal NFE)", flush=True)
    products = compositions(N_SAMPLES, 1 if args.quick else args.seeds)
    # learned within 2x of exact under SMC or under HMC (mean MMD over seeds); line-integral MALA below ULA
    mean = [row.mean_mmd for row in products]
    products_ok = (mean[1] <= 2 * mean[2] or mean[3] <= 2 * mean[4]) and mean[6] < mean[5]
    quality_ok = all(row.ratio <= QUALITY_LIMIT for row in rows) and len(rows) == len(ZOO)
    speed_ok = ratio >= SPEED_LIMIT
    text = render(
        "models",
        provenance=provenance(command),
        bandwidth=BANDWIDTH,
        n=N_SAMPLES,
        n_speed=N_SPEED,
        seeds=len(products[0].per_seed),
        quality=[f"| {r.name} | {r.param} | {r.mmd:.4f} | {r.floor:.4f} | {r.ratio:.2f} | {'yes' if r.ratio <= QUALITY_LIMIT else 'NO'} |"
                 for r in rows],
        masses=[f"| `{r.target}` | {' '.join(f'{v:.3f}' for v in r.exact)} | {' '.join(f'{v:.3f}' for v in r.learned)} | "
                f"{r.total_variation:.3f} |" for r in masses],
        products=[f"| {r.target} | {r.sampler} | {r.mean_mmd:.4f} | {' '.join(f'{v:.4f}' for v in r.per_seed)} | {r.nfe} | {r.upper_mass:.3f} |"
                  for r in products],
        products_result="pass" if products_ok else "FAIL",
        network_rate=f"{network_rate / 1e9:.1f}",
        matmul_rate=f"{matmul_rate / 1e9:.1f}",
        ratio=f"{ratio:.2f} ({'pass' if speed_ok else 'FAIL'})",
    )
    if not args.no_write:
        print(f"wrote {write_report(args.out / 'models.md', text)}")
    ok = quality_ok and speed_ok and products_ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1
