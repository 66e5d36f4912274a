//! SageAttention: the model with every attention replaced by 8-bit quantized attention.

use veetance_engine::{DataType, InputSpec, Literal, NodeSpec, OutputSpec};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "SageAttention",
        "model",
        "Replaces every attention of the model with SageAttention: K smoothed, Q/K INT8 per block, PV in f16 or fp8, f32 accumulation.",
    )
    .input(InputSpec::new("model", DataType::Model).doc("The model to patch."))
    .input(
        InputSpec::new("pv", DataType::Text)
            .default_value(Literal::Text("f16".into()))
            .choices(&["f16", "fp8"])
            .doc("Precision of the P·V product."),
    )
    .input(
        InputSpec::new("smooth_k", DataType::Bool)
            .default_value(Literal::Bool(true))
            .doc("Subtract the mean of K over tokens before quantizing (keeps accuracy on biased K)."),
    )
    .output(OutputSpec::new("model", DataType::Model, "The same weights with SageAttention."))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the attention backends (veetance-models) are not wired into the nodes yet",
    )
}
