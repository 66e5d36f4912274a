//! CUDA kernels for Veetance, applied to candle tensors.
//!
//! Knows no model: the functions take and return [`candle_core::Tensor`]s and the models crate
//! decides when to call them. Every entry point exists in every build; without the `cuda` feature
//! (CI, CPU-only machines) they return an error saying so, and [`is_built`] lets callers pick
//! their portable path instead.
//!
//! - [`attention`]: fused exact attention and SageAttention (INT8 Q·Kᵀ, f16 P·V), no L×L matrix.
//! - [`conv`]: convolution (coalesced im2col + cuBLAS) and GroupNorm (+ SiLU) for the VAE.
//! - [`fused`]: LayerNorm + modulation, gate + residual, SwiGLU, QK-RMSNorm + RoPE + layout, and
//!   FP8 weight decoding (bytes × row scale).
//! - [`graph`]: CUDA graph capture and replay around candle work.
//! - [`memory`]: VRAM in use and peak since a reset (the bench's "peak VRAM"), and page-locking
//!   of CPU tensors' RAM for fast copies to the GPU, and a hard VRAM limit (a capped memory pool).
//! - [`upload`]: copies to the GPU on a second stream, for streaming layers in during compute.
//!
//! The kernels are CUDA C++ in `kernels/`, compiled to PTX by `build.rs` with nvcc and loaded by
//! the driver on first use.

pub mod attention;
pub mod conv;
pub mod fused;
pub mod graph;
#[cfg(feature = "cuda")]
mod launch;
pub mod memory;
pub mod upload;

/// Whether this build contains the CUDA kernels.
pub fn is_built() -> bool {
    cfg!(feature = "cuda")
}
