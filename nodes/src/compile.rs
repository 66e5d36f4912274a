//! Compile: prepares a model for repeated sampling at one size.

use veetance_engine::{
    DataType, InputSpec, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec, Outputs,
};
use veetance_models::CompileOptions;
use veetance_models::latent::grid_for_requested_size;

use crate::device::model_error;
use crate::payload::ModelValue;
use crate::types;

/// The `Compile` node.
pub struct Compile;

impl NodeKind for Compile {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Compile",
            "model",
            "Prepares the model for repeated sampling at width×height: per-step modulation precomputed for the model's default schedule, the text projection computed once per prompt instead of once per step. Shares the weights; same image within 1e-5.",
        )
        .input(InputSpec::new("model", types::MODEL).doc("The model to prepare."))
        .input(
            InputSpec::new("width", DataType::INT)
                .range(16.0, 8192.0)
                .doc("Image width in pixels."),
        )
        .input(
            InputSpec::new("height", DataType::INT)
                .range(16.0, 8192.0)
                .doc("Image height in pixels."),
        )
        .output(OutputSpec::new("model", types::MODEL, "The prepared model."))
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
        let width_px = usize::try_from(inputs.int("width")?)
            .map_err(|_| NodeError::msg("width must be positive"))?;
        let height_px = usize::try_from(inputs.int("height")?)
            .map_err(|_| NodeError::msg("height must be positive"))?;
        let bundle = &model.bundle;
        let grid = grid_for_requested_size(height_px, width_px, bundle.vae.pixels_per_token())
            .map_err(model_error("choosing the latent size"))?;
        let options = CompileOptions::for_schedule(
            &bundle.scheduler,
            grid,
            bundle.defaults.steps,
            Some(bundle.defaults.guidance),
        );
        let compiled = if model.offload_to.is_some() {
            // The weights are in RAM: compile the device copy Sample makes (the precomputation
            // belongs on the device that samples, and is cheap next to the transfer).
            ModelValue {
                compile_on_device: Some(options),
                default_size_px: (width_px, height_px),
                ..(*model).clone()
            }
        } else {
            let transformer = model
                .transformer
                .compile(&options)
                .map_err(model_error("compiling the model"))?;
            ModelValue {
                transformer,
                default_size_px: (width_px, height_px),
                ..(*model).clone()
            }
        };
        Ok(Outputs::new().with_object("model", types::MODEL, compiled))
    }
}
