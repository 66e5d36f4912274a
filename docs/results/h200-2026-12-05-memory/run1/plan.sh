#!/usr/bin/env bash
# Call 1: CUDA smoke test of the planner on tiny, then klein-4B and klein-9B under budgets.
set -uo pipefail
mkdir -p /tmp/v
xz -dc device/veetance.xz > /tmp/v/veetance && chmod +x /tmp/v/veetance
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
V=/tmp/v/veetance
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=$PWD/.site:$PWD/bench
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/gpu.txt 2>&1
free -g > $OUT/free.txt; nproc >> $OUT/free.txt
S=$(date +%s); t() { echo "$1 $(( $(date +%s) - S )) s" >> $OUT/times.txt; }
# pinned host-to-device bandwidth, for the overlap figures
python3 - > $OUT/h2d.txt 2>&1 <<'PY'
import torch, time
x = torch.empty(2 << 30, dtype=torch.uint8).pin_memory()
y = torch.empty_like(x, device="cuda")
for _ in range(2): y.copy_(x, non_blocking=True)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(5): y.copy_(x, non_blocking=True)
torch.cuda.synchronize(); dt = time.perf_counter() - t
print(f"pinned H2D {5 * 2 / dt:.1f} GiB/s")
PY
# 0. the CUDA model tests (streamed blocks, the hard limit), one at a time
xz -dc device/cuda-test.xz > /tmp/v/cuda-test && chmod +x /tmp/v/cuda-test
( cd models && timeout 120 /tmp/v/cuda-test --test-threads 1 streamed_blocks allocations_past_the_vram_limit ) > $OUT/cuda-test.log 2>&1; echo "cuda-test rc $?" >> $OUT/times.txt
# 1. tiny on CUDA: no budget, then budgets that stream
for b in none 300MiB 262MiB 259MiB; do
  if [ $b = none ]; then B=""; else B="--vram-budget $b"; fi
  timeout 60 $V run workflows/txt2img.ron --device cuda --no-cache --json --out $OUT/tiny-$b $B > $OUT/tiny-$b.jsonl 2> $OUT/tiny-$b.err
  echo "tiny $b rc $?" >> $OUT/times.txt
done
python3 - >> $OUT/times.txt 2>&1 <<'PY'
import os
from PIL import Image
base = None
for b in ["none", "300MiB", "262MiB", "259MiB"]:
    p = os.path.join(os.environ["OUT"], f"tiny-{b}", "txt2img.png")
    if not os.path.exists(p): print("tiny", b, "no picture"); continue
    im = Image.open(p).convert("RGB").tobytes()
    base = base or im
    print("tiny", b, "same as no budget:", im == base)
PY
t tiny
# 2. klein-9B, and the golden workflow on it under 16 GiB
timeout 170 python3 bench/memory_plan.py write /tmp/k9 --model klein-9b > $OUT/write9.log 2>&1; t write9
timeout 200 python3 bench/memory_plan.py ours --veetance $V --dir /tmp/k9 --model klein-9b --images 3 --out-dir /tmp/o9 --out $OUT/ours.jsonl > /dev/null 2> $OUT/ours9.log; t ours9
( nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > $OUT/golden9-smi.txt & P=$!
  timeout 90 $V run workflows/golden.ron --device cuda --no-cache --out $OUT/golden9 --vram-budget 16GiB \
    --set load.model=/tmp/k9/flux-2-klein-9b.safetensors --set load.text_encoder=/tmp/k9/qwen3.safetensors \
    --set load.vae=/tmp/k9/flux2-vae.safetensors --set compile.width=1024 --set compile.height=1024 \
    --set sample.width=1024 --set sample.height=1024 --set sample.steps=4 > $OUT/golden9.log 2>&1
  echo "golden9 rc $?" >> $OUT/times.txt; kill $P ) ; t golden9
sort -n $OUT/golden9-smi.txt | tail -1 > $OUT/golden9-peak.txt
rm -rf /tmp/k9
# 3. klein-4B
timeout 120 python3 bench/memory_plan.py write /tmp/k4 --model klein-4b > $OUT/write4.log 2>&1; t write4
timeout 150 python3 bench/memory_plan.py ours --veetance $V --dir /tmp/k4 --model klein-4b --images 3 --out-dir /tmp/o4 --out $OUT/ours.jsonl > /dev/null 2> $OUT/ours4.log; t ours4
