// Convolution and normalisation kernels for the VAE (NCHW tensors).
//
// - im2col_t: the transposed im2col matrix col[b][k][m] (k = c·kh·kw + ky·kw + kx, m = output
//   pixel), so that weight [c_out, k] × col [k, m] is the NCHW output with no layout copy.
//   Consecutive threads handle consecutive output pixels: reads and writes are coalesced, and
//   writes are 16 bytes wide. An optional row of ones carries the bias into the GEMM.
// - GroupNorm in three passes over the input (group sums, squared deviations, apply with the
//   affine parameters and optionally SiLU), partial sums combined with f32 atomics. Two-pass
//   variance avoids the cancellation of E[x²] − E[x]² on activations with a large mean.

#include "common.cuh"

namespace {

// Grid: (ceil(pixels / (8 · blockDim)), k + ones, batch): the row k and the batch come from the
// block, and each thread writes 8 consecutive output pixels of one output row with one 16-byte
// store (w_out must be a multiple of 8; the caller checks). With `ones`, row k_total is all ones,
// so that a bias column appended to the weight adds the bias inside the GEMM.
template <typename T>
__device__ void im2col_t(const T* __restrict__ x, T* __restrict__ col, int c_in, int h, int w,
                         int kh, int kw, int stride, int pad, int h_out, int w_out, int ones) {
  const int m_total = h_out * w_out;
  const int m = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (m >= m_total) return;
  const int k = blockIdx.y, b = blockIdx.z;
  const int k_total = c_in * kh * kw;
  T* dst = col + (static_cast<long long>(b) * (k_total + ones) + k) * m_total + m;
  // 8 elements: one 16-byte store for 16-bit types, two for f32.
  constexpr int kWords = 8 * sizeof(T) / 16;
  union {
    uint4 v[kWords];
    T e[8];
  } pack;
  if (k == k_total) {
#pragma unroll
    for (int j = 0; j < 8; ++j) vt::Io<T>::store(&pack.e[j], 1.f);
#pragma unroll
    for (int q = 0; q < kWords; ++q) reinterpret_cast<uint4*>(dst)[q] = pack.v[q];
    return;
  }
  const int c = k / (kh * kw), r = k % (kh * kw);
  const int ky = r / kw, kx = r % kw;
  const int oy = m / w_out, ox0 = m % w_out;
  const int iy = oy * stride - pad + ky;
  const bool row_ok = iy >= 0 && iy < h;
  const T* src = x + ((static_cast<long long>(b) * c_in + c) * h + (row_ok ? iy : 0)) * w;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int ix = (ox0 + j) * stride - pad + kx;
    if (row_ok && ix >= 0 && ix < w)
      pack.e[j] = src[ix];
    else
      vt::Io<T>::store(&pack.e[j], 0.f);
  }
#pragma unroll
  for (int q = 0; q < kWords; ++q) reinterpret_cast<uint4*>(dst)[q] = pack.v[q];
}

constexpr int kNormThreads = 256;
constexpr int kNormPerThread = 16;

__device__ __forceinline__ float block_sum(float x) {
  __shared__ float red[kNormThreads / 32];
  x = vt::warp_sum(x);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = x;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kNormThreads / 32; ++i) total += red[i];
  return total;
}

// Grid: (chunks, groups · batch). A group's elements are contiguous in NCHW.
template <typename T>
__device__ void group_stats(const T* __restrict__ x, float* __restrict__ sums,
                            const float* __restrict__ means, long long group_elems) {
  const long long g = blockIdx.y;
  const T* xg = x + g * group_elems;
  const long long start = static_cast<long long>(blockIdx.x) * kNormThreads * kNormPerThread;
  const long long end = min(group_elems, start + kNormThreads * kNormPerThread);
  const float mean = means ? means[g] / static_cast<float>(group_elems) : 0.f;
  float acc = 0.f;
  for (long long i = start + threadIdx.x; i < end; i += kNormThreads) {
    const float v = vt::Io<T>::load(xg + i);
    acc += means ? (v - mean) * (v - mean) : v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) atomicAdd(sums + g, acc);
}

// Grid: (ceil(hw / blockDim), batch · channels): one channel plane per block row.
template <typename T>
__device__ void group_apply(const T* __restrict__ x, const float* __restrict__ sums,
                            const float* __restrict__ sq, const T* __restrict__ weight,
                            const T* __restrict__ bias, T* __restrict__ out, int channels,
                            int hw, int groups, float eps, int silu) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= hw) return;
  const int plane = blockIdx.y;  // batch · channels + channel
  const int c = plane % channels, b = plane / channels;
  const int per_group = channels / groups;
  const int g = b * groups + c / per_group;
  const float n = static_cast<float>(per_group) * static_cast<float>(hw);
  const float mean = sums[g] / n;
  const float rstd = rsqrtf(sq[g] / n + eps);
  const long long i = static_cast<long long>(plane) * hw + p;
  float v = (vt::Io<T>::load(x + i) - mean) * rstd * vt::Io<T>::load(weight + c) + vt::Io<T>::load(bias + c);
  if (silu) v = v / (1.f + __expf(-v));
  vt::Io<T>::store(out + i, v);
}

}  // namespace

#define CONV_ENTRIES(SUFFIX, T)                                                                   \
  extern "C" __global__ void im2col_t_##SUFFIX(const T* x, T* col, int c_in, int h, int w, int kh,  \
                                               int kw, int stride, int pad, int h_out, int w_out,  \
                                               int ones) {                                         \
    im2col_t<T>(x, col, c_in, h, w, kh, kw, stride, pad, h_out, w_out, ones);                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(kNormThreads) group_stats_##SUFFIX(                 \
      const T* x, float* sums, const float* means, long long group_elems) {                        \
    group_stats<T>(x, sums, means, group_elems);                                                   \
  }                                                                                                \
  extern "C" __global__ void group_apply_##SUFFIX(const T* x, const float* sums, const float* sq,  \
                                                  const T* weight, const T* bias, T* out,          \
                                                  int channels, int hw, int groups, float eps,     \
                                                  int silu) {                                      \
    group_apply<T>(x, sums, sq, weight, bias, out, channels, hw, groups, eps, silu);               \
  }

CONV_ENTRIES(bf16, __nv_bfloat16)
CONV_ENTRIES(f16, __half)
CONV_ENTRIES(f32, float)
