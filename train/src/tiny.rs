//! The tiny model's architecture and its diffusers-layout files.
//!
//! Sizes are chosen so that a 64×64 image is a 4×4 token grid (VAE factor 8 × patch 2), the whole
//! checkpoint stays a few megabytes in f16, and one image samples in a few milliseconds on a CPU.
//! The configs are written as the JSON that diffusers/transformers would write, and parsed back into
//! the models crate's config types, so training and [`veetance_models::Bundle::load`] read the same
//! numbers.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::{Value, json};
use veetance_models::qwen3::Qwen3Config;
use veetance_models::{Flux2Config, VaeConfig};

use crate::TrainError;

/// Image side the tiny model is trained at.
pub const IMAGE_SIDE_PX: usize = 64;
/// Prompt length after padding: the chat template adds 7 tokens to at most 23 caption words.
pub const MAX_TEXT_TOKENS: usize = 32;
/// Qwen3 hidden states fed to the transformer (both layers of the 2-layer encoder).
pub const TEXT_OUT_LAYERS: [usize; 2] = [1, 2];
/// Sampling steps the shipped model defaults to.
pub const DEFAULT_STEPS: usize = 8;
/// CFG scale the shipped model defaults to (trained with caption dropout, so CFG works).
pub const DEFAULT_GUIDANCE: f64 = 2.5;

const TEXT_HIDDEN: usize = 64;
const TEXT_LAYERS: usize = 2;

/// Special tokens of the Qwen chat format, in id order (ids 0..5).
const SPECIAL_TOKENS: [&str; 5] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
];
/// Unknown words map here (the chat template's role names and caption words all have their own ids).
const UNK_TOKEN: &str = "<unk>";

/// The Qwen chat template (as shipped with Qwen3 checkpoints).
pub const CHAT_TEMPLATE: &str = include_str!("../assets/chat_template.jinja");
/// The FLUX.2 scheduler settings (diffusers' FlowMatchEulerDiscreteScheduler as klein ships it).
pub const SCHEDULER_CONFIG: &str = include_str!("../assets/scheduler_config.json");

/// `vae/config.json`.
pub fn vae_config_json() -> Value {
    json!({
        "_class_name": "AutoencoderKLFlux2",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "batch_norm_eps": 0.0001,
        "batch_norm_momentum": 0.1,
        "block_out_channels": [16, 32, 64, 64],
        "decoder_block_out_channels": null,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3,
        "latent_channels": 8,
        "layers_per_block": 1,
        "mid_block_add_attention": true,
        "norm_num_groups": 8,
        "out_channels": 3,
        "patch_size": [2, 2],
        "sample_size": IMAGE_SIDE_PX,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "use_post_quant_conv": true,
        "use_quant_conv": true
    })
}

/// `transformer/config.json`.
pub fn transformer_config_json() -> Value {
    json!({
        "_class_name": "Flux2Transformer2DModel",
        "_diffusers_version": "0.42.1",
        "attention_head_dim": 32,
        "axes_dims_rope": [8, 8, 8, 8],
        "eps": 1e-6,
        "guidance_embeds": false,
        "in_channels": 32,
        "joint_attention_dim": TEXT_HIDDEN * TEXT_OUT_LAYERS.len(),
        "mlp_ratio": 3.0,
        "num_attention_heads": 4,
        "num_layers": 2,
        "num_single_layers": 4,
        "out_channels": null,
        "patch_size": 1,
        "rope_theta": 2000,
        "timestep_guidance_channels": 256
    })
}

/// `text_encoder/config.json` for a vocabulary of `vocab_size` tokens.
pub fn text_config_json(vocab_size: usize) -> Value {
    json!({
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": null,
        "eos_token_id": 0,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": TEXT_HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": 192,
        "max_position_embeddings": 64,
        "model_type": "qwen3",
        "num_attention_heads": 4,
        "num_hidden_layers": TEXT_LAYERS,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
        "tie_word_embeddings": true,
        "torch_dtype": "float16",
        "use_cache": false,
        "vocab_size": vocab_size
    })
}

/// `model_index.json`, with the Veetance keys `Bundle::load` reads (see `veetance_models::klein::ModelIndex`).
pub fn model_index_json() -> Value {
    json!({
        "_class_name": "Flux2KleinPipeline",
        "_diffusers_version": "0.42.1",
        "is_distilled": false,
        "max_sequence_length": MAX_TEXT_TOKENS,
        "text_encoder_out_layers": TEXT_OUT_LAYERS,
        "default_steps": DEFAULT_STEPS,
        "default_guidance": DEFAULT_GUIDANCE,
        "default_size_px": IMAGE_SIDE_PX,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"]
    })
}

/// The word vocabulary: special tokens, `<unk>`, chat roles, caption words and punctuation.
pub fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    words.push(UNK_TOKEN.to_string());
    for w in ["user", "assistant", "system", ".", ","] {
        words.push(w.to_string());
    }
    words.extend(
        veetance_scenes::caption_words()
            .into_iter()
            .map(str::to_string),
    );
    words
}

/// `tokenizer/tokenizer.json`: a word-level tokenizer (lowercasing, whitespace/punctuation split)
/// with the chat special tokens as added tokens, so a 30-word prompt is about 30 tokens.
pub fn tokenizer_json() -> Value {
    let vocab = vocabulary();
    let ids: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": UNK_TOKEN}
    })
}

/// `tokenizer/tokenizer_config.json`.
pub fn tokenizer_config_json() -> Value {
    json!({
        "add_prefix_space": null,
        "bos_token": null,
        "eos_token": "<|endoftext|>",
        "extra_special_tokens": SPECIAL_TOKENS[1..],
        "model_max_length": MAX_TEXT_TOKENS,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": UNK_TOKEN
    })
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> Result<T, TrainError> {
    serde_json::from_value(value).map_err(|e| TrainError::Config(format!("{what}: {e}")))
}

/// The VAE configuration as the models crate reads it.
pub fn vae_config() -> Result<VaeConfig, TrainError> {
    parse("vae config", vae_config_json())
}

/// The transformer configuration.
pub fn transformer_config() -> Result<Flux2Config, TrainError> {
    parse("transformer config", transformer_config_json())
}

/// The text-encoder configuration.
pub fn text_config() -> Result<Qwen3Config, TrainError> {
    parse("text encoder config", text_config_json(vocabulary().len()))
}

fn write(path: &Path, contents: &[u8]) -> Result<(), TrainError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| TrainError::io(path, e))
}

fn write_json(path: &Path, value: &Value) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    write(path, format!("{text}\n").as_bytes())
}

/// Writes the tokenizer directory (tokenizer.json, tokenizer_config.json, chat_template.jinja).
pub fn write_tokenizer(dir: &Path) -> Result<(), TrainError> {
    write_json(&dir.join("tokenizer.json"), &tokenizer_json())?;
    write_json(&dir.join("tokenizer_config.json"), &tokenizer_config_json())?;
    write(&dir.join("chat_template.jinja"), CHAT_TEMPLATE.as_bytes())
}

/// Saves tensors as safetensors, converting floating tensors to f16 except those named in `keep_f32`.
fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    keep_f32: &[&str],
) -> Result<(), TrainError> {
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = if keep_f32.contains(&name.as_str()) {
            DType::F32
        } else {
            DType::F16
        };
        out.insert(
            name.clone(),
            t.to_dtype(dtype)?.to_device(&candle_core::Device::Cpu)?,
        );
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    }
    candle_core::safetensors::save(&out, path)?;
    Ok(())
}

/// Writes a complete diffusers-layout checkpoint directory from trained tensors (checkpoint names).
pub fn export(
    dir: &Path,
    vae: &HashMap<String, Tensor>,
    transformer: &HashMap<String, Tensor>,
    text_encoder: &HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    write_json(&dir.join("model_index.json"), &model_index_json())?;
    write_json(&dir.join("vae/config.json"), &vae_config_json())?;
    // BatchNorm statistics stay f32: they normalise every latent and are only 64 numbers.
    save_tensors(
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        vae,
        &["bn.running_mean", "bn.running_var"],
    )?;
    write_json(
        &dir.join("transformer/config.json"),
        &transformer_config_json(),
    )?;
    save_tensors(
        &dir.join("transformer/diffusion_pytorch_model.safetensors"),
        transformer,
        &[],
    )?;
    write_json(
        &dir.join("text_encoder/config.json"),
        &text_config_json(vocabulary().len()),
    )?;
    save_tensors(
        &dir.join("text_encoder/model.safetensors"),
        text_encoder,
        &[],
    )?;
    write_tokenizer(&dir.join("tokenizer"))?;
    write(
        &dir.join("scheduler/scheduler_config.json"),
        SCHEDULER_CONFIG.as_bytes(),
    )
}
