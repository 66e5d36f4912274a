//! SaveLatent and LoadLatent: latents as safetensors with one tensor `latent` [B, 128, h, w].

use veetance_engine::{DataType, InputSpec, Literal, NodeSpec, OutputSpec, TextWidget};

use crate::unavailable::Unavailable;

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

pub fn save_node() -> Unavailable {
    Unavailable::new(
        save_spec(),
        "latent tensors (veetance-models) are not wired into the nodes yet",
    )
}

pub fn load_node() -> Unavailable {
    Unavailable::new(
        load_spec(),
        "latent tensors (veetance-models) are not wired into the nodes yet",
    )
}
