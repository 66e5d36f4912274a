//! The FLUX.2 VAE (`AutoencoderKLFlux2`): KL autoencoder with 32 latent channels, 2×2 patchify
//! and BatchNorm running-statistics normalisation.
//!
//! The latent that leaves [`Vae::encode`] and enters [`Vae::decode`] is the transformer's space:
//! `[B, 128, H/(8·2), W/(8·2)]` for the 4-level VAE: the posterior *mean* (never a sample) of
//! shape `[B, 32, H/8, W/8]`, patchified 2×2 into channels (`c·4 + 2·dy + dx`) and normalised with
//! `(z − running_mean) / sqrt(running_var + eps)`. Images are `[B, 3, H, W]` in [-1, 1].
//!
//! Topology follows diffusers' `Encoder`/`Decoder` (vae.py) driven by `vae/config.json`, so
//! slimmer variants (`decoder_block_out_channels`, other group counts) load without code changes.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Module as _};

use super::config::{VaeConfig, infer_vae_config};
use super::keys::{VaeLayout, detect_layout, table};
use crate::attention::AttentionBackend;
use crate::error::{CandleContext as _, ModelError, Result, read_json};
use crate::linear::Linear;
use crate::weights::table::Params;
use crate::weights::{QuantMode, Weights};

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

/// Tile sides of a tiled encode or decode: `input` in the tiled tensor's pixels, `output` in
/// the result's.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    input: usize,
    output: usize,
}

/// Why a tiled pass ended early.
enum TiledError {
    /// The progress callback asked to stop after `done` of `total` tiles.
    Stopped { done: usize, total: usize },
    /// A tensor operation failed.
    Tensor(candle_core::Error),
}

impl From<candle_core::Error> for TiledError {
    fn from(err: candle_core::Error) -> Self {
        TiledError::Tensor(err)
    }
}

impl TiledError {
    /// The crate's error, a failure described as `what`.
    fn into_model(self, what: &str) -> ModelError {
        match self {
            TiledError::Stopped { done, total } => ModelError::Cancelled {
                completed_steps: done,
                total_steps: total,
            },
            TiledError::Tensor(err) => ModelError::Candle {
                context: what.to_string(),
                source: crate::error::without_backtrace(err),
            },
        }
    }
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
    /// Loads a VAE: a `vae/` directory (config.json + safetensors), or a single safetensors file
    /// in diffusers or BFL names (ComfyUI's `flux2-vae.safetensors`, BFL's `ae.safetensors`),
    /// whose configuration is inferred from the tensor shapes.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_part(&Weights::open(path)?, path, dtype, device)
    }

    /// Like [`Vae::load`] for weights already opened from `path` (a part of an all-in-one file).
    pub fn load_part(
        weights: &Weights,
        path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let weights = weights
            .clone()
            .strip_common_prefix(&["vae.", "first_stage_model."]);
        let cfg = Self::config_of(&weights, path)?;
        Self::from_weights(&weights, cfg, dtype, device)
    }

    /// The configuration of a VAE opened from `path` (prefixes stripped): `path/config.json`
    /// when there is one, else inferred from the tensor shapes.
    pub fn config_of(weights: &Weights, path: &Path) -> Result<VaeConfig> {
        let cfg_path = crate::files::config_path(path);
        if cfg_path.is_file() {
            let cfg: VaeConfig = read_json(&cfg_path)?;
            cfg.validate(&cfg_path)?;
            Ok(cfg)
        } else {
            infer_vae_config(weights)
        }
    }

    /// Builds the VAE from opened weights (diffusers or BFL names).
    pub fn from_weights(
        weights: &Weights,
        cfg: VaeConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate(weights.origin())?;
        let table = table(&cfg, detect_layout(weights));
        let params = Params::checkpoint(
            table,
            weights,
            |n| n == "bn.num_batches_tracked",
            compute_dtype(dtype, device),
            device,
            QuantMode::Exact,
        )?;
        Self::build(cfg, &params)
    }

    /// A VAE with random weights (normal σ = 0.02; biases and the running mean 0, norm scales and
    /// the running variance 1) for speed measurements without a checkpoint, e.g.
    /// `VaeConfig::flux2()`. Not seeded.
    pub fn random(cfg: VaeConfig, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate(Path::new("<random>"))?;
        let params = Params::random(
            table(&cfg, VaeLayout::Diffusers),
            compute_dtype(dtype, device),
            device,
        );
        Self::build(cfg, &params)
    }

    /// Builds the VAE from its parameters, which `w` gives in the dtype the VAE computes in.
    fn build(cfg: VaeConfig, w: &Params<'_>) -> Result<Self> {
        let device = w.device().clone();
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
                w.tensor(&format!("{name}.weight"))?,
                Some(w.tensor(&format!("{name}.bias"))?),
                cfg,
            ))
        };
        let norm = |name: &str| -> Result<Norm> {
            let weight = w.tensor(&format!("{name}.weight"))?;
            let bias = w.tensor(&format!("{name}.bias"))?;
            let channels = weight.dim(0)?;
            Ok(Norm {
                inner: GroupNorm::new(weight.clone(), bias.clone(), channels, groups, NORM_EPS)?,
                weight,
                bias,
                groups,
            })
        };
        let lin = |name: &str| -> Result<Linear> {
            w.linear_with_bias(&format!("{name}.weight"), &format!("{name}.bias"))
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
        let bn_mean = w.tensor_f32("bn.running_mean")?;
        let bn_var = w.tensor_f32("bn.running_var")?;
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
            device,
            attention: AttentionBackend::default(),
            differentiable: false,
        })
    }

    /// About the most memory encoding a `width_px` × `height_px` picture needs at once (an
    /// estimate for refusing pictures that would exhaust memory, not a measurement).
    pub fn encode_working_bytes(&self, height_px: usize, width_px: usize) -> u64 {
        // The first encoder level runs at full resolution with `block_out_channels[0]` channels
        // in f32; a ResNet block holds about four such maps at once (input, two convolution
        // outputs, the normalised copy). Deeper levels are 4× smaller each.
        let channels = self.cfg.block_out_channels.first().copied().unwrap_or(128) as u64;
        4 * channels * height_px as u64 * width_px as u64 * 4
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
        self.check_encodable(image)?;
        let moments = self.encode_moments(image)?;
        self.normalize_moments(&moments)
    }

    /// The picture's dims `[B, C, H, W]`, if its sides are whole tokens.
    fn check_encodable(&self, image: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let dims = image.dims4().context("VAE encode input")?;
        let (_, _, h, w) = dims;
        let step = self.pixels_per_token();
        if h % step != 0 || w % step != 0 {
            return Err(ModelError::InvalidArgument(format!(
                "image size {w}x{h} must be a multiple of {step}"
            )));
        }
        Ok(dims)
    }

    /// Posterior moments → normalised token grid: the mean, patchified, BatchNorm-normalised.
    fn normalize_moments(&self, moments: &Tensor) -> Result<Tensor> {
        let raw = moments.narrow(1, 0, self.cfg.latent_channels)?;
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
        if latent.rank() != 4 || latent.dims().contains(&0) {
            return Err(ModelError::InvalidArgument(format!(
                "cannot decode a latent of shape {:?}: expected [B, C, h, w] with values",
                latent.dims()
            )));
        }
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
        self.decode_tiled_with(latent, |_, _| std::ops::ControlFlow::Continue(()))
    }

    /// [`Vae::decode_tiled`] calling `progress(tiles_done, tiles)` after each tile; a
    /// `Break` stops between tiles with [`ModelError::Cancelled`].
    pub fn decode_tiled_with(
        &self,
        latent: &Tensor,
        progress: impl FnMut(usize, usize) -> std::ops::ControlFlow<()>,
    ) -> Result<Tensor> {
        self.decode_tiled_at(latent, self.cfg.sample_size, progress)
    }

    /// [`Vae::decode_tiled_with`] with tiles of `tile_px` pixels instead of diffusers'
    /// `sample_size` (Decode under a tight VRAM budget: a smaller tile needs less memory, and
    /// its seams are blended the same way).
    pub fn decode_tiled_at(
        &self,
        latent: &Tensor,
        tile_px: usize,
        progress: impl FnMut(usize, usize) -> std::ops::ControlFlow<()>,
    ) -> Result<Tensor> {
        let raw = self.denormalize(latent)?;
        let (_, _, h, w) = raw.dims4()?;
        let factor = self.cfg.spatial_factor();
        let tile_latent = (tile_px / factor).max(4);
        let image = if h > tile_latent || w > tile_latent {
            self.tiled(
                &raw,
                Tiles {
                    input: tile_latent,
                    output: tile_latent * factor,
                },
                |tile| self.decode_raw_inner(tile),
                progress,
            )
            .map_err(|err| err.into_model("VAE tiled decode"))?
        } else {
            self.decode_raw(&raw)?
        };
        Ok(image.clamp(-1f32, 1f32)?)
    }

    /// Like [`Vae::encode`], but in overlapping tiles so that memory stays bounded for large
    /// pictures.
    ///
    /// This is diffusers' `enable_tiling()` encode (`_tiled_encode`) exactly: tiles of
    /// `sample_size` pixels starting every three quarters of a tile, encoded independently, and
    /// their latents blended linearly (top, then left) over a quarter of a latent tile. Pictures
    /// no larger than one tile encode identically to [`Vae::encode`].
    pub fn encode_tiled(&self, image: &Tensor) -> Result<Tensor> {
        self.encode_tiled_with(image, |_, _| std::ops::ControlFlow::Continue(()))
    }

    /// [`Vae::encode_tiled`] calling `progress(tiles_done, tiles)` after each tile; a `Break`
    /// stops between tiles with [`ModelError::Cancelled`].
    pub fn encode_tiled_with(
        &self,
        image: &Tensor,
        progress: impl FnMut(usize, usize) -> std::ops::ControlFlow<()>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = self.check_encodable(image)?;
        let tile_sample = self.cfg.sample_size;
        let moments = if h > tile_sample || w > tile_sample {
            self.tiled(
                image,
                Tiles {
                    input: tile_sample,
                    output: tile_sample / self.cfg.spatial_factor(),
                },
                |tile| self.encode_moments_inner(tile),
                progress,
            )
            .map_err(|err| err.into_model("VAE tiled encode"))?
        } else {
            self.encode_moments(image)?
        };
        self.normalize_moments(&moments)
    }

    /// Runs `f` on overlapping tiles of `input` and blends the results, as diffusers'
    /// `_tiled_encode` and `tiled_decode` do: tiles of `tiles.input` start every
    /// `tiles.input · 3/4`; each result is cross-faded with the (already blended) one above, then
    /// the one to the left, over `tiles.output / 4`, and cropped to `tiles.output · 3/4`.
    fn tiled(
        &self,
        input: &Tensor,
        tiles: Tiles,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        mut progress: impl FnMut(usize, usize) -> std::ops::ControlFlow<()>,
    ) -> std::result::Result<Tensor, TiledError> {
        let overlap_factor = 0.25;
        let stride = ((tiles.input as f64 * (1.0 - overlap_factor)) as usize).max(1);
        let blend_extent = (tiles.output as f64 * overlap_factor) as usize;
        let row_limit = tiles.output - blend_extent;
        let (_, _, h, w) = input.dims4()?;
        let n_tiles = h.div_ceil(stride) * w.div_ceil(stride);
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for top in (0..h).step_by(stride) {
            let mut row: Vec<Tensor> = Vec::new();
            for left in (0..w).step_by(stride) {
                let tile = input.narrow(2, top, tiles.input.min(h - top))?.narrow(
                    3,
                    left,
                    tiles.input.min(w - left),
                )?;
                let mut out = f(&tile)?;
                // Blend with the already blended tile above, then the one to the left, like
                // diffusers (whose blend functions modify the current tile in place in this order).
                if let Some(above) = rows.last().and_then(|r: &Vec<Tensor>| r.get(row.len())) {
                    out = blend(above, &out, blend_extent, 2)?;
                }
                if let Some(left_tile) = row.last() {
                    out = blend(left_tile, &out, blend_extent, 3)?;
                }
                row.push(out);
                let done = rows.iter().map(Vec::len).sum::<usize>() + row.len();
                if progress(done, n_tiles).is_break() {
                    return Err(TiledError::Stopped {
                        done,
                        total: n_tiles,
                    });
                }
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
        Ok(Tensor::cat(&result_rows, 2)?)
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
