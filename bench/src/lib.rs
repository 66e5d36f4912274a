//! Veetance's measurements, behind `veetance bench`: the engine's own overhead on synthetic
//! graphs of trivial nodes ([`engine`]), and FLUX.2 \[klein\] ms per step, peak VRAM and seconds
//! per image on full-size models with random weights ([`gpu`]).
//!
//! Every number is printed with what produced it; `bench/torch_gpu.py` measures the PyTorch peer
//! of [`gpu`] on the same configurations, and docs/benchmarks.md holds the results.
//!
//! A crate of its own so that the binary stays thin and the measurements can use the model crate
//! directly; it is the implementation of two subcommands, not a library API, so its errors are
//! `anyhow` errors that are printed, never matched on.

#![forbid(unsafe_code)]

pub mod engine;
pub mod gpu;

/// Prints one line on standard output; a failed write (a full disk) is an error, not a panic.
fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{line}")
        .map_err(|err| anyhow::anyhow!("cannot write to standard output: {err}"))
}
