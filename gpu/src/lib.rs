//! CUDA kernels for Veetance, applied to candle tensors.
//!
//! Knows no model: the functions take and return [`candle_core::Tensor`]s and the models crate
//! decides when to call them. Every entry point exists in every build; without the `cuda` feature
//! (CI, CPU-only machines) they return an error saying so, and [`is_built`] lets callers pick
//! their portable path instead.
//!
//! - [`memory`]: VRAM in use and peak since a reset (the bench's "peak VRAM").

pub mod memory;

/// Whether this build contains the CUDA kernels.
pub fn is_built() -> bool {
    cfg!(feature = "cuda")
}
