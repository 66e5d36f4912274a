//! The Qwen3 decoder as FLUX.2's text encoder: hidden states of a few layers, concatenated.
//!
//! Runs with a causal + key-padding mask and positions 0..L−1 and collects the hidden states of the
//! configured layers (HF indexing: 0 is the embedding output, k is after decoder layer k−1, the last
//! index is after the final norm). Padded positions still matter: the transformer attends to all
//! text tokens without a mask, so their hidden states must match HF's exactly. We stop after the
//! last needed layer and never load the layers after it (klein uses layers 9, 18, 27 of 36: a
//! quarter of the encoder is skipped).

use std::path::Path;

use candle_core::Module as _;
use candle_core::{D, DType, Device, Tensor};

use super::config::Qwen3Config;
use super::keys::{Qwen3Layout, detect_layout, is_unused_part, table};
use crate::attention::AttentionBackend;
use crate::error::{CandleContext as _, ModelError, Result, read_json};
use crate::linear::{Embedding, Linear};
use crate::ops;
use crate::streaming::{Layer, LayerStream, ProjFn, Streaming, TensorFn, choose_streamed};
use crate::weights::table::Params;
use crate::weights::{QuantMode, Weights};

/// The klein default: hidden states after decoder layers 9, 18 and 27 (HF `hidden_states` indices;
/// diffusers' `Flux2KleinPipeline` argument `text_encoder_out_layers`, BFL's
/// `OUTPUT_LAYERS_QWEN3`).
pub const KLEIN_OUT_LAYERS: [usize; 3] = [9, 18, 27];

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
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    /// Training mode: composite differentiable kernels (see [`crate::ops`]).
    differentiable: bool,
    /// Page-locked RAM of the weights when the encoder lives in RAM and moves to a GPU for each
    /// prompt ([`Qwen3Encoder::pinned_for`]).
    pinned: Option<std::sync::Arc<veetance_gpu::memory::PinnedHost>>,
    /// Layers that stay in RAM and are copied in for each prompt (see
    /// [`Qwen3Encoder::placed`]); `None` when every layer lives on `device`.
    streaming: Option<std::sync::Arc<Streaming>>,
}

impl Layer for DecoderLayer {
    fn map_layer(&self, proj: ProjFn<'_>, tensor: TensorFn<'_>) -> candle_core::Result<Self> {
        Ok(Self {
            input_norm: tensor(&self.input_norm)?,
            q_proj: proj(&self.q_proj)?,
            k_proj: proj(&self.k_proj)?,
            v_proj: proj(&self.v_proj)?,
            o_proj: proj(&self.o_proj)?,
            q_norm: tensor(&self.q_norm)?,
            k_norm: tensor(&self.k_norm)?,
            post_norm: tensor(&self.post_norm)?,
            gate_proj: proj(&self.gate_proj)?,
            up_proj: proj(&self.up_proj)?,
            down_proj: proj(&self.down_proj)?,
        })
    }
}

impl Qwen3Encoder {
    /// Loads a text encoder: a `text_encoder/` directory (config.json + safetensors, sharded or
    /// not), or a single safetensors or GGUF file (configuration inferred), for the given output
    /// layers. Layers after the last one needed are never read.
    pub fn load(
        path: &Path,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Self> {
        Self::load_part(
            &Weights::open(path)?,
            path,
            out_layers,
            dtype,
            device,
            quant,
        )
    }

    /// The configuration of an encoder opened from `path`: its `config.json`, or inferred from
    /// the tensors of a single file.
    pub fn config_of(weights: &Weights, path: &Path) -> Result<Qwen3Config> {
        let layout = detect_layout(weights);
        let cfg_path = crate::files::config_path(path);
        if cfg_path.is_file() {
            let cfg: Qwen3Config = read_json(&cfg_path)?;
            cfg.check_rope(&cfg_path)?;
            if cfg.attention_bias {
                return Err(ModelError::Config {
                    path: cfg_path,
                    reason: "attention_bias = true is not a Qwen3 layout".into(),
                });
            }
            Ok(cfg)
        } else {
            let prefix = match &layout {
                Qwen3Layout::HuggingFace(prefix) => prefix.clone(),
                Qwen3Layout::LlamaCpp => String::new(),
            };
            Qwen3Config::infer(weights, &prefix, layout == Qwen3Layout::LlamaCpp)
        }
    }

    /// Like [`Qwen3Encoder::load`] for weights already opened from `path`.
    pub fn load_part(
        weights: &Weights,
        path: &Path,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Self> {
        let cfg = Self::config_of(weights, path)?;
        Self::from_weights(weights, cfg, out_layers, dtype, device, quant)
    }

    /// Builds the encoder from opened weights (any layout [`detect_layout`] recognises).
    pub fn from_weights(
        weights: &Weights,
        cfg: Qwen3Config,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Self> {
        let plan = layers_to_run(&cfg, out_layers, weights.origin())?;
        let layout = detect_layout(weights);
        let table = table(&cfg, plan.n_run, plan.final_norm, &layout);
        let params = Params::checkpoint(
            table,
            weights,
            |name| is_unused_part(name, plan.n_run, &layout),
            dtype,
            device,
            quant,
        )?;
        Self::build(cfg, out_layers, plan, &params)
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
        let table = table(
            &cfg,
            plan.n_run,
            plan.final_norm,
            &Qwen3Layout::HuggingFace(String::new()),
        );
        let params = Params::random(table, dtype, device);
        Self::build(cfg, out_layers, plan, &params)
    }

    /// Builds the encoder from its parameters, by internal name.
    fn build(
        cfg: Qwen3Config,
        out_layers: &[usize],
        plan: LayerPlan,
        w: &Params<'_>,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(plan.n_run);
        for i in 0..plan.n_run {
            let p = format!("layers.{i}.");
            layers.push(DecoderLayer {
                input_norm: w.tensor(&format!("{p}input_layernorm.weight"))?,
                q_proj: w.linear(&format!("{p}self_attn.q_proj.weight"))?,
                k_proj: w.linear(&format!("{p}self_attn.k_proj.weight"))?,
                v_proj: w.linear(&format!("{p}self_attn.v_proj.weight"))?,
                o_proj: w.linear(&format!("{p}self_attn.o_proj.weight"))?,
                q_norm: w.tensor(&format!("{p}self_attn.q_norm.weight"))?,
                k_norm: w.tensor(&format!("{p}self_attn.k_norm.weight"))?,
                post_norm: w.tensor(&format!("{p}post_attention_layernorm.weight"))?,
                gate_proj: w.linear(&format!("{p}mlp.gate_proj.weight"))?,
                up_proj: w.linear(&format!("{p}mlp.up_proj.weight"))?,
                down_proj: w.linear(&format!("{p}mlp.down_proj.weight"))?,
            });
        }
        let final_norm = if plan.final_norm {
            Some(w.tensor("norm.weight")?)
        } else {
            None
        };
        Ok(Self {
            embed: w.embedding("embed_tokens.weight")?,
            layers,
            final_norm,
            out_layers: out_layers.to_vec(),
            cfg,
            dtype: w.dtype(),
            device: w.device().clone(),
            differentiable: false,
            pinned: None,
            streaming: None,
        })
    }

    /// A clone with `proj` applied to every projection and `tensor` to every other tensor,
    /// placed on `device` (the embedding table's lookups go there).
    fn map_weights(
        &self,
        proj: &dyn Fn(&Linear) -> candle_core::Result<Linear>,
        tensor: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| l.map_layer(proj, tensor))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embed: self.embed.map_placed(tensor, device)?,
            layers,
            final_norm: self.final_norm.as_ref().map(tensor).transpose()?,
            device: device.clone(),
            pinned: None,
            streaming: None,
            ..self.clone()
        })
    }

    /// Bytes of each decoder layer's weights, in order.
    pub fn layer_bytes(&self) -> Vec<u64> {
        self.layers.iter().map(Layer::bytes).collect()
    }

    /// A copy of this RAM-resident encoder for `gpu` that keeps at most `resident_layer_bytes`
    /// of its decoder layers on the GPU and streams the others from RAM for each prompt (see
    /// [`crate::streaming`]). When some layers stream, the embedding table stays in RAM too and
    /// only the looked-up rows travel. With room for every layer this is [`Self::to_device`].
    pub fn placed(&self, gpu: &Device, resident_layer_bytes: u64) -> Result<Self> {
        let streamed = choose_streamed(&self.layer_bytes(), resident_layer_bytes);
        if !streamed.iter().any(|&s| s) || !self.device.is_cpu() {
            return self.to_device(gpu);
        }
        let to_gpu = |t: &Tensor| t.to_device(gpu);
        let layers = self
            .layers
            .iter()
            .zip(&streamed)
            .map(|(layer, &streams)| {
                if streams {
                    Ok(layer.clone())
                } else {
                    layer.map_layer(&|p| p.to_device(gpu), &to_gpu)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .context("placing the text encoder")?;
        Ok(Self {
            layers,
            final_norm: self
                .final_norm
                .as_ref()
                .map(to_gpu)
                .transpose()
                .context("placing the text encoder")?,
            device: gpu.clone(),
            streaming: Some(std::sync::Arc::new(
                Streaming::new(streamed, gpu).context("placing the text encoder")?,
            )),
            ..self.clone()
        })
    }

    /// The streaming state of a [`Self::placed`] encoder (`None` when every layer is resident).
    pub fn streaming(&self) -> Option<&Streaming> {
        self.streaming.as_deref()
    }

    /// Token embeddings on the encoder's device; a table left in RAM by [`Self::placed`] looks
    /// up there and sends only the rows.
    fn embed_tokens(&self, input_ids: &Tensor) -> candle_core::Result<Tensor> {
        match &self.embed {
            Embedding::Dense(table) if !table.device().same_device(&self.device) => self
                .embed
                .forward(&input_ids.to_device(table.device())?)?
                .to_device(&self.device),
            _ => self.embed.forward(input_ids),
        }
    }

    /// A copy of the weights on `device` (the text encoder of an offloaded model moves to the
    /// GPU for its prompts, then the copy is dropped). From page-locked RAM
    /// ([`Qwen3Encoder::pinned_for`]) the copy runs at the link's full speed.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        if self.device.same_device(device) {
            return Ok(self.clone());
        }
        self.map_weights(&|p| p.to_device(device), &|t| t.to_device(device), device)
            .context("moving the text encoder")
    }

    /// The same encoder with its RAM page-locked for fast copies to `gpu` (no copy is made; a
    /// no-op unless the weights are in RAM and `gpu` is a CUDA device).
    pub fn pinned_for(&self, gpu: &Device) -> Self {
        let pinned = crate::device::pin_weights(&self.device, gpu, |collect| {
            self.map_weights(&|p| p.map_tensors(collect), collect, &self.device)
                .is_ok()
        });
        match pinned {
            Some(pinned) => Self {
                pinned: Some(pinned),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of this encoder's RAM that are page-locked (0 unless [`Self::pinned_for`] pinned it).
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned.as_ref().map_or(0, |p| p.pinned_bytes())
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
        let n_kv = self.cfg.kv_heads();
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

        let mut hidden = self.embed_tokens(input_ids)?;
        let mut stream = match &self.streaming {
            Some(streaming) => {
                let host = self
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(i, layer)| {
                        if streaming.is_streamed(i) {
                            layer.host_tensors()
                        } else {
                            Ok(Vec::new())
                        }
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Some(LayerStream::new(streaming, host, &self.device)?)
            }
            None => None,
        };
        let mut collected: Vec<(usize, Tensor)> = Vec::new();
        if self.out_layers.contains(&0) {
            collected.push((0, hidden.clone()));
        }
        for (idx, layer) in self.layers.iter().enumerate() {
            let fetched = match stream.as_mut() {
                Some(stream) => layer.fetched(stream, idx)?,
                None => None,
            };
            let layer = fetched.as_ref().unwrap_or(layer);
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
                "the text encoder has {} layers, but hidden states {out_layers:?} are read (FLUX.2 [klein] reads 9, 18 and 27); a checkpoint made for other layers says so with `text_encoder_out_layers` in its model_index.json",
                cfg.num_hidden_layers
            ),
        });
    }
    if cfg.num_hidden_layers > 4096
        || cfg.hidden_size > (1 << 20)
        || cfg.head_dim() > 4096
        || cfg.num_attention_heads > 4096
        || cfg.kv_heads() > 4096
        || cfg.kv_heads() == 0
        || !cfg.num_attention_heads.is_multiple_of(cfg.kv_heads())
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

/// The stored tensors (names and shapes) a Qwen3 encoder running `n_run` layers needs, in
/// transformers' names under `prefix`.
pub fn qwen3_tensor_specs(
    cfg: &Qwen3Config,
    prefix: &str,
    n_run: usize,
    final_norm: bool,
) -> Vec<crate::weights::TensorSpec> {
    table(
        cfg,
        n_run,
        final_norm,
        &Qwen3Layout::HuggingFace(prefix.into()),
    )
    .stored_specs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_copy_of_the_weights_encodes_identically() -> Result<()> {
        let device = Device::Cpu;
        let encoder = Qwen3Encoder::random(Qwen3Config::tiny(), &[1, 2, 3], DType::F32, &device)?;
        // What `to_device` does for another device, made to copy into new buffers here.
        let moved =
            encoder.map_weights(&|p| p.map_tensors(&|t| t.copy()), &|t| t.copy(), &device)?;
        let ids = Tensor::new(&[[3u32, 17, 42, 5, 0, 0]], &device)?;
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0]], &device)?;
        let a = encoder
            .forward(&ids, &mask)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = moved
            .forward(&ids, &mask)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        // Distinct buffers: changing the copy's weights would change its output.
        let zeroed = encoder.map_weights(
            &|p| p.map_tensors(&|t| t.zeros_like()),
            &|t| t.copy(),
            &device,
        )?;
        let c = zeroed
            .forward(&ids, &mask)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_ne!(a, c);
        Ok(())
    }
}
