#!/usr/bin/env bash
# Installs a CUDA 13.0 build toolchain (nvcc, headers, cuBLAS/cuRAND/NVRTC link libraries)
# from PyPI into a local prefix, so that `cargo build --features cuda` works on a machine
# without a GPU, and prints the environment to build with.
#
# Usage:  eval "$(tools/cuda-toolchain.sh [PREFIX])"   (default PREFIX: ~/.cache/cuda13)
#         cargo build --release --features cuda
#
# The binary loads PTX at run time, so the toolkit must not be newer than the GPU machine's
# driver (CUDA 13.0 there): keep these pins. On the GPU machine, before running the binary:
#   export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/nvidia/lib64:$LD_LIBRARY_PATH
# Candle's own kernels take about 10 minutes to compile once (2 cores); keep target/ between builds.
set -euo pipefail
PREFIX="${1:-$HOME/.cache/cuda13}"
SITE="$PREFIX/site"
ROOT="$PREFIX/root"
if [ ! -e "$ROOT/lib64/stubs/libcuda.so" ]; then
  python3 -m pip install -q --target "$SITE" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 \
    nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88 >&2
  CU="$SITE/nvidia/cu13"
  mkdir -p "$ROOT/lib64/stubs"
  ln -sfn "$CU/bin" "$ROOT/bin"; ln -sfn "$CU/include" "$ROOT/include"; ln -sfn "$CU/nvvm" "$ROOT/nvvm"
  for l in cublas cublasLt nvrtc cudart; do ln -sf "$CU/lib/lib$l.so.13" "$ROOT/lib64/lib$l.so"; done
  ln -sf "$CU/lib/libcurand.so.10" "$ROOT/lib64/libcurand.so"
  # Link-time stand-in for the driver library libcuda.so.1; the real one is on the GPU machine.
  # Its symbol list comes from cudarc's driver bindings, so fetch the crate first.
  SYMS=$(cat "$HOME"/.cargo/registry/src/*/cudarc-*/src/driver/sys/mod.rs 2>/dev/null \
         | grep -oE "^ *pub unsafe fn cu[A-Za-z0-9_]+" | sed 's/.*fn //' | sort -u || true)
  if [ -z "$SYMS" ]; then
    echo "cuda-toolchain: run 'cargo fetch' in the workspace (candle-core with the cuda feature) first" >&2
    exit 1
  fi
  printf 'void %s(void){}\n' $SYMS > "$PREFIX/custub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib64/stubs/libcuda.so" "$PREFIX/custub.c"
fi
echo "export CUDA_ROOT='$ROOT' CUDA_HOME='$ROOT' CUDA_PATH='$ROOT' CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90} PATH='$ROOT/bin':\$PATH"
echo "cuda-toolchain: ready at $ROOT (nvcc 13.0)" >&2
