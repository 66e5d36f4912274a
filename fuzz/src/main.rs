//! `veetance-fuzz`: runs the fuzz targets of `veetance_fuzz` from the command line.
//!
//! `cargo run --release -p veetance-fuzz -- --cases 10000000 workflow` runs ten million
//! workflow inputs; with no target named, every target runs. Exit status 1 if any input
//! panicked (each is saved under `--crashes`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use veetance_fuzz::Target;

/// Mutation fuzzing of Veetance's parsers of outside data.
#[derive(Debug, Parser)]
struct Args {
    /// Targets to run [default: all].
    #[arg(value_enum)]
    targets: Vec<Target>,
    /// Inputs per target.
    #[arg(long, default_value_t = 100_000)]
    cases: u64,
    /// Seed of the mutations (a run is reproducible from its seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where panicking inputs are saved.
    #[arg(long, default_value = "target/fuzz-crashes")]
    crashes: PathBuf,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let targets = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.targets.clone()
    };
    let mut crashed = false;
    for target in targets {
        let report = veetance_fuzz::run(target, &root, &args.crashes, args.cases, args.seed)?;
        println!(
            "{:<12} {:>10} cases in {:>8.1} s ({:>8.0}/s), slowest {:>7.1} ms, {} crashes",
            target.name(),
            report.cases,
            report.elapsed.as_secs_f64(),
            report.cases as f64 / report.elapsed.as_secs_f64().max(1e-9),
            report.slowest.as_secs_f64() * 1e3,
            report.crashes.len()
        );
        for crash in &report.crashes {
            println!("  crash: {}", crash.display());
        }
        crashed |= !report.crashes.is_empty();
    }
    Ok(if crashed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
