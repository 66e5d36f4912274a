//! Sample: flow-matching Euler sampling with the FLUX.2 schedule.

use veetance_engine::{DataType, InputSpec, Literal, NodeSpec, OutputSpec};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "Sample",
        "sampling",
        "Flow-matching Euler sampling with the FLUX.2 schedule. `noise` replaces the seeded noise; `latent` with denoise < 1 is img2img.",
    )
    .input(InputSpec::new("model", DataType::Model).doc("The denoising model."))
    .input(InputSpec::new("positive", DataType::Conditioning).doc("What to draw."))
    .input(InputSpec::new("negative", DataType::Conditioning).optional().doc("What to avoid (CFG, non-distilled models only)."))
    .input(InputSpec::new("noise", DataType::Latent).optional().doc("Initial noise instead of the seeded noise."))
    .input(InputSpec::new("latent", DataType::Latent).optional().doc("Start image for img2img."))
    .input(
        InputSpec::new("denoise", DataType::Float)
            .default_value(Literal::Float(1.0))
            .range(0.0, 1.0)
            .doc("How much of the schedule to run; below 1 keeps part of `latent`."),
    )
    .input(
        InputSpec::new("seed", DataType::Int)
            .default_value(Literal::Int(0))
            .doc("Noise seed (any integer); the same seed gives the same image."),
    )
    .input(InputSpec::new("steps", DataType::Int).optional().range(1.0, 1000.0).doc("Sampling steps [model default]."))
    .input(InputSpec::new("guidance", DataType::Float).optional().range(0.0, 100.0).doc("Guidance scale [model default]."))
    .input(InputSpec::new("width", DataType::Int).optional().range(16.0, 8192.0).doc("Image width in pixels [model default]."))
    .input(InputSpec::new("height", DataType::Int).optional().range(16.0, 8192.0).doc("Image height in pixels [model default]."))
    .output(OutputSpec::new("latent", DataType::Latent, "The denoised latent."))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the sampler (veetance-models) is not wired into the nodes yet",
    )
}
