//! FLUX.2 transformer hyper-parameters: diffusers' `transformer/config.json`, the klein presets,
//! plausibility checks, and inference from tensor shapes for single files (which carry no config).

use std::path::Path;

use super::keys::{CheckpointLayout, bfl_norm_suffix, table_for};
use crate::error::{ModelError, Result};
use crate::weights::{TensorSpec, Weights};

/// Upper bound on block counts accepted from a configuration file.
const MAX_BLOCKS: usize = 4096;
/// Upper bound on hidden and MLP widths accepted from a configuration file.
const MAX_WIDTH: usize = 1 << 20;

/// Transformer hyper-parameters, as in diffusers' `transformer/config.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Flux2Config {
    /// Latent token channels in (128 = 32 VAE channels × 2×2 patch).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Output channels; `None` means `in_channels`.
    #[serde(default)]
    pub out_channels: Option<usize>,
    /// Double-stream blocks.
    pub num_layers: usize,
    /// Single-stream blocks.
    pub num_single_layers: usize,
    /// Per-head dimension.
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Text conditioning channels (3 × Qwen3 hidden for klein).
    pub joint_attention_dim: usize,
    /// Sinusoidal timestep channels.
    #[serde(default = "default_timestep_channels")]
    pub timestep_guidance_channels: usize,
    /// FFN inner size / hidden size.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// RoPE dims per axis (t, h, w, l); must sum to the head dim.
    #[serde(default = "default_axes")]
    pub axes_dims_rope: Vec<usize>,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// LayerNorm / RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Whether a guidance embedder exists (FLUX.2 dev; klein has none).
    #[serde(default)]
    pub guidance_embeds: bool,
    /// Patch size; FLUX.2 uses 1 (patchify happens in the VAE latent space).
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
}

fn default_in_channels() -> usize {
    128
}
fn default_head_dim() -> usize {
    128
}
fn default_timestep_channels() -> usize {
    256
}
fn default_mlp_ratio() -> f64 {
    3.0
}
fn default_axes() -> Vec<usize> {
    vec![32, 32, 32, 32]
}
fn default_theta() -> f64 {
    2000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_patch_size() -> usize {
    1
}

impl Flux2Config {
    /// FLUX.2 \[klein\] 4B (diffusers converter and BFL `Klein4BParams`).
    pub fn klein_4b() -> Self {
        Self {
            in_channels: 128,
            out_channels: None,
            num_layers: 5,
            num_single_layers: 20,
            attention_head_dim: 128,
            num_attention_heads: 24,
            joint_attention_dim: 7680,
            timestep_guidance_channels: 256,
            mlp_ratio: 3.0,
            axes_dims_rope: default_axes(),
            rope_theta: 2000.0,
            eps: 1e-6,
            guidance_embeds: false,
            patch_size: 1,
        }
    }

    /// A tiny transformer for tests and smoke runs, shaped like `tests/fixtures/tiny-klein`'s:
    /// 2 heads of 16, 2 double and 2 single blocks, conditioning 96 wide (3 × [`Qwen3Config::tiny`]'s
    /// hidden size), RoPE axes of 4.
    ///
    /// [`Qwen3Config::tiny`]: crate::qwen3::Qwen3Config::tiny
    pub fn tiny() -> Self {
        Self {
            num_layers: 2,
            num_single_layers: 2,
            attention_head_dim: 16,
            num_attention_heads: 2,
            joint_attention_dim: 96,
            axes_dims_rope: vec![4, 4, 4, 4],
            ..Self::klein_4b()
        }
    }

    /// FLUX.2 \[klein\] 9B.
    pub fn klein_9b() -> Self {
        Self {
            num_layers: 8,
            num_single_layers: 24,
            num_attention_heads: 32,
            joint_attention_dim: 12288,
            ..Self::klein_4b()
        }
    }

    /// Hidden size D = heads × head_dim.
    pub fn hidden_size(&self) -> usize {
        // Saturating: a hostile config must reach `validate`'s size check, not an overflow panic.
        self.num_attention_heads
            .saturating_mul(self.attention_head_dim)
    }

    /// SwiGLU inner size F (diffusers: `int(dim * mlp_ratio)`).
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size() as f64 * self.mlp_ratio) as usize
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Every tensor of a diffusers-layout checkpoint, with its shape (169 for klein-4B).
    pub fn diffusers_tensor_specs(&self) -> Vec<TensorSpec> {
        table_for(self, CheckpointLayout::Diffusers, None).stored_specs()
    }

    /// Every tensor of an original BFL single-file checkpoint, with its shape (149 for klein-4B).
    pub fn bfl_tensor_specs(&self) -> Vec<TensorSpec> {
        table_for(self, CheckpointLayout::Bfl, None).stored_specs()
    }

    /// Checks the numbers fit together.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| {
            Err(ModelError::Config {
                path: path.to_path_buf(),
                reason,
            })
        };
        if self.patch_size != 1 {
            return bad(format!(
                "patch_size {} is not supported (FLUX.2 uses 1)",
                self.patch_size
            ));
        }
        // A hostile or corrupt config.json must not make us build key lists of billions of entries.
        if self.num_layers > MAX_BLOCKS
            || self.num_single_layers > MAX_BLOCKS
            || self.hidden_size() > MAX_WIDTH
            || self.mlp_hidden() > MAX_WIDTH
            || self.axes_dims_rope.len() > 16
            || [
                self.in_channels,
                self.out_channels(),
                self.joint_attention_dim,
                self.timestep_guidance_channels,
            ]
            .iter()
            .any(|&c| c > MAX_WIDTH)
        {
            return bad(format!(
                "implausible sizes: {} double / {} single blocks, hidden {}, MLP {}",
                self.num_layers,
                self.num_single_layers,
                self.hidden_size(),
                self.mlp_hidden()
            ));
        }
        let axes_sum = self
            .axes_dims_rope
            .iter()
            .fold(0usize, |acc, &d| acc.saturating_add(d));
        if axes_sum != self.attention_head_dim {
            return bad(format!(
                "axes_dims_rope {:?} must sum to attention_head_dim {}",
                self.axes_dims_rope, self.attention_head_dim
            ));
        }
        if self.axes_dims_rope.iter().any(|d| d % 2 != 0) {
            return bad("every RoPE axis needs an even dimension".into());
        }
        if !self.timestep_guidance_channels.is_multiple_of(2) || self.hidden_size() == 0 {
            return bad("timestep channels must be even and the hidden size positive".into());
        }
        Ok(())
    }
}

/// Counts `prefix{i}.` blocks present in a checkpoint (the highest index + 1).
fn count_blocks(weights: &Weights, prefix: &str) -> usize {
    weights
        .names()
        .iter()
        .filter_map(|name| name.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .map(|i| i.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// Infers the configuration from tensor shapes (single files carry no config.json).
pub fn infer_config(weights: &Weights, layout: CheckpointLayout) -> Result<Flux2Config> {
    let path = weights.origin().to_path_buf();
    let shape = |name: &str| -> Result<Vec<usize>> {
        weights
            .shape(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| ModelError::Config {
                path: path.clone(),
                reason: format!(
                    "cannot infer the transformer configuration: tensor {name} is missing"
                ),
            })
    };
    let (img_in, txt_in, time_in, q_norm, ff_in, double_prefix, single_prefix, guidance) =
        match layout {
            CheckpointLayout::Diffusers => (
                "x_embedder.weight",
                "context_embedder.weight",
                "time_guidance_embed.timestep_embedder.linear_1.weight",
                "single_transformer_blocks.0.attn.norm_q.weight",
                "transformer_blocks.0.ff.linear_in.weight",
                "transformer_blocks.",
                "single_transformer_blocks.",
                "time_guidance_embed.guidance_embedder.linear_1.weight",
            ),
            CheckpointLayout::Bfl => (
                "img_in.weight",
                "txt_in.weight",
                "time_in.in_layer.weight",
                if bfl_norm_suffix(weights) == "weight" {
                    "single_blocks.0.norm.query_norm.weight"
                } else {
                    "single_blocks.0.norm.query_norm.scale"
                },
                "double_blocks.0.img_mlp.0.weight",
                "double_blocks.",
                "single_blocks.",
                "guidance_in.in_layer.weight",
            ),
        };
    let img_in = shape(img_in)?;
    let txt_in = shape(txt_in)?;
    let time_in = shape(time_in)?;
    let head_dim = *shape(q_norm)?.first().unwrap_or(&128);
    let (&[hidden, in_channels], &[_, joint_dim], &[_, t_channels]) =
        (img_in.as_slice(), txt_in.as_slice(), time_in.as_slice())
    else {
        return Err(ModelError::Config {
            path,
            reason: "embedding weights are not 2-D".into(),
        });
    };
    let num_layers = count_blocks(weights, double_prefix);
    let mlp_ratio = if num_layers > 0 {
        shape(ff_in)?
            .first()
            .map(|&rows| rows as f64 / 2.0 / hidden as f64)
            .unwrap_or(3.0)
    } else {
        3.0
    };
    if head_dim == 0 || hidden % head_dim != 0 || head_dim % 4 != 0 {
        return Err(ModelError::Config {
            path,
            reason: format!("head dim {head_dim} does not divide hidden {hidden} into 4 RoPE axes"),
        });
    }
    let axis = head_dim / 4;
    Ok(Flux2Config {
        in_channels,
        out_channels: None,
        num_layers,
        num_single_layers: count_blocks(weights, single_prefix),
        attention_head_dim: head_dim,
        num_attention_heads: hidden / head_dim,
        joint_attention_dim: joint_dim,
        timestep_guidance_channels: t_channels,
        mlp_ratio,
        axes_dims_rope: vec![axis; 4],
        rope_theta: 2000.0,
        eps: 1e-6,
        guidance_embeds: weights.contains(guidance),
        patch_size: 1,
    })
}
