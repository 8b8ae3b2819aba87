#!/usr/bin/env bash
# GPU checks for a machine with CUDA (not run on the CPU-only development machine):
#   1. the test suite's device tests (those that name cuda) and the two-process (gloo) tests;
#   2. CUDA timings: ring * bar with N = 10^6 (MALA and SMC defaults) on one GPU, and under
#      torchrun with one process per GPU (NCCL) when there are several;
# Not yet: the diffusers adapter's tiny UNet (issue 15, on another branch when this was written).
# Writes benchmarks/results/gpu.md. Usage: bash benchmarks/gpu_check.sh  (from the repository root)
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/gpu.md
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "CUDA is not available: nothing to check")'

"$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_api.py tests/test_run.py > "$TMP/device-tests.txt" 2>&1 || true
"$PY" -m pytest -q -p no:cacheprovider tests/test_distributed.py > "$TMP/distributed-tests.txt" 2>&1 || true

cat > "$TMP/time.py" <<'PYEOF'
import json, sys, time
import torch
import rrrdsl
from rrrdsl.samplers.distributed import current

expr = rrrdsl.oracle("ring") * rrrdsl.oracle("bar")
group = current()
rows = []
for sampler in ("mala", "smc"):
    rrrdsl.sample(expr, sampler, n=1000 * group.world, seed=0, device="cuda", progress=False)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = rrrdsl.sample(expr, sampler, n=1_000_000, seed=0, device="cuda", progress=False)
    torch.cuda.synchronize()
    rows.append({"sampler": sampler, "processes": group.world, "seconds": time.perf_counter() - start,
                 "nfe": result.diagnostics["nfe"], "log_z": result.diagnostics["log_z"]})
if group.rank == 0:
    print(json.dumps(rows))
PYEOF
"$PY" "$TMP/time.py" > "$TMP/one.json"
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
if [ "$GPUS" -gt 1 ]; then
    "$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" "$TMP/time.py" > "$TMP/all.json"
else
    echo '[]' > "$TMP/all.json"
fi

{
    echo "# GPU checks"
    echo
    echo "- command: \`bash benchmarks/gpu_check.sh\`"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- GPUs: $("$PY" -c 'import torch; print(", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))')"
    echo "- torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
    echo
    echo "## Device tests"
    echo
    echo '```'; tail -n 3 "$TMP/device-tests.txt"; tail -n 3 "$TMP/distributed-tests.txt"; echo '```'
    echo
    echo "## ring * bar, N = 10^6 (wall time of rrrdsl.sample after a warm-up)"
    echo
    echo '```'; cat "$TMP/one.json" "$TMP/all.json"; echo '```'
} > "$OUT"
echo "wrote $OUT"
