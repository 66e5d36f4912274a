//! SaveConditioning: conditioning as safetensors with one tensor `conditioning` [B, L, C].

use veetance_engine::{DataType, InputSpec, Literal, NodeSpec, OutputSpec, TextWidget};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "SaveConditioning",
        "conditioning",
        "Writes conditioning as .safetensors with one tensor `conditioning` [B, L, C].",
    )
    .effect()
    .input(InputSpec::new("conditioning", DataType::Conditioning).doc("The conditioning to save."))
    .input(
        InputSpec::new("path", DataType::Text)
            .default_value(Literal::Text("conditioning".into()))
            .widget(TextWidget::Path)
            .doc("File name prefix; relative paths go under --out."),
    )
    .output(OutputSpec::new(
        "files",
        DataType::Text,
        "The path written.",
    ))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "conditioning tensors (veetance-models) are not wired into the nodes yet",
    )
}
