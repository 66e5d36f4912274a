//! What a model file or folder is, from its tensor names and shapes alone (headers are read, no
//! weights): a FLUX.2 transformer (which size), a Qwen3 text encoder, a FLUX.2 VAE, a diffusers
//! checkpoint folder, or something we cannot run (FLUX.1, Stable Diffusion, a LoRA, ...), with a
//! reason. `veetance models` lists folders with it, and Load uses it to find the text encoder and
//! VAE that go with a single transformer file and to refuse the wrong file early.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::weights::Weights;

/// The FLUX.2 model a transformer's shapes identify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flux2Variant {
    /// FLUX.2 \[klein\] 4B (hidden 3072, text width 7680 = 3 × Qwen3-4B).
    Klein4B,
    /// FLUX.2 \[klein\] 9B (hidden 4096, text width 12288 = 3 × Qwen3-8B).
    Klein9B,
    /// Another FLUX.2-architecture size (the built-in tiny model, test checkpoints).
    Custom,
}

impl Flux2Variant {
    /// A display name.
    pub fn name(self) -> &'static str {
        match self {
            Flux2Variant::Klein4B => "FLUX.2 [klein] 4B",
            Flux2Variant::Klein9B => "FLUX.2 [klein] 9B",
            Flux2Variant::Custom => "FLUX.2 (custom size)",
        }
    }
}

/// What a file or folder holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelKind {
    /// A diffusers pipeline folder (`model_index.json`, `transformer/`, ...).
    DiffusersCheckpoint,
    /// A FLUX.2 transformer; `text_width` is the conditioning width it takes.
    Flux2Transformer {
        /// Which model.
        variant: Flux2Variant,
        /// Conditioning channels (3 × the text encoder's hidden size for klein).
        text_width: usize,
    },
    /// A Qwen3 decoder usable as the text encoder.
    Qwen3TextEncoder {
        /// Hidden size (2560 for Qwen3-4B, 4096 for Qwen3-8B).
        hidden: usize,
        /// Decoder layers.
        layers: usize,
    },
    /// A FLUX.2 VAE (32 latent channels, BatchNorm statistics).
    Flux2Vae,
    /// A ComfyUI all-in-one checkpoint holding transformer, VAE and text encoder.
    AllInOne,
    /// A LoRA adapter (applied to a loaded model by LoadLoRA, not loaded as one).
    Lora,
    /// Something Veetance cannot run, and why.
    Unsupported(String),
}

impl ModelKind {
    /// A short label for listings.
    pub fn label(&self) -> String {
        match self {
            ModelKind::DiffusersCheckpoint => "checkpoint".into(),
            ModelKind::Flux2Transformer { variant, .. } => {
                format!("transformer: {}", variant.name())
            }
            ModelKind::Qwen3TextEncoder { hidden, .. } => match hidden {
                2560 => "text encoder: Qwen3-4B (klein 4B)".into(),
                4096 => "text encoder: Qwen3-8B (klein 9B)".into(),
                h => format!("text encoder: Qwen3 (hidden {h})"),
            },
            ModelKind::Flux2Vae => "vae: FLUX.2".into(),
            ModelKind::AllInOne => "checkpoint (all in one file)".into(),
            ModelKind::Lora => "LoRA adapter".into(),
            ModelKind::Unsupported(_) => "unsupported".into(),
        }
    }
}

/// A model file or folder and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// The file or folder.
    pub path: PathBuf,
    /// What it is.
    pub kind: ModelKind,
    /// How its tensors are stored, largest share first (`Q4_K 80%, BF16 19%, F32 1%`).
    pub storage: String,
    /// Bytes on disk (all files of a folder).
    pub size_bytes: u64,
}

/// The prefixes ComfyUI's all-in-one checkpoints give each part.
pub const ALL_IN_ONE_TRANSFORMER: &str = "model.diffusion_model.";
/// The VAE part of an all-in-one checkpoint.
pub const ALL_IN_ONE_VAE: &str = "vae.";
/// The text-encoder parts of an all-in-one checkpoint (ComfyUI's `text_encoders.qwen3_4b.transformer.`).
pub const ALL_IN_ONE_TEXT_ENCODERS: [&str; 2] = [
    "text_encoders.qwen3_4b.transformer.",
    "text_encoders.qwen3_8b.transformer.",
];

/// Identifies weights by their names and shapes.
pub fn classify(weights: &Weights) -> ModelKind {
    let has = |n: &str| weights.contains(n);
    let any = |pred: &dyn Fn(&str) -> bool| weights.names().into_iter().any(pred);
    if weights.count_with_prefix(ALL_IN_ONE_TRANSFORMER) > 0
        && weights.count_with_prefix(ALL_IN_ONE_VAE) > 0
    {
        return ModelKind::AllInOne;
    }
    let stripped = weights
        .clone()
        .strip_common_prefix(crate::flux2::COMFY_PREFIXES);
    let has_s = |n: &str| stripped.contains(n);
    if any(&|n| {
        n.contains("lora_A")
            || n.contains("lora_B")
            || n.contains("lora_down")
            || n.contains("lora_up")
            || n.starts_with("lora_unet_")
    }) {
        return ModelKind::Lora;
    }
    if has_s("double_stream_modulation_img.lin.weight")
        || has_s("double_stream_modulation_img.linear.weight")
    {
        let text_width = stripped
            .shape("txt_in.weight")
            .or_else(|| stripped.shape("context_embedder.weight"))
            .and_then(|s| s.get(1).copied())
            .unwrap_or(0);
        let hidden = stripped
            .shape("img_in.weight")
            .or_else(|| stripped.shape("x_embedder.weight"))
            .and_then(|s| s.first().copied())
            .unwrap_or(0);
        let variant = match (hidden, text_width) {
            (3072, 7680) => Flux2Variant::Klein4B,
            (4096, 12288) => Flux2Variant::Klein9B,
            (6144, 15360) => {
                return ModelKind::Unsupported(
                    "FLUX.2 [dev] (its text encoder is Mistral Small 3, which Veetance does not have; it runs FLUX.2 [klein])".into(),
                );
            }
            _ => Flux2Variant::Custom,
        };
        return ModelKind::Flux2Transformer {
            variant,
            text_width,
        };
    }
    if has_s("double_blocks.0.img_mod.lin.weight")
        || has_s("transformer_blocks.0.norm1.linear.weight")
    {
        return ModelKind::Unsupported(
            "a FLUX.1 transformer (Veetance runs FLUX.2 [klein])".into(),
        );
    }
    if has("model.diffusion_model.input_blocks.0.0.weight")
        || has("input_blocks.0.0.weight")
        || has(
            "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
        )
        || (has("conv_in.weight") && has("time_embedding.linear_1.weight"))
    {
        return ModelKind::Unsupported(
            "a Stable Diffusion / SDXL UNet checkpoint (Veetance runs FLUX.2 [klein])".into(),
        );
    }
    for (norm, q_norm, hidden_key) in [
        (
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.post_attention_layernorm.weight",
        ),
        (
            "layers.0.self_attn.q_norm.weight",
            "layers.0.self_attn.q_norm.weight",
            "layers.0.post_attention_layernorm.weight",
        ),
        (
            "blk.0.attn_q_norm.weight",
            "blk.0.attn_q_norm.weight",
            "blk.0.ffn_norm.weight",
        ),
    ] {
        if has(norm) && has(q_norm) {
            let hidden = weights
                .shape(hidden_key)
                .and_then(|s| s.first().copied())
                .unwrap_or(0);
            let layer_prefix = if norm.starts_with("blk.") {
                "blk."
            } else if norm.starts_with("model.") {
                "model.layers."
            } else {
                "layers."
            };
            let layers = weights
                .names()
                .iter()
                .filter_map(|n| n.strip_prefix(layer_prefix))
                .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
                .map(|i| i + 1)
                .max()
                .unwrap_or(0);
            return ModelKind::Qwen3TextEncoder { hidden, layers };
        }
    }
    if has("model.layers.0.self_attn.q_proj.weight") || has("blk.0.attn_q.weight") {
        return ModelKind::Unsupported(
            "a language model without Qwen3's QK-norm (Qwen2, Llama, Mistral?); FLUX.2 [klein] needs Qwen3".into(),
        );
    }
    let vae = weights
        .clone()
        .strip_common_prefix(&[ALL_IN_ONE_VAE, "first_stage_model."]);
    let vae_encoder = vae.contains("encoder.down.0.block.0.conv1.weight")
        || vae.contains("encoder.down_blocks.0.resnets.0.conv1.weight");
    if vae_encoder && vae.contains("bn.running_mean") {
        return ModelKind::Flux2Vae;
    }
    if vae_encoder {
        return ModelKind::Unsupported(
            "a VAE without FLUX.2's BatchNorm latent statistics (a FLUX.1 or Stable Diffusion VAE)"
                .into(),
        );
    }
    let examples: Vec<&str> = weights.names().into_iter().take(3).collect();
    ModelKind::Unsupported(format!(
        "no known model layout (tensors such as {examples:?})"
    ))
}

/// The storage summary of a set of weights (share of bytes per stored type).
fn storage_summary(weights: &Weights) -> String {
    let mut bytes_by_type: BTreeMap<String, u64> = BTreeMap::new();
    for name in weights.names() {
        if crate::weights::is_quant_side_tensor(name) {
            continue;
        }
        let (Some(dtype), Some(shape)) = (weights.stored_dtype(name), weights.shape(name)) else {
            continue;
        };
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        let cols = shape.last().copied().unwrap_or(1).max(1);
        let bytes = dtype
            .row_bytes(cols)
            .map_or(n, |row| row as u64 * (n / cols as u64));
        *bytes_by_type.entry(dtype.name()).or_default() += bytes;
    }
    let total: u64 = bytes_by_type.values().sum::<u64>().max(1);
    let mut shares: Vec<(String, u64)> = bytes_by_type.into_iter().collect();
    shares.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    shares
        .iter()
        .map(|(name, bytes)| {
            let percent = bytes * 100 / total;
            if shares.len() == 1 {
                name.clone()
            } else if percent == 0 {
                format!("{name} <1%")
            } else {
                format!("{name} {percent}%")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Identifies a model file (safetensors or GGUF) or a diffusers checkpoint folder.
pub fn inspect(path: &Path) -> Result<ModelFile> {
    if path.is_dir() {
        if path.join("model_index.json").is_file() || path.join("transformer").is_dir() {
            let size_bytes = walkdir::WalkDir::new(path)
                .max_depth(3)
                .into_iter()
                .filter_map(std::result::Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum();
            let storage = Weights::from_dir(&path.join("transformer"))
                .map(|w| storage_summary(&w))
                .unwrap_or_default();
            return Ok(ModelFile {
                path: path.to_path_buf(),
                kind: ModelKind::DiffusersCheckpoint,
                storage,
                size_bytes,
            });
        }
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            reason:
                "a folder that is not a diffusers checkpoint (no model_index.json or transformer/)"
                    .into(),
        });
    }
    let weights = Weights::open(path)?;
    let size_bytes = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(ModelFile {
        path: path.to_path_buf(),
        kind: classify(&weights),
        storage: storage_summary(&weights),
        size_bytes,
    })
}
