"""``rrr bench scaling [--quick] [--processes P ...]``: wall time against particles, leaves, processes.

Wall time and peak resident memory against the number of particles and of leaves, with
least-squares slopes on log-log axes, and the overhead of the compiled graph against a
hand-written torch loop at the same NFE. Writes ``scaling.md`` (prose in
``templates/scaling.md``) and ``scaling.png``.

With ``--processes``: wall time of :data:`PROCESS_SAMPLERS` on ``ring * bar`` under ``torchrun`` with each
number of processes (:mod:`rrrdsl.samplers.distributed`), written to ``scaling-processes.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from ..lang.ir import Expr, gmm
from .common import format_row, markdown_table, provenance, render, write_report


class ScalingConfig(NamedTuple):
    """Particle counts and leaf counts of a scaling run."""

    particles: tuple[int, ...]
    leaves: tuple[int, ...]
    leaves_n: int
    fit_from_particles: int
    fit_from_leaves: int


#: N up to 1e6: below ~3e4 particles a 2D step costs less than the ~0.2 ms of python per step
#: (the kernel, the driver and the graph), so the slope is fitted from 3e4 up (the range where
#: the per-particle cost dominates). Against leaves the sampler's own work per step (noise,
#: updates, diagnostics) does not grow with the leaves and is ~20% of a one-leaf run at 1e5
#: particles, so that slope is fitted from 2 leaves. The affine fit ``a + b x`` over all
#: points names both costs.
SCALING = ScalingConfig(
    (100, 300, 1000, 3000, 10_000, 30_000, 100_000, 300_000, 1_000_000), (1, 2, 4, 8, 16), 100_000, 30_000, 2
)
SCALING_QUICK = ScalingConfig((100, 1000, 10_000), (1, 4, 16), 2000, 1000, 4)
#: the scaling workload: annealed ULA with a fixed step size, 10 steps at each of the last ten
#: levels and a reverse step at every level (199 gradient evaluations per particle)
WORKLOAD = {"steps": 10, "step_size": 1e-4, "adapt": False}


def leaves_expr(k: int) -> Expr:
    """A product of ``k`` distinct Gaussian leaves (distinct means, so nothing is shared)."""
    expr = gmm(means=[[0.0, 0.0]], std=1.0)
    for i in range(1, k):
        expr = expr * gmm(means=[[0.05 * i, -0.05 * i]], std=1.0)
    return expr


def measure_point(k: int, n: int) -> dict:
    """Wall time and peak-RSS growth of one :data:`WORKLOAD` run (``k`` leaves, ``n`` particles).

    Meant to run in a fresh process (:func:`_measure_in_subprocess`): ``ru_maxrss`` is the
    process's peak resident set size, so its growth over the run is the run's peak memory.
    """
    import resource

    from ..compiler import compile as compile_expr
    from ..samplers.api import sample

    torch.set_num_threads(1)
    target = compile_expr(leaves_expr(k))
    sample(target, "ula", n=min(n, 100), seed=0, progress=False, **WORKLOAD)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = sample(target, "ula", n=n, seed=0, progress=False, **WORKLOAD)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"leaves": k, "N": n, "nfe": result.diagnostics["nfe"], "seconds": result.diagnostics["wall_time"],
            "peak RSS growth (MiB)": (peak - before) / 1024}


def _measure_in_subprocess(k: int, n: int) -> dict:
    code = f"import json; from rrrdsl.bench.scaling import measure_point; print(json.dumps(measure_point({k}, {n})))"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def hand_written_ula(n: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """The :data:`WORKLOAD` on ``gmm(means=[[0, 0]], std=1)`` written directly in torch: a DDPM
    step per level (Ho et al., 2020) and ULA steps ``x + eps * score + sqrt(2 eps) z`` at the last
    ten levels, calling the same oracle's ``score`` that the compiled graph calls, so that the
    difference in time is the overhead of the compiled graph and the driver alone.

    Returns the samples and the gradient evaluations per particle.
    """
    from ..models.registry import resolve

    oracle_model = resolve(leaves_expr(1))
    alpha_bar = oracle_model.schedule.alpha_bar.to(torch.float32)
    generator = torch.Generator().manual_seed(seed)
    eps = WORKLOAD["step_size"]
    score = oracle_model.score

    nfe = 0
    x = torch.randn(n, 2, generator=generator)
    last = oracle_model.schedule.num_levels - 1
    for t in range(last - 1, -1, -1):
        beta = 1 - alpha_bar[t + 1] / alpha_bar[t]
        mean = (x + beta * score(x, t + 1)) / (1 - beta).sqrt()
        x = mean + beta.sqrt() * torch.randn(n, 2, generator=generator)
        nfe += 1
        if t <= 9:
            for _ in range(WORKLOAD["steps"]):
                x = x + eps * score(x, t) + math.sqrt(2 * eps) * torch.randn(n, 2, generator=generator)
                nfe += 1
    return x, nfe


#: pairs of runs of the overhead measurement (one hand-written loop and one ``rrrdsl.sample`` each)
OVERHEAD_PAIRS = 31


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall time and process CPU time (``time.process_time``: every thread of this process, not
    the time it waited for a CPU) of one call of ``run``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def paired_ratio(ours: Sequence[float], reference: Sequence[float]) -> tuple[float, float, float]:
    """The median and the quartiles of the per-pair ratios ``ours[i] / reference[i]``.

    Both runs of a pair meet nearly the same load, so a load that slows both cancels in their
    ratio; the median ignores the pairs that a burst of load hit in one run only, and the
    interquartile range is the spread left."""
    ratios = [a / b for a, b in zip(ours, reference, strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def overhead_rows(sizes: Sequence[int], pairs: int = OVERHEAD_PAIRS) -> list[dict]:
    """:func:`hand_written_ula` against ``rrrdsl.sample`` of the same workload on the compiled
    one-leaf target, whole calls each (setup included), in ``pairs`` pairs after a warm-up of
    each, the order within a pair alternating (hand loop first in even pairs, ``rrrdsl.sample``
    first in odd ones): the median run time of each side, and the median and quartiles
    (:func:`paired_ratio`) of the per-pair ratios of wall time and of process CPU time (both
    sides run on one thread, so CPU time leaves out the time the process waited for a CPU)."""
    from ..compiler import compile as compile_expr
    from ..samplers.api import sample

    torch.set_num_threads(1)
    target = compile_expr(leaves_expr(1))
    rows = []
    for n in sizes:
        sides = {"hand": lambda: hand_written_ula(n)[1],
                 "ours": lambda: sample(target, "ula", n=n, seed=0, progress=False, **WORKLOAD).diagnostics["nfe"]}
        nfe = {side: run() for side, run in sides.items()}  # warm-up
        wall: dict[str, list[float]] = {"hand": [], "ours": []}
        cpu: dict[str, list[float]] = {"hand": [], "ours": []}
        for i in range(pairs):
            for side in ("hand", "ours") if i % 2 == 0 else ("ours", "hand"):
                seconds, cpu_seconds = timed(sides[side])
                wall[side].append(seconds)
                cpu[side].append(cpu_seconds)
        wall_ratio, cpu_ratio = paired_ratio(wall["ours"], wall["hand"]), paired_ratio(cpu["ours"], cpu["hand"])
        rows.append({"N": n, "NFE (hand)": nfe["hand"], "NFE (rrrdsl)": nfe["ours"], "pairs": pairs,
                     "hand-written torch loop (s, median)": statistics.median(wall["hand"]),
                     "rrrdsl.sample (s, median)": statistics.median(wall["ours"]),
                     "wall ratio (median of pairs)": wall_ratio[0], "wall ratio quartiles": f"{wall_ratio[1]:.3f} - {wall_ratio[2]:.3f}",
                     "CPU ratio (median of pairs)": cpu_ratio[0], "CPU ratio quartiles": f"{cpu_ratio[1]:.3f} - {cpu_ratio[2]:.3f}"})
    return rows


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx = torch.tensor([math.log(v) for v in xs], dtype=torch.float64)
    ly = torch.tensor([math.log(v) for v in ys], dtype=torch.float64)
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


def affine_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b x``: the fixed cost and the cost per unit of ``x``."""
    x = torch.tensor(list(xs), dtype=torch.float64)
    y = torch.tensor(list(ys), dtype=torch.float64)
    xc = x - x.mean()
    b = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    return float(y.mean()) - b * float(x.mean()), b


def scaling_rows(
    config: ScalingConfig, measure: Callable[[int, int], dict] = _measure_in_subprocess, repeats: int = 3
) -> tuple[list[dict], list[dict]]:
    """Measurements against N (one leaf) and against leaves (``config.leaves_n`` particles); each
    point is the fastest of ``repeats`` fresh runs (the least disturbed by other load)."""

    def best(k: int, n: int) -> dict:
        return min((measure(k, n) for _ in range(repeats)), key=lambda row: row["seconds"])

    by_n = [best(1, n) for n in config.particles]
    by_k = [best(k, config.leaves_n) for k in config.leaves]
    return by_n, by_k


def scaling_fits(by_n: Sequence[dict], by_k: Sequence[dict], config: ScalingConfig) -> list[dict]:
    """Log-log slopes of wall time and memory over the upper ranges named in ``config``."""
    fits = []
    for axis, rows, key, lower in (("N", by_n, "N", config.fit_from_particles), ("leaves", by_k, "leaves", config.fit_from_leaves)):
        upper = [r for r in rows if r[key] >= lower]
        for quantity in ("seconds", "peak RSS growth (MiB)"):
            usable = [r for r in upper if r[quantity] > 0]
            slope = loglog_slope([r[key] for r in usable], [r[quantity] for r in usable]) if len(usable) >= 2 else math.nan
            fixed, per_unit = affine_fit([r[key] for r in rows], [r[quantity] for r in rows]) if len(rows) >= 2 else (math.nan, math.nan)
            fits.append({"against": axis, "quantity": quantity, "fit range": f"{lower}..{upper[-1][key]}",
                         "points": len(usable), "slope": slope, "within 0.9..1.1": 0.9 <= slope <= 1.1,
                         "affine a (all points)": fixed, "affine b (per particle or leaf)": per_unit})
    return fits


def scaling_figure(by_n: Sequence[dict], by_k: Sequence[dict]):
    """Log-log plots of wall time and peak-RSS growth against N and against leaves."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, rows, key in zip(figure.subplots(1, 2), (by_n, by_k), ("N", "leaves")):
        xs = [r[key] for r in rows]
        ax.loglog(xs, [r["seconds"] for r in rows], "o-", label="wall time (s)")
        memory = [(r[key], r["peak RSS growth (MiB)"]) for r in rows if r["peak RSS growth (MiB)"] > 0]
        if memory:
            ax.loglog(*zip(*memory), "s--", label="peak RSS growth (MiB)")
        ax.set_xlabel(key)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return figure


#: the process-scaling workload: ``ring * bar`` with the MALA and SMC defaults (N: ``--n``)
PROCESS_SAMPLERS = ("mala", "smc")


def process_point(sampler: str, n: int) -> Optional[dict]:
    """One rank's part of a ``torchrun`` measurement: a warm-up run (``n = 100`` per process),
    then ``rrrdsl.sample`` of ``ring * bar``; on rank 0 the row (wall time including the
    gathering of the samples on rank 0, and each process's peak resident memory), else ``None``."""
    import resource

    from ..lang.ir import oracle
    from ..samplers.api import sample
    from ..samplers.distributed import current

    torch.set_num_threads(1)
    group = current()
    expr = oracle("ring") * oracle("bar")
    sample(expr, sampler, n=100 * group.world, seed=0, progress=False)
    group.barrier()
    start = time.perf_counter()
    result = sample(expr, sampler, n=n, seed=0, progress=False)
    seconds = time.perf_counter() - start
    peak = group.each(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).tolist()  # MiB (Linux: KiB)
    if group.rank != 0:
        return None
    return {"sampler": sampler, "processes": group.world, "N": n, "nfe": result.diagnostics["nfe"], "seconds": seconds,
            "peak RSS per process (MiB)": " / ".join(f"{value:.0f}" for value in peak)}


def _process_row(sampler: str, n: int, processes: int) -> dict:
    """:func:`process_point` under ``torchrun --standalone --nproc_per_node=processes``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([*launcher, "-m", __name__, sampler, str(n)], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def process_rows(processes: Sequence[int], n: int) -> list[dict]:
    """Wall time for each sampler of :data:`PROCESS_SAMPLERS` and each number of processes, with
    the ratio to the first process count."""
    rows = []
    for sampler in PROCESS_SAMPLERS:
        measured = [_process_row(sampler, n, p) for p in processes]
        rows.extend({**row, f"time / time at {processes[0]}": row["seconds"] / measured[0]["seconds"]} for row in measured)
    return rows


def _load(average: tuple[float, float, float]) -> str:
    """A load average (1, 5, 15 min), flagged when it exceeds half the CPUs (the ratios are then
    not those of an idle machine)."""
    text = ", ".join(f"{value:.1f}" for value in average)
    return f"{text} (loaded)" if average[0] > (os.cpu_count() or 1) / 2 else text


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``scaling.md`` and ``scaling.png`` under ``args.out`` (with ``--processes``,
    ``scaling-processes.md``)."""
    from ..plot import save_figure

    if args.processes:
        began = os.getloadavg()
        rows = process_rows(args.processes, args.n)
        load = f"{_load(began)} when the runs began, {_load(os.getloadavg())} when they ended"
        text = render("scaling-processes", provenance=provenance(command), n=args.n, load=load, rows=markdown_table(rows))
        write_report(args.out / "scaling-processes.md", text)
        print("\n".join(format_row(row) for row in rows))
        print(f"load average (1, 5, 15 min) on {os.cpu_count()} CPUs: {load}")
        print(f"wrote {args.out / 'scaling-processes.md'}")
        return 0
    config = SCALING_QUICK if args.quick else SCALING
    by_n, by_k = scaling_rows(config)
    fits = scaling_fits(by_n, by_k, config)
    overhead = overhead_rows(sorted({min(config.particles[-1], 10_000), config.leaves_n}))
    text = render(
        "scaling",
        provenance=provenance(command),
        workload=WORKLOAD,
        nfe=f"{by_n[0]['nfe']:.0f}",
        leaves_n=config.leaves_n,
        by_n=markdown_table(by_n),
        by_k=markdown_table(by_k),
        fits=markdown_table(fits),
        overhead=markdown_table(overhead),
    )
    write_report(args.out / "scaling.md", text)
    save_figure(scaling_figure(by_n, by_k), args.out / "scaling.png", dpi=100)
    print("\n".join(format_row(f) for f in fits))
    print(f"wrote {args.out / 'scaling.md'} and {args.out / 'scaling.png'}")
    return 0


if __name__ == "__main__":  # one rank of _process_row
    row = process_point(sys.argv[1], int(sys.argv[2]))
    if row is not None:
        print(json.dumps(row))
