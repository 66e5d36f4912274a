//! Attention kernel throughput on the GPU: the fused exact kernel and SageAttention (kernel alone
//! and with its quantisation pre-pass), in TOPS = 4·B·H·N²·D / time, the convention of the
//! FlashAttention and SageAttention papers.
//!
//! `cargo run --release -p veetance-gpu --features cuda --example attention_tops [-- N ...]`
//! (default N: 4608 = klein at 1024² and 16896 = 2048²; B·H = 1·24, klein-4B's heads, and the
//! SageAttention paper's 4·32).

use std::time::Instant;

use anyhow::{Context as _, Result};
use candle_core::{DType, Device, Tensor};

fn time_ms(device: &Device, iters: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    device.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

fn main() -> Result<()> {
    let device = Device::new_cuda(0).context("this example needs a CUDA device")?;
    let name = veetance_gpu::memory::device_name(&device).unwrap_or_default();
    let lens: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("N must be an integer"))
        .collect::<Result<_>>()?;
    let lens = if lens.is_empty() {
        vec![4608, 16896]
    } else {
        lens
    };
    let d = 128;
    println!("# {name}");
    for &(b, h) in &[(1usize, 24usize), (4, 32)] {
        for &n in &lens {
            let make = || -> Result<Tensor> {
                Ok(Tensor::randn(0f32, 1.0, (b, h, n, d), &device)?.to_dtype(DType::BF16)?)
            };
            let (q, k, v) = (make()?, make()?, make()?);
            let ops = 4.0 * (b * h) as f64 * (n as f64).powi(2) * d as f64;
            let iters = if n > 8192 { 5 } else { 20 };
            let scale = 1.0 / (d as f64).sqrt();
            let flash = time_ms(&device, iters, || {
                Ok(veetance_gpu::attention::flash_attention(&q, &k, &v, scale)?)
            })?;
            let quantized = veetance_gpu::attention::sage_quantize(&q, &k, &v, scale, true)?;
            let sage_kernel = time_ms(&device, iters, || {
                Ok(veetance_gpu::attention::sage_attention_quantized(
                    &quantized,
                )?)
            })?;
            let sage_total = time_ms(&device, iters, || {
                Ok(veetance_gpu::attention::sage_attention(
                    &q, &k, &v, scale, true,
                )?)
            })?;
            let tops = |ms: f64| ops / (ms * 1e-3) / 1e12;
            println!(
                "{{\"b\":{b},\"h\":{h},\"n\":{n},\"d\":{d},\"flash_ms\":{flash:.3},\"flash_tops\":{:.1},\"sage_kernel_ms\":{sage_kernel:.3},\"sage_kernel_tops\":{:.1},\"sage_total_ms\":{sage_total:.3},\"sage_total_tops\":{:.1}}}",
                tops(flash),
                tops(sage_kernel),
                tops(sage_total)
            );
        }
    }
    Ok(())
}
