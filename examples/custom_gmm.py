"""A custom composition: your own Gaussian mixture and box, composed with a named oracle.

    python examples/custom_gmm.py [OUT_DIR]

``gmm(means, std, weights)`` and ``box(low, high)`` are exact oracles like the named ones, so
the composition has exact ground truth, SMC's log Z can be checked against the grid, and the
plot's contours are the true density. ``RRR_N_SCALE`` scales the number of samples.
"""

import math
import os
import sys
from pathlib import Path

import rrrdsl
from rrrdsl import box, gmm, oracle, plot

N = max(16, round(1000 * float(os.environ.get("RRR_N_SCALE", "1"))))
out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")

# three clusters on a line, the middle one heavy; keep the part inside a vertical strip
clusters = gmm(means=[[-0.6, 0.0], [0.0, 0.0], [0.6, 0.0]], std=[0.1, 0.15, 0.1], weights=[1, 2, 1])
strip = box(low=[-0.8, -0.3], high=[0.1, 0.3])
p = clusters * strip + 0.5 * oracle("ring_right")  # a product, then a weighted mixture
print("graph:", p)

target = rrrdsl.compile(p)
result = rrrdsl.sample(target, sampler="smc", n=N, seed=0, progress=False, snapshots=(99, 20, 5, 0))
d = result.diagnostics
print(f"smc: NFE/particle {d['nfe']:.0f}, log Z estimate {d['log_z']:.3f}")

# the exact log normalising constant of the unnormalised level-0 density on the truth grid
grid = rrrdsl.truth.grid(p, 0)
log_p = target.log_prob(grid.points().float(), 0).double()
log_z = float(log_p.logsumexp(0)) + math.log(grid.cell_area)
print(f"exact log Z on the grid {log_z:.3f}")

for suffix, figure in plot.figures(p, target, [result], label="p").items():
    print("wrote", plot.save_figure(figure, out / f"custom_gmm{suffix}.png"))
