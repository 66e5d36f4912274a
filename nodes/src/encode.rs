//! Encode: prompt text to conditioning.

use veetance_engine::{
    DataType, InputSpec, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec, Outputs,
    TextWidget,
};

use crate::device::model_error;
use crate::payload::{TensorValue, TextEncoderValue};
use crate::types;

/// The `Encode` node.
pub struct Encode;

impl NodeKind for Encode {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Encode",
            "conditioning",
            "Applies the checkpoint's chat template, tokenizes, runs the text encoder and stacks the configured hidden layers, padded to the model's length.",
        )
        .describes_output()
        .input(InputSpec::new("text_encoder", types::TEXT_ENCODER).doc("From Load."))
        .input(
            InputSpec::new("prompt", DataType::TEXT)
                .widget(TextWidget::Multiline)
                .doc("What to draw."),
        )
        .output(OutputSpec::new("conditioning", types::CONDITIONING, "Text embeddings [B, L, C]."))
    }

    fn run(inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let encoder = inputs.object::<TextEncoderValue>("text_encoder")?;
        let prompt = inputs.text("prompt")?;
        let resident = &encoder.bundle.text_encoder;
        // An offloaded encoder is copied to the GPU for this prompt; the copy is dropped when
        // the node returns, before Sample moves the transformer in.
        let moved = match &encoder.offload_to {
            Some(device) => Some(resident.to_device(device).map_err(model_error(
                "moving the offloaded text encoder to the device",
            ))?),
            None => None,
        };
        let conditioning = moved
            .as_ref()
            .unwrap_or(resident)
            .encode(&[prompt])
            .map_err(model_error("encoding the prompt"))?;
        Ok(Outputs::new().with_object(
            "conditioning",
            types::CONDITIONING,
            TensorValue(conditioning),
        ))
    }
}
