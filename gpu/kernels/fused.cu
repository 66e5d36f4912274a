// Fused elementwise kernels for the FLUX.2 transformer blocks (the "Compile" path).
//
// Each replaces a chain of candle ops that would each read and write the whole activation:
// - modulate:      (1 + scale) · LayerNorm(x) + shift        (LayerNorm without affine)
// - gate_residual: x + gate · y
// - swiglu:        silu(a) · b for the two halves of each row
// - qk_norm_rope:  RMSNorm of q and k per head, interleaved RoPE, and the [B, L, H, D] layout
//                  attention reads (v is copied alongside), for one or two token ranges.
// - fp8_decode:    FP8 weight bytes (E4M3 or E5M2) times per-row scales, to the compute type
// All arithmetic is f32; results are rounded once to the storage type.

#include "common.cuh"
#include <cuda_fp8.h>

namespace {

// Block-wide sum for a 256-thread block.
__device__ __forceinline__ float block_sum(float x, float* red) {
  x = vt::warp_sum(x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // `red` may still be read by a previous reduction
  if (lane == 0) red[warp] = x;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < 8; ++w) total += red[w];
  return total;
}

// One block (256 threads) per row. x: rows of `c` elements, row r of batch r / rows_per_batch at
// x + (r / rpb) * x_sb + (r % rpb) * x_sl; shift/scale: [B, c] with batch stride mod_sb.
template <typename T>
__device__ void modulate(const T* __restrict__ x, const T* __restrict__ shift,
                         const T* __restrict__ scale, T* __restrict__ out, int rows_per_batch,
                         int c, long long x_sb, long long x_sl, long long mod_sb, float eps) {
  __shared__ float red[8];
  const int row = blockIdx.x;
  const int b = row / rows_per_batch, l = row % rows_per_batch;
  const T* xr = x + b * x_sb + l * x_sl;
  T* orow = out + static_cast<long long>(row) * c;
  float sum = 0.f;
  for (int i = threadIdx.x; i < c; i += blockDim.x) sum += vt::Io<T>::load(xr + i);
  const float mean = block_sum(sum, red) / static_cast<float>(c);
  float var = 0.f;
  for (int i = threadIdx.x; i < c; i += blockDim.x) {
    const float d = vt::Io<T>::load(xr + i) - mean;
    var += d * d;
  }
  const float rstd = rsqrtf(block_sum(var, red) / static_cast<float>(c) + eps);
  const T* sh = shift + b * mod_sb;
  const T* sc = scale + b * mod_sb;
  for (int i = threadIdx.x; i < c; i += blockDim.x) {
    const float n = (vt::Io<T>::load(xr + i) - mean) * rstd;
    vt::Io<T>::store(orow + i, n * (1.f + vt::Io<T>::load(sc + i)) + vt::Io<T>::load(sh + i));
  }
}

// out[b, l, i] = x[b, l, i] + gate[b, i] · y[b, l, i]; y and out contiguous [B, L, c].
// Grid: (ceil(c / blockDim), ≤ 65535 row blocks looping over the rows): 32-bit index math.
template <typename T>
__device__ void gate_residual(const T* __restrict__ x, const T* __restrict__ y,
                              const T* __restrict__ gate, T* __restrict__ out, int rows_per_batch,
                              int c, long long x_sb, long long x_sl, long long gate_sb, int rows) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= c) return;
  for (int row = blockIdx.y; row < rows; row += gridDim.y) {
    const int b = row / rows_per_batch, l = row - b * rows_per_batch;
    const float xv = vt::Io<T>::load(x + b * x_sb + l * x_sl + col);
    const float g = vt::Io<T>::load(gate + b * gate_sb + col);
    const long long i = static_cast<long long>(row) * c + col;
    vt::Io<T>::store(out + i, xv + g * vt::Io<T>::load(y + i));
  }
}

// out[r, i] = silu(x[r, i]) · x[r, f + i]; x rows have stride x_sl, out is [rows, f].
template <typename T>
__device__ void swiglu(const T* __restrict__ x, T* __restrict__ out, int f, long long x_sl,
                       int rows) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= f) return;
  for (int row = blockIdx.y; row < rows; row += gridDim.y) {
    const T* xr = x + row * x_sl;
    const float a = vt::Io<T>::load(xr + col);
    const float g = vt::Io<T>::load(xr + f + col);
    vt::Io<T>::store(out + static_cast<long long>(row) * f + col, a / (1.f + __expf(-a)) * g);
  }
}

// One warp per (batch, token, head). qkv rows: [q (H·D) | k (H·D) | v (H·D) | ...] at
// qkv + b·sb + l·sl. Writes q, k, v into [B, total_len, H, D] at token `offset + l`.
// cos/sin: [total_len, D / 2] f32, indexed by the output token. D: even and ≤ 64, or a
// multiple of 64 up to 256.
template <typename T>
__device__ void qk_norm_rope(const T* __restrict__ qkv, const T* __restrict__ q_w,
                             const T* __restrict__ k_w, const float* __restrict__ cos_t,
                             const float* __restrict__ sin_t, T* __restrict__ q_out,
                             T* __restrict__ k_out, T* __restrict__ v_out, int batch, int len,
                             int heads, int d, int offset, int total_len, long long sb,
                             long long sl, float eps) {
  const int warps_per_block = blockDim.x / 32;
  const long long item = static_cast<long long>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (item >= static_cast<long long>(batch) * len * heads) return;
  const int h = static_cast<int>(item % heads);
  const long long bl = item / heads;
  const int l = static_cast<int>(bl % len), b = static_cast<int>(bl / len);
  const int hidden = heads * d;
  const T* row = qkv + b * sb + l * sl;
  const int tok = offset + l;
  const long long dst = ((static_cast<long long>(b) * total_len + tok) * heads + h) * d;
  const float* cr = cos_t + static_cast<long long>(tok) * (d / 2);
  const float* sr = sin_t + static_cast<long long>(tok) * (d / 2);
  // Each active lane holds an even number of consecutive elements (whole rotation pairs):
  // 2 per lane up to D = 64 (D / 2 lanes), D / 32 above (D a multiple of 64).
  const int per_lane = d <= 64 ? 2 : d / 32;
  const bool active = lane * per_lane < d;
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    const T* src = row + part * hidden + h * d;
    const T* w = part == 0 ? q_w : k_w;
    T* out = (part == 0 ? q_out : k_out) + dst;
    float vals[8];
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      vals[j] = 0.f;
      if (active && j < per_lane) {
        vals[j] = vt::Io<T>::load(src + lane * per_lane + j);
        ss += vals[j] * vals[j];
      }
    }
    const float rstd = rsqrtf(vt::warp_sum(ss) / static_cast<float>(d) + eps);
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      if (active && j < per_lane) {
        const int e = lane * per_lane + j;  // even element index of the pair
        const float x0 = vals[j] * rstd * vt::Io<T>::load(w + e);
        const float x1 = vals[j + 1] * rstd * vt::Io<T>::load(w + e + 1);
        const float c = cr[e / 2], s = sr[e / 2];
        vt::Io<T>::store(out + e, x0 * c - x1 * s);
        vt::Io<T>::store(out + e + 1, x0 * s + x1 * c);
      }
    }
  }
  const T* vsrc = row + 2 * hidden + h * d;
  for (int j = lane; j < d; j += 32) v_out[dst + j] = vsrc[j];
}

// FP8 bytes to T, grid-stride over `total` elements of rows of `cols`; `row_scale` (f32, one per
// row, already rounded to T by the caller) may be null. Every FP8 value is exact in f16, so the
// only rounding is the product's.
template <typename T>
__device__ void fp8_decode(const unsigned char* __restrict__ w, const float* __restrict__ row_scale,
                           T* __restrict__ out, long long total, int cols, int e5m2) {
  const __nv_fp8_interpretation_t kind = e5m2 ? __NV_E5M2 : __NV_E4M3;
  const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    float v = __half2float(__half(__nv_cvt_fp8_to_halfraw(w[i], kind)));
    if (row_scale != nullptr) v *= row_scale[i / cols];
    vt::Io<T>::store(out + i, v);
  }
}

}  // namespace

#define FUSED_ENTRIES(SUFFIX, T)                                                                  \
  extern "C" __global__ void __launch_bounds__(256) modulate_##SUFFIX(                             \
      const T* x, const T* shift, const T* scale, T* out, int rpb, int c, long long x_sb,          \
      long long x_sl, long long mod_sb, float eps) {                                               \
    modulate<T>(x, shift, scale, out, rpb, c, x_sb, x_sl, mod_sb, eps);                            \
  }                                                                                                \
  extern "C" __global__ void gate_residual_##SUFFIX(const T* x, const T* y, const T* gate, T* out, \
                                                    int rpb, int c, long long x_sb, long long x_sl, \
                                                    long long gate_sb, int rows) {                 \
    gate_residual<T>(x, y, gate, out, rpb, c, x_sb, x_sl, gate_sb, rows);                          \
  }                                                                                                \
  extern "C" __global__ void swiglu_##SUFFIX(const T* x, T* out, int f, long long x_sl,            \
                                             int rows) {                                           \
    swiglu<T>(x, out, f, x_sl, rows);                                                              \
  }                                                                                                \
  extern "C" __global__ void qk_norm_rope_##SUFFIX(                                                \
      const T* qkv, const T* q_w, const T* k_w, const float* cos_t, const float* sin_t, T* q_out,  \
      T* k_out, T* v_out, int batch, int len, int heads, int d, int offset, int total_len,         \
      long long sb, long long sl, float eps) {                                                     \
    qk_norm_rope<T>(qkv, q_w, k_w, cos_t, sin_t, q_out, k_out, v_out, batch, len, heads, d,        \
                    offset, total_len, sb, sl, eps);                                               \
  }                                                                                                \
  extern "C" __global__ void fp8_decode_##SUFFIX(const unsigned char* w, const float* row_scale,   \
                                                 T* out, long long total, int cols, int e5m2) {    \
    fp8_decode<T>(w, row_scale, out, total, cols, e5m2);                                           \
  }

FUSED_ENTRIES(bf16, __nv_bfloat16)
FUSED_ENTRIES(f16, __half)
FUSED_ENTRIES(f32, float)
