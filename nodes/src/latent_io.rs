//! SaveLatent and LoadLatent: latents as .safetensors with one tensor `latent` [B, 128, h, w].

use std::path::Path;

use veetance_engine::{
    DataType, InputSpec, Literal, Node, NodeCtx, NodeError, NodeInputs, NodeSpec, OutputSpec,
    Outputs, RunEnv, TextWidget,
};

use crate::load_image::read_input_file;
use crate::payload::TensorValue;
use crate::tensor_io::{load_tensor, save_tensor};

pub fn save_spec() -> NodeSpec {
    NodeSpec::new(
        "SaveLatent",
        "latent",
        "Writes a latent as .safetensors with one tensor `latent` [B, 128, h, w]: the token grid in the normalised space the transformer sees.",
    )
    .effect()
    .input(InputSpec::new("latent", DataType::Latent).doc("The latent to save."))
    .input(
        InputSpec::new("path", DataType::Text)
            .default_value(Literal::Text("latent".into()))
            .widget(TextWidget::Path)
            .doc("File name prefix; relative paths go under --out."),
    )
    .output(OutputSpec::new("files", DataType::Text, "The path written."))
}

pub fn load_spec() -> NodeSpec {
    NodeSpec::new(
        "LoadLatent",
        "latent",
        "Reads a latent from .safetensors with one tensor `latent` [B, 128, h, w].",
    )
    .input(
        InputSpec::new("path", DataType::Text)
            .widget(TextWidget::Path)
            .doc("The .safetensors file."),
    )
    .output(OutputSpec::new("latent", DataType::Latent, "The latent."))
}

pub struct SaveLatent(NodeSpec);
pub struct LoadLatent(NodeSpec);

pub fn save_node() -> SaveLatent {
    SaveLatent(save_spec())
}

pub fn load_node() -> LoadLatent {
    LoadLatent(load_spec())
}

impl Node for SaveLatent {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }

    fn run(&self, inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let latent = inputs.object::<TensorValue>("latent")?;
        save_tensor(ctx, inputs.text("path")?, "latent", &latent.0)
    }
}

impl Node for LoadLatent {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }

    fn identity(&self, inputs: &NodeInputs, _env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        let bytes = read_input_file(Path::new(inputs.text("path")?))?;
        Ok(Some(blake3::hash(&bytes).as_bytes().to_vec()))
    }

    fn run(&self, inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let path = inputs.text("path")?;
        let latent = load_tensor(path, "latent", 4)?;
        Ok(Outputs::new().with_object("latent", DataType::Latent, TensorValue(latent)))
    }
}
