//! A whole FLUX.2 \[klein\] pipeline: transformer, text encoder, VAE and sampling settings, from a
//! diffusers checkpoint folder or from separate files (BFL, ComfyUI, GGUF, FP8).
//!
//! Defaults are diffusers 0.42.1 `Flux2KleinPipeline`'s, never derived from the weights:
//! text-encoder layers (9, 18, 27), 512 prompt tokens, 50 steps, guidance 4.0 (ignored by
//! step-distilled checkpoints, as `is_distilled` in `model_index.json` says), 1024 px
//! (`default_sample_size` 128 × the VAE's scale factor 2^(levels − 1)), the scheduler of
//! `scheduler_config.json` or klein's. A checkpoint may set other values in `model_index.json`
//! (see [`ModelIndex`]); docs/models.md lists every default with its source.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::detect::{self, ModelKind};
use crate::error::{ModelError, Result, read_json};
use crate::flux2::Flux2Transformer;
use crate::qwen3::{KLEIN_OUT_LAYERS, Qwen3Encoder, TextEncoder, TokenizerFiles};
use crate::sampling::SchedulerConfig;
use crate::vae::Vae;
use crate::weights::{QuantMode, Weights};

/// Largest prompt length accepted from `model_index.json` (Qwen3 handles 40,960 positions; the
/// attention mask costs L² memory, so anything far beyond klein's 512 is a mistake or an attack).
const MAX_PROMPT_TOKENS: usize = 4096;
/// Largest default step count accepted from `model_index.json` (Sample's own limit).
const MAX_DEFAULT_STEPS: usize = 1000;
/// Largest default image side accepted from `model_index.json` (Sample's own limit).
const MAX_DEFAULT_SIZE_PX: usize = 8192;

/// diffusers' `Flux2KleinPipeline.__call__` defaults.
pub mod reference {
    /// `num_inference_steps`.
    pub const STEPS: usize = 50;
    /// `guidance_scale`.
    pub const GUIDANCE: f64 = 4.0;
    /// `default_sample_size`; the default side is this × the VAE scale factor.
    pub const DEFAULT_SAMPLE_SIZE: usize = 128;
}

/// Step count, guidance and image size a checkpoint samples with when a workflow does not say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    /// Steps.
    pub steps: usize,
    /// Guidance (the CFG scale; ignored by step-distilled checkpoints).
    pub guidance: f64,
    /// Image width and height in pixels.
    pub size_px: usize,
}

/// The parts of `model_index.json` we read. Besides diffusers' `is_distilled`, a checkpoint may set
/// values diffusers takes as pipeline arguments (diffusers ignores these keys when loading; the
/// built-in tiny model sets them):
///
/// - `max_sequence_length`: prompt length in tokens after padding (512 when absent);
/// - `text_encoder_out_layers`: which Qwen3 hidden states feed the transformer ((9, 18, 27) when
///   absent);
/// - `default_steps`, `default_guidance`, `default_size_px`: what Sample uses when a workflow
///   leaves steps, guidance, width or height unset (50, 4.0 and 1024 px when absent).
#[derive(serde::Deserialize, Default, Debug, Clone)]
pub struct ModelIndex {
    /// diffusers' `is_distilled`.
    #[serde(default)]
    pub is_distilled: Option<bool>,
    /// Prompt length after padding.
    #[serde(default)]
    pub max_sequence_length: Option<usize>,
    /// Text-encoder hidden states used.
    #[serde(default)]
    pub text_encoder_out_layers: Option<Vec<usize>>,
    /// Default steps.
    #[serde(default)]
    pub default_steps: Option<usize>,
    /// Default guidance.
    #[serde(default)]
    pub default_guidance: Option<f64>,
    /// Default image side in pixels.
    #[serde(default)]
    pub default_size_px: Option<usize>,
}

impl ModelIndex {
    /// Reads and bounds-checks `model_index.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let index: ModelIndex = read_json(path)?;
        let bad = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(n) = index.max_sequence_length
            && !(1..=MAX_PROMPT_TOKENS).contains(&n)
        {
            return Err(bad(format!(
                "max_sequence_length {n} is outside 1..={MAX_PROMPT_TOKENS}"
            )));
        }
        if let Some(n) = index.default_steps
            && !(1..=MAX_DEFAULT_STEPS).contains(&n)
        {
            return Err(bad(format!(
                "default_steps {n} is outside 1..={MAX_DEFAULT_STEPS}"
            )));
        }
        if let Some(g) = index.default_guidance
            && !(0.0..=100.0).contains(&g)
        {
            return Err(bad(format!("default_guidance {g} is outside 0..=100")));
        }
        if let Some(px) = index.default_size_px
            && !(16..=MAX_DEFAULT_SIZE_PX).contains(&px)
        {
            return Err(bad(format!(
                "default_size_px {px} is outside 16..={MAX_DEFAULT_SIZE_PX}"
            )));
        }
        if let Some(layers) = &index.text_encoder_out_layers
            && (layers.is_empty() || layers.len() > 64)
        {
            return Err(bad(
                "text_encoder_out_layers must list 1 to 64 layers".into()
            ));
        }
        Ok(index)
    }
}

/// One part of a pipeline: a file or folder, and the tensor-name prefix it sits under (the parts of
/// a ComfyUI all-in-one checkpoint share one file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The file or folder.
    pub path: PathBuf,
    /// Prefix of this part's tensors inside the file (empty when the file holds only this part).
    pub prefix: String,
}

impl Part {
    fn whole(path: PathBuf) -> Self {
        Self {
            path,
            prefix: String::new(),
        }
    }

    /// The part's weights (headers read, nothing loaded).
    pub(crate) fn open(&self) -> Result<Weights> {
        let weights = Weights::open(&self.path)?;
        Ok(if self.prefix.is_empty() {
            weights
        } else {
            weights.with_prefix(&self.prefix)
        })
    }
}

/// Where each part of a pipeline comes from.
#[derive(Debug, Clone)]
pub struct BundleSources {
    /// The transformer: a diffusers `transformer/` folder or a single file.
    pub transformer: Part,
    /// The Qwen3 text encoder: a diffusers `text_encoder/` folder or a single file.
    pub text_encoder: Part,
    /// The tokenizer folder; `None` for the bundled Qwen3 tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// The VAE: a diffusers `vae/` folder or a single file.
    pub vae: Part,
    /// `scheduler/scheduler_config.json`, if the checkpoint has one.
    pub scheduler_config: Option<PathBuf>,
    /// The checkpoint's `model_index.json` settings (defaults when absent).
    pub index: ModelIndex,
    /// Whether the checkpoint is step-distilled (`is_distilled`, or for a single transformer
    /// file without one, a name without `base`: BFL names base checkpoints `flux-2-klein-base-*`).
    pub is_distilled: bool,
}

/// The folders searched for a single transformer file's text encoder and VAE: the file's own
/// folder and, in a ComfyUI models folder, the sibling `text_encoders/`, `clip/` and `vae/`.
fn companion_dirs(model: &Path) -> Vec<PathBuf> {
    let Some(dir) = model.parent() else {
        return Vec::new();
    };
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(models_root) = dir.parent() {
        for sibling in ["text_encoders", "clip", "vae"] {
            let candidate = models_root.join(sibling);
            if candidate.is_dir() && candidate != dir {
                dirs.push(candidate);
            }
        }
    }
    dirs
}

/// Model files (safetensors, GGUF) directly inside `dir`, sorted.
pub fn model_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("gguf")
                })
        })
        .collect();
    files.sort();
    files
}

impl BundleSources {
    /// The parts of a diffusers checkpoint folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::Config {
                path: dir.to_path_buf(),
                reason: "not a diffusers-layout checkpoint directory".into(),
            });
        }
        let index_path = dir.join("model_index.json");
        if !index_path.is_file() && !dir.join("transformer").is_dir() {
            return Err(ModelError::Config {
                path: dir.to_path_buf(),
                reason: "not a model folder: a diffusers checkpoint has model_index.json and a \
                         transformer/ folder; for a folder of model files, name one of the files (or \
                         pass the folder as --models-dir and pick a name from `veetance models`)"
                    .into(),
            });
        }
        let index = if index_path.is_file() {
            ModelIndex::load(&index_path)?
        } else {
            ModelIndex::default()
        };
        let scheduler = dir.join("scheduler").join("scheduler_config.json");
        let tokenizer = dir.join("tokenizer");
        Ok(Self {
            transformer: Part::whole(dir.join("transformer")),
            text_encoder: Part::whole(dir.join("text_encoder")),
            tokenizer: tokenizer.is_dir().then_some(tokenizer),
            vae: Part::whole(dir.join("vae")),
            scheduler_config: scheduler.is_file().then_some(scheduler),
            is_distilled: index.is_distilled.unwrap_or(false),
            index,
        })
    }

    /// The parts for Load's inputs: `model` is a diffusers folder, a single transformer file, or
    /// an all-in-one checkpoint; `text_encoder` and `vae` (files or folders) replace or supply the
    /// other parts. A single transformer file without them takes the one compatible text encoder
    /// and VAE found beside it or in a ComfyUI models folder's `text_encoders/` and `vae/`.
    pub fn resolve(model: &Path, text_encoder: Option<&Path>, vae: Option<&Path>) -> Result<Self> {
        let mut sources = if model.is_dir() {
            Self::from_dir(model)?
        } else {
            Self::from_single_file(model, text_encoder, vae)?
        };
        if let Some(te) = text_encoder {
            sources.set_text_encoder(te)?;
        }
        if let Some(vae) = vae {
            sources.vae = Part::whole(vae.to_path_buf());
        }
        Ok(sources)
    }

    fn set_text_encoder(&mut self, path: &Path) -> Result<()> {
        self.text_encoder = Part::whole(path.to_path_buf());
        // A diffusers `text_encoder/` folder brings its sibling `tokenizer/`, and so does a single
        // file with a `tokenizer/` folder beside it; otherwise the bundled Qwen3 tokenizer.
        self.tokenizer = path
            .parent()
            .map(|p| p.join("tokenizer"))
            .filter(|t| t.join("tokenizer.json").is_file());
        Ok(())
    }

    fn from_single_file(
        model: &Path,
        text_encoder: Option<&Path>,
        vae: Option<&Path>,
    ) -> Result<Self> {
        let weights = Weights::open(model)?;
        let kind = detect::classify(&weights);
        let file_name = model
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        // A single file carries no model_index.json; one may sit beside it as
        // `<name>.model_index.json` (a custom model's settings, such as the built-in tiny model's),
        // or, in BFL's repositories, the folder's own `model_index.json`.
        let index = match model_index_beside(model) {
            Some(path) => ModelIndex::load(&path)?,
            None => ModelIndex::default(),
        };
        let is_distilled = index
            .is_distilled
            .unwrap_or_else(|| !file_name.contains("base"));
        let text_width = match &kind {
            ModelKind::AllInOne => {
                let te_prefix = detect::ALL_IN_ONE_TEXT_ENCODERS
                    .iter()
                    .find(|p| weights.count_with_prefix(p) > 0)
                    .ok_or_else(|| ModelError::Config {
                        path: model.to_path_buf(),
                        reason: "an all-in-one checkpoint without a Qwen3 text encoder (text_encoders.qwen3_4b/8b.transformer.)".into(),
                    })?;
                return Ok(Self {
                    transformer: Part {
                        path: model.to_path_buf(),
                        prefix: detect::ALL_IN_ONE_TRANSFORMER.into(),
                    },
                    text_encoder: Part {
                        path: model.to_path_buf(),
                        prefix: (*te_prefix).into(),
                    },
                    tokenizer: None,
                    vae: Part {
                        path: model.to_path_buf(),
                        prefix: detect::ALL_IN_ONE_VAE.into(),
                    },
                    scheduler_config: None,
                    index,
                    is_distilled,
                });
            }
            ModelKind::Flux2Transformer { text_width, .. } => *text_width,
            ModelKind::Unsupported(why) => {
                return Err(ModelError::Config {
                    path: model.to_path_buf(),
                    reason: format!("not a FLUX.2 [klein] transformer: {why}"),
                });
            }
            ModelKind::Lora => {
                return Err(ModelError::Config {
                    path: model.to_path_buf(),
                    reason: "a LoRA adapter, not a model: load the model, then apply this file with LoadLoRA".into(),
                });
            }
            other => {
                return Err(ModelError::Config {
                    path: model.to_path_buf(),
                    reason: format!(
                        "this is a {}, not a transformer; give Load the transformer file as `model` and this file as `text_encoder` or `vae`",
                        other.label()
                    ),
                });
            }
        };
        let text_encoder = match text_encoder {
            Some(te) => te.to_path_buf(),
            None => {
                let n_layers = index
                    .text_encoder_out_layers
                    .as_ref()
                    .map_or(KLEIN_OUT_LAYERS.len(), Vec::len);
                find_companion(model, "text encoder", "text_encoder", |kind| {
                    matches!(kind, ModelKind::Qwen3TextEncoder { hidden, .. }
                        if hidden * n_layers == text_width)
                })?
            }
        };
        let vae = match vae {
            Some(vae) => vae.to_path_buf(),
            None => find_companion(model, "VAE", "vae", |kind| {
                matches!(kind, ModelKind::Flux2Vae)
            })?,
        };
        let mut sources = Self {
            transformer: Part::whole(model.to_path_buf()),
            text_encoder: Part::whole(text_encoder.clone()),
            tokenizer: None,
            vae: Part::whole(vae),
            scheduler_config: None,
            index,
            is_distilled,
        };
        sources.set_text_encoder(&text_encoder)?;
        Ok(sources)
    }

    /// Every file the parts read (for identity and sizes).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for part in [&self.transformer, &self.text_encoder, &self.vae] {
            if part.path.is_dir() {
                files.extend(
                    walkdir::WalkDir::new(&part.path)
                        .max_depth(1)
                        .into_iter()
                        .filter_map(std::result::Result::ok)
                        .filter(|e| e.file_type().is_file())
                        .map(walkdir::DirEntry::into_path),
                );
            } else {
                files.push(part.path.clone());
                let config = crate::files::config_path(&part.path);
                if config.is_file() {
                    files.push(config);
                }
            }
        }
        if let Some(tokenizer) = &self.tokenizer {
            files.extend(
                [
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "chat_template.jinja",
                ]
                .iter()
                .map(|f| tokenizer.join(f))
                .filter(|p| p.is_file()),
            );
        }
        files.extend(self.scheduler_config.clone());
        if self.transformer.path.is_file()
            && let Some(index) = model_index_beside(&self.transformer.path)
        {
            files.push(index);
        }
        if self.transformer.path.is_dir()
            && let Some(root) = self.transformer.path.parent()
            && root.join("model_index.json").is_file()
        {
            files.push(root.join("model_index.json"));
        }
        files.sort();
        files.dedup();
        files
    }
}

/// The `model_index.json` that states a single transformer file's settings, if any:
/// `<name>.model_index.json`, else the folder's `model_index.json`.
fn model_index_beside(model: &Path) -> Option<PathBuf> {
    let own = model.with_extension("model_index.json");
    if own.is_file() {
        return Some(own);
    }
    model
        .parent()
        .map(|dir| dir.join("model_index.json"))
        .filter(|p| p.is_file())
}

/// The one file (or diffusers component folder) in the companion folders of `model` that
/// `matches`, or a clear error.
fn find_companion(
    model: &Path,
    what: &str,
    input: &str,
    matches: impl Fn(&ModelKind) -> bool,
) -> Result<PathBuf> {
    let dirs = companion_dirs(model);
    let mut found = Vec::new();
    for dir in &dirs {
        // BFL's repositories put the single file beside diffusers component folders
        // (`text_encoder/`, `vae/`); a folder counts like a file.
        let component = dir.join(input);
        let candidates = model_files_in(dir)
            .into_iter()
            .chain(component.join("config.json").is_file().then_some(component));
        for file in candidates {
            if file == model {
                continue;
            }
            let Ok(weights) = Weights::open(&file) else {
                continue;
            };
            if matches(&detect::classify(&weights)) {
                found.push(file);
            }
        }
    }
    let searched = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ModelError::Config {
            path: model.to_path_buf(),
            reason: format!(
                "a single transformer file needs a {what}: set Load's `{input}` input (none that fits this transformer was found in {searched})"
            ),
        }),
        several => Err(ModelError::Config {
            path: model.to_path_buf(),
            reason: format!(
                "several files could be its {what} ({}); choose one with Load's `{input}` input",
                several
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
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
    /// Scheduler settings (klein's when the checkpoint has none).
    pub scheduler: SchedulerConfig,
    /// Step-distilled (klein) models run without CFG.
    pub is_distilled: bool,
    /// What Sample uses when a workflow does not say.
    pub defaults: SamplingDefaults,
    /// Where the parts came from.
    pub sources: BundleSources,
}

/// How to load a bundle.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype.
    pub dtype: DType,
    /// Device for the VAE (and the text encoder and transformer unless their own devices say
    /// otherwise).
    pub device: Device,
    /// Device for the transformer's weights (RAM when offloaded).
    pub transformer_device: Device,
    /// Device for the text encoder's weights (RAM when offloaded).
    pub text_encoder_device: Device,
    /// How compact (FP8, GGUF) weights compute.
    pub quant: QuantMode,
}

impl LoadOptions {
    /// Everything on `device` in `dtype`; compact weights compute exactly.
    pub fn new(dtype: DType, device: &Device) -> Self {
        Self {
            dtype,
            device: device.clone(),
            transformer_device: device.clone(),
            text_encoder_device: device.clone(),
            quant: QuantMode::Exact,
        }
    }
}

impl Bundle {
    /// Loads a diffusers-layout directory (`model_index.json`, `transformer/`, `text_encoder/`,
    /// `tokenizer/`, `vae/`, `scheduler/`), converting every weight to `dtype` on `device`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_sources(
            BundleSources::from_dir(dir)?,
            &LoadOptions::new(dtype, device),
        )
    }

    /// Loads the parts `sources` names.
    pub fn load_sources(sources: BundleSources, options: &LoadOptions) -> Result<Self> {
        let transformer = Flux2Transformer::load_part(
            &sources.transformer.open()?,
            &sources.transformer.path,
            options.dtype,
            &options.transformer_device,
            options.quant,
        )?
        .with_distilled(sources.is_distilled);

        let out_layers = sources
            .index
            .text_encoder_out_layers
            .clone()
            .unwrap_or_else(|| KLEIN_OUT_LAYERS.to_vec());
        let te_weights = sources.text_encoder.open()?;
        let te_cfg = Qwen3Encoder::config_of(&te_weights, &sources.text_encoder.path)?;
        let joint = transformer.config().joint_attention_dim;
        if out_layers.len() * te_cfg.hidden_size != joint {
            return Err(ModelError::Config {
                path: sources.text_encoder.path.clone(),
                reason: format!(
                    "{} text encoder layers of width {} make {} conditioning channels, but the transformer takes {joint}; this text encoder does not belong to this transformer",
                    out_layers.len(),
                    te_cfg.hidden_size,
                    out_layers.len() * te_cfg.hidden_size
                ),
            });
        }
        let encoder = Qwen3Encoder::from_weights(
            &te_weights,
            te_cfg,
            &out_layers,
            options.dtype,
            &options.text_encoder_device,
            options.quant,
        )?;
        drop(te_weights);
        let tokenizer = match &sources.tokenizer {
            Some(dir) => TokenizerFiles::from_dir(dir)?,
            None => TokenizerFiles::bundled_qwen3()?,
        };
        let mut text_encoder = TextEncoder::from_parts(&tokenizer, encoder)?;
        if let Some(max_tokens) = sources.index.max_sequence_length {
            text_encoder = text_encoder.with_max_tokens(max_tokens);
        }

        let vae = Vae::load_part(
            &sources.vae.open()?,
            &sources.vae.path,
            options.dtype,
            &options.device,
        )?;
        let scheduler = match &sources.scheduler_config {
            Some(path) => SchedulerConfig::load(path)?,
            None => SchedulerConfig::default(),
        };
        let vae_scale_factor = vae.config().spatial_factor();
        let defaults = SamplingDefaults {
            steps: sources.index.default_steps.unwrap_or(reference::STEPS),
            guidance: sources
                .index
                .default_guidance
                .unwrap_or(reference::GUIDANCE),
            size_px: sources
                .index
                .default_size_px
                .unwrap_or(reference::DEFAULT_SAMPLE_SIZE * vae_scale_factor),
        };
        Ok(Self {
            transformer,
            text_encoder,
            vae,
            scheduler,
            is_distilled: sources.is_distilled,
            defaults,
            sources,
        })
    }

    /// The negative conditioning diffusers' klein pipeline uses for CFG: the empty prompt through the
    /// same template and encoder. `None` for step-distilled checkpoints, which never run CFG.
    pub fn negative_conditioning(&self) -> Result<Option<candle_core::Tensor>> {
        self.negative_conditioning_on(None)
    }

    /// [`Bundle::negative_conditioning`], with the text encoder copied to `device` for it when
    /// its weights live elsewhere (an offloaded encoder stays in RAM; the copy is dropped).
    pub fn negative_conditioning_on(
        &self,
        device: Option<&Device>,
    ) -> Result<Option<candle_core::Tensor>> {
        if self.is_distilled {
            return Ok(None);
        }
        match device {
            Some(device) if !self.text_encoder.encoder().device().same_device(device) => {
                self.text_encoder.to_device(device)?.encode(&[""]).map(Some)
            }
            _ => self.text_encoder.encode(&[""]).map(Some),
        }
    }
}
