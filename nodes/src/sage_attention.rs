//! SageAttention: the model with every attention replaced by 8-bit quantized attention.

use veetance_engine::{
    DataType, InputSpec, Literal, Node, NodeCtx, NodeError, NodeInputs, NodeSpec, OutputSpec,
    Outputs,
};
use veetance_models::{AttentionBackend, PvPrecision, SageConfig};

use crate::payload::ModelValue;

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

pub struct SageAttention(NodeSpec);

pub fn node() -> SageAttention {
    SageAttention(spec())
}

impl Node for SageAttention {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }

    fn run(&self, inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
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
        Ok(Outputs::new().with_object("model", DataType::Model, patched))
    }
}
