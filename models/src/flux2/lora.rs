//! LoRAs on the FLUX.2 transformer: where each adapted layer of a LoRA file lands in the internal
//! (BFL, fused) layout, and applying the adapter merged into the weights or kept beside them.
//!
//! Placement comes from the checkpoint key tables ([`super::keys`]): a diffusers module stored
//! as a row block of a fused weight (`to_q` of `img_attn.qkv`) adapts those rows; one stored
//! with its halves swapped (`norm_out.linear`) has its delta swapped too; BFL and kohya names
//! are the internal names. So LoRAs follow the same mapping as checkpoints, written once.
//!
//! Arithmetic follows PEFT's `fuse_lora` (diffusers 0.42.1): `W' = W + (B·A)·c` with
//! `c = scale · strength`, computed in f32 and rounded once to the model's dtype; DoRA rescales
//! each row of `W + ΔW` to its magnitude (`DoraLinearVariant.merge_unsafe`). Adapters kept beside
//! compact weights add `(x·Aᵀ)·(c·B)ᵀ` to the layer's output (PEFT's un-fused forward).

use std::collections::HashMap;
use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::config::Flux2Config;
use super::keys::{CheckpointLayout, internal_table, table_for};
use super::model::Flux2Transformer;
use crate::error::{ModelError, Result};
use crate::linear::{Linear, LinearWeight, LowRank};
use crate::lora::{LoraFile, LoraModule, Naming};
use crate::weights::Source;

/// How a LoRA is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraMerge {
    /// Merged into dense (f32/f16/bf16) weights, which keeps the model as fast as without the
    /// adapter; kept beside FP8 and GGUF weights, which stay compact and exact. DoRA layers are
    /// always merged (their row norms need the whole weight).
    #[default]
    Auto,
    /// Merged into every adapted weight (compact weights become dense).
    Merge,
    /// Kept beside every adapted weight (except DoRA layers, which are merged).
    Beside,
}

/// What applying a LoRA did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoraApplied {
    /// Adapted layers of the file.
    pub modules: usize,
    /// Internal weights the adapter was merged into.
    pub merged: usize,
    /// Internal weights the adapter was kept beside.
    pub beside: usize,
    /// Text-encoder keys of the file, not applied.
    pub text_encoder_keys: usize,
}

/// Where one adapted layer of a file lands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// Internal weight name without `.weight`.
    internal: String,
    /// The rows of the internal weight it adapts (all when `None`).
    rows: Option<Range<usize>>,
    /// Whether the file's row order has the two halves swapped against the internal one.
    swap_halves: bool,
}

/// Every layer name a LoRA file may use, in each naming, with where it lands.
fn targets(cfg: &Flux2Config) -> HashMap<(Naming, String), Target> {
    let mut map = HashMap::new();
    let whole = |internal: &str| Target {
        internal: internal.to_owned(),
        rows: None,
        swap_halves: false,
    };
    for (name, _, _) in internal_table(cfg).entries() {
        if let Some(internal) = name.strip_suffix(".weight") {
            map.insert((Naming::Bfl, internal.to_owned()), whole(internal));
            map.insert(
                (Naming::KohyaBfl, internal.replace('.', "_")),
                whole(internal),
            );
        }
    }
    for (name, shape, source) in table_for(cfg, CheckpointLayout::Diffusers, None).entries() {
        let Some(internal) = name.strip_suffix(".weight") else {
            continue;
        };
        let module = |stored: &str| stored.strip_suffix(".weight").map(str::to_owned);
        match source {
            Source::Name(stored) => {
                if let Some(m) = module(stored) {
                    map.insert((Naming::Diffusers, m), whole(internal));
                }
            }
            Source::SwapHalves(stored) => {
                if let Some(m) = module(stored) {
                    map.insert(
                        (Naming::Diffusers, m),
                        Target {
                            swap_halves: true,
                            ..whole(internal)
                        },
                    );
                }
            }
            Source::Rows(parts) => {
                let rows_each = shape.first().copied().unwrap_or(0) / parts.len().max(1);
                for (i, stored) in parts.iter().enumerate() {
                    if let Some(m) = module(stored) {
                        map.insert(
                            (Naming::Diffusers, m),
                            Target {
                                rows: Some(i * rows_each..(i + 1) * rows_each),
                                ..whole(internal)
                            },
                        );
                    }
                }
            }
            Source::Reshaped(..) => {}
        }
    }
    map
}

/// One module of a file, resolved to its target.
struct Placed<'a> {
    module: &'a LoraModule,
    target: Target,
}

impl Flux2Transformer {
    /// A copy of this model with the LoRA in `lora` applied at `strength` (diffusers'
    /// `fuse_lora(lora_scale=strength)`), merged or kept beside the weights as `merge` says.
    /// Stack LoRAs by applying them one after another. The copy shares every weight the adapter
    /// does not touch; a compiled model's caches are dropped (compile the adapted model).
    pub fn with_lora(
        &self,
        lora: &LoraFile,
        strength: f64,
        merge: LoraMerge,
    ) -> Result<(Self, LoraApplied)> {
        let invalid = |reason: String| ModelError::Lora {
            path: lora.path().to_path_buf(),
            reason,
        };
        if !strength.is_finite() {
            return Err(invalid(format!(
                "strength {strength} is not a finite number"
            )));
        }
        let targets = targets(&self.cfg);
        let mut by_weight: HashMap<String, Vec<Placed<'_>>> = HashMap::new();
        let mut unmatched = Vec::new();
        for module in lora.modules() {
            // Diffusers and BFL names share a few roots (`double_stream_modulation_img.`), so a
            // dotted name is looked up in both namings.
            let namings: &[Naming] = match module.naming {
                Naming::KohyaBfl => &[Naming::KohyaBfl],
                Naming::Bfl | Naming::Diffusers => &[module.naming, Naming::Bfl, Naming::Diffusers],
            };
            let target = namings
                .iter()
                .find_map(|naming| targets.get(&(*naming, module.name.clone())));
            match target {
                Some(target) => {
                    by_weight
                        .entry(target.internal.clone())
                        .or_default()
                        .push(Placed {
                            module,
                            target: target.clone(),
                        })
                }
                None => unmatched.push(module.name.as_str()),
            }
        }
        if !unmatched.is_empty() {
            let shown: Vec<String> = unmatched.iter().take(5).map(|n| format!("`{n}`")).collect();
            return Err(invalid(format!(
                "{} of its {} layers are not layers of this FLUX.2 transformer ({} double and {} single blocks): {}{}",
                unmatched.len(),
                lora.modules().len(),
                self.cfg.num_layers,
                self.cfg.num_single_layers,
                shown.join(", "),
                if unmatched.len() > 5 { ", ..." } else { "" }
            )));
        }

        // The layers by name, to compute their replacements outside the walk (whose closures
        // can only return candle errors).
        let layers = std::cell::RefCell::new(HashMap::new());
        self.map_weights_named(
            &|name, p| {
                layers.borrow_mut().insert(name.to_owned(), p.clone());
                Ok(p.clone())
            },
            &|t| Ok(t.clone()),
        )?;
        let layers = layers.into_inner();
        let mut applied = LoraApplied {
            modules: lora.modules().len(),
            text_encoder_keys: lora.text_encoder_keys().len(),
            ..LoraApplied::default()
        };
        let mut replaced: HashMap<String, Linear> = HashMap::new();
        for (internal, placed) in &by_weight {
            let layer = layers
                .get(internal)
                .ok_or_else(|| invalid(format!("no layer `{internal}` in this model")))?;
            let dora = placed.iter().any(|p| p.module.magnitude.is_some());
            let compact = !matches!(layer.weight(), LinearWeight::Dense { .. });
            let merged = dora
                || match merge {
                    LoraMerge::Auto => !compact,
                    LoraMerge::Merge => true,
                    LoraMerge::Beside => false,
                };
            let new_layer = if merged {
                applied.merged += 1;
                self.merged_layer(layer, placed, strength)
            } else {
                applied.beside += 1;
                self.layer_with_adapters(layer, placed, strength)
            }
            .map_err(|e| match e {
                ModelError::Lora { .. } => e,
                other => invalid(format!("`{internal}`: {other}")),
            })?;
            replaced.insert(internal.clone(), new_layer);
        }
        let mut model = self.map_weights_named(
            &|name, p| Ok(replaced.get(name).cloned().unwrap_or_else(|| p.clone())),
            &|t| Ok(t.clone()),
        )?;
        model.compiled = None;
        Ok((model, applied))
    }

    /// `layer` with every placed module merged into its weight.
    fn merged_layer(&self, layer: &Linear, placed: &[Placed<'_>], strength: f64) -> Result<Linear> {
        let transposed = matches!(
            layer.weight(),
            LinearWeight::Dense {
                transposed: true,
                ..
            }
        );
        let mut weight = layer.weight().to_dense(DType::F32)?;
        let (out, cols) = weight.dims2()?;
        for p in placed {
            let rows = p.target.rows.clone().unwrap_or(0..out);
            check_shapes(p, rows.len(), cols)?;
            let mut part = weight.narrow(0, rows.start, rows.len())?;
            if p.target.swap_halves {
                part = swap_halves(&part)?;
            }
            let device = part.device().clone();
            let down = p.module.down.to_device(&device)?;
            let up = p.module.up.to_device(&device)?;
            // PEFT's order: the product first, then the scale, then the sum.
            let delta = (up.matmul(&down)? * (p.module.scale * strength))?;
            let mut new_part = (part + delta)?;
            if let Some(magnitude) = &p.module.magnitude {
                let norm = new_part.sqr()?.sum_keepdim(1)?.sqrt()?;
                let magnitude = magnitude.to_device(&device)?.reshape((rows.len(), 1))?;
                new_part = new_part.broadcast_mul(&(magnitude / norm)?)?;
            }
            if p.target.swap_halves {
                new_part = swap_halves(&new_part)?;
            }
            weight = replace_rows(&weight, rows, &new_part)?;
        }
        let dense = Linear::new(LinearWeight::dense(weight.to_dtype(self.dtype)?), None);
        let dense = if transposed {
            dense.laid_out_for_matmul()?
        } else {
            dense
        };
        let merged = match dense.weight() {
            LinearWeight::Dense { .. } => layer.with_weight(dense.weight().clone()),
            _ => dense,
        };
        Ok(merged)
    }

    /// `layer` with every placed module kept beside its weight.
    fn layer_with_adapters(
        &self,
        layer: &Linear,
        placed: &[Placed<'_>],
        strength: f64,
    ) -> Result<Linear> {
        let (out, cols) = match layer.weight() {
            LinearWeight::Dense {
                weight,
                transposed: true,
            } => {
                let (cols, out) = weight.dims2()?;
                (out, cols)
            }
            other => other.to_dense(DType::F32).and_then(|w| w.dims2())?,
        };
        let mut layer = layer.clone();
        for p in placed {
            let rows = p.target.rows.clone().unwrap_or(0..out);
            check_shapes(p, rows.len(), cols)?;
            let mut up = (&p.module.up * (p.module.scale * strength))?;
            if p.target.swap_halves {
                up = swap_halves(&up)?;
            }
            let rank = p.module.rank();
            let up = pad_rows(&up, rows, out, rank)?;
            layer = layer.with_adapter(LowRank {
                down: p
                    .module
                    .down
                    .to_dtype(self.dtype)?
                    .to_device(&self.device)?,
                up: up.to_dtype(self.dtype)?.to_device(&self.device)?,
            });
        }
        Ok(layer)
    }
}

fn check_shapes(p: &Placed<'_>, rows: usize, cols: usize) -> Result<()> {
    let (up_rows, down_cols) = (
        p.module.up.dims().first().copied().unwrap_or(0),
        p.module.down.dims().get(1).copied().unwrap_or(0),
    );
    if up_rows != rows || down_cols != cols {
        return Err(ModelError::InvalidArgument(format!(
            "layer `{}` is adapted as {up_rows}×{down_cols} (out × in), but the model's is {rows}×{cols}: a LoRA for another model size",
            p.module.name
        )));
    }
    if let Some(m) = &p.module.magnitude
        && m.elem_count() != rows
    {
        return Err(ModelError::InvalidArgument(format!(
            "layer `{}` has {} DoRA magnitudes for {rows} rows",
            p.module.name,
            m.elem_count()
        )));
    }
    Ok(())
}

/// The two halves of dimension 0 swapped.
fn swap_halves(t: &Tensor) -> candle_core::Result<Tensor> {
    let half = t.dim(0)? / 2;
    Tensor::cat(&[t.narrow(0, half, half)?, t.narrow(0, 0, half)?], 0)
}

/// `t` with rows `rows` replaced by `part`.
fn replace_rows(t: &Tensor, rows: Range<usize>, part: &Tensor) -> candle_core::Result<Tensor> {
    let n = t.dim(0)?;
    let mut pieces = Vec::with_capacity(3);
    if rows.start > 0 {
        pieces.push(t.narrow(0, 0, rows.start)?);
    }
    pieces.push(part.clone());
    if rows.end < n {
        pieces.push(t.narrow(0, rows.end, n - rows.end)?);
    }
    Tensor::cat(&pieces, 0)
}

/// `up` (`[rows.len(), rank]`) placed at `rows` of an `[out, rank]` matrix of zeros.
fn pad_rows(
    up: &Tensor,
    rows: Range<usize>,
    out: usize,
    rank: usize,
) -> candle_core::Result<Tensor> {
    let zeros = |n: usize| Tensor::zeros((n, rank), up.dtype(), &Device::Cpu);
    let mut pieces = Vec::with_capacity(3);
    if rows.start > 0 {
        pieces.push(zeros(rows.start)?);
    }
    pieces.push(up.to_device(&Device::Cpu)?);
    if rows.end < out {
        pieces.push(zeros(out - rows.end)?);
    }
    Tensor::cat(&pieces, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_modules_land_on_their_rows_and_bfl_names_on_whole_weights() {
        let map = targets(&Flux2Config::tiny());
        let get = |naming, name: &str| map.get(&(naming, name.to_owned())).cloned();
        let to_k = get(Naming::Diffusers, "transformer_blocks.0.attn.to_k").unwrap();
        assert_eq!(to_k.internal, "double_blocks.0.img_attn.qkv");
        assert_eq!(to_k.rows, Some(32..64));
        let add_v = get(Naming::Diffusers, "transformer_blocks.0.attn.add_v_proj").unwrap();
        assert_eq!(add_v.internal, "double_blocks.0.txt_attn.qkv");
        assert_eq!(add_v.rows, Some(64..96));
        let norm_out = get(Naming::Diffusers, "norm_out.linear").unwrap();
        assert!(norm_out.swap_halves);
        assert_eq!(norm_out.internal, "final_layer.adaLN_modulation.1");
        let linear1 = get(Naming::KohyaBfl, "single_blocks_0_linear1").unwrap();
        assert_eq!(linear1.internal, "single_blocks.0.linear1");
        assert_eq!(linear1.rows, None);
        assert!(get(Naming::Bfl, "double_blocks.0.img_attn.norm.query_norm").is_none());
    }
}
