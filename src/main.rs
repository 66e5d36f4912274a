//! The `veetance` command line: a thin shell over the engine and the built-in nodes.
//!
//! Exit codes: 0 success; 1 a node failed or the run was cancelled; 2 invalid input (an
//! unreadable file, validation errors, a bad `--set`, bad flags).

mod cli;
mod commands;
mod events;
mod input;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
