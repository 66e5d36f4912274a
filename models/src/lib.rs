//! FLUX.2 \[klein\] model code on candle. Knows no engine and no UI.
//!
//! # What is here
//!
//! One folder per model, as candle-transformers lays them out; each holds its `config`, its `keys`
//! (the internal tensor names and every checkpoint layout's mapping onto them) and its model code.
//!
//! - [`qwen3`]: the Qwen3 text encoder with the checkpoint's chat template and tokenizer (or the
//!   bundled Qwen3 tokenizer for single files). Prompts become conditioning `[B, 512, n·hidden]`:
//!   hidden states of layers 9, 18 and 27, concatenated per token, right-padded to 512 tokens.
//! - [`flux2`]: the FLUX.2 transformer; one internal layout (BFL's, fused qkv) loaded from
//!   diffusers directories, BFL and ComfyUI single files, FP8 and GGUF; Compile and CUDA graphs.
//! - [`vae`]: the FLUX.2 VAE in diffusers or BFL names; images `[B, 3, H, W]` in [-1, 1] ↔
//!   normalised latents.
//! - [`sampling`]: the FLUX.2 schedule and the Euler flow-matching sampler (CFG, img2img,
//!   progress and cancellation between steps).
//! - [`attention`]: attention backends chosen per model instance; exact (chunked above a size
//!   threshold) and the SageAttention CPU reference ([`attention::sage`]).
//! - [`klein`]: a whole pipeline ([`Bundle`]) from a diffusers folder or separate files, with
//!   diffusers' defaults; [`detect`] tells what a model file is from its headers.
//! - [`weights`]: checkpoint storage (safetensors with our own header validation, GGUF, memory),
//!   raw tensors, key tables; [`linear`]: projections whose FP8/GGUF weights stay compact.
//!
//! # How the nodes use it
//!
//! ```no_run
//! # fn main() -> Result<(), veetance_models::ModelError> {
//! use std::ops::ControlFlow;
//! use candle_core::{DType, Device};
//! use veetance_models::{Bundle, SampleRequest, Start, sample, seeded_noise};
//!
//! let device = Device::Cpu;
//! let bundle = Bundle::load("models/tests/fixtures/tiny-klein".as_ref(), DType::F32, &device)?;
//! let cond = bundle.text_encoder.encode(&["a red circle on a blue background"])?; // Encode
//! let (h, w) = veetance_models::latent::grid_for_image(32, 32, bundle.vae.pixels_per_token())?;
//! let channels = bundle.transformer.config().in_channels; // 128 for klein
//! let noise = seeded_noise(42, (1, channels, h, w), &device)?;
//! let negative = bundle.negative_conditioning()?; // None for step-distilled klein
//! let request = SampleRequest {
//!     positive: &cond,
//!     negative: negative.as_ref(),
//!     start: Start::Noise(noise),
//!     steps: bundle.defaults.steps,
//!     guidance: bundle.defaults.guidance,
//!     scheduler: &bundle.scheduler,
//!     references: &[],
//! };
//! let latent = sample(&bundle.transformer, &request, |_step, _total| ControlFlow::Continue(()))?; // Sample
//! let image = bundle.vae.decode(&latent)?; // Decode: [1, 3, 32, 32] in [-1, 1]
//! # let _ = image; Ok(()) }
//! ```
//!
//! The SageAttention node calls [`Flux2Transformer::with_attention`] with
//! [`AttentionBackend::Sage`]; the clone shares the weights.
//!
//! # Public API at a glance
//!
//! - `Bundle::load(dir, dtype, device)` (a diffusers folder) and
//!   `Bundle::load_sources(BundleSources::resolve(model, text_encoder, vae)?, &LoadOptions)`
//!   (single files, ComfyUI folders, all-in-one files): fields `transformer`, `text_encoder`,
//!   `vae`, `scheduler`, `is_distilled`, `defaults` (steps, guidance, size);
//!   `negative_conditioning()` gives the empty-prompt conditioning diffusers uses for CFG on base
//!   (non-distilled) checkpoints.
//! - `TextEncoder::encode(&[&str]) -> Result<Tensor>` `[B, 512, C]`; `TextEncoder::load(&TokenizerFiles,
//!   text_encoder_path, out_layers, dtype, device, quant)`; `with_max_tokens(n)`;
//!   [`qwen3::ChatTemplate`] renders the checkpoint's template; `encode_ids(ids, mask)` for already
//!   tokenized prompts; `random(Qwen3Config, out_layers, dtype, device)` (no tokenizer; presets
//!   [`qwen3::Qwen3Config::qwen3_4b`], [`qwen3::Qwen3Config::qwen3_8b`]).
//! - `Flux2Transformer::load(path, dtype, device, quant)` (diffusers directory, or a safetensors or
//!   GGUF file in diffusers or BFL names), `forward(img_tokens, img_ids, txt, txt_ids, timestep,
//!   guidance)`, `with_attention(AttentionBackend)`, `compile_for(scheduler, grid, steps,
//!   guidance)`, `random(Flux2Config, dtype, device)`; presets [`Flux2Config::klein_4b`],
//!   [`Flux2Config::klein_9b`].
//! - `sample(&Flux2Transformer, &SampleRequest, FnMut(step, total) -> ControlFlow<()>) -> Result<Tensor>`
//!   with [`Start::Noise`] or [`Start::Image`] (img2img with `denoise`), optional negative
//!   conditioning for CFG (ignored for step-distilled models or guidance ≤ 1, as in diffusers),
//!   optional reference-image latents for FLUX.2 multi-reference editing;
//!   [`seeded_noise`] makes platform-independent noise from a seed.
//! - `Vae::load(dir_or_file, dtype, device)`, `encode(image) -> latent`, `decode(latent) -> image`
//!   (clamped to \[-1, 1\]), `decode_tiled(latent)` (diffusers' tiled decode, for large images),
//!   `pixels_per_token()`, `random(VaeConfig, dtype, device)` (preset [`VaeConfig::flux2`]).
//! - [`latent::pack`] / [`latent::unpack`] / [`latent::grid_for_image`].
//!
//! # Conventions
//!
//! - **Latent** (SaveLatent/LoadLatent, sampler in/out, VAE in/out): `[B, 128, h, w]`, the 2×2-patchified
//!   32-channel VAE latent normalised by the VAE's BatchNorm running statistics, h, w = side / 16.
//!   Tiny test checkpoints may differ (diffusers' own tests use 4 channels and side / 2): take the
//!   channel count from `transformer.config().in_channels` and the divisor from
//!   [`Vae::pixels_per_token`].
//!   [`latent::pack`]/[`latent::unpack`] convert to and from transformer tokens `[B, h·w, 128]`.
//! - **Conditioning**: `[B, 512, C]` with C = the transformer's `joint_attention_dim`.
//! - **Images**: `[B, 3, H, W]` f32 in [-1, 1].
//! - **Errors**: [`ModelError`]; file problems name the file, checkpoint mismatches list every
//!   missing, unexpected and mis-shaped tensor at once. Nothing here panics on bad input.
//!
//! # Parity
//!
//! `tests/fixtures/make_fixtures.py` builds tiny random checkpoints with diffusers/transformers
//! (`tiny-klein/`, distilled, klein-like shapes; `tiny-klein-mini/`, shaped like diffusers' own
//! klein tests; `tiny-klein-bfl/`, the transformer in BFL single-file layout) and reference outputs;
//! `tests/parity.rs` checks tokenizer, chat template, text encoder, transformer (both layouts), VAE
//! encode/decode/tiled decode, and 4-step sampling (with and without CFG, non-square, with a
//! reference image) against them in f32.

pub mod attention;
pub mod detect;
pub mod device;
pub mod error;
pub mod files;
pub mod flux2;
pub mod klein;
pub mod latent;
pub mod linear;
pub mod lora;
pub mod ops;
pub mod profile;
pub mod qwen3;
pub mod sampling;
pub mod streaming;
pub mod vae;
pub mod weights;

pub use attention::AttentionBackend;
pub use attention::sage::{PvPrecision, SageConfig};
pub use error::{ModelError, Result};
pub use flux2::compile::{CompileOptions, CompiledState};
pub use flux2::{CheckpointLayout, Flux2Config, Flux2Transformer, LoraApplied, LoraMerge};
pub use klein::{Bundle, BundleSources, LoadOptions, SamplingDefaults};
pub use lora::LoraFile;
pub use qwen3::TextEncoder;
pub use sampling::{SampleRequest, SchedulerConfig, Start, sample, seeded_noise};
pub use vae::{Vae, VaeConfig};
pub use weights::QuantMode;
