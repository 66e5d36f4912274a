//! `veetance-train`: trains, evaluates and illustrates the built-in tiny model.
//!
//! ```text
//! veetance-train tiny [--device cuda] [--out target/tiny-run] [--export models/tiny]   # train + export
//! veetance-train eval [--model models/tiny]                                      # quality gates
//! veetance-train grid [--model models/tiny] [--out docs/tiny-examples.png]       # example grid
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand, ValueEnum};
use veetance_models::Bundle;
use veetance_train::quality::{evaluate, gate_cases, generate};
use veetance_train::run::{TrainOptions, train};
use veetance_train::tiny;

#[derive(Parser)]
#[command(name = "veetance-train", about = "Train the built-in tiny model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Subcommand)]
enum Command {
    /// Train the tiny model (VAE, then transformer + text encoder) and export it.
    Tiny {
        /// Checkpoints, loss.csv and loss.png.
        #[arg(long, default_value = "target/tiny-run")]
        out: PathBuf,
        /// Where the finished diffusers-layout checkpoint goes.
        #[arg(long, default_value = "models/tiny")]
        export: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        #[arg(long, default_value_t = 3000)]
        vae_steps: usize,
        #[arg(long, default_value_t = 6000)]
        dit_steps: usize,
        #[arg(long, default_value_t = 64)]
        vae_batch: usize,
        #[arg(long, default_value_t = 128)]
        dit_batch: usize,
        #[arg(long, default_value_t = 1e-3)]
        vae_lr: f64,
        #[arg(long, default_value_t = 5e-4)]
        dit_lr: f64,
        #[arg(long, default_value_t = 1000)]
        checkpoint_every: usize,
        /// Start from scratch even if `--out` holds a checkpoint.
        #[arg(long)]
        fresh: bool,
        /// Evaluate the exported model on the quality-gate captions afterwards.
        #[arg(long)]
        eval: bool,
        /// Wall-clock budget in seconds (VAE phase up to 30 % of it); export happens either way.
        #[arg(long)]
        time_budget_s: Option<f64>,
    },
    /// Run the quality-gate captions through a checkpoint and print the scores.
    Eval {
        #[arg(long, default_value = "models/tiny")]
        model: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
    },
    /// Write a contact sheet of training scenes (ground truth) with their captions on stdout.
    Sheet {
        #[arg(long, default_value = "scenes.png")]
        out: PathBuf,
        #[arg(long, default_value_t = 32)]
        count: usize,
    },
    /// Write a grid of example images (one per quality-gate caption, first `count`).
    Grid {
        #[arg(long, default_value = "models/tiny")]
        model: PathBuf,
        #[arg(long, default_value = "docs/tiny-examples.png")]
        out: PathBuf,
        #[arg(long, default_value_t = 16)]
        count: usize,
    },
}

fn device(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            let d = Device::new_cuda(0).context("no CUDA device (build with --features cuda)")?;
            Ok(d)
        }
    }
}

fn eval(model: &std::path::Path, device: &Device) -> Result<()> {
    let bundle = Bundle::load(model, DType::F32, device)
        .with_context(|| format!("loading {}", model.display()))?;
    let started = Instant::now();
    let cases = gate_cases();
    let report = evaluate(&bundle, &cases)?;
    println!(
        "{} cases, {} steps, guidance {}: {} in {:.1}s",
        report.cases,
        bundle.defaults.steps,
        bundle.defaults.guidance,
        report.summary(),
        started.elapsed().as_secs_f64()
    );
    for f in &report.failures {
        println!("  miss: {f}");
    }
    Ok(())
}

/// Writes 64×64 RGB8 images as a near-square grid PNG with 2-pixel grey gaps.
fn save_grid(images: &[Vec<u8>], out: &std::path::Path) -> Result<()> {
    let side = tiny::IMAGE_SIDE_PX as u32;
    let count = images.len().max(1) as u32;
    let cols = (f64::from(count)).sqrt().ceil() as u32;
    let rows = count.div_ceil(cols);
    let gap = 2;
    let mut grid = image::RgbImage::from_pixel(
        cols * (side + gap) + gap,
        rows * (side + gap) + gap,
        image::Rgb([128, 128, 128]),
    );
    for (i, rgb) in images.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        for (p, px) in rgb.chunks(3).enumerate() {
            let (x, y) = (p as u32 % side, p as u32 / side);
            if let [red, green, blue] = *px {
                grid.put_pixel(
                    gap + c * (side + gap) + x,
                    gap + r * (side + gap) + y,
                    image::Rgb([red, green, blue]),
                );
            }
        }
    }
    grid.save(out)
        .with_context(|| format!("writing {}", out.display()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Tiny {
            out,
            export,
            device: dev,
            vae_steps,
            dit_steps,
            vae_batch,
            dit_batch,
            vae_lr,
            dit_lr,
            checkpoint_every,
            fresh,
            eval: run_eval,
            time_budget_s,
        } => {
            let device = device(dev)?;
            let opts = TrainOptions {
                out_dir: out,
                export_dir: export.clone(),
                vae_steps,
                dit_steps,
                vae_batch,
                dit_batch,
                vae_lr,
                dit_lr,
                checkpoint_every: checkpoint_every.max(1),
                resume: !fresh,
                time_budget_s,
                ..TrainOptions::default()
            };
            train(&opts, &device)?;
            if run_eval {
                eval(&export, &device)?;
            }
        }
        Command::Eval { model, device: dev } => eval(&model, &device(dev)?)?,
        Command::Sheet { out, count } => {
            let images: Vec<Vec<u8>> = (0..count as u64)
                .map(|seed| {
                    let scene = veetance_scenes::Scene::random(seed);
                    println!("{seed:>3}: {}", scene.caption());
                    Ok(scene.render(tiny::IMAGE_SIDE_PX)?.rgb)
                })
                .collect::<Result<_>>()?;
            save_grid(&images, &out)?;
        }
        Command::Grid { model, out, count } => {
            let bundle = Bundle::load(&model, DType::F32, &Device::Cpu)
                .with_context(|| format!("loading {}", model.display()))?;
            let cases = gate_cases();
            if count == 0 || count > cases.len() {
                bail!("count must be 1..={}", cases.len());
            }
            let cols = (count as f64).sqrt().ceil() as usize;
            let mut images = Vec::with_capacity(count);
            for (i, case) in cases.iter().take(count).enumerate() {
                let caption = case.scene.caption();
                images.push(generate(&bundle, &caption, case.seed)?);
                println!(
                    "{:>2}. (row {}, col {}) {caption}",
                    i + 1,
                    i / cols + 1,
                    i % cols + 1
                );
            }
            save_grid(&images, &out)?;
        }
    }
    Ok(())
}
