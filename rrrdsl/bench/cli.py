"""``rrr bench NAME``: the argparse commands of the benchmarks.

Each benchmark is a module of :mod:`rrrdsl.bench` with a ``main(args, command) -> int``; this
module names them, declares their flags and imports a benchmark only when it runs, so that
``rrr --help`` loads none of them. Every benchmark runs with one torch thread and writes under
``--out`` (default ``benchmarks/results``), recording the command that reproduces it.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any, NamedTuple

from .common import RESULTS


class Flag(NamedTuple):
    """One option of a benchmark: ``add_argument(name, **options)``; ``options["default"]`` is
    what the recorded command leaves out."""

    name: str
    options: dict


class Benchmark(NamedTuple):
    """A ``rrr bench`` subcommand: the module that runs it, its help line and its flags."""

    module: str
    help: str
    flags: tuple[Flag, ...] = ()


def _quick(what: str) -> Flag:
    return Flag("--quick", {"action": "store_true", "default": False, "help": what})


BENCHMARKS: dict[str, Benchmark] = {
    "table": Benchmark("table_report", "compositions x samplers x models against exact truth",
                       (_quick("N = 500, 3 compositions, 4 samplers, exact oracles only"),)),
    "pyro": Benchmark("pyro", "the 8-Gaussian ring: rrrdsl vs pyro NUTS",
                      (Flag("--n", {"type": int, "default": 2000, "help": "rrrdsl chains (default 2000)"}),)),
    "scaling": Benchmark("scaling", "wall time and memory against N and leaves; wall time against processes", (
        _quick("three N and three leaf counts"),
        Flag("--processes", {"type": int, "nargs": "+", "default": None,
                             "help": "instead: ring * bar, MALA and SMC under torchrun with each number of processes"}),
        Flag("--n", {"type": int, "default": 1_000_000, "help": "particles of --processes (default 10^6)"}),
    )),
    "compile": Benchmark("compiling", "parse and compile time against leaves; overhead of the compiled plan",
                         (_quick("K = 20, 50, 100; a 100-line script; fewer repeats (a smoke test)"),)),
    "samplers": Benchmark("samplers", "every sampler on ring * bar against exact samples at equal NFE", (
        Flag("--n", {"type": int, "default": 2000, "help": "particles (default 2000)"}),
        Flag("--seed", {"type": int, "default": 0, "help": "sampling seed (default 0)"}),
        Flag("--sweep", {"action": "store_true", "default": False, "help": "also sweep the step-size defaults (c, b)"}),
    )),
    "smc": Benchmark("smc_levels", "the default sampler (SMC, adaptive levels) on every table composition and a narrow mixture", (
        Flag("--n", {"type": int, "default": 2000, "help": "particles (default 2000)"}),
        Flag("--seeds", {"type": int, "nargs": "+", "default": [0, 1, 2], "help": "sampling seeds (default 0 1 2)"}),
    )),
    "modes": Benchmark("smc_modes", "the default sampler's mass in each mode: scatter over seeds against exact draws", (
        Flag("--n", {"type": int, "default": 2000, "help": "particles (default 2000)"}),
        Flag("--seeds", {"type": int, "nargs": "+", "default": list(range(200)), "help": "sampling seeds (default 0..199)"}),
    )),
    "line_integral": Benchmark("line_integral", "line-integral Metropolis vs ULA at equal NFE", (
        Flag("--n", {"type": int, "default": 2000, "help": "particles (default 2000)"}),
        Flag("--seeds", {"type": int, "nargs": "+", "default": [0, 1, 2, 3, 4], "help": "sampling seeds (default 0 1 2 3 4)"}),
    )),
    "exactness": Benchmark("exactness", "exactness checks: SMC Ẑ/Z, one chain's E x², line-integral MH on the banana, mixture weights", (
        Flag("--n", {"type": int, "default": 50000, "help": "banana chains (default 50000)"}),
        Flag("--seed", {"type": int, "default": 0, "help": "banana seed (default 0)"}),
        Flag("--mixture-n", {"type": int, "default": 2000, "help": "particles of the learned mixture (default 2000)"}),
        Flag("--mixture-seeds", {"type": int, "nargs": "+", "default": [0, 1, 2], "help": "its seeds (default 0 1 2)"}),
    )),
    "models": Benchmark("models", "shipped learned models: quality, mode masses, compositions, speed", (
        _quick("fewer speed repeats, floor seeds and sampling seeds"),
        Flag("--seeds", {"type": int, "default": 5, "help": "sampling seeds of the composition checks (default 5)"}),
        Flag("--no-write", {"action": "store_true", "default": False, "help": "do not write models.md"}),
    )),
    "peers": Benchmark("peers", "rrrdsl vs NumPyro NUTS and BlackJAX MALA/HMC/tempered SMC at equal gradients (needs the peers extra)",
                       (_quick("N = 200, one seed, ring * bar only (a smoke test)"),)),
    "speed": Benchmark("speed", "wall time per gradient evaluation: rrrdsl's default vs BlackJAX at N = 2000 and 10^5 (needs the peers extra)", (
        _quick("N = 300, two repeats (a smoke test)"),
        Flag("--torch-compile", {"action": "store_true", "default": False,
                                 "help": "also time torch.compile of the fused evaluation (minutes of compiling)"}),
    )),
    "adapter": Benchmark("adapter", "the diffusers adapter: cost per step against a direct UNet call, samples against DDPMPipeline (needs the diffusers extra)",
                         (_quick("one small UNet, N = 8, 3 repeats; 20 training steps, 16 samples per set (a smoke test)"),)),
    "digits": Benchmark("digits", "8x8 digits: guidance, negation, tapestry, judged by an evaluator", (
        Flag("--per-label", {"type": int, "default": 30, "help": "samples per label (default 30)"}),
        Flag("--weights", {"type": float, "nargs": "+", "default": [1.0, 2.0, 3.0], "help": "guidance weights (default 1 2 3)"}),
    )),
    "objects": Benchmark("objects", "16x16 images: compose k object positions, every sampler at equal NFE, judged by a detector",
                         (_quick("N = 4, one seed, two cell sets, k = 1 and 3, steps 0 and 2 (a smoke test)"),
                          Flag("--n", {"type": int, "default": None, "help": "samples per run (default 6; --quick 4)"}))),
}


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench {table,pyro,scaling,...}`` to an argparse ``subparsers`` object."""
    names = ",".join(BENCHMARKS)
    parser = subparsers.add_parser("bench", help="benchmarks: " + ", ".join(BENCHMARKS),
                                   description=__doc__.splitlines()[0])
    parser.set_defaults(handler=bench_command)
    which = parser.add_subparsers(dest="bench", metavar=f"{{{names}}}", required=True)
    for name, benchmark in BENCHMARKS.items():
        sub = which.add_parser(name, help=benchmark.help, description=benchmark.help)
        for flag in benchmark.flags:
            sub.add_argument(flag.name, **flag.options)
        sub.add_argument("--out", type=Path, default=RESULTS, metavar="DIR", help=f"output directory (default {RESULTS})")
    return parser


def bench_command(args: argparse.Namespace) -> int:
    """Run the benchmark named by ``args.bench`` with one torch thread; 0 on success."""
    import torch

    torch.set_num_threads(1)
    benchmark = BENCHMARKS[args.bench]
    module = importlib.import_module(f"{__package__}.{benchmark.module}")
    return module.main(args, command_line(args))


def command_line(args: argparse.Namespace) -> str:
    """The ``rrr bench ...`` command that repeats ``args`` (flags left at their default omitted)."""
    words = ["rrr bench", args.bench]
    flags = (*BENCHMARKS[args.bench].flags, Flag("--out", {"default": RESULTS}))
    for flag in flags:
        value = getattr(args, flag.name.lstrip("-").replace("-", "_"))
        if value == flag.options.get("default"):
            continue
        if value is True:
            words.append(flag.name)
        else:
            shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            words.append(f"{flag.name} {shown}")
    return " ".join(words)
