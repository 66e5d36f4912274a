//! The Qwen3 text encoder for FLUX.2 \[klein\]: chat template, tokenizer, and hidden states.
//!
//! The pipeline (diffusers `Flux2KleinPipeline._get_qwen3_prompt_embeds`) is:
//!
//! 1. render the checkpoint's own chat template (Jinja, rendered here by minijinja with Python
//!    compatibility, `trim_blocks`/`lstrip_blocks` as transformers does) for one user message with
//!    `add_generation_prompt=True, enable_thinking=False`;
//! 2. tokenize with `tokenizer.json`, truncate and right-pad to 512 tokens with the pad token;
//! 3. run Qwen3 with a causal + key-padding mask and positions 0..511 and collect the hidden states
//!    of the configured layers (HF indexing: 0 is the embedding output, k is after decoder layer k−1,
//!    the last index is after the final norm), concatenated per token.
//!
//! Padded positions still matter: the transformer attends to all 512 text tokens without a mask,
//! so their hidden states must match HF's exactly. We stop after the last needed layer and never
//! load the layers after it (klein uses layers 9, 18, 27 of 36: a quarter of the encoder is skipped).

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module as _};

use crate::attention::AttentionBackend;
use crate::error::{CandleContext as _, ModelError, Result, read_json, read_to_string};
use crate::ops;
use crate::weights::{Loader, RandomTensors, TensorSource, TensorSpec, Weights};

/// Padded prompt length used by FLUX.2 \[klein\].
pub const MAX_TEXT_TOKENS: usize = 512;

/// The klein default: hidden states after decoder layers 9, 18 and 27 (HF `hidden_states` indices).
pub const KLEIN_OUT_LAYERS: [usize; 3] = [9, 18, 27];

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
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
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
            num_key_value_heads: 8,
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
            num_key_value_heads: 2,
            head_dim: Some(8),
            ..Self::qwen3_4b()
        }
    }

    /// Per-head dimension.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
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
    fn check_rope(&self, path: &Path) -> Result<()> {
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

/// Chooses which hidden-state layers feed the transformer when the checkpoint does not say.
///
/// The transformer's `joint_attention_dim` is `n × hidden`, so `n` is known; the layers are spread
/// evenly as `round(i · num_layers / (n + 1))`, which gives klein's (9, 18, 27) for 36 layers and
/// diffusers' test default (1,) for a 2-layer encoder.
pub fn default_out_layers(
    joint_attention_dim: usize,
    hidden_size: usize,
    num_layers: usize,
) -> Result<Vec<usize>> {
    if hidden_size == 0 || !joint_attention_dim.is_multiple_of(hidden_size) {
        return Err(ModelError::InvalidArgument(format!(
            "transformer joint_attention_dim {joint_attention_dim} is not a multiple of the text encoder hidden size {hidden_size}"
        )));
    }
    let n = joint_attention_dim / hidden_size;
    if n == 0 || n > 64 || num_layers > 4096 {
        return Err(ModelError::InvalidArgument(format!(
            "implausible text encoder layout: {n} stacked layers of {num_layers}"
        )));
    }
    if num_layers == 36 && n == 3 {
        return Ok(KLEIN_OUT_LAYERS.to_vec());
    }
    Ok((1..=n)
        .map(|i| ((i * num_layers) as f64 / (n + 1) as f64).round() as usize)
        .collect())
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_norm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    post_norm: Tensor,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// The Qwen3 decoder, loaded only up to the last layer we need.
#[derive(Debug, Clone)]
pub struct Qwen3Encoder {
    cfg: Qwen3Config,
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    /// Present only when the last hidden state (after the final norm) is requested.
    final_norm: Option<Tensor>,
    out_layers: Vec<usize>,
    dtype: DType,
    device: Device,
    /// Training mode: composite differentiable kernels (see [`crate::ops`]).
    differentiable: bool,
}

impl Qwen3Encoder {
    /// Loads `text_encoder/` (config.json + safetensors, sharded or not) for the given output layers.
    pub fn load(dir: &Path, out_layers: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg: Qwen3Config = read_json(&cfg_path)?;
        cfg.check_rope(&cfg_path)?;
        if cfg.attention_bias {
            return Err(ModelError::Config {
                path: cfg_path,
                reason: "attention_bias = true is not a Qwen3 layout".into(),
            });
        }
        let weights = Weights::from_dir(dir)?;
        Self::from_weights(&weights, cfg, out_layers, dtype, device)
    }

    /// Builds the encoder from opened weights.
    pub fn from_weights(
        weights: &Weights,
        cfg: Qwen3Config,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let plan = layers_to_run(&cfg, out_layers, weights.origin())?;
        let n_run = plan.n_run;
        let prefix = if weights.contains("model.embed_tokens.weight") {
            "model."
        } else {
            ""
        };
        let specs = qwen3_tensor_specs(&cfg, prefix, n_run, plan.final_norm);
        let layer_prefix = format!("{prefix}layers.");
        weights.check(&specs, |name| {
            // Layers after the last one we need, the final norm and the LM head are legitimately unused.
            name == "lm_head.weight"
                || name == format!("{prefix}norm.weight")
                || name
                    .strip_prefix(&layer_prefix)
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i >= n_run)
        })?;
        let w = TensorSource::File(Loader {
            weights,
            dtype,
            device,
        });
        Self::build(cfg, out_layers, plan, prefix, &w, dtype, device)
    }

    /// An encoder with random weights (normal σ = 0.02, norm scales 1, generated on the device)
    /// for speed measurements of full-size encoders without a checkpoint, e.g.
    /// `Qwen3Config::qwen3_4b()` with [`KLEIN_OUT_LAYERS`]. Only the layers up to the last output
    /// layer are created, as [`Qwen3Encoder::load`] does. Not seeded.
    ///
    /// The full-size presets stay finite in bf16: with klein's layers the largest hidden-state
    /// magnitude was 36 (Qwen3-4B) and 62 (Qwen3-8B) on 32 tokens.
    pub fn random(
        cfg: Qwen3Config,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let plan = layers_to_run(&cfg, out_layers, Path::new("<random>"))?;
        let specs = qwen3_tensor_specs(&cfg, "", plan.n_run, plan.final_norm);
        let w = TensorSource::Random(RandomTensors::new(specs, dtype, device));
        Self::build(cfg, out_layers, plan, "", &w, dtype, device)
    }

    /// Builds the encoder from checked tensors named with `prefix`.
    fn build(
        cfg: Qwen3Config,
        out_layers: &[usize],
        plan: LayerPlan,
        prefix: &str,
        w: &TensorSource<'_>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let n_run = plan.n_run;
        let lin = |n: &str| -> Result<Linear> { Ok(Linear::new(w.get(n)?, None)) };
        let mut layers = Vec::with_capacity(n_run);
        for i in 0..n_run {
            let p = format!("{prefix}layers.{i}.");
            layers.push(DecoderLayer {
                input_norm: w.get(&format!("{p}input_layernorm.weight"))?,
                q_proj: lin(&format!("{p}self_attn.q_proj.weight"))?,
                k_proj: lin(&format!("{p}self_attn.k_proj.weight"))?,
                v_proj: lin(&format!("{p}self_attn.v_proj.weight"))?,
                o_proj: lin(&format!("{p}self_attn.o_proj.weight"))?,
                q_norm: w.get(&format!("{p}self_attn.q_norm.weight"))?,
                k_norm: w.get(&format!("{p}self_attn.k_norm.weight"))?,
                post_norm: w.get(&format!("{p}post_attention_layernorm.weight"))?,
                gate_proj: lin(&format!("{p}mlp.gate_proj.weight"))?,
                up_proj: lin(&format!("{p}mlp.up_proj.weight"))?,
                down_proj: lin(&format!("{p}mlp.down_proj.weight"))?,
            });
        }
        let final_norm = if plan.final_norm {
            Some(w.get(&format!("{prefix}norm.weight"))?)
        } else {
            None
        };
        Ok(Self {
            embed: Embedding::new(
                w.get(&format!("{prefix}embed_tokens.weight"))?,
                cfg.hidden_size,
            ),
            layers,
            final_norm,
            out_layers: out_layers.to_vec(),
            cfg,
            dtype,
            device: device.clone(),
            differentiable: false,
        })
    }

    /// A clone (sharing weights) computing with differentiable kernels when `on` (training).
    pub fn with_differentiable(&self, on: bool) -> Self {
        Self {
            differentiable: on,
            ..self.clone()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Qwen3Config {
        &self.cfg
    }

    /// The hidden-state indices returned, in order.
    pub fn out_layers(&self) -> &[usize] {
        &self.out_layers
    }

    /// Hidden states of the output layers, concatenated: `[B, L, n·hidden]`.
    ///
    /// `input_ids` is `[B, L]` (u32), `attention_mask` `[B, L]` with 1 for real tokens, 0 for padding.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.forward_inner(input_ids, attention_mask)
            .context("Qwen3 text encoder forward")
    }

    fn forward_inner(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (b, len) = input_ids.dims2()?;
        let hd = self.cfg.head_dim();
        let n_heads = self.cfg.num_attention_heads;
        let n_kv = self.cfg.num_key_value_heads;
        let eps = self.cfg.rms_norm_eps as f32;

        // Causal + key-padding additive mask [B, 1, L, L]: query i sees key j iff j ≤ i and j is real.
        let key_real = attention_mask
            .to_dtype(DType::F32)?
            .reshape((b, 1, 1, len))?;
        let causal: Vec<f32> = (0..len)
            .flat_map(|i| (0..len).map(move |j| if j <= i { 1.0 } else { 0.0 }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, len, len), &self.device)?;
        let allowed = causal.broadcast_mul(&key_real)?;
        // Large negative instead of -inf: a row can never be fully masked with right padding, and
        // this keeps the arithmetic NaN-free if a caller passes an all-padding row anyway.
        let mask = ((allowed - 1.0)? * 1e30)?;

        // RoPE tables like HF: inverse frequencies and angles in f32.
        let half = hd / 2;
        let theta = self.cfg.rope_theta() as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        let angles: Vec<f32> = (0..len)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let angles = Tensor::from_vec(angles, (len, half), &self.device)?;
        let cos = angles.cos()?;
        let sin = angles.sin()?;
        let exact = AttentionBackend::default();
        let train = self.differentiable;

        let mut hidden = self.embed.forward(input_ids)?;
        let mut collected: Vec<(usize, Tensor)> = Vec::new();
        if self.out_layers.contains(&0) {
            collected.push((0, hidden.clone()));
        }
        for (idx, layer) in self.layers.iter().enumerate() {
            let residual = hidden.clone();
            let x = ops::rms_norm(&hidden, &layer.input_norm, eps, train)?;
            let q = layer.q_proj.forward(&x)?.reshape((b, len, n_heads, hd))?;
            let k = layer.k_proj.forward(&x)?.reshape((b, len, n_kv, hd))?;
            let v = layer.v_proj.forward(&x)?.reshape((b, len, n_kv, hd))?;
            let q = ops::rms_norm(&q, &layer.q_norm, eps, train)?
                .transpose(1, 2)?
                .contiguous()?;
            let k = ops::rms_norm(&k, &layer.k_norm, eps, train)?
                .transpose(1, 2)?
                .contiguous()?;
            let v = v.transpose(1, 2)?.contiguous()?;
            let q = ops::rope(&q, &cos, &sin, train)?;
            let k = ops::rope(&k, &cos, &sin, train)?;
            let (k, v) = if n_kv != n_heads {
                let rep = n_heads / n_kv.max(1);
                (repeat_kv(&k, rep)?, repeat_kv(&v, rep)?)
            } else {
                (k, v)
            };
            let attn = if train {
                ops::differentiable_attention(&q, &k, &v, Some(&mask))?
            } else {
                exact.attend(&q, &k, &v, Some(&mask))?
            };
            let attn = attn.transpose(1, 2)?.reshape((b, len, n_heads * hd))?;
            hidden = (residual + layer.o_proj.forward(&attn)?)?;
            let residual = hidden.clone();
            let x = ops::rms_norm(&hidden, &layer.post_norm, eps, train)?;
            let mlp = layer
                .down_proj
                .forward(&(layer.gate_proj.forward(&x)?.silu()? * layer.up_proj.forward(&x)?)?)?;
            hidden = (residual + mlp)?;
            let k_index = idx + 1;
            if self.out_layers.contains(&k_index) {
                let state = match (&self.final_norm, k_index == self.cfg.num_hidden_layers) {
                    (Some(norm), true) => ops::rms_norm(&hidden, norm, eps, train)?,
                    _ => hidden.clone(),
                };
                collected.push((k_index, state));
            }
        }
        let mut ordered = Vec::with_capacity(self.out_layers.len());
        for want in &self.out_layers {
            match collected.iter().find(|(k, _)| k == want) {
                Some((_, t)) => ordered.push(t.clone()),
                None => candle_core::bail!("hidden state {want} was not computed"),
            }
        }
        Tensor::cat(&ordered, D::Minus1)
    }
}

/// Which parts of the encoder a set of output layers needs.
#[derive(Debug, Clone, Copy)]
struct LayerPlan {
    /// Decoder layers that run (and are loaded): up to the last output layer.
    n_run: usize,
    /// Whether the final norm is needed (only when the last hidden state is requested).
    final_norm: bool,
}

/// Checks the configuration and the output layers and plans what runs; `path` names the
/// configuration in errors.
fn layers_to_run(cfg: &Qwen3Config, out_layers: &[usize], path: &Path) -> Result<LayerPlan> {
    let Some(&last) = out_layers.iter().max() else {
        return Err(ModelError::InvalidArgument(
            "no text encoder output layers given".into(),
        ));
    };
    if last > cfg.num_hidden_layers {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "output layer {last} requested but the encoder has {} layers",
                cfg.num_hidden_layers
            ),
        });
    }
    if cfg.num_hidden_layers > 4096
        || cfg.hidden_size > (1 << 20)
        || cfg.head_dim() > 4096
        || cfg.num_attention_heads > 4096
        || cfg.num_key_value_heads > 4096
        || cfg.intermediate_size > (1 << 22)
        || cfg.vocab_size > (1 << 24)
    {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "implausible sizes: {} layers, hidden {}, head_dim {}",
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.head_dim()
            ),
        });
    }
    Ok(LayerPlan {
        n_run: last.min(cfg.num_hidden_layers),
        final_norm: last == cfg.num_hidden_layers,
    })
}

fn repeat_kv(x: &Tensor, rep: usize) -> candle_core::Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, h, l, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, h, rep, l, d))?
        .reshape((b, h * rep, l, d))
}

/// The tensors a Qwen3 encoder needs for `n_run` layers.
pub fn qwen3_tensor_specs(
    cfg: &Qwen3Config,
    prefix: &str,
    n_run: usize,
    final_norm: bool,
) -> Vec<TensorSpec> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let q_dim = cfg.num_attention_heads * hd;
    let kv_dim = cfg.num_key_value_heads * hd;
    let f = cfg.intermediate_size;
    let mut specs = vec![TensorSpec::new(
        format!("{prefix}embed_tokens.weight"),
        &[cfg.vocab_size, h],
    )];
    for i in 0..n_run {
        let p = format!("{prefix}layers.{i}.");
        specs.push(TensorSpec::new(format!("{p}input_layernorm.weight"), &[h]));
        specs.push(TensorSpec::new(
            format!("{p}post_attention_layernorm.weight"),
            &[h],
        ));
        specs.push(TensorSpec::new(
            format!("{p}self_attn.q_proj.weight"),
            &[q_dim, h],
        ));
        specs.push(TensorSpec::new(
            format!("{p}self_attn.k_proj.weight"),
            &[kv_dim, h],
        ));
        specs.push(TensorSpec::new(
            format!("{p}self_attn.v_proj.weight"),
            &[kv_dim, h],
        ));
        specs.push(TensorSpec::new(
            format!("{p}self_attn.o_proj.weight"),
            &[h, q_dim],
        ));
        specs.push(TensorSpec::new(
            format!("{p}self_attn.q_norm.weight"),
            &[hd],
        ));
        specs.push(TensorSpec::new(
            format!("{p}self_attn.k_norm.weight"),
            &[hd],
        ));
        specs.push(TensorSpec::new(format!("{p}mlp.gate_proj.weight"), &[f, h]));
        specs.push(TensorSpec::new(format!("{p}mlp.up_proj.weight"), &[f, h]));
        specs.push(TensorSpec::new(format!("{p}mlp.down_proj.weight"), &[h, f]));
    }
    if final_norm {
        specs.push(TensorSpec::new(format!("{prefix}norm.weight"), &[h]));
    }
    specs
}

/// One chat message for [`ChatTemplate::render`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// The checkpoint's chat template rendered with minijinja.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

fn token_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// Reads the template from a tokenizer directory with transformers' priority:
    /// `chat_template.jinja` (what transformers ≥ 4.47 writes), then `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which `default` is used), then a
    /// processor-style `chat_template.json`.
    pub fn load(tokenizer_dir: &Path) -> Result<Self> {
        let config_path = tokenizer_dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.exists() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        let jinja_path = tokenizer_dir.join("chat_template.jinja");
        let source = if jinja_path.exists() {
            read_to_string(&jinja_path)?
        } else {
            match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| ModelError::Config {
                        path: config_path.clone(),
                        reason: "no default chat template".into(),
                    })?,
                _ => {
                    // Processor-style checkpoints (vision-language tokenizers) keep it in
                    // chat_template.json as {"chat_template": "..."}.
                    let json_path = tokenizer_dir.join("chat_template.json");
                    let from_json = if json_path.exists() {
                        let value: serde_json::Value = read_json(&json_path)?;
                        value
                            .get("chat_template")
                            .and_then(|t| t.as_str())
                            .map(str::to_string)
                    } else {
                        None
                    };
                    from_json.ok_or_else(|| ModelError::Config {
                        path: tokenizer_dir.to_path_buf(),
                        reason: "no chat template (no chat_template.jinja, tokenizer_config.json chat_template or chat_template.json)".into(),
                    })?
                }
            }
        };
        Ok(Self {
            source,
            bos_token: token_string(config.get("bos_token")),
            eos_token: token_string(config.get("eos_token")),
        })
    }

    /// A template from source text (tests, custom pipelines).
    pub fn from_source(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            bos_token: None,
            eos_token: None,
        }
    }

    /// Renders one user message with `add_generation_prompt=True, enable_thinking=False`, which is
    /// what the klein pipeline feeds the text encoder.
    pub fn render_user_prompt(&self, prompt: &str) -> Result<String> {
        self.render(
            &[ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            }],
            true,
            false,
        )
    }

    /// Renders a conversation the way transformers' `apply_chat_template(tokenize=False)` does.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String> {
        let mut env = minijinja::Environment::new();
        // transformers compiles chat templates with these two options; without them the Qwen3
        // template's `{%- ... %}` lines leave stray newlines and indentation in the prompt.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let template_error = |e: minijinja::Error| ModelError::Template {
            reason: format!("{e:#}"),
        };
        env.add_template("chat", &self.source)
            .map_err(template_error)?;
        let template = env.get_template("chat").map_err(template_error)?;
        let ctx = minijinja::context! {
            messages => messages.iter().map(|m| minijinja::context! { role => m.role, content => m.content }).collect::<Vec<_>>(),
            add_generation_prompt => add_generation_prompt,
            enable_thinking => enable_thinking,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        template.render(ctx).map_err(template_error)
    }
}

/// Tokenizer plus the padding rules of the klein pipeline.
#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
}

impl PromptTokenizer {
    /// Loads `tokenizer.json` and finds the pad token from `tokenizer_config.json`
    /// (`pad_token`, falling back to `<|endoftext|>`, then `eos_token`).
    pub fn load(tokenizer_dir: &Path) -> Result<Self> {
        let path = tokenizer_dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Io {
                path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
                reason: format!("cannot load {}: {e}", path.display()),
            })?;
        // tokenizer.json may carry padding/truncation settings left over from whoever saved it
        // (transformers writes them once a tokenizer has been called with padding); we pad and
        // truncate ourselves so that the attention mask is right, so switch theirs off.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer {
                reason: format!("cannot reset truncation of {}: {e}", path.display()),
            })?;
        let config_path = tokenizer_dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.exists() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        let candidates = [
            token_string(config.get("pad_token")),
            Some("<|endoftext|>".to_string()),
            token_string(config.get("eos_token")),
        ];
        let pad_id = candidates
            .iter()
            .flatten()
            .find_map(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| ModelError::Tokenizer {
                reason: format!("no pad token found: {}", tokenizer_dir.display()),
            })?;
        Ok(Self { tokenizer, pad_id })
    }

    /// Token ids truncated and right-padded to `max_len`, with the attention mask (1 = real).
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Result<(Vec<u32>, Vec<u32>)> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer {
                reason: format!("cannot tokenize prompt: {e}"),
            })?;
        let mut ids: Vec<u32> = encoding.get_ids().iter().copied().take(max_len).collect();
        let n_real = ids.len();
        ids.resize(max_len, self.pad_id);
        let mask: Vec<u32> = (0..max_len).map(|i| u32::from(i < n_real)).collect();
        Ok((ids, mask))
    }
}

/// Template + tokenizer + Qwen3: prompts in, conditioning `[B, 512, n·hidden]` out.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    /// `None` for a random encoder ([`TextEncoder::random`]), which only takes token ids.
    prompting: Option<Prompting>,
    encoder: Qwen3Encoder,
    max_len: usize,
}

/// What turns a prompt into token ids.
#[derive(Debug, Clone)]
struct Prompting {
    template: ChatTemplate,
    tokenizer: PromptTokenizer,
}

impl TextEncoder {
    /// Loads from the `tokenizer/` and `text_encoder/` directories of a diffusers checkpoint.
    pub fn load(
        tokenizer_dir: &Path,
        text_encoder_dir: &Path,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            prompting: Some(Prompting {
                template: ChatTemplate::load(tokenizer_dir)?,
                tokenizer: PromptTokenizer::load(tokenizer_dir)?,
            }),
            encoder: Qwen3Encoder::load(text_encoder_dir, out_layers, dtype, device)?,
            max_len: MAX_TEXT_TOKENS,
        })
    }

    /// An encoder with random weights and no tokenizer ([`Qwen3Encoder::random`]), for speed
    /// measurements: feed it token ids with [`TextEncoder::encode_ids`]; [`TextEncoder::encode`]
    /// refuses prompts.
    pub fn random(
        cfg: Qwen3Config,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            prompting: None,
            encoder: Qwen3Encoder::random(cfg, out_layers, dtype, device)?,
            max_len: MAX_TEXT_TOKENS,
        })
    }

    /// The same encoder padding/truncating prompts to `max_tokens` instead of 512 (diffusers'
    /// `max_sequence_length`). The transformer accepts any length; klein was trained with 512.
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_len = max_tokens.max(1);
        self
    }

    /// Prompt length after padding.
    pub fn max_tokens(&self) -> usize {
        self.max_len
    }

    /// The Qwen3 part.
    pub fn encoder(&self) -> &Qwen3Encoder {
        &self.encoder
    }

    /// Chat-templated, padded token ids and masks for each prompt: `([B, L] u32, [B, L] u32)`.
    pub fn tokenize(&self, prompts: &[&str]) -> Result<(Tensor, Tensor)> {
        let Some(Prompting {
            template,
            tokenizer,
        }) = &self.prompting
        else {
            return Err(ModelError::Tokenizer {
                reason: "this text encoder has random weights and no tokenizer; pass token ids to encode_ids".into(),
            });
        };
        let mut all_ids = Vec::with_capacity(prompts.len() * self.max_len);
        let mut all_mask = Vec::with_capacity(prompts.len() * self.max_len);
        for prompt in prompts {
            let text = template.render_user_prompt(prompt)?;
            let (ids, mask) = tokenizer.encode_padded(&text, self.max_len)?;
            all_ids.extend(ids);
            all_mask.extend(mask);
        }
        let device = &self.encoder.device;
        let shape = (prompts.len(), self.max_len);
        Ok((
            Tensor::from_vec(all_ids, shape, device)?,
            Tensor::from_vec(all_mask, shape, device)?,
        ))
    }

    /// Encodes prompts into conditioning `[B, 512, n·hidden]` in the encoder dtype.
    pub fn encode(&self, prompts: &[&str]) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(ModelError::InvalidArgument("no prompts to encode".into()));
        }
        let (ids, mask) = self.tokenize(prompts)?;
        self.encode_ids(&ids, &mask)
    }

    /// Encodes token ids that are already chat-templated and padded: `ids` `[B, L]` u32 (each
    /// below the vocabulary size), `attention_mask` `[B, L]` with 1 for real tokens and 0 for
    /// padding. Returns what [`TextEncoder::encode`] returns for the same ids: `[B, L, n·hidden]`
    /// in the encoder dtype.
    pub fn encode_ids(&self, ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        if ids.dims().len() != 2 || ids.dims() != attention_mask.dims() {
            return Err(ModelError::InvalidArgument(format!(
                "token ids {:?} and attention mask {:?} must both be [B, L]",
                ids.dims(),
                attention_mask.dims()
            )));
        }
        let out = self.encoder.forward(ids, attention_mask)?;
        Ok(out.to_dtype(self.encoder.dtype)?)
    }
}
