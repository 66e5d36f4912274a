//! `veetance models`: what the model folders hold, as Load sees it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use veetance_engine::format_bytes;
use veetance_nodes::models::{env_model_dirs, scan};

use crate::cli::ModelsArgs;

/// The folders searched for model names: `--models-dir` first, then `VEETANCE_MODELS`.
pub fn model_dirs(flags: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = flags.to_vec();
    for dir in env_model_dirs() {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

pub fn models(args: &ModelsArgs) -> Result<ExitCode> {
    let dirs = model_dirs(&args.models_dirs);
    let mut out = std::io::stdout().lock();
    if dirs.is_empty() {
        writeln!(
            out,
            "no model folders: set VEETANCE_MODELS (e.g. to ComfyUI's models folder) or pass --models-dir DIR"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let entries = scan(&dirs);
    if args.json {
        for e in &entries {
            let line = serde_json::json!({
                "name": e.name,
                "path": e.path,
                "kind": e.kind,
                "storage": e.storage,
                "size_bytes": e.size_bytes,
                "skipped": e.skipped,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for dir in &dirs {
        let state = if dir.is_dir() { "" } else { "  (not a folder)" };
        writeln!(out, "model folder {}{state}", dir.display())?;
    }
    let usable: Vec<_> = entries.iter().filter(|e| e.skipped.is_none()).collect();
    let skipped: Vec<_> = entries.iter().filter(|e| e.skipped.is_some()).collect();
    let name_width = usable
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let kind_width = usable
        .iter()
        .map(|e| e.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(out)?;
    writeln!(
        out,
        "{:<name_width$}  {:<kind_width$}  {:>9}  STORAGE",
        "NAME", "KIND", "SIZE"
    )?;
    for e in &usable {
        writeln!(
            out,
            "{:<name_width$}  {:<kind_width$}  {:>9}  {}",
            e.name,
            e.kind,
            format_bytes(e.size_bytes),
            e.storage
        )?;
    }
    if usable.is_empty() {
        writeln!(out, "(no usable models)")?;
    }
    if !skipped.is_empty() {
        writeln!(out, "\nskipped:")?;
        for e in &skipped {
            writeln!(
                out,
                "  {}: {}",
                e.name,
                e.skipped.as_deref().unwrap_or_default()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
