//! Decode: latent to image with the VAE.

use veetance_engine::{DataType, InputSpec, NodeSpec, OutputSpec};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new("Decode", "latent", "VAE decode (tiled for large images).")
        .input(InputSpec::new("vae", DataType::Vae).doc("From Load."))
        .input(InputSpec::new("latent", DataType::Latent).doc("From Sample or LoadLatent."))
        .output(OutputSpec::new(
            "image",
            DataType::Image,
            "The decoded RGB image.",
        ))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the VAE (veetance-models) is not wired into the nodes yet",
    )
}
