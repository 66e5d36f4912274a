//! FLUX.2 \[klein\] transformer (Black Forest Labs, 2026): a double- and single-stream MMDiT with
//! modulation shared across blocks, SwiGLU MLPs, QK-RMSNorm and 4-axis RoPE.
//!
//! - Reference: diffusers `Flux2Transformer2DModel` (`diffusers/models/transformers/transformer_flux2.py`,
//!   0.42.1) and BFL's `flux2` repository (`flux2/src/flux2/model.py`).
//! - Weights: `black-forest-labs/FLUX.2-klein-4B` / `-9B` (diffusers directories and BFL single
//!   files), ComfyUI's `diffusion_models/` files (FP8 too), community GGUF files.
//! - Try it: `veetance run workflows/golden.ron --set load.model=/path/to/FLUX.2-klein-4B`.
//!
//! Files: [`config`] (hyper-parameters, presets, inference from shapes), [`keys`] (the internal
//! tensor names and each checkpoint layout's mapping), [`model`] (weights and forward pass),
//! [`placement`] (RAM ↔ VRAM, page-locking), [`lora`] (adapters), [`compile`] (Compile's precomputation) and
//! [`cuda_graph`] (capture and replay of a compiled step).

pub mod compile;
pub mod config;
pub mod cuda_graph;
pub mod keys;
pub mod lora;
pub mod model;
pub mod placement;

pub use config::{Flux2Config, infer_config};
pub use keys::{CheckpointLayout, detect_layout};
pub use lora::{LoraApplied, LoraMerge};
pub use model::{COMFY_PREFIXES, Flux2Transformer, RopeTables, image_ids, text_ids};
