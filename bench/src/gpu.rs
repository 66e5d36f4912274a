//! `veetance bench gpu`: FLUX.2 \[klein\] speed and memory on full-size models with random weights.
//!
//! Compute and memory do not depend on weight values, so no checkpoint is needed: every model is
//! built at its real size with random weights directly on the device (building is not timed).
//!
//! - **Per step**: for each model × image side × variant, `forward_with_rope` calls exactly as the
//!   sampler makes them (image tokens for the side, 512 text tokens, RoPE tables computed once, the
//!   first σ of the 4-step schedule), the device synchronised before the first and after every
//!   call; the median and the minimum are reported. Variants are made the way the SageAttention
//!   and Compile nodes make them.
//! - **Peak VRAM**: the CUDA memory pool's high-water marks since a reset before each
//!   configuration, so they include the resident weights (PyTorch's `max_memory_allocated` and
//!   `max_memory_reserved`).
//! - **End to end**: per model and variant, 4-step images: encode 512 token ids with the random
//!   Qwen3 (layers 9, 18, 27), sample, VAE-decode, each stage timed between synchronisations;
//!   one untimed run, then the median of `--e2e-repeats` runs per stage (as bench/torch_gpu.py,
//!   the PyTorch peer, reports them). Preparing the Compile variant is reported as `compile_s`
//!   and not counted in `total_s` (the Compile node's output is cached across runs, as
//!   `torch.compile`'s compilation is).
//!
//! One configuration failing (out of memory, say) prints an error line and the others still run;
//! the exit code is then 1. With `--budget-s`, configurations not started in time are reported as
//! skipped, so that a run under a time limit still ends with its results written.

use std::fs::File;
use std::io::Write as _;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};
use veetance_models::flux2::{RopeTables, image_ids, text_ids};
use veetance_models::latent::grid_for_image;
use veetance_models::linear::CompactFormat;
use veetance_models::qwen3::{KLEIN_OUT_LAYERS, MAX_TEXT_TOKENS, Qwen3Config};
use veetance_models::weights::QuantMode;
use veetance_models::{
    AttentionBackend, Flux2Config, Flux2Transformer, SageConfig, SampleRequest, SchedulerConfig,
    Start, TextEncoder, Vae, VaeConfig, sample, seeded_noise,
};

use clap::{Args, ValueEnum};

/// `veetance bench gpu`'s options.
#[derive(Debug, Args)]
pub struct GpuArgs {
    /// Models to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Model::Klein4b, Model::Klein9b])]
    pub models: Vec<Model>,
    /// Image sides in pixels [default: 512,1024; with --tiny 64,128].
    #[arg(long, value_delimiter = ',')]
    pub res: Vec<usize>,
    /// Transformer variants timed per model and size.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Mode::ALL)]
    pub modes: Vec<Mode>,
    /// How the block projections are stored: `dense` (the model dtype, bf16 on GPUs), `fp8`
    /// (E4M3 with a per-tensor scale) or a GGUF type (`q8_0`, `q5_k`, `q4_k`, ...), re-encoded
    /// from the random weights as a quantized file of them would hold them; embedders and the
    /// final layer stay dense, as in ComfyUI's and city96's files. The model is built anew per
    /// format, so peak VRAM counts that format's weights only.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("dense")])]
    pub weights: Vec<String>,
    /// How GGUF weights compute: `exact` (dequantized per use, then an ordinary matmul: what
    /// diffusers computes) or `fast` (candle's quantized matmul, which quantizes the activations
    /// too).
    #[arg(long, value_enum, default_value_t = Quant::Exact)]
    pub quant: Quant,
    /// Timed forward calls per configuration.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed forward calls before them (and, if not 0, one untimed end-to-end run).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Skip the end-to-end runs (encode 512 tokens, sample 4 steps, decode).
    #[arg(long = "no-e2e")]
    pub skip_e2e: bool,
    /// Transformer variants of the end-to-end runs.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::CompileSage, Mode::Eager])]
    pub e2e_modes: Vec<Mode>,
    /// Image side of the end-to-end runs in pixels [default: 1024; with --tiny 128].
    #[arg(long)]
    pub e2e_res: Option<usize>,
    /// Also run end to end as `Load(offload: true)` does: transformer and text encoder kept in
    /// page-locked RAM, each copied to the GPU for its stage and dropped after it (the copies
    /// are timed as part of encode and sample).
    #[arg(long)]
    pub e2e_offload: bool,
    /// Timed end-to-end runs per variant; each stage's median is reported.
    #[arg(long, default_value_t = 3)]
    pub e2e_repeats: usize,
    /// Skip (and report as skipped) configurations not started within this many seconds, so
    /// that a run under a time limit still ends cleanly.
    #[arg(long)]
    pub budget_s: Option<f64>,
    /// Device: `cuda` (fails unless this build has CUDA and a GPU is present), `cpu` or `auto`.
    #[arg(long, default_value = "cuda", value_parser = ["auto", "cpu", "cuda"])]
    pub device: String,
    /// Tiny models (a few heads, 1 + 1 blocks) at small sizes: a seconds-long smoke run.
    #[arg(long)]
    pub tiny: bool,
    /// Print one JSON object per measurement per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Append the JSON lines to this file as well.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How GGUF weights compute (`--quant`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Quant {
    /// Dequantized per use, then an ordinary matmul.
    Exact,
    /// candle's quantized matmul.
    Fast,
}

impl Quant {
    fn mode(self) -> QuantMode {
        match self {
            Quant::Exact => QuantMode::Exact,
            Quant::Fast => QuantMode::Fast,
        }
    }
}

/// A model measured.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Model {
    /// FLUX.2 [klein] 4B with Qwen3-4B.
    #[value(name = "klein-4b")]
    Klein4b,
    /// FLUX.2 [klein] 9B with Qwen3-8B.
    #[value(name = "klein-9b")]
    Klein9b,
}

impl Model {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Model::Klein4b => "klein-4b",
            Model::Klein9b => "klein-9b",
        }
    }
}

/// A transformer variant, as the SageAttention and Compile nodes make them.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// The model as loaded.
    Eager,
    /// With SageAttention.
    Sage,
    /// Compiled.
    Compile,
    /// Compiled, with SageAttention.
    #[value(name = "compile+sage")]
    CompileSage,
}

impl Mode {
    /// Every variant.
    pub const ALL: [Mode; 4] = [Mode::Eager, Mode::Sage, Mode::Compile, Mode::CompileSage];

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Eager => "eager",
            Mode::Sage => "sage",
            Mode::Compile => "compile",
            Mode::CompileSage => "compile+sage",
        }
    }

    /// Whether the variant swaps in SageAttention.
    pub fn uses_sage(self) -> bool {
        matches!(self, Mode::Sage | Mode::CompileSage)
    }

    /// Whether the variant is compiled.
    pub fn compiles(self) -> bool {
        matches!(self, Mode::Compile | Mode::CompileSage)
    }
}

/// Steps of the distilled klein schedule: what Compile prepares for and what end to end samples.
const KLEIN_STEPS: usize = 4;

/// Runs the benchmark; the exit code is 1 if a configuration failed.
pub fn run(args: &GpuArgs) -> Result<ExitCode> {
    let started = Instant::now();
    if args.steps == 0 || args.e2e_repeats == 0 {
        bail!("--steps and --e2e-repeats must be at least 1");
    }
    let device = veetance_models::device::choose_device(&args.device, "auto")?;
    // bf16 is what the models run in on GPUs; CPU runs are smoke tests, and candle's CPU bf16
    // kernels are slow enough to time something else.
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
    let sides_px = match (args.res.is_empty(), args.tiny) {
        (false, _) => args.res.clone(),
        (true, false) => vec![512, 1024],
        (true, true) => vec![64, 128],
    };
    let e2e_side_px = args.e2e_res.unwrap_or(if args.tiny { 128 } else { 1024 });
    let px_per_token = model_spec(Model::Klein4b, args.tiny).vae.spatial_factor() * 2;
    let weights = args
        .weights
        .iter()
        .map(|name| Weights::parse(name))
        .collect::<Result<Vec<_>>>()?;
    for side_px in sides_px.iter().chain([&e2e_side_px]) {
        grid_for_image(*side_px, *side_px, px_per_token).context("image side")?;
    }
    let out_file = match &args.out {
        Some(path) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => None,
    };
    let gpu_name = veetance_gpu::memory::device_name(&device).unwrap_or_else(|| "cpu".to_owned());
    let mut report = Report {
        json: args.json,
        out_file,
        gpu_name: gpu_name.clone(),
        dtype: dtype.as_str(),
        weights: "dense",
        n_failed: 0,
    };
    if !args.json {
        crate::print_line(format_args!(
            "veetance bench gpu on {gpu_name} in {}: median and minimum of {} forward calls after {} warm-up calls; random weights",
            dtype.as_str(),
            args.steps,
            args.warmup
        ))?;
        crate::print_line(format_args!(
            "{:<9} {:<7} {:>5} {:<18} {:>9} {:>9} {:>14} {:>18}",
            "model",
            "weights",
            "res",
            "mode",
            "ms/step",
            "min ms",
            "peak used MiB",
            "peak reserved MiB"
        ))?;
    }
    let setup = Setup {
        args,
        device,
        dtype,
        sides_px,
        e2e_side_px,
        px_per_token,
        weights,
        scheduler: SchedulerConfig::default(),
        started,
        dense_images: std::cell::RefCell::new(Vec::new()),
    };
    for &model in &args.models {
        for &weights in &setup.weights {
            report.weights = weights.name();
            bench_model(&setup, &mut report, model, weights)?;
        }
    }
    Ok(if report.n_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What every configuration shares.
struct Setup<'a> {
    args: &'a GpuArgs,
    device: Device,
    dtype: DType,
    sides_px: Vec<usize>,
    e2e_side_px: usize,
    px_per_token: usize,
    weights: Vec<Weights>,
    scheduler: SchedulerConfig,
    started: Instant,
    /// The last image of each model's end-to-end runs with dense weights, by model and mode:
    /// what the compact formats' images are compared with.
    dense_images: std::cell::RefCell<Vec<(Model, Mode, Vec<f32>)>>,
}

/// Seeds of the random weights: with the device's generator seeded before each build, every
/// format starts from the same dense weights, so their images can be compared (CUDA only;
/// candle cannot seed its CPU generator, so CPU runs compare nothing).
const TRANSFORMER_SEED: u64 = 1;
const STAGES_SEED: u64 = 2;

/// Seeds the device's generator where candle can (not on the CPU, whose runs compare nothing).
fn seed(device: &Device, value: u64) {
    if !device.is_cpu() {
        // A generator that cannot be seeded only loses the comparison, not the timing.
        let _ = device.set_seed(value);
    }
}

/// How the block projections are stored in one measurement.
#[derive(Debug, Clone, Copy)]
struct Weights(Option<CompactFormat>);

impl Weights {
    fn parse(name: &str) -> Result<Weights> {
        if ["dense", "bf16"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            return Ok(Weights(None));
        }
        let format = CompactFormat::from_name(name).or_else(|| {
            name.eq_ignore_ascii_case("fp8_e4m3")
                .then_some(CompactFormat::Fp8E4M3)
        });
        match format {
            Some(format) => Ok(Weights(Some(format))),
            None => {
                let known: Vec<String> = CompactFormat::ALL
                    .iter()
                    .map(|f| f.name().to_ascii_lowercase())
                    .collect();
                bail!(
                    "unknown --weights `{name}`; expected dense or one of {}",
                    known.join(", ")
                )
            }
        }
    }

    fn name(self) -> &'static str {
        self.0.map_or("dense", CompactFormat::name)
    }

    /// The transformer with these weights: built dense with random values, then (if compact)
    /// re-encoded, the dense one dropped before anything is measured.
    fn build(
        self,
        cfg: Flux2Config,
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Flux2Transformer> {
        seed(device, TRANSFORMER_SEED);
        let dense = Flux2Transformer::random(cfg, dtype, device)?.with_distilled(true);
        Ok(match self.0 {
            None => dense,
            Some(format) => dense.with_compact_blocks(format, quant)?,
        })
    }
}

impl Setup<'_> {
    /// Whether `--budget-s` has run out, so that no further configuration starts.
    fn over_budget(&self) -> bool {
        self.args
            .budget_s
            .is_some_and(|budget_s| self.started.elapsed().as_secs_f64() > budget_s)
    }
}

/// Every configuration of one model. Errors are reported per configuration; only a failure to
/// write the report is returned.
fn bench_model(
    setup: &Setup<'_>,
    report: &mut Report,
    model: Model,
    weights: Weights,
) -> Result<()> {
    let args = setup.args;
    let device = &setup.device;
    if setup.over_budget() {
        return report.skipped(model, None, "build");
    }
    let spec = model_spec(model, args.tiny);
    let base = guarded(|| {
        weights.build(
            spec.transformer.clone(),
            setup.dtype,
            device,
            args.quant.mode(),
        )
    });
    let base = match base {
        Ok(base) => base,
        Err(err) => return report.failed(model, None, "build", &err),
    };
    for &side_px in &setup.sides_px {
        let grid = grid_for_image(side_px, side_px, setup.px_per_token)?;
        let inputs = match guarded(|| step_inputs(&base, grid, &setup.scheduler, device)) {
            Ok(inputs) => inputs,
            Err(err) => {
                report.failed(model, Some(side_px), "inputs", &err)?;
                continue;
            }
        };
        for &mode in &args.modes {
            if setup.over_budget() {
                report.skipped(model, Some(side_px), mode.name())?;
                continue;
            }
            let timing = guarded(|| {
                veetance_gpu::memory::reset_peak(device);
                let variant = make_variant(&base, mode, grid, &setup.scheduler)?;
                let times_ms = time_steps(&variant, &inputs, args, device)?;
                Ok((times_ms, veetance_gpu::memory::vram(device)))
            });
            match timing {
                Ok((times_ms, vram)) => {
                    report.step(model, side_px, mode, &times_ms, vram.as_ref())?;
                }
                Err(err) => report.failed(model, Some(side_px), mode.name(), &err)?,
            }
        }
    }
    if args.skip_e2e || args.e2e_modes.is_empty() {
        return Ok(());
    }
    let side_px = setup.e2e_side_px;
    if setup.over_budget() {
        return report.skipped(model, Some(side_px), "e2e-build");
    }
    let stages = guarded(|| {
        seed(device, STAGES_SEED);
        Ok((
            TextEncoder::random(spec.text.clone(), &spec.out_layers, setup.dtype, device)?,
            Vae::random(spec.vae.clone(), setup.dtype, device)?,
        ))
    });
    let (text_encoder, vae) = match stages {
        Ok(stages) => stages,
        Err(err) => return report.failed(model, Some(side_px), "e2e-build", &err),
    };
    let pipeline = Pipeline {
        transformer: &base,
        text_encoder: &text_encoder,
        vae: &vae,
        scheduler: &setup.scheduler,
        device,
        offloaded: false,
    };
    let grid = grid_for_image(side_px, side_px, setup.px_per_token)?;
    let runs = Runs {
        n_warmup: args.warmup.min(1),
        n_timed: args.e2e_repeats,
    };
    for &mode in &args.e2e_modes {
        if setup.over_budget() {
            report.skipped(model, Some(side_px), &e2e_mode_name(mode, false))?;
            continue;
        }
        match guarded(|| end_to_end(&pipeline, mode, grid, runs)) {
            Ok(mut timing) => {
                compare_with_dense(setup, model, mode, weights, &mut timing);
                report.e2e(model, side_px, mode, false, &timing)?;
            }
            Err(err) => report.failed(model, Some(side_px), &e2e_mode_name(mode, false), &err)?,
        }
    }
    if !args.e2e_offload || device.is_cpu() {
        return Ok(());
    }
    // As Load(offload: true) keeps them: in RAM, page-locked.
    let in_ram = guarded(|| {
        let cpu = Device::Cpu;
        Ok((
            base.to_device(&cpu)?.pinned_for(device),
            text_encoder.to_device(&cpu)?.pinned_for(device),
        ))
    });
    drop(base);
    drop(text_encoder);
    let (transformer, text_encoder) = match in_ram {
        Ok(parts) => parts,
        Err(err) => return report.failed(model, Some(side_px), "e2e-offload-build", &err),
    };
    let pipeline = Pipeline {
        transformer: &transformer,
        text_encoder: &text_encoder,
        vae: &vae,
        scheduler: &setup.scheduler,
        device,
        offloaded: true,
    };
    for &mode in &args.e2e_modes {
        if setup.over_budget() {
            report.skipped(model, Some(side_px), &e2e_mode_name(mode, true))?;
            continue;
        }
        match guarded(|| end_to_end(&pipeline, mode, grid, runs)) {
            Ok(timing) => report.e2e(model, side_px, mode, true, &timing)?,
            Err(err) => report.failed(model, Some(side_px), &e2e_mode_name(mode, true), &err)?,
        }
    }
    Ok(())
}

/// The architectures measured for one model name.
struct ModelSpec {
    transformer: Flux2Config,
    text: Qwen3Config,
    out_layers: Vec<usize>,
    vae: VaeConfig,
}

fn model_spec(model: Model, tiny: bool) -> ModelSpec {
    if tiny {
        // Both names get the same tiny model; the shapes mirror models/tests/fixtures/tiny-klein, cut to
        // one double and one single block.
        return ModelSpec {
            transformer: Flux2Config {
                num_layers: 1,
                num_single_layers: 1,
                ..Flux2Config::tiny()
            },
            text: Qwen3Config::tiny(),
            out_layers: vec![1, 2, 3],
            vae: VaeConfig::tiny(),
        };
    }
    let (transformer, text) = match model {
        Model::Klein4b => (Flux2Config::klein_4b(), Qwen3Config::qwen3_4b()),
        Model::Klein9b => (Flux2Config::klein_9b(), Qwen3Config::qwen3_8b()),
    };
    ModelSpec {
        transformer,
        text,
        out_layers: KLEIN_OUT_LAYERS.to_vec(),
        vae: VaeConfig::flux2(),
    }
}

/// Keeps a dense run's image, or compares a compact format's image with the dense one of the
/// same model and mode (when both exist and the weights were seeded alike).
fn compare_with_dense(
    setup: &Setup<'_>,
    model: Model,
    mode: Mode,
    weights: Weights,
    timing: &mut E2eTiming,
) {
    // candle seeds only GPU generators, so CPU runs' formats start from different weights.
    if timing.image.is_empty() || setup.device.is_cpu() {
        return;
    }
    let mut images = setup.dense_images.borrow_mut();
    if weights.0.is_none() {
        images.retain(|(m, o, _)| (*m, *o) != (model, mode));
        images.push((model, mode, std::mem::take(&mut timing.image)));
        return;
    }
    timing.psnr_db_vs_dense = images
        .iter()
        .find(|(m, o, _)| (*m, *o) == (model, mode))
        .and_then(|(_, _, dense)| psnr_db(&timing.image, dense));
}

/// PSNR in dB of an image against a reference, both with values in [-1, 1] (peak-to-peak 2);
/// `None` if their sizes differ, infinite if they are identical.
fn psnr_db(image: &[f32], reference: &[f32]) -> Option<f64> {
    if image.len() != reference.len() || image.is_empty() {
        return None;
    }
    let squared: f64 = image
        .iter()
        .zip(reference)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let mse = squared / image.len() as f64;
    Some(10.0 * (4.0 / mse).log10())
}

fn e2e_mode_name(mode: Mode, offloaded: bool) -> String {
    let suffix = if offloaded { "-offload" } else { "" };
    format!("e2e-{}{suffix}", mode.name())
}

/// Runs `f`, turning a panic into an error so that one configuration cannot end the benchmark.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(anyhow!("panicked: {message}"))
        }
    }
}

/// A variant of `base` as the SageAttention and Compile nodes make it; shares the weights.
fn make_variant(
    base: &Flux2Transformer,
    mode: Mode,
    grid: (usize, usize),
    scheduler: &SchedulerConfig,
) -> Result<Flux2Transformer> {
    let model = if mode.uses_sage() {
        base.with_attention(AttentionBackend::Sage(SageConfig::default()))
    } else {
        base.clone()
    };
    if !mode.compiles() {
        return Ok(model);
    }
    Ok(model.compile_for(scheduler, grid, KLEIN_STEPS, None)?)
}

/// What one sampler step feeds the transformer.
struct StepInputs {
    tokens: Tensor,
    txt: Tensor,
    rope: RopeTables,
    timestep: Tensor,
}

fn step_inputs(
    model: &Flux2Transformer,
    (grid_h, grid_w): (usize, usize),
    scheduler: &SchedulerConfig,
    device: &Device,
) -> Result<StepInputs> {
    let cfg = model.config();
    let dtype = model.dtype();
    let tokens =
        Tensor::randn(0f32, 1.0, (1, grid_h * grid_w, cfg.in_channels), device)?.to_dtype(dtype)?;
    let txt = Tensor::randn(
        0f32,
        1.0,
        (1, MAX_TEXT_TOKENS, cfg.joint_attention_dim),
        device,
    )?
    .to_dtype(dtype)?;
    let rope = model.rope_tables(
        &text_ids(MAX_TEXT_TOKENS, device)?,
        &image_ids(grid_h, grid_w, device)?,
    )?;
    // The first σ of the schedule, in the form the sampler passes it, so that a compiled model
    // finds it among its precomputed modulations as it does while sampling.
    let sigma = scheduler
        .sigmas(grid_h * grid_w, KLEIN_STEPS)
        .first()
        .copied()
        .unwrap_or(1.0);
    let timestep = Tensor::new(&[((sigma as f32) * 1000.0) / 1000.0], device)?;
    Ok(StepInputs {
        tokens,
        txt,
        rope,
        timestep,
    })
}

/// Milliseconds of each timed forward call.
fn time_steps(
    model: &Flux2Transformer,
    inputs: &StepInputs,
    args: &GpuArgs,
    device: &Device,
) -> Result<Vec<f64>> {
    let forward = || {
        model.forward_with_rope(
            &inputs.tokens,
            &inputs.txt,
            &inputs.rope,
            &inputs.timestep,
            None,
        )
    };
    for _ in 0..args.warmup {
        forward()?;
    }
    device.synchronize()?;
    let mut times_ms = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let started = Instant::now();
        let velocity = forward()?;
        device.synchronize()?;
        times_ms.push(started.elapsed().as_secs_f64() * 1e3);
        drop(velocity);
    }
    Ok(times_ms)
}

/// The three stages of one image, built once per model.
struct Pipeline<'a> {
    transformer: &'a Flux2Transformer,
    text_encoder: &'a TextEncoder,
    vae: &'a Vae,
    scheduler: &'a SchedulerConfig,
    device: &'a Device,
    /// Transformer and text encoder live in RAM and move to `device` for their stage.
    offloaded: bool,
}

/// How many end-to-end runs to make.
#[derive(Debug, Clone, Copy)]
struct Runs {
    n_warmup: usize,
    n_timed: usize,
}

/// Medians over the timed end-to-end runs.
struct E2eTiming {
    compile_s: f64,
    encode_s: f64,
    sample_s: f64,
    decode_s: f64,
    total_s: f64,
    total_s_runs: Vec<f64>,
    vram: Option<veetance_gpu::memory::VramInfo>,
    /// The last run's decoded image, flattened (empty once kept as the dense reference).
    image: Vec<f32>,
    /// PSNR of `image` against the dense weights' image of the same model and mode.
    psnr_db_vs_dense: Option<f64>,
}

/// Seconds of one image's stages.
#[derive(Debug, Clone, Copy)]
struct StageTimes {
    encode_s: f64,
    sample_s: f64,
    decode_s: f64,
}

impl StageTimes {
    fn total_s(self) -> f64 {
        self.encode_s + self.sample_s + self.decode_s
    }
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn end_to_end(
    pipeline: &Pipeline<'_>,
    mode: Mode,
    grid: (usize, usize),
    runs: Runs,
) -> Result<E2eTiming> {
    let device = pipeline.device;
    let vocab = pipeline.text_encoder.encoder().config().vocab_size.max(1);
    // Token ids spread over the vocabulary; all real (no padding), which costs the same.
    let ids: Vec<u32> = (0..MAX_TEXT_TOKENS)
        .map(|i| u32::try_from(i.wrapping_mul(2_654_435_761) % vocab).unwrap_or(0))
        .collect();
    let ids = Tensor::from_vec(ids, (1, MAX_TEXT_TOKENS), device)?;
    let mask = Tensor::ones((1, MAX_TEXT_TOKENS), DType::U32, device)?;
    let channels = pipeline.transformer.config().in_channels;
    let noise = seeded_noise(42, (1, channels, grid.0, grid.1), device)?;

    veetance_gpu::memory::reset_peak(device);
    let started = Instant::now();
    // Offloaded, the variant is made from each run's device copy instead (as Sample does).
    let resident = if pipeline.offloaded {
        None
    } else {
        Some(make_variant(
            pipeline.transformer,
            mode,
            grid,
            pipeline.scheduler,
        )?)
    };
    device.synchronize()?;
    let compile_s = started.elapsed().as_secs_f64();

    let last_image = std::cell::RefCell::new(None::<Tensor>);
    let one_image = || -> Result<StageTimes> {
        device.synchronize()?;
        let started = Instant::now();
        let cond = if pipeline.offloaded {
            let on_device = pipeline.text_encoder.to_device(device)?;
            on_device.encode_ids(&ids, &mask)?
        } else {
            pipeline.text_encoder.encode_ids(&ids, &mask)?
        };
        device.synchronize()?;
        let encode_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let moved = match &resident {
            Some(_) => None,
            None => Some(make_variant(
                &pipeline.transformer.to_device(device)?,
                mode,
                grid,
                pipeline.scheduler,
            )?),
        };
        let transformer = resident
            .as_ref()
            .or(moved.as_ref())
            .context("no transformer")?;
        let request = SampleRequest {
            positive: &cond,
            negative: None,
            start: Start::Noise(noise.clone()),
            steps: KLEIN_STEPS,
            guidance: 1.0,
            scheduler: pipeline.scheduler,
            references: &[],
        };
        let latent = sample(transformer, &request, |_, _| ControlFlow::Continue(()))?;
        drop(moved);
        device.synchronize()?;
        let sample_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let image = pipeline.vae.decode(&latent)?;
        device.synchronize()?;
        let decode_s = started.elapsed().as_secs_f64();
        *last_image.borrow_mut() = Some(image);
        Ok(StageTimes {
            encode_s,
            sample_s,
            decode_s,
        })
    };
    for _ in 0..runs.n_warmup {
        one_image()?;
    }
    let times = (0..runs.n_timed)
        .map(|_| one_image())
        .collect::<Result<Vec<_>>>()?;
    Ok(E2eTiming {
        compile_s,
        encode_s: median(times.iter().map(|t| t.encode_s)),
        sample_s: median(times.iter().map(|t| t.sample_s)),
        decode_s: median(times.iter().map(|t| t.decode_s)),
        total_s: median(times.iter().map(|t| t.total_s())),
        total_s_runs: times.iter().map(|t| round3(t.total_s())).collect(),
        vram: veetance_gpu::memory::vram(device),
        image: match last_image.into_inner() {
            Some(image) => image.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            None => Vec::new(),
        },
        psnr_db_vs_dense: None,
    })
}

/// Prints results as they come (a table or JSON lines) and appends JSON lines to `--out`.
struct Report {
    json: bool,
    out_file: Option<File>,
    gpu_name: String,
    dtype: &'static str,
    /// The `--weights` format being measured.
    weights: &'static str,
    n_failed: usize,
}

/// Mebibytes to one decimal, as the PyTorch peer benchmark (bench/torch_gpu.py) reports them.
fn mib(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| (b as f64 / f64::from(1u32 << 20) * 10.0).round() / 10.0)
}

fn mib_text(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn round3(value: f64) -> f64 {
    (value * 1e3).round() / 1e3
}

impl Report {
    fn step(
        &mut self,
        model: Model,
        side_px: usize,
        mode: Mode,
        times_ms: &[f64],
        vram: Option<&veetance_gpu::memory::VramInfo>,
    ) -> Result<()> {
        let median_ms = median(times_ms.iter().copied());
        let min_ms = times_ms
            .iter()
            .copied()
            .reduce(f64::min)
            .unwrap_or(f64::NAN);
        let peak_used = mib(vram.and_then(|v| v.pool_peak_used_bytes));
        let peak_reserved = mib(vram.and_then(|v| v.pool_peak_reserved_bytes));
        let line = self.line(
            model,
            Some(side_px),
            mode.name(),
            json!({
                "ms_per_step": round3(median_ms),
                "ms_per_step_min": round3(min_ms),
                "peak_used_mib": peak_used,
                "peak_reserved_mib": peak_reserved,
                "dtype": self.dtype,
                "steps": times_ms.len(),
            }),
        );
        let human = format!(
            "{} {:>9.2} {:>9.2} {:>14} {:>18}",
            self.columns(model, Some(side_px), mode.name()),
            median_ms,
            min_ms,
            mib_text(peak_used),
            mib_text(peak_reserved),
        );
        self.emit(&line, &human)
    }

    fn e2e(
        &mut self,
        model: Model,
        side_px: usize,
        mode: Mode,
        offloaded: bool,
        timing: &E2eTiming,
    ) -> Result<()> {
        let peak_used = mib(timing.vram.and_then(|v| v.pool_peak_used_bytes));
        let peak_reserved = mib(timing.vram.and_then(|v| v.pool_peak_reserved_bytes));
        let line = self.line(
            model,
            Some(side_px),
            &e2e_mode_name(mode, offloaded),
            json!({
                "encode_s": round3(timing.encode_s),
                "sample_s": round3(timing.sample_s),
                "decode_s": round3(timing.decode_s),
                "total_s": round3(timing.total_s),
                "total_s_runs": timing.total_s_runs,
                "compile_s": round3(timing.compile_s),
                "peak_used_mib": peak_used,
                "peak_reserved_mib": peak_reserved,
                "dtype": self.dtype,
                "steps": KLEIN_STEPS,
                "psnr_db_vs_dense": timing.psnr_db_vs_dense.map(|db| (db * 100.0).round() / 100.0),
            }),
        );
        let mut human = format!(
            "{} encode {:.3} s + sample {:.3} s + decode {:.3} s = {:.3} s",
            self.columns(model, Some(side_px), &e2e_mode_name(mode, offloaded)),
            timing.encode_s,
            timing.sample_s,
            timing.decode_s,
            timing.total_s,
        );
        if mode.compiles() {
            human.push_str(&format!(" (compile {:.3} s)", timing.compile_s));
        }
        if let (Some(used), Some(reserved)) = (peak_used, peak_reserved) {
            human.push_str(&format!(
                ", peak used {used:.1} MiB, reserved {reserved:.1} MiB"
            ));
        }
        if let Some(db) = timing.psnr_db_vs_dense {
            human.push_str(&format!(", {db:.1} dB PSNR against dense"));
        }
        self.emit(&line, &human)
    }

    fn failed(
        &mut self,
        model: Model,
        side_px: Option<usize>,
        mode: &str,
        err: &anyhow::Error,
    ) -> Result<()> {
        self.n_failed += 1;
        let line = self.line(
            model,
            side_px,
            mode,
            json!({
                "error": format!("{err:#}"),
            }),
        );
        let human = format!("{} error: {err:#}", self.columns(model, side_px, mode));
        if self.json {
            crate::print_line(&line)?;
        } else {
            eprintln!("{human}");
        }
        self.append(&line)
    }

    fn skipped(&mut self, model: Model, side_px: Option<usize>, mode: &str) -> Result<()> {
        let line = self.line(
            model,
            side_px,
            mode,
            json!({
                "skipped": "time budget",
            }),
        );
        let human = format!(
            "{} skipped (time budget)",
            self.columns(model, side_px, mode)
        );
        self.emit(&line, &human)
    }

    /// One result line: what was measured (implementation, GPU, model, weights, side, mode),
    /// then `fields`.
    fn line(&self, model: Model, side_px: Option<usize>, mode: &str, fields: Value) -> Value {
        let mut line = json!({
            "impl": "veetance",
            "gpu": self.gpu_name,
            "model": model.name(),
            "weights": self.weights,
            "res": side_px,
            "mode": mode,
        });
        if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        line
    }

    /// The table columns that say what was measured.
    fn columns(&self, model: Model, side_px: Option<usize>, mode: &str) -> String {
        let side = side_px.map_or_else(|| "-".to_owned(), |s| s.to_string());
        format!(
            "{:<9} {:<7} {side:>5} {mode:<18}",
            model.name(),
            self.weights
        )
    }

    fn emit(&mut self, line: &Value, human: &str) -> Result<()> {
        if self.json {
            crate::print_line(line)?;
        } else {
            crate::print_line(human)?;
        }
        self.append(line)
    }

    /// Appends one JSON line to `--out`, flushed at once so that a run killed later (a time
    /// limit on a rented GPU) keeps what it measured.
    fn append(&mut self, line: &Value) -> Result<()> {
        if let Some(file) = &mut self.out_file {
            writeln!(file, "{line}")
                .and_then(|()| file.flush())
                .context("cannot append to --out")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_is_infinite_for_equal_images_and_follows_the_squared_error() {
        assert_eq!(psnr_db(&[0.5, -0.25], &[0.5, -0.25]), Some(f64::INFINITY));
        // A uniform error of 0.02 on a peak-to-peak range of 2: 20·log10(2 / 0.02) = 40 dB.
        let db = psnr_db(&[0.02, 0.52], &[0.0, 0.5]).unwrap_or(0.0);
        assert!((db - 40.0).abs() < 1e-4, "{db}");
        assert_eq!(psnr_db(&[0.0], &[0.0, 1.0]), None);
        assert_eq!(psnr_db(&[], &[]), None);
    }
}
