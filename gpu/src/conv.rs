//! Convolution and GroupNorm for NCHW activations on CUDA (`kernels/conv.cu`).
//!
//! candle 0.11's CUDA conv2d materialises an im2col matrix with a slow uncoalesced kernel and
//! then copies the NHWC product back to NCHW; together they were over half of a 1024² FLUX.2
//! VAE decode on an H200 (ncu). [`conv2d`] writes the im2col matrix transposed, `[k, pixels]`,
//! with coalesced reads and writes, and multiplies `weight [c_out, k]` by it with cuBLAS, which
//! yields NCHW directly. [`group_norm`] replaces candle_nn's GroupNorm op chain (ten passes
//! over the activation with f32 casts) by three passes, with an optional fused SiLU.

use candle_core::{Result, Tensor};

/// 2-D convolution (no groups, no dilation): `x [B, C, H, W]`, `weight [O, C, kh, kw]`,
/// optional `bias [O]`. Returns contiguous `[B, O, H', W']`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    imp::conv2d(x, weight, bias, stride, padding)
}

/// GroupNorm over `x [B, C, H, W]` with affine `weight`, `bias` `[C]`, then SiLU if `silu`.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    imp::group_norm(x, weight, bias, groups, eps, silu)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda::cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda::{CudaDType, WrapErr};
    use candle_core::{DType, Result, Tensor, bail};
    use half::{bf16, f16};

    use crate::launch::{
        CONV_PTX, alloc, cuda_device, function, into_tensor, type_suffix, with_view,
    };

    const MODULE: &str = "veetance_conv";

    macro_rules! dispatch {
        ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
            match $dtype {
                DType::BF16 => $f::<bf16>($($arg),*),
                DType::F16 => $f::<f16>($($arg),*),
                DType::F32 => $f::<f32>($($arg),*),
                other => bail!("no CUDA convolution for {other:?}"),
            }
        };
    }

    pub(super) fn conv2d(
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (o, wc, kh, kw) = weight.dims4()?;
        if wc != c || stride == 0 {
            bail!(
                "conv2d: input {:?} does not match weight {:?}",
                x.dims(),
                weight.dims()
            );
        }
        if h + 2 * padding < kh || w + 2 * padding < kw {
            bail!("conv2d: kernel larger than the padded input");
        }
        if weight.dtype() != x.dtype() {
            bail!("conv2d: input and weight dtypes differ");
        }
        let h_out = (h + 2 * padding - kh) / stride + 1;
        let w_out = (w + 2 * padding - kw) / stride + 1;
        if !w_out.is_multiple_of(8) {
            // The kernel writes 8 pixels of one row at a time; other widths take candle's path.
            let out = x.conv2d(weight, padding, stride, 1, 1)?;
            return match bias {
                Some(bias) => out.broadcast_add(&bias.reshape((1, o, 1, 1))?),
                None => Ok(out),
            };
        }
        let x = x.contiguous()?;
        let ones = usize::from(bias.is_some());
        let k = c * kh * kw + ones;
        let m = h_out * w_out;
        let col = dispatch!(
            x.dtype(),
            im2col_typed(
                &x,
                (b, c, h, w),
                (kh, kw),
                stride,
                padding,
                (h_out, w_out),
                ones
            )
        )?;
        // The bias rides in the GEMM as an extra weight column against col's row of ones.
        let weight = weight.reshape((o, k - ones))?;
        let weight = match bias {
            Some(bias) => Tensor::cat(&[&weight, &bias.reshape((o, 1))?], 1)?,
            None => weight,
        };
        // [O, k] × [B, k, m] → [B, O, m]: NCHW without a layout copy.
        let out = weight.broadcast_left(b)?.matmul(&col.reshape((b, k, m))?)?;
        out.reshape((b, o, h_out, w_out))
    }

    fn im2col_typed<T: CudaDType + DeviceRepr>(
        x: &Tensor,
        (b, c, h, w): (usize, usize, usize, usize),
        (kh, kw): (usize, usize),
        stride: usize,
        padding: usize,
        (h_out, w_out): (usize, usize),
        ones: usize,
    ) -> Result<Tensor> {
        let dev = cuda_device(x, "x")?;
        let func = function(
            &dev,
            &format!("im2col_t_{}", type_suffix(x.dtype())?),
            MODULE,
            CONV_PTX,
            0,
        )?;
        let (k, m) = (c * kh * kw + ones, h_out * w_out);
        if k > 65_535 || b > 65_535 || m >= i32::MAX as usize {
            bail!("conv2d: {k} im2col rows × {m} pixels × batch {b} exceed the kernel's grid");
        }
        let total = b * k * m;
        // SAFETY: `im2col_t_*` below writes every (row, pixel) of every batch, the ones row
        // included, 8 pixels per thread over a grid that covers them.
        let mut col: CudaSlice<T> = unsafe { alloc(&dev, total) }?;
        let args = [c, h, w, kh, kw, stride, padding, h_out, w_out, ones].map(|v| v as i32);
        let cfg = LaunchConfig {
            grid_dim: (m.div_ceil(8 * 256) as u32, k as u32, b as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = dev.cuda_stream();
        with_view::<T, _>(x, |xv| {
            let mut a = stream.launch_builder(&func);
            a.arg(&xv).arg(&mut col);
            for v in &args {
                a.arg(v);
            }
            // SAFETY: matches `im2col_t_*`; col holds B·(C·kh·kw + ones)·H'·W' elements, W' is
            // a multiple of 8 (16-byte stores stay aligned) and x is contiguous [B, C, H, W].
            unsafe { a.launch(cfg) }.w()?;
            Ok(())
        })?;
        Ok(into_tensor(col, &dev, (b, k, m)))
    }

    pub(super) fn group_norm(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<Tensor> {
        dispatch!(
            x.dtype(),
            group_norm_typed(x, weight, bias, groups, eps, silu)
        )
    }

    fn group_norm_typed<T: CudaDType + DeviceRepr>(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if groups == 0 || !c.is_multiple_of(groups) || weight.dims() != [c] || bias.dims() != [c] {
            bail!(
                "group_norm: {c} channels, {groups} groups, weight {:?}, bias {:?}",
                weight.dims(),
                bias.dims()
            );
        }
        if weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
            bail!("group_norm: input and affine dtypes differ");
        }
        let x = x.contiguous()?;
        let (weight, bias) = (weight.contiguous()?, bias.contiguous()?);
        let dev = cuda_device(&x, "x")?;
        let suffix = type_suffix(x.dtype())?;
        let stats = function(&dev, &format!("group_stats_{suffix}"), MODULE, CONV_PTX, 0)?;
        let apply = function(&dev, &format!("group_apply_{suffix}"), MODULE, CONV_PTX, 0)?;
        let hw = h * w;
        let group_elems = c / groups * hw;
        let n_groups = b * groups;
        let mut sums: CudaSlice<f32> = dev.alloc_zeros(n_groups)?;
        let mut sq: CudaSlice<f32> = dev.alloc_zeros(n_groups)?;
        let per_block = 256 * 16;
        let stats_cfg = LaunchConfig {
            grid_dim: (group_elems.div_ceil(per_block) as u32, n_groups as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let group_elems_i = group_elems as i64;
        if b * c > 65_535 || hw >= i32::MAX as usize {
            bail!("group_norm: {b}·{c} planes of {hw} exceed the kernel's grid");
        }
        let total = b * c * hw;
        // SAFETY: the apply pass below writes every element of every plane.
        let mut out: CudaSlice<T> = unsafe { alloc(&dev, total) }?;
        let (channels, groups_i, silu_i) = (c as i32, groups as i32, i32::from(silu));
        let hw_i = hw as i32;
        let null: u64 = 0;
        let stream = dev.cuda_stream();
        with_view::<T, _>(&x, |xv| {
            // Pass 1: group sums; pass 2: squared deviations from the mean (sums / n).
            {
                let mut a = stream.launch_builder(&stats);
                a.arg(&xv).arg(&mut sums).arg(&null).arg(&group_elems_i);
                // SAFETY: matches `group_stats_*` with no means; sums holds B·G floats.
                unsafe { a.launch(stats_cfg) }.w()?;
            }
            {
                let mut a = stream.launch_builder(&stats);
                a.arg(&xv).arg(&mut sq).arg(&sums).arg(&group_elems_i);
                // SAFETY: as above, with the group sums as means.
                unsafe { a.launch(stats_cfg) }.w()?;
            }
            with_view::<T, _>(&weight, |wv| {
                with_view::<T, _>(&bias, |bv| {
                    let mut a = stream.launch_builder(&apply);
                    a.arg(&xv)
                        .arg(&sums)
                        .arg(&sq)
                        .arg(&wv)
                        .arg(&bv)
                        .arg(&mut out);
                    a.arg(&channels)
                        .arg(&hw_i)
                        .arg(&groups_i)
                        .arg(&eps)
                        .arg(&silu_i);
                    let cfg = LaunchConfig {
                        grid_dim: (hw.div_ceil(256) as u32, (b * c) as u32, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    };
                    // SAFETY: matches `group_apply_*`; out holds B·C·H·W elements.
                    unsafe { a.launch(cfg) }.w()?;
                    Ok(())
                })
            })
        })?;
        Ok(into_tensor(out, &dev, (b, c, h, w)))
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Result, Tensor, bail};

    const NOT_BUILT: &str = "this build has no CUDA kernels (build with `--features cuda`)";

    pub(super) fn conv2d(
        _x: &Tensor,
        _weight: &Tensor,
        _bias: Option<&Tensor>,
        _stride: usize,
        _padding: usize,
    ) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }

    pub(super) fn group_norm(
        _x: &Tensor,
        _weight: &Tensor,
        _bias: &Tensor,
        _groups: usize,
        _eps: f32,
        _silu: bool,
    ) -> Result<Tensor> {
        bail!("{NOT_BUILT}")
    }
}
