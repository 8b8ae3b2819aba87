#!/usr/bin/env bash
# GPU checks for a machine with CUDA (not run on the CPU-only development machine):
#   1. the test suite's device tests (tests/test_device.py: skipped without CUDA) and the
#      two-process (gloo) tests, with their exit codes;
#   2. CUDA timings: ring * bar with N = 10^6 (MALA and SMC defaults) on one GPU, and under
#      torchrun with one process per GPU (NCCL; a world of one where there is one GPU);
#   3. the diffusers adapter's tiny class-conditional UNet (8x8x1) under reverse diffusion on one
#      GPU, float32 and float16 (needs the diffusers extra);
#   4. the shipped objects models (trained UNets) in float32 and float16 on the GPU: how often the
#      object lands in its cell under reverse diffusion (rrrdsl.zoo.objects.quality).
# Writes benchmarks/results/gpu.md. Usage: bash benchmarks/gpu_check.sh  (from the repository root)
# Without CUDA it stops at once with exit 1 and says so (nothing is written).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/gpu.md
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "CUDA is not available: nothing to check")'

DEVICE_TESTS=0; "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_device.py > "$TMP/device-tests.txt" 2>&1 || DEVICE_TESTS=$?
DISTRIBUTED_TESTS=0; "$PY" -m pytest -q -p no:cacheprovider tests/test_distributed.py > "$TMP/distributed-tests.txt" 2>&1 || DISTRIBUTED_TESTS=$?

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

cat > "$TMP/unet.py" <<'PYEOF'
import json, sys, tempfile, time
import diffusers, torch
import rrrdsl

folder = tempfile.mkdtemp()
torch.manual_seed(0)
unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
                             down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=8,
                             num_class_embeds=11)
diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
rows = []
for dtype in ("float32", "float16"):
    name = f"tiny_{dtype}"
    rrrdsl.register_diffusers(name, folder, levels=50, device="cuda", dtype=dtype)
    expr = rrrdsl.model(name, label=3) * rrrdsl.model(name, label=5) / rrrdsl.model(name) ** 0.5
    rrrdsl.sample(expr, "reverse", n=64, seed=0, device="cuda", progress=False)  # warm-up
    for n in (1_000, 10_000):
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = rrrdsl.sample(expr, "reverse", n=n, seed=0, device="cuda", progress=False)
        torch.cuda.synchronize()
        rows.append({"dtype": dtype, "n": n, "seconds": time.perf_counter() - start, "nfe": result.diagnostics["nfe"],
                     "finite": bool(torch.isfinite(result.x).all())})
print(json.dumps(rows))
PYEOF
cat > "$TMP/objects.py" <<'PYEOF'
import json, sys
import rrrdsl
from rrrdsl.zoo.objects.loading import FOLDERS, LEVELS, SHIPPED_DIR
from rrrdsl.zoo.objects.quality import placement

device, n = sys.argv[1], int(sys.argv[2])
rows = []
for param, folder in FOLDERS.items():
    for dtype in ("float32", "float16") if device == "cuda" else ("float32",):
        name = f"objects_{param}_{dtype}"
        rrrdsl.register_diffusers(name, SHIPPED_DIR / folder, levels=LEVELS, device=device, dtype=dtype)
        per_cell = placement(name, n=n, device=device, progress=False)
        mean = float(per_cell.mean())
        rows.append({"model": param, "dtype": dtype, "n_per_cell": n, "placement": round(mean, 4),
                     "standard_error": round((mean * (1 - mean) / (16 * n)) ** 0.5, 4), "worst_cell": round(float(per_cell.min()), 4)})
print(json.dumps(rows))
PYEOF
"$PY" "$TMP/unet.py" > "$TMP/unet.json" 2>&1 || true
"$PY" "$TMP/objects.py" cuda 256 > "$TMP/objects.json" 2>&1 || true
"$PY" "$TMP/time.py" > "$TMP/one.json" 2>&1 || true
# one process per GPU under torchrun: the NCCL path (with one GPU, a world of one still runs NCCL's collectives)
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
"$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" "$TMP/time.py" > "$TMP/all.json" 2>&1 || true

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
    echo "tests/test_device.py (exit $DEVICE_TESTS), tests/test_distributed.py (exit $DISTRIBUTED_TESTS):"
    echo
    echo '```'; tail -n 5 "$TMP/device-tests.txt"; tail -n 3 "$TMP/distributed-tests.txt"; echo '```'
    echo
    echo "## ring * bar, N = 10^6 (wall time of rrrdsl.sample after a warm-up)"
    echo
    echo '```'; tail -n 5 "$TMP/one.json"; echo "under torchrun, $GPUS process(es):"; tail -n 5 "$TMP/all.json"; echo '```'
    echo
    echo "## The diffusers adapter: a tiny UNet, 3 leaves, reverse diffusion over 50 levels"
    echo
    echo '```'; tail -n 5 "$TMP/unet.json"; echo '```'
    echo
    echo "## The shipped objects models (issue 16) on the GPU, float32 and float16: placement under reverse diffusion, 256 samples per cell"
    echo
    echo '```'; tail -n 5 "$TMP/objects.json"; echo '```'
} > "$OUT"
echo "wrote $OUT"
