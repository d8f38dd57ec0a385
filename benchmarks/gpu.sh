#!/usr/bin/env bash
# One GPU, under 8 minutes: Jacobian routes, throughput, zoo step control, peers, a small full run.
# Usage (repository root, after `make install` with a CUDA build of torch): bash benchmarks/gpu.sh
set -euo pipefail
export FRMARGIN_MIRROR="${FRMARGIN_MIRROR:-../shared/assets}"
PY="${PY:-.venv/bin/python}"
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_device.txt"
# 1. Jacobian rows on CUDA: per-row backward loop vs vmapped one-hot cotangents (which is faster?)
timeout 60 "$PY" - <<'PY' | tee "$OUT/gpu_jacobian_routes.txt"
import time, torch
from frmargin.fisher import logits_and_jacobian
from frmargin.models import load_model
m = load_model("resnet20", progress=False).cuda().eval()
for B in (16, 64, 256):
    x = torch.rand(B, 3, 32, 32, device="cuda")
    for route in ("loop", "vmap"):
        logits_and_jacobian(m, x, route=route); torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            logits_and_jacobian(m, x, route=route)
        torch.cuda.synchronize()
        print(f"B={B} route={route} {(time.perf_counter() - t0) / 5 * 1e3:.2f} ms per Jacobian")
PY
# 2. throughput vs batch size, 3. step control across the zoo, 4. peers (same images)
timeout 120 "$PY" benchmarks/bench_throughput.py --size full --set batch_sizes=16,64,256 --out "$OUT/throughput.json" || echo "throughput failed"
timeout 120 "$PY" benchmarks/bench_zoo_steps.py --size full --out "$OUT/zoo_steps.json" || echo "zoo failed"
timeout 90 "$PY" benchmarks/bench_peers.py --size full --set paper=False --out "$OUT/peers.json" || echo "peers failed"
# 5. a small full run (official split when installed) with its report
timeout 60 .venv/bin/frmargin run --images 40 --device cuda --out "$OUT/gpu_run" --no-progress || echo "run failed"
