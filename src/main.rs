//! The `veetance` command line: a thin shell over the engine and the built-in nodes.
//!
//! Exit codes: 0 success; 1 a node failed or the run was cancelled; 2 invalid input (an
//! unreadable file, validation errors, a bad `--set`, bad flags).

/// `println!` that returns an error instead of panicking when standard output cannot be written
/// (a full disk: `> /dev/full`). A closed pipe never gets here: SIGPIPE ends the process quietly,
/// as it ends `cat` (see `restore_sigpipe`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(crate::stdout_error)
    }};
}

/// `print!` with `outln!`'s error handling.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        write!(stdout, $($arg)*).and_then(|()| stdout.flush()).map_err(crate::stdout_error)
    }};
}

mod cli;
mod commands;
mod events;
mod input;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    restore_sigpipe();
    tune_allocator();
    // Checkpoints' chat templates run in a child process under limits (commands/template.rs).
    veetance_nodes::isolate_chat_templates(commands::template::render_in_child);
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

/// The error for a failed write to standard output.
fn stdout_error(err: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot write to standard output: {err}")
}

/// Lets SIGPIPE end the process, as it ends other Unix tools, when a reader of our output goes
/// away (`veetance nodes --json | head`). Rust ignores SIGPIPE by default, which turns every
/// later `println!` into a panic.
#[cfg(unix)]
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default is async-signal-safe and happens
    // before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}

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
