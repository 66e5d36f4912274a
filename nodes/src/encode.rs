//! Encode: prompt text to conditioning.

use veetance_engine::{
    DataType, InputSpec, Node, NodeCtx, NodeError, NodeInputs, NodeSpec, OutputSpec, Outputs,
    TextWidget,
};

use crate::device::model_error;
use crate::payload::{TensorValue, TextEncoderValue};

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

pub struct Encode(NodeSpec);

pub fn node() -> Encode {
    Encode(spec())
}

impl Node for Encode {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }

    fn run(&self, inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let encoder = inputs.object::<TextEncoderValue>("text_encoder")?;
        let prompt = inputs.text("prompt")?;
        let conditioning = encoder
            .0
            .text_encoder
            .encode(&[prompt])
            .map_err(model_error("encoding the prompt"))?;
        Ok(Outputs::new().with_object(
            "conditioning",
            DataType::Conditioning,
            TensorValue(conditioning),
        ))
    }
}
