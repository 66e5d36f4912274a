//! Compile: prepares a model for repeated sampling at one size.

use veetance_engine::{DataType, InputSpec, NodeSpec, OutputSpec};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "Compile",
        "model",
        "Prepares the model for repeated sampling at width×height: pre-cast weights, precomputed RoPE tables and per-step modulation, fused kernels.",
    )
    .input(InputSpec::new("model", DataType::Model).doc("The model to prepare."))
    .input(InputSpec::new("width", DataType::Int).range(16.0, 8192.0).doc("Image width in pixels."))
    .input(InputSpec::new("height", DataType::Int).range(16.0, 8192.0).doc("Image height in pixels."))
    .output(OutputSpec::new("model", DataType::Model, "The prepared model."))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the transformer (veetance-models) is not wired into the nodes yet",
    )
}
