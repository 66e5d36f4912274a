//! SaveConditioning: conditioning as .safetensors with one tensor `conditioning` [B, L, C].

use veetance_engine::{
    DataType, InputSpec, Literal, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec,
    Outputs, TextWidget,
};

use crate::payload::TensorValue;
use crate::tensor_io::save_tensor;
use crate::types;

/// The `SaveConditioning` node.
pub struct SaveConditioning;

impl NodeKind for SaveConditioning {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "SaveConditioning",
            "conditioning",
            "Writes conditioning as .safetensors with one tensor `conditioning` [B, L, C].",
        )
        .effect()
        .input(InputSpec::new("conditioning", types::CONDITIONING).doc("The conditioning to save."))
        .input(
            InputSpec::new("path", DataType::TEXT)
                .default_value(Literal::Text("conditioning".into()))
                .widget(TextWidget::Path)
                .doc("File name prefix, relative to --out (absolute paths and `..` are refused: outputs stay in the output folder)."),
        )
        .output(OutputSpec::new(
            "files",
            DataType::TEXT,
            "The path written.",
        ))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let conditioning = inputs.object::<TensorValue>("conditioning")?;
        save_tensor(ctx, inputs.text("path")?, "conditioning", &conditioning.0)
    }
}
