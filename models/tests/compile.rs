//! A compiled transformer gives the eager model's results, and its caches are really used.

// Helpers outside #[test] functions are test code too; clippy.toml only relaxes the #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ops::ControlFlow;

use candle_core::{DType, Device, Tensor};
use veetance_models::latent::grid_for_image;
use veetance_models::{Bundle, CompileOptions, SampleRequest, Start, sample, seeded_noise};

fn bundle() -> Bundle {
    let dir = common::fixtures().join("tiny-klein");
    Bundle::load(&dir, DType::F32, &Device::Cpu).unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::rel_error(a, b).unwrap()
}

#[test]
fn compiled_sampling_matches_eager_and_fills_its_caches() {
    let bundle = bundle();
    let (grid_h, grid_w) = grid_for_image(32, 32, bundle.vae.pixels_per_token()).unwrap();
    let steps = 4;
    let options = CompileOptions {
        grid: (grid_h, grid_w),
        sigmas: bundle.scheduler.sigmas(grid_h * grid_w, steps),
        guidance: None,
        relayout_weights: true,
    };
    let compiled = bundle.transformer.compile(&options).unwrap();
    let state = compiled.compiled_state().unwrap().clone();
    assert_eq!(
        state.n_modulations(),
        steps,
        "one entry per model call of the schedule"
    );

    let cond = bundle
        .text_encoder
        .encode(&["a red circle on a blue background"])
        .unwrap();
    let channels = bundle.transformer.config().in_channels;
    let noise = seeded_noise(5, (1, channels, grid_h, grid_w), &Device::Cpu).unwrap();
    let run = |model: &veetance_models::Flux2Transformer| {
        let request = SampleRequest {
            positive: &cond,
            negative: None,
            start: Start::Noise(noise.clone()),
            steps,
            guidance: bundle.defaults.guidance,
            scheduler: &bundle.scheduler,
            references: &[],
        };
        sample(model, &request, |_, _| ControlFlow::Continue(())).unwrap()
    };
    let eager = run(&bundle.transformer);
    let fast = run(&compiled);
    assert!(
        max_rel_diff(&fast, &eager) < 1e-5,
        "latents differ by {}",
        max_rel_diff(&fast, &eager)
    );
    // Every step hit the precomputed modulation: nothing new was memoised.
    assert_eq!(state.n_modulations(), steps);

    let eager_image = bundle.vae.decode(&eager).unwrap();
    let fast_image = bundle.vae.decode(&fast).unwrap();
    let diff = (fast_image - eager_image)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-3, "decoded images differ by {diff}");

    // A step count that was not precomputed is memoised on first use.
    let request = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Noise(noise.clone()),
        steps: 2,
        guidance: bundle.defaults.guidance,
        scheduler: &bundle.scheduler,
        references: &[],
    };
    sample(&compiled, &request, |_, _| ControlFlow::Continue(())).unwrap();
    assert!(state.n_modulations() > steps);
}

#[test]
fn compiling_leaves_the_eager_model_untouched() {
    let bundle = bundle();
    let compiled = bundle
        .transformer
        .compile(&CompileOptions {
            grid: (8, 8),
            sigmas: vec![],
            guidance: None,
            relayout_weights: true,
        })
        .unwrap();
    assert!(bundle.transformer.compiled_state().is_none());
    assert!(compiled.compiled_state().is_some());
}
