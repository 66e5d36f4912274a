//! Kernels with a training twin: each function takes `differentiable` and picks candle's fused
//! kernel (inference) or a composite of differentiable ops (training).
//!
//! candle applies its fused `rms_norm`, `layer_norm`, `softmax_last_dim` and `rope`/`rope_i`
//! kernels through `apply_op*_no_bwd`: the result has no backward op, so the autograd graph is cut
//! there *silently* and everything upstream receives no gradient (flux2-spec.md §7). The composite
//! versions compute the same function from matmul, broadcast and reduction ops, which all have
//! backward passes. They are slower and use more memory, so inference keeps the fused kernels; a
//! model instance chooses with its `with_differentiable` flag.

use candle_core::{D, DType, Result, Tensor};

/// RMSNorm over the last dimension with a learned scale.
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f32, differentiable: bool) -> Result<Tensor> {
    if differentiable {
        candle_nn::ops::rms_norm_slow(x, scale, eps)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, scale, eps)
    }
}

/// LayerNorm over the last dimension with explicit scale and shift.
pub fn layer_norm(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    eps: f32,
    differentiable: bool,
) -> Result<Tensor> {
    if differentiable {
        candle_nn::ops::layer_norm_slow(x, scale, shift, eps)
    } else {
        // The fused kernel needs contiguous rows; the image part narrowed out of the joint
        // [txt, img] sequence is not contiguous once the batch has more than one sample.
        candle_nn::ops::layer_norm(&x.contiguous()?, scale, shift, eps)
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, differentiable: bool) -> Result<Tensor> {
    if differentiable {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Interleaved-pair RoPE (FLUX) on `[B, H, L, D]` with `[L, D/2]` tables, computed in f32.
pub fn rope_i(x: &Tensor, cos: &Tensor, sin: &Tensor, differentiable: bool) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let (cos, sin) = (cos.to_dtype(DType::F32)?, sin.to_dtype(DType::F32)?);
    let out = if differentiable {
        candle_nn::rotary_emb::rope_i_slow(&x, &cos, &sin)?
    } else {
        candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin)?
    };
    out.to_dtype(dtype)
}

/// Half-split RoPE (Qwen3) on `[B, H, L, D]` with `[L, D/2]` tables, computed in f32.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, differentiable: bool) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let out = if differentiable {
        candle_nn::rotary_emb::rope_slow(&x, cos, sin)?
    } else {
        candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?
    };
    out.to_dtype(dtype)
}

/// Plain softmax(QKᵀ/√d + mask)·V over `[B, H, L, D]` in f32, unchunked, every op differentiable.
/// Training runs at small sizes, where the full score matrix is cheap.
pub fn differentiable_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let dtype = q.dtype();
    let head_dim = q.dim(D::Minus1)?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let q = (q.to_dtype(DType::F32)? * scale)?;
    let k_t = k.to_dtype(DType::F32)?.transpose(2, 3)?;
    let scores = q.contiguous()?.matmul(&k_t.contiguous()?)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m.to_dtype(DType::F32)?)?,
        None => scores,
    };
    let probs = softmax_last_dim(&scores, true)?;
    probs
        .matmul(&v.to_dtype(DType::F32)?.contiguous()?)?
        .to_dtype(dtype)
}
