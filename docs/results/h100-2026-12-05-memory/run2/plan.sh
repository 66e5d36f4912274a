#!/usr/bin/env bash
# Call 2: the memory planner after the Decode fix. Baselines (unlimited) in the same call.
set -uo pipefail
# Scratch space on the device machine: the binary, the random checkpoints, the outputs.
W=$(mktemp -d)
mkdir -p $W/v
xz -dc device/veetance.xz > $W/v/veetance && chmod +x $W/v/veetance
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
V=$W/v/veetance
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=$PWD/.site:$PWD/bench PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/gpu.txt 2>&1
S=$(date +%s); t() { echo "$1 $(( $(date +%s) - S )) s" >> $OUT/times.txt; }
left() { [ $(( $(date +%s) - S )) -lt $1 ]; }
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
t h2d
# 1. klein-9B: the golden workflow under 16 GiB (the issue's done-when), then unlimited vs 16 GiB
timeout 200 python3 bench/memory_plan.py write $W/k9 --model klein-9b > $OUT/write9.log 2>&1; t write9
( nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > $OUT/golden9-smi.txt & P=$!
  timeout 100 $V run workflows/golden.ron --device cuda --no-cache --out $OUT/golden9 --vram-budget 16GiB \
    --set load.model=$W/k9/flux-2-klein-9b.safetensors --set load.text_encoder=$W/k9/qwen3.safetensors \
    --set load.vae=$W/k9/flux2-vae.safetensors --set compile.width=1024 --set compile.height=1024 \
    --set sample.width=1024 --set sample.height=1024 --set sample.steps=4 > $OUT/golden9.log 2>&1
  echo "golden9 rc $?" >> $OUT/times.txt; kill $P ) ; t golden9
sort -n $OUT/golden9-smi.txt | tail -1 > $OUT/golden9-peak.txt
rm -f $OUT/golden9/*.psd
left 330 && timeout 110 python3 bench/memory_plan.py ours --veetance $V --dir $W/k9 --model klein-9b --budgets unlimited,16GiB --images 3 --out-dir $W/o9 --out $OUT/ours.jsonl > /dev/null 2> $OUT/ours9.log; t ours9
rm -rf $W/k9 $W/o9
# 2. klein-4B
left 400 && timeout 120 python3 bench/memory_plan.py write $W/k4 --model klein-4b > $OUT/write4.log 2>&1; t write4
left 430 && timeout 100 python3 bench/memory_plan.py ours --veetance $V --dir $W/k4 --model klein-4b --budgets unlimited,16GiB,12GiB,8GiB --images 3 --out-dir $W/o4 --out $OUT/ours.jsonl > /dev/null 2> $OUT/ours4.log; t ours4
# 3. diffusers under the same caps (klein-4B), as time allows
left 480 && timeout $(( 585 - ($(date +%s) - S) )) python3 bench/memory_plan.py peers --model klein-4b --modes group,model --caps 16,8 --images 2 --budget-s 80 --out $OUT/peers.jsonl > $OUT/peers.log 2>&1; t peers
python3 bench/memory_plan.py report $OUT/ours.jsonl $OUT/peers.jsonl > $OUT/report.md 2>&1
