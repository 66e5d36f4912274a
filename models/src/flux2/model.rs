//! The FLUX.2 transformer: its weights, loading, and the forward pass (double- and single-stream
//! blocks with shared modulation).
//!
//! Forward order follows diffusers' `Flux2Transformer2DModel.forward`; numerics that matter for
//! parity: RoPE angles computed in f64 and applied in f32, `t·1000` rounded in the model dtype,
//! [txt, img] concatenation order for tokens and RoPE tables. The final modulation is stored in
//! BFL's (shift, scale) order (see [`super::keys`]).

use std::path::Path;

use candle_core::Module as _;
use candle_core::{D, DType, Device, Tensor};

use super::config::{Flux2Config, infer_config};
use super::keys::{CheckpointLayout, detect_layout, internal_table, table_for};
use crate::attention::AttentionBackend;
use crate::error::{CandleContext as _, Result, read_json};
use crate::linear::Linear;
use crate::streaming::Layer as _;
use crate::weights::table::Params;
use crate::weights::{QuantMode, Weights};

/// Prefixes of transformer weights inside full-checkpoint exports (ComfyUI, LDM-style).
pub const COMFY_PREFIXES: &[&str] = &["model.diffusion_model.", "diffusion_model."];

#[derive(Debug, Clone)]
pub(super) struct StreamWeights {
    pub(super) qkv: Linear,
    pub(super) q_norm: Tensor,
    pub(super) k_norm: Tensor,
    pub(super) proj: Linear,
    pub(super) mlp_in: Linear,
    pub(super) mlp_out: Linear,
}

#[derive(Debug, Clone)]
pub(super) struct DoubleBlock {
    pub(super) img: StreamWeights,
    pub(super) txt: StreamWeights,
}

#[derive(Debug, Clone)]
pub(super) struct SingleBlock {
    pub(super) linear1: Linear,
    pub(super) linear2: Linear,
    pub(super) q_norm: Tensor,
    pub(super) k_norm: Tensor,
}

impl Flux2Config {
    /// The configuration of a transformer opened from `path` (ComfyUI prefixes stripped):
    /// `path/config.json` when there is one, else inferred from the tensor shapes.
    pub fn of_checkpoint(weights: &Weights, path: &Path) -> Result<Self> {
        let cfg_path = crate::files::config_path(path);
        if cfg_path.is_file() {
            let cfg = read_json::<Flux2Config>(&cfg_path)?;
            cfg.validate(&cfg_path)?;
            Ok(cfg)
        } else {
            let cfg = infer_config(weights, detect_layout(weights))?;
            cfg.validate(path)?;
            Ok(cfg)
        }
    }
}

/// A loaded FLUX.2 transformer. Cloning is cheap (weights are shared).
#[derive(Debug, Clone)]
pub struct Flux2Transformer {
    pub(super) cfg: Flux2Config,
    pub(super) dtype: DType,
    pub(super) device: Device,
    pub(super) img_in: Linear,
    pub(super) txt_in: Linear,
    pub(super) time_in: (Linear, Linear),
    pub(super) guidance_in: Option<(Linear, Linear)>,
    pub(super) mod_img: Linear,
    pub(super) mod_txt: Linear,
    pub(super) mod_single: Linear,
    /// Rows ordered (shift, scale), BFL order.
    pub(super) final_mod: Linear,
    pub(super) final_linear: Linear,
    pub(super) double_blocks: Vec<DoubleBlock>,
    pub(super) single_blocks: Vec<SingleBlock>,
    /// LayerNorm without affine parameters, expressed with ones/zeros for candle's fused op.
    pub(super) ln_ones: Tensor,
    pub(super) ln_zeros: Tensor,
    pub(super) attention: AttentionBackend,
    /// Step-distilled checkpoints ignore CFG (diffusers `is_distilled` in model_index.json).
    pub(super) is_distilled: bool,
    /// Training mode: composite differentiable kernels instead of candle's fused ones (see [`crate::ops`]).
    pub(super) differentiable: bool,
    /// Caches of a compiled model (see [`Flux2Transformer::compile`]); `None` when eager.
    pub(super) compiled: Option<std::sync::Arc<super::compile::CompiledState>>,
    /// Page-locked RAM of an offloaded model's weights (see [`Flux2Transformer::pinned_for`]).
    pub(super) pinned: Option<std::sync::Arc<veetance_gpu::memory::PinnedHost>>,
    /// Set by whoever runs the model to stop a forward call between blocks (see
    /// [`Flux2Transformer::with_interrupt`]).
    pub(super) interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Blocks that stay in RAM and are copied in for each forward pass (see
    /// [`Flux2Transformer::placed`]); `None` when every block lives on `device`.
    pub(super) streaming: Option<std::sync::Arc<crate::streaming::Streaming>>,
}

impl Flux2Transformer {
    /// Loads a transformer from a diffusers `transformer/` directory (config.json + safetensors,
    /// sharded or not) or from a single file (safetensors or GGUF) in either layout, with or
    /// without ComfyUI's `model.diffusion_model.` prefix. FP8 and GGUF-block weights stay compact
    /// and compute as `quant` says.
    pub fn load(path: &Path, dtype: DType, device: &Device, quant: QuantMode) -> Result<Self> {
        Self::load_part(&Weights::open(path)?, path, dtype, device, quant)
    }

    /// Like [`Flux2Transformer::load`] for weights already opened from `path` (a part of an
    /// all-in-one file, say): the configuration comes from `path/config.json` or the shapes.
    pub fn load_part(
        weights: &Weights,
        path: &Path,
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Self> {
        let weights = weights.clone().strip_common_prefix(COMFY_PREFIXES);
        let layout = detect_layout(&weights);
        let cfg = Flux2Config::of_checkpoint(&weights, path)?;
        Self::from_weights(&weights, cfg, layout, dtype, device, quant)
    }

    /// Builds the model from already opened weights with a known configuration.
    pub fn from_weights(
        weights: &Weights,
        cfg: Flux2Config,
        layout: CheckpointLayout,
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Self> {
        cfg.validate(weights.origin())?;
        let table = table_for(&cfg, layout, Some(weights));
        let params = Params::checkpoint(table, weights, |_| false, dtype, device, quant)?;
        Self::build(cfg, &params)
    }

    /// A model with random weights (normal, σ = 0.02; norm scales 1) for speed measurements
    /// and shape tests of full-size architectures without a checkpoint. Not seeded.
    pub fn random(cfg: Flux2Config, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate(Path::new("<random>"))?;
        let params = Params::random(internal_table(&cfg), dtype, device);
        Self::build(cfg, &params)
    }

    /// Builds the model from its parameters, by internal (BFL) name.
    fn build(cfg: Flux2Config, w: &Params<'_>) -> Result<Self> {
        let d = cfg.hidden_size();
        let (dtype, device) = (w.dtype(), w.device().clone());
        let mut double_blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let stream = |s: &str| -> Result<StreamWeights> {
                let p = format!("double_blocks.{i}.{s}_");
                Ok(StreamWeights {
                    qkv: w.linear(&format!("{p}attn.qkv.weight"))?,
                    q_norm: w.tensor(&format!("{p}attn.norm.query_norm.scale"))?,
                    k_norm: w.tensor(&format!("{p}attn.norm.key_norm.scale"))?,
                    proj: w.linear(&format!("{p}attn.proj.weight"))?,
                    mlp_in: w.linear(&format!("{p}mlp.0.weight"))?,
                    mlp_out: w.linear(&format!("{p}mlp.2.weight"))?,
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
                linear1: w.linear(&format!("{p}linear1.weight"))?,
                linear2: w.linear(&format!("{p}linear2.weight"))?,
                q_norm: w.tensor(&format!("{p}norm.query_norm.scale"))?,
                k_norm: w.tensor(&format!("{p}norm.key_norm.scale"))?,
            });
        }
        let guidance_in = if cfg.guidance_embeds {
            Some((
                w.linear("guidance_in.in_layer.weight")?,
                w.linear("guidance_in.out_layer.weight")?,
            ))
        } else {
            None
        };
        Ok(Self {
            img_in: w.linear("img_in.weight")?,
            txt_in: w.linear("txt_in.weight")?,
            time_in: (
                w.linear("time_in.in_layer.weight")?,
                w.linear("time_in.out_layer.weight")?,
            ),
            guidance_in,
            mod_img: w.linear("double_stream_modulation_img.lin.weight")?,
            mod_txt: w.linear("double_stream_modulation_txt.lin.weight")?,
            mod_single: w.linear("single_stream_modulation.lin.weight")?,
            final_mod: w.linear("final_layer.adaLN_modulation.1.weight")?,
            final_linear: w.linear("final_layer.linear.weight")?,
            double_blocks,
            single_blocks,
            ln_ones: Tensor::ones(d, dtype, &device)?,
            ln_zeros: Tensor::zeros(d, dtype, &device)?,
            cfg,
            dtype,
            device,
            attention: AttentionBackend::default(),
            is_distilled: false,
            differentiable: false,
            compiled: None,
            pinned: None,
            interrupt: None,
            streaming: None,
        })
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

    /// A clone whose forward calls stop between blocks once `flag` is set (the run was
    /// cancelled), so that a long step on a large picture ends within about a block's time.
    /// [`crate::sample`] turns the stop into [`crate::ModelError::Cancelled`].
    pub fn with_interrupt(&self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self {
            interrupt: Some(flag),
            ..self.clone()
        }
    }

    /// Whether the flag of [`Self::with_interrupt`] is set.
    pub fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn check_interrupt(&self) -> candle_core::Result<()> {
        if self.interrupted() {
            candle_core::bail!("interrupted");
        }
        Ok(())
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
    /// model on a CUDA device with a supported head dim; see [`super::compile`]).
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

    /// A clone carrying `state` as its compiled caches.
    pub(crate) fn with_compiled_state(
        &self,
        state: std::sync::Arc<super::compile::CompiledState>,
    ) -> Self {
        Self {
            compiled: Some(state),
            ..self.clone()
        }
    }

    pub(crate) fn compiled_ref(&self) -> Option<&std::sync::Arc<super::compile::CompiledState>> {
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
        // A streamed model copies layers in from the host between kernels, which a captured
        // graph cannot repeat: it runs the fused kernels without a graph.
        if self.fused()
            && self.streaming.is_none()
            && let Some(compiled) = &self.compiled
        {
            let inputs = super::cuda_graph::StepInputs {
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
    /// a compiled model can capture it as a CUDA graph ([`super::cuda_graph`]).
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
        let mut stream = self.layer_stream()?;
        let n_double = self.double_blocks.len();

        for (i, block) in self.double_blocks.iter().enumerate() {
            self.check_interrupt()?;
            let fetched = match stream.as_mut() {
                Some(stream) => block.fetched(stream, i)?,
                None => None,
            };
            let block = fetched.as_ref().unwrap_or(block);
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
        for (i, block) in self.single_blocks.iter().enumerate() {
            self.check_interrupt()?;
            let fetched = match stream.as_mut() {
                Some(stream) => block.fetched(stream, n_double + i)?,
                None => None,
            };
            let block = fetched.as_ref().unwrap_or(block);
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
        let shift = final_emb.narrow(D::Minus1, 0, d)?;
        let scale = final_emb.narrow(D::Minus1, d, d)?;
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

/// Precomputed RoPE cos/sin for one [txt, img] sequence.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// `[L, head_dim/2]` f32.
    pub cos: Tensor,
    /// `[L, head_dim/2]` f32.
    pub sin: Tensor,
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
