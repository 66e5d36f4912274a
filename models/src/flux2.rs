//! The FLUX.2 transformer (double- and single-stream blocks with shared modulation).
//!
//! One internal layout serves both checkpoint formats: attention projections are stored fused
//! (`qkv`, BFL style) because one GEMM is faster than three and the BFL single file is what most
//! people have; diffusers checkpoints are fused at load time by concatenating `to_q/to_k/to_v`.
//! The final layer's modulation is stored in diffusers order (scale, shift); BFL files store
//! (shift, scale) and are swapped at load, a bug other ports have hit.
//!
//! Forward order follows diffusers' `Flux2Transformer2DModel.forward`; numerics that matter for
//! parity: RoPE angles computed in f64 and applied in f32, `t·1000` rounded in the model dtype,
//! [txt, img] concatenation order for tokens and RoPE tables.

use std::path::Path;

use candle_core::Module as _;
use candle_core::{D, DType, Device, Tensor};

use crate::proj::Proj as Linear;

use crate::attention::AttentionBackend;
use crate::error::{CandleContext as _, ModelError, Result, read_json};
use crate::weights::{Loader, TensorSpec, Weights};

/// Prefixes of transformer weights inside full-checkpoint exports (ComfyUI, LDM-style).
const COMFY_PREFIXES: &[&str] = &["model.diffusion_model.", "diffusion_model."];

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

    /// Every tensor of a diffusers-layout checkpoint, with its shape (169 for klein-4B).
    pub fn diffusers_tensor_specs(&self) -> Vec<TensorSpec> {
        let d = self.hidden_size();
        let f = self.mlp_hidden();
        let hd = self.attention_head_dim;
        let mut specs = vec![
            TensorSpec::new("x_embedder.weight", &[d, self.in_channels]),
            TensorSpec::new("context_embedder.weight", &[d, self.joint_attention_dim]),
            TensorSpec::new(
                "time_guidance_embed.timestep_embedder.linear_1.weight",
                &[d, self.timestep_guidance_channels],
            ),
            TensorSpec::new(
                "time_guidance_embed.timestep_embedder.linear_2.weight",
                &[d, d],
            ),
            TensorSpec::new("double_stream_modulation_img.linear.weight", &[6 * d, d]),
            TensorSpec::new("double_stream_modulation_txt.linear.weight", &[6 * d, d]),
            TensorSpec::new("single_stream_modulation.linear.weight", &[3 * d, d]),
            TensorSpec::new("norm_out.linear.weight", &[2 * d, d]),
            TensorSpec::new("proj_out.weight", &[self.out_channels(), d]),
        ];
        if self.guidance_embeds {
            specs.push(TensorSpec::new(
                "time_guidance_embed.guidance_embedder.linear_1.weight",
                &[d, self.timestep_guidance_channels],
            ));
            specs.push(TensorSpec::new(
                "time_guidance_embed.guidance_embedder.linear_2.weight",
                &[d, d],
            ));
        }
        for i in 0..self.num_layers {
            let p = format!("transformer_blocks.{i}.");
            for name in [
                "to_q",
                "to_k",
                "to_v",
                "to_out.0",
                "add_q_proj",
                "add_k_proj",
                "add_v_proj",
                "to_add_out",
            ] {
                specs.push(TensorSpec::new(format!("{p}attn.{name}.weight"), &[d, d]));
            }
            for name in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"] {
                specs.push(TensorSpec::new(format!("{p}attn.{name}.weight"), &[hd]));
            }
            for ff in ["ff", "ff_context"] {
                specs.push(TensorSpec::new(
                    format!("{p}{ff}.linear_in.weight"),
                    &[2 * f, d],
                ));
                specs.push(TensorSpec::new(
                    format!("{p}{ff}.linear_out.weight"),
                    &[d, f],
                ));
            }
        }
        for i in 0..self.num_single_layers {
            let p = format!("single_transformer_blocks.{i}.attn.");
            specs.push(TensorSpec::new(
                format!("{p}to_qkv_mlp_proj.weight"),
                &[3 * d + 2 * f, d],
            ));
            specs.push(TensorSpec::new(format!("{p}to_out.weight"), &[d, d + f]));
            specs.push(TensorSpec::new(format!("{p}norm_q.weight"), &[hd]));
            specs.push(TensorSpec::new(format!("{p}norm_k.weight"), &[hd]));
        }
        specs
    }

    /// Every tensor of an original BFL single-file checkpoint, with its shape.
    pub fn bfl_tensor_specs(&self) -> Vec<TensorSpec> {
        let d = self.hidden_size();
        let f = self.mlp_hidden();
        let hd = self.attention_head_dim;
        let mut specs = vec![
            TensorSpec::new("img_in.weight", &[d, self.in_channels]),
            TensorSpec::new("txt_in.weight", &[d, self.joint_attention_dim]),
            TensorSpec::new(
                "time_in.in_layer.weight",
                &[d, self.timestep_guidance_channels],
            ),
            TensorSpec::new("time_in.out_layer.weight", &[d, d]),
            TensorSpec::new("double_stream_modulation_img.lin.weight", &[6 * d, d]),
            TensorSpec::new("double_stream_modulation_txt.lin.weight", &[6 * d, d]),
            TensorSpec::new("single_stream_modulation.lin.weight", &[3 * d, d]),
            TensorSpec::new("final_layer.adaLN_modulation.1.weight", &[2 * d, d]),
            TensorSpec::new("final_layer.linear.weight", &[self.out_channels(), d]),
        ];
        if self.guidance_embeds {
            specs.push(TensorSpec::new(
                "guidance_in.in_layer.weight",
                &[d, self.timestep_guidance_channels],
            ));
            specs.push(TensorSpec::new("guidance_in.out_layer.weight", &[d, d]));
        }
        for i in 0..self.num_layers {
            let p = format!("double_blocks.{i}.");
            for s in ["img", "txt"] {
                specs.push(TensorSpec::new(
                    format!("{p}{s}_attn.qkv.weight"),
                    &[3 * d, d],
                ));
                specs.push(TensorSpec::new(format!("{p}{s}_attn.proj.weight"), &[d, d]));
                specs.push(TensorSpec::new(
                    format!("{p}{s}_attn.norm.query_norm.scale"),
                    &[hd],
                ));
                specs.push(TensorSpec::new(
                    format!("{p}{s}_attn.norm.key_norm.scale"),
                    &[hd],
                ));
                specs.push(TensorSpec::new(format!("{p}{s}_mlp.0.weight"), &[2 * f, d]));
                specs.push(TensorSpec::new(format!("{p}{s}_mlp.2.weight"), &[d, f]));
            }
        }
        for i in 0..self.num_single_layers {
            let p = format!("single_blocks.{i}.");
            specs.push(TensorSpec::new(
                format!("{p}linear1.weight"),
                &[3 * d + 2 * f, d],
            ));
            specs.push(TensorSpec::new(format!("{p}linear2.weight"), &[d, d + f]));
            specs.push(TensorSpec::new(format!("{p}norm.query_norm.scale"), &[hd]));
            specs.push(TensorSpec::new(format!("{p}norm.key_norm.scale"), &[hd]));
        }
        specs
    }
}

/// Which key layout a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// diffusers `Flux2Transformer2DModel` names.
    Diffusers,
    /// Original BFL `flux2` names (fused qkv).
    Bfl,
}

/// Counts `prefix{i}.` blocks present in a checkpoint.
fn count_blocks(weights: &Weights, prefix: &str) -> usize {
    let mut n = 0;
    while weights
        .names()
        .iter()
        .any(|name| name.starts_with(&format!("{prefix}{n}.")))
    {
        n += 1;
    }
    n
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
                "single_blocks.0.norm.query_norm.scale",
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

#[derive(Debug, Clone)]
struct StreamWeights {
    qkv: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    proj: Linear,
    mlp_in: Linear,
    mlp_out: Linear,
}

#[derive(Debug, Clone)]
struct DoubleBlock {
    img: StreamWeights,
    txt: StreamWeights,
}

#[derive(Debug, Clone)]
struct SingleBlock {
    linear1: Linear,
    linear2: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
}

/// A loaded FLUX.2 transformer. Cloning is cheap (weights are shared).
#[derive(Debug, Clone)]
pub struct Flux2Transformer {
    cfg: Flux2Config,
    dtype: DType,
    device: Device,
    img_in: Linear,
    txt_in: Linear,
    time_in: (Linear, Linear),
    guidance_in: Option<(Linear, Linear)>,
    mod_img: Linear,
    mod_txt: Linear,
    mod_single: Linear,
    /// Rows ordered (scale, shift), diffusers order.
    final_mod: Linear,
    final_linear: Linear,
    double_blocks: Vec<DoubleBlock>,
    single_blocks: Vec<SingleBlock>,
    /// LayerNorm without affine parameters, expressed with ones/zeros for candle's fused op.
    ln_ones: Tensor,
    ln_zeros: Tensor,
    attention: AttentionBackend,
    /// Step-distilled checkpoints ignore CFG (diffusers `is_distilled` in model_index.json).
    is_distilled: bool,
    /// Training mode: composite differentiable kernels instead of candle's fused ones (see [`crate::ops`]).
    differentiable: bool,
    /// Caches of a compiled model (see [`Flux2Transformer::compile`]); `None` when eager.
    compiled: Option<std::sync::Arc<crate::compile::CompiledState>>,
    /// Page-locked RAM of an offloaded model's weights (see [`Flux2Transformer::pinned_for`]).
    pinned: Option<std::sync::Arc<veetance_gpu::memory::PinnedHost>>,
}

fn linear(w: Tensor) -> Linear {
    Linear::new(w)
}

impl Flux2Transformer {
    /// Loads a transformer from a diffusers `transformer/` directory (config.json + safetensors,
    /// sharded or not) or from a single safetensors file in either layout.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if path.is_dir() {
            let cfg_path = path.join("config.json");
            let weights = Weights::from_dir(path)?;
            let layout = detect_layout(&weights);
            let cfg = if cfg_path.exists() {
                read_json::<Flux2Config>(&cfg_path)?
            } else {
                infer_config(&weights, layout)?
            };
            cfg.validate(&cfg_path)?;
            Self::from_weights(&weights, cfg, layout, dtype, device)
        } else {
            let weights = Weights::from_file(path)?.strip_common_prefix(COMFY_PREFIXES);
            let layout = detect_layout(&weights);
            let cfg = infer_config(&weights, layout)?;
            cfg.validate(path)?;
            Self::from_weights(&weights, cfg, layout, dtype, device)
        }
    }

    /// Builds the model from already opened weights with a known configuration.
    pub fn from_weights(
        weights: &Weights,
        cfg: Flux2Config,
        layout: CheckpointLayout,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate(weights.origin())?;
        let specs = match layout {
            CheckpointLayout::Diffusers => cfg.diffusers_tensor_specs(),
            CheckpointLayout::Bfl => cfg.bfl_tensor_specs(),
        };
        weights.check(&specs, |_| false)?;
        let w = Source::File(Loader {
            weights,
            dtype,
            device,
        });
        Self::build(cfg, layout, &w, dtype, device)
    }

    /// A model with random weights (normal, σ = 0.02; norm scales 1) for speed measurements
    /// and shape tests of full-size architectures without a checkpoint. Not seeded.
    pub fn random(cfg: Flux2Config, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate(Path::new("<random>"))?;
        let shapes = cfg
            .diffusers_tensor_specs()
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        let w = Source::Random {
            shapes,
            dtype,
            device,
        };
        Self::build(cfg, CheckpointLayout::Diffusers, &w, dtype, device)
    }

    fn build(
        cfg: Flux2Config,
        layout: CheckpointLayout,
        w: &Source<'_>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let d = cfg.hidden_size();
        let cat = |names: [&str; 3]| -> Result<Tensor> {
            let parts = names.iter().map(|n| w.get(n)).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0).context("fusing q/k/v projections")
        };
        let model = match layout {
            CheckpointLayout::Diffusers => {
                let mut double_blocks = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let p = format!("transformer_blocks.{i}.");
                    let n = |s: &str| format!("{p}{s}.weight");
                    double_blocks.push(DoubleBlock {
                        img: StreamWeights {
                            qkv: linear(cat([&n("attn.to_q"), &n("attn.to_k"), &n("attn.to_v")])?),
                            q_norm: w.get(&n("attn.norm_q"))?,
                            k_norm: w.get(&n("attn.norm_k"))?,
                            proj: linear(w.get(&n("attn.to_out.0"))?),
                            mlp_in: linear(w.get(&n("ff.linear_in"))?),
                            mlp_out: linear(w.get(&n("ff.linear_out"))?),
                        },
                        txt: StreamWeights {
                            qkv: linear(cat([
                                &n("attn.add_q_proj"),
                                &n("attn.add_k_proj"),
                                &n("attn.add_v_proj"),
                            ])?),
                            q_norm: w.get(&n("attn.norm_added_q"))?,
                            k_norm: w.get(&n("attn.norm_added_k"))?,
                            proj: linear(w.get(&n("attn.to_add_out"))?),
                            mlp_in: linear(w.get(&n("ff_context.linear_in"))?),
                            mlp_out: linear(w.get(&n("ff_context.linear_out"))?),
                        },
                    });
                }
                let mut single_blocks = Vec::with_capacity(cfg.num_single_layers);
                for i in 0..cfg.num_single_layers {
                    let n = |s: &str| format!("single_transformer_blocks.{i}.attn.{s}.weight");
                    single_blocks.push(SingleBlock {
                        linear1: linear(w.get(&n("to_qkv_mlp_proj"))?),
                        linear2: linear(w.get(&n("to_out"))?),
                        q_norm: w.get(&n("norm_q"))?,
                        k_norm: w.get(&n("norm_k"))?,
                    });
                }
                let guidance_in = if cfg.guidance_embeds {
                    Some((
                        linear(w.get("time_guidance_embed.guidance_embedder.linear_1.weight")?),
                        linear(w.get("time_guidance_embed.guidance_embedder.linear_2.weight")?),
                    ))
                } else {
                    None
                };
                Self {
                    img_in: linear(w.get("x_embedder.weight")?),
                    txt_in: linear(w.get("context_embedder.weight")?),
                    time_in: (
                        linear(w.get("time_guidance_embed.timestep_embedder.linear_1.weight")?),
                        linear(w.get("time_guidance_embed.timestep_embedder.linear_2.weight")?),
                    ),
                    guidance_in,
                    mod_img: linear(w.get("double_stream_modulation_img.linear.weight")?),
                    mod_txt: linear(w.get("double_stream_modulation_txt.linear.weight")?),
                    mod_single: linear(w.get("single_stream_modulation.linear.weight")?),
                    final_mod: linear(w.get("norm_out.linear.weight")?),
                    final_linear: linear(w.get("proj_out.weight")?),
                    double_blocks,
                    single_blocks,
                    ln_ones: Tensor::ones(d, dtype, device)?,
                    ln_zeros: Tensor::zeros(d, dtype, device)?,
                    cfg,
                    dtype,
                    device: device.clone(),
                    attention: AttentionBackend::default(),
                    is_distilled: false,
                    differentiable: false,
                    compiled: None,
                    pinned: None,
                }
            }
            CheckpointLayout::Bfl => {
                let mut double_blocks = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let stream = |s: &str| -> Result<StreamWeights> {
                        let p = format!("double_blocks.{i}.{s}_");
                        Ok(StreamWeights {
                            qkv: linear(w.get(&format!("{p}attn.qkv.weight"))?),
                            q_norm: w.get(&format!("{p}attn.norm.query_norm.scale"))?,
                            k_norm: w.get(&format!("{p}attn.norm.key_norm.scale"))?,
                            proj: linear(w.get(&format!("{p}attn.proj.weight"))?),
                            mlp_in: linear(w.get(&format!("{p}mlp.0.weight"))?),
                            mlp_out: linear(w.get(&format!("{p}mlp.2.weight"))?),
                        })
                    };
                    double_blocks.push(DoubleBlock {
                        img: stream("img")?,
                        txt: stream("txt")?,
                    });
                }
                let mut single_blocks = Vec::with_capacity(cfg.num_single_layers);
                for i in 0..cfg.num_single_layers {
                    let p = format!("single_blocks.{i}.");
                    single_blocks.push(SingleBlock {
                        linear1: linear(w.get(&format!("{p}linear1.weight"))?),
                        linear2: linear(w.get(&format!("{p}linear2.weight"))?),
                        q_norm: w.get(&format!("{p}norm.query_norm.scale"))?,
                        k_norm: w.get(&format!("{p}norm.key_norm.scale"))?,
                    });
                }
                // BFL orders the final modulation rows (shift, scale); swap to (scale, shift).
                let ada = w.get("final_layer.adaLN_modulation.1.weight")?;
                let final_mod = Tensor::cat(&[ada.narrow(0, d, d)?, ada.narrow(0, 0, d)?], 0)?;
                let guidance_in = if cfg.guidance_embeds {
                    Some((
                        linear(w.get("guidance_in.in_layer.weight")?),
                        linear(w.get("guidance_in.out_layer.weight")?),
                    ))
                } else {
                    None
                };
                Self {
                    img_in: linear(w.get("img_in.weight")?),
                    txt_in: linear(w.get("txt_in.weight")?),
                    time_in: (
                        linear(w.get("time_in.in_layer.weight")?),
                        linear(w.get("time_in.out_layer.weight")?),
                    ),
                    guidance_in,
                    mod_img: linear(w.get("double_stream_modulation_img.lin.weight")?),
                    mod_txt: linear(w.get("double_stream_modulation_txt.lin.weight")?),
                    mod_single: linear(w.get("single_stream_modulation.lin.weight")?),
                    final_mod: linear(final_mod),
                    final_linear: linear(w.get("final_layer.linear.weight")?),
                    double_blocks,
                    single_blocks,
                    ln_ones: Tensor::ones(d, dtype, device)?,
                    ln_zeros: Tensor::zeros(d, dtype, device)?,
                    cfg,
                    dtype,
                    device: device.clone(),
                    attention: AttentionBackend::default(),
                    is_distilled: false,
                    differentiable: false,
                    compiled: None,
                    pinned: None,
                }
            }
        };
        Ok(model)
    }

    /// A clone (sharing weights) that computes with differentiable kernels when `on` (training), or
    /// with candle's fused kernels (inference, the default). Both compute the same function; the fused
    /// ones have no backward pass (see [`crate::ops`]).
    pub fn with_differentiable(&self, on: bool) -> Self {
        Self {
            differentiable: on,
            ..self.clone()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Flux2Config {
        &self.cfg
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the checkpoint is step-distilled (klein): the sampler then never runs CFG.
    pub fn is_distilled(&self) -> bool {
        self.is_distilled
    }

    /// A clone marked as step-distilled or not ([`crate::Bundle::load`] reads it from
    /// `model_index.json`; a lone transformer file defaults to not distilled).
    pub fn with_distilled(&self, is_distilled: bool) -> Self {
        Self {
            is_distilled,
            ..self.clone()
        }
    }

    /// The attention backend in use.
    pub fn attention(&self) -> &AttentionBackend {
        &self.attention
    }

    /// A clone of this model (sharing weights) that uses another attention backend.
    pub fn with_attention(&self, backend: AttentionBackend) -> Self {
        Self {
            attention: backend,
            ..self.clone()
        }
    }

    /// One forward pass.
    ///
    /// - `img_tokens`: `[B, N, in_channels]` noisy latent tokens (raster order);
    /// - `img_ids`: `[N, 4]` f32 position ids (t, h, w, l), see [`image_ids`];
    /// - `txt`: `[B, L, joint_attention_dim]` text conditioning;
    /// - `txt_ids`: `[L, 4]`, see [`text_ids`];
    /// - `timestep`: `[B]` σ in [0, 1] (multiplied by 1000 inside, in the model dtype);
    /// - `guidance`: `[B]` guidance scale, only for models with a guidance embedder.
    ///
    /// Returns the predicted velocity `[B, N, out_channels]` in the model dtype.
    pub fn forward(
        &self,
        img_tokens: &Tensor,
        img_ids: &Tensor,
        txt: &Tensor,
        txt_ids: &Tensor,
        timestep: &Tensor,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        let rope = self.rope_tables(txt_ids, img_ids)?;
        self.forward_with_rope(img_tokens, txt, &rope, timestep, guidance)
            .context("FLUX.2 transformer forward")
    }

    /// RoPE cos/sin tables `[L_txt + N, head_dim/2]` (f32) for the [txt, img] sequence.
    pub fn rope_tables(&self, txt_ids: &Tensor, img_ids: &Tensor) -> Result<RopeTables> {
        let ids = Tensor::cat(
            &[txt_ids.to_dtype(DType::F32)?, img_ids.to_dtype(DType::F32)?],
            0,
        )?;
        let ids: Vec<Vec<f32>> = ids.to_vec2().context("reading position ids")?;
        let half: usize = self.cfg.axes_dims_rope.iter().sum::<usize>() / 2;
        let mut cos = Vec::with_capacity(ids.len() * half);
        let mut sin = Vec::with_capacity(ids.len() * half);
        for row in &ids {
            for (axis, &dim) in self.cfg.axes_dims_rope.iter().enumerate() {
                let pos = f64::from(row.get(axis).copied().unwrap_or(0.0));
                for j in 0..dim / 2 {
                    // diffusers computes these frequencies in float64 and casts the result to f32.
                    let omega = 1.0 / self.cfg.rope_theta.powf((2 * j) as f64 / dim as f64);
                    let angle = pos * omega;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let len = ids.len();
        Ok(RopeTables {
            cos: Tensor::from_vec(cos, (len, half), &self.device)?,
            sin: Tensor::from_vec(sin, (len, half), &self.device)?,
        })
    }

    fn timestep_embedding(
        &self,
        t: &Tensor,
        mlp: &(Linear, Linear),
    ) -> candle_core::Result<Tensor> {
        // diffusers: `timestep.to(dtype) * 1000`, so the product is rounded in the model dtype.
        let t = (t.to_dtype(self.dtype)? * 1000.0)?;
        let half = self.cfg.timestep_guidance_channels / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|k| (-(10000f64.ln() as f32) * k as f32 / half as f32).exp())
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), &self.device)?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        // flip_sin_to_cos: cos first, then sin.
        let emb = Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)?.to_dtype(self.dtype)?;
        mlp.1.forward(&mlp.0.forward(&emb)?.silu()?)
    }

    fn layer_norm(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::layer_norm(
            x,
            &self.ln_ones,
            &self.ln_zeros,
            self.cfg.eps as f32,
            self.differentiable,
        )
    }

    /// Whether this instance runs the fused CUDA kernels of [`veetance_gpu::fused`] (a compiled
    /// model on a CUDA device with a supported head dim; see [`crate::compile`]).
    fn fused(&self) -> bool {
        !self.differentiable && self.compiled.as_ref().is_some_and(|c| c.fused())
    }

    /// `(1 + scale) · LN(x) + shift` with per-sample vectors `[B, 1, D]`.
    fn modulate(&self, x: &Tensor, shift: &Tensor, scale: &Tensor) -> candle_core::Result<Tensor> {
        if self.fused() {
            return veetance_gpu::fused::modulate(x, shift, scale, self.cfg.eps as f32);
        }
        self.layer_norm(x)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(shift)
    }

    /// `x + gate · y` with a per-sample gate `[B, 1, D]`.
    fn gated_residual(&self, x: &Tensor, y: &Tensor, gate: &Tensor) -> candle_core::Result<Tensor> {
        if self.fused() {
            return veetance_gpu::fused::gate_residual(x, y, gate);
        }
        x + y.broadcast_mul(gate)?
    }

    /// `silu(a) · b` for the halves `[a | b]` (each `f` wide) of the last dimension of `x`.
    fn swiglu(&self, x: &Tensor, f: usize) -> candle_core::Result<Tensor> {
        if self.fused() {
            return veetance_gpu::fused::swiglu(x, f);
        }
        candle_nn::ops::swiglu(x)
    }

    /// Attention over the concatenated token ranges of `parts` (fused q/k/v projection, q norm,
    /// k norm); returns `[B, ΣL, D]`.
    fn joint_attention(
        &self,
        parts: &[(&Tensor, &Tensor, &Tensor)],
        rope: &RopeTables,
    ) -> candle_core::Result<Tensor> {
        if self.fused() {
            let gpu_parts: Vec<veetance_gpu::fused::QkvPart<'_>> = parts
                .iter()
                .map(|&(qkv, q_norm, k_norm)| veetance_gpu::fused::QkvPart {
                    qkv,
                    q_norm,
                    k_norm,
                })
                .collect();
            // [B, L, H, hd] each: attention reads them through transposed views, no copies.
            let (q, k, v) = veetance_gpu::fused::qk_norm_rope(
                &gpu_parts,
                self.cfg.num_attention_heads,
                &rope.cos,
                &rope.sin,
                self.cfg.eps as f32,
            )?;
            let out = self.attention.attend_token_major(
                &q.transpose(1, 2)?,
                &k.transpose(1, 2)?,
                &v.transpose(1, 2)?,
            )?;
            let (b, l, _, _) = out.dims4()?;
            return out.reshape((b, l, self.cfg.hidden_size()));
        }
        let d = self.cfg.hidden_size();
        let mut qs = Vec::with_capacity(parts.len());
        let mut ks = Vec::with_capacity(parts.len());
        let mut vs = Vec::with_capacity(parts.len());
        for &(qkv, q_norm, k_norm) in parts {
            let (q, k, v) = self.qkv_heads(&qkv.narrow(D::Minus1, 0, 3 * d)?, q_norm, k_norm)?;
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let cat = |xs: Vec<Tensor>| -> candle_core::Result<Tensor> {
            match xs.len() {
                1 => xs
                    .into_iter()
                    .next()
                    .ok_or_else(|| candle_core::Error::Msg("empty".into())),
                _ => Tensor::cat(&xs, 2),
            }
        };
        self.attend(&cat(qs)?, &cat(ks)?, &cat(vs)?, rope)
    }

    /// Projects `[B, L, 3D]` to normed, rotated q, k and v `[B, H, L, hd]`.
    fn qkv_heads(
        &self,
        qkv: &Tensor,
        q_norm: &Tensor,
        k_norm: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, l, _) = qkv.dims3()?;
        let h = self.cfg.num_attention_heads;
        let hd = self.cfg.attention_head_dim;
        let d = self.cfg.hidden_size();
        let eps = self.cfg.eps as f32;
        let split = |i: usize| qkv.narrow(D::Minus1, i * d, d)?.reshape((b, l, h, hd));
        let q = crate::ops::rms_norm(&split(0)?, q_norm, eps, self.differentiable)?;
        let k = crate::ops::rms_norm(&split(1)?, k_norm, eps, self.differentiable)?;
        let v = split(2)?;
        Ok((
            q.transpose(1, 2)?.contiguous()?,
            k.transpose(1, 2)?.contiguous()?,
            v.transpose(1, 2)?.contiguous()?,
        ))
    }

    fn rope(&self, x: &Tensor, rope: &RopeTables) -> candle_core::Result<Tensor> {
        crate::ops::rope_i(x, &rope.cos, &rope.sin, self.differentiable)
    }

    /// Joint attention over `[B, H, L, hd]`; returns `[B, L, D]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        rope: &RopeTables,
    ) -> candle_core::Result<Tensor> {
        let q = self.rope(q, rope)?;
        let k = self.rope(k, rope)?;
        let out = if self.differentiable {
            crate::ops::differentiable_attention(&q, &k, v, None)?
        } else {
            self.attention.attend(&q, &k, v, None)?
        };
        let (b, _, l, _) = out.dims4()?;
        out.transpose(1, 2)?.reshape((b, l, self.cfg.hidden_size()))
    }

    /// A clone whose projection weights are stored pre-transposed (see [`crate::proj::Proj`]).
    pub(crate) fn with_projections_laid_out(&self) -> Result<Self> {
        self.map_weights(&|p| p.laid_out_for_matmul(), &|t| Ok(t.clone()))
    }

    /// A copy of this model with every weight on `device` (the model pool swaps transformers
    /// between RAM and VRAM with it). Compiled caches are not carried over: compile again on
    /// the target device.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let f = |t: &Tensor| t.to_device(device);
        let mut moved = self.map_weights(&|p| p.map_weight(&f), &f)?;
        moved.device = device.clone();
        moved.compiled = None;
        moved.pinned = None;
        Ok(moved)
    }

    /// A clone whose weights in RAM are page-locked for `gpu`, so that [`Self::to_device`]
    /// copies them to it as DMA at the link's rate (Load's `offload` pins its RAM copy once).
    /// A plain clone when the weights are not in RAM or `gpu` is not a CUDA device.
    pub fn pinned_for(&self, gpu: &Device) -> Self {
        if !self.device.is_cpu() || !gpu.is_cuda() {
            return self.clone();
        }
        let all = std::cell::RefCell::new(Vec::new());
        let collect = |t: &Tensor| -> candle_core::Result<Tensor> {
            all.borrow_mut().push(t.clone());
            Ok(t.clone())
        };
        if self
            .map_weights(&|p| p.map_weight(&collect), &collect)
            .is_err()
        {
            return self.clone();
        }
        Self {
            pinned: Some(std::sync::Arc::new(veetance_gpu::memory::pin_host(
                all.into_inner(),
                gpu,
            ))),
            ..self.clone()
        }
    }

    /// Bytes of this model's RAM that are page-locked (0 unless [`Self::pinned_for`] pinned it).
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned.as_ref().map_or(0, |p| p.pinned_bytes())
    }

    /// A clone with `proj` applied to every projection and `tensor` to every other tensor the
    /// model holds (norm scales, LayerNorm constants).
    fn map_weights(
        &self,
        proj: &dyn Fn(&Linear) -> candle_core::Result<Linear>,
        tensor: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Self> {
        let (lin, f) = (proj, tensor);
        let pair = |(a, b): &(Linear, Linear)| -> candle_core::Result<(Linear, Linear)> {
            Ok((lin(a)?, lin(b)?))
        };
        let stream = |s: &StreamWeights| -> candle_core::Result<StreamWeights> {
            Ok(StreamWeights {
                qkv: lin(&s.qkv)?,
                q_norm: f(&s.q_norm)?,
                k_norm: f(&s.k_norm)?,
                proj: lin(&s.proj)?,
                mlp_in: lin(&s.mlp_in)?,
                mlp_out: lin(&s.mlp_out)?,
            })
        };
        Ok(Self {
            img_in: lin(&self.img_in)?,
            txt_in: lin(&self.txt_in)?,
            time_in: pair(&self.time_in)?,
            guidance_in: self.guidance_in.as_ref().map(pair).transpose()?,
            mod_img: lin(&self.mod_img)?,
            mod_txt: lin(&self.mod_txt)?,
            mod_single: lin(&self.mod_single)?,
            final_mod: lin(&self.final_mod)?,
            final_linear: lin(&self.final_linear)?,
            double_blocks: self
                .double_blocks
                .iter()
                .map(|b| {
                    Ok(DoubleBlock {
                        img: stream(&b.img)?,
                        txt: stream(&b.txt)?,
                    })
                })
                .collect::<candle_core::Result<_>>()?,
            single_blocks: self
                .single_blocks
                .iter()
                .map(|b| {
                    Ok(SingleBlock {
                        linear1: lin(&b.linear1)?,
                        linear2: lin(&b.linear2)?,
                        q_norm: f(&b.q_norm)?,
                        k_norm: f(&b.k_norm)?,
                    })
                })
                .collect::<candle_core::Result<_>>()?,
            ln_ones: f(&self.ln_ones)?,
            ln_zeros: f(&self.ln_zeros)?,
            ..self.clone()
        })
    }

    /// A clone carrying `state` as its compiled caches.
    pub(crate) fn with_compiled_state(
        &self,
        state: std::sync::Arc<crate::compile::CompiledState>,
    ) -> Self {
        Self {
            compiled: Some(state),
            ..self.clone()
        }
    }

    pub(crate) fn compiled_ref(&self) -> Option<&std::sync::Arc<crate::compile::CompiledState>> {
        self.compiled.as_ref()
    }

    /// Everything the timestep (and guidance) decide for one step: the shared modulation vectors
    /// of the double and single blocks and of the final layer, each `[B, 1, D]` (final: `[B, 1, 2D]`).
    pub(crate) fn modulation(
        &self,
        timestep: &Tensor,
        guidance: Option<&Tensor>,
    ) -> candle_core::Result<Modulation> {
        let d = self.cfg.hidden_size();
        let mut temb = self.timestep_embedding(timestep, &self.time_in)?;
        if let (Some(g), Some(mlp)) = (guidance, &self.guidance_in) {
            temb = (temb + self.timestep_embedding(g, mlp)?)?;
        }
        let silu_temb = temb.silu()?;
        let chunks = |m: &Linear, n: usize| -> candle_core::Result<Vec<Tensor>> {
            let out = m.forward(&silu_temb)?.unsqueeze(1)?;
            (0..n).map(|i| out.narrow(D::Minus1, i * d, d)).collect()
        };
        Ok(Modulation {
            img: chunks(&self.mod_img, 6)?,
            txt: chunks(&self.mod_txt, 6)?,
            single: chunks(&self.mod_single, 3)?,
            final_emb: self.final_mod.forward(&silu_temb)?.unsqueeze(1)?,
        })
    }

    /// The forward pass with precomputed RoPE tables (the sampler reuses them across steps).
    pub fn forward_with_rope(
        &self,
        img_tokens: &Tensor,
        txt: &Tensor,
        rope: &RopeTables,
        timestep: &Tensor,
        guidance: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let modulation = match &self.compiled {
            Some(compiled) => {
                compiled.modulation(timestep, guidance, || self.modulation(timestep, guidance))?
            }
            None => std::sync::Arc::new(self.modulation(timestep, guidance)?),
        };
        let txt = match &self.compiled {
            Some(compiled) => {
                compiled.text(txt, || self.txt_in.forward(&txt.to_dtype(self.dtype)?))?
            }
            None => self.txt_in.forward(&txt.to_dtype(self.dtype)?)?,
        };
        if self.fused()
            && let Some(compiled) = &self.compiled
        {
            let inputs = crate::graph::StepInputs {
                img_tokens,
                txt: &txt,
                rope,
                modulation: modulation.as_ref(),
            };
            if let Some(out) = compiled.graphs().run(self, &inputs)? {
                return Ok(out);
            }
        }
        self.blocks_forward(img_tokens, &txt, rope, modulation.as_ref())
    }

    /// Everything after the per-step conditioning: input projection, blocks, output layer.
    /// `txt` is the projected text `[B, L, D]`. Launches only device work (no host reads), so
    /// a compiled model can capture it as a CUDA graph ([`crate::graph`]).
    pub(crate) fn blocks_forward(
        &self,
        img_tokens: &Tensor,
        txt: &Tensor,
        rope: &RopeTables,
        modulation: &Modulation,
    ) -> candle_core::Result<Tensor> {
        let d = self.cfg.hidden_size();
        let f = self.cfg.mlp_hidden();
        let Modulation {
            img: mod_img,
            txt: mod_txt,
            single: mod_single,
            final_emb,
        } = modulation;
        let [i_sh1, i_sc1, i_g1, i_sh2, i_sc2, i_g2] = mod_img.as_slice() else {
            candle_core::bail!("image modulation has the wrong size");
        };
        let [t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2] = mod_txt.as_slice() else {
            candle_core::bail!("text modulation has the wrong size");
        };
        let [s_sh, s_sc, s_g] = mod_single.as_slice() else {
            candle_core::bail!("single modulation has the wrong size");
        };

        let mut img = self.img_in.forward(&img_tokens.to_dtype(self.dtype)?)?;
        let mut txt = txt.clone();
        let txt_len = txt.dim(1)?;

        for block in &self.double_blocks {
            let img_qkv = block.img.qkv.forward(&self.modulate(&img, i_sh1, i_sc1)?)?;
            let txt_qkv = block.txt.qkv.forward(&self.modulate(&txt, t_sh1, t_sc1)?)?;
            let attn = self.joint_attention(
                &[
                    (&txt_qkv, &block.txt.q_norm, &block.txt.k_norm),
                    (&img_qkv, &block.img.q_norm, &block.img.k_norm),
                ],
                rope,
            )?;
            let img_len = attn.dim(1)? - txt_len;
            let txt_attn = attn.narrow(1, 0, txt_len)?;
            let img_attn = attn.narrow(1, txt_len, img_len)?;

            img = self.gated_residual(&img, &block.img.proj.forward(&img_attn)?, i_g1)?;
            let ff = block.img.mlp_out.forward(
                &self.swiglu(
                    &block
                        .img
                        .mlp_in
                        .forward(&self.modulate(&img, i_sh2, i_sc2)?)?,
                    f,
                )?,
            )?;
            img = self.gated_residual(&img, &ff, i_g2)?;

            txt = self.gated_residual(&txt, &block.txt.proj.forward(&txt_attn)?, t_g1)?;
            let ff = block.txt.mlp_out.forward(
                &self.swiglu(
                    &block
                        .txt
                        .mlp_in
                        .forward(&self.modulate(&txt, t_sh2, t_sc2)?)?,
                    f,
                )?,
            )?;
            txt = self.gated_residual(&txt, &ff, t_g2)?;
        }

        let mut x = Tensor::cat(&[&txt, &img], 1)?;
        for block in &self.single_blocks {
            let fused = block.linear1.forward(&self.modulate(&x, s_sh, s_sc)?)?;
            // The attention part reads the first 3·D columns of `fused` in place.
            let attn = self.joint_attention(&[(&fused, &block.q_norm, &block.k_norm)], rope)?;
            let mlp = self.swiglu(&fused.narrow(D::Minus1, 3 * d, 2 * f)?, f)?;
            let out = block
                .linear2
                .forward(&Tensor::cat(&[attn, mlp], D::Minus1)?)?;
            x = self.gated_residual(&x, &out, s_g)?;
        }

        let img_len = x.dim(1)? - txt_len;
        let img = x.narrow(1, txt_len, img_len)?;
        let scale = final_emb.narrow(D::Minus1, 0, d)?;
        let shift = final_emb.narrow(D::Minus1, d, d)?;
        self.final_linear
            .forward(&self.modulate(&img, &shift, &scale)?)
    }
}

/// The per-step modulation vectors (see [`Flux2Transformer::modulation`]).
#[derive(Debug, Clone)]
pub(crate) struct Modulation {
    pub(crate) img: Vec<Tensor>,
    pub(crate) txt: Vec<Tensor>,
    pub(crate) single: Vec<Tensor>,
    pub(crate) final_emb: Tensor,
}

/// Where [`Flux2Transformer::build`] takes its tensors from.
enum Source<'a> {
    /// A validated checkpoint.
    File(Loader<'a>),
    /// Random values of the given shapes.
    Random {
        shapes: std::collections::HashMap<String, Vec<usize>>,
        dtype: DType,
        device: &'a Device,
    },
}

impl Source<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        match self {
            Source::File(loader) => loader.get(name),
            Source::Random {
                shapes,
                dtype,
                device,
            } => {
                let shape = shapes.get(name).ok_or_else(|| {
                    ModelError::InvalidArgument(format!("no random tensor named {name}"))
                })?;
                let tensor = if shape.len() == 1 {
                    Tensor::ones(shape.as_slice(), DType::F32, device)?
                } else {
                    Tensor::randn(0f32, 0.02, shape.as_slice(), device)?
                };
                Ok(tensor.to_dtype(*dtype)?)
            }
        }
    }
}

/// Precomputed RoPE cos/sin for one [txt, img] sequence.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// `[L, head_dim/2]` f32.
    pub cos: Tensor,
    /// `[L, head_dim/2]` f32.
    pub sin: Tensor,
}

/// Detects the key layout of a transformer checkpoint.
pub fn detect_layout(weights: &Weights) -> CheckpointLayout {
    if weights.contains("img_in.weight")
        || weights
            .names()
            .iter()
            .any(|n| n.starts_with("double_blocks."))
    {
        CheckpointLayout::Bfl
    } else {
        CheckpointLayout::Diffusers
    }
}

/// Position ids `[h·w, 4]` for a noisy image token grid: (0, row, col, 0) in raster order.
pub fn image_ids(grid_h: usize, grid_w: usize, device: &Device) -> Result<Tensor> {
    let mut ids = Vec::with_capacity(grid_h * grid_w * 4);
    for r in 0..grid_h {
        for c in 0..grid_w {
            ids.extend_from_slice(&[0f32, r as f32, c as f32, 0f32]);
        }
    }
    Ok(Tensor::from_vec(ids, (grid_h * grid_w, 4), device)?)
}

/// Position ids `[len, 4]` for text tokens: (0, 0, 0, j).
pub fn text_ids(len: usize, device: &Device) -> Result<Tensor> {
    let ids: Vec<f32> = (0..len).flat_map(|j| [0f32, 0.0, 0.0, j as f32]).collect();
    Ok(Tensor::from_vec(ids, (len, 4), device)?)
}
