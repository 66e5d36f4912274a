//! Training the built-in tiny model (`Load(model: "tiny")`) on procedural scenes.
//!
//! The tiny model is a complete FLUX.2 \[klein\]-architecture checkpoint, only small: a Qwen3 text
//! encoder with its own word-level tokenizer and the Qwen chat template, a FLUX.2 transformer and a
//! FLUX.2 VAE with 8× downsampling, so a 64×64 image is a 4×4 token grid. It is trained here on
//! [`veetance_scenes`] captions and written in the diffusers layout that
//! [`veetance_models::Bundle::load`] reads, so it runs through exactly the code real checkpoints do.
//!
//! - [`tiny`]: architecture, tokenizer and the files of the checkpoint directory.
//! - [`params`]: trainable parameters named like checkpoint tensors, and their EMA.
//! - [`run`]: the training phases (VAE, latent statistics, transformer + text encoder), checkpoints
//!   and resume.
//! - [`curve`]: the loss log as CSV and PNG.
//! - [`quality`]: sampling the exported model and the quality gates.
//!
//! Training needs gradients through the models crate's own forward passes; candle's fused kernels
//! have none, so every model is built with `with_differentiable(true)` (see `veetance_models::ops`).

#![forbid(unsafe_code)]

pub mod curve;
pub mod params;
pub mod quality;
pub mod run;
pub mod tiny;

use std::path::{Path, PathBuf};

/// Everything that can fail while training or exporting.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Tensor arithmetic failed (shapes, device, out of memory).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Building or running a model failed.
    #[error(transparent)]
    Model(#[from] veetance_models::ModelError),
    /// A scene could not be drawn.
    #[error(transparent)]
    Scene(#[from] veetance_scenes::SceneError),
    /// A file could not be read or written.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A configuration could not be built or parsed.
    #[error("bad configuration: {0}")]
    Config(String),
    /// An image could not be written.
    #[error("cannot write image: {0}")]
    Image(String),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
