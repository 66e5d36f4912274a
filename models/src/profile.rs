//! A checkpoint's memory as it will sit in VRAM, read from the file headers without loading a
//! weight: bytes per part (transformer, text encoder, VAE) split into layers that can stream
//! and the rest, and the working memory of encoding, sampling and decoding at a given size.
//! The memory planner of the engine places parts from these figures before a run.
//!
//! Working-memory figures are estimates from the model shapes (the live tensors of one layer at
//! its peak, plus a margin for the allocator and cuBLAS's workspace); the hard VRAM limit
//! ([`veetance_gpu::memory::limit_vram`]) catches an estimate that is too low as a clear error.

use candle_core::DType;

use crate::error::Result;
use crate::flux2::{COMFY_PREFIXES, Flux2Config};
use crate::klein::{BundleSources, reference};
use crate::qwen3::{KLEIN_OUT_LAYERS, Qwen3Config, Qwen3Encoder};
use crate::vae::VaeConfig;
use crate::weights::{StoredDType, Weights, is_quant_side_tensor};

/// Allocator slack and library workspaces added to every working-memory estimate.
pub const WORKING_MARGIN_BYTES: u64 = 256 << 20;

/// A part's weights as loaded: the layers that may stream, and everything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartProfile {
    /// Bytes outside the numbered layers (embedders, norms, output layers).
    pub fixed_bytes: u64,
    /// Bytes of each numbered layer, in order.
    pub layer_bytes: Vec<u64>,
}

impl PartProfile {
    /// All bytes.
    pub fn total_bytes(&self) -> u64 {
        self.fixed_bytes + self.layer_bytes.iter().sum::<u64>()
    }

    /// The largest layer.
    pub fn largest_layer_bytes(&self) -> u64 {
        self.layer_bytes.iter().copied().max().unwrap_or(0)
    }
}

/// What the planner needs to know about a bundle before it is loaded.
#[derive(Debug, Clone)]
pub struct BundleProfile {
    /// The transformer's weights.
    pub transformer: PartProfile,
    /// The text encoder's weights (only the layers that run).
    pub text_encoder: PartProfile,
    /// The VAE's weights.
    pub vae_bytes: u64,
    /// The transformer's configuration.
    pub transformer_config: Flux2Config,
    /// The text encoder's configuration.
    pub text_encoder_config: Qwen3Config,
    /// The VAE's configuration.
    pub vae_config: VaeConfig,
    /// Steps and guidance Sample uses when the workflow does not say.
    pub default_steps: usize,
    /// Guidance Sample uses when the workflow does not say.
    pub default_guidance: f64,
    /// Image side Sample uses when the workflow does not say, in pixels.
    pub default_size_px: usize,
    /// Whether the checkpoint is step-distilled (never runs CFG).
    pub is_distilled: bool,
    /// Tokens a prompt is padded to.
    pub text_tokens: usize,
    /// The dtype dense weights load in.
    pub dtype: DType,
}

/// Bytes a stored tensor takes once loaded: FP8 and GGUF blocks stay compact, dense values
/// take `dtype`'s size.
fn loaded_bytes(stored: StoredDType, elems: u64, dtype: DType) -> u64 {
    match stored {
        StoredDType::F8E4M3 | StoredDType::F8E5M2 => elems,
        StoredDType::Ggml(t) if stored.is_quantized() => {
            elems / t.block_size().max(1) as u64 * t.type_size() as u64
        }
        _ => elems * dtype.size_in_bytes() as u64,
    }
}

/// Names of the lists of layers in every layout we load: BFL and diffusers transformer blocks,
/// transformers' and llama.cpp's decoder layers.
const LAYER_LISTS: &[&str] = &[
    "double_blocks",
    "single_blocks",
    "transformer_blocks",
    "single_transformer_blocks",
    "layers",
    "blk",
];

/// The numbered layer a tensor name belongs to: the index after a layer list's name
/// (`double_blocks.3.img_attn…` → 3 of `double_blocks`, `blk.7.attn_q…` → 7 of `blk`). Other
/// numbered names (`final_layer.adaLN_modulation.1`) belong to no layer.
fn layer_of(name: &str) -> Option<(&str, usize)> {
    let mut offset = 0usize;
    let mut previous = "";
    for segment in name.split('.') {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            if !LAYER_LISTS.contains(&previous) {
                return None;
            }
            let group = name.get(..offset.saturating_sub(1)).unwrap_or("");
            return segment.parse().ok().map(|i| (group, i));
        }
        previous = segment;
        offset += segment.len() + 1;
    }
    None
}

/// Groups the tensors of `weights` into fixed bytes and numbered layers (groups in order of
/// first appearance, layers by index within each), skipping those `skip` names.
fn part_profile(weights: &Weights, dtype: DType, skip: impl Fn(&str) -> bool) -> PartProfile {
    let mut fixed = 0u64;
    let mut groups: Vec<(String, Vec<u64>)> = Vec::new();
    for name in weights.names() {
        if skip(name) || is_quant_side_tensor(name) {
            continue;
        }
        let (Some(shape), Some(stored)) = (weights.shape(name), weights.stored_dtype(name)) else {
            continue;
        };
        let elems: u64 = shape.iter().map(|&d| d as u64).product();
        let mut bytes = loaded_bytes(stored, elems, dtype);
        // A scaled FP8 weight loads with one f32 scale per row.
        if matches!(stored, StoredDType::F8E4M3 | StoredDType::F8E5M2)
            && let Some(layer) = name.strip_suffix(".weight")
            && (weights.contains(&format!("{layer}.weight_scale"))
                || weights.contains(&format!("{layer}.scale_weight")))
        {
            bytes += shape.first().copied().unwrap_or(1) as u64 * 4;
        }
        match layer_of(name) {
            Some((group, index)) => {
                let slot = match groups.iter().position(|(g, _)| g == group) {
                    Some(slot) => slot,
                    None => {
                        groups.push((group.to_owned(), Vec::new()));
                        groups.len() - 1
                    }
                };
                if let Some((_, layers)) = groups.get_mut(slot) {
                    if layers.len() <= index {
                        layers.resize(index + 1, 0);
                    }
                    if let Some(layer) = layers.get_mut(index) {
                        *layer += bytes;
                    }
                }
            }
            None => fixed += bytes,
        }
    }
    // Double-stream groups sort before single-stream ones in every FLUX layout, as they run.
    groups.sort_by_key(|(group, _)| group.contains("single"));
    PartProfile {
        fixed_bytes: fixed,
        layer_bytes: groups.into_iter().flat_map(|(_, layers)| layers).collect(),
    }
}

impl BundleProfile {
    /// Reads the headers of `sources` for a load in `dtype`.
    pub fn read(sources: &BundleSources, dtype: DType) -> Result<Self> {
        let transformer_weights = sources
            .transformer
            .open()?
            .strip_common_prefix(COMFY_PREFIXES);
        let transformer_config =
            Flux2Config::of_checkpoint(&transformer_weights, &sources.transformer.path)?;
        let transformer = part_profile(&transformer_weights, dtype, |_| false);

        let te_weights = sources.text_encoder.open()?;
        let text_encoder_config = Qwen3Encoder::config_of(&te_weights, &sources.text_encoder.path)?;
        let out_layers = sources
            .index
            .text_encoder_out_layers
            .clone()
            .unwrap_or_else(|| KLEIN_OUT_LAYERS.to_vec());
        let n_run = out_layers.iter().copied().max().unwrap_or(0);
        let text_encoder = part_profile(&te_weights, dtype, |name| {
            name.contains("lm_head")
                || name.contains("visual")
                || layer_of(name).is_some_and(|(_, i)| i >= n_run)
        });

        let vae_weights = sources
            .vae
            .open()?
            .strip_common_prefix(&["vae.", "first_stage_model."]);
        let vae_config = crate::vae::Vae::config_of(&vae_weights, &sources.vae.path)?;
        let vae_bytes = part_profile(&vae_weights, dtype, |_| false).total_bytes();
        Ok(Self {
            transformer,
            text_encoder,
            vae_bytes,
            default_steps: sources.index.default_steps.unwrap_or(reference::STEPS),
            default_guidance: sources
                .index
                .default_guidance
                .unwrap_or(reference::GUIDANCE),
            default_size_px: sources
                .index
                .default_size_px
                .unwrap_or(reference::DEFAULT_SAMPLE_SIZE * vae_config.spatial_factor()),
            is_distilled: sources.is_distilled,
            text_tokens: sources
                .index
                .max_sequence_length
                .unwrap_or(crate::qwen3::MAX_TEXT_TOKENS),
            transformer_config,
            text_encoder_config,
            vae_config,
            dtype,
        })
    }

    /// Working VRAM of one transformer forward pass over `image_tokens` image tokens (all
    /// pictures, references included) and the prompt: the live tensors of a single-stream
    /// block at its peak (input, fused projection, q/k/v, attention output, MLP, the
    /// concatenation), the residual streams, and the margin.
    pub fn sample_working_bytes(&self, image_tokens: u64) -> u64 {
        let cfg = &self.transformer_config;
        let d = cfg.hidden_size() as u64;
        let f = cfg.mlp_hidden() as u64;
        let tokens = image_tokens + self.text_tokens as u64;
        let elem = self.dtype.size_in_bytes() as u64;
        tokens * (10 * d + 4 * f) * elem + WORKING_MARGIN_BYTES
    }

    /// Working VRAM of encoding one prompt: a decoder layer's live tensors at the padded
    /// length, the attention mask and the collected hidden states.
    pub fn encode_working_bytes(&self) -> u64 {
        let cfg = &self.text_encoder_config;
        let h = cfg.hidden_size as u64;
        let inter = cfg.intermediate_size as u64;
        let len = self.text_tokens as u64;
        let elem = self.dtype.size_in_bytes() as u64;
        len * (8 * h + 3 * inter) * elem + 2 * len * len * 4 + WORKING_MARGIN_BYTES
    }
}

/// Working VRAM of decoding a `height_px × width_px` picture in one piece (or one tile of that
/// size), without [`WORKING_MARGIN_BYTES`]: the first convolution at full resolution, which
/// takes the upsampled activations of the level below (256 channels in the FLUX.2 VAE) and
/// writes the top level's (128): its im2col matrix (the largest buffer; `veetance_gpu::conv`
/// builds it whole), its input, and its output with two more top-level activations beside it.
/// Measured on an H200: a whole 1024² decode needs about 6 GB.
pub fn decode_working_bytes(cfg: &VaeConfig, height_px: u64, width_px: u64, dtype: DType) -> u64 {
    let channels = cfg
        .decoder_block_out_channels
        .as_ref()
        .unwrap_or(&cfg.block_out_channels);
    let top = channels.first().copied().unwrap_or(128) as u64;
    let below = channels.get(1).copied().unwrap_or(top as usize) as u64;
    let pixels = height_px * width_px;
    let elem = dtype.size_in_bytes() as u64;
    ((below * 9 + 1) + below + 3 * top) * pixels * elem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_the_first_numbered_segment() {
        assert_eq!(
            layer_of("double_blocks.3.img_attn.qkv.weight"),
            Some(("double_blocks", 3))
        );
        assert_eq!(layer_of("blk.12.attn_q.weight"), Some(("blk", 12)));
        assert_eq!(
            layer_of("model.layers.7.mlp.up_proj.weight"),
            Some(("model.layers", 7))
        );
        assert_eq!(layer_of("time_in.in_layer.weight"), None);
        assert_eq!(layer_of("final_layer.adaLN_modulation.1.weight"), None);
    }
}
