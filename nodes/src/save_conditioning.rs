//! SaveConditioning: conditioning as .safetensors with one tensor `conditioning` [B, L, C].

use veetance_engine::{
    DataType, InputSpec, Literal, Node, NodeCtx, NodeError, NodeInputs, NodeSpec, OutputSpec,
    Outputs, TextWidget,
};

use crate::payload::TensorValue;
use crate::tensor_io::save_tensor;

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

pub struct SaveConditioning(NodeSpec);

pub fn node() -> SaveConditioning {
    SaveConditioning(spec())
}

impl Node for SaveConditioning {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }

    fn run(&self, inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let conditioning = inputs.object::<TensorValue>("conditioning")?;
        save_tensor(ctx, inputs.text("path")?, "conditioning", &conditioning.0)
    }
}
