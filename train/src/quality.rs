//! Sampling the shipped model and measuring it against the captions it was given.
//!
//! The quality gates take 40 single-object captions built from the whole vocabulary (every colour
//! as background and as object, every shape, both sizes and no size, all nine positions), each with
//! its own noise seed, sample them at 64×64 with the checkpoint's default steps and guidance, and
//! read the images back with [`veetance_scenes::analyse`].

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};
use veetance_models::latent::grid_for_image;
use veetance_models::{Bundle, SampleRequest, Start, sample, seeded_noise};
use veetance_scenes::analyse::analyse;
use veetance_scenes::{Colour, Position, Scene, Shape, Size};

use crate::{TrainError, tiny};

/// One evaluation case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The intended scene (its caption is the prompt).
    pub scene: Scene,
    /// Noise seed.
    pub seed: u64,
}

/// The 40 fixed cases of the quality gates.
pub fn gate_cases() -> Vec<Case> {
    let sizes = [None, Some(Size::Small), Some(Size::Large)];
    (0..40u64)
        .map(|i| {
            let k = i as usize;
            let background = Colour::ALL[(k * 7 + 3) % 10];
            let mut object = Colour::ALL[(k * 3 + 1) % 10];
            if object == background {
                object = Colour::ALL[(k * 3 + 2) % 10];
            }
            let shape = Shape::ALL[k % 8];
            let position = Position::ALL[(k * 5 + 2) % 9];
            let size = sizes[(k / 3) % 3];
            Case {
                scene: Scene::single(background, shape, object, size, position, 900 + i),
                seed: 4242 + i * 17,
            }
        })
        .collect()
}

/// Samples one 64×64 image for `prompt` with noise `seed`: RGB8, row-major.
pub fn generate(bundle: &Bundle, prompt: &str, seed: u64) -> Result<Vec<u8>, TrainError> {
    let side = tiny::IMAGE_SIDE_PX;
    let device = bundle.vae.device().clone();
    let cond = bundle.text_encoder.encode(&[prompt])?;
    let (h, w) = grid_for_image(side, side, bundle.vae.pixels_per_token())?;
    let channels = bundle.transformer.config().in_channels;
    let noise = seeded_noise(seed, (1, channels, h, w), &device)?;
    let negative = bundle.negative_conditioning()?;
    let request = SampleRequest {
        positive: &cond,
        negative: negative.as_ref(),
        start: Start::Noise(noise),
        steps: bundle.defaults.steps,
        guidance: bundle.defaults.guidance,
        scheduler: &bundle.scheduler,
        references: &[],
    };
    let latent = sample(&bundle.transformer, &request, |_, _| {
        ControlFlow::Continue(())
    })?;
    let image = bundle.vae.decode(&latent)?;
    to_rgb8(&image)
}

/// `[1, 3, H, W]` in [-1, 1] → RGB8 row-major.
pub fn to_rgb8(image: &Tensor) -> Result<Vec<u8>, TrainError> {
    let image = image
        .to_dtype(DType::F32)?
        .squeeze(0)?
        .permute((1, 2, 0))?
        .flatten_all()?;
    let values: Vec<f32> = image.to_vec1()?;
    Ok(values
        .into_iter()
        .map(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
        .collect())
}

/// Gate results.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cases evaluated.
    pub cases: usize,
    /// Background colour right.
    pub background_ok: usize,
    /// Object colour right.
    pub colour_ok: usize,
    /// Object in the requested grid cell.
    pub position_ok: usize,
    /// One line per case that failed any check.
    pub failures: Vec<String>,
}

impl Report {
    /// Fraction helper.
    fn frac(n: usize, d: usize) -> f64 {
        n as f64 / d.max(1) as f64
    }

    /// Background accuracy in [0, 1].
    pub fn background_rate(&self) -> f64 {
        Self::frac(self.background_ok, self.cases)
    }

    /// Object colour accuracy in [0, 1].
    pub fn colour_rate(&self) -> f64 {
        Self::frac(self.colour_ok, self.cases)
    }

    /// Position accuracy in [0, 1].
    pub fn position_rate(&self) -> f64 {
        Self::frac(self.position_ok, self.cases)
    }

    /// One-line summary.
    pub fn summary(&self) -> String {
        format!(
            "background {}/{} ({:.0}%), object colour {}/{} ({:.0}%), position {}/{} ({:.0}%)",
            self.background_ok,
            self.cases,
            100.0 * self.background_rate(),
            self.colour_ok,
            self.cases,
            100.0 * self.colour_rate(),
            self.position_ok,
            self.cases,
            100.0 * self.position_rate()
        )
    }
}

/// Runs the cases through the model and checks each image.
pub fn evaluate(bundle: &Bundle, cases: &[Case]) -> Result<Report, TrainError> {
    let side = tiny::IMAGE_SIDE_PX;
    let mut report = Report::default();
    for case in cases {
        let caption = case.scene.caption();
        let rgb = generate(bundle, &caption, case.seed)?;
        let Some(found) = analyse(&rgb, side) else {
            return Err(TrainError::Config(
                "generated image has the wrong size".into(),
            ));
        };
        let Some(object) = case.scene.objects.first() else {
            continue;
        };
        report.cases += 1;
        let bg_ok = found.background == case.scene.background;
        let colour_ok = found.object_colour == Some(object.colour);
        let position_ok = found.object_position == object.position;
        report.background_ok += usize::from(bg_ok);
        report.colour_ok += usize::from(colour_ok);
        report.position_ok += usize::from(position_ok);
        if !(bg_ok && colour_ok && position_ok) {
            report.failures.push(format!(
                "{caption:?} (seed {}): background {:?}, object {:?} at {:?}",
                case.seed, found.background, found.object_colour, found.object_position
            ));
        }
    }
    Ok(report)
}
