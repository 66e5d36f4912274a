//! SageAttention: the model with every attention replaced by 8-bit quantized attention.

use veetance_engine::{
    DataType, InputSpec, Literal, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec,
    Outputs,
};
use veetance_models::{AttentionBackend, PvPrecision, SageConfig};

use crate::payload::ModelValue;
use crate::types;

/// The `SageAttention` node.
pub struct SageAttention;

impl NodeKind for SageAttention {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "SageAttention",
            "model",
            "Replaces every attention of the model with SageAttention: K smoothed, Q/K INT8 per block, PV in f16 or fp8, f32 accumulation.",
        )
        .input(InputSpec::new("model", types::MODEL).doc("The model to patch."))
        .input(
            InputSpec::new("pv", DataType::TEXT)
                .default_value(Literal::Text("f16".into()))
                .choices(&["f16", "fp8"])
                .doc("Precision of the P·V product."),
        )
        .input(
            InputSpec::new("smooth_k", DataType::BOOL)
                .default_value(Literal::Bool(true))
                .doc("Subtract the mean of K over tokens before quantizing (keeps accuracy on biased K)."),
        )
        .output(OutputSpec::new("model", types::MODEL, "The same weights with SageAttention."))
    }

    fn estimate(
        inputs: &NodeInputs,
        _env: &veetance_engine::RunEnv,
    ) -> veetance_engine::MemoryEstimate {
        // The same weights go on: downstream estimates see Load's model sizes.
        veetance_engine::MemoryEstimate {
            outputs: crate::placement::pass_model_through(inputs),
            ..veetance_engine::MemoryEstimate::default()
        }
    }

    fn run(inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let model = inputs.object::<ModelValue>("model")?;
        let pv = match inputs.text("pv")? {
            "fp8" => PvPrecision::Fp8E4M3,
            _ => PvPrecision::F16,
        };
        let config = SageConfig {
            smooth_k: inputs.bool("smooth_k")?,
            pv,
            ..SageConfig::default()
        };
        let patched = ModelValue {
            transformer: model
                .transformer
                .with_attention(AttentionBackend::Sage(config)),
            ..(*model).clone()
        };
        Ok(Outputs::new().with_object("model", types::MODEL, patched))
    }
}
