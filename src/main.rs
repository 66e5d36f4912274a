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
    tune_allocator();
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

/// Keeps freed tensor buffers in the heap instead of returning them to the OS.
///
/// candle allocates a fresh buffer for every op; with glibc's defaults each large one is a new
/// `mmap` whose pages are faulted in and zeroed again on every sampler step (about 10 % of a
/// step's time in `perf`, see docs/benchmarks.md). Raising the mmap and trim thresholds lets
/// the allocator reuse them. A user's own `MALLOC_*` settings win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20; // glibc's maximum on 64-bit
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only adjusts allocator parameters; it is called before any other
        // thread exists, so nothing allocates concurrently.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
