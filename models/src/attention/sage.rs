//! SageAttention CPU reference: the numerics of the 8-bit attention kernel, emulated in f32.
//!
//! What the GPU kernel does, step by step, and what we do here with candle tensor ops:
//!
//! 1. **Smooth K**: subtract the per-(batch, head) mean over tokens from K. Softmax is invariant to
//!    adding a constant per query row, so this changes nothing mathematically, but it removes the
//!    channel bias DiT keys carry, which would otherwise waste the INT8 range. We work on a copy;
//!    the caller's K is never modified (sageattention 1.0.6 subtracts in place, a known gotcha).
//! 2. **INT8 Q and K per block**: one scale per block of rows (Q: 128 rows, K: 64 rows, the kernel's
//!    tiles), `scale = max|x| / 127`, round half away from zero. The integer products are summed
//!    exactly: with |q|,|k| ≤ 127 and head_dim ≤ 1024 every partial sum stays below 2²⁴, so an f32
//!    matmul of the integer values is bit-identical to the kernel's i32 accumulation.
//! 3. **Online softmax per K tile** in f32 with exp2 and `sm_scale·log2(e)` folded into the
//!    dequantisation, like the kernel; the row maximum is updated tile by tile.
//! 4. **P·V in f16 or fp8**: P̃ ∈ \[0, 1\] rounded to f16 with V in f16, or P̃·448 and V (per-channel
//!    scale max/448) rounded to E4M3; products accumulated in f32, normalised by the row sum at the end.

use candle_core::{D, DType, Tensor};

/// Precision of the P·V product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvPrecision {
    /// P̃ and V in f16, f32 accumulation (SageAttention 1).
    F16,
    /// P̃ and V in FP8 E4M3 with scales, f32 accumulation (SageAttention 2 on Hopper).
    Fp8E4M3,
}

/// Settings of the Sage reference.
#[derive(Debug, Clone, PartialEq)]
pub struct SageConfig {
    /// Subtract K's mean over tokens before quantising.
    pub smooth_k: bool,
    /// P·V precision.
    pub pv: PvPrecision,
    /// Rows of Q sharing one INT8 scale.
    pub q_block_rows: usize,
    /// Rows of K sharing one INT8 scale (also the online-softmax tile).
    pub k_block_rows: usize,
}

impl Default for SageConfig {
    fn default() -> Self {
        Self {
            smooth_k: true,
            pv: PvPrecision::F16,
            q_block_rows: 128,
            k_block_rows: 64,
        }
    }
}

const INT8_MAX: f64 = 127.0;
const FP8_E4M3_MAX: f64 = 448.0;
/// Integer dot products stay exact in f32 only up to this head dimension (127² · 1040 < 2²⁴).
const MAX_EXACT_HEAD_DIM: usize = 1024;

/// Quantises `x` (`[B, H, N, D]`) symmetrically to integers in [-127, 127] with one scale per block of `block`
/// elements along dim 2 (rows). Returns (integer values as f32, per-row scale `[B, H, N, 1]`).
pub fn quantize_int8_per_block(x: &Tensor, block: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let (b, h, n, d) = x.dims4()?;
    if block == 0 {
        candle_core::bail!("quantisation block size must be positive");
    }
    let n_blocks = n.div_ceil(block);
    let padded_len = n_blocks * block;
    // Zero rows do not change a block's max|x|, so padding the last block is harmless.
    let padded = if padded_len > n {
        x.pad_with_zeros(2, 0, padded_len - n)?
    } else {
        x.clone()
    };
    let blocks = padded.reshape((b, h, n_blocks, block, d))?;
    let max_abs = blocks.abs()?.max_keepdim(4)?.max_keepdim(3)?;
    // An all-zero block would give scale 0; any positive scale quantises it to zeros.
    let scale = (max_abs / INT8_MAX)?;
    let safe_scale = scale.maximum(1e-12)?;
    let quantized = blocks
        .broadcast_div(&safe_scale)?
        .round()?
        .clamp(-INT8_MAX, INT8_MAX)?;
    let quantized = quantized.reshape((b, h, padded_len, d))?.narrow(2, 0, n)?;
    let row_scale = safe_scale
        .broadcast_as((b, h, n_blocks, block, 1))?
        .reshape((b, h, padded_len, 1))?
        .narrow(2, 0, n)?;
    Ok((quantized.contiguous()?, row_scale.contiguous()?))
}

/// SageAttention reference over `[B, H, N, D]` inputs; returns `[B, H, N, D]` in the input dtype.
pub fn sage_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cfg: &SageConfig,
) -> candle_core::Result<Tensor> {
    let (b, h, n_q, head_dim) = q.dims4()?;
    let n_k = k.dim(2)?;
    if head_dim > MAX_EXACT_HEAD_DIM {
        candle_core::bail!(
            "sage reference supports head_dim up to {MAX_EXACT_HEAD_DIM}, got {head_dim}"
        );
    }
    if cfg.q_block_rows == 0 || cfg.k_block_rows == 0 {
        candle_core::bail!("sage block sizes must be positive");
    }
    let out_dtype = q.dtype();
    let q = q.to_dtype(DType::F32)?;
    let k = k.to_dtype(DType::F32)?;
    let v = v.to_dtype(DType::F32)?;
    let k = if cfg.smooth_k {
        k.broadcast_sub(&k.mean_keepdim(2)?)?
    } else {
        k
    };

    let (q_int, q_scale) = quantize_int8_per_block(&q, cfg.q_block_rows)?;
    let sm_scale_log2 = (1.0 / (head_dim as f64).sqrt()) * std::f64::consts::LOG2_E;
    let q_scale = (q_scale * sm_scale_log2)?;

    // V for the P·V product, with its per-channel scale in fp8 mode.
    let (v_pv, v_channel_scale) = match cfg.pv {
        PvPrecision::F16 => (v.to_dtype(DType::F16)?.to_dtype(DType::F32)?, None),
        PvPrecision::Fp8E4M3 => {
            let scale = (v.abs()?.max_keepdim(2)? / FP8_E4M3_MAX)?.maximum(1e-12)?;
            let v8 = v
                .broadcast_div(&scale)?
                .to_dtype(DType::F8E4M3)?
                .to_dtype(DType::F32)?;
            (v8, Some(scale))
        }
    };

    let ln2 = std::f64::consts::LN_2;
    let mut row_max = Tensor::full(-1e30f32, (b, h, n_q, 1), q.device())?;
    let mut row_sum = Tensor::zeros((b, h, n_q, 1), DType::F32, q.device())?;
    let mut acc = Tensor::zeros((b, h, n_q, head_dim), DType::F32, q.device())?;
    let mut start = 0;
    while start < n_k {
        let rows = cfg.k_block_rows.min(n_k - start);
        let k_tile = k.narrow(2, start, rows)?;
        let (k_int, k_scale) = quantize_int8_per_block(&k_tile, rows)?;
        // One scale for the whole tile: [B, H, 1, 1] broadcast over (query, key).
        let k_scale = k_scale.narrow(2, 0, 1)?;
        let scores = q_int.matmul(&k_int.transpose(2, 3)?.contiguous()?)?;
        let scores = scores
            .broadcast_mul(&q_scale)?
            .broadcast_mul(&k_scale.transpose(2, 3)?)?;
        let new_max = row_max.maximum(&scores.max_keepdim(D::Minus1)?)?;
        let correction = ((&row_max - &new_max)? * ln2)?.exp()?;
        let probs = (scores.broadcast_sub(&new_max)? * ln2)?.exp()?;
        row_sum = (row_sum.mul(&correction)? + probs.sum_keepdim(D::Minus1)?)?;
        let v_tile = v_pv.narrow(2, start, rows)?.contiguous()?;
        let pv = match cfg.pv {
            PvPrecision::F16 => probs
                .to_dtype(DType::F16)?
                .to_dtype(DType::F32)?
                .matmul(&v_tile)?,
            PvPrecision::Fp8E4M3 => {
                let p8 = (probs * FP8_E4M3_MAX)?
                    .to_dtype(DType::F8E4M3)?
                    .to_dtype(DType::F32)?;
                (p8.matmul(&v_tile)? / FP8_E4M3_MAX)?
            }
        };
        acc = (acc.broadcast_mul(&correction)? + pv)?;
        row_max = new_max;
        start += rows;
    }
    let out = acc.broadcast_div(&row_sum)?;
    let out = match v_channel_scale {
        Some(scale) => out.broadcast_mul(&scale)?,
        None => out,
    };
    out.to_dtype(out_dtype)
}
