//! Command-line definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Veetance: typed node-graph workflows for local image generation.
#[derive(Debug, Parser)]
#[command(name = "veetance", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run workflows (.ron files, or PNGs written by Export).
    Run(RunArgs),
    /// Check workflows and print every problem found.
    Validate(ValidateArgs),
    /// List every node kind with its inputs and outputs.
    Nodes(NodesArgs),
    /// Open the node editor, optionally on a workflow (.ron, or a PNG written by Export).
    Edit(EditArgs),
    /// List the models in the model folders (VEETANCE_MODELS and --models-dir).
    Models(ModelsArgs),
    /// Measure the engine or the models.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Model folders to list besides those in VEETANCE_MODELS (ComfyUI's `models/` works as is).
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
    /// Print one JSON object per model per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workflow files; several run in one process and share its caches and loaded models.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Override an input: `node.input=value` (value read as the input's type).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    pub overrides: Vec<String>,
    /// Directory for relative output paths.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Print one JSON object per event per line on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// Directory of the on-disk output cache [default: the user cache dir, e.g. ~/.cache/veetance].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write any output cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Trim the disk cache to this size after the run, least recently used entries first.
    #[arg(long, value_parser = parse_bytes, default_value = "10GiB")]
    pub cache_max: u64,
    /// Device for models.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Nodes that may run at the same time.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Refuse plans whose nodes need more accelerator memory than this (e.g. 8GiB).
    #[arg(long, value_parser = parse_bytes)]
    pub vram_budget: Option<u64>,
    /// Refuse plans whose nodes need more host memory than this (e.g. 16GiB).
    #[arg(long, value_parser = parse_bytes)]
    pub ram_budget: Option<u64>,
    /// A folder Load searches for model names, before those in VEETANCE_MODELS (repeatable).
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Cuda,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// Workflow to open; without it the editor starts on an empty workflow.
    pub file: Option<PathBuf>,
    /// A folder Load searches for model names, before those in VEETANCE_MODELS (repeatable).
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Workflow files (.ron, or PNGs written by Export).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the diagnostics as JSON (one object per file per line).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print every spec in full as JSON.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the reference as Markdown (this is how docs/nodes.md is made).
    #[arg(long)]
    pub markdown: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Engine overhead on a synthetic graph of trivial integer nodes.
    Engine(BenchEngineArgs),
    /// FLUX.2 [klein] ms per transformer step, peak VRAM and seconds per 4-step image, measured
    /// on full-size models with random weights (no checkpoint needed).
    Gpu(BenchGpuArgs),
}

#[derive(Debug, Args)]
pub struct BenchGpuArgs {
    /// Models to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchModel::Klein4b, BenchModel::Klein9b])]
    pub models: Vec<BenchModel>,
    /// Image sides in pixels [default: 512,1024; with --tiny 64,128].
    #[arg(long, value_delimiter = ',')]
    pub res: Vec<usize>,
    /// Transformer variants timed per model and size.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = BenchMode::ALL)]
    pub modes: Vec<BenchMode>,
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
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchMode::CompileSage, BenchMode::Eager])]
    pub e2e_modes: Vec<BenchMode>,
    /// Image side of the end-to-end runs in pixels [default: 1024; with --tiny 128].
    #[arg(long)]
    pub e2e_res: Option<usize>,
    /// Timed end-to-end runs per variant; each stage's median is reported.
    #[arg(long, default_value_t = 3)]
    pub e2e_repeats: usize,
    /// Skip (and report as skipped) configurations not started within this many seconds, so
    /// that a run under a time limit still ends cleanly.
    #[arg(long)]
    pub budget_s: Option<f64>,
    /// Device (`cuda` fails unless this build has CUDA and a GPU is present).
    #[arg(long, value_enum, default_value_t = Device::Cuda)]
    pub device: Device,
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

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BenchModel {
    #[value(name = "klein-4b")]
    Klein4b,
    #[value(name = "klein-9b")]
    Klein9b,
}

impl BenchModel {
    pub fn name(self) -> &'static str {
        match self {
            BenchModel::Klein4b => "klein-4b",
            BenchModel::Klein9b => "klein-9b",
        }
    }
}

/// A transformer variant, as the SageAttention and Compile nodes make them.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BenchMode {
    Eager,
    Sage,
    Compile,
    #[value(name = "compile+sage")]
    CompileSage,
}

impl BenchMode {
    pub const ALL: [BenchMode; 4] = [
        BenchMode::Eager,
        BenchMode::Sage,
        BenchMode::Compile,
        BenchMode::CompileSage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Eager => "eager",
            BenchMode::Sage => "sage",
            BenchMode::Compile => "compile",
            BenchMode::CompileSage => "compile+sage",
        }
    }

    pub fn uses_sage(self) -> bool {
        matches!(self, BenchMode::Sage | BenchMode::CompileSage)
    }

    pub fn compiles(self) -> bool {
        matches!(self, BenchMode::Compile | BenchMode::CompileSage)
    }
}

#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Graph shape: `wide` (N/10 independent chains of 10) or `chain` (one chain of N).
    #[arg(long, value_enum, default_value_t = Shape::Wide)]
    pub shape: Shape,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Shape {
    Wide,
    Chain,
}

/// Parses a size: `8GiB`, `512MiB` (binary), `16GB` (decimal) or a plain byte count.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("`{text}` is not a size like 8GiB or 512MiB: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("16GB"), Ok(16_000_000_000));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("8 parsecs").is_err());
    }
}
