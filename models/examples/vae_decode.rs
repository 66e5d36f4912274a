//! VAE decode time at 1024² (the FLUX.2 VAE with random bf16 weights on the GPU), for profiling:
//! `cargo run --release -p veetance-models --features cuda --example vae_decode [-- ITERS [SIDE]]`.

use std::time::Instant;

use anyhow::{Context as _, Result};
use candle_core::{DType, Device, Tensor};
use veetance_models::{Vae, VaeConfig};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let iters: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let side_px: usize = args.next().map_or(Ok(1024), |a| a.parse())?;
    let gpu = Device::new_cuda(0).context("this example needs a CUDA device")?;
    let vae = Vae::random(VaeConfig::flux2(), DType::BF16, &gpu)?;
    let grid = side_px / vae.pixels_per_token();
    let latent = Tensor::randn(0f32, 1.0, (1, 128, grid, grid), &gpu)?;
    vae.decode(&latent)?;
    gpu.synchronize()?;
    for _ in 0..iters {
        let start = Instant::now();
        let image = vae.decode(&latent)?;
        gpu.synchronize()?;
        println!(
            "{{\"side_px\":{side_px},\"decode_ms\":{:.1},\"shape\":\"{:?}\"}}",
            start.elapsed().as_secs_f64() * 1e3,
            image.dims()
        );
    }
    Ok(())
}
