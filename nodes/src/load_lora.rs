//! LoadLoRA: the model with a LoRA adapter applied (stack them by chaining LoadLoRA nodes).

use std::path::Path;

use veetance_engine::{
    DataType, InputSpec, Literal, MemoryEstimate, NodeCtx, NodeError, NodeInputs, NodeKind,
    NodeSpec, OutputSpec, Outputs, RunEnv, TextWidget,
};
use veetance_models::{LoraFile, LoraMerge};

use crate::device::model_error;
use crate::load::{file_identity, resolve_model_path};
use crate::payload::ModelValue;
use crate::types;

/// The `LoadLoRA` node.
pub struct LoadLoRA;

impl NodeKind for LoadLoRA {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "LoadLoRA",
            "model",
            "Applies a LoRA adapter to the model: diffusers/PEFT files (as `save_lora_weights` writes \
             them, DoRA included), kohya/musubi-tuner files and ai-toolkit/ComfyUI files. Chain \
             several to stack them. The base model stays loaded and unchanged, so changing the \
             strength re-runs only this node and what follows.",
        )
        .describes_output()
        .input(InputSpec::new("model", types::MODEL).doc("The model to adapt."))
        .input(
            InputSpec::new("lora", DataType::TEXT)
                .widget(TextWidget::Path)
                .catalog(crate::models::CATALOG_LORA)
                .doc("The LoRA file (.safetensors): a path, or a name from the model folders."),
        )
        .input(
            InputSpec::new("strength", DataType::FLOAT)
                .default_value(Literal::Float(1.0))
                .range(-10.0, 10.0)
                .doc("How strongly the adapter applies (diffusers' `lora_scale`); 0 leaves the model as it is."),
        )
        .input(
            InputSpec::new("merge", DataType::TEXT)
                .default_value(Literal::Text("auto".into()))
                .choices(&["auto", "merge", "beside"])
                .doc(
                    "`auto` merges into f32/f16/bf16 weights (as fast as the base model; costs a copy \
                     of each adapted weight) and keeps the adapter beside FP8/GGUF weights (they stay \
                     compact; two thin extra matmuls per adapted layer). `merge` and `beside` force \
                     one way. DoRA layers are always merged.",
                ),
        )
        .output(OutputSpec::new(
            "model",
            types::MODEL,
            "The model with the adapter.",
        ))
    }

    /// The file's path, size and modification time: an edited adapter is never served from the
    /// cache.
    fn identity(inputs: &NodeInputs, env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        let path = resolve_model_path(inputs.text("lora")?, env)?;
        env.check_read(&path)?;
        let (identity, _) = file_identity(&path)?;
        Ok(Some(identity.into_bytes()))
    }

    /// The adapter's factors in f32 while it is applied (merged weights are reported by the
    /// model's own size once made).
    fn estimate(inputs: &NodeInputs, env: &RunEnv) -> MemoryEstimate {
        let bytes = inputs
            .text("lora")
            .ok()
            .and_then(|name| resolve_model_path(name, env).ok())
            .and_then(|path| std::fs::metadata(path).ok())
            .map_or(0, |meta| meta.len().saturating_mul(2));
        MemoryEstimate {
            ram_bytes: bytes,
            outputs: crate::placement::pass_model_through(inputs),
            ..MemoryEstimate::default()
        }
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let model = inputs.object::<ModelValue>("model")?;
        let path = resolve_model_path(inputs.text("lora")?, ctx.env())?;
        ctx.env().check_read(&path)?;
        let merge = match inputs.text("merge")? {
            "merge" => LoraMerge::Merge,
            "beside" => LoraMerge::Beside,
            _ => LoraMerge::Auto,
        };
        let lora = LoraFile::open(Path::new(&path)).map_err(model_error("reading the LoRA"))?;
        ctx.check_cancelled()?;
        let (transformer, _applied) = model
            .transformer
            .with_lora(&lora, inputs.float("strength")?, merge)
            .map_err(model_error("applying the LoRA"))?;
        // A model kept in RAM for the device gets its new weights page-locked like the old.
        let transformer = match &model.offload_to {
            Some(device) => transformer.pinned_for(device),
            None => transformer,
        };
        // Placed copies of the adapted model are not the base model's: its own key (the plan
        // still finds the part by the text before `#`).
        let file = std::fs::metadata(&path)
            .map(|m| format!("{}|{:?}", m.len(), m.modified().ok()))
            .unwrap_or_default();
        let variant = blake3::hash(
            format!(
                "{}|{file}|{}|{merge:?}",
                path.display(),
                inputs.float("strength")?
            )
            .as_bytes(),
        );
        let adapted = ModelValue {
            weight_bytes: transformer.weight_bytes(),
            transformer,
            part_key: model
                .part_key
                .as_ref()
                .map(|key| format!("{key}#lora-{}", variant.to_hex())),
            ..(*model).clone()
        };
        Ok(Outputs::new().with_object("model", types::MODEL, adapted))
    }
}
