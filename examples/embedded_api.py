"""The embedded API: the same composition as examples/ring_bar.rrr, built with Python operators.

    python examples/embedded_api.py [OUT_DIR]

Builds ``oracle("ring") * oracle("bar")`` in Python (the same energy graph as the .rrr text),
samples it with reverse diffusion and with annealed MALA, measures both against exact samples
(MMD, RBF bandwidth 0.05) and plots them. ``RRR_N_SCALE`` scales the number of samples
(the tests run this file with a small N).
"""

import os
import sys
from pathlib import Path

import rrrdsl
from rrrdsl import oracle, plot

N = max(16, round(1000 * float(os.environ.get("RRR_N_SCALE", "1"))))
out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")

p = oracle("ring") * oracle("bar")
assert p == rrrdsl.parse_expr('oracle("ring") * oracle("bar")')  # text and Python: one graph
print("graph:", p)

target = rrrdsl.compile(p)  # checks, then the evaluation plan
exact = rrrdsl.truth.exact_samples(p, N, seed=1)  # exact ground truth for oracle compositions
results = []
for sampler in ("reverse", "mala"):
    result = rrrdsl.sample(target, sampler=sampler, n=N, seed=0, progress=False, snapshots=(99, 49, 9, 0))
    mmd = rrrdsl.metrics.mmd(result.x.double(), exact, bandwidth=0.05)
    print(f"{sampler:8s} NFE/particle {result.diagnostics['nfe']:6.0f}  MMD to exact {mmd:.4f}")
    results.append(result)

for suffix, figure in plot.figures(p, target, results, label="p").items():
    print("wrote", plot.save_figure(figure, out / f"embedded{suffix}.png"))
