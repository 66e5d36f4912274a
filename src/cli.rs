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
    /// Measure the engine or the models.
    #[command(subcommand)]
    Bench(BenchCommand),
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

/// Parses `8GiB`, `512MiB`, `8G`, `1.5GB` or a plain byte count.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 8GiB or 512MiB"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB, GiB)")),
    };
    Ok((number * multiplier) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("8 parsecs").is_err());
    }
}
