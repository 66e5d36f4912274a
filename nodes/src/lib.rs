//! The built-in nodes of Veetance, one file per node, and [`registry`] which registers them
//! all.
//!
//! Port names and types follow the node table of the design document exactly: workflow files
//! name them, so they are part of the format. Each node is a thin adapter: model work lives in
//! `veetance-models`, pixels and file formats in `veetance-imaging`; what a node adds is
//! validation of its inputs, progress and cancellation, and the payload types that carry
//! tensors, images and models between nodes (`payload.rs`).

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
pub mod models;
mod payload;
mod preview;
mod sage_attention;
mod sample;
mod save_conditioning;
mod tensor_io;

use veetance_engine::Registry;

pub use load::{builtin_tiny_dir, resolve_model_path};

/// Every built-in node.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(load::node());
    registry.register(encode::node());
    registry.register(sage_attention::node());
    registry.register(compile::node());
    registry.register(sample::node());
    registry.register(decode::node());
    registry.register(encode_image::node());
    registry.register(layer_split::node());
    registry.register(export::node());
    registry.register(load_image::node());
    registry.register(latent_io::save_node());
    registry.register(latent_io::load_node());
    registry.register(save_conditioning::node());
    registry.register(preview::node());
    payload::register_decoders(&mut registry);
    registry
}
