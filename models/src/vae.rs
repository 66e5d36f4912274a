//! The FLUX.2 VAE (`AutoencoderKLFlux2`): KL autoencoder with 32 latent channels, 2×2 patchify
//! and BatchNorm running-statistics normalisation.
//!
//! The latent that leaves [`Vae::encode`] and enters [`Vae::decode`] is the transformer's space:
//! `[B, 128, H/(8·2), W/(8·2)]` for the 4-level VAE: the posterior *mean* (never a sample) of
//! shape `[B, 32, H/8, W/8]`, patchified 2×2 into channels (`c·4 + 2·dy + dx`) and normalised with
//! `(z − running_mean) / sqrt(running_var + eps)`. Images are `[B, 3, H, W]` in [-1, 1].
//!
//! Topology and keys follow diffusers' `Encoder`/`Decoder` (vae.py) driven by `vae/config.json`,
//! so slimmer variants (`decoder_block_out_channels`, other group counts) load without code changes.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Linear, Module as _};
use serde::Deserialize as _;

use crate::attention::AttentionBackend;
use crate::error::{CandleContext as _, ModelError, Result, read_json};
use crate::weights::{Loader, RandomTensors, TensorSource, TensorSpec, Weights};

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

    /// Pixel size of one latent cell before patchify: 2^(levels − 1).
    pub fn spatial_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    fn decoder_channels(&self) -> &[usize] {
        self.decoder_block_out_channels
            .as_deref()
            .unwrap_or(&self.block_out_channels)
    }

    /// Every tensor of a diffusers VAE checkpoint (without `bn.num_batches_tracked`).
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        let mut s = Vec::new();
        let conv = |s: &mut Vec<TensorSpec>, name: &str, cout: usize, cin: usize, k: usize| {
            s.push(TensorSpec::new(
                format!("{name}.weight"),
                &[cout, cin, k, k],
            ));
            s.push(TensorSpec::new(format!("{name}.bias"), &[cout]));
        };
        let norm = |s: &mut Vec<TensorSpec>, name: &str, c: usize| {
            s.push(TensorSpec::new(format!("{name}.weight"), &[c]));
            s.push(TensorSpec::new(format!("{name}.bias"), &[c]));
        };
        let resnet = |s: &mut Vec<TensorSpec>, p: &str, cin: usize, cout: usize| {
            norm(s, &format!("{p}.norm1"), cin);
            conv(s, &format!("{p}.conv1"), cout, cin, 3);
            norm(s, &format!("{p}.norm2"), cout);
            conv(s, &format!("{p}.conv2"), cout, cout, 3);
            if cin != cout {
                conv(s, &format!("{p}.conv_shortcut"), cout, cin, 1);
            }
        };
        let mid = |s: &mut Vec<TensorSpec>, p: &str, c: usize, attention: bool| {
            resnet(s, &format!("{p}.resnets.0"), c, c);
            if attention {
                norm(s, &format!("{p}.attentions.0.group_norm"), c);
                for l in ["to_q", "to_k", "to_v", "to_out.0"] {
                    s.push(TensorSpec::new(
                        format!("{p}.attentions.0.{l}.weight"),
                        &[c, c],
                    ));
                    s.push(TensorSpec::new(format!("{p}.attentions.0.{l}.bias"), &[c]));
                }
            }
            resnet(s, &format!("{p}.resnets.1"), c, c);
        };
        let enc = &self.block_out_channels;
        let (Some(&enc_first), Some(&enc_last)) = (enc.first(), enc.last()) else {
            return s;
        };
        conv(&mut s, "encoder.conv_in", enc_first, self.in_channels, 3);
        let mut cin = enc_first;
        for (i, &cout) in enc.iter().enumerate() {
            for j in 0..self.layers_per_block {
                resnet(
                    &mut s,
                    &format!("encoder.down_blocks.{i}.resnets.{j}"),
                    if j == 0 { cin } else { cout },
                    cout,
                );
            }
            if i + 1 < enc.len() {
                conv(
                    &mut s,
                    &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                    cout,
                    cout,
                    3,
                );
            }
            cin = cout;
        }
        mid(
            &mut s,
            "encoder.mid_block",
            enc_last,
            self.mid_block_add_attention,
        );
        norm(&mut s, "encoder.conv_norm_out", enc_last);
        conv(
            &mut s,
            "encoder.conv_out",
            2 * self.latent_channels,
            enc_last,
            3,
        );
        if self.use_quant_conv {
            conv(
                &mut s,
                "quant_conv",
                2 * self.latent_channels,
                2 * self.latent_channels,
                1,
            );
        }
        if self.use_post_quant_conv {
            conv(
                &mut s,
                "post_quant_conv",
                self.latent_channels,
                self.latent_channels,
                1,
            );
        }
        let dec = self.decoder_channels();
        let (Some(&dec_first), Some(&dec_last)) = (dec.first(), dec.last()) else {
            return s;
        };
        conv(&mut s, "decoder.conv_in", dec_last, self.latent_channels, 3);
        mid(
            &mut s,
            "decoder.mid_block",
            dec_last,
            self.mid_block_add_attention,
        );
        let mut prev = dec_last;
        for (i, &cout) in dec.iter().rev().enumerate() {
            for j in 0..=self.layers_per_block {
                resnet(
                    &mut s,
                    &format!("decoder.up_blocks.{i}.resnets.{j}"),
                    if j == 0 { prev } else { cout },
                    cout,
                );
            }
            if i + 1 < dec.len() {
                conv(
                    &mut s,
                    &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                    cout,
                    cout,
                    3,
                );
            }
            prev = cout;
        }
        norm(&mut s, "decoder.conv_norm_out", dec_first);
        conv(&mut s, "decoder.conv_out", self.out_channels, dec_first, 3);
        let bn = self.latent_channels * self.patch_size.iter().product::<usize>();
        s.push(TensorSpec::new("bn.running_mean", &[bn]));
        s.push(TensorSpec::new("bn.running_var", &[bn]));
        s
    }
}

/// The dtype the VAE computes in for a requested one.
///
/// candle's CPU convolutions have no bf16 matmul; the VAE is small (84 M parameters), so on CPU a
/// bf16 request runs it in f32 rather than failing at the first 1×1 conv.
fn compute_dtype(requested: DType, device: &Device) -> DType {
    if requested == DType::BF16 && device.is_cpu() {
        DType::F32
    } else {
        requested
    }
}

/// Infers a VAE configuration from a diffusers-named checkpoint without config.json.
///
/// Channels, levels, blocks per level, latent channels and the quant convs are read from shapes;
/// the GroupNorm group count is not visible in the weights and is taken as 32 (every released
/// FLUX VAE), or the largest power of two dividing the first level's channels if that is smaller.
pub fn infer_vae_config(weights: &Weights) -> Result<VaeConfig> {
    let path = weights.origin().to_path_buf();
    let shape = |name: &str| -> Result<Vec<usize>> {
        weights
            .shape(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| ModelError::Config {
                path: path.clone(),
                reason: format!("cannot infer the VAE configuration: tensor {name} is missing"),
            })
    };
    let mut block_out_channels = Vec::new();
    while let Some(s) = weights.shape(&format!(
        "encoder.down_blocks.{}.resnets.0.conv1.weight",
        block_out_channels.len()
    )) {
        block_out_channels.push(s.first().copied().unwrap_or(0));
    }
    let mut layers_per_block = 0;
    while weights.contains(&format!(
        "encoder.down_blocks.0.resnets.{layers_per_block}.conv1.weight"
    )) {
        layers_per_block += 1;
    }
    let n_levels = block_out_channels.len();
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
            reason: "not a diffusers-layout FLUX.2 VAE".into(),
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
        use_quant_conv: weights.contains("quant_conv.weight"),
        use_post_quant_conv: weights.contains("post_quant_conv.weight"),
        mid_block_add_attention: weights.contains("encoder.mid_block.attentions.0.to_q.weight"),
        patch_size: vec![2, 2],
        sample_size: 1024,
    })
}

/// Linear cross-fade of the first `extent` rows (dim 2) or columns (dim 3) of `current` from the
/// last ones of `previous` (diffusers `blend_v` / `blend_h`).
fn blend(
    previous: &Tensor,
    current: &Tensor,
    extent: usize,
    dim: usize,
) -> candle_core::Result<Tensor> {
    let extent = extent.min(previous.dim(dim)?).min(current.dim(dim)?);
    if extent == 0 {
        return Ok(current.clone());
    }
    let weights: Vec<f32> = (0..extent).map(|y| y as f32 / extent as f32).collect();
    let mut shape = [1usize; 4];
    if let Some(slot) = shape.get_mut(dim) {
        *slot = extent;
    }
    let ramp =
        Tensor::from_vec(weights, shape.as_slice(), current.device())?.to_dtype(current.dtype())?;
    let tail = previous.narrow(dim, previous.dim(dim)? - extent, extent)?;
    let head = current.narrow(dim, 0, extent)?;
    let mixed = (tail.broadcast_mul(&(1.0 - &ramp)?)? + head.broadcast_mul(&ramp)?)?;
    let rest = current.narrow(dim, extent, current.dim(dim)? - extent)?;
    Tensor::cat(&[mixed, rest], dim)
}

/// GroupNorm with its parameters at hand for the CUDA kernel.
#[derive(Debug, Clone)]
struct Norm {
    inner: GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

/// GroupNorm's epsilon in the FLUX.2 VAE (diffusers' default).
const NORM_EPS: f64 = 1e-6;

impl Norm {
    /// GroupNorm, then SiLU if `silu`. With `fast` on a CUDA tensor, one fused kernel
    /// (`veetance_gpu::conv::group_norm`); otherwise candle's differentiable op chain.
    fn forward(&self, x: &Tensor, silu: bool, fast: bool) -> candle_core::Result<Tensor> {
        if fast && x.device().is_cuda() {
            return veetance_gpu::conv::group_norm(
                x,
                &self.weight,
                &self.bias,
                self.groups,
                NORM_EPS as f32,
                silu,
            );
        }
        let y = self.inner.forward(x)?;
        if silu { y.silu() } else { Ok(y) }
    }
}

/// A convolution; with `fast` on a CUDA tensor, `veetance_gpu::conv::conv2d` (coalesced
/// im2col straight into NCHW), which is several times faster than candle's at VAE sizes.
fn conv(c: &Conv2d, x: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
    let cfg = c.config();
    if fast && x.device().is_cuda() && cfg.groups == 1 && cfg.dilation == 1 {
        return veetance_gpu::conv::conv2d(x, c.weight(), c.bias(), cfg.stride, cfg.padding);
    }
    c.forward(x)
}

#[derive(Debug, Clone)]
struct ResnetBlock {
    norm1: Norm,
    conv1: Conv2d,
    norm2: Norm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn forward(&self, x: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        let h = conv(&self.conv1, &self.norm1.forward(x, true, fast)?, fast)?;
        let h = conv(&self.conv2, &self.norm2.forward(&h, true, fast)?, fast)?;
        let skip = match &self.shortcut {
            Some(c) => conv(c, x, fast)?,
            None => x.clone(),
        };
        skip + h
    }
}

#[derive(Debug, Clone)]
struct MidAttention {
    norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

#[derive(Debug, Clone)]
struct MidBlock {
    res0: ResnetBlock,
    attn: Option<MidAttention>,
    res1: ResnetBlock,
}

impl MidBlock {
    /// `attention` is `None` in training mode: plain differentiable attention.
    fn forward(
        &self,
        x: &Tensor,
        attention: Option<&AttentionBackend>,
        fast: bool,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.res0.forward(x, fast)?;
        if let Some(a) = &self.attn {
            let (b, c, h, w) = x.dims4()?;
            let tokens = a
                .norm
                .forward(&x, false, fast)?
                .reshape((b, c, h * w))?
                .transpose(1, 2)?
                .contiguous()?;
            // Single-head attention over all h·w positions; the backend chunks it at large sizes.
            let heads = |l: &Linear| -> candle_core::Result<Tensor> {
                l.forward(&tokens)?.unsqueeze(1)?.contiguous()
            };
            let (q, k, v) = (heads(&a.q)?, heads(&a.k)?, heads(&a.v)?);
            let o = match attention {
                Some(backend) => backend.attend(&q, &k, &v, None)?,
                None => crate::ops::differentiable_attention(&q, &k, &v, None)?,
            }
            .squeeze(1)?;
            let o = a.out.forward(&o)?.transpose(1, 2)?.reshape((b, c, h, w))?;
            x = (x + o)?;
        }
        self.res1.forward(&x, fast)
    }
}

#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<ResnetBlock>,
    /// Downsampler (encoder) or upsampler (decoder) conv.
    resample: Option<Conv2d>,
}

/// A loaded FLUX.2 VAE. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Vae {
    cfg: VaeConfig,
    dtype: DType,
    device: Device,
    enc_conv_in: Conv2d,
    enc_levels: Vec<Level>,
    enc_mid: MidBlock,
    enc_norm_out: Norm,
    enc_conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: MidBlock,
    dec_levels: Vec<Level>,
    dec_norm_out: Norm,
    dec_conv_out: Conv2d,
    /// `[1, C·4, 1, 1]` f32.
    bn_mean: Tensor,
    /// `sqrt(running_var + eps)`, `[1, C·4, 1, 1]` f32.
    bn_std: Tensor,
    attention: AttentionBackend,
    /// Training mode: differentiable mid-block attention (convolutions and GroupNorm always are).
    differentiable: bool,
}

impl Vae {
    /// Loads `vae/` (config.json + safetensors).
    ///
    /// A single `.safetensors` file with diffusers key names (ComfyUI's `flux2-vae.safetensors`)
    /// also loads; its configuration is then inferred from the tensor shapes.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if dir.is_file() {
            let weights = Weights::from_file(dir)?;
            let cfg = infer_vae_config(&weights)?;
            return Self::from_weights(&weights, cfg, dtype, device);
        }
        let cfg_path = dir.join("config.json");
        let cfg: VaeConfig = read_json(&cfg_path)?;
        cfg.validate(&cfg_path)?;
        let weights = Weights::from_dir(dir)?;
        Self::from_weights(&weights, cfg, dtype, device)
    }

    /// Builds the VAE from opened weights.
    pub fn from_weights(
        weights: &Weights,
        cfg: VaeConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate(weights.origin())?;
        weights.check(&cfg.tensor_specs(), |n| n == "bn.num_batches_tracked")?;
        let w = TensorSource::File(Loader {
            weights,
            dtype: compute_dtype(dtype, device),
            device,
        });
        Self::build(cfg, &w, device)
    }

    /// A VAE with random weights (normal σ = 0.02; biases and the running mean 0, norm scales and
    /// the running variance 1) for speed measurements without a checkpoint, e.g.
    /// `VaeConfig::flux2()`. Not seeded.
    pub fn random(cfg: VaeConfig, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate(Path::new("<random>"))?;
        let w = TensorSource::Random(RandomTensors::new(
            cfg.tensor_specs(),
            compute_dtype(dtype, device),
            device,
        ));
        Self::build(cfg, &w, device)
    }

    /// Builds the VAE from checked tensors, which `w` gives in the dtype the VAE computes in.
    fn build(cfg: VaeConfig, w: &TensorSource<'_>, device: &Device) -> Result<Self> {
        let dtype = w.dtype();
        let groups = cfg.norm_num_groups;
        let conv = |name: &str, padding: usize, stride: usize| -> Result<Conv2d> {
            let cfg = Conv2dConfig {
                padding,
                stride,
                dilation: 1,
                groups: 1,
                cudnn_fwd_algo: None,
            };
            Ok(Conv2d::new(
                w.get(&format!("{name}.weight"))?,
                Some(w.get(&format!("{name}.bias"))?),
                cfg,
            ))
        };
        let norm = |name: &str| -> Result<Norm> {
            let weight = w.get(&format!("{name}.weight"))?;
            let bias = w.get(&format!("{name}.bias"))?;
            let channels = weight.dim(0)?;
            Ok(Norm {
                inner: GroupNorm::new(weight.clone(), bias.clone(), channels, groups, NORM_EPS)?,
                weight,
                bias,
                groups,
            })
        };
        let lin = |name: &str| -> Result<Linear> {
            Ok(Linear::new(
                w.get(&format!("{name}.weight"))?,
                Some(w.get(&format!("{name}.bias"))?),
            ))
        };
        let resnet = |p: &str| -> Result<ResnetBlock> {
            let shortcut_name = format!("{p}.conv_shortcut");
            Ok(ResnetBlock {
                norm1: norm(&format!("{p}.norm1"))?,
                conv1: conv(&format!("{p}.conv1"), 1, 1)?,
                norm2: norm(&format!("{p}.norm2"))?,
                conv2: conv(&format!("{p}.conv2"), 1, 1)?,
                shortcut: if w.contains(&format!("{shortcut_name}.weight")) {
                    Some(conv(&shortcut_name, 0, 1)?)
                } else {
                    None
                },
            })
        };
        let mid = |p: &str| -> Result<MidBlock> {
            let attn = if cfg.mid_block_add_attention {
                let a = format!("{p}.attentions.0");
                Some(MidAttention {
                    norm: norm(&format!("{a}.group_norm"))?,
                    q: lin(&format!("{a}.to_q"))?,
                    k: lin(&format!("{a}.to_k"))?,
                    v: lin(&format!("{a}.to_v"))?,
                    out: lin(&format!("{a}.to_out.0"))?,
                })
            } else {
                None
            };
            Ok(MidBlock {
                res0: resnet(&format!("{p}.resnets.0"))?,
                attn,
                res1: resnet(&format!("{p}.resnets.1"))?,
            })
        };
        let n_levels = cfg.block_out_channels.len();
        let mut enc_levels = Vec::with_capacity(n_levels);
        for i in 0..n_levels {
            let resnets = (0..cfg.layers_per_block)
                .map(|j| resnet(&format!("encoder.down_blocks.{i}.resnets.{j}")))
                .collect::<Result<_>>()?;
            let resample = if i + 1 < n_levels {
                Some(conv(
                    &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                    0,
                    2,
                )?)
            } else {
                None
            };
            enc_levels.push(Level { resnets, resample });
        }
        let mut dec_levels = Vec::with_capacity(n_levels);
        for i in 0..n_levels {
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| resnet(&format!("decoder.up_blocks.{i}.resnets.{j}")))
                .collect::<Result<_>>()?;
            let resample = if i + 1 < n_levels {
                Some(conv(
                    &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                    1,
                    1,
                )?)
            } else {
                None
            };
            dec_levels.push(Level { resnets, resample });
        }
        let bn_mean = w.get_f32("bn.running_mean")?;
        let bn_var = w.get_f32("bn.running_var")?;
        let bn_channels = bn_mean.dim(0)?;
        let bn_std = (bn_var + cfg.batch_norm_eps)?
            .sqrt()?
            .reshape((1, bn_channels, 1, 1))?;
        Ok(Self {
            enc_conv_in: conv("encoder.conv_in", 1, 1)?,
            enc_levels,
            enc_mid: mid("encoder.mid_block")?,
            enc_norm_out: norm("encoder.conv_norm_out")?,
            enc_conv_out: conv("encoder.conv_out", 1, 1)?,
            quant_conv: if cfg.use_quant_conv {
                Some(conv("quant_conv", 0, 1)?)
            } else {
                None
            },
            post_quant_conv: if cfg.use_post_quant_conv {
                Some(conv("post_quant_conv", 0, 1)?)
            } else {
                None
            },
            dec_conv_in: conv("decoder.conv_in", 1, 1)?,
            dec_mid: mid("decoder.mid_block")?,
            dec_levels,
            dec_norm_out: norm("decoder.conv_norm_out")?,
            dec_conv_out: conv("decoder.conv_out", 1, 1)?,
            bn_mean: bn_mean.reshape((1, bn_channels, 1, 1))?,
            bn_std,
            cfg,
            dtype,
            device: device.clone(),
            attention: AttentionBackend::default(),
            differentiable: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Pixels per latent token side: VAE factor × 2 (16 for the released VAE).
    pub fn pixels_per_token(&self) -> usize {
        self.cfg.spatial_factor() * 2
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the VAE computes in (bf16 requests become f32 on CPU).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A clone (sharing weights) whose mid-block attention uses another backend.
    pub fn with_attention(&self, backend: AttentionBackend) -> Self {
        Self {
            attention: backend,
            ..self.clone()
        }
    }

    /// Whether convolutions and GroupNorm may use the CUDA kernels of `veetance_gpu::conv`
    /// (they have no backward pass, so never in training mode).
    fn fast(&self) -> bool {
        !self.differentiable && veetance_gpu::is_built()
    }

    /// A clone (sharing weights) computing with differentiable kernels when `on` (training).
    pub fn with_differentiable(&self, on: bool) -> Self {
        Self {
            differentiable: on,
            ..self.clone()
        }
    }

    fn mid_attention(&self) -> Option<&AttentionBackend> {
        (!self.differentiable).then_some(&self.attention)
    }

    /// Raw posterior mean `[B, latent_channels, H/f, W/f]` (before patchify and normalisation).
    pub fn encode_raw(&self, image: &Tensor) -> Result<Tensor> {
        let moments = self.encode_moments(image)?;
        Ok(moments.narrow(1, 0, self.cfg.latent_channels)?)
    }

    /// Posterior moments `[B, 2·latent_channels, H/f, W/f]`: mean, then log-variance, along channels.
    /// Training needs the log-variance for the KL term; inference uses only the mean.
    pub fn encode_moments(&self, image: &Tensor) -> Result<Tensor> {
        self.encode_moments_inner(image).context("VAE encode")
    }

    fn encode_moments_inner(&self, image: &Tensor) -> candle_core::Result<Tensor> {
        let fast = self.fast();
        let mut x = conv(&self.enc_conv_in, &image.to_dtype(self.dtype)?, fast)?;
        for level in &self.enc_levels {
            for r in &level.resnets {
                x = r.forward(&x, fast)?;
            }
            if let Some(down) = &level.resample {
                // diffusers' Downsample2D with padding=0 pads right and bottom by one, then strides.
                let padded = x
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
                x = conv(down, &padded, fast)?;
            }
        }
        x = self.enc_mid.forward(&x, self.mid_attention(), fast)?;
        x = conv(
            &self.enc_conv_out,
            &self.enc_norm_out.forward(&x, true, fast)?,
            fast,
        )?;
        if let Some(q) = &self.quant_conv {
            x = conv(q, &x, fast)?;
        }
        // Moments are (mean, logvar) along channels; FLUX.2 uses the mean, never a sample.
        Ok(x)
    }

    /// Image `[B, 3, H, W]` in [-1, 1] → normalised token grid `[B, 128, H/16, W/16]`.
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = image.dims4().context("VAE encode input")?;
        let step = self.pixels_per_token();
        if h % step != 0 || w % step != 0 {
            return Err(ModelError::InvalidArgument(format!(
                "image size {w}x{h} must be a multiple of {step}"
            )));
        }
        let raw = self.encode_raw(image)?;
        let patched = candle_nn::ops::pixel_unshuffle(&raw.to_dtype(DType::F32)?, 2)
            .context("VAE patchify")?;
        Ok(patched
            .broadcast_sub(&self.bn_mean)?
            .broadcast_div(&self.bn_std)?)
    }

    /// Normalised token grid `[B, 128, h, w]` → raw latent `[B, 32, 2h, 2w]` (inverse BN, unpatchify).
    pub fn denormalize(&self, latent: &Tensor) -> Result<Tensor> {
        let z = latent
            .to_dtype(DType::F32)?
            .broadcast_mul(&self.bn_std)?
            .broadcast_add(&self.bn_mean)?;
        Ok(candle_nn::ops::pixel_shuffle(&z, 2)?)
    }

    /// Normalised token grid `[B, 128, h, w]` → image `[B, 3, 16h, 16w]`, clamped to [-1, 1].
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let raw = self.denormalize(latent)?;
        let image = self.decode_raw(&raw)?;
        Ok(image.clamp(-1f32, 1f32)?)
    }

    /// Like [`Vae::decode`], but in overlapping tiles so that memory stays bounded for large images.
    ///
    /// This is diffusers' `enable_tiling()` decode exactly: tiles of `sample_size / f` latent pixels
    /// with a quarter overlap, decoded independently and blended linearly (top, then left) over a
    /// quarter tile. The result differs slightly from [`Vae::decode`] near tile borders, as in diffusers;
    /// latents no larger than one tile decode identically.
    pub fn decode_tiled(&self, latent: &Tensor) -> Result<Tensor> {
        let raw = self.denormalize(latent)?;
        let (_, _, h, w) = raw.dims4()?;
        let tile_latent = self.cfg.sample_size / self.cfg.spatial_factor();
        let image = if h > tile_latent || w > tile_latent {
            self.decode_raw_tiled(&raw).context("VAE tiled decode")?
        } else {
            self.decode_raw(&raw)?
        };
        Ok(image.clamp(-1f32, 1f32)?)
    }

    fn decode_raw_tiled(&self, raw: &Tensor) -> candle_core::Result<Tensor> {
        let tile_sample = self.cfg.sample_size;
        let tile_latent = tile_sample / self.cfg.spatial_factor();
        let overlap_factor = 0.25;
        let stride = ((tile_latent as f64 * (1.0 - overlap_factor)) as usize).max(1);
        let blend_extent = (tile_sample as f64 * overlap_factor) as usize;
        let row_limit = tile_sample - blend_extent;
        let (_, _, h, w) = raw.dims4()?;
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for top in (0..h).step_by(stride) {
            let mut row: Vec<Tensor> = Vec::new();
            for left in (0..w).step_by(stride) {
                let tile = raw.narrow(2, top, tile_latent.min(h - top))?.narrow(
                    3,
                    left,
                    tile_latent.min(w - left),
                )?;
                let mut decoded = self.decode_raw_inner(&tile)?;
                // Blend with the already blended tile above, then the one to the left, like diffusers
                // (whose blend functions modify the current tile in place in this order).
                if let Some(above) = rows.last().and_then(|r: &Vec<Tensor>| r.get(row.len())) {
                    decoded = blend(above, &decoded, blend_extent, 2)?;
                }
                if let Some(left_tile) = row.last() {
                    decoded = blend(left_tile, &decoded, blend_extent, 3)?;
                }
                row.push(decoded);
            }
            rows.push(row);
        }
        let mut result_rows = Vec::with_capacity(rows.len());
        for row in &rows {
            let cropped = row
                .iter()
                .map(|t| {
                    let (_, _, th, tw) = t.dims4()?;
                    t.narrow(2, 0, row_limit.min(th))?
                        .narrow(3, 0, row_limit.min(tw))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            result_rows.push(Tensor::cat(&cropped, 3)?);
        }
        Tensor::cat(&result_rows, 2)
    }

    /// Raw latent `[B, 32, H/f, W/f]` → image `[B, 3, H, W]` (f32, not clamped).
    pub fn decode_raw(&self, raw: &Tensor) -> Result<Tensor> {
        self.decode_raw_inner(raw).context("VAE decode")
    }

    fn decode_raw_inner(&self, raw: &Tensor) -> candle_core::Result<Tensor> {
        let fast = self.fast();
        let mut x = raw.to_dtype(self.dtype)?;
        if let Some(p) = &self.post_quant_conv {
            x = conv(p, &x, fast)?;
        }
        x = conv(&self.dec_conv_in, &x, fast)?;
        x = self.dec_mid.forward(&x, self.mid_attention(), fast)?;
        for level in &self.dec_levels {
            for r in &level.resnets {
                x = r.forward(&x, fast)?;
            }
            if let Some(up) = &level.resample {
                let (_, _, h, w) = x.dims4()?;
                x = conv(up, &x.upsample_nearest2d(h * 2, w * 2)?, fast)?;
            }
        }
        x = conv(
            &self.dec_conv_out,
            &self.dec_norm_out.forward(&x, true, fast)?,
            fast,
        )?;
        x.to_dtype(DType::F32)
    }
}
