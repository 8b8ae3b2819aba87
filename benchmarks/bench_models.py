"""Benchmark of the learned models (issue 5): sample quality of the shipped zoo and network speed.

1. **Quality.** For every shipped checkpoint, ``N = 2000`` reverse-diffusion samples (DDPM
   ancestral steps with the model's own score, from ``N(0, I)`` at the last level down to level
   0) against ``N`` exact samples of the dataset at level 0: the RBF MMD (bandwidth 0.05,
   :func:`rrrdsl.metrics.mmd`) divided by the exact-vs-exact floor (the same MMD between two
   independent exact samples, averaged over seeds). Pass: every model within 3x.
   Samples come from ``rrrdsl.sample(model(...), sampler="reverse")`` when the compiler is
   available, otherwise from a direct DDPM loop over :mod:`rrrdsl.samplers.diffusion`.
2. **Speed.** ``log_prob_and_grad`` of the default energy network (4 blocks, width 128) at
   ``N = 4096``: matmul FLOPs of the call (twice the forward count of
   :class:`torch.utils.flop_counter.FlopCounterMode`: the backward pass to the input repeats
   every matmul once) per second, beside a plain ``[N, 128] @ [128, 128]`` matmul timed in
   the same run (runs of as many matmuls as the network's FLOPs, interleaved with the network
   calls; medians; one thread). Pass: at least 50% of the matmul rate.

3. **Mode masses.** The learned densities themselves, on a 256x256 grid over [-1.3, 1.3]^2 at
   level 0: the mass in each of the eight angular sectors around the ring's modes for
   ``model("ring")``, ``model("ring") ** 2`` and ``model("ring") * model("bar")`` against the
   exact oracles, and the total variation between learned and exact grids. This is what the
   density-ratio loss of :mod:`rrrdsl.zoo.training` is for (without it one sector held 0.79 of
   ``model("ring")``); no pass/fail, the sampler checks below depend on it.
4. **Compositions** (needs the compiler and samplers). ``ring * bar`` sampled with the same
   sampler (SMC, the default for energy targets, and HMC) on the learned energy models and on
   the exact oracles: MMD of each against exact samples of ``oracle("ring") * oracle("bar")``
   (pass: learned within 2x of exact under SMC or under HMC), and exact samples of the learned
   density drawn on a grid: the MMD no sampler can beat on these models (their model error). The score-parameterised product
   sampled with MALA using the line-integral Metropolis test against ULA with the same steps
   per level (equal NFE: the trapezoid test reuses the gradients at both ends); pass: MALA's
   MMD is lower.

Run::

    .venv/bin/python benchmarks/bench_models.py [--quick] [--seeds 5]

Results go to ``benchmarks/results/models.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rrrdsl import metrics, schedules
from rrrdsl.lang.ir import model as learned, oracle
from rrrdsl.models.registry import resolve
from rrrdsl.samplers.diffusion import reverse_moments, reverse_step
from rrrdsl.zoo.toy2d.loading import register_shipped
from rrrdsl.zoo.toy2d.models import make_model
from rrrdsl.zoo.toy2d.train import ZOO

BANDWIDTH = 0.05
N_SAMPLES = 2000
QUALITY_LIMIT = 3.0
N_SPEED = 4096
SPEED_LIMIT = 0.5
RESULTS = Path(__file__).resolve().parent / "results" / "models.md"


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def ddpm_samples(name: str, param: str, n: int, seed: int) -> torch.Tensor:
    """Reverse-diffusion samples at level 0 of ``model(name, param=param)``."""
    if has_module("rrrdsl.compiler"):
        import rrrdsl

        return rrrdsl.sample(learned(name, param=param), sampler="reverse", n=n, seed=seed, progress=False).x
    model = resolve(learned(name, param=param))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.dim, generator=generator)
    for t in range(model.schedule.num_levels - 2, -1, -1):
        x = reverse_step(reverse_moments(x, model.score(x, t + 1), model.schedule, t), generator)
    return x


def exact_samples(name: str, n: int, seed: int) -> torch.Tensor:
    """Exact samples of the named dataset at level 0."""
    if has_module("rrrdsl.truth"):
        from rrrdsl import truth

        return truth.exact_samples(oracle(name), n, seed, level=0)
    return resolve(oracle(name)).sample(n, torch.Generator().manual_seed(seed), t=0)


def quality(n: int, floor_seeds: int) -> list[tuple[str, str, float, float, float]]:
    """``(name, param, mmd, floor, ratio)`` for every shipped checkpoint."""
    register_shipped()
    rows, floors = [], {}
    for name, param in ZOO:
        if name not in floors:
            pairs = [exact_samples(name, 2 * n, 100 + s) for s in range(floor_seeds)]
            floors[name] = statistics.mean(metrics.mmd(p[:n], p[n:], BANDWIDTH) for p in pairs)
        value = metrics.mmd(ddpm_samples(name, param, n, seed=1), exact_samples(name, n, seed=2), BANDWIDTH)
        rows.append((name, param, value, floors[name], value / floors[name]))
        print(f"  {name:>10} {param:>6}: MMD {value:.4f}  floor {floors[name]:.4f}  ratio {value / floors[name]:.2f}", flush=True)
    return rows


def speed(repeats: int) -> tuple[float, float, float]:
    """``(network FLOP/s, matmul FLOP/s, ratio)`` at N = 4096, interleaved medians."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_model("energy", 2, schedules.default())
        x, a, b = torch.randn(N_SPEED, 2), torch.randn(N_SPEED, 128), torch.randn(128, 128)
    # matmul FLOPs of the forward pass; the backward pass to the input costs the same again
    # (one matmul per layer of the same size; weight gradients are not taken)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.log_prob(x, 50)
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
        model.log_prob_and_grad(x, 50), matmuls()
    for _ in range(repeats):
        network.append(seconds(lambda: model.log_prob_and_grad(x, 50)))
        matmul.append(seconds(matmuls))
    network_rate = network_flops / statistics.median(network)
    matmul_rate = run * matmul_flops / statistics.median(matmul)
    return network_rate, matmul_rate, network_rate / matmul_rate


def compositions(n: int, seeds: int) -> list[tuple[str, str, float, int, float, list[float]]]:
    """``(what, sampler, mean MMD vs exact ring * bar, NFE per particle, mean mass with y > 0,
    MMD per seed)`` for the composition checks over sampling seeds ``1..seeds`` (the product
    has two equal modes, at (0, 0.5) and (0, -0.5))."""
    import rrrdsl

    exact = exact_samples_of(oracle("ring") * oracle("bar"), n, seed=2)
    runs = [
        ("learned energy: model(ring) * model(bar)", learned("ring") * learned("bar"), "smc", {}),
        ("exact: oracle(ring) * oracle(bar)", oracle("ring") * oracle("bar"), "smc", {}),
        ("learned energy: model(ring) * model(bar)", learned("ring") * learned("bar"), "hmc", {}),
        ("exact: oracle(ring) * oracle(bar)", oracle("ring") * oracle("bar"), "hmc", {}),
        ("learned score product", learned("ring", param="score") * learned("bar", param="score"), "ula", {}),
        ("learned score product", learned("ring", param="score") * learned("bar", param="score"), "mala", {"mh": "line_integral"}),
    ]
    rows = []

    def add(what: str, label: str, draws: list[torch.Tensor], nfe: int) -> None:
        values = [metrics.mmd(x, exact, BANDWIDTH) for x in draws]
        upper = statistics.mean(float((x[:, 1] > 0).double().mean()) for x in draws)
        rows.append((what, label, statistics.mean(values), nfe, upper, values))
        print(f"  {what} [{label}]: MMD {rows[-1][2]:.4f} (seeds: {' '.join(f'{v:.4f}' for v in values)}), "
              f"NFE {nfe}, mass with y > 0: {upper:.3f}", flush=True)

    # the best any sampler can do on these models: their model error
    add("learned energy: model(ring) * model(bar)", "exact sampler of the learned density (grid)",
        [learned_density_samples(n, seed) for seed in range(1, seeds + 1)], 0)
    for what, expr, sampler, options in runs:
        results = [rrrdsl.sample(expr, sampler=sampler, n=n, seed=seed, progress=False, **options) for seed in range(1, seeds + 1)]
        add(what, sampler + "".join(f" {k}={v}" for k, v in options.items()), [r.x for r in results],
            int(results[0].diagnostics["nfe"]))
    return rows


MASS_TARGETS = ("ring", "ring ** 2", "ring * bar")
#: the grid of :func:`mode_masses` and :func:`learned_density_samples`
GRID_BOUNDS = [(-1.3, 1.3), (-1.3, 1.3)]


def learned_density_samples(n: int, seed: int) -> torch.Tensor:
    """``n`` exact samples of the *learned* ``model("ring") * model("bar")`` density at level 0,
    drawn on a 512x512 grid by :func:`rrrdsl.truth.exact_samples` (as the exact one is): the
    best any sampler can do on these models, so the part of a sampler's MMD that is model error."""
    from rrrdsl import truth

    return truth.exact_samples(learned("ring") * learned("bar"), n, seed, bounds=GRID_BOUNDS)


def mode_masses(level: int = 0, resolution: int = 256) -> list[tuple[str, list[float], list[float], float]]:
    """``(target, exact sector masses, learned sector masses, total variation)`` on a grid at ``level``."""
    import math

    from rrrdsl import parse_expr, truth

    rows = []
    for source in MASS_TARGETS:
        exact_expr = parse_expr(source.replace("ring", 'oracle("ring")').replace("bar", 'oracle("bar")'))
        learned_expr = parse_expr(source.replace("ring", 'model("ring")').replace("bar", 'model("bar")'))
        exact, model_grid = (truth.grid(e, level, bounds=GRID_BOUNDS, resolution=resolution) for e in (exact_expr, learned_expr))
        points = exact.points()
        exact_mass, learned_mass = ((g.density * g.cell_area).reshape(-1) for g in (exact, model_grid))
        angle = torch.atan2(points[:, 1], points[:, 0]) % (2 * math.pi)
        sector = ((angle + math.pi / 8) // (math.pi / 4)).long() % 8
        by_sector = [torch.zeros(8, dtype=torch.float64).index_add_(0, sector, m).tolist() for m in (exact_mass, learned_mass)]
        tv = 0.5 * float((exact_mass - learned_mass).abs().sum())
        rows.append((source, *by_sector, tv))
        print(f"  {source}: TV {tv:.3f}; learned sector masses {[round(v, 3) for v in by_sector[1]]}", flush=True)
    return rows


def exact_samples_of(expr, n: int, seed: int) -> torch.Tensor:
    from rrrdsl import truth

    return truth.exact_samples(expr, n, seed, level=0)


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} torch thread(s) of {len(os.sched_getaffinity(0))} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer speed repeats and floor seeds")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/models.md")
    parser.add_argument("--seeds", type=int, default=5, help="sampling seeds of the composition checks (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("speed: log_prob_and_grad of the default energy network at N = 4096", flush=True)
    network_rate, matmul_rate, ratio = speed(10 if args.quick else 30)
    print(f"  network {network_rate / 1e9:.1f} GFLOP/s, matmul {matmul_rate / 1e9:.1f} GFLOP/s, ratio {ratio:.2f}", flush=True)
    sampler = "rrrdsl.sample(..., sampler='reverse')" if has_module("rrrdsl.compiler") else "direct DDPM loop (rrrdsl.samplers.diffusion)"
    print(f"quality: shipped models, reverse diffusion via {sampler}", flush=True)
    rows = quality(N_SAMPLES, 2 if args.quick else 5)
    composition_rows: list[tuple[str, str, float, int, float, list[float]]] = []
    mass_rows: list[tuple[str, list[float], list[float], float]] = []
    if has_module("rrrdsl.compiler") and has_module("rrrdsl.truth"):
        print("mode masses at level 0: learned vs exact on a grid", flush=True)
        mass_rows = mode_masses()
        print("compositions: ring * bar, learned vs exact (same sampler), score product MH vs ULA (equal NFE)", flush=True)
        composition_rows = compositions(N_SAMPLES, 1 if args.quick else args.seeds)
    # learned within 2x of exact under SMC or under HMC (mean MMD over seeds); line-integral MALA below ULA
    products_ok = not composition_rows or (
        (composition_rows[1][2] <= 2 * composition_rows[2][2] or composition_rows[3][2] <= 2 * composition_rows[4][2])
        and composition_rows[6][2] < composition_rows[5][2]
    )
    quality_ok = all(row[4] <= QUALITY_LIMIT for row in rows) and len(rows) == len(ZOO)
    speed_ok = ratio >= SPEED_LIMIT
    lines = [
        "# Learned models: shipped-zoo quality and network speed",
        "",
        f"- command: `{' '.join(['.venv/bin/python', 'benchmarks/bench_models.py', *(argv if argv is not None else sys.argv[1:])])}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        f"- torch {torch.__version__}, Python {platform.python_version()}",
        "",
        "## Quality (issue 5: every shipped model within 3x of the exact-vs-exact floor)",
        "",
        f"RBF MMD, bandwidth {BANDWIDTH}, N = {N_SAMPLES}; reverse diffusion (DDPM, the model's own score) via {sampler}; "
        "exact samples of the dataset at level 0; floor = mean MMD between two independent exact samples.",
        "",
        "| model | param | MMD | floor | ratio | within 3x |",
        "|---|---|---|---|---|---|",
        *(f"| {n} | {p} | {v:.4f} | {f:.4f} | {r:.2f} | {'yes' if r <= QUALITY_LIMIT else 'NO'} |" for n, p, v, f, r in rows),
        "",
        "## Mode masses at level 0 (learned energies against the exact oracles, on a grid)",
        "",
        "Mass in the eight 45° sectors centred on the ring's modes (sector k at angle 2πk/8) on a 256x256 grid over "
        "[-1.3, 1.3]^2, and the total variation between the learned and the exact grid densities.",
        "",
        "| target | exact sector masses | learned sector masses | total variation |",
        "|---|---|---|---|",
        *(f"| `{w}` | {' '.join(f'{v:.3f}' for v in e)} | {' '.join(f'{v:.3f}' for v in m)} | {tv:.3f} |" for w, e, m, tv in mass_rows),
        "",
        "## Compositions (issue 5: learned within 2x of exact under one sampler; line-integral MH beats ULA at equal NFE)",
        "",
        f"MMD (bandwidth {BANDWIDTH}, N = {N_SAMPLES}) against exact samples of `oracle(\"ring\") * oracle(\"bar\")` at level 0, "
        f"mean over sampling seeds 1..{len(composition_rows[0][5]) if composition_rows else 0} (each seed listed). The first row "
        "samples the learned density itself exactly (on a grid): no sampler can do better on these models.",
        "",
        "| target | sampler | mean MMD | MMD per seed | NFE per particle | mass with y > 0 (exact: 0.5) |",
        "|---|---|---|---|---|---|",
        *(f"| {w} | {s} | {v:.4f} | {' '.join(f'{x:.4f}' for x in per)} | {e} | {u:.3f} |" for w, s, v, e, u, per in composition_rows),
        "",
        f"Result: {'pass' if products_ok else 'FAIL'}" if composition_rows else "Not run (the compiler or rrrdsl.truth is missing).",
        "",
        "## Speed (issue 5: at least 50% of the matmul rate)",
        "",
        "| call | GFLOP/s |",
        "|---|---|",
        f"| `log_prob_and_grad`, default energy net (4x128), N = {N_SPEED} (matmul FLOPs, forward + backward) | {network_rate / 1e9:.1f} |",
        f"| plain matmul [{N_SPEED}, 128] @ [128, 128] | {matmul_rate / 1e9:.1f} |",
        f"| ratio | {ratio:.2f} ({'pass' if speed_ok else 'FAIL'}) |",
        "",
    ]
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(lines))
        print(f"wrote {RESULTS}")
    ok = quality_ok and speed_ok and products_ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
