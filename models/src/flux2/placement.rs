//! Where a transformer's weights live: moving them between RAM and VRAM, page-locking the RAM
//! copy of an offloaded model, placing a RAM model on a GPU with some blocks streamed
//! ([`crate::streaming`]), and Compile's optional weight relayout. All of them walk the weights
//! with one function, `Flux2Transformer::map_weights`, or per block with `map_layer`.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::model::{DoubleBlock, Flux2Transformer, SingleBlock, StreamWeights};
use crate::error::Result;
use crate::linear::{CompactFormat, Linear};
use crate::streaming::{Layer, LayerStream, ProjFn, Streaming, TensorFn, choose_streamed};
use crate::weights::QuantMode;

impl StreamWeights {
    fn map_layer(&self, proj: ProjFn<'_>, tensor: TensorFn<'_>) -> candle_core::Result<Self> {
        Ok(Self {
            qkv: proj(&self.qkv)?,
            q_norm: tensor(&self.q_norm)?,
            k_norm: tensor(&self.k_norm)?,
            proj: proj(&self.proj)?,
            mlp_in: proj(&self.mlp_in)?,
            mlp_out: proj(&self.mlp_out)?,
        })
    }
}

impl Layer for DoubleBlock {
    fn map_layer(&self, proj: ProjFn<'_>, tensor: TensorFn<'_>) -> candle_core::Result<Self> {
        Ok(Self {
            img: self.img.map_layer(proj, tensor)?,
            txt: self.txt.map_layer(proj, tensor)?,
        })
    }
}

impl Layer for SingleBlock {
    fn map_layer(&self, proj: ProjFn<'_>, tensor: TensorFn<'_>) -> candle_core::Result<Self> {
        Ok(Self {
            linear1: proj(&self.linear1)?,
            linear2: proj(&self.linear2)?,
            q_norm: tensor(&self.q_norm)?,
            k_norm: tensor(&self.k_norm)?,
        })
    }
}

impl Flux2Transformer {
    /// Bytes of each block's weights, double blocks first, in execution order.
    pub fn layer_bytes(&self) -> Vec<u64> {
        self.double_blocks
            .iter()
            .map(Layer::bytes)
            .chain(self.single_blocks.iter().map(Layer::bytes))
            .collect()
    }

    /// A copy of this RAM-resident model for `gpu` that keeps at most `resident_block_bytes` of
    /// its blocks on the GPU and streams the rest from RAM during each forward pass (which ones:
    /// [`choose_streamed`]). Everything outside the blocks (embedders, modulation, final layer,
    /// a few MB) is resident. Page-lock the RAM model first ([`Self::pinned_for`]) so the copies
    /// are asynchronous. With room for every block this is [`Self::to_device`].
    pub fn placed(&self, gpu: &Device, resident_block_bytes: u64) -> Result<Self> {
        let streamed = choose_streamed(&self.layer_bytes(), resident_block_bytes);
        if !streamed.iter().any(|&s| s) || !self.device.is_cpu() {
            return self.to_device(gpu);
        }
        let n_double = self.double_blocks.len();
        let streams = |name: &str| -> bool {
            let index = |prefix: &str| {
                name.strip_prefix(prefix)
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
            };
            let layer =
                index("double_blocks.").or_else(|| index("single_blocks.").map(|i| n_double + i));
            layer.is_some_and(|i| streamed.get(i).copied().unwrap_or(false))
        };
        let mut placed = self.map_weights_named(
            &|name, p| {
                if streams(name) {
                    Ok(p.clone())
                } else {
                    p.to_device(gpu)
                }
            },
            &|t| t.to_device(gpu),
        )?;
        // Streamed blocks keep their RAM tensors (norm scales included), as the walk expects.
        for (i, block) in placed.double_blocks.iter_mut().enumerate() {
            if streamed.get(i).copied().unwrap_or(false)
                && let Some(original) = self.double_blocks.get(i)
            {
                *block = original.clone();
            }
        }
        for (i, block) in placed.single_blocks.iter_mut().enumerate() {
            if streamed.get(n_double + i).copied().unwrap_or(false)
                && let Some(original) = self.single_blocks.get(i)
            {
                *block = original.clone();
            }
        }
        placed.streaming = Some(Arc::new(Streaming::new(streamed, gpu)?));
        placed.device = gpu.clone();
        placed.compiled = None;
        Ok(placed)
    }

    /// The streaming state of a [`Self::placed`] model (`None` when every block is resident).
    pub fn streaming(&self) -> Option<&Streaming> {
        self.streaming.as_deref()
    }

    /// A walk over the blocks for one forward pass, when some stream.
    pub(super) fn layer_stream(&self) -> candle_core::Result<Option<LayerStream<'_>>> {
        let Some(streaming) = &self.streaming else {
            return Ok(None);
        };
        let mut host = Vec::with_capacity(self.double_blocks.len() + self.single_blocks.len());
        for (i, block) in self.double_blocks.iter().enumerate() {
            host.push(if streaming.is_streamed(i) {
                block.host_tensors()?
            } else {
                Vec::new()
            });
        }
        let n_double = self.double_blocks.len();
        for (i, block) in self.single_blocks.iter().enumerate() {
            host.push(if streaming.is_streamed(n_double + i) {
                block.host_tensors()?
            } else {
                Vec::new()
            });
        }
        Ok(Some(LayerStream::new(streaming, host, &self.device)?))
    }
}

impl Flux2Transformer {
    /// A clone whose projection weights are stored pre-transposed (see [`crate::linear::Linear`]).
    pub(crate) fn with_projections_laid_out(&self) -> Result<Self> {
        self.map_weights(&|p| p.laid_out_for_matmul(), &|t| Ok(t.clone()))
    }

    /// A copy of this model with every weight on `device` (the model pool swaps transformers
    /// between RAM and VRAM with it). Compiled caches are not carried over: compile again on
    /// the target device.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let f = |t: &Tensor| t.to_device(device);
        let mut moved = self.map_weights(&|p| p.to_device(device), &f)?;
        moved.device = device.clone();
        moved.compiled = None;
        moved.pinned = None;
        moved.streaming = None;
        Ok(moved)
    }

    /// A clone whose weights in RAM are page-locked for `gpu`, so that [`Self::to_device`]
    /// copies them to it as DMA at the link's rate (Load's `offload` pins its RAM copy once).
    /// A plain clone when the weights are not in RAM or `gpu` is not a CUDA device.
    pub fn pinned_for(&self, gpu: &Device) -> Self {
        let pinned = crate::device::pin_weights(&self.device, gpu, |collect| {
            self.map_weights(&|p| p.map_tensors(collect), collect)
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

    /// Bytes of this model's RAM that are page-locked (0 unless [`Self::pinned_for`] pinned it).
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned.as_ref().map_or(0, |p| p.pinned_bytes())
    }

    /// A clone with `proj` applied to every projection and `tensor` to every other tensor the
    /// model holds (norm scales, LayerNorm constants).
    fn map_weights(
        &self,
        proj: &dyn Fn(&Linear) -> candle_core::Result<Linear>,
        tensor: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Self> {
        self.map_weights_named(&|_, p| proj(p), tensor)
    }

    /// [`Self::map_weights`] with each projection's internal (BFL) name, without `.weight`:
    /// `double_blocks.0.img_attn.qkv`, `single_blocks.1.linear2`, `final_layer.linear`, ...
    pub(crate) fn map_weights_named(
        &self,
        proj: &dyn Fn(&str, &Linear) -> candle_core::Result<Linear>,
        tensor: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Self> {
        let f = tensor;
        let lin = |name: &str, p: &Linear| proj(name, p);
        let pair =
            |prefix: &str, (a, b): &(Linear, Linear)| -> candle_core::Result<(Linear, Linear)> {
                Ok((
                    lin(&format!("{prefix}.in_layer"), a)?,
                    lin(&format!("{prefix}.out_layer"), b)?,
                ))
            };
        let stream = |p: &str, s: &StreamWeights| -> candle_core::Result<StreamWeights> {
            Ok(StreamWeights {
                qkv: lin(&format!("{p}attn.qkv"), &s.qkv)?,
                q_norm: f(&s.q_norm)?,
                k_norm: f(&s.k_norm)?,
                proj: lin(&format!("{p}attn.proj"), &s.proj)?,
                mlp_in: lin(&format!("{p}mlp.0"), &s.mlp_in)?,
                mlp_out: lin(&format!("{p}mlp.2"), &s.mlp_out)?,
            })
        };
        Ok(Self {
            img_in: lin("img_in", &self.img_in)?,
            txt_in: lin("txt_in", &self.txt_in)?,
            time_in: pair("time_in", &self.time_in)?,
            guidance_in: self
                .guidance_in
                .as_ref()
                .map(|g| pair("guidance_in", g))
                .transpose()?,
            mod_img: lin("double_stream_modulation_img.lin", &self.mod_img)?,
            mod_txt: lin("double_stream_modulation_txt.lin", &self.mod_txt)?,
            mod_single: lin("single_stream_modulation.lin", &self.mod_single)?,
            final_mod: lin("final_layer.adaLN_modulation.1", &self.final_mod)?,
            final_linear: lin("final_layer.linear", &self.final_linear)?,
            double_blocks: self
                .double_blocks
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    Ok(DoubleBlock {
                        img: stream(&format!("double_blocks.{i}.img_"), &b.img)?,
                        txt: stream(&format!("double_blocks.{i}.txt_"), &b.txt)?,
                    })
                })
                .collect::<candle_core::Result<_>>()?,
            single_blocks: self
                .single_blocks
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    Ok(SingleBlock {
                        linear1: lin(&format!("single_blocks.{i}.linear1"), &b.linear1)?,
                        linear2: lin(&format!("single_blocks.{i}.linear2"), &b.linear2)?,
                        q_norm: f(&b.q_norm)?,
                        k_norm: f(&b.k_norm)?,
                    })
                })
                .collect::<candle_core::Result<_>>()?,
            ln_ones: f(&self.ln_ones)?,
            ln_zeros: f(&self.ln_zeros)?,
            ..self.clone()
        })
    }

    /// How each projection weight is stored (`f32`, `bf16`, `fp8_e4m3`, `Q4_K`, ...).
    pub fn projection_storage(&self) -> Vec<String> {
        let names = std::cell::RefCell::new(Vec::new());
        let record = |p: &Linear| -> candle_core::Result<Linear> {
            names.borrow_mut().push(p.weight().storage_name());
            Ok(p.clone())
        };
        // Only reads; the clone it builds is dropped.
        let _ = self.map_weights(&record, &|t| Ok(t.clone()));
        names.into_inner()
    }

    /// Bytes the weights occupy where they live (compact weights at their compact size).
    pub fn weight_bytes(&self) -> u64 {
        let bytes = std::cell::Cell::new(0u64);
        let tensor_bytes = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let count_proj = |p: &Linear| -> candle_core::Result<Linear> {
            let bias: u64 = p
                .tensors()
                .iter()
                .skip(p.weight().tensors().len())
                .map(tensor_bytes)
                .sum();
            bytes.set(bytes.get() + p.weight().size_bytes() + bias);
            Ok(p.clone())
        };
        let count_tensor = |t: &Tensor| -> candle_core::Result<Tensor> {
            bytes.set(bytes.get() + tensor_bytes(t));
            Ok(t.clone())
        };
        let _ = self.map_weights(&count_proj, &count_tensor);
        bytes.get()
    }

    /// A clone whose block projections (the weights quantized checkpoints quantize: attention,
    /// MLP and modulation; not the embedders or the final layer) are re-encoded in `format`, as a
    /// quantized file of the same weights would hold them: for measuring formats on random
    /// weights without writing files.
    pub fn with_compact_blocks(&self, format: CompactFormat, quant: QuantMode) -> Result<Self> {
        let failure = std::cell::RefCell::new(None);
        let compact = |p: &Linear| -> candle_core::Result<Linear> {
            p.compacted(format, quant).or_else(|err| {
                failure.borrow_mut().get_or_insert(err);
                Ok(p.clone())
            })
        };
        let keep = |t: &Tensor| Ok(t.clone());
        let mut model = self.map_weights(&compact, &keep)?;
        if let Some(err) = failure.into_inner() {
            return Err(err);
        }
        // The embedders and the final layer stay as they were, as ComfyUI-GGUF and BFL's FP8
        // files keep them.
        model.img_in = self.img_in.clone();
        model.txt_in = self.txt_in.clone();
        model.time_in = self.time_in.clone();
        model.guidance_in = self.guidance_in.clone();
        model.final_mod = self.final_mod.clone();
        model.final_linear = self.final_linear.clone();
        model.compiled = None;
        Ok(model)
    }
}
