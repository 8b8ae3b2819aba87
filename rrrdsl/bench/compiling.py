"""``rrr bench compile [--quick]``: how parsing and compiling grow with the size of a graph,
and what the compiled plan costs over the same computation written by hand.

1. **Growth with leaves.** The text of a product of K distinct ``gmm`` leaves
   (``gmm(means=[[0.05 i, -0.05 i]], std=1.0)``, i = 0..K-1) is parsed with
   :func:`rrrdsl.parse_expr` and the graph compiled with :func:`rrrdsl.compile`; each stage's
   wall and CPU time, once per K (compiling 10,000 leaves is the expensive point), and the
   log-log slope of each one's CPU time against K (1 is linear growth). The CPU time of the
   one-threaded process equals its wall time on an idle machine and is what load leaves alone,
   so the slopes and the targets read it.
2. **A long script.** :func:`rrrdsl.parse` of a fixed-seed 2,000-line program using every
   statement form, and :func:`rrrdsl.parse_expr` of a 10,000-factor ``model(...)`` product with
   ``*`` and ``/`` (best of several runs).
3. **Plan overhead.** ``log_prob_and_grad`` of ``a * b ** 2 / c ** 0.5`` over three small MLP
   energy models, compiled and written by hand in torch, in one process, interleaved, on one
   thread; medians over repeats of ``inner`` calls. The ratio must stay within
   :data:`MAX_RATIO` (exit status 1 otherwise).

Writes ``compile.md`` (prose in ``templates/compile.md``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable, NamedTuple

import torch
from torch import nn

from .. import schedules
from ..compiler import compile as compile_expr
from ..lang.ir import model
from ..lang.parse import parse, parse_expr
from ..models.base import Model
from ..models.registry import register_model
from ..schedules import Level
from .common import markdown_table, provenance, render, write_report
from .scaling import loglog_slope

#: compiled / hand-written time of the plan overhead check, at most
MAX_RATIO = 1.05
#: the growth targets at the largest K of the full run: parse and compile seconds, at most
TARGET_K, TARGET_PARSE, TARGET_COMPILE = 10_000, 1.0, 2.0


class CompileConfig(NamedTuple):
    """What one run covers: leaf counts, script lines, plan-overhead sizes and repeats."""

    leaves: tuple[int, ...]
    script_lines: int
    factors: int
    sizes: tuple[int, ...]
    repeats: int
    inner: int


FULL = CompileConfig((500, 2000, 4000, 10_000), 2000, 10_000, (1000, 10_000), 31, 20)
QUICK = CompileConfig((20, 50, 100), 100, 300, (200,), 3, 3)


class Growth(NamedTuple):
    """Parse and compile time (wall and CPU) of a product of ``leaves`` distinct Gaussian leaves."""

    leaves: int
    characters: int
    parse_seconds: float
    parse_cpu: float
    compile_seconds: float
    compile_cpu: float


class Overhead(NamedTuple):
    """Median seconds per ``log_prob_and_grad`` call, by hand and compiled."""

    n: int
    hand_ms: float
    compiled_ms: float
    ratio: float


def gmm_product_text(k: int) -> str:
    """``gmm(means=[[0.0, -0.0]], std=1.0) * gmm(means=[[0.05, -0.05]], std=1.0) * ...``."""
    return " * ".join(f"gmm(means=[[{0.05 * i!r}, {-0.05 * i!r}]], std=1.0)" for i in range(k))


class Timed(NamedTuple):
    """Wall and CPU (process) seconds of one call, and its value."""

    seconds: float
    cpu: float
    value: object


def timed(action: Callable[[], object]) -> Timed:
    """Time one call of ``action``: the CPU time is what other load on the machine leaves alone."""
    start, start_cpu = time.perf_counter(), time.process_time()
    value = action()
    return Timed(time.perf_counter() - start, time.process_time() - start_cpu, value)


def growth(k: int) -> Growth:
    """:class:`Growth` of one K (each stage timed once)."""
    text = gmm_product_text(k)
    parsed = timed(lambda: parse_expr(text))
    compiled = timed(lambda: compile_expr(parsed.value))
    row = Growth(k, len(text), parsed.seconds, parsed.cpu, compiled.seconds, compiled.cpu)
    print(f"  K = {k}: parse {parsed.seconds:.3f} s ({parsed.cpu:.3f} s CPU), "
          f"compile {compiled.seconds:.3f} s ({compiled.cpu:.3f} s CPU)", flush=True)
    return row


def product_text(factors: int) -> str:
    """``model("m0") * model("m1") / model("m2") * ...`` with ``factors`` distinct leaves."""
    ops = [" * " if i % 3 else " / " for i in range(1, factors)]
    return 'model("m0")' + "".join(f'{op}model("m{i}")' for i, op in zip(range(1, factors), ops))


def script_text(lines: int, seed: int = 0) -> str:
    """A program of ``lines`` lines: leaves, products, powers, mixtures, crops, every statement."""
    rng = random.Random(seed)
    out = ['a0 = oracle("ring")', 'a1 = gmm(means=[[0.5, 0], [-0.5, 0]], std=0.1, weights=[0.3, 0.7])',
           'a2 = box(low=[-0.2, -1], high=[0.2, 1])', "w = 0.5"]
    count = len(out)
    statements = (
        lambda i, x, y, z: f'a{i} = model("digits", label={i % 10}) ** w / model("digits") ** 0.5',
        lambda i, x, y, z: f"a{i} = 0.3 * {x} + 0.7 * {y} ** 2",
        lambda i, x, y, z: f"a{i} = ({x} * {y}\n    / {z}) ** -0.5  # continued inside brackets",
        lambda i, x, y, z: f"a{i} = crop({x}, dims=0:1) * {y}",
        lambda i, x, y, z: f"show {x} * {y}",
        lambda i, x, y, z: f'sample {x} using mala(step_size=0.01) n=100 seed={i} -> "s{i}.npz"',
        lambda i, x, y, z: f"# a comment line {i}",
        lambda i, x, y, z: f'plot {x} + {y} -> "p{i}.png"',
    )
    while count < lines:
        i = len(out)
        x, y, z = (f"a{rng.randrange(3)}" for _ in range(3))
        kind = i % 8
        if kind == 2 and count + 2 > lines:  # a two-line statement would overshoot
            kind = 7
        out.append(statements[kind](i, x, y, z))
        count += out[-1].count("\n") + 1
    return "\n".join(out) + "\n"


def best_of(repeats: int, action: Callable[[], object]) -> float:
    """The best wall time of ``repeats`` calls of ``action``."""
    return min(timed(action).seconds for _ in range(repeats))


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
    """``log_prob_and_grad`` of ``a * b ** 2 / c ** 0.5`` written directly in torch."""

    def log_prob_and_grad(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_prob = a.log_prob(x, t) + 2.0 * b.log_prob(x, t) - 0.5 * c.log_prob(x, t)
            (grad,) = torch.autograd.grad(log_prob.sum(), x)
        return log_prob.detach(), grad

    return log_prob_and_grad


def plan_overhead(config: CompileConfig, width: int = 64) -> list[Overhead]:
    """:class:`Overhead` at each size of ``config`` (compiled and hand-written values agree)."""
    nets = [MLPEnergy(2, width, seed) for seed in range(3)]
    for name, net in zip("abc", nets):
        register_model(f"bench_mlp_{name}", lambda schedule, net=net: net, "a small MLP energy model (benchmark)")
    a, b, c = (model(f"bench_mlp_{name}") for name in "abc")
    compiled = compile_expr(a * b**2 / c**0.5).log_prob_and_grad
    hand = by_hand(*nets)

    def per_call(fn: Callable, x: torch.Tensor) -> float:
        return timed(lambda: [fn(x, 7) for _ in range(config.inner)]).seconds / config.inner

    rows = []
    for n in config.sizes:
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(n))
        for mine, theirs in zip(compiled(x, 7), hand(x, 7)):
            torch.testing.assert_close(mine, theirs)
        for _ in range(3):  # warm up
            per_call(hand, x), per_call(compiled, x)
        times: dict[str, list[float]] = {"hand": [], "compiled": []}
        for _ in range(config.repeats):
            times["hand"].append(per_call(hand, x))
            times["compiled"].append(per_call(compiled, x))
        t_hand, t_compiled = statistics.median(times["hand"]), statistics.median(times["compiled"])
        rows.append(Overhead(n, 1e3 * t_hand, 1e3 * t_compiled, t_compiled / t_hand))
        print(f"  N = {n}: hand {1e3 * t_hand:.3f} ms, compiled {1e3 * t_compiled:.3f} ms, ratio {t_compiled / t_hand:.3f}", flush=True)
    return rows


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``compile.md`` under ``args.out``; 1 when the plan overhead exceeds :data:`MAX_RATIO`
    (full runs only)."""
    config = QUICK if args.quick else FULL
    parse_expr("1")  # build the LALR tables once, outside the timings
    print("parse and compile against the number of leaves", flush=True)
    rows = [growth(k) for k in config.leaves]
    ks = [r.leaves for r in rows]
    largest = rows[-1]
    if largest.leaves >= TARGET_K:
        met = largest.parse_cpu < TARGET_PARSE and largest.compile_cpu < TARGET_COMPILE
        target = (f"at K = {largest.leaves}: parse < {TARGET_PARSE:g} s and compile < {TARGET_COMPILE:g} s of CPU time: "
                  + ("met" if met else "NOT met"))
    else:
        target = f"not checked (the target is for K = {TARGET_K}; this run stops at {largest.leaves})"
    script, product = script_text(config.script_lines), product_text(config.factors)
    repeats = 5 if not args.quick else 1
    print("a long script and a long product", flush=True)
    texts = [
        {"text": f"{script.count(chr(10)):,}-line script ({len(script):,} chars)", "parse (best, s)": best_of(repeats, lambda: parse(script, "bench.rrr"))},
        {"text": f"{config.factors:,}-factor product ({len(product):,} chars)", "parse (best, s)": best_of(repeats, lambda: parse_expr(product))},
    ]
    print("plan overhead: compiled vs hand-written log_prob_and_grad", flush=True)
    overhead = plan_overhead(config)
    ok = all(r.ratio <= MAX_RATIO for r in overhead)
    enforced = not args.quick  # a quick run's few short repeats are a smoke test, not a measurement
    text = render(
        "compile",
        provenance=provenance(command),
        growth=markdown_table(rows, ("leaves K", "characters", "parse (s)", "parse CPU (s)", "compile (s)", "compile CPU (s)")),
        parse_slope=f"{loglog_slope(ks, [r.parse_cpu for r in rows]):.2f}",
        compile_slope=f"{loglog_slope(ks, [r.compile_cpu for r in rows]):.2f}",
        target=target,
        repeats=repeats,
        texts=markdown_table(texts),
        repeats_overhead=config.repeats,
        inner=config.inner,
        overhead=markdown_table(overhead, ("N", "hand (ms)", "compiled (ms)", "ratio")),
        max_ratio=MAX_RATIO,
        overhead_verdict=("met" if ok else "NOT met") + ("" if enforced else " (quick run: not enforced)"),
    )
    print(f"wrote {write_report(args.out / 'compile.md', text)}")
    return 1 if enforced and not ok else 0
