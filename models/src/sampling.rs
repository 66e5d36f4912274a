//! The FLUX.2 schedule and the Euler flow-matching sampler.
//!
//! Schedule (diffusers `compute_empirical_mu` + `FlowMatchEulerDiscreteScheduler`): μ from the
//! image-token count and the step count, σ_i = linspace(1, 1/S, S) mapped through the exponential
//! time shift `e^μ / (e^μ + (1/t − 1))`, then a final 0. The model is called with σ (×1000 inside).
//!
//! Euler step as diffusers computes it: `x ← x + (σ_{i+1} − σ_i)·v` in f32 with the latent kept in the
//! model's dtype between steps (so f32 runs are exact and bf16 runs round where diffusers rounds).
//! Classifier-free guidance (base models): `v = v_neg + g·(v_pos − v_neg)`; distilled models run one
//! pass per step. Latents are the normalised token grid `[B, 128, h, w]`; see [`crate::latent`].

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand_core::{RngCore as _, SeedableRng as _};

use crate::error::{ModelError, Result, read_json};
use crate::flux2::{Flux2Transformer, image_ids, text_ids};
use crate::latent::{pack, unpack};

/// The parts of `scheduler/scheduler_config.json` the sampler honours.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct SchedulerConfig {
    /// Training timesteps (σ·1000 is the timestep).
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    /// Whether μ-based (resolution-dependent) shifting is used; FLUX.2 uses it.
    #[serde(default = "default_true")]
    pub use_dynamic_shifting: bool,
    /// `exponential` (FLUX.2) or `linear`.
    #[serde(default = "default_shift_type")]
    pub time_shift_type: String,
    /// Static shift used when dynamic shifting is off.
    #[serde(default = "default_shift")]
    pub shift: f64,
    /// Optional terminal stretch.
    #[serde(default)]
    pub shift_terminal: Option<f64>,
}

fn default_train_steps() -> usize {
    1000
}
fn default_true() -> bool {
    true
}
fn default_shift_type() -> String {
    "exponential".into()
}
fn default_shift() -> f64 {
    3.0
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            use_dynamic_shifting: true,
            time_shift_type: default_shift_type(),
            shift: 3.0,
            shift_terminal: None,
        }
    }
}

impl SchedulerConfig {
    /// Reads `scheduler_config.json`.
    ///
    /// Options that change the schedule in ways this sampler does not implement (Karras,
    /// exponential or beta sigmas, inverted sigmas, stochastic sampling) are refused rather than
    /// silently ignored, so a checkpoint never samples differently from diffusers without notice.
    pub fn load(path: &Path) -> Result<Self> {
        let raw: serde_json::Value = read_json(path)?;
        for flag in [
            "use_karras_sigmas",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "invert_sigmas",
            "stochastic_sampling",
        ] {
            if raw.get(flag).and_then(serde_json::Value::as_bool) == Some(true) {
                return Err(ModelError::Config {
                    path: path.to_path_buf(),
                    reason: format!("scheduler option {flag} = true is not supported"),
                });
            }
        }
        serde_json::from_value(raw).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// σ values for `steps` steps over `image_tokens` noisy tokens: `steps + 1` values ending in 0.
    pub fn sigmas(&self, image_tokens: usize, steps: usize) -> Vec<f64> {
        let mu = empirical_mu(image_tokens, steps);
        let mut sigmas: Vec<f64> = (0..steps)
            .map(|i| {
                // np.linspace(1.0, 1/steps, steps), cast to f32 as diffusers does.
                let t = if steps > 1 {
                    1.0 + (1.0 / steps as f64 - 1.0) * i as f64 / (steps - 1) as f64
                } else {
                    1.0
                };
                let t = f64::from(t as f32);
                if self.use_dynamic_shifting {
                    match self.time_shift_type.as_str() {
                        "linear" => mu / (mu + (1.0 / t - 1.0)),
                        _ => mu.exp() / (mu.exp() + (1.0 / t - 1.0)),
                    }
                } else {
                    self.shift * t / (1.0 + (self.shift - 1.0) * t)
                }
            })
            .collect();
        if let (Some(terminal), Some(&last)) = (self.shift_terminal, sigmas.last()) {
            let stretch = (1.0 - last) / (1.0 - terminal);
            for s in &mut sigmas {
                *s = 1.0 - (1.0 - *s) / stretch;
            }
        }
        // The scheduler stores σ in f32.
        let mut out: Vec<f64> = sigmas.into_iter().map(|s| f64::from(s as f32)).collect();
        out.push(0.0);
        out
    }
}

/// FLUX.2's empirical μ (diffusers `compute_empirical_mu`, BFL `get_schedule`).
pub fn empirical_mu(image_tokens: usize, steps: usize) -> f64 {
    let (a1, b1) = (8.738_095_24e-5, 1.898_333_33);
    let (a2, b2) = (0.000_169_27, 0.456_666_66);
    let n = image_tokens as f64;
    if image_tokens > 4300 {
        return a2 * n + b2;
    }
    let m_200 = a2 * n + b2;
    let m_10 = a1 * n + b1;
    let a = (m_200 - m_10) / 190.0;
    let b = m_200 - 200.0 * a;
    a * steps as f64 + b
}

/// Standard-normal noise `[batch, channels, h, w]` from a seed, identical on every platform
/// (ChaCha8 stream, Box–Muller), so workflows reproduce across machines.
pub fn seeded_noise(
    seed: u64,
    shape: (usize, usize, usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let (b, c, h, w) = shape;
    let n = b * c * h * w;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // 53-bit uniforms in (0, 1]; the +1 keeps ln away from 0.
        let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        values.push((r * angle.cos()) as f32);
        values.push((r * angle.sin()) as f32);
    }
    values.truncate(n);
    Ok(Tensor::from_vec(values, (b, c, h, w), device)?)
}

/// The timestep tensor `[batch]` the model gets for σ, rounded as diffusers rounds it: the
/// scheduler's timestep `1000·σ` (f32) cast to the latent dtype, then divided by 1000 in that dtype
/// (`timestep = t.expand(B).to(latents.dtype)`, `transformer(timestep=timestep / 1000)`).
pub fn model_timestep(sigma: f64, batch: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let t = Tensor::full((sigma as f32) * 1000.0, batch, device)?.to_dtype(dtype)?;
    Ok((t / 1000.0)?)
}

/// Where sampling starts from.
#[derive(Debug, Clone)]
pub enum Start {
    /// Pure noise `[B, 128, h, w]` (text-to-image).
    Noise(Tensor),
    /// img2img: a clean latent `[B, 128, h, w]` noised with `noise` to the σ where the last
    /// `denoise` fraction of the schedule begins (diffusers' `strength`).
    Image {
        /// Clean normalised latent.
        latent: Tensor,
        /// Noise of the same shape.
        noise: Tensor,
        /// Fraction of the schedule to run, in (0, 1].
        denoise: f64,
    },
}

/// Everything one sampling run needs besides the model.
#[derive(Debug, Clone)]
pub struct SampleRequest<'a> {
    /// Conditioning `[B, L, C]` from the text encoder.
    pub positive: &'a Tensor,
    /// Negative conditioning for CFG; `None` disables CFG. Ignored for step-distilled models and
    /// when `guidance` ≤ 1, as in diffusers. diffusers' klein pipeline uses the empty prompt:
    /// see [`crate::Bundle::negative_conditioning`].
    pub negative: Option<&'a Tensor>,
    /// Starting point.
    pub start: Start,
    /// Number of steps of the full schedule.
    pub steps: usize,
    /// CFG scale (used only with `negative` and when > 1) and guidance-embedder value.
    pub guidance: f64,
    /// Scheduler settings.
    pub scheduler: &'a SchedulerConfig,
    /// Reference images for editing (FLUX.2 multi-reference conditioning): clean normalised latents
    /// `[B, C, h_k, w_k]` from [`crate::Vae::encode`], any sizes. Their tokens follow the noisy ones
    /// with time ids 10, 20, …, are fed unchanged every step, and their outputs are dropped.
    pub references: &'a [Tensor],
}

/// Runs the sampler and returns the final normalised latent `[B, 128, h, w]` in the model's dtype.
///
/// `progress(step, total)` is called after each step (1-based); returning `ControlFlow::Break`
/// stops between steps with [`ModelError::Cancelled`].
pub fn sample(
    model: &Flux2Transformer,
    req: &SampleRequest<'_>,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Tensor> {
    if req.steps == 0 {
        return Err(ModelError::InvalidArgument(
            "steps must be at least 1".into(),
        ));
    }
    let device = model.device().clone();
    let template = match &req.start {
        Start::Noise(n) => n,
        Start::Image { noise, .. } => noise,
    };
    let (batch, channels, grid_h, grid_w) = template.dims4()?;
    if batch == 0 || grid_h == 0 || grid_w == 0 {
        return Err(ModelError::InvalidArgument(format!(
            "latent of shape {:?} holds no values",
            template.dims()
        )));
    }
    if channels != model.config().in_channels {
        return Err(ModelError::InvalidArgument(format!(
            "latent has {channels} channels, the model expects {}",
            model.config().in_channels
        )));
    }
    let all_sigmas = req.scheduler.sigmas(grid_h * grid_w, req.steps);
    // diffusers keeps the latents in the pipeline's dtype between steps (the text encoder's, which
    // is the model's): noise is drawn in it and each Euler step is computed in f32, then cast back.
    let latent_dtype = model.dtype();
    let (mut x, sigmas) = match &req.start {
        Start::Noise(noise) => (noise.to_dtype(latent_dtype)?, all_sigmas.as_slice()),
        Start::Image {
            latent,
            noise,
            denoise,
        } => {
            // 0 runs no step and returns the start latent, as a denoise too small for one step
            // of the schedule does.
            if !(0.0..=1.0).contains(denoise) {
                return Err(ModelError::InvalidArgument(format!(
                    "denoise {denoise} must be in [0, 1]"
                )));
            }
            // diffusers img2img: init_timestep = min(steps·strength, steps); t_start = steps − init_timestep.
            let init_steps = ((req.steps as f64 * denoise) as usize).min(req.steps);
            let start = req.steps - init_steps;
            let sigmas = all_sigmas.get(start..).unwrap_or(&[]);
            let sigma0 = sigmas.first().copied().unwrap_or(0.0);
            let x0 = latent.to_dtype(DType::F32)?;
            let x = ((x0 * (1.0 - sigma0))? + (noise.to_dtype(DType::F32)? * sigma0)?)?
                .to_dtype(latent_dtype)?;
            (x, sigmas)
        }
    };
    let total = sigmas.len().saturating_sub(1);
    let positive = req.positive.to_dtype(model.dtype())?;
    // diffusers: `do_classifier_free_guidance = guidance_scale > 1 and not is_distilled`.
    let use_cfg = req.negative.is_some() && req.guidance > 1.0 && !model.is_distilled();
    let negative = match req.negative {
        Some(n) if use_cfg => Some(n.to_dtype(model.dtype())?),
        _ => None,
    };
    let txt_len = positive.dim(1)?;
    if let Some(n) = &negative
        && n.dim(1)? != txt_len
    {
        return Err(ModelError::InvalidArgument(
            "positive and negative conditioning lengths differ".into(),
        ));
    }
    // Reference tokens and their position ids (t = 10·(k+1), h, w, 0), after the noisy tokens.
    let mut all_ids = vec![image_ids(grid_h, grid_w, &device)?];
    let mut ref_tokens = Vec::with_capacity(req.references.len());
    for (k, reference) in req.references.iter().enumerate() {
        let (ref_batch, ref_channels, ref_h, ref_w) = reference.dims4()?;
        if ref_batch != batch || ref_channels != channels || ref_h == 0 || ref_w == 0 {
            return Err(ModelError::InvalidArgument(format!(
                "reference {k} is [{ref_batch}, {ref_channels}, ..], expected [{batch}, {channels}, ..]"
            )));
        }
        let time_id = Tensor::new(&[10.0 * (k as f32 + 1.0), 0.0, 0.0, 0.0], &device)?;
        all_ids.push(image_ids(ref_h, ref_w, &device)?.broadcast_add(&time_id)?);
        ref_tokens.push(pack(reference)?.to_dtype(model.dtype())?);
    }
    let n_noisy = grid_h * grid_w;
    let rope = model.rope_tables(&text_ids(txt_len, &device)?, &Tensor::cat(&all_ids, 0)?)?;
    let guidance_t = Tensor::full(req.guidance as f32, batch, &device)?;
    let guidance = if model.config().guidance_embeds {
        Some(&guidance_t)
    } else {
        None
    };

    for (i, pair) in sigmas.windows(2).enumerate() {
        let [sigma, sigma_next] = pair else { continue };
        let timestep = model_timestep(*sigma, batch, latent_dtype, &device)?;
        let noisy = pack(&x)?;
        let tokens = if ref_tokens.is_empty() {
            noisy
        } else {
            let mut parts = vec![noisy];
            parts.extend(ref_tokens.iter().cloned());
            Tensor::cat(&parts, 1)?
        };
        let forward = |cond: &Tensor| -> Result<Tensor> {
            let v = model
                .forward_with_rope(&tokens, cond, &rope, &timestep, guidance)
                .map_err(|err| {
                    // A forward call stopped between blocks (see `with_interrupt`).
                    if model.interrupted() {
                        ModelError::Cancelled {
                            completed_steps: i,
                            total_steps: total,
                        }
                    } else {
                        ModelError::from(err)
                    }
                })?;
            // Only the noisy tokens' velocities matter; reference outputs are dropped.
            Ok(v.narrow(1, 0, n_noisy)?)
        };
        // As diffusers: CFG in the model's dtype, then `sample.f32() + (σ' − σ)·v` where the
        // product keeps v's dtype, and the result cast back to the latent dtype.
        let mut v = forward(&positive)?;
        if let Some(neg) = &negative {
            let v_neg = forward(neg)?;
            v = (&v_neg + ((v - &v_neg)? * req.guidance)?)?;
        }
        let step = (unpack(&v, grid_h, grid_w)? * (sigma_next - sigma))?;
        x = (x.to_dtype(DType::F32)? + step.to_dtype(DType::F32)?)?.to_dtype(latent_dtype)?;
        if progress(i + 1, total).is_break() {
            return Err(ModelError::Cancelled {
                completed_steps: i + 1,
                total_steps: total,
            });
        }
    }
    Ok(x)
}
