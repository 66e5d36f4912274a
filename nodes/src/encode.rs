//! Encode: prompt text to conditioning.

use std::sync::Arc;

use veetance_engine::{
    DataType, InputSpec, MemoryEstimate, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec,
    OutputSpec, Outputs, RunEnv, TextWidget,
};
use veetance_models::TextEncoder;

use crate::device::model_error;
use crate::payload::{TensorValue, TextEncoderValue};
use crate::placement::{
    budget_error, limit_device, part_use, placed, profile_input, resident_layer_bytes,
    text_encoder_key,
};
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

    fn estimate(inputs: &NodeInputs, _env: &RunEnv) -> MemoryEstimate {
        let Some(value) = profile_input(inputs, "text_encoder") else {
            return MemoryEstimate::default();
        };
        MemoryEstimate {
            vram_bytes: value.profile.encode_working_bytes(),
            uses: vec![part_use(text_encoder_key(&value.key), 1)],
            ..MemoryEstimate::default()
        }
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let encoder = inputs.object::<TextEncoderValue>("text_encoder")?;
        let prompt = inputs.text("prompt")?;
        let placed = text_encoder_on_device(&encoder, ctx)?;
        let conditioning = placed
            .encode(&[prompt])
            .map_err(budget_error(ctx, "encoding the prompt"))?;
        Ok(Outputs::new().with_object(
            "conditioning",
            types::CONDITIONING,
            TensorValue(conditioning),
        ))
    }
}

/// The text encoder to encode with: the bundle's own when it is resident; under a memory plan
/// the copy placed as the plan says (its resident layers kept for later runs, the rest
/// streamed); for Load's `offload` a whole copy on the device, dropped when the node returns,
/// before Sample moves the transformer in.
pub(crate) fn text_encoder_on_device(
    encoder: &TextEncoderValue,
    ctx: &NodeCtx<'_>,
) -> Result<Arc<TextEncoder>, NodeError> {
    let resident = &encoder.bundle.text_encoder;
    let Some(device) = &encoder.offload_to else {
        return Ok(Arc::new(resident.clone()));
    };
    match (ctx.memory_plan(), &encoder.part_key) {
        (Some(plan), Some(key)) => {
            // The budget may have changed since Load ran (the editor's slider): hold to this one.
            limit_device(ctx, device)?;
            let layers: u64 = resident.encoder().layer_bytes().iter().sum();
            let keep = resident_layer_bytes(plan, key, layers);
            placed(ctx, key, keep, keep, || {
                resident
                    .placed(device, keep)
                    .map_err(budget_error(ctx, "placing the text encoder on the device"))
            })
        }
        _ => resident
            .to_device(device)
            .map(Arc::new)
            .map_err(model_error(
                "moving the offloaded text encoder to the device",
            )),
    }
}
