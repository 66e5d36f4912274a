//! Qwen3 hyper-parameters: `text_encoder/config.json` (transformers 4 and 5 spellings), the
//! presets of klein's encoders, and inference for single files (ComfyUI's `text_encoders/` files
//! carry no config; GGUF files carry llama.cpp's `qwen3.*` metadata).

use std::path::Path;

use crate::error::{ModelError, Result};
use crate::weights::Weights;

#[derive(Debug, Clone, serde::Deserialize)]
struct RopeParameters {
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_type: Option<String>,
}

/// Qwen3 hyper-parameters from `text_encoder/config.json` (transformers 4 and 5 spellings).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Qwen3Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Decoder layers in the checkpoint.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); transformers uses the query head count when
    /// the config has none.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head dimension; transformers' `Qwen3Config` default is 128 (not hidden / heads).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// transformers 4 spelling of the RoPE base.
    #[serde(default)]
    rope_theta: Option<f64>,
    /// transformers 5 spelling of the RoPE base.
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    /// Whether q/k/v/o have biases (never in Qwen3; refused if set).
    #[serde(default)]
    pub attention_bias: bool,
}

fn default_rms_eps() -> f64 {
    1e-6
}

impl Qwen3Config {
    /// Qwen3-4B, the text encoder of FLUX.2 \[klein\] 4B (its `text_encoder/config.json`): hidden
    /// 2560, 36 layers, 32 query and 8 key/value heads of 128, MLP 9728, vocabulary 151936,
    /// RoPE θ 1e6, RMS ε 1e-6, no biases.
    pub fn qwen3_4b() -> Self {
        Self {
            vocab_size: 151_936,
            hidden_size: 2560,
            intermediate_size: 9728,
            num_hidden_layers: 36,
            num_attention_heads: 32,
            num_key_value_heads: Some(8),
            head_dim: Some(128),
            rms_norm_eps: 1e-6,
            rope_theta: Some(1e6),
            rope_parameters: None,
            attention_bias: false,
        }
    }

    /// Qwen3-8B, the text encoder of FLUX.2 \[klein\] 9B: as [`Qwen3Config::qwen3_4b`] with hidden
    /// 4096 and MLP 12288 (its untied LM head is never used).
    pub fn qwen3_8b() -> Self {
        Self {
            hidden_size: 4096,
            intermediate_size: 12288,
            ..Self::qwen3_4b()
        }
    }

    /// A tiny Qwen3 for tests and smoke runs, shaped like `tests/fixtures/tiny-klein`'s encoder:
    /// hidden 32, 4 layers, 4 query and 2 key/value heads of 8, MLP 64, vocabulary 374.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 374,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: Some(8),
            ..Self::qwen3_4b()
        }
    }

    /// Per-head dimension (transformers' `Qwen3Config.head_dim` defaults to 128, not
    /// hidden / heads).
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(128)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Infers the configuration of a file without config.json from tensor shapes (ComfyUI's
    /// `qwen_3_4b.safetensors`) or, for GGUF, llama.cpp's `qwen3.*` metadata. `names` are the
    /// internal (Hugging Face, `model.`-less) names, already mapped. Released Qwen3 checkpoints
    /// use RoPE θ 1e6 and RMS ε 1e-6 (ComfyUI's Qwen3 configs hard-code the same).
    pub fn infer(weights: &Weights, hf_prefix: &str, gguf: bool) -> Result<Self> {
        let path = weights.origin();
        let missing = |name: &str| ModelError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "cannot infer the text encoder configuration: tensor {name} is missing"
            ),
        };
        let (embed, q, k, q_norm, gate, layer_prefix) = if gguf {
            (
                "token_embd.weight".to_string(),
                "blk.0.attn_q.weight".to_string(),
                "blk.0.attn_k.weight".to_string(),
                "blk.0.attn_q_norm.weight".to_string(),
                "blk.0.ffn_gate.weight".to_string(),
                "blk.".to_string(),
            )
        } else {
            let p = hf_prefix;
            (
                format!("{p}embed_tokens.weight"),
                format!("{p}layers.0.self_attn.q_proj.weight"),
                format!("{p}layers.0.self_attn.k_proj.weight"),
                format!("{p}layers.0.self_attn.q_norm.weight"),
                format!("{p}layers.0.mlp.gate_proj.weight"),
                format!("{p}layers."),
            )
        };
        let shape = |name: &str| {
            weights
                .shape(name)
                .map(<[usize]>::to_vec)
                .ok_or_else(|| missing(name))
        };
        let (embed, q, k, q_norm, gate) = (
            shape(&embed)?,
            shape(&q)?,
            shape(&k)?,
            shape(&q_norm)?,
            shape(&gate)?,
        );
        let (&[vocab, hidden], &[q_rows, _], &[k_rows, _], &[head_dim], &[ffn, _]) = (
            embed.as_slice(),
            q.as_slice(),
            k.as_slice(),
            q_norm.as_slice(),
            gate.as_slice(),
        ) else {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: "the text encoder's tensors do not have Qwen3's shapes".into(),
            });
        };
        if head_dim == 0 || q_rows % head_dim != 0 || k_rows % head_dim != 0 {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: format!("head dim {head_dim} does not divide the q/k projections"),
            });
        }
        let n_layers = weights
            .names()
            .iter()
            .filter_map(|n| n.strip_prefix(layer_prefix.as_str()))
            .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
            .map(|i| i.saturating_add(1))
            .max()
            .unwrap_or(0);
        let meta = |key: &str| {
            weights
                .gguf_metadata()
                .and_then(|m| m.get(key))
                .and_then(|v| v.as_f64())
        };
        Ok(Self {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: ffn,
            num_hidden_layers: n_layers,
            num_attention_heads: q_rows / head_dim,
            num_key_value_heads: Some(k_rows / head_dim),
            head_dim: Some(head_dim),
            rms_norm_eps: meta("qwen3.attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_theta: Some(meta("qwen3.rope.freq_base").unwrap_or(1e6)),
            rope_parameters: None,
            attention_bias: false,
        })
    }

    /// RoPE base (1e6 in released Qwen3 checkpoints; transformers' default when absent is 1e4).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0)
    }

    /// Refuses RoPE variants we do not implement (YaRN, dynamic scaling, ...).
    pub(crate) fn check_rope(&self, path: &Path) -> Result<()> {
        let kind = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.rope_type.as_deref())
            .unwrap_or("default");
        if kind != "default" {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: format!("rope_type {kind:?} is not supported"),
            });
        }
        Ok(())
    }
}
