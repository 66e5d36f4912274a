//! One module per subcommand.

mod bench;
mod bench_gpu;
mod edit;
mod models;
mod nodes;
mod run;
mod validate;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{BenchCommand, Cli, Command};

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Validate(args) => validate::validate(&args),
        Command::Nodes(args) => nodes::nodes(&args),
        Command::Edit(args) => edit::edit(&args),
        Command::Models(args) => models::models(&args),
        Command::Bench(BenchCommand::Engine(args)) => bench::engine(&args),
        Command::Bench(BenchCommand::Gpu(args)) => bench_gpu::gpu(&args),
    }
}
