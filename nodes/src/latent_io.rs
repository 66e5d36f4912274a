//! SaveLatent and LoadLatent: latents as .safetensors with one tensor `latent` [B, 128, h, w].

use std::path::Path;

use veetance_engine::{
    DataType, InputSpec, Literal, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec,
    Outputs, RunEnv, TextWidget,
};

use crate::load_image::read_input_file;
use crate::payload::TensorValue;
use crate::tensor_io::{load_tensor, save_tensor};
use crate::types;

/// The `SaveLatent` node.
pub struct SaveLatent;

impl NodeKind for SaveLatent {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "SaveLatent",
            "latent",
            "Writes a latent as .safetensors with one tensor `latent` [B, 128, h, w]: the token grid in the normalised space the transformer sees.",
        )
        .effect()
        .input(InputSpec::new("latent", types::LATENT).doc("The latent to save."))
        .input(
            InputSpec::new("path", DataType::TEXT)
                .default_value(Literal::Text("latent".into()))
                .widget(TextWidget::Path)
                .doc("File name prefix, relative to --out (absolute paths and `..` are refused: outputs stay in the output folder)."),
        )
        .output(OutputSpec::new("files", DataType::TEXT, "The path written."))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let latent = inputs.object::<TensorValue>("latent")?;
        save_tensor(ctx, inputs.text("path")?, "latent", &latent.0)
    }
}

/// The `LoadLatent` node.
pub struct LoadLatent;

impl NodeKind for LoadLatent {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "LoadLatent",
            "latent",
            "Reads a latent from .safetensors with one tensor `latent` [B, 128, h, w].",
        )
        .input(
            InputSpec::new("path", DataType::TEXT)
                .widget(TextWidget::Path)
                .doc("The .safetensors file; a relative path is looked up beside the workflow file first, then in the current directory."),
        )
        .output(OutputSpec::new("latent", types::LATENT, "The latent."))
    }

    fn identity(inputs: &NodeInputs, env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        let bytes = read_input_file(Path::new(inputs.text("path")?), env)?;
        Ok(Some(blake3::hash(&bytes).as_bytes().to_vec()))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let path = inputs.text("path")?;
        let latent = load_tensor(path, "latent", 4, ctx.env())?;
        Ok(Outputs::new().with_object("latent", types::LATENT, TensorValue(latent)))
    }
}
