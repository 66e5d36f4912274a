//! Load: a model bundle (transformer, text encoder, VAE) from `tiny` or a path.

use veetance_engine::{DataType, InputSpec, Literal, NodeSpec, OutputSpec, TextWidget};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "Load",
        "loaders",
        "Loads a model bundle: `tiny` (the built-in model) or a diffusers-layout directory \
         (model_index.json, transformer/, text_encoder/, tokenizer/, vae/, scheduler/) or original single-file checkpoints.",
    )
    .input(
        InputSpec::new("model", DataType::Text)
            .default_value(Literal::Text("tiny".into()))
            .widget(TextWidget::Path)
            .doc("`tiny`, or a path to a model directory or checkpoint."),
    )
    .input(
        InputSpec::new("dtype", DataType::Text)
            .default_value(Literal::Text("auto".into()))
            .choices(&["auto", "f32", "f16", "bf16"])
            .doc("Weight precision; `auto` is f32 on CPU and bf16 on CUDA."),
    )
    .input(
        InputSpec::new("device", DataType::Text)
            .default_value(Literal::Text("auto".into()))
            .choices(&["auto", "cpu", "cuda"])
            .doc("Where the model runs; `auto` follows --device, then CUDA if available."),
    )
    .output(OutputSpec::new("model", DataType::Model, "The FLUX.2 transformer."))
    .output(OutputSpec::new("text_encoder", DataType::TextEncoder, "The Qwen3 text encoder with its tokenizer and chat template."))
    .output(OutputSpec::new("vae", DataType::Vae, "The FLUX.2 autoencoder."))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the model code (veetance-models) is not wired into the nodes yet",
    )
}
