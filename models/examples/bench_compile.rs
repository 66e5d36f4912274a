//! Eager vs compiled sampling on CPU: the tiny test checkpoint, and klein-4B widths with a few
//! blocks at 512² (random weights). Prints one JSON line per configuration.
//!
//! Usage: `cargo run --release -p veetance-models --example bench_compile -- [tiny|fixture|klein4b-512] [runs]`
//! Set `RELAYOUT_WEIGHTS=1` to also store the projection weights pre-transposed.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use veetance_models::latent::grid_for_image;
use veetance_models::{
    Bundle, CompileOptions, Flux2Config, Flux2Transformer, ModelError, SampleRequest,
    SchedulerConfig, Start, sample, seeded_noise,
};

/// Runs eager and compiled sampling alternately (so both see the same machine load) and
/// returns their median times and last outputs.
fn time_alternating(
    eager: &Flux2Transformer,
    compiled: &Flux2Transformer,
    cond: &Tensor,
    noise: &Tensor,
    steps: usize,
    scheduler: &SchedulerConfig,
    runs: usize,
) -> Result<(f64, f64, Tensor, Tensor), ModelError> {
    let mut times_ms = [Vec::new(), Vec::new()];
    let mut outputs = [None, None];
    for run in 0..=runs {
        for (idx, model) in [eager, compiled].into_iter().enumerate() {
            let request = SampleRequest {
                positive: cond,
                negative: None,
                start: Start::Noise(noise.clone()),
                steps,
                guidance: 1.0,
                scheduler,
                references: &[],
            };
            let started = Instant::now();
            let out = sample(model, &request, |_, _| ControlFlow::Continue(()))?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            // Run 0 warms up allocator and caches.
            if run > 0
                && let (Some(times), Some(slot)) = (times_ms.get_mut(idx), outputs.get_mut(idx))
            {
                times.push(ms);
                *slot = Some(out);
            }
        }
    }
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let [mut eager_times, mut compiled_times] = times_ms;
    let [eager_out, compiled_out] = outputs;
    match (eager_out, compiled_out) {
        (Some(e), Some(c)) => Ok((median(&mut eager_times), median(&mut compiled_times), e, c)),
        _ => Err(ModelError::InvalidArgument(
            "runs must be at least 1".into(),
        )),
    }
}

fn main() -> Result<(), ModelError> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("tiny");
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    let device = Device::Cpu;
    let (model, cond, grid, steps, scheduler) = match name {
        "tiny" | "fixture" => {
            // `tiny` is the shipped built-in model; `fixture` the random test checkpoint.
            let sub = if name == "tiny" {
                "tiny"
            } else {
                "tests/fixtures/tiny-klein"
            };
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(sub);
            let bundle = Bundle::load(&dir, DType::F32, &device)?;
            let cond = bundle
                .text_encoder
                .encode(&["a red circle on a blue background"])?;
            let grid = grid_for_image(64, 64, bundle.vae.pixels_per_token())?;
            let steps = bundle.defaults.steps;
            (bundle.transformer, cond, grid, steps, bundle.scheduler)
        }
        "klein4b-512" => {
            let cfg = Flux2Config {
                num_layers: 1,
                num_single_layers: 2,
                ..Flux2Config::klein_4b()
            };
            let cond = Tensor::randn(0f32, 1.0, (1, 512, cfg.joint_attention_dim), &device)?;
            let model = Flux2Transformer::random(cfg, DType::F32, &device)?;
            (model, cond, (32, 32), 2, SchedulerConfig::default())
        }
        other => {
            return Err(ModelError::InvalidArgument(format!(
                "unknown config {other}; use tiny, fixture or klein4b-512"
            )));
        }
    };
    let channels = model.config().in_channels;
    let noise = seeded_noise(1, (1, channels, grid.0, grid.1), &device)?;
    let compile_started = Instant::now();
    let compiled = model.compile(&CompileOptions {
        grid,
        sigmas: scheduler.sigmas(grid.0 * grid.1, steps),
        guidance: None,
        relayout_weights: std::env::var_os("RELAYOUT_WEIGHTS").is_some(),
    })?;
    let compile_ms = compile_started.elapsed().as_secs_f64() * 1e3;
    let (eager_ms, compiled_ms, eager, fast) =
        time_alternating(&model, &compiled, &cond, &noise, steps, &scheduler, runs)?;
    let diff = (&fast - &eager)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = eager.abs()?.max_all()?.to_scalar::<f32>()?;
    println!(
        "{{\"config\":\"{name}\",\"tokens\":{},\"steps\":{steps},\"runs\":{runs},\"eager_ms\":{eager_ms:.1},\"compiled_ms\":{compiled_ms:.1},\"speedup\":{:.3},\"compile_ms\":{compile_ms:.1},\"max_rel_diff\":{:.2e},\"threads\":{}}}",
        grid.0 * grid.1,
        eager_ms / compiled_ms,
        diff / scale.max(1e-12),
        candle_core::utils::get_num_threads()
    );
    Ok(())
}
