//! Times one FLUX.2 transformer step on CPU with random weights (see docs/benchmarks.md).
//!
//! Usage: `cargo run --release -p veetance-models --example bench_step -- <small|klein4b-512> [runs]`
//! Threads follow `RAYON_NUM_THREADS` (candle's CPU kernels use rayon).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::{Flux2Config, Flux2Transformer, ModelError};

fn config(name: &str) -> Result<(Flux2Config, usize), ModelError> {
    match name {
        // 256x256 px image (16x16 tokens), 4 heads x 64, 2 double + 4 single blocks.
        "small" => Ok((
            Flux2Config {
                num_layers: 2,
                num_single_layers: 4,
                attention_head_dim: 64,
                num_attention_heads: 4,
                joint_attention_dim: 768,
                axes_dims_rope: vec![16, 16, 16, 16],
                ..Flux2Config::klein_4b()
            },
            16,
        )),
        // klein-4B widths at 512x512 px (32x32 tokens) with 1 double + 2 single blocks.
        "klein4b-512" => Ok((
            Flux2Config {
                num_layers: 1,
                num_single_layers: 2,
                ..Flux2Config::klein_4b()
            },
            32,
        )),
        other => Err(ModelError::InvalidArgument(format!(
            "unknown config {other}; use small or klein4b-512"
        ))),
    }
}

fn main() -> Result<(), ModelError> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("small");
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let (cfg, grid) = config(name)?;
    let device = Device::Cpu;
    let model = Flux2Transformer::random(cfg.clone(), DType::F32, &device)?;
    let x = Tensor::randn(0f32, 1.0, (1, grid * grid, cfg.in_channels), &device)?;
    let txt = Tensor::randn(0f32, 1.0, (1, 512, cfg.joint_attention_dim), &device)?;
    let t = Tensor::new(&[0.5f32], &device)?;
    let img_ids = image_ids(grid, grid, &device)?;
    let txt_ids = text_ids(512, &device)?;
    let mut times_ms = Vec::new();
    for run in 0..=runs {
        let start = Instant::now();
        let out = model.forward(&x, &img_ids, &txt, &txt_ids, &t, None)?;
        let _ = out.sum_all()?.to_scalar::<f32>()?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        // Run 0 is warm-up (page faults, allocator growth).
        if run > 0 {
            times_ms.push(ms);
        }
    }
    times_ms.sort_by(f64::total_cmp);
    let median = times_ms
        .get(times_ms.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    println!(
        "candle {name}: tokens {} + 512 text, median {median:.1} ms over {runs} runs ({times_ms:?}), threads {}",
        grid * grid,
        candle_core::utils::get_num_threads()
    );
    Ok(())
}
