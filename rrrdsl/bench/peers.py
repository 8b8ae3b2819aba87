"""``rrr bench peers``: rrrdsl's samplers against NumPyro and BlackJAX at equal gradient budgets.

The level-0 targets of three compositions of the 2D table
(:data:`rrrdsl.bench.table.COMPOSITIONS`: the product ``ring * bar``, the CFG-shaped power and
the negation) are ported to JAX from their compiled graphs
(:func:`rrrdsl.bench.jax_targets.jax_log_density`) and sampled by the peers of
:mod:`rrrdsl.bench.jax_peers` and by ``rrrdsl.sample`` (its default sampler, HMC and MALA), each
with ``N`` particles, at most :data:`BUDGET` gradient evaluations per particle, several seeds.
Samples are scored as the table scores them (MMD over the exact-vs-exact floor, mode-weight
error where the ring's modes apply). A jitted JAX run is timed twice: the first call includes
compilation, the second is the run alone. Writes ``peers.md`` (prose in ``templates/peers.md``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata
from typing import Any, Callable, NamedTuple, Optional

import torch

from ..errors import RrrdslError
from .common import BANDWIDTH, markdown_table, mean_se, provenance, render, write_report

#: gradient evaluations per particle every sampler may spend
BUDGET = 1000
#: the table's compositions that the benchmark ports (table.COMPOSITIONS names)
TARGETS = ("product", "CFG-shaped", "negation")


class Setting(NamedTuple):
    """What one benchmark run covers (``samplers``: the labels of :data:`RRRDSL` and
    :func:`peers` that run, all when empty)."""

    n: int
    seeds: tuple[int, ...]
    targets: tuple[str, ...]
    samplers: tuple[str, ...] = ()


FULL = Setting(2000, (0, 1, 2), TARGETS)
#: the smoke test: one target, one seed, N = 200, one rrrdsl sampler and three peers (compiling
#: every peer takes about a minute on a loaded 2-core machine)
QUICK = Setting(200, (0,), ("product",), ("rrrdsl default (`sample(expr)`)", "NumPyro NUTS (vectorized chains)",
                                          "BlackJAX MALA (vmapped chains)", "BlackJAX adaptive tempered SMC, HMC moves"))


class Run(NamedTuple):
    """One sampler on one target with one seed."""

    x: torch.Tensor
    gradients: float  # mean per particle
    seconds: float  # the run alone (JAX: the second call of the jitted function)
    compile_seconds: Optional[float]  # JAX: first call minus second call


#: rrrdsl's samplers: label -> ``rrrdsl.sample`` sampler name (None: its default)
RRRDSL = {"rrrdsl default (`sample(expr)`)": None, "rrrdsl `hmc`": "hmc", "rrrdsl `mala`": "mala"}


def rrrdsl_run(target: Any, sampler: Optional[str], n: int, seed: int) -> Run:
    """``rrrdsl.sample(target, sampler, n=n, seed=seed)`` with its defaults."""
    from ..samplers.api import sample

    result = sample(target, sampler, n=n, seed=seed, progress=False)
    return Run(result.x, float(result.diagnostics["nfe"]), float(result.diagnostics["wall_time"]), None)


def peers() -> dict[str, Callable]:
    """The JAX peers: label -> ``(log_density, key, x0, budget) -> (x, gradients)``."""
    from . import jax_peers

    return {
        "NumPyro NUTS (vectorized chains)": jax_peers.numpyro_nuts,
        "BlackJAX MALA (vmapped chains)": jax_peers.mcmc("mala"),
        "BlackJAX HMC (vmapped chains)": jax_peers.mcmc("hmc"),
        "BlackJAX adaptive tempered SMC, HMC moves": jax_peers.tempered_smc("hmc"),
        "BlackJAX adaptive tempered SMC, MALA moves": jax_peers.tempered_smc("mala"),
    }


def jitted(peer: Callable, log_density: Callable) -> Callable:
    """A peer's run at :data:`BUDGET`, jitted: ``(key, x0) -> (x, gradients)``."""
    import jax

    return jax.jit(lambda key, x0: peer(log_density, key, x0, BUDGET))


def jax_call(run: Callable, n: int, seed: int) -> Run:
    """One timed call of a jitted run from ``n`` starting points ``N(0, I)`` drawn with ``seed``."""
    import jax
    import numpy as np

    key = jax.random.PRNGKey(seed)
    x0 = jax.random.normal(jax.random.fold_in(key, 1), (n, 2))
    start = time.perf_counter()
    x, gradients = jax.block_until_ready(run(key, x0))
    seconds = time.perf_counter() - start
    return Run(torch.from_numpy(np.asarray(x, dtype=np.float64)), float(np.mean(gradients)), seconds, None)


def jax_runs(peer: Callable, log_density: Callable, n: int, seeds: tuple[int, ...]) -> list[Run]:
    """A peer from ``N(0, I)`` starting points, jitted once, run for every seed; the first seed
    runs twice: its first call includes compilation, the second does not."""
    run = jitted(peer, log_density)
    first = jax_call(run, n, seeds[0])
    runs = [jax_call(run, n, seed) for seed in seeds]
    runs[0] = runs[0]._replace(compile_seconds=first.seconds - runs[0].seconds)
    return runs


def versions() -> str:
    """One markdown line with the versions of the peer packages."""
    names = ("jax", "jaxlib", "numpyro", "blackjax")
    return "- " + ", ".join(f"{name} {metadata.version(name)}" for name in names) + f", python {platform.python_version()}"


def _row(composition: Any, label: str, runs: list[Run], truth: Any) -> dict:
    from .table import metric_row

    metrics = [metric_row(r.x.to(torch.float64), truth) for r in runs]
    modes = [m.mode_weight_error for m in metrics]
    compile_seconds = [r.compile_seconds for r in runs if r.compile_seconds is not None]
    return {
        "target": composition.name,
        "sampler": label,
        "MMD/floor": mean_se([m.mmd_over_floor for m in metrics]),
        "mode-weight err": None if modes[0] is None else mean_se(modes),
        "gradients / particle": max(r.gradients for r in runs),
        "wall s": mean_se([r.seconds for r in runs]),
        "compile s": mean_se(compile_seconds) if compile_seconds else None,
    }


def benchmark(setting: Setting, log: Callable[[str], None] = print) -> list[dict]:
    """Every sampler on every target of ``setting``: one row per (target, sampler)."""
    from ..compiler import compile as compile_expr
    from .common import format_row
    from .jax_targets import jax_log_density
    from .table import COMPOSITIONS, make_truth, model_expr

    rows = []
    for composition in (c for c in COMPOSITIONS if c.name in setting.targets):
        expr = model_expr(composition, "exact")
        target = compile_expr(expr)
        log_density = jax_log_density(target)
        truth = make_truth(expr, setting.n, composition.has_modes)
        for label, sampler in RRRDSL.items():
            if setting.samplers and label not in setting.samplers:
                continue
            runs = [rrrdsl_run(target, sampler, setting.n, seed) for seed in setting.seeds]
            rows.append(_row(composition, label, runs, truth))
            log(format_row(rows[-1]))
        for label, peer in peers().items():
            if setting.samplers and label not in setting.samplers:
                continue
            runs = jax_runs(peer, log_density, setting.n, setting.seeds)
            rows.append(_row(composition, label, runs, truth))
            log(format_row(rows[-1]))
    return rows


def peers_extra(bench: str) -> bool:
    """Whether JAX and the peers import (single-threaded); if not, one line on stderr naming ``bench``."""
    from .jax_targets import import_jax

    try:
        import_jax()
    except RrrdslError as error:
        print(f"rrr bench {bench}: {error.message}", file=sys.stderr)
        return False
    return True


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``peers.md``; without the ``peers`` extra, print one line and return 2."""
    if not peers_extra("peers"):
        return 2
    from .table import COMPOSITIONS, model_expr

    setting = QUICK if args.quick else FULL
    rows = benchmark(setting)
    targets = [f"- {c.name}: `{model_expr(c, 'exact')}`" for c in COMPOSITIONS if c.name in setting.targets]
    text = render(
        "peers",
        provenance=provenance(command),
        versions=versions(),
        targets=targets,
        n=setting.n,
        seeds=", ".join(map(str, setting.seeds)),
        budget=BUDGET,
        bandwidth=BANDWIDTH,
        rows=markdown_table(rows),
    )
    path = write_report(args.out / "peers.md", text)
    print(f"wrote {path}")
    return 0
