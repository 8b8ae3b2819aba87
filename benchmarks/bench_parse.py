"""Parse + lower + simplify time of a 10,000-factor product and of a 2,000-line script.

Run ``.venv/bin/python benchmarks/bench_parse.py``; each case should take well under 1 s.
Lowering a chain ``a * b / c * ...`` makes one ``product(...)`` call (linear time); the
script exercises every statement form with a fixed-seed mix of expressions.
"""

from __future__ import annotations

import random
import time
from typing import Callable

from rrrdsl.lang.ir import simplify
from rrrdsl.lang.parse import _parser, parse, parse_expr


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
    while count < lines:
        i = len(out)
        x, y, z = (f"a{rng.randrange(3)}" for _ in range(3))
        kind = i % 8
        if kind == 0:
            out.append(f'a{i} = model("digits", label={i % 10}) ** w / model("digits") ** 0.5')
        elif kind == 1:
            out.append(f"a{i} = 0.3 * {x} + 0.7 * {y} ** 2")
        elif kind == 2 and count + 2 <= lines:
            out.append(f"a{i} = ({x} * {y}\n    / {z}) ** -0.5  # continued inside brackets")
        elif kind == 3:
            out.append(f"a{i} = crop({x}, dims=0:1) * {y}")
        elif kind == 4:
            out.append(f"show {x} * {y}")
        elif kind == 5:
            out.append(f'sample {x} using mala(step_size=0.01) n=100 seed={i} -> "s{i}.npz"')
        elif kind == 6:
            out.append(f"# a comment line {i}")
        else:
            out.append(f'plot {x} + {y} -> "p{i}.png"')
        count += out[-1].count("\n") + 1
    return "\n".join(out) + "\n"


def best_of(repeats: int, action: Callable[[], object]) -> tuple[float, float]:
    """Best wall-clock and best CPU (process) time of ``repeats`` runs, in seconds."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        action()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main() -> None:
    _parser()  # build the LALR tables once, outside the timings
    product = product_text(10_000)
    script = script_text(2_000)
    cases = {
        f"10,000-factor product ({len(product):,} chars)": lambda: simplify(parse_expr(product)),
        f"{script.count(chr(10)):,}-line script ({len(script):,} chars)": lambda: [
            simplify(v) for v in parse(script, "bench.rrr").bindings.values() if not isinstance(v, float)
        ],
    }
    for name, action in cases.items():
        wall, cpu = best_of(5, action)
        print(f"{name}: parse + lower + simplify {wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU (best of 5)")


if __name__ == "__main__":
    main()
