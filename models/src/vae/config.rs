//! The VAE's hyper-parameters: diffusers' `vae/config.json`, the released preset, plausibility
//! checks, and inference from tensor shapes for single files (which carry no config).

use std::path::Path;

use serde::Deserialize as _;

use super::keys::VaeLayout;
use crate::error::{ModelError, Result};
use crate::weights::{TensorSpec, Weights};

/// `vae/config.json` fields we use.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "default_rgb")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "default_rgb")]
    pub out_channels: usize,
    /// Encoder channels per level.
    pub block_out_channels: Vec<usize>,
    /// Decoder channels per level (slim decoder); `None` means `block_out_channels`.
    #[serde(default)]
    pub decoder_block_out_channels: Option<Vec<usize>>,
    /// ResNet blocks per encoder level (decoder levels have one more).
    #[serde(default = "default_layers")]
    pub layers_per_block: usize,
    /// Latent channels before patchify.
    #[serde(default = "default_latent")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// BatchNorm epsilon of the latent normalisation.
    #[serde(default = "default_bn_eps")]
    pub batch_norm_eps: f64,
    /// Whether the 1×1 `quant_conv` exists.
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    /// Whether the 1×1 `post_quant_conv` exists.
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have attention.
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    /// Patchify size; FLUX.2 uses (2, 2).
    #[serde(default = "default_patch")]
    pub patch_size: Vec<usize>,
    /// Training image size; diffusers' tiled decoding uses it as the tile size in pixels.
    #[serde(default = "default_sample_size", deserialize_with = "int_or_first")]
    pub sample_size: usize,
}

fn default_sample_size() -> usize {
    1024
}

/// `sample_size` is an int in FLUX configs but a list in some others; take the first entry.
fn int_or_first<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let n = match &value {
        serde_json::Value::Array(list) => list.first().and_then(serde_json::Value::as_u64),
        other => other.as_u64(),
    };
    n.and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("sample_size {value} is not a size")))
}

fn default_rgb() -> usize {
    3
}
fn default_layers() -> usize {
    2
}
fn default_latent() -> usize {
    32
}
fn default_groups() -> usize {
    32
}
fn default_bn_eps() -> f64 {
    1e-4
}
fn default_true() -> bool {
    true
}
fn default_patch() -> Vec<usize> {
    vec![2, 2]
}

impl VaeConfig {
    /// The FLUX.2 VAE as released (diffusers' `AutoencoderKLFlux2` defaults, which its
    /// `vae/config.json` repeats): levels of 128, 256, 512, 512 channels, 2 ResNet blocks per
    /// encoder level, 32 latent channels, 32 groups, BatchNorm ε 1e-4, 2×2 patches.
    pub fn flux2() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            decoder_block_out_channels: None,
            layers_per_block: 2,
            latent_channels: 32,
            norm_num_groups: 32,
            batch_norm_eps: 1e-4,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            patch_size: vec![2, 2],
            sample_size: 1024,
        }
    }

    /// A tiny VAE for tests and smoke runs, shaped like `tests/fixtures/tiny-klein`'s: two levels of
    /// 16 and 32 channels, one ResNet block per encoder level, 4 groups; 4 pixels per token.
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![16, 32],
            layers_per_block: 1,
            norm_num_groups: 4,
            sample_size: 32,
            ..Self::flux2()
        }
    }

    /// Checks the numbers are usable and plausible (a hostile config.json must give an error, not an
    /// overflow or a huge allocation).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let cfg = self;
        let too_wide = |c: &usize| *c > (1 << 20);
        if cfg.block_out_channels.len() > 16
            || cfg.layers_per_block > 64
            || cfg.block_out_channels.iter().any(too_wide)
            || cfg.decoder_channels().iter().any(too_wide)
            || [cfg.latent_channels, cfg.in_channels, cfg.out_channels]
                .iter()
                .any(too_wide)
            || cfg.patch_size.iter().any(|p| *p > 16)
        {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "implausible sizes: {} levels, {} blocks per level",
                    cfg.block_out_channels.len(),
                    cfg.layers_per_block
                ),
            });
        }
        if cfg.patch_size != [2, 2] {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: format!("patch_size {:?} is not (2, 2)", cfg.patch_size),
            });
        }
        if cfg.block_out_channels.is_empty()
            || cfg.decoder_channels().len() != cfg.block_out_channels.len()
        {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: "block_out_channels must be non-empty and match the decoder's".into(),
            });
        }
        Ok(())
    }

    /// Every tensor of a diffusers VAE checkpoint (without `bn.num_batches_tracked`).
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        super::keys::table(self, VaeLayout::Diffusers).stored_specs()
    }

    /// Pixel size of one latent cell before patchify: 2^(levels − 1).
    pub fn spatial_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    pub(crate) fn decoder_channels(&self) -> &[usize] {
        self.decoder_block_out_channels
            .as_deref()
            .unwrap_or(&self.block_out_channels)
    }
}

/// Infers a VAE configuration from a checkpoint without config.json (diffusers or BFL names).
///
/// Channels, levels, blocks per level, latent channels and the quant convs are read from shapes;
/// the GroupNorm group count is not visible in the weights and is taken as 32 (every released
/// FLUX VAE), or the largest power of two dividing the first level's channels if that is smaller.
pub fn infer_vae_config(weights: &Weights) -> Result<VaeConfig> {
    let layout = super::keys::detect_layout(weights);
    let path = weights.origin().to_path_buf();
    let level_key = |i: usize| match layout {
        VaeLayout::Diffusers => format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"),
        VaeLayout::Bfl => format!("encoder.down.{i}.block.0.conv1.weight"),
    };
    let mut block_out_channels = Vec::new();
    while let Some(s) = weights.shape(&level_key(block_out_channels.len())) {
        block_out_channels.push(s.first().copied().unwrap_or(0));
        if block_out_channels.len() > 16 {
            break;
        }
    }
    let n_levels = block_out_channels.len();
    let name = |internal: &str| match layout {
        VaeLayout::Diffusers => internal.to_string(),
        VaeLayout::Bfl => super::keys::bfl_name(internal, n_levels),
    };
    let shape = |internal: &str| -> Result<Vec<usize>> {
        weights
            .shape(&name(internal))
            .map(<[usize]>::to_vec)
            .ok_or_else(|| ModelError::Config {
                path: path.clone(),
                reason: format!(
                    "cannot infer the VAE configuration: tensor {} is missing",
                    name(internal)
                ),
            })
    };
    let mut layers_per_block = 0;
    while layers_per_block < 64
        && weights.contains(&name(&format!(
            "encoder.down_blocks.0.resnets.{layers_per_block}.conv1.weight"
        )))
    {
        layers_per_block += 1;
    }
    let mut decoder_channels = Vec::with_capacity(n_levels);
    for i in (0..n_levels).rev() {
        decoder_channels.push(
            shape(&format!("decoder.up_blocks.{i}.resnets.0.conv2.weight"))?
                .first()
                .copied()
                .unwrap_or(0),
        );
    }
    let conv_in = shape("encoder.conv_in.weight")?;
    let conv_out = shape("decoder.conv_out.weight")?;
    let latent_channels = shape("decoder.conv_in.weight")?
        .get(1)
        .copied()
        .unwrap_or(0);
    let first = block_out_channels.first().copied().unwrap_or(0);
    if n_levels == 0 || layers_per_block == 0 || latent_channels == 0 || first == 0 {
        return Err(ModelError::Config {
            path,
            reason: "not a FLUX.2 VAE (no encoder levels in diffusers or BFL names)".into(),
        });
    }
    let groups = (0..=5)
        .rev()
        .map(|p| 1usize << p)
        .find(|g| first % g == 0)
        .unwrap_or(1);
    Ok(VaeConfig {
        in_channels: conv_in.get(1).copied().unwrap_or(3),
        out_channels: conv_out.first().copied().unwrap_or(3),
        decoder_block_out_channels: (decoder_channels != block_out_channels)
            .then_some(decoder_channels),
        block_out_channels,
        layers_per_block,
        latent_channels,
        norm_num_groups: groups,
        batch_norm_eps: 1e-4,
        use_quant_conv: weights.contains(&name("quant_conv.weight")),
        use_post_quant_conv: weights.contains(&name("post_quant_conv.weight")),
        mid_block_add_attention: weights
            .contains(&name("encoder.mid_block.attentions.0.to_q.weight")),
        patch_size: vec![2, 2],
        sample_size: 1024,
    })
}
