//! A whole FLUX.2 \[klein\] checkpoint: transformer, text encoder, VAE and scheduler settings.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::error::{ModelError, Result, read_json};
use crate::flux2::Flux2Transformer;
use crate::sampling::SchedulerConfig;
use crate::text::{Qwen3Config, TextEncoder, default_out_layers};
use crate::vae::Vae;

/// Step count and guidance a checkpoint is meant to be sampled with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    /// Steps.
    pub steps: usize,
    /// Guidance (CFG scale for base models; 1.0 for distilled ones).
    pub guidance: f64,
}

/// Everything `Load` produces.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The denoiser.
    pub transformer: Flux2Transformer,
    /// Template + tokenizer + Qwen3.
    pub text_encoder: TextEncoder,
    /// The autoencoder.
    pub vae: Vae,
    /// Scheduler settings (defaults when the checkpoint has none).
    pub scheduler: SchedulerConfig,
    /// Step-distilled (klein) models run without CFG.
    pub is_distilled: bool,
    /// Suggested steps and guidance.
    pub defaults: SamplingDefaults,
    /// Where it was loaded from.
    pub root: PathBuf,
}

/// The parts of `model_index.json` we read. Besides diffusers' `is_distilled`, a checkpoint may set
/// these optional Veetance keys (the built-in tiny model does; diffusers ignores unknown keys):
///
/// - `max_sequence_length`: prompt length in tokens after padding (diffusers' pipeline argument of
///   the same name; 512 when absent). Small models trained on short captions use far fewer.
/// - `text_encoder_out_layers`: which Qwen3 hidden states feed the transformer (diffusers'
///   `text_encoder_out_layers` pipeline argument); derived by [`default_out_layers`] when absent.
/// - `default_steps`, `default_guidance`: suggested sampling settings, overriding the
///   distilled/base defaults.
#[derive(serde::Deserialize, Default)]
struct ModelIndex {
    #[serde(default)]
    is_distilled: Option<bool>,
    #[serde(default)]
    max_sequence_length: Option<usize>,
    #[serde(default)]
    text_encoder_out_layers: Option<Vec<usize>>,
    #[serde(default)]
    default_steps: Option<usize>,
    #[serde(default)]
    default_guidance: Option<f64>,
}

impl Bundle {
    /// Loads a diffusers-layout directory (`model_index.json`, `transformer/`, `text_encoder/`,
    /// `tokenizer/`, `vae/`, `scheduler/`), converting every weight to `dtype` on `device`.
    ///
    /// The text-encoder layers are the klein default (9, 18, 27) for a 36-layer encoder, otherwise
    /// derived from the transformer's `joint_attention_dim` (see [`default_out_layers`]).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_placed(dir, dtype, device, device)
    }

    /// Like [`Bundle::load`], with the transformer's weights on `transformer_device` (RAM, when
    /// the transformer is offloaded and moved to `device` only while sampling).
    pub fn load_placed(
        dir: &Path,
        dtype: DType,
        device: &Device,
        transformer_device: &Device,
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::Config {
                path: dir.to_path_buf(),
                reason: "not a diffusers-layout checkpoint directory".into(),
            });
        }
        let index_path = dir.join("model_index.json");
        let index = if index_path.exists() {
            read_json::<ModelIndex>(&index_path)?
        } else {
            ModelIndex::default()
        };
        let is_distilled = index.is_distilled.unwrap_or(false);
        let transformer =
            Flux2Transformer::load(&dir.join("transformer"), dtype, transformer_device)?
                .with_distilled(is_distilled);
        let te_dir = dir.join("text_encoder");
        let te_cfg: Qwen3Config = read_json(&te_dir.join("config.json"))?;
        let out_layers = match index.text_encoder_out_layers {
            Some(layers) => layers,
            None => default_out_layers(
                transformer.config().joint_attention_dim,
                te_cfg.hidden_size,
                te_cfg.num_hidden_layers,
            )?,
        };
        if out_layers.len() * te_cfg.hidden_size != transformer.config().joint_attention_dim {
            return Err(ModelError::Config {
                path: index_path,
                reason: format!(
                    "{} text encoder layers of width {} do not make the transformer's joint_attention_dim {}",
                    out_layers.len(),
                    te_cfg.hidden_size,
                    transformer.config().joint_attention_dim
                ),
            });
        }
        let mut text_encoder =
            TextEncoder::load(&dir.join("tokenizer"), &te_dir, &out_layers, dtype, device)?;
        if let Some(max_tokens) = index.max_sequence_length {
            text_encoder = text_encoder.with_max_tokens(max_tokens);
        }
        let vae = Vae::load(&dir.join("vae"), dtype, device)?;
        let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler = if scheduler_path.exists() {
            SchedulerConfig::load(&scheduler_path)?
        } else {
            SchedulerConfig::default()
        };
        let mut defaults = if is_distilled {
            SamplingDefaults {
                steps: 4,
                guidance: 1.0,
            }
        } else {
            SamplingDefaults {
                steps: 50,
                guidance: 4.0,
            }
        };
        if let Some(steps) = index.default_steps {
            defaults.steps = steps.max(1);
        }
        if let Some(guidance) = index.default_guidance {
            defaults.guidance = guidance;
        }
        Ok(Self {
            transformer,
            text_encoder,
            vae,
            scheduler,
            is_distilled,
            defaults,
            root: dir.to_path_buf(),
        })
    }

    /// The negative conditioning diffusers' klein pipeline uses for CFG: the empty prompt through the
    /// same template and encoder. `None` for step-distilled checkpoints, which never run CFG.
    pub fn negative_conditioning(&self) -> Result<Option<candle_core::Tensor>> {
        if self.is_distilled {
            return Ok(None);
        }
        self.text_encoder.encode(&[""]).map(Some)
    }
}
