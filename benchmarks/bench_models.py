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

3. **Compositions** (needs the compiler and samplers). ``ring * bar`` sampled with the same
   sampler (SMC, the default for energy targets) on the learned energy models and on the exact
   oracles: MMD of each against exact samples of ``oracle("ring") * oracle("bar")`` (pass:
   learned within 2x of exact). The score-parameterised product sampled with MALA using the
   line-integral Metropolis test against ULA with the same steps per level (equal NFE: the
   trapezoid test reuses the gradients at both ends); pass: MALA's MMD is lower.

Run::

    .venv/bin/python benchmarks/bench_models.py [--quick]

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
from rrrdsl.models import checkpoints
from rrrdsl.models.nets import make_model
from rrrdsl.models.registry import resolve
from rrrdsl.samplers.diffusion import reverse_moments, reverse_step
from rrrdsl.train import ZOO

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
    checkpoints.register_shipped()
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


def compositions(n: int) -> list[tuple[str, str, float, int, float]]:
    """``(what, sampler, MMD vs exact ring * bar, NFE per particle, mass with y > 0)`` for the
    composition checks (the product has two equal modes, at (0, 0.5) and (0, -0.5))."""
    import rrrdsl

    exact = exact_samples_of(oracle("ring") * oracle("bar"), n, seed=2)
    runs = [
        ("learned energy: model(ring) * model(bar)", learned("ring") * learned("bar"), "smc", {}),
        ("exact: oracle(ring) * oracle(bar)", oracle("ring") * oracle("bar"), "smc", {}),
        ("learned score product", learned("ring", param="score") * learned("bar", param="score"), "ula", {}),
        ("learned score product", learned("ring", param="score") * learned("bar", param="score"), "mala", {"mh": "line_integral"}),
    ]
    rows = []
    for what, expr, sampler, options in runs:
        result = rrrdsl.sample(expr, sampler=sampler, n=n, seed=1, progress=False, **options)
        label = sampler + "".join(f" {k}={v}" for k, v in options.items())
        value = metrics.mmd(result.x, exact, BANDWIDTH)
        upper = float((result.x[:, 1] > 0).double().mean())
        rows.append((what, label, value, int(result.diagnostics["nfe"]), upper))
        print(f"  {what} [{label}]: MMD {value:.4f}, NFE {rows[-1][3]}, mass with y > 0: {upper:.3f}", flush=True)
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
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("speed: log_prob_and_grad of the default energy network at N = 4096", flush=True)
    network_rate, matmul_rate, ratio = speed(10 if args.quick else 30)
    print(f"  network {network_rate / 1e9:.1f} GFLOP/s, matmul {matmul_rate / 1e9:.1f} GFLOP/s, ratio {ratio:.2f}", flush=True)
    sampler = "rrrdsl.sample(..., sampler='reverse')" if has_module("rrrdsl.compiler") else "direct DDPM loop (rrrdsl.samplers.diffusion)"
    print(f"quality: shipped models, reverse diffusion via {sampler}", flush=True)
    rows = quality(N_SAMPLES, 2 if args.quick else 5)
    composition_rows: list[tuple[str, str, float, int, float]] = []
    if has_module("rrrdsl.compiler") and has_module("rrrdsl.truth"):
        print("compositions: ring * bar, learned vs exact (same sampler), score product MH vs ULA (equal NFE)", flush=True)
        composition_rows = compositions(N_SAMPLES)
    products_ok = not composition_rows or (
        composition_rows[0][2] <= 2 * composition_rows[1][2] and composition_rows[3][2] < composition_rows[2][2]
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
        "## Compositions (issue 5: learned within 2x of exact under one sampler; line-integral MH beats ULA at equal NFE)",
        "",
        f"MMD (bandwidth {BANDWIDTH}, N = {N_SAMPLES}) against exact samples of `oracle(\"ring\") * oracle(\"bar\")` at level 0.",
        "",
        "| target | sampler | MMD | NFE per particle | mass with y > 0 (exact: 0.5) |",
        "|---|---|---|---|---|",
        *(f"| {w} | {s} | {v:.4f} | {e} | {u:.3f} |" for w, s, v, e, u in composition_rows),
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
