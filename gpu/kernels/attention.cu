// Attention kernels: fused exact attention (FlashAttention-2 style) and SageAttention.
//
// Both are one CTA of 4 warps per (64 query rows, head, batch). Each warp owns 16 query rows;
// K and V tiles of 64 keys stream through three shared-memory buffers with cp.async. Scores
// live only in registers (no L×L matrix anywhere), the softmax is online in f32 with exp2 (the
// softmax scale carries log2 e), and P·V accumulates in f32.
//
// Exact: Q·Kᵀ and P·V on bf16/f16 tensor cores (P rounded to the input type, as FlashAttention).
// Sage (SageAttention v1 algorithm, written from the paper): K is smoothed (the per-head token mean
// is subtracted; softmax is invariant to it), Q and K are quantised to INT8 with one scale per 64
// rows, Q·Kᵀ runs on INT8 tensor cores (int32 accumulation), P and V are f16 for P·V.
//
// Inputs are addressed with element strides (batch, head, row; the head dim is contiguous), so
// `[B, L, H, D]` activations need no transpose; rows must start 16-byte aligned.

#include "common.cuh"

namespace {

constexpr int kRows = 64;  // query rows per CTA (16 per warp)
constexpr int kKeys = 64;  // keys per tile
constexpr int kThreads = 128;
constexpr int kBuffers = 3;  // K/V tiles in shared memory

// One online-softmax step for a warp's 16 rows: `s` holds this tile's scores (log2 domain,
// masked keys at -inf) for rows `group` (elements 0, 1) and `group + 8` (elements 2, 3). Rescales
// `o` and `l` by the change of the running max and turns `s` into probabilities.
template <int NT, int ND>
__device__ __forceinline__ void online_softmax(float (&s)[NT][4], float (&m)[2], float (&l)[2],
                                               float (&o)[ND][4]) {
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
  }
  float base[2], alpha[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = vt::quad_max(mx[i]);
    // A row whose keys were all masked so far keeps max -inf; exp2(-inf - 0) = 0 then.
    base[i] = mx[i] == -INFINITY ? 0.f : mx[i];
    alpha[i] = exp2f(m[i] - base[i]);
    m[i] = mx[i];
  }
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    s[j][0] = exp2f(s[j][0] - base[0]);
    s[j][1] = exp2f(s[j][1] - base[0]);
    s[j][2] = exp2f(s[j][2] - base[1]);
    s[j][3] = exp2f(s[j][3] - base[1]);
    sum[0] += s[j][0] + s[j][1];
    sum[1] += s[j][2] + s[j][3];
  }
  // `l` stays a per-thread partial sum (the quad's lanes agree on alpha); reduced at the end.
  l[0] = l[0] * alpha[0] + sum[0];
  l[1] = l[1] * alpha[1] + sum[1];
#pragma unroll
  for (int d = 0; d < ND; ++d) {
    o[d][0] *= alpha[0];
    o[d][1] *= alpha[0];
    o[d][2] *= alpha[1];
    o[d][3] *= alpha[1];
  }
}

// O += P·V for one 64-key tile; V is [kKeys][ldv] in shared memory (keys are rows).
template <typename T, int D, int NT>
__device__ __forceinline__ void accumulate_pv(float (&o)[D / 8][4], const float (&p)[NT][4],
                                              const T* vs, int ldv, int lane) {
  const int mi = lane / 8, r = lane % 8;
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    const uint32_t pa[4] = {
        vt::Half<T>::pack(p[2 * kk][0], p[2 * kk][1]),
        vt::Half<T>::pack(p[2 * kk][2], p[2 * kk][3]),
        vt::Half<T>::pack(p[2 * kk + 1][0], p[2 * kk + 1][1]),
        vt::Half<T>::pack(p[2 * kk + 1][2], p[2 * kk + 1][3]),
    };
#pragma unroll
    for (int dn = 0; dn < D / 8; dn += 2) {
      // Matrices: keys kk·16 + {0, 8} × columns dn·8 and (dn + 1)·8, transposed into B fragments.
      const T* row = vs + (kk * 16 + (mi & 1) * 8 + r) * ldv + (dn + (mi >> 1)) * 8;
      uint32_t b0, b1, b2, b3;
      vt::ldsm_x4_t(vt::smem_addr(row), b0, b1, b2, b3);
      vt::Half<T>::mma(o[dn], pa, b0, b1);
      vt::Half<T>::mma(o[dn + 1], pa, b2, b3);
    }
  }
}

// The main loop both kernels share: a software pipeline over kBuffers K/V buffers. While the
// softmax and P·V of tile t run, the tensor cores already compute the scores of tile t + 1
// (independent instructions the compiler interleaves), and tile t + 2 is in flight.
// `load(tile, buffer)` issues one cp.async group, `scores(tile, s)` fills a tile's scores (log2
// domain, masked keys at -inf) and `pv(tile, p)` accumulates P·V for it into `o`.
template <int NT, int ND, class Load, class Scores, class Pv>
__device__ __forceinline__ void pipelined_tiles(int tiles, float (&m)[2], float (&l)[2],
                                                float (&o)[ND][4], Load load, Scores scores,
                                                Pv pv) {
  load(0, 0);
  if (tiles > 1) {
    load(1, 1);
    vt::cp_async_wait<1>();
  } else {
    vt::cp_async_wait<0>();
  }
  __syncthreads();
  float s_cur[NT][4];
  scores(0, s_cur);
  for (int t = 0; t < tiles; ++t) {
    if (t + 2 < tiles) load(t + 2, (t + 2) % kBuffers);
    float s_next[NT][4];
    if (t + 1 < tiles) {
      if (t + 2 < tiles) {
        vt::cp_async_wait<1>();
      } else {
        vt::cp_async_wait<0>();
      }
      __syncthreads();
      scores(t + 1, s_next);
    }
    online_softmax<NT, ND>(s_cur, m, l, o);
    pv(t, s_cur);
    __syncthreads();  // tile t's buffer is refilled (with tile t + 3) next iteration
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s_cur[j][e] = s_next[j][e];
    }
  }
}

// Normalises and stores a warp's 16 output rows.
template <typename T, int D>
__device__ __forceinline__ void store_rows(T* out, long long o_sl, int row0, int len_q,
                                           float (&o)[D / 8][4], float (&l)[2], int group,
                                           int tig) {
  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float total = vt::quad_sum(l[i]);
    inv[i] = total > 0.f ? 1.f / total : 0.f;
  }
  const int r0 = row0 + group, r1 = row0 + group + 8;
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
    const int c = dn * 8 + tig * 2;
    if (r0 < len_q)
      *reinterpret_cast<uint32_t*>(out + r0 * o_sl + c) =
          vt::Half<T>::pack(o[dn][0] * inv[0], o[dn][1] * inv[0]);
    if (r1 < len_q)
      *reinterpret_cast<uint32_t*>(out + r1 * o_sl + c) =
          vt::Half<T>::pack(o[dn][2] * inv[1], o[dn][3] * inv[1]);
  }
}

template <typename T, int D>
__device__ void flash_forward(const T* __restrict__ q, const T* __restrict__ k,
                              const T* __restrict__ v, T* __restrict__ out, int len_q, int len_k,
                              long long q_sb, long long q_sh, long long q_sl, long long k_sb,
                              long long k_sh, long long k_sl, long long v_sb, long long v_sh,
                              long long v_sl, long long o_sb, long long o_sh, long long o_sl,
                              float scale_log2) {
  constexpr int LD = D + 8;  // padded row: ldmatrix rows land in distinct banks
  constexpr int NT = kKeys / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + kBuffers * kKeys * LD;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int group = lane / 4, tig = lane % 4;
  const int h = blockIdx.y, b = blockIdx.z;
  q += b * q_sb + h * q_sh;
  k += b * k_sb + h * k_sh;
  v += b * v_sb + h * v_sh;
  out += b * o_sb + h * o_sh;
  const int row0 = blockIdx.x * kRows + warp * 16;

  // This warp's Q rows as A fragments, loaded once.
  uint32_t qf[D / 16][4];
  {
    const int r0 = row0 + group, r1 = row0 + group + 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int c = kk * 16 + tig * 2;
      qf[kk][0] = r0 < len_q ? *reinterpret_cast<const uint32_t*>(q + r0 * q_sl + c) : 0u;
      qf[kk][1] = r1 < len_q ? *reinterpret_cast<const uint32_t*>(q + r1 * q_sl + c) : 0u;
      qf[kk][2] = r0 < len_q ? *reinterpret_cast<const uint32_t*>(q + r0 * q_sl + c + 8) : 0u;
      qf[kk][3] = r1 < len_q ? *reinterpret_cast<const uint32_t*>(q + r1 * q_sl + c + 8) : 0u;
    }
  }

  auto load_tile = [&](int tile, int buf) {
    constexpr int kChunks = kKeys * D / 8;  // 16-byte chunks per matrix
    const int key0 = tile * kKeys;
#pragma unroll
    for (int i = tid; i < kChunks; i += kThreads) {
      const int r = i / (D / 8), c = (i % (D / 8)) * 8;
      const int key = key0 + r;
      const bool valid = key < len_k;
      const int src = valid ? key : 0;
      vt::cp_async16(vt::smem_addr(ks + (buf * kKeys + r) * LD + c), k + src * k_sl + c, valid);
      vt::cp_async16(vt::smem_addr(vs + (buf * kKeys + r) * LD + c), v + src * v_sl + c, valid);
    }
    vt::cp_async_commit();
  };

  float o[D / 8][4];
#pragma unroll
  for (int d = 0; d < D / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  const int tiles = (len_k + kKeys - 1) / kKeys;
  const int mi = lane / 8, r = lane % 8;
  auto scores = [&](int t, float (&s)[NT][4]) {
    const T* kb = ks + (t % kBuffers) * kKeys * LD;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t b0, b1, b2, b3;
        vt::ldsm_x4(vt::smem_addr(kb + (j * 8 + r) * LD + kk * 16 + mi * 8), b0, b1, b2, b3);
        vt::Half<T>::mma(s[j], qf[kk], b0, b1);
        vt::Half<T>::mma(s[j], qf[kk + 1], b2, b3);
      }
    }
    const int key0 = t * kKeys;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + j * 8 + tig * 2 + (e & 1);
        s[j][e] = key < len_k ? s[j][e] * scale_log2 : -INFINITY;
      }
    }
  };

  pipelined_tiles<NT, D / 8>(tiles, m, l, o, load_tile, scores, [&](int t, const float (&p)[NT][4]) {
    accumulate_pv<T, D, NT>(o, p, vs + (t % kBuffers) * kKeys * LD, LD, lane);
  });
  store_rows<T, D>(out, o_sl, row0, len_q, o, l, group, tig);
}

// SageAttention main loop on pre-quantised inputs (see sage_quantize / sage_k_sum below):
// q8, k8: [BH, Lp, D] int8; q_scale, k_scale: [BH, Lp / 64] (q's carries softmax scale · log2 e);
// vh: [BH, Lp, D] f16 with zero padding rows. Lp is a multiple of 64.
template <typename T, int D>
__device__ void sage_forward(const int8_t* __restrict__ q8, const int8_t* __restrict__ k8,
                             const float* __restrict__ q_scale, const float* __restrict__ k_scale,
                             const __half* __restrict__ vh, T* __restrict__ out, int heads,
                             int len_q, int len_k, int lp_q, int lp_k, long long o_sb,
                             long long o_sh, long long o_sl) {
  constexpr int LDK = D + 16;  // bytes per int8 K row (16-byte aligned, bank-spread)
  constexpr int LDV = D + 8;   // halves per V row
  constexpr int NT = kKeys / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  int8_t* ks = reinterpret_cast<int8_t*>(smem);
  __half* vs = reinterpret_cast<__half*>(smem + kBuffers * kKeys * LDK);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int group = lane / 4, tig = lane % 4;
  const int h = blockIdx.y, b = blockIdx.z;
  const long long bh = static_cast<long long>(b) * heads + h;
  q8 += bh * lp_q * D;
  k8 += bh * lp_k * D;
  vh += bh * lp_k * D;
  q_scale += bh * (lp_q / kRows);
  k_scale += bh * (lp_k / kKeys);
  out += b * o_sb + h * o_sh;
  const int row0 = blockIdx.x * kRows + warp * 16;
  const float qs = q_scale[blockIdx.x];

  uint32_t qf[D / 32][4];
#pragma unroll
  for (int kk = 0; kk < D / 32; ++kk) {
    const int c = kk * 32 + tig * 4;
    const int8_t* r0 = q8 + (row0 + group) * D + c;
    const int8_t* r1 = q8 + (row0 + group + 8) * D + c;
    qf[kk][0] = *reinterpret_cast<const uint32_t*>(r0);
    qf[kk][1] = *reinterpret_cast<const uint32_t*>(r1);
    qf[kk][2] = *reinterpret_cast<const uint32_t*>(r0 + 16);
    qf[kk][3] = *reinterpret_cast<const uint32_t*>(r1 + 16);
  }

  auto load_tile = [&](int tile, int buf) {
    const int key0 = tile * kKeys;
    constexpr int kChunksK = kKeys * D / 16;
    constexpr int kChunksV = kKeys * D / 8;
#pragma unroll
    for (int i = tid; i < kChunksK; i += kThreads) {
      const int r = i / (D / 16), c = (i % (D / 16)) * 16;
      vt::cp_async16(vt::smem_addr(ks + (buf * kKeys + r) * LDK + c), k8 + (key0 + r) * D + c,
                     true);
    }
#pragma unroll
    for (int i = tid; i < kChunksV; i += kThreads) {
      const int r = i / (D / 8), c = (i % (D / 8)) * 8;
      vt::cp_async16(vt::smem_addr(vs + (buf * kKeys + r) * LDV + c), vh + (key0 + r) * D + c,
                     true);
    }
    vt::cp_async_commit();
  };

  float o[D / 8][4];
#pragma unroll
  for (int d = 0; d < D / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  const int tiles = lp_k / kKeys;
  const int mi = lane / 8, r = lane % 8;
  auto scores = [&](int t, float (&s)[NT][4]) {
    const int8_t* kb = ks + (t % kBuffers) * kKeys * LDK;
    int acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0;
#pragma unroll
      for (int kk = 0; kk < D / 32; kk += 2) {
        // Four 8×16-byte matrices: keys j·8.., byte columns kk·32 + {0, 16, 32, 48}.
        uint32_t b0, b1, b2, b3;
        vt::ldsm_x4(vt::smem_addr(kb + (j * 8 + r) * LDK + kk * 32 + mi * 16), b0, b1, b2, b3);
        vt::mma_s8(acc[j], qf[kk], b0, b1);
        vt::mma_s8(acc[j], qf[kk + 1], b2, b3);
      }
    }
    const float scale = qs * k_scale[t];
    const int key0 = t * kKeys;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + j * 8 + tig * 2 + (e & 1);
        s[j][e] = key < len_k ? static_cast<float>(acc[j][e]) * scale : -INFINITY;
      }
    }
  };

  pipelined_tiles<NT, D / 8>(tiles, m, l, o, load_tile, scores, [&](int t, const float (&p)[NT][4]) {
    accumulate_pv<__half, D, NT>(o, p, vs + (t % kBuffers) * kKeys * LDV, LDV, lane);
  });
  store_rows<T, D>(out, o_sl, row0, len_q, o, l, group, tig);
}

}  // namespace

#define FLASH_ENTRY(NAME, T, D)                                                                  \
  extern "C" __global__ void __launch_bounds__(kThreads) NAME(                                  \
      const T* q, const T* k, const T* v, T* out, int len_q, int len_k, long long q_sb,          \
      long long q_sh, long long q_sl, long long k_sb, long long k_sh, long long k_sl,            \
      long long v_sb, long long v_sh, long long v_sl, long long o_sb, long long o_sh,            \
      long long o_sl, float scale_log2) {                                                        \
    flash_forward<T, D>(q, k, v, out, len_q, len_k, q_sb, q_sh, q_sl, k_sb, k_sh, k_sl, v_sb,    \
                        v_sh, v_sl, o_sb, o_sh, o_sl, scale_log2);                               \
  }

FLASH_ENTRY(flash_bf16_d32, __nv_bfloat16, 32)
FLASH_ENTRY(flash_bf16_d64, __nv_bfloat16, 64)
FLASH_ENTRY(flash_bf16_d128, __nv_bfloat16, 128)
FLASH_ENTRY(flash_f16_d32, __half, 32)
FLASH_ENTRY(flash_f16_d64, __half, 64)
FLASH_ENTRY(flash_f16_d128, __half, 128)

#define SAGE_ENTRY(NAME, T, D)                                                                   \
  extern "C" __global__ void __launch_bounds__(kThreads) NAME(                                  \
      const int8_t* q8, const int8_t* k8, const float* q_scale, const float* k_scale,            \
      const __half* vh, T* out, int heads, int len_q, int len_k, int lp_q, int lp_k,             \
      long long o_sb, long long o_sh, long long o_sl) {                                          \
    sage_forward<T, D>(q8, k8, q_scale, k_scale, vh, out, heads, len_q, len_k, lp_q, lp_k, o_sb, \
                       o_sh, o_sl);                                                              \
  }

SAGE_ENTRY(sage_bf16_d64, __nv_bfloat16, 64)
SAGE_ENTRY(sage_bf16_d128, __nv_bfloat16, 128)
SAGE_ENTRY(sage_f16_d64, __half, 64)
SAGE_ENTRY(sage_f16_d128, __half, 128)

// ---- SageAttention pre-pass -------------------------------------------------------------------

// Column sums of K over tokens per (batch, head), accumulated with atomics into ksum [BH, D]
// (zeroed by the caller). Grid: (ceil(len / 256), heads, batch); block: D threads.
template <typename T>
__device__ void k_sum(const T* __restrict__ k, float* __restrict__ ksum, int heads, int len, int d,
                      long long k_sb, long long k_sh, long long k_sl) {
  const int h = blockIdx.y, b = blockIdx.z, c = threadIdx.x;
  if (c >= d) return;
  k += b * k_sb + h * k_sh;
  const int start = blockIdx.x * 256, end = min(len, start + 256);
  float acc = 0.f;
  for (int row = start; row < end; ++row) acc += vt::Half<T>::to_float(k[row * k_sl + c]);
  atomicAdd(ksum + (static_cast<long long>(b) * heads + h) * d + c, acc);
}

// Per-block INT8 quantisation of 64 rows of Q or K (K with the token mean `ksum / len`
// subtracted): scale = max|x| / 127, x8 = round-half-away(x / scale). Rows past `len` become 0.
// `extra` multiplies the stored scale (softmax scale · log2 e for Q). Grid: (lp / 64, heads,
// batch); block: 128 threads.
template <typename T>
__device__ void quantize_block(const T* __restrict__ x, const float* __restrict__ ksum,
                               int8_t* __restrict__ x8, float* __restrict__ scale, int heads,
                               int len, int lp, int d, long long sb, long long sh, long long sl,
                               float extra) {
  __shared__ float red[kThreads / 32];
  const int h = blockIdx.y, b = blockIdx.z, blk = blockIdx.x;
  const long long bh = static_cast<long long>(b) * heads + h;
  x += b * sb + h * sh;
  const float* mean = ksum ? ksum + bh * d : nullptr;
  const float inv_len = 1.f / static_cast<float>(len);
  const int n = kRows * d;
  float amax = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const int row = blk * kRows + i / d, c = i % d;
    if (row < len) {
      float val = vt::Half<T>::to_float(x[row * sl + c]);
      if (mean) val -= mean[c] * inv_len;
      amax = fmaxf(amax, fabsf(val));
    }
  }
  amax = vt::warp_max(amax);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
  const float s = fmaxf(amax, 1e-7f) / 127.f;
  const float inv = 1.f / s;
  int8_t* dst = x8 + (bh * lp + static_cast<long long>(blk) * kRows) * d;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const int row = blk * kRows + i / d, c = i % d;
    int qv = 0;
    if (row < len) {
      float val = vt::Half<T>::to_float(x[row * sl + c]);
      if (mean) val -= mean[c] * inv_len;
      const float t = val * inv;
      qv = static_cast<int>(t + copysignf(0.5f, t));  // round half away from zero
      qv = max(-127, min(127, qv));
    }
    dst[i] = static_cast<int8_t>(qv);
  }
  if (threadIdx.x == 0) scale[bh * (lp / kRows) + blk] = s * extra;
}

// V to f16 [BH, lp, D] with zero rows past `len`; values beyond f16's range saturate.
template <typename T>
__device__ void v_to_half(const T* __restrict__ v, __half* __restrict__ vh, int heads, int len,
                          int lp, int d, long long sb, long long sh, long long sl) {
  const int h = blockIdx.y % heads, b = blockIdx.y / heads;
  const long long bh = static_cast<long long>(b) * heads + h;
  v += b * sb + h * sh;
  __half* dst = vh + bh * lp * d;
  for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<long long>(lp) * d;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int row = static_cast<int>(i / d), c = static_cast<int>(i % d);
    float val = row < len ? vt::Half<T>::to_float(v[row * sl + c]) : 0.f;
    val = fminf(fmaxf(val, -65504.f), 65504.f);
    dst[i] = __float2half_rn(val);
  }
}

#define PREPASS_ENTRIES(SUFFIX, T)                                                               \
  extern "C" __global__ void sage_k_sum_##SUFFIX(const T* k, float* ksum, int heads, int len,     \
                                                  int d, long long sb, long long sh,              \
                                                  long long sl) {                                 \
    k_sum<T>(k, ksum, heads, len, d, sb, sh, sl);                                                 \
  }                                                                                               \
  extern "C" __global__ void __launch_bounds__(kThreads) sage_quantize_##SUFFIX(                  \
      const T* x, const float* ksum, int8_t* x8, float* scale, int heads, int len, int lp, int d, \
      long long sb, long long sh, long long sl, float extra) {                                    \
    quantize_block<T>(x, ksum, x8, scale, heads, len, lp, d, sb, sh, sl, extra);                  \
  }                                                                                               \
  extern "C" __global__ void sage_v_half_##SUFFIX(const T* v, __half* vh, int heads, int len,     \
                                                   int lp, int d, long long sb, long long sh,     \
                                                   long long sl) {                                \
    v_to_half<T>(v, vh, heads, len, lp, d, sb, sh, sl);                                           \
  }

PREPASS_ENTRIES(bf16, __nv_bfloat16)
PREPASS_ENTRIES(f16, __half)
