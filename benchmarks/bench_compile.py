"""Overhead of the compiled plan: ``log_prob_and_grad`` of ``a * b ** 2 / c ** 0.5`` over three
small MLP energy models, compiled vs. the same computation written by hand in torch.

Both run in one process, interleaved (hand, compiled, hand, ...), on one thread; each sample
times ``--inner`` calls; the report gives the medians over ``--repeats`` samples and their
ratio, which must stay <= 1.05 (exit status 1 otherwise)::

    .venv/bin/python benchmarks/bench_compile.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
from torch import nn

from rrrdsl import schedules
from rrrdsl.compiler import compile
from rrrdsl.lang.ir import model
from rrrdsl.models.base import Model
from rrrdsl.models.registry import register_model
from rrrdsl.schedules import Level

MAX_RATIO = 1.05


class MLPEnergy(Model):
    """A small energy model ``log q_t(x) = -E_θ([x, t / T])`` with a two-hidden-layer SiLU MLP."""

    def __init__(self, dim: int, width: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))
        self.dim = dim
        self.schedule = schedules.default()
        self.description = f"MLP energy {seed}"

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        level = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None] / self.schedule.num_levels
        return -self.net(torch.cat([x, level], dim=-1)).squeeze(-1)

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_prob(x, t).sum(), x)[0]


def by_hand(a: Model, b: Model, c: Model) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
    def log_prob_and_grad(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_prob = a.log_prob(x, t) + 2.0 * b.log_prob(x, t) - 0.5 * c.log_prob(x, t)
            (grad,) = torch.autograd.grad(log_prob.sum(), x)
        return log_prob.detach(), grad

    return log_prob_and_grad


def seconds(fn: Callable[[torch.Tensor, int], object], x: torch.Tensor, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn(x, 7)
    return (time.perf_counter() - start) / inner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)

    nets = [MLPEnergy(2, args.width, seed) for seed in range(3)]
    for name, net in zip("abc", nets):
        register_model(f"bench_mlp_{name}", lambda schedule, net=net: net, "a small MLP energy model (benchmark)")
    a, b, c = (model(f"bench_mlp_{name}") for name in "abc")
    target = compile(a * b**2 / c**0.5)
    hand = by_hand(*nets)
    print(target.describe())

    failed = False
    print(f"\n{'N':>7} {'hand [ms]':>10} {'compiled [ms]':>14} {'ratio':>7}")
    for n in args.sizes:
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(n))
        lp, grad = target.log_prob_and_grad(x, 7)
        lp_hand, grad_hand = hand(x, 7)
        torch.testing.assert_close(lp, lp_hand)
        torch.testing.assert_close(grad, grad_hand)
        times: dict[str, list[float]] = {"hand": [], "compiled": []}
        for _ in range(3):  # warm up
            seconds(hand, x, args.inner), seconds(target.log_prob_and_grad, x, args.inner)
        for _ in range(args.repeats):
            times["hand"].append(seconds(hand, x, args.inner))
            times["compiled"].append(seconds(target.log_prob_and_grad, x, args.inner))
        t_hand, t_compiled = statistics.median(times["hand"]), statistics.median(times["compiled"])
        ratio = t_compiled / t_hand
        failed |= ratio > MAX_RATIO
        print(f"{n:>7} {1e3 * t_hand:>10.3f} {1e3 * t_compiled:>14.3f} {ratio:>7.3f}")
    print(f"\nratio compiled / hand must be <= {MAX_RATIO}: {'FAIL' if failed else 'ok'}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
