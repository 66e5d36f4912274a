//! Fused elementwise kernels for the FLUX.2 blocks on CUDA (`kernels/fused.cu`).
//!
//! Each replaces a chain of candle ops, every one of which reads and writes the whole activation
//! (a modulated LayerNorm is six such passes in candle: norm, add, mul, add, plus dtype casts).
//! All arithmetic is f32 with one rounding to the storage type, so results differ from the
//! op-by-op path by at most the rounding of the intermediates. Activations are `[B, L, C]` with
//! a contiguous last dimension; batch and row strides are free, so narrowed views need no copy.
//! Storage types: bf16, f16, f32.

use candle_core::{Result, Tensor};

/// `(1 + scale) · LayerNorm(x) + shift` (LayerNorm without affine) over the last dimension.
/// `x`: `[B, L, C]`; `shift`, `scale`: `[B, 1, C]`. Returns contiguous `[B, L, C]`.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f32) -> Result<Tensor> {
    imp::modulate(x, shift, scale, eps)
}

/// `x + gate · y`. `x`: `[B, L, C]`; `y`: `[B, L, C]` (made contiguous); `gate`: `[B, 1, C]`.
pub fn gate_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    imp::gate_residual(x, y, gate)
}

/// `silu(x[.., :f]) · x[.., f..2f]` for `x`: `[B, L, ≥ 2f]`. Returns contiguous `[B, L, f]`.
pub fn swiglu(x: &Tensor, f: usize) -> Result<Tensor> {
    imp::swiglu(x, f)
}

/// FP8 weight bytes `[rows, cols]` (U8, contiguous; E5M2 if `e5m2`, else E4M3) decoded to
/// `dtype` (bf16, f16 or f32), each row times its scale (`[rows, 1]` f32, already rounded to
/// `dtype` as ComfyUI's `weight.to(dtype) * scale.to(dtype)` rounds it). One pass over the bytes
/// in place of candle's cast, multiply and their intermediates (candle 0.11 cannot cast FP8 on
/// GPUs at all).
pub fn fp8_decode(
    bytes: &Tensor,
    e5m2: bool,
    row_scale: Option<&Tensor>,
    dtype: candle_core::DType,
) -> Result<Tensor> {
    imp::fp8_decode(bytes, e5m2, row_scale, dtype)
}

/// One token range of a joint attention: its fused projection and per-head norm scales.
#[derive(Debug, Clone, Copy)]
pub struct QkvPart<'a> {
    /// `[B, L, ≥ 3·H·D]`: q, k and v side by side at the start of each row.
    pub qkv: &'a Tensor,
    /// RMSNorm scale of q, `[D]`.
    pub q_norm: &'a Tensor,
    /// RMSNorm scale of k, `[D]`.
    pub k_norm: &'a Tensor,
}

/// RMSNorm of q and k per head, interleaved-pair RoPE with f32 `cos`/`sin` tables
/// `[ΣL, D/2]`, and q, k, v laid out as contiguous `[B, ΣL, H, D]`, the parts concatenated along
/// the tokens in order (text then image for FLUX.2 double blocks).
pub fn qk_norm_rope(
    parts: &[QkvPart<'_>],
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    imp::qk_norm_rope(parts, heads, cos, sin, eps)
}

/// Whether [`qk_norm_rope`] takes this head dim (a warp holds one head's row).
pub fn supports_head_dim(head_dim: usize) -> bool {
    head_dim > 0
        && head_dim.is_multiple_of(2)
        && (head_dim <= 64 || (head_dim.is_multiple_of(64) && head_dim <= 256))
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda::cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda::{CudaDType, WrapErr};
    use candle_core::{D, DType, Result, Tensor, bail};
    use half::{bf16, f16};

    use super::QkvPart;
    use crate::launch::{
        FUSED_PTX, alloc, cuda_device, function, into_tensor, strides, type_suffix, with_view,
    };

    const MODULE: &str = "veetance_fused";

    /// Grid for a (columns, rows) elementwise kernel: one thread per column, row blocks looping
    /// over the rows (grid y is capped at 65535).
    fn row_grid(cols: usize, rows: usize) -> Result<(u32, u32, u32)> {
        if rows >= i32::MAX as usize || cols >= i32::MAX as usize {
            bail!("{rows} rows of {cols} exceed the fused kernels' 32-bit indexing");
        }
        Ok((cols.div_ceil(256) as u32, rows.clamp(1, 65_535) as u32, 1))
    }

    fn same_dtype(ts: &[&Tensor]) -> Result<DType> {
        let dtype = ts.first().map(|t| t.dtype()).unwrap_or(DType::F32);
        if ts.iter().any(|t| t.dtype() != dtype) {
            bail!("fused kernels need one dtype for all inputs");
        }
        type_suffix(dtype)?;
        Ok(dtype)
    }

    fn last_contiguous(t: &Tensor, name: &str) -> Result<()> {
        if t.stride().last() != Some(&1) {
            bail!("{name}: the last dimension must be contiguous");
        }
        Ok(())
    }

    macro_rules! dispatch {
        ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
            match $dtype {
                DType::BF16 => $f::<bf16>($($arg),*),
                DType::F16 => $f::<f16>($($arg),*),
                _ => $f::<f32>($($arg),*),
            }
        };
    }

    pub(super) fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f32) -> Result<Tensor> {
        let dtype = same_dtype(&[x, shift, scale])?;
        dispatch!(dtype, modulate_typed(x, shift, scale, eps))
    }

    fn modulate_typed<T: CudaDType + DeviceRepr>(
        x: &Tensor,
        shift: &Tensor,
        scale: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        if shift.dims() != [b, 1, c] || scale.dims() != [b, 1, c] {
            bail!(
                "modulate: shift {:?} / scale {:?} must be [{b}, 1, {c}]",
                shift.dims(),
                scale.dims()
            );
        }
        for (n, t) in [("x", x), ("shift", shift), ("scale", scale)] {
            last_contiguous(t, n)?;
        }
        if shift.stride()[0] != scale.stride()[0] {
            bail!("modulate: shift and scale need the same batch stride");
        }
        let dev = cuda_device(x, "x")?;
        let func = function(
            &dev,
            &format!("modulate_{}", type_suffix(x.dtype())?),
            MODULE,
            FUSED_PTX,
            0,
        )?;
        let s = strides(x, 3)?;
        let (x_sb, x_sl) = (s[0], s[1]);
        let mod_sb = shift.stride()[0] as i64;
        let (rpb, cols) = (l as i32, c as i32);
        // SAFETY: `modulate_*` below runs one block per row (b · l blocks) and each block writes
        // all c columns of its row.
        let mut out: CudaSlice<T> = unsafe { alloc(&dev, b * l * c) }?;
        let cfg = LaunchConfig {
            grid_dim: ((b * l) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = dev.cuda_stream();
        with_view::<T, _>(x, |xv| {
            with_view::<T, _>(shift, |shv| {
                with_view::<T, _>(scale, |scv| {
                    let mut a = stream.launch_builder(&func);
                    a.arg(&xv).arg(&shv).arg(&scv).arg(&mut out);
                    a.arg(&rpb)
                        .arg(&cols)
                        .arg(&x_sb)
                        .arg(&x_sl)
                        .arg(&mod_sb)
                        .arg(&eps);
                    // SAFETY: matches `modulate_*`; out holds B·L·C elements.
                    unsafe { a.launch(cfg) }.w()?;
                    Ok(())
                })
            })
        })?;
        Ok(into_tensor(out, &dev, (b, l, c)))
    }

    pub(super) fn gate_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
        let dtype = same_dtype(&[x, y, gate])?;
        dispatch!(dtype, gate_residual_typed(x, y, gate))
    }

    fn gate_residual_typed<T: CudaDType + DeviceRepr>(
        x: &Tensor,
        y: &Tensor,
        gate: &Tensor,
    ) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        if y.dims() != x.dims() || gate.dims() != [b, 1, c] {
            bail!(
                "gate_residual: x {:?}, y {:?}, gate {:?}",
                x.dims(),
                y.dims(),
                gate.dims()
            );
        }
        last_contiguous(x, "x")?;
        last_contiguous(gate, "gate")?;
        let y = y.contiguous()?;
        let dev = cuda_device(x, "x")?;
        let func = function(
            &dev,
            &format!("gate_residual_{}", type_suffix(x.dtype())?),
            MODULE,
            FUSED_PTX,
            0,
        )?;
        let s = strides(x, 3)?;
        let (x_sb, x_sl) = (s[0], s[1]);
        let gate_sb = gate.stride()[0] as i64;
        let (rpb, cols) = (l as i32, c as i32);
        let total = b * l * c;
        let rows = (b * l) as i32;
        // SAFETY: `gate_residual_*` below covers all b · l rows × c columns (`row_grid`) and
        // writes each element once.
        let mut out: CudaSlice<T> = unsafe { alloc(&dev, total) }?;
        let cfg = LaunchConfig {
            grid_dim: row_grid(c, b * l)?,
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = dev.cuda_stream();
        with_view::<T, _>(x, |xv| {
            with_view::<T, _>(&y, |yv| {
                with_view::<T, _>(gate, |gv| {
                    let mut a = stream.launch_builder(&func);
                    a.arg(&xv).arg(&yv).arg(&gv).arg(&mut out);
                    a.arg(&rpb)
                        .arg(&cols)
                        .arg(&x_sb)
                        .arg(&x_sl)
                        .arg(&gate_sb)
                        .arg(&rows);
                    // SAFETY: matches `gate_residual_*`; out holds B·L·C elements.
                    unsafe { a.launch(cfg) }.w()?;
                    Ok(())
                })
            })
        })?;
        Ok(into_tensor(out, &dev, (b, l, c)))
    }

    pub(super) fn swiglu(x: &Tensor, f: usize) -> Result<Tensor> {
        let dtype = same_dtype(&[x])?;
        dispatch!(dtype, swiglu_typed(x, f))
    }

    fn swiglu_typed<T: CudaDType + DeviceRepr>(x: &Tensor, f: usize) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        if c < 2 * f || f == 0 {
            bail!("swiglu: rows of {c} cannot hold two halves of {f}");
        }
        last_contiguous(x, "x")?;
        let s = strides(x, 3)?;
        // Rows must be evenly spaced across the batch to be addressed with one row stride.
        if s[0] != s[1] * l as i64 {
            let x = x.contiguous()?;
            return swiglu_typed::<T>(&x.narrow(D::Minus1, 0, 2 * f)?, f);
        }
        let dev = cuda_device(x, "x")?;
        let func = function(
            &dev,
            &format!("swiglu_{}", type_suffix(x.dtype())?),
            MODULE,
            FUSED_PTX,
            0,
        )?;
        let x_sl = s[1];
        let f_i = f as i32;
        let total = b * l * f;
        let rows = (b * l) as i32;
        // SAFETY: `swiglu_*` below covers all b · l rows × f columns (`row_grid`) and writes
        // each element once.
        let mut out: CudaSlice<T> = unsafe { alloc(&dev, total) }?;
        let cfg = LaunchConfig {
            grid_dim: row_grid(f, b * l)?,
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = dev.cuda_stream();
        with_view::<T, _>(x, |xv| {
            let mut a = stream.launch_builder(&func);
            a.arg(&xv).arg(&mut out).arg(&f_i).arg(&x_sl).arg(&rows);
            // SAFETY: matches `swiglu_*`; out holds B·L·f elements.
            unsafe { a.launch(cfg) }.w()?;
            Ok(())
        })?;
        Ok(into_tensor(out, &dev, (b, l, f)))
    }

    pub(super) fn fp8_decode(
        bytes: &Tensor,
        e5m2: bool,
        row_scale: Option<&Tensor>,
        dtype: DType,
    ) -> Result<Tensor> {
        dispatch!(dtype, fp8_decode_typed(bytes, e5m2, row_scale, dtype))
    }

    fn fp8_decode_typed<T: CudaDType + DeviceRepr>(
        bytes: &Tensor,
        e5m2: bool,
        row_scale: Option<&Tensor>,
        dtype: DType,
    ) -> Result<Tensor> {
        if bytes.dtype() != DType::U8 {
            bail!("fp8_decode: expected U8 bytes, got {:?}", bytes.dtype());
        }
        let (rows, cols) = bytes.dims2()?;
        let bytes = bytes.contiguous()?;
        let scale = match row_scale {
            Some(s) => {
                if s.elem_count() != rows {
                    bail!("fp8_decode: {} scales for {rows} rows", s.elem_count());
                }
                Some(s.to_dtype(DType::F32)?.contiguous()?)
            }
            None => None,
        };
        let total = rows * cols;
        if cols == 0 || cols >= i32::MAX as usize || total == 0 {
            bail!("fp8_decode: cannot decode a {rows}×{cols} weight");
        }
        let dev = cuda_device(&bytes, "bytes")?;
        let func = function(
            &dev,
            &format!("fp8_decode_{}", type_suffix(dtype)?),
            MODULE,
            FUSED_PTX,
            0,
        )?;
        // SAFETY: `fp8_decode_*` visits every index below `total` (grid-stride loop) and writes
        // each element once.
        let mut out: CudaSlice<T> = unsafe { alloc(&dev, total) }?;
        let blocks = total.div_ceil(256).min(65_535 * 8) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = dev.cuda_stream();
        let total_i = total as i64;
        let cols_i = cols as i32;
        let e5m2_i = i32::from(e5m2);
        with_view::<u8, _>(&bytes, |wv| match &scale {
            Some(scale) => with_view::<f32, _>(scale, |sv| {
                let mut a = stream.launch_builder(&func);
                a.arg(&wv)
                    .arg(&sv)
                    .arg(&mut out)
                    .arg(&total_i)
                    .arg(&cols_i)
                    .arg(&e5m2_i);
                // SAFETY: matches `fp8_decode_*`; `out` holds rows·cols elements, `sv` rows.
                unsafe { a.launch(cfg) }.w()?;
                Ok(())
            }),
            None => {
                let null: u64 = 0;
                let mut a = stream.launch_builder(&func);
                a.arg(&wv)
                    .arg(&null)
                    .arg(&mut out)
                    .arg(&total_i)
                    .arg(&cols_i)
                    .arg(&e5m2_i);
                // SAFETY: matches `fp8_decode_*` with a null scale pointer, which it checks.
                unsafe { a.launch(cfg) }.w()?;
                Ok(())
            }
        })?;
        Ok(into_tensor(out, &dev, (rows, cols)))
    }

    pub(super) fn qk_norm_rope(
        parts: &[QkvPart<'_>],
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let Some(first) = parts.first() else {
            bail!("qk_norm_rope: no parts");
        };
        let dtype = first.qkv.dtype();
        dispatch!(dtype, qk_norm_rope_typed(parts, heads, cos, sin, eps))
    }

    fn qk_norm_rope_typed<T: CudaDType + DeviceRepr>(
        parts: &[QkvPart<'_>],
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let Some(first) = parts.first() else {
            bail!("qk_norm_rope: no parts");
        };
        let d = first.q_norm.dim(0)?;
        if !super::supports_head_dim(d) || heads == 0 {
            bail!("qk_norm_rope: head dim {d} must be even and at most 64, or 128, 192 or 256");
        }
        let batch = first.qkv.dim(0)?;
        let mut total_len = 0;
        for p in parts {
            let (b, l, c) = p.qkv.dims3()?;
            if b != batch || c < 3 * heads * d {
                bail!(
                    "qk_norm_rope: qkv {:?} does not hold 3·{heads}·{d}",
                    p.qkv.dims()
                );
            }
            same_dtype(&[p.qkv, p.q_norm, p.k_norm])?;
            if p.qkv.dtype() != first.qkv.dtype() {
                bail!("qk_norm_rope: parts of different dtypes");
            }
            last_contiguous(p.qkv, "qkv")?;
            total_len += l;
        }
        if cos.dims() != [total_len, d / 2] || sin.dims() != cos.dims() {
            bail!(
                "qk_norm_rope: tables {:?} must be [{total_len}, {}]",
                cos.dims(),
                d / 2
            );
        }
        let cos = cos.to_dtype(DType::F32)?.contiguous()?;
        let sin = sin.to_dtype(DType::F32)?.contiguous()?;
        let dev = cuda_device(first.qkv, "qkv")?;
        let func = function(
            &dev,
            &format!("qk_norm_rope_{}", type_suffix(first.qkv.dtype())?),
            MODULE,
            FUSED_PTX,
            0,
        )?;
        let n = batch * total_len * heads * d;
        // SAFETY: the loop below launches `qk_norm_rope_*` for every part; the parts' lengths
        // sum to total_len, and each launch writes q, k and v of all its rows and heads.
        let mut out: CudaSlice<T> = unsafe { alloc(&dev, 3 * n) }?;
        let stream = dev.cuda_stream();
        let mut offset = 0usize;
        for p in parts {
            let (_, len, _) = p.qkv.dims3()?;
            let q_norm = p.q_norm.contiguous()?;
            let k_norm = p.k_norm.contiguous()?;
            let s = strides(p.qkv, 3)?;
            let (sb, sl) = (s[0], s[1]);
            let args = [batch, len, heads, d, offset, total_len].map(|v| v as i32);
            let items = batch * len * heads;
            let cfg = LaunchConfig {
                grid_dim: (items.div_ceil(8) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let (mut q_out, mut rest) = out.split_at_mut(n);
            let (mut k_out, mut v_out) = rest.split_at_mut(n);
            with_view::<T, _>(p.qkv, |xv| {
                with_view::<T, _>(&q_norm, |qw| {
                    with_view::<T, _>(&k_norm, |kw| {
                        with_view::<f32, _>(&cos, |cv| {
                            with_view::<f32, _>(&sin, |sv| {
                                let mut a = stream.launch_builder(&func);
                                a.arg(&xv).arg(&qw).arg(&kw).arg(&cv).arg(&sv);
                                a.arg(&mut q_out).arg(&mut k_out).arg(&mut v_out);
                                for v in &args {
                                    a.arg(v);
                                }
                                a.arg(&sb).arg(&sl).arg(&eps);
                                // SAFETY: matches `qk_norm_rope_*`; each output third holds
                                // B·ΣL·H·D elements and this part writes tokens
                                // [offset, offset + len).
                                unsafe { a.launch(cfg) }.w()?;
                                Ok(())
                            })
                        })
                    })
                })
            })?;
            offset += len;
        }
        let all = into_tensor(out, &dev, (3, batch, total_len, heads, d));
        let take = |i: usize| all.narrow(0, i, 1)?.squeeze(0);
        Ok((take(0)?, take(1)?, take(2)?))
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor, bail};

    use super::QkvPart;

    const NOT_BUILT: &str = "this build has no CUDA kernels (build with `--features cuda`)";

    pub(super) fn modulate(_x: &Tensor, _sh: &Tensor, _sc: &Tensor, _eps: f32) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn gate_residual(_x: &Tensor, _y: &Tensor, _g: &Tensor) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn swiglu(_x: &Tensor, _f: usize) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn fp8_decode(
        _bytes: &Tensor,
        _e5m2: bool,
        _row_scale: Option<&Tensor>,
        _dtype: candle_core::DType,
    ) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn qk_norm_rope(
        _parts: &[QkvPart<'_>],
        _heads: usize,
        _cos: &Tensor,
        _sin: &Tensor,
        _eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        bail!("{NOT_BUILT}")
    }
}
