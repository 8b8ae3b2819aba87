"""``rrr bench pyro``: rrrdsl's annealed HMC against pyro's NUTS on the exact 8-Gaussian ring.

The exact 8-Gaussian ring at level 0: rrrdsl's annealed HMC over many independent chains
against pyro's ``NUTS`` (Hoffman & Gelman, 2014; one chain, its own warmup adaptation) with the
same total number of gradient evaluations and, separately, the same wall time. Writes
``pyro.md`` (prose in ``templates/pyro.md``).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable, NamedTuple, Optional

import torch

from ..lang.ir import oracle
from .common import RADIUS, format_row, markdown_table, provenance, render, ring_centers, write_report


class ChainSummary(NamedTuple):
    """Mode statistics of one sample set of the ring at level 0."""

    label: str
    draws: int
    gradients: int
    seconds: float
    modes_covered: int
    max_weight_error: float
    ess: float

    def row(self) -> dict:
        return {
            "sampler": self.label,
            "draws": self.draws,
            "gradient evaluations": self.gradients,
            "seconds": self.seconds,
            "modes covered (of 8)": self.modes_covered,
            "largest mode-weight deviation from 1/8": self.max_weight_error,
            "ESS": self.ess,
            "ESS / s": self.ess / self.seconds,
        }


def ring_summary(label: str, x: torch.Tensor, gradients: int, seconds: float, ess: float) -> ChainSummary:
    """Modes covered (weight > 1%) and the largest deviation of a mode weight from 1/8."""
    from ..metrics import mode_weights

    weights = mode_weights(x, ring_centers(), RADIUS)
    return ChainSummary(label, x.shape[0], gradients, seconds, int((weights > 0.01).sum()),
                        float((weights - 1 / 8).abs().max()), ess)


#: pyro's ESS estimator needs memory quadratic in the draws: longer chains are thinned to this
ESS_MAX_DRAWS = 2000


def chain_ess(x: torch.Tensor) -> float:
    """The smaller per-coordinate ESS of one chain ``[draws, D]`` (``pyro.ops.stats``), computed on
    the chain thinned to at most :data:`ESS_MAX_DRAWS` draws (a lower bound for the whole chain)."""
    from pyro.ops.stats import effective_sample_size

    thinned = x[:: max(1, math.ceil(x.shape[0] / ESS_MAX_DRAWS))]
    return float(effective_sample_size(thinned.double().unsqueeze(0), chain_dim=0, sample_dim=1).min())


def pyro_nuts(potential_fn: Callable, gradient_budget: Optional[int], seconds: Optional[float],
              warmup: int, seed: int) -> tuple[torch.Tensor, int, float]:
    """One pyro NUTS chain (its own step-size and mass adaptation for ``warmup`` draws), run until
    ``gradient_budget`` gradient evaluations or ``seconds`` of wall time (warmup included) are spent.

    Returns the post-warmup draws ``[M, D]``, the gradient evaluations and the wall time.
    """
    import pyro
    from pyro.infer import NUTS

    count = [0]

    def counted(params: dict) -> torch.Tensor:
        count[0] += 1
        return potential_fn(params)

    pyro.set_rng_seed(seed)
    kernel = NUTS(potential_fn=counted)
    start = time.perf_counter()
    kernel.initial_params = {"x": torch.tensor([0.5, 0.0])}
    kernel.setup(warmup)
    params, draws, step = kernel.initial_params, [], 0
    while (gradient_budget is None or count[0] < gradient_budget) and (
        seconds is None or time.perf_counter() - start < seconds
    ):
        params = kernel.sample(params)
        if step >= warmup:
            draws.append(params["x"].detach().clone())
        step += 1
    kernel.cleanup()
    elapsed = time.perf_counter() - start
    return (torch.stack(draws) if draws else torch.empty(0, 2)), count[0], elapsed


#: rrrdsl's sampler for the pyro comparison: annealed HMC, a reverse step at every level and
#: ``steps`` HMC transitions at each of the last ten levels
PYRO_RRRDSL = {"sampler": "hmc", "steps": 5}



def main(args: argparse.Namespace, command: str, seed: int = 0, warmup: int = 500) -> int:
    """Write ``pyro.md``: rrrdsl (``args.n`` chains) vs pyro NUTS at equal gradients / equal time."""
    from ..compiler import compile as compile_expr
    from ..samplers.api import sample

    n = args.n
    target = compile_expr(oracle("ring"))
    options = dict(PYRO_RRRDSL)
    result = sample(target, options.pop("sampler"), n=n, seed=seed, progress=False, **options)
    gradients = int(round(result.diagnostics["nfe"] * n))
    seconds = result.diagnostics["wall_time"]
    ours = ring_summary(f"rrrdsl annealed HMC, {n} chains", result.x, gradients, seconds, float(n))
    rows = [ours.row()]
    for label, budget, limit in (("pyro NUTS, equal gradients", gradients, None), ("pyro NUTS, equal wall time", None, seconds)):
        x, used, elapsed = pyro_nuts(target.at(0).potential_fn, budget, limit, warmup, seed)
        ess = chain_ess(x) if x.shape[0] > 3 else 0.0
        rows.append(ring_summary(label, x, used, elapsed, ess).row())
        print(format_row(rows[-1]), flush=True)
    met = ours.modes_covered == 8 and ours.max_weight_error <= 0.02
    text = render(
        "pyro",
        provenance=provenance(command),
        n=n,
        steps=PYRO_RRRDSL["steps"],
        seed=seed,
        nfe=f"{result.diagnostics['nfe']:.0f}",
        warmup=warmup,
        ess_max_draws=ESS_MAX_DRAWS,
        radius=RADIUS,
        rows=markdown_table(rows),
        verdict="met" if met else "NOT met",
        deviation=f"{ours.max_weight_error:.4f}",
    )
    path = write_report(args.out / "pyro.md", text)
    print(f"wrote {path}")
    return 0
