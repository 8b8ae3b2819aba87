"""One rank of a multi-process test (``tests/test_distributed.py`` starts ``WORLD_SIZE`` of them
with torchrun's environment).

``python distributed_worker.py sample OUT``: one global resampling with every weight on rank 0;
then reverse, MALA and SMC on ring * bar, SMC twice with the same seed and once with a pilot
walk. Rank 0 saves what the
test checks to ``OUT`` (``torch.save``); every rank prints one JSON line of its own facts (with
the rows of each sample it got back, their sum and the NFE).

``python distributed_worker.py run FAULT DIR``: ``rrr run --out DIR`` of a two-statement script on
ring * bar (SMC, then reverse diffusion) where rank 1's target misbehaves the first time it is
evaluated at a level at most :data:`LEVEL` (:data:`FAULTS`: raise, kill itself, hang, run out of
memory, return NaN); the exit code is ``rrr run``'s.
"""

import json
import os
import signal
import sys
import time

import torch

import rrrdsl
from rrrdsl.errors import SamplerError
from rrrdsl.samplers.distributed import current

N = 1000
RING_BAR = rrrdsl.oracle("ring") * rrrdsl.oracle("bar")
#: the settings (the test compares them with the same settings in one process): MALA with fewer
#: steps to save time; SMC's defaults, whose samples vary less between runs than with fewer steps
SAMPLERS = {"reverse": {}, "mala": {"steps": 20}, "smc": {}}
#: particles of the pilot walk of SMC's third run (``pilot``), sharded like N
PILOT = 301


def draw(name, **options):
    result = rrrdsl.sample(RING_BAR, name, n=N, seed=7, progress=False, **SAMPLERS[name], **options)
    return {"x": result.x, "log_z": result.diagnostics["log_z"], "nfe": result.diagnostics["nfe"]}


def resample(group):
    """One global resampling of 10 particles whose weight is all on rank 0."""
    shard = group.shard(10)
    log_w = torch.full((len(shard),), 0.0 if group.rank == 0 else -float("inf"), dtype=torch.float64)
    plan = group.resample(log_w, torch.Generator().manual_seed(0))
    ids = group.exchange(torch.arange(shard.start, shard.stop), plan)
    return {"shard": len(shard), "received": len(ids), "moved": plan.moved, "ids": ids.tolist()}


LEVEL = 50
#: what rank 1 does: ``hang`` sleeps for ``RRR_TEST_HANG`` seconds (longer than the group's
#: timeout); ``nan`` poisons the scores of the reverse diffusion (the second statement)
FAULTS = {
    "raise": lambda: _raise(SamplerError("injected failure on rank 1")),
    "kill": lambda: os.kill(os.getpid(), signal.SIGKILL),
    "hang": lambda: time.sleep(float(os.environ["RRR_TEST_HANG"])),
    "memory": lambda: _raise(MemoryError("injected: cannot allocate 8 GiB")),
}
SCRIPT = """p = oracle("ring") * oracle("bar")
sample p using smc(steps=2) n=200 seed=0 -> "smc.npz"
sample p using reverse n=200 seed=0 -> "reverse.npz"
"""


def _raise(error):
    raise error


def misbehave(fault):
    """Make rank 1's compiled targets do ``fault`` once, at the first level ``<= LEVEL``."""
    from rrrdsl.compiler.target import AnnealedTarget

    done = []
    log_prob_and_grad, score = AnnealedTarget.log_prob_and_grad, AnnealedTarget.score

    def faulty_log_prob_and_grad(self, x, t):
        if not done and isinstance(t, int) and t <= LEVEL and fault in FAULTS:
            done.append(t)
            FAULTS[fault]()
        return log_prob_and_grad(self, x, t)

    def nan_score(self, x, t):
        return torch.full_like(x, float("nan")) if t == 1 else score(self, x, t)

    if current().rank == 1:
        AnnealedTarget.log_prob_and_grad = faulty_log_prob_and_grad
        if fault == "nan":
            AnnealedTarget.score = nan_score


def run(fault, out):
    from rrrdsl.cli import main as rrr

    misbehave(fault)
    with open("s.rrr", "w") as script:
        script.write(SCRIPT)
    sys.exit(rrr(["run", "s.rrr", "--out", out, "--quiet", "--distributed"]))


def sample(out):
    group = current()
    facts = {"rank": group.rank, "world": group.world, "resample": resample(group)}
    saved = {name: draw(name) for name in SAMPLERS}
    saved["smc again"] = draw("smc")
    saved["smc pilot"] = draw("smc", pilot=PILOT)  # every rank replays the path of the pilot walk
    facts["rows"] = {name: len(r["x"]) for name, r in saved.items()}
    facts["checksum"] = {name: float(r["x"].double().sum()) for name, r in saved.items()}
    facts["nfe"] = {name: r["nfe"] for name, r in saved.items()}
    print(json.dumps(facts), flush=True)
    if group.rank == 0:
        torch.save(saved, out)


if __name__ == "__main__":
    {"sample": sample, "run": run}[sys.argv[1]](*sys.argv[2:])
