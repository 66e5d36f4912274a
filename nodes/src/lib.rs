//! The built-in nodes of Veetance, one file per node, and [`registry`] which registers them
//! all.
//!
//! Port names and types are listed in docs/nodes.md (generated from the specs): workflow files
//! name them, so they are part of the format and never renamed. Each node is a thin adapter: model work lives in
//! `veetance-models`, pixels and file formats in `veetance-imaging`; what a node adds is
//! validation of its inputs, progress and cancellation, and the payload types that carry
//! tensors, images and models between nodes (`payload.rs`).

#![forbid(unsafe_code)]

mod compile;
mod decode;
mod device;
mod encode;
mod encode_image;
mod export;
mod latent_io;
mod layer_split;
mod load;
mod load_image;
mod load_lora;
pub mod models;
mod payload;
mod placement;
mod preview;
mod reference;
mod sage_attention;
mod sample;
mod save_conditioning;
mod tensor_io;
pub mod types;

use veetance_engine::{Registry, RegistryError};

pub use load::{builtin_tiny_dir, resolve_model_path};
/// Whether this build can use a device at all (`--device cuda` without CUDA support is refused
/// before a run, even a fully cached one).
pub use veetance_models::device::check_build_supports;
/// Chat templates: what one rendering needs, and routing every rendering of the process through
/// another renderer (the binary runs them in a child process under limits).
pub use veetance_models::qwen3::{
    RenderJob as ChatTemplateJob, isolate_renders as isolate_chat_templates,
};

/// Every built-in node and the data types they pass.
pub fn registry() -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    types::register(&mut registry)?;
    registry.register_kind::<load::Load>()?;
    registry.register_kind::<encode::Encode>()?;
    registry.register_kind::<load_lora::LoadLoRA>()?;
    registry.register_kind::<sage_attention::SageAttention>()?;
    registry.register_kind::<compile::Compile>()?;
    registry.register_kind::<reference::Reference>()?;
    registry.register_kind::<sample::Sample>()?;
    registry.register_kind::<decode::Decode>()?;
    registry.register_kind::<encode_image::EncodeImage>()?;
    registry.register_kind::<layer_split::LayerSplit>()?;
    registry.register_kind::<export::Export>()?;
    registry.register_kind::<load_image::LoadImage>()?;
    registry.register_kind::<latent_io::SaveLatent>()?;
    registry.register_kind::<latent_io::LoadLatent>()?;
    registry.register_kind::<save_conditioning::SaveConditioning>()?;
    registry.register_kind::<preview::Preview>()?;
    Ok(registry)
}

/// The kinds whose specs say their inputs describe what a run makes (Export records them).
pub(crate) fn describing_kinds() -> &'static [String] {
    static KINDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KINDS.get_or_init(|| {
        registry()
            .map(|r| {
                r.nodes_sorted()
                    .into_iter()
                    .filter(|n| n.spec().describes_output)
                    .map(|n| n.spec().kind.clone())
                    .collect()
            })
            .unwrap_or_default()
    })
}
