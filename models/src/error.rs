//! The crate's error type: every failure names what was being done and, for files, which file.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Everything that can go wrong while loading or running a model.
///
/// Messages put the path last, so that long paths do not hide the reason.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading a file or directory failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A safetensors file is malformed or hostile (truncated, bad header, bad offsets, ...).
    #[error("invalid safetensors file: {reason}: {}", path.display())]
    InvalidSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A GGUF file is malformed or hostile, or has a tensor of a type we cannot read.
    #[error("invalid GGUF file: {reason}: {}", path.display())]
    InvalidGguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint's tensors do not match what the model configuration needs.
    #[error(
        "checkpoint does not match the model: {} missing {:?}, {} unexpected {:?}, {} with wrong shape {:?}: {}",
        missing.len(), missing, unexpected.len(), unexpected, mismatched.len(), mismatched, path.display()
    )]
    Keys {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// Tensor names the model needs but the checkpoint lacks.
        missing: Vec<String>,
        /// Tensor names the checkpoint has but the model does not use.
        unexpected: Vec<String>,
        /// `name: expected [..], found [..]` for every shape mismatch.
        mismatched: Vec<String>,
    },
    /// A configuration file is missing a field or has a value we cannot use.
    #[error("bad model configuration: {reason}: {}", path.display())]
    Config {
        /// The configuration file (or checkpoint, when the configuration is inferred).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A LoRA file that cannot be applied.
    #[error("cannot use LoRA: {reason}: {}", path.display())]
    Lora {
        /// The LoRA file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file could not be parsed.
    #[error("cannot parse JSON: {source}: {}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer error: {reason}")]
    Tokenizer {
        /// What went wrong.
        reason: String,
    },
    /// The chat template could not be compiled or rendered.
    #[error("chat template error: {reason}")]
    Template {
        /// What went wrong.
        reason: String,
    },
    /// A caller passed arguments the model cannot use (wrong shapes, sizes not multiples of 16, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The progress callback asked to stop; `completed_steps` steps had run.
    #[error("sampling cancelled after {completed_steps} of {total_steps} steps")]
    Cancelled {
        /// Steps finished before the cancel.
        completed_steps: usize,
        /// Steps requested.
        total_steps: usize,
    },
    /// A tensor operation failed.
    #[error("{context}: {source}")]
    Candle {
        /// What the crate was doing.
        context: String,
        /// candle's error.
        source: candle_core::Error,
    },
}

impl From<candle_core::Error> for ModelError {
    fn from(source: candle_core::Error) -> Self {
        ModelError::Candle {
            context: "tensor operation failed".to_string(),
            source: without_backtrace(source),
        }
    }
}

/// candle's error without the backtrace candle attaches when `RUST_BACKTRACE` is set: a user
/// reads the message, and forty frames of candle internals in it hide what went wrong.
pub fn without_backtrace(err: candle_core::Error) -> candle_core::Error {
    match err {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        candle_core::Error::WithPath { inner, path } => candle_core::Error::WithPath {
            inner: Box::new(without_backtrace(*inner)),
            path,
        },
        other => other,
    }
}

/// Adds context to candle results at API boundaries.
pub(crate) trait CandleContext<T> {
    /// Wraps a candle error with a description of what was being done.
    fn context(self, what: &str) -> Result<T>;
}

impl<T> CandleContext<T> for std::result::Result<T, candle_core::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|source| ModelError::Candle {
            context: what.to_string(),
            source: without_backtrace(source),
        })
    }
}

/// Longest configuration, template or index file read (real ones are kilobytes; Qwen's
/// `tokenizer_config.json` is 10 kB).
const MAX_TEXT_FILE_BYTES: u64 = 64 << 20;

/// Reads a small text file to a string, naming the file on failure.
pub(crate) fn read_to_string(path: &std::path::Path) -> Result<String> {
    crate::files::read_text(path, MAX_TEXT_FILE_BYTES)
}

/// Reads and parses a JSON file, naming the file on failure.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_are_left_out_of_messages() {
        let inner = candle_core::Error::Msg("shapes differ".into());
        let with_trace = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(with_trace.to_string().lines().count() > 1);
        let message = ModelError::from(with_trace).to_string();
        assert_eq!(message, "tensor operation failed: shapes differ");
    }
}
