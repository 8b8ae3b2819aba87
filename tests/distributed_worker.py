"""One rank of a multi-process test (``tests/test_distributed.py`` starts ``WORLD_SIZE`` of them
with torchrun's environment). ``python distributed_worker.py MODE OUT``; rank 0 saves what the
test checks to ``OUT`` (``torch.save``), every rank prints one JSON line of its own facts.

Modes: ``sample`` (one global resampling with every weight on rank 0; then reverse, MALA and SMC
on ring * bar, SMC twice with the same seed), ``fault`` (rank 1 raises during SMC).
"""

import json
import sys

import torch

import rrrdsl
from rrrdsl.errors import SamplerError
from rrrdsl.samplers.distributed import current

N = 1000
RING_BAR = rrrdsl.oracle("ring") * rrrdsl.oracle("bar")
#: the settings (the test compares them with the same settings in one process): MALA with fewer
#: steps to save time; SMC's defaults, whose samples vary less between runs than with fewer steps
SAMPLERS = {"reverse": {}, "mala": {"steps": 20}, "smc": {}}


def draw(name):
    result = rrrdsl.sample(RING_BAR, name, n=N, seed=7, progress=False, **SAMPLERS[name])
    return {"x": result.x, "log_z": result.diagnostics["log_z"]}


def resample(group):
    """One global resampling of 10 particles whose weight is all on rank 0."""
    shard = group.shard(10)
    log_w = torch.full((len(shard),), 0.0 if group.rank == 0 else -float("inf"), dtype=torch.float64)
    plan = group.resample(log_w, torch.Generator().manual_seed(0))
    ids = group.exchange(torch.arange(shard.start, shard.stop), plan)
    return {"shard": len(shard), "received": len(ids), "moved": plan.moved, "ids": ids.tolist()}


class FailingOnRank1:
    """ring * bar whose log density raises on rank 1 at level 50."""

    def __init__(self):
        self.inner = rrrdsl.compile(RING_BAR)
        self.dim, self.num_levels, self.schedule, self.has_energy = 2, self.inner.num_levels, self.inner.schedule, True

    def log_prob_and_grad(self, x, t):
        if current().rank == 1 and t == 50:
            raise SamplerError("injected failure on rank 1 at level 50")
        return self.inner.log_prob_and_grad(x, t)

    def log_prob(self, x, t):
        return self.inner.log_prob(x, t)

    def score(self, x, t):
        return self.inner.score(x, t)


def main(mode, out):
    group = current()
    facts = {"rank": group.rank, "world": group.world}
    if mode == "sample":
        facts["resample"] = resample(group)
        saved = {name: draw(name) for name in SAMPLERS}
        saved["smc again"] = draw("smc")
        facts["checksum"] = {name: float(r["x"].double().sum()) for name, r in saved.items()}
    else:
        try:
            rrrdsl.sample(FailingOnRank1(), "smc", n=200, seed=0, progress=False)
        except SamplerError as error:
            print(f"rank {group.rank}: {error.message}", file=sys.stderr, flush=True)
            sys.exit(1)
        saved = facts
    print(json.dumps(facts), flush=True)
    if group.rank == 0:
        torch.save(saved, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
