//! Encode: prompt text to conditioning.

use veetance_engine::{DataType, InputSpec, NodeSpec, OutputSpec, TextWidget};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "Encode",
        "conditioning",
        "Applies the checkpoint's chat template, tokenizes, runs the text encoder and stacks the configured hidden layers, padded to the model's length.",
    )
    .input(InputSpec::new("text_encoder", DataType::TextEncoder).doc("From Load."))
    .input(
        InputSpec::new("prompt", DataType::Text)
            .widget(TextWidget::Multiline)
            .doc("What to draw."),
    )
    .output(OutputSpec::new("conditioning", DataType::Conditioning, "Text embeddings [B, L, C]."))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the text encoder (veetance-models) is not wired into the nodes yet",
    )
}
