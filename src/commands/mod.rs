//! One module per subcommand.

mod edit;
mod models;
mod nodes;
mod run;
pub mod template;
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
        Command::Bench(BenchCommand::Engine(args)) => veetance_bench::engine::run(&args),
        Command::Bench(BenchCommand::Gpu(args)) => veetance_bench::gpu::run(&args),
        Command::RenderTemplate => template::child(),
    }
}
