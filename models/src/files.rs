//! Opening checkpoint files safely: only regular files, read with size limits.
//!
//! A model path is user input. A FIFO, a character device (`/dev/zero`) or a socket named as a
//! checkpoint must give an error, not block forever in `open()` or read until memory runs out.

use std::fs::File;
use std::path::Path;

use crate::error::{ModelError, Result};

/// Opens `path` for reading if it is a regular file (following symbolic links).
///
/// The type is checked before opening, because opening a FIFO for reading blocks until a writer
/// appears; it is checked again on the open handle, in case the path was swapped in between.
pub fn open_regular(path: &Path) -> Result<File> {
    let not_regular = || ModelError::Config {
        path: path.to_path_buf(),
        reason: "not a regular file (a FIFO, device or socket cannot be a checkpoint)".into(),
    };
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Reads a small text file (configuration, template, tokenizer) of at most `limit_bytes`.
pub fn read_text(path: &Path, limit_bytes: u64) -> Result<String> {
    use std::io::Read as _;
    let file = open_regular(path)?;
    let mut text = String::new();
    file.take(limit_bytes.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > limit_bytes {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("larger than the {limit_bytes}-byte limit for this kind of file"),
        });
    }
    Ok(text)
}

/// Reads a file of at most `limit_bytes` as bytes.
pub fn read_bytes(path: &Path, limit_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit_bytes {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("larger than the {limit_bytes}-byte limit for this kind of file"),
        });
    }
    Ok(bytes)
}

/// Where a model part's diffusers `config.json` is: inside a component folder, or beside a single
/// file as `<name>.config.json` (for files whose configuration cannot be read from their shapes,
/// such as a VAE with an unusual GroupNorm group count).
pub fn config_path(part: &Path) -> std::path::PathBuf {
    if part.is_dir() {
        part.join("config.json")
    } else {
        part.with_extension("config.json")
    }
}
