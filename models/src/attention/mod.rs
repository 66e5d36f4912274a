//! Attention backends, chosen per model instance.
//!
//! Every attention in the transformer and the VAE goes through [`AttentionBackend::attend`], so
//! swapping the backend (the SageAttention node) is a cheap clone of the model with another value
//! here; no global state. Two backends exist:
//!
//! - [`AttentionBackend::Exact`]: softmax(QKᵀ·scale)·V. Below a size threshold it builds the full
//!   score matrix; above it, queries are processed in chunks so that no L×L matrix is ever held
//!   (1024² FLUX.2 has L = 4608 and 24 heads: a full f32 score tensor would be 2 GB per layer).
//! - [`AttentionBackend::Sage`]: the CPU reference of SageAttention (see [`sage`]); it is
//!   numerically faithful to the GPU kernel, not fast.
//!
//! On CUDA with bf16/f16 inputs and head dim 32, 64 or 128 (Sage: 64 or 128), both backends run fused kernels of
//! `veetance-gpu` instead (flash-style exact attention; SageAttention with INT8 Q·Kᵀ and f16
//! P·V). The CUDA Sage kernel honours `smooth_k`, quantises in 64-row blocks whatever the
//! [`SageConfig`] block sizes say, and exists for f16 P·V only (fp8 P·V runs the reference). Masked calls (the text encoder's padding)
//! take the portable path.

use candle_core::{D, DType, Tensor};

pub mod sage;

use sage::{PvPrecision, SageConfig, sage_attention};

/// Default number of score elements (per batch×head slab) above which exact attention is chunked.
pub const DEFAULT_CHUNK_THRESHOLD_ELEMS: usize = 1 << 22;

/// How attention is computed.
#[derive(Debug, Clone, PartialEq)]
pub enum AttentionBackend {
    /// Exact attention in the model dtype with an f32 softmax when the inputs are f32.
    Exact {
        /// Above this many score elements per (batch, head), queries are chunked.
        chunk_threshold_elems: usize,
    },
    /// SageAttention CPU reference: smoothed K, INT8 Q/K per block, f16 or fp8 P·V, f32 accumulation.
    Sage(SageConfig),
}

impl Default for AttentionBackend {
    fn default() -> Self {
        AttentionBackend::Exact {
            chunk_threshold_elems: DEFAULT_CHUNK_THRESHOLD_ELEMS,
        }
    }
}

impl AttentionBackend {
    /// Attention over `[B, H, L, D]` tensors with an optional additive mask broadcastable to
    /// `[B, H, Lq, Lk]`. Returns `[B, H, Lq, D]`.
    ///
    /// The Sage backend does not take masks (neither does the GPU kernel); masked calls (the
    /// text encoder) fall back to exact attention, as ComfyUI's Sage patch does.
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        if mask.is_none()
            && let Some(out) = self.attend_cuda(q, k, v)
        {
            return out?.transpose(1, 2);
        }
        match (self, mask) {
            (AttentionBackend::Sage(cfg), None) => sage_attention(q, k, v, cfg),
            (
                AttentionBackend::Exact {
                    chunk_threshold_elems,
                },
                _,
            ) => exact_attention(q, k, v, mask, *chunk_threshold_elems),
            (AttentionBackend::Sage(_), Some(_)) => {
                exact_attention(q, k, v, mask, DEFAULT_CHUNK_THRESHOLD_ELEMS)
            }
        }
    }
}

impl AttentionBackend {
    /// Like [`AttentionBackend::attend`] without a mask, but returns `[B, Lq, H, D]`: the layout
    /// the CUDA kernels write, which the output projection reads without a transpose.
    pub fn attend_token_major(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<Tensor> {
        match self.attend_cuda(q, k, v) {
            Some(out) => out,
            None => self.attend(q, k, v, None)?.transpose(1, 2)?.contiguous(),
        }
    }

    /// The fused CUDA kernel for this backend when the inputs suit it (CUDA, bf16/f16, head dim
    /// 64 or 128); `None` sends the caller to the portable path. Returns `[B, Lq, H, D]`.
    fn attend_cuda(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Option<candle_core::Result<Tensor>> {
        if !q.device().is_cuda() {
            return None;
        }
        let unsupported = match self {
            AttentionBackend::Exact { .. } => veetance_gpu::attention::unsupported_reason(q, k, v),
            AttentionBackend::Sage(cfg) if cfg.pv == PvPrecision::F16 => {
                veetance_gpu::attention::sage_unsupported_reason(q, k, v)
            }
            // The FP8 P·V variant has no CUDA kernel yet: the reference runs as candle ops.
            AttentionBackend::Sage(_) => Some("fp8 P·V".to_owned()),
        };
        if unsupported.is_some() {
            return None;
        }
        let scale = 1.0 / (q.dim(D::Minus1).ok()? as f64).sqrt();
        Some(match self {
            AttentionBackend::Exact { .. } => {
                veetance_gpu::attention::flash_attention(q, k, v, scale)
            }
            AttentionBackend::Sage(cfg) => {
                veetance_gpu::attention::sage_attention(q, k, v, scale, cfg.smooth_k)
            }
        })
    }
}

/// Exact scaled dot-product attention, chunked over queries above `chunk_threshold_elems`.
pub fn exact_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    chunk_threshold_elems: usize,
) -> candle_core::Result<Tensor> {
    let (_, _, len_q, head_dim) = q.dims4()?;
    let len_k = k.dim(2)?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    // K and V in the compute dtype once, not once per query chunk (at the 1024² VAE's 16,384
    // tokens that is 64 chunks).
    let compute = compute_dtype(q.dtype());
    let k_t = k.transpose(2, 3)?.to_dtype(compute)?.contiguous()?;
    let v = v.to_dtype(compute)?.contiguous()?;
    if len_q.saturating_mul(len_k) <= chunk_threshold_elems {
        return attention_block(&q.contiguous()?, &k_t, &v, mask, scale);
    }
    // Largest query chunk whose score block stays under the threshold (at least one row).
    let rows_per_chunk = (chunk_threshold_elems / len_k.max(1)).max(1);
    let mut outputs = Vec::with_capacity(len_q.div_ceil(rows_per_chunk));
    let mut start = 0;
    while start < len_q {
        let rows = rows_per_chunk.min(len_q - start);
        let q_chunk = q.narrow(2, start, rows)?.contiguous()?;
        let mask_chunk = match mask {
            // A mask with a single query row broadcasts; otherwise take the same rows.
            Some(m) if m.dim(D::Minus2)? == len_q => Some(m.narrow(D::Minus2, start, rows)?),
            Some(m) => Some(m.clone()),
            None => None,
        };
        outputs.push(attention_block(
            &q_chunk,
            &k_t,
            &v,
            mask_chunk.as_ref(),
            scale,
        )?);
        start += rows;
    }
    Tensor::cat(&outputs, 2)
}

fn attention_block(
    q: &Tensor,
    k_t: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let dtype = q.dtype();
    let compute = compute_dtype(dtype);
    // Scaling q (L×D) instead of the scores (L×L) saves a pass over the largest tensor.
    let scores = (q.to_dtype(compute)? * scale)?.matmul(&k_t.to_dtype(compute)?)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m.to_dtype(compute)?)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v.to_dtype(compute)?)?.to_dtype(dtype)
}

/// Scores and softmax run in at least f32 whatever the model dtype: half-precision softmax over
/// thousands of keys loses visible precision, and it is what PyTorch's SDPA math path does too.
fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}
