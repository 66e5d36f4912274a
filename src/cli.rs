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
    /// Renders one chat template job (JSON on stdin) for the parent process; see
    /// `commands/template.rs`.
    #[command(name = "__render-template", hide = true)]
    RenderTemplate,
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
    /// A folder a workflow from a picture may also read from (besides the picture's folder,
    /// --out, the model folders and the built-in model); repeatable. See docs/security.md.
    #[arg(long = "allow-read", value_name = "DIR")]
    pub allow_read: Vec<PathBuf>,
    /// Let workflows from pictures read files anywhere, like workflows from .ron files.
    #[arg(long)]
    pub trust: bool,
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
    /// Also plan memory for this VRAM budget (e.g. 16GiB), as `run` would: what stays on the
    /// GPU, what streams, each node's expected peak, or why nothing fits.
    #[arg(long, value_parser = parse_bytes)]
    pub vram_budget: Option<u64>,
    /// Device the plan is for (as `run --device`).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// A folder Load searches for model names (as `run --models-dir`; repeatable).
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
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
    Engine(veetance_bench::engine::EngineArgs),
    /// FLUX.2 [klein] ms per transformer step, peak VRAM and seconds per 4-step image, measured
    /// on full-size models with random weights (no checkpoint needed).
    Gpu(Box<veetance_bench::gpu::GpuArgs>),
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
