//! Attention on CUDA without an L×L matrix: fused exact attention and SageAttention.
//!
//! Inputs are `[B, H, L, D]` bf16 or f16 tensors on a CUDA device whose last dimension is
//! contiguous; the other strides are free (multiples of 8 elements), so a `[B, L, H, D]` buffer
//! viewed with `transpose(1, 2)` needs no copy. D must be 32, 64 or 128 (Sage: 64 or 128). Outputs are contiguous
//! `[B, Lq, H, D]`, the layout the output projection reads; callers wanting `[B, H, Lq, D]`
//! take `transpose(1, 2)` of it (a view).
//!
//! - [`flash_attention`]: softmax(QKᵀ·scale)·V on bf16/f16 tensor cores, f32 online softmax and
//!   accumulation (FlashAttention-2's algorithm, `kernels/attention.cu`).
//! - [`sage_attention`]: SageAttention (v1 algorithm): K smoothed by its token mean, Q and K
//!   quantised to INT8 with one scale per 64 rows, INT8 Q·Kᵀ, f16 P·V, f32 accumulation.
//!   [`sage_quantize`] and [`sage_attention_quantized`] split the pre-pass from the main kernel,
//!   for benchmarks that report the kernel alone.

use candle_core::{Result, Tensor};

/// Why the kernels cannot take these inputs, or `None` when they can.
pub fn unsupported_reason(q: &Tensor, k: &Tensor, v: &Tensor) -> Option<String> {
    imp::check(q, k, v).err().map(|e| e.to_string())
}

/// Why the SageAttention kernel cannot take these inputs, or `None` when it can.
pub fn sage_unsupported_reason(q: &Tensor, k: &Tensor, v: &Tensor) -> Option<String> {
    if let Some(reason) = unsupported_reason(q, k, v) {
        return Some(reason);
    }
    match q.dim(3) {
        Ok(64 | 128) => None,
        Ok(d) => Some(format!(
            "the CUDA SageAttention kernel takes head dim 64 or 128, not {d}"
        )),
        Err(err) => Some(err.to_string()),
    }
}

/// Exact attention; returns `[B, Lq, H, D]`.
pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor, softmax_scale: f64) -> Result<Tensor> {
    imp::flash(q, k, v, softmax_scale)
}

/// SageAttention; returns `[B, Lq, H, D]`. `smooth_k` subtracts K's token mean first (exact
/// for softmax, and it keeps INT8 accurate when K carries a shared bias).
pub fn sage_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    softmax_scale: f64,
    smooth_k: bool,
) -> Result<Tensor> {
    let quantized = sage_quantize(q, k, v, softmax_scale, smooth_k)?;
    sage_attention_quantized(&quantized)
}

/// SageAttention's pre-pass: K mean, INT8 Q and K with per-block scales, V in f16.
pub fn sage_quantize(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    softmax_scale: f64,
    smooth_k: bool,
) -> Result<SageQuantized> {
    imp::sage_quantize(q, k, v, softmax_scale, smooth_k)
}

/// SageAttention's main kernel on pre-quantised inputs; returns `[B, Lq, H, D]`.
pub fn sage_attention_quantized(quantized: &SageQuantized) -> Result<Tensor> {
    imp::sage_run(quantized)
}

pub use imp::SageQuantized;

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
    use candle_core::cuda::{CudaDType, CudaDevice, WrapErr};
    use candle_core::{DType, Result, Tensor, bail};
    use half::{bf16, f16};

    use crate::launch::{
        ATTENTION_PTX, alloc, cuda_device, function, into_tensor, strides, type_suffix, with_view,
    };

    const MODULE: &str = "veetance_attention";
    const ROWS: usize = 64;
    const THREADS: u32 = 128;

    /// Dimensions of a validated call.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Dims {
        batch: usize,
        heads: usize,
        len_q: usize,
        len_k: usize,
        head_dim: usize,
    }

    pub(super) fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
        let (batch, heads, len_q, head_dim) = q.dims4()?;
        let (kb, kh, len_k, kd) = k.dims4()?;
        if (kb, kh, kd) != (batch, heads, head_dim) || v.dims() != k.dims() {
            bail!(
                "attention shapes disagree: q {:?}, k {:?}, v {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        if !matches!(head_dim, 32 | 64 | 128) {
            bail!("the CUDA attention kernels take head dim 32, 64 or 128, not {head_dim}");
        }
        if len_q == 0 || len_k == 0 {
            bail!("attention over an empty sequence");
        }
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            if !matches!(t.dtype(), DType::BF16 | DType::F16) || t.dtype() != q.dtype() {
                bail!("the CUDA attention kernels take bf16 or f16 q, k, v of one dtype");
            }
            cuda_device(t, name)?;
            let s = t.stride();
            let offset = t.layout().start_offset();
            if s.get(3) != Some(&1)
                || s.iter().take(3).any(|x| !x.is_multiple_of(8))
                || !offset.is_multiple_of(8)
            {
                bail!(
                    "{name}: the head dim must be contiguous and rows 16-byte aligned (strides {s:?})"
                );
            }
        }
        Ok(Dims {
            batch,
            heads,
            len_q,
            len_k,
            head_dim,
        })
    }

    fn stride_args(t: &Tensor) -> Result<[i64; 3]> {
        let s = strides(t, 4)?;
        Ok([s[0], s[1], s[2]])
    }

    pub(super) fn flash(q: &Tensor, k: &Tensor, v: &Tensor, softmax_scale: f64) -> Result<Tensor> {
        let dims = check(q, k, v)?;
        match q.dtype() {
            DType::BF16 => flash_typed::<bf16>(q, k, v, softmax_scale, dims),
            _ => flash_typed::<f16>(q, k, v, softmax_scale, dims),
        }
    }

    fn flash_typed<T: CudaDType + candle_core::cuda::cudarc::driver::DeviceRepr>(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        softmax_scale: f64,
        d: Dims,
    ) -> Result<Tensor> {
        let dev = cuda_device(q, "q")?;
        let name = format!("flash_{}_d{}", type_suffix(q.dtype())?, d.head_dim);
        // K and V, three 64-key tiles each, rows padded by 8 elements (kernels/attention.cu).
        let smem = (2 * 3 * 64 * (d.head_dim + 8) * 2) as u32;
        let func = function(&dev, &name, MODULE, ATTENTION_PTX, smem)?;
        // SAFETY: the attention kernel launched below stores every row < len_q of every head
        // (`store_rows`), which is the whole [B, L, H, D] output.
        let mut out: CudaSlice<T> =
            unsafe { alloc(&dev, d.batch * d.len_q * d.heads * d.head_dim) }?;
        let [q_sb, q_sh, q_sl] = stride_args(q)?;
        let [k_sb, k_sh, k_sl] = stride_args(k)?;
        let [v_sb, v_sh, v_sl] = stride_args(v)?;
        let o_sl = (d.heads * d.head_dim) as i64;
        let o_sb = d.len_q as i64 * o_sl;
        let o_sh = d.head_dim as i64;
        let (len_q, len_k) = (d.len_q as i32, d.len_k as i32);
        let scale_log2 = (softmax_scale * std::f64::consts::LOG2_E) as f32;
        let cfg = LaunchConfig {
            grid_dim: (
                d.len_q.div_ceil(ROWS) as u32,
                d.heads as u32,
                d.batch as u32,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let stream = dev.cuda_stream();
        with_view::<T, _>(q, |qv| {
            with_view::<T, _>(k, |kv| {
                with_view::<T, _>(v, |vv| {
                    let mut b = stream.launch_builder(&func);
                    b.arg(&qv).arg(&kv).arg(&vv).arg(&mut out);
                    b.arg(&len_q).arg(&len_k);
                    b.arg(&q_sb).arg(&q_sh).arg(&q_sl);
                    b.arg(&k_sb).arg(&k_sh).arg(&k_sl);
                    b.arg(&v_sb).arg(&v_sh).arg(&v_sl);
                    b.arg(&o_sb).arg(&o_sh).arg(&o_sl);
                    b.arg(&scale_log2);
                    // SAFETY: arguments match the kernel signature; `check` validated shapes,
                    // strides and alignment, and `out` holds B·Lq·H·D elements.
                    unsafe { b.launch(cfg) }.w()?;
                    Ok(())
                })
            })
        })?;
        Ok(into_tensor(
            out,
            &dev,
            (d.batch, d.len_q, d.heads, d.head_dim),
        ))
    }

    /// SageAttention inputs after the pre-pass (device buffers, padded to 64 rows).
    pub struct SageQuantized {
        dev: CudaDevice,
        dtype: DType,
        dims: Dims,
        q8: CudaSlice<i8>,
        k8: CudaSlice<i8>,
        q_scale: CudaSlice<f32>,
        k_scale: CudaSlice<f32>,
        v_half: CudaSlice<f16>,
    }

    impl std::fmt::Debug for SageQuantized {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SageQuantized")
                .field("dtype", &self.dtype)
                .field("dims", &self.dims)
                .finish_non_exhaustive()
        }
    }

    pub(super) fn sage_quantize(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        softmax_scale: f64,
        smooth_k: bool,
    ) -> Result<SageQuantized> {
        let dims = check(q, k, v)?;
        if dims.head_dim < 64 {
            bail!("the CUDA SageAttention kernel takes head dim 64 or 128");
        }
        match q.dtype() {
            DType::BF16 => quantize_typed::<bf16>(q, k, v, softmax_scale, smooth_k, dims),
            _ => quantize_typed::<f16>(q, k, v, softmax_scale, smooth_k, dims),
        }
    }

    fn quantize_typed<T: CudaDType + candle_core::cuda::cudarc::driver::DeviceRepr>(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        softmax_scale: f64,
        smooth_k: bool,
        d: Dims,
    ) -> Result<SageQuantized> {
        let dev = cuda_device(q, "q")?;
        let suffix = type_suffix(q.dtype())?;
        let stream = dev.cuda_stream();
        let (bh, hd) = (d.batch * d.heads, d.head_dim);
        let lp_q = d.len_q.div_ceil(ROWS) * ROWS;
        let lp_k = d.len_k.div_ceil(ROWS) * ROWS;
        let heads = d.heads as i32;
        let dim = hd as i32;

        // 1. Column sums of K per (batch, head): the smoothing mean is ksum / len_k.
        let mut ksum: CudaSlice<f32> = dev.alloc_zeros(bh * hd)?;
        if smooth_k {
            let func = function(
                &dev,
                &format!("sage_k_sum_{suffix}"),
                MODULE,
                ATTENTION_PTX,
                0,
            )?;
            let [sb, sh, sl] = stride_args(k)?;
            let len = d.len_k as i32;
            let cfg = LaunchConfig {
                grid_dim: (d.len_k.div_ceil(256) as u32, d.heads as u32, d.batch as u32),
                block_dim: (hd as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            with_view::<T, _>(k, |kv| {
                let mut b = stream.launch_builder(&func);
                b.arg(&kv).arg(&mut ksum).arg(&heads).arg(&len).arg(&dim);
                b.arg(&sb).arg(&sh).arg(&sl);
                // SAFETY: matches `sage_k_sum_*`; ksum holds B·H·D floats.
                unsafe { b.launch(cfg) }.w()?;
                Ok(())
            })?;
        }

        // 2. INT8 Q (scale carries softmax scale · log2 e) and smoothed INT8 K.
        let quant = function(
            &dev,
            &format!("sage_quantize_{suffix}"),
            MODULE,
            ATTENTION_PTX,
            0,
        )?;
        let quantize = |x: &Tensor,
                        len: usize,
                        lp: usize,
                        mean: Option<&CudaSlice<f32>>,
                        extra: f32|
         -> Result<(CudaSlice<i8>, CudaSlice<f32>)> {
            // SAFETY: `sage_quantize_*` below runs one block per 64 padded rows of every head
            // and writes each row of x8 (zeros past `len`) and each block's scale.
            let mut x8: CudaSlice<i8> = unsafe { alloc(&dev, bh * lp * hd) }?;
            // SAFETY: as above.
            let mut scale: CudaSlice<f32> = unsafe { alloc(&dev, bh * lp / ROWS) }?;
            let [sb, sh, sl] = stride_args(x)?;
            let (len, lp_i) = (len as i32, lp as i32);
            let null: u64 = 0;
            let cfg = LaunchConfig {
                grid_dim: ((lp / ROWS) as u32, d.heads as u32, d.batch as u32),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            with_view::<T, _>(x, |xv| {
                let mut b = stream.launch_builder(&quant);
                b.arg(&xv);
                match mean {
                    Some(m) => b.arg(m),
                    None => b.arg(&null),
                };
                b.arg(&mut x8).arg(&mut scale);
                b.arg(&heads).arg(&len).arg(&lp_i).arg(&dim);
                b.arg(&sb).arg(&sh).arg(&sl).arg(&extra);
                // SAFETY: matches `sage_quantize_*`; x8 holds B·H·lp·D bytes, scale B·H·lp/64.
                unsafe { b.launch(cfg) }.w()?;
                Ok(())
            })?;
            Ok((x8, scale))
        };
        let q_extra = (softmax_scale * std::f64::consts::LOG2_E) as f32;
        let (q8, q_scale) = quantize(q, d.len_q, lp_q, None, q_extra)?;
        let (k8, k_scale) = quantize(k, d.len_k, lp_k, smooth_k.then_some(&ksum), 1.0)?;

        // 3. V in f16 with zero padding rows.
        // SAFETY: `sage_v_half_*` below walks all lp_k · D elements of every head (grid-stride)
        // and writes zeros to the padding rows.
        let mut v_half: CudaSlice<f16> = unsafe { alloc(&dev, bh * lp_k * hd) }?;
        {
            let func = function(
                &dev,
                &format!("sage_v_half_{suffix}"),
                MODULE,
                ATTENTION_PTX,
                0,
            )?;
            let [sb, sh, sl] = stride_args(v)?;
            let (len, lp_i) = (d.len_k as i32, lp_k as i32);
            let blocks_x = (lp_k * hd).div_ceil(256).min(1024) as u32;
            let cfg = LaunchConfig {
                grid_dim: (blocks_x, bh as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            with_view::<T, _>(v, |vv| {
                let mut b = stream.launch_builder(&func);
                b.arg(&vv)
                    .arg(&mut v_half)
                    .arg(&heads)
                    .arg(&len)
                    .arg(&lp_i)
                    .arg(&dim);
                b.arg(&sb).arg(&sh).arg(&sl);
                // SAFETY: matches `sage_v_half_*`; v_half holds B·H·lp·D halves.
                unsafe { b.launch(cfg) }.w()?;
                Ok(())
            })?;
        }
        Ok(SageQuantized {
            dev,
            dtype: q.dtype(),
            dims: d,
            q8,
            k8,
            q_scale,
            k_scale,
            v_half,
        })
    }

    pub(super) fn sage_run(s: &SageQuantized) -> Result<Tensor> {
        match s.dtype {
            DType::BF16 => sage_run_typed::<bf16>(s),
            _ => sage_run_typed::<f16>(s),
        }
    }

    fn sage_run_typed<T: CudaDType + candle_core::cuda::cudarc::driver::DeviceRepr>(
        s: &SageQuantized,
    ) -> Result<Tensor> {
        let d = s.dims;
        let dev = &s.dev;
        let name = format!("sage_{}_d{}", type_suffix(s.dtype)?, d.head_dim);
        // Three 64-key tiles of INT8 K (rows padded by 16 bytes) and f16 V (padded by 8).
        let smem = (3 * 64 * (d.head_dim + 16) + 3 * 64 * (d.head_dim + 8) * 2) as u32;
        let func = function(dev, &name, MODULE, ATTENTION_PTX, smem)?;
        let lp_q = d.len_q.div_ceil(ROWS) * ROWS;
        let lp_k = d.len_k.div_ceil(ROWS) * ROWS;
        // SAFETY: the Sage kernel launched below stores every row < len_q of every head, which
        // is the whole [B, L, H, D] output.
        let mut out: CudaSlice<T> =
            unsafe { alloc(dev, d.batch * d.len_q * d.heads * d.head_dim) }?;
        let (heads, len_q, len_k) = (d.heads as i32, d.len_q as i32, d.len_k as i32);
        let (lp_q_i, lp_k_i) = (lp_q as i32, lp_k as i32);
        let o_sl = (d.heads * d.head_dim) as i64;
        let o_sb = d.len_q as i64 * o_sl;
        let o_sh = d.head_dim as i64;
        let cfg = LaunchConfig {
            grid_dim: ((lp_q / ROWS) as u32, d.heads as u32, d.batch as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(&s.q8)
            .arg(&s.k8)
            .arg(&s.q_scale)
            .arg(&s.k_scale)
            .arg(&s.v_half);
        b.arg(&mut out);
        b.arg(&heads)
            .arg(&len_q)
            .arg(&len_k)
            .arg(&lp_q_i)
            .arg(&lp_k_i);
        b.arg(&o_sb).arg(&o_sh).arg(&o_sl);
        // SAFETY: matches `sage_*_d*`; all buffers were sized by `quantize_typed` for these dims.
        unsafe { b.launch(cfg) }.w()?;
        Ok(into_tensor(
            out,
            dev,
            (d.batch, d.len_q, d.heads, d.head_dim),
        ))
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor, bail};

    const NOT_BUILT: &str = "this build has no CUDA kernels (build with `--features cuda`)";

    /// SageAttention inputs after the pre-pass (never constructed without CUDA).
    #[derive(Debug)]
    pub struct SageQuantized(());

    pub(super) fn check(_q: &Tensor, _k: &Tensor, _v: &Tensor) -> Result<()> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn flash(_q: &Tensor, _k: &Tensor, _v: &Tensor, _scale: f64) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn sage_quantize(
        _q: &Tensor,
        _k: &Tensor,
        _v: &Tensor,
        _scale: f64,
        _smooth_k: bool,
    ) -> Result<SageQuantized> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn sage_run(_s: &SageQuantized) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }
}
