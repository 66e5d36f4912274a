//! Helpers shared by the binary's end-to-end tests: running `veetance` hermetically, reading its
//! output, and converting the tiny model to other file layouts (`convert`).

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

pub mod convert;

use std::path::Path;
use std::process::{Command, Output};

/// The repository root, where the shipped workflows are.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A cache folder for this test process (under cargo's test scratch folder in `target/`), so
/// that runs without `--cache-dir` neither read nor fill the developer's own cache, nor each
/// other's.
fn cache_home() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("xdg-cache-{}", std::process::id()))
}

/// The binary, started in the repository root, with no backtraces, no model folders from the
/// developer's environment and a cache of its own.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_veetance"));
    command
        .current_dir(repo())
        .env("RUST_BACKTRACE", "0")
        .env("XDG_CACHE_HOME", cache_home())
        .env_remove("VEETANCE_MODELS")
        .env_remove("VEETANCE_TINY_DIR");
    command
}

/// Runs the binary with `args` to completion.
pub fn veetance(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
