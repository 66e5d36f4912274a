//! Schedule values, seeded noise, cancellation and img2img of the sampler.

// Helpers outside #[test] functions are test code too; clippy.toml only relaxes the #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use veetance_models::QuantMode;
use veetance_models::sampling::empirical_mu;
use veetance_models::{
    Flux2Transformer, ModelError, SampleRequest, SchedulerConfig, Start, sample, seeded_noise,
};

fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() < tol, "{actual:?} vs {expected:?}");
    }
}

#[test]
fn flux2_schedule_matches_the_worked_values() {
    // flux2-spec.md §4.1.
    let cfg = SchedulerConfig::default();
    assert!((empirical_mu(4096, 4) - 2.2912).abs() < 1e-4);
    assert!((empirical_mu(1024, 4) - 2.0307).abs() < 1e-4);
    assert!((empirical_mu(4096, 50) - 2.0234).abs() < 1e-4);
    assert!(
        (empirical_mu(8192, 4) - (0.00016927 * 8192.0 + 0.45666666)).abs() < 1e-9,
        "above 4300 tokens μ is linear"
    );
    assert_close(
        &cfg.sigmas(4096, 4),
        &[1.0, 0.9674, 0.9081, 0.7672, 0.0],
        1e-4,
    );
    assert_close(
        &cfg.sigmas(1024, 4),
        &[1.0, 0.9581, 0.8840, 0.7175, 0.0],
        1e-4,
    );
}

#[test]
fn static_shift_schedule_when_dynamic_shifting_is_off() {
    let cfg = SchedulerConfig {
        use_dynamic_shifting: false,
        shift: 1.0,
        ..SchedulerConfig::default()
    };
    assert_close(&cfg.sigmas(64, 4), &[1.0, 0.75, 0.5, 0.25, 0.0], 1e-7);
    let cfg = SchedulerConfig {
        use_dynamic_shifting: false,
        shift: 3.0,
        ..SchedulerConfig::default()
    };
    assert_close(&cfg.sigmas(64, 2), &[1.0, 0.75, 0.0], 1e-7);
}

#[test]
fn seeded_noise_is_deterministic_and_standard_normal() {
    let dev = Device::Cpu;
    let a = seeded_noise(42, (1, 128, 16, 16), &dev).unwrap();
    let b = seeded_noise(42, (1, 128, 16, 16), &dev).unwrap();
    let c = seeded_noise(43, (1, 128, 16, 16), &dev).unwrap();
    let av: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(av, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert_ne!(av, c.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let n = av.len() as f64;
    let mean = av.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = av
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
        "mean {mean}, var {var}"
    );
    // Pinned values: noise must not change across versions, or saved workflows change their images.
    assert_eq!(
        &av[..2],
        &[0.832_712_2, -0.268_972_4],
        "first values of seed 42"
    );
}

fn model() -> Flux2Transformer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-klein/transformer");
    Flux2Transformer::load(&dir, DType::F32, &Device::Cpu, QuantMode::Exact).unwrap()
}

fn cond() -> Tensor {
    (seeded_noise(5, (1, 1, 512, 96), &Device::Cpu)
        .unwrap()
        .squeeze(0)
        .unwrap()
        * 0.1)
        .unwrap()
}

#[test]
fn cancelling_stops_between_steps() {
    let model = model();
    let cond = cond();
    let scheduler = SchedulerConfig::default();
    let noise = seeded_noise(1, (1, 128, 4, 4), &Device::Cpu).unwrap();
    let request = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Noise(noise),
        steps: 4,
        guidance: 1.0,
        scheduler: &scheduler,
        references: &[],
    };
    let mut seen = Vec::new();
    let err = sample(&model, &request, |step, total| {
        seen.push((step, total));
        if step == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Cancelled {
                completed_steps: 2,
                total_steps: 4
            }
        ),
        "{err}"
    );
    assert_eq!(seen, vec![(1, 4), (2, 4)]);
}

#[test]
fn img2img_runs_the_tail_of_the_schedule() {
    let model = model();
    let cond = cond();
    let scheduler = SchedulerConfig::default();
    let dev = Device::Cpu;
    let noise = seeded_noise(1, (1, 128, 4, 4), &dev).unwrap();
    let init = seeded_noise(2, (1, 128, 4, 4), &dev).unwrap();
    let run = |start: Start, steps_seen: &mut usize| {
        let request = SampleRequest {
            positive: &cond,
            negative: None,
            start,
            steps: 4,
            guidance: 1.0,
            scheduler: &scheduler,
            references: &[],
        };
        sample(&model, &request, |_, total| {
            *steps_seen = total;
            ControlFlow::Continue(())
        })
        .unwrap()
    };
    let mut total = 0;
    let txt2img = run(Start::Noise(noise.clone()), &mut total);
    assert_eq!(total, 4);
    // denoise = 1 starts at σ = 1, where the init latent has no weight: identical to text-to-image.
    let full = run(
        Start::Image {
            latent: init.clone(),
            noise: noise.clone(),
            denoise: 1.0,
        },
        &mut total,
    );
    assert_eq!(common::max_abs_diff(&full, &txt2img).unwrap(), 0.0);
    // denoise = 0.5 runs the last 2 of 4 steps and stays closer to the init latent.
    let half = run(
        Start::Image {
            latent: init.clone(),
            noise: noise.clone(),
            denoise: 0.5,
        },
        &mut total,
    );
    assert_eq!(total, 2);
    let dist = |a: &Tensor| {
        (a - &init)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(
        dist(&half) < dist(&txt2img),
        "{} vs {}",
        dist(&half),
        dist(&txt2img)
    );

    // denoise = 0 runs no step: the start latent comes back; outside [0, 1] is an error.
    let start_latent = run(
        Start::Image {
            latent: init.clone(),
            noise: noise.clone(),
            denoise: 0.0,
        },
        &mut total,
    );
    assert_eq!(common::max_abs_diff(&start_latent, &init).unwrap(), 0.0);
    let bad = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Image {
            latent: init.clone(),
            noise: noise.clone(),
            denoise: 1.5,
        },
        steps: 4,
        guidance: 1.0,
        scheduler: &scheduler,
        references: &[],
    };
    assert!(matches!(
        sample(&model, &bad, |_, _| ControlFlow::Continue(())),
        Err(ModelError::InvalidArgument(_))
    ));
}

#[test]
fn empty_latents_and_references_are_errors_not_panics() {
    let model = model();
    let cond = cond();
    let scheduler = SchedulerConfig::default();
    let empty = Tensor::zeros((1, 128, 0, 4), DType::F32, &Device::Cpu).unwrap();
    let noise = seeded_noise(1, (1, 128, 4, 4), &Device::Cpu).unwrap();
    for (start, references) in [
        (empty.clone(), vec![]),
        (noise.clone(), vec![empty.clone()]),
    ] {
        let request = SampleRequest {
            positive: &cond,
            negative: None,
            start: Start::Noise(start),
            steps: 2,
            guidance: 1.0,
            scheduler: &scheduler,
            references: &references,
        };
        assert!(matches!(
            sample(&model, &request, |_, _| ControlFlow::Continue(())),
            Err(ModelError::InvalidArgument(_))
        ));
    }
}

#[test]
fn wrong_latent_channels_and_zero_steps_are_errors() {
    let model = model();
    let cond = cond();
    let scheduler = SchedulerConfig::default();
    let noise = seeded_noise(1, (1, 64, 4, 4), &Device::Cpu).unwrap();
    let request = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Noise(noise),
        steps: 4,
        guidance: 1.0,
        scheduler: &scheduler,
        references: &[],
    };
    let err = sample(&model, &request, |_, _| ControlFlow::Continue(())).unwrap_err();
    assert!(err.to_string().contains("64 channels"), "{err}");
    let noise = seeded_noise(1, (1, 128, 4, 4), &Device::Cpu).unwrap();
    let request = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Noise(noise),
        steps: 0,
        guidance: 1.0,
        scheduler: &scheduler,
        references: &[],
    };
    assert!(matches!(
        sample(&model, &request, |_, _| ControlFlow::Continue(())),
        Err(ModelError::InvalidArgument(_))
    ));
}

#[test]
fn unsupported_scheduler_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"use_dynamic_shifting": true, "use_karras_sigmas": true}"#,
    )
    .unwrap();
    let err = SchedulerConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("use_karras_sigmas") && err.contains("scheduler_config.json"),
        "{err}"
    );
    std::fs::write(
        &path,
        r#"{"use_dynamic_shifting": false, "shift": 2.0, "use_karras_sigmas": false}"#,
    )
    .unwrap();
    let cfg = SchedulerConfig::load(&path).unwrap();
    assert!(!cfg.use_dynamic_shifting && cfg.shift == 2.0);
}

#[test]
fn a_set_interrupt_flag_stops_a_step_between_blocks() {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let model = model().with_interrupt(flag.clone());
    let cond = cond();
    let scheduler = SchedulerConfig::default();
    let request = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Noise(seeded_noise(1, (1, 128, 4, 4), &Device::Cpu).unwrap()),
        steps: 4,
        guidance: 1.0,
        scheduler: &scheduler,
        references: &[],
    };
    // The progress callback never runs: the first step stops inside its forward call.
    let err = sample(&model, &request, |_, _| panic!("no step completes")).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Cancelled {
                completed_steps: 0,
                total_steps: 4
            }
        ),
        "{err}"
    );
    flag.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(sample(&model, &request, |_, _| ControlFlow::Continue(())).is_ok());
}
