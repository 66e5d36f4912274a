//! Compile: a transformer prepared for repeated sampling at one size.
//!
//! What a compiled model does differently from the eager one, all without changing the maths:
//! - optionally ([`CompileOptions::relayout_weights`]), every projection weight is stored
//!   pre-transposed as a contiguous `[in, out]` matrix ([`crate::linear::Linear`]);
//! - the per-step modulation vectors (timestep embedding, the shared double/single/final
//!   modulation projections) are computed once per distinct timestep and guidance: eagerly for
//!   the schedule the model will be sampled with, and memoised for any other;
//! - the text projection (`context_embedder`, a `[L, 7680] × [7680, 3072]` GEMM at klein widths)
//!   is computed once per conditioning tensor instead of once per step.
//!
//! - on a CUDA device (bf16/f16/f32, head dim ≤ 64 or a multiple of 64), the blocks run fused
//!   kernels (`veetance_gpu::fused`: LayerNorm + modulate, QK-RMSNorm + RoPE into the layout
//!   attention reads, gate + residual, SwiGLU), and the step is captured as a CUDA graph and
//!   replayed ([`super::cuda_graph`]).
//!
//! On CPU, results match the eager model up to GEMM summation order (tests check < 1e-5
//! relative); the fused CUDA kernels round once where candle's op chain rounds per op
//! (models/tests/cuda.rs checks both against the f32 CPU model).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Tensor, TensorId};

use super::model::{Flux2Transformer, Modulation};
use crate::error::Result;

/// Memoised modulation entries beyond which new timesteps are computed but not stored.
const MAX_MODULATION_ENTRIES: usize = 1024;
/// Text projections kept (positive and negative conditioning of a CFG run).
const MAX_TEXT_ENTRIES: usize = 2;

/// What to prepare for.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Latent token grid the model will be sampled at (image side / pixels per token).
    pub grid: (usize, usize),
    /// The σ values the sampler will pass (the schedule for the grid and step count, e.g.
    /// [`crate::SchedulerConfig::sigmas`]); their modulation is precomputed. σ = 0 is skipped.
    pub sigmas: Vec<f64>,
    /// Guidance values to precompute for (only matters for models with a guidance embedder).
    pub guidance: Option<f64>,
    /// Store projection weights pre-transposed (`[in, out]`). The GEMM alone is 4–7 % faster
    /// that way at klein widths on the development CPU (`examples/gemm_layout.rs`), but whole
    /// sampling runs showed no gain within the noise of a shared machine, and the compiled
    /// clone then holds a second copy of every projection weight, so it is off by default.
    pub relayout_weights: bool,
}

impl CompileOptions {
    /// What the Compile node prepares for: `steps` steps of `scheduler`'s schedule at `grid`,
    /// `guidance` for models with a guidance embedder, weights shared (re-laid-out weights double
    /// the memory and showed no end-to-end gain).
    pub fn for_schedule(
        scheduler: &crate::SchedulerConfig,
        grid: (usize, usize),
        steps: usize,
        guidance: Option<f64>,
    ) -> Self {
        CompileOptions {
            grid,
            sigmas: scheduler.sigmas(grid.0 * grid.1, steps),
            guidance,
            relayout_weights: false,
        }
    }
}

type ModulationKey = (Vec<u32>, Option<Vec<u32>>);

/// The caches a compiled transformer carries; shared by clones.
#[derive(Debug, Default)]
pub struct CompiledState {
    modulations: Mutex<HashMap<ModulationKey, Arc<Modulation>>>,
    texts: Mutex<Vec<(TensorId, Tensor)>>,
    grid: (usize, usize),
    /// Whether the model runs the fused CUDA kernels (set when compiling on a CUDA device).
    fused: bool,
    /// Captured CUDA graphs of the step, by input size (used when `fused`).
    graphs: super::cuda_graph::StepGraphs,
}

fn bits(t: &Tensor) -> candle_core::Result<Vec<u32>> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f32::to_bits)
        .collect())
}

impl CompiledState {
    /// The modulation for this timestep and guidance, computed by `compute` on a miss.
    pub(crate) fn modulation(
        &self,
        timestep: &Tensor,
        guidance: Option<&Tensor>,
        compute: impl FnOnce() -> candle_core::Result<Modulation>,
    ) -> candle_core::Result<Arc<Modulation>> {
        let key = (bits(timestep)?, guidance.map(bits).transpose()?);
        if let Some(found) = self
            .modulations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(found.clone());
        }
        let computed = Arc::new(compute()?);
        let mut map = self
            .modulations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() < MAX_MODULATION_ENTRIES {
            map.insert(key, computed.clone());
        }
        Ok(computed)
    }

    /// The projected text for this conditioning tensor, computed by `compute` on a miss.
    pub(crate) fn text(
        &self,
        txt: &Tensor,
        compute: impl FnOnce() -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let id = txt.id();
        if let Some((_, found)) = self
            .texts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(key, _)| *key == id)
        {
            return Ok(found.clone());
        }
        let computed = compute()?;
        let mut texts = self.texts.lock().unwrap_or_else(PoisonError::into_inner);
        if texts.len() >= MAX_TEXT_ENTRIES {
            texts.remove(0);
        }
        // Keyed by tensor identity: the sampler passes the same conditioning tensor every step.
        // Holding the projected tensor keeps the id from being reused while the entry lives.
        texts.push((id, computed.clone()));
        Ok(computed)
    }

    /// Number of memoised modulation entries.
    pub fn n_modulations(&self) -> usize {
        self.modulations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The grid the model was compiled for.
    pub fn grid(&self) -> (usize, usize) {
        self.grid
    }

    /// Whether the compiled model runs the fused CUDA kernels (LayerNorm + modulate, QK-norm +
    /// RoPE, gate + residual, SwiGLU; `veetance_gpu::fused`).
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// The step's CUDA graphs.
    pub fn graphs(&self) -> &super::cuda_graph::StepGraphs {
        &self.graphs
    }
}

impl Flux2Transformer {
    /// A clone prepared for repeated sampling (see the module docs): modulation precomputed for
    /// `options.sigmas`, and, if asked, weights re-laid out.
    ///
    /// With `relayout_weights` the clone holds its own copy of the projection weights (the
    /// eager model's stay as they are), doubling the transformer's weight memory while both are
    /// alive; without it the clone shares every weight.
    pub fn compile(&self, options: &CompileOptions) -> Result<Self> {
        let cfg = self.config();
        // The fused kernels hold a head's q/k in one warp and take 16/32-bit floats; anything
        // else keeps candle's ops.
        let fused = self.device().is_cuda()
            && veetance_gpu::is_built()
            && veetance_gpu::fused::supports_head_dim(cfg.attention_head_dim)
            && matches!(self.dtype(), DType::BF16 | DType::F16 | DType::F32);
        let state = Arc::new(CompiledState {
            grid: options.grid,
            fused,
            ..CompiledState::default()
        });
        let base = if options.relayout_weights {
            self.with_projections_laid_out()?
        } else {
            self.clone()
        };
        let compiled = base.with_compiled_state(state.clone());
        let device = self.device().clone();
        let guidance = match options.guidance {
            Some(g) if self.config().guidance_embeds => Some(Tensor::new(&[g as f32], &device)?),
            _ => None,
        };
        for &sigma in &options.sigmas {
            // The final sigma (0) is never a model input.
            if sigma <= 0.0 {
                continue;
            }
            // Exactly the value the sampler passes.
            let timestep = crate::sampling::model_timestep(sigma, 1, self.dtype(), &device)?;
            state.modulation(&timestep, guidance.as_ref(), || {
                compiled.modulation(&timestep, guidance.as_ref())
            })?;
        }
        Ok(compiled)
    }

    /// A clone compiled as the Compile node makes it: modulation precomputed for `steps` steps of
    /// `scheduler`'s schedule at `grid`, the `guidance` a model with a guidance embedder will
    /// get, weights shared (re-laid-out weights double the memory for no measured gain).
    pub fn compile_for(
        &self,
        scheduler: &crate::SchedulerConfig,
        grid: (usize, usize),
        steps: usize,
        guidance: Option<f64>,
    ) -> Result<Self> {
        self.compile(&CompileOptions::for_schedule(
            scheduler, grid, steps, guidance,
        ))
    }

    /// The compiled caches, if this model was compiled.
    pub fn compiled_state(&self) -> Option<&Arc<CompiledState>> {
        self.compiled_ref()
    }
}
