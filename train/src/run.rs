//! The training run: VAE, latent statistics, then transformer + text encoder with flow matching.
//!
//! Phases, each resumable from the checkpoint directory (`state.json` says where it stopped):
//!
//! 1. **VAE**: reconstruction (L1 + L2) of sampled latents plus a small KL term, AdamW.
//! 2. **Statistics**: the BatchNorm running mean/variance of the patchified posterior means over a
//!    few thousand scenes; FLUX.2 normalises latents with them.
//! 3. **Transformer + text encoder**, jointly: rectified-flow (flow-matching) loss on the velocity
//!    `noise − x₀` at `x_t = (1 − t)·x₀ + t·noise`, `t` logit-normal, captions dropped 10 % of the
//!    time so that CFG works; EMA of the weights, which is what gets exported.
//!
//! Every step rebuilds the models from the variables (see [`crate::params`]) with the models crate's
//! own constructors in differentiable mode, so the trained code is the inference code.
//! Adam's moment estimates are not checkpointed (candle cannot serialise them): a resumed run
//! restarts them, which costs a few hundred steps of re-warming, not correctness.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};
use veetance_models::flux2::{CheckpointLayout, image_ids, text_ids};
use veetance_models::latent::pack;
use veetance_models::qwen3::{ChatTemplate, PromptTokenizer, Qwen3Encoder, qwen3_tensor_specs};
use veetance_models::{Flux2Transformer, QuantMode, Vae};
use veetance_scenes::Scene;

use crate::curve::LossLog;
use crate::params::{Ema, Params};
use crate::{TrainError, tiny};

/// Share of the time budget the VAE phase may use.
const VAE_SHARE: f64 = 0.3;

/// What to train and where.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Checkpoints, loss curve and logs go here.
    pub out_dir: PathBuf,
    /// Where the finished checkpoint directory is written (diffusers layout).
    pub export_dir: PathBuf,
    /// VAE optimiser steps.
    pub vae_steps: usize,
    /// Transformer + text-encoder optimiser steps.
    pub dit_steps: usize,
    /// VAE batch size.
    pub vae_batch: usize,
    /// Transformer batch size.
    pub dit_batch: usize,
    /// Peak learning rate of the VAE.
    pub vae_lr: f64,
    /// Peak learning rate of the transformer and text encoder.
    pub dit_lr: f64,
    /// Scenes of step `s` use seeds `seed + s·batch + i`.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Continue from `out_dir`'s checkpoint if there is one.
    pub resume: bool,
    /// Print a log line every this many steps (the progress bar updates every step).
    pub log_every: usize,
    /// Wall-clock budget for the whole run in seconds: the VAE phase stops at 30 % of it, the
    /// transformer phase at 100 %, each then finishing normally (checkpoint, export). `None`: no limit.
    pub time_budget_s: Option<f64>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            out_dir: PathBuf::from("target/tiny-run"),
            export_dir: PathBuf::from("models/tiny"),
            vae_steps: 3000,
            dit_steps: 6000,
            vae_batch: 64,
            dit_batch: 128,
            vae_lr: 1e-3,
            dit_lr: 5e-4,
            seed: 1,
            checkpoint_every: 1000,
            resume: true,
            log_every: 100,
            time_budget_s: None,
        }
    }
}

/// Linear warm-up over `warmup` steps, then cosine decay to 10 % of the peak.
///
/// `time_fraction` is the share of the phase's wall-clock budget already used (0 without a
/// budget): the decay follows whichever of steps and time is further along, so a run cut short by
/// its budget still ends at a low learning rate.
pub fn learning_rate(
    step: usize,
    total: usize,
    warmup: usize,
    peak: f64,
    time_fraction: f64,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64)
        .max(time_fraction)
        .min(1.0);
    let floor = 0.1 * peak;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// CHW pixels and captions of a run of scenes.
type RenderedPart = (Vec<f32>, Vec<String>);

/// Renders scenes `seeds` to images `[B, 3, 64, 64]` in [-1, 1] and their captions.
pub fn scene_batch(
    seeds: std::ops::Range<u64>,
    device: &Device,
) -> Result<(Tensor, Vec<String>), TrainError> {
    let side = tiny::IMAGE_SIDE_PX;
    let n = (seeds.end - seeds.start) as usize;
    let seeds: Vec<u64> = seeds.collect();
    // Rendering is CPU work next to a GPU step; spread it over the cores.
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(16);
    let chunk = n.div_ceil(threads).max(1);
    let rendered: Vec<Result<RenderedPart, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<RenderedPart, TrainError> {
                    let mut pixels = Vec::with_capacity(part.len() * 3 * side * side);
                    let mut captions = Vec::with_capacity(part.len());
                    for &seed in part {
                        let scene = Scene::random(seed);
                        let image = scene.render(side)?;
                        // HWC u8 → CHW in [-1, 1].
                        for ch in 0..3 {
                            pixels.extend(
                                image
                                    .rgb
                                    .iter()
                                    .skip(ch)
                                    .step_by(3)
                                    .map(|&v| f32::from(v) / 127.5 - 1.0),
                            );
                        }
                        captions.push(scene.caption());
                    }
                    Ok((pixels, captions))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TrainError::Config("scene thread panicked".into())))
            })
            .collect()
    });
    let mut pixels = Vec::with_capacity(n * 3 * side * side);
    let mut captions = Vec::with_capacity(n);
    for part in rendered {
        let (p, c) = part?;
        pixels.extend(p);
        captions.extend(c);
    }
    Ok((
        Tensor::from_vec(pixels, (n, 3, side, side), device)?,
        captions,
    ))
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
fn clip_gradients(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<f64, TrainError> {
    let mut squares = Vec::with_capacity(vars.len());
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            squares.push(g.sqr()?.sum_all()?);
        }
    }
    if squares.is_empty() {
        return Ok(0.0);
    }
    let norm = f64::from(Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()?).sqrt();
    if norm.is_finite() && norm > max_norm {
        let scale = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct RunState {
    /// "vae", "dit" or "done".
    phase: String,
    /// Completed steps of that phase.
    step: usize,
}

fn read_state(dir: &Path) -> Option<RunState> {
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(dir: &Path, phase: &str, step: usize) -> Result<(), TrainError> {
    let state = RunState {
        phase: phase.into(),
        step,
    };
    let path = dir.join("state.json");
    let text = serde_json::to_string(&state)
        .map_err(|e| TrainError::Config(format!("state.json: {e}")))?;
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
}

fn progress_bar(len: usize, prefix: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix:>5} [{bar:30}] {pos}/{len} {msg} ({elapsed} / eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_string());
    bar
}

/// Trainable VAE tensor specs (the BatchNorm statistics are computed, not learned).
pub fn vae_trainable_specs(
    cfg: &veetance_models::VaeConfig,
) -> Vec<veetance_models::weights::TensorSpec> {
    cfg.tensor_specs()
        .into_iter()
        .filter(|s| !s.name.starts_with("bn."))
        .collect()
}

/// BatchNorm statistics under their checkpoint names.
pub fn bn_tensors(mean: Tensor, var: Tensor) -> HashMap<String, Tensor> {
    HashMap::from([
        ("bn.running_mean".to_string(), mean),
        ("bn.running_var".to_string(), var),
    ])
}

/// Builds the VAE from its parameters and BatchNorm statistics.
pub fn build_vae(
    params: &Params,
    bn: &HashMap<String, Tensor>,
    differentiable: bool,
    device: &Device,
) -> Result<Vae, TrainError> {
    let vae = Vae::from_weights(
        &params.weights(bn)?,
        tiny::vae_config()?,
        DType::F32,
        device,
    )?;
    Ok(vae.with_differentiable(differentiable))
}

/// Trains the VAE; returns its parameters.
fn train_vae(
    opts: &TrainOptions,
    device: &Device,
    log: &mut LossLog,
    run_started: Instant,
) -> Result<Params, TrainError> {
    let cfg = tiny::vae_config()?;
    let mut params = Params::new(&vae_trainable_specs(&cfg), device)?;
    let ckpt = opts.out_dir.join("vae.safetensors");
    let mut start = 0;
    if opts.resume
        && let Some(state) = read_state(&opts.out_dir)
        && ckpt.exists()
    {
        params.load(&ckpt)?;
        start = if state.phase == "vae" {
            state.step
        } else {
            opts.vae_steps
        };
    }
    eprintln!(
        "VAE: {} parameters, steps {start}..{}",
        params.count(),
        opts.vae_steps
    );
    if start >= opts.vae_steps {
        return Ok(params);
    }
    let latent = cfg.latent_channels;
    let placeholder_bn = bn_tensors(
        Tensor::zeros(latent * 4, DType::F32, device)?,
        Tensor::ones(latent * 4, DType::F32, device)?,
    );
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: opts.vae_lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let bar = progress_bar(opts.vae_steps, "vae");
    bar.set_position(start as u64);
    let started = Instant::now();
    for step in start..opts.vae_steps {
        let time_fraction = opts.time_budget_s.map_or(0.0, |b| {
            run_started.elapsed().as_secs_f64() / (VAE_SHARE * b)
        });
        let lr = learning_rate(step, opts.vae_steps, 200, opts.vae_lr, time_fraction);
        opt.set_learning_rate(lr);
        let first = opts.seed + (step * opts.vae_batch) as u64;
        let (images, _) = scene_batch(first..first + opts.vae_batch as u64, device)?;
        let vae = build_vae(&params, &placeholder_bn, true, device)?;
        let moments = vae.encode_moments(&images)?;
        let mean = moments.narrow(1, 0, latent)?;
        let logvar = moments.narrow(1, latent, latent)?.clamp(-30f32, 20f32)?;
        let std = (&logvar * 0.5)?.exp()?;
        let z = (&mean + std.mul(&mean.randn_like(0.0, 1.0)?)?)?;
        let recon = vae.decode_raw(&z)?;
        let diff = (recon - &images)?;
        let rec = (diff.abs()?.mean_all()? + diff.sqr()?.mean_all()?)?;
        let kl = ((mean.sqr()? + logvar.exp()?)? - 1.0)?
            .sub(&logvar)?
            .mean_all()?
            .affine(0.5, 0.0)?;
        // A small KL weight keeps the latent space smooth without blurring the reconstruction.
        let loss = (&rec + (kl * 1e-3)?)?;
        let mut grads = loss.backward()?;
        clip_gradients(&mut grads, &vars, 1.0)?;
        opt.step(&grads)?;
        let value = f64::from(rec.to_scalar::<f32>()?);
        log.push("vae", step + 1, value, lr);
        bar.set_message(format!("rec {value:.4}"));
        bar.inc(1);
        if (step + 1) % opts.log_every == 0 {
            eprintln!(
                "vae step {} rec {value:.5} lr {lr:.2e} {:.1}s",
                step + 1,
                started.elapsed().as_secs_f64()
            );
        }
        let out_of_time = opts
            .time_budget_s
            .is_some_and(|b| run_started.elapsed().as_secs_f64() > VAE_SHARE * b);
        if (step + 1) % opts.checkpoint_every == 0 || step + 1 == opts.vae_steps || out_of_time {
            params.save(&ckpt)?;
            write_state(&opts.out_dir, "vae", step + 1)?;
            log.save(&opts.out_dir)?;
        }
        if out_of_time {
            eprintln!("VAE phase out of time after {} steps", step + 1);
            // Later phases treat the VAE as finished.
            write_state(&opts.out_dir, "dit", 0)?;
            break;
        }
    }
    bar.finish();
    Ok(params)
}

/// Per-channel mean and variance of the patchified posterior means over `n_batches × batch` scenes.
fn latent_statistics(vae: &Vae, device: &Device) -> Result<(Tensor, Tensor), TrainError> {
    let n_batches = 32;
    let batch = 64;
    let mut sum: Option<Tensor> = None;
    let mut sum_sq: Option<Tensor> = None;
    let mut count = 0usize;
    // Seeds far from the training range: statistics of unseen scenes.
    let base = 1u64 << 40;
    for b in 0..n_batches {
        let first = base + (b * batch) as u64;
        let (images, _) = scene_batch(first..first + batch as u64, device)?;
        let raw = vae.encode_raw(&images)?;
        let patched = candle_nn::ops::pixel_unshuffle(&raw, 2)?;
        let (n, c, h, w) = patched.dims4()?;
        let flat = patched.transpose(0, 1)?.reshape((c, n * h * w))?;
        let s = flat.sum(D::Minus1)?;
        let s2 = flat.sqr()?.sum(D::Minus1)?;
        sum = Some(match sum {
            Some(acc) => (acc + s)?,
            None => s,
        });
        sum_sq = Some(match sum_sq {
            Some(acc) => (acc + s2)?,
            None => s2,
        });
        count += n * h * w;
    }
    let (Some(sum), Some(sum_sq)) = (sum, sum_sq) else {
        return Err(TrainError::Config("no statistics batches".into()));
    };
    let mean = (sum / count as f64)?;
    let var = ((sum_sq / count as f64)? - mean.sqr()?)?.relu()?;
    Ok((mean, var))
}

/// Token ids and masks `[B, L]` of chat-templated captions.
pub fn tokenize(
    template: &ChatTemplate,
    tokenizer: &PromptTokenizer,
    captions: &[String],
    device: &Device,
) -> Result<(Tensor, Tensor), TrainError> {
    let len = tiny::MAX_TEXT_TOKENS;
    let mut ids = Vec::with_capacity(captions.len() * len);
    let mut mask = Vec::with_capacity(captions.len() * len);
    for c in captions {
        let text = template.render_user_prompt(c)?;
        let (i, m) = tokenizer.encode_padded(&text, len)?;
        ids.extend(i);
        mask.extend(m);
    }
    Ok((
        Tensor::from_vec(ids, (captions.len(), len), device)?,
        Tensor::from_vec(mask, (captions.len(), len), device)?,
    ))
}

/// Everything the transformer phase trains, built from variables.
pub struct Denoiser {
    /// Qwen3 parameters (transformers names, `model.` prefix).
    pub text: Params,
    /// Transformer parameters (diffusers names).
    pub transformer: Params,
}

impl Denoiser {
    /// Fresh parameters.
    pub fn new(device: &Device) -> Result<Self, TrainError> {
        let text_cfg = tiny::text_config()?;
        let n_layers = text_cfg.num_hidden_layers;
        let text_specs = qwen3_tensor_specs(&text_cfg, "model.", n_layers, true);
        let dit_specs = tiny::transformer_config()?.diffusers_tensor_specs();
        Ok(Self {
            text: Params::new(&text_specs, device)?,
            transformer: Params::new(&dit_specs, device)?,
        })
    }

    /// The text encoder and transformer over the current variables.
    pub fn build(
        &self,
        differentiable: bool,
        device: &Device,
    ) -> Result<(Qwen3Encoder, Flux2Transformer), TrainError> {
        let empty = HashMap::new();
        let text = Qwen3Encoder::from_weights(
            &self.text.weights(&empty)?,
            tiny::text_config()?,
            &tiny::TEXT_OUT_LAYERS,
            DType::F32,
            device,
            QuantMode::Exact,
        )?
        .with_differentiable(differentiable);
        let dit = Flux2Transformer::from_weights(
            &self.transformer.weights(&empty)?,
            tiny::transformer_config()?,
            CheckpointLayout::Diffusers,
            DType::F32,
            device,
            QuantMode::Exact,
        )?
        .with_differentiable(differentiable);
        Ok((text, dit))
    }

    /// All variables.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.text.vars();
        v.extend(self.transformer.vars());
        v
    }
}

/// One flow-matching loss evaluation (mean squared velocity error) for a batch.
#[allow(clippy::too_many_arguments)]
pub fn flow_matching_loss(
    text: &Qwen3Encoder,
    dit: &Flux2Transformer,
    ids: &Tensor,
    mask: &Tensor,
    x0: &Tensor,
    t: &Tensor,
    noise: &Tensor,
    rope: &veetance_models::flux2::RopeTables,
) -> Result<Tensor, TrainError> {
    let cond = text.forward(ids, mask)?;
    let t4 = t.reshape((t.dim(0)?, 1, 1, 1))?;
    let x_t = (x0.broadcast_mul(&(1.0 - &t4)?)? + noise.broadcast_mul(&t4)?)?;
    let target = pack(&(noise - x0)?)?;
    let v = dit.forward_with_rope(&pack(&x_t)?, &cond, rope, t, None)?;
    Ok((v - target)?.sqr()?.mean_all()?)
}

/// Trains everything and exports the checkpoint directory.
pub fn train(opts: &TrainOptions, device: &Device) -> Result<(), TrainError> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| TrainError::io(&opts.out_dir, e))?;
    let mut log = if opts.resume {
        LossLog::load(&opts.out_dir)
    } else {
        LossLog::default()
    };
    let started = Instant::now();
    let vae_params = train_vae(opts, device, &mut log, started)?;
    eprintln!("VAE done at {:.1}s", started.elapsed().as_secs_f64());

    let vae_cfg = tiny::vae_config()?;
    let latent = vae_cfg.latent_channels;
    let placeholder_bn = bn_tensors(
        Tensor::zeros(latent * 4, DType::F32, device)?,
        Tensor::ones(latent * 4, DType::F32, device)?,
    );
    let (bn_mean, bn_var) = latent_statistics(
        &build_vae(&vae_params, &placeholder_bn, false, device)?,
        device,
    )?;
    // running_var is stored so that sqrt(var + eps) is the standard deviation.
    let bn_var = (bn_var - vae_cfg.batch_norm_eps)?.clamp(0f32, f32::MAX)?;
    let bn = bn_tensors(bn_mean, bn_var);
    let vae = build_vae(&vae_params, &bn, false, device)?;

    // Tokenizer files first: training tokenizes with exactly what gets shipped.
    let tok_dir = opts.out_dir.join("tokenizer");
    tiny::write_tokenizer(&tok_dir)?;
    let template = ChatTemplate::load(&tok_dir)?;
    let tokenizer = PromptTokenizer::load(&tok_dir)?;

    let mut denoiser = Denoiser::new(device)?;
    let text_ckpt = opts.out_dir.join("text.safetensors");
    let dit_ckpt = opts.out_dir.join("transformer.safetensors");
    let mut start = 0;
    if opts.resume
        && let Some(state) = read_state(&opts.out_dir)
        && state.phase != "vae"
        && text_ckpt.exists()
        && dit_ckpt.exists()
    {
        denoiser.text.load(&text_ckpt)?;
        denoiser.transformer.load(&dit_ckpt)?;
        start = if state.phase == "done" {
            opts.dit_steps
        } else {
            state.step
        };
    }
    let mut text_ema = Ema::new(&denoiser.text, 0.999)?;
    let mut dit_ema = Ema::new(&denoiser.transformer, 0.999)?;
    if start > 0 {
        text_ema.load(&opts.out_dir.join("text_ema.safetensors"), device)?;
        dit_ema.load(&opts.out_dir.join("transformer_ema.safetensors"), device)?;
    }
    eprintln!(
        "transformer {} + text encoder {} parameters, steps {start}..{}",
        denoiser.transformer.count(),
        denoiser.text.count(),
        opts.dit_steps
    );
    let vars = denoiser.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: opts.dit_lr,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let side_tokens = tiny::IMAGE_SIDE_PX / 16;
    let (_, first_dit) = denoiser.build(true, device)?;
    let rope = first_dit.rope_tables(
        &text_ids(tiny::MAX_TEXT_TOKENS, device)?,
        &image_ids(side_tokens, side_tokens, device)?,
    )?;
    let bar = progress_bar(opts.dit_steps, "dit");
    bar.set_position(start as u64);
    let phase_start = Instant::now();
    let phase_budget_s = opts
        .time_budget_s
        .map(|b| (b - started.elapsed().as_secs_f64()).max(1.0));
    // Seeds of the transformer phase continue after the VAE's, so the two phases see other scenes.
    let seed_base = opts.seed + (opts.vae_steps * opts.vae_batch) as u64;
    for step in start..opts.dit_steps {
        let time_fraction = phase_budget_s.map_or(0.0, |b| phase_start.elapsed().as_secs_f64() / b);
        let lr = learning_rate(step, opts.dit_steps, 300, opts.dit_lr, time_fraction);
        opt.set_learning_rate(lr);
        let first = seed_base + (step * opts.dit_batch) as u64;
        let (images, mut captions) = scene_batch(first..first + opts.dit_batch as u64, device)?;
        // Caption dropout (every 10th sample, deterministic): the empty prompt is CFG's negative.
        for (i, c) in captions.iter_mut().enumerate() {
            if (first as usize + i).is_multiple_of(10) {
                c.clear();
            }
        }
        let x0 = vae.encode(&images)?.detach();
        let (ids, mask) = tokenize(&template, &tokenizer, &captions, device)?;
        // Logit-normal timesteps (SD3): most weight on the middle of the trajectory.
        let b = opts.dit_batch;
        let t = candle_nn::ops::sigmoid(&Tensor::randn(0f32, 1f32, b, device)?)?;
        let noise = x0.randn_like(0.0, 1.0)?;
        let (text, dit) = denoiser.build(true, device)?;
        let loss = flow_matching_loss(&text, &dit, &ids, &mask, &x0, &t, &noise, &rope)?;
        let mut grads = loss.backward()?;
        clip_gradients(&mut grads, &vars, 1.0)?;
        opt.step(&grads)?;
        text_ema.update(&denoiser.text, step)?;
        dit_ema.update(&denoiser.transformer, step)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        log.push("dit", step + 1, value, lr);
        bar.set_message(format!("loss {value:.4}"));
        bar.inc(1);
        if (step + 1) % opts.log_every == 0 {
            eprintln!(
                "dit step {} loss {value:.5} lr {lr:.2e} {:.1}s",
                step + 1,
                phase_start.elapsed().as_secs_f64()
            );
        }
        let out_of_time = opts
            .time_budget_s
            .is_some_and(|b| started.elapsed().as_secs_f64() > b);
        if (step + 1) % opts.checkpoint_every == 0 || step + 1 == opts.dit_steps || out_of_time {
            denoiser.text.save(&text_ckpt)?;
            denoiser.transformer.save(&dit_ckpt)?;
            text_ema.save(&opts.out_dir.join("text_ema.safetensors"))?;
            dit_ema.save(&opts.out_dir.join("transformer_ema.safetensors"))?;
            write_state(&opts.out_dir, "dit", step + 1)?;
            log.save(&opts.out_dir)?;
        }
        if out_of_time {
            eprintln!("transformer phase out of time after {} steps", step + 1);
            break;
        }
    }
    bar.finish();
    log.save(&opts.out_dir)?;
    eprintln!(
        "training done in {:.1}s; exporting to {}",
        started.elapsed().as_secs_f64(),
        opts.export_dir.display()
    );
    let mut vae_tensors = vae_params.tensors()?;
    vae_tensors.extend(bn);
    tiny::export(
        &opts.export_dir,
        &vae_tensors,
        dit_ema.tensors(),
        text_ema.tensors(),
    )?;
    write_state(&opts.out_dir, "done", 0)?;
    Ok(())
}
