//! The data types the built-in nodes pass between them, registered with the engine with their
//! documentation, editor colour and disk-cache decoder (see `payload.rs` for what each holds).

use veetance_engine::{DataType, Registry, RegistryError, TypeInfo};

use crate::payload::{decode_image, decode_layers, decode_references, decode_tensor};

/// A FLUX.2 denoising transformer (with its attention backend and Compile state).
pub const MODEL: DataType = DataType::new("Model");
/// A text encoder with its tokenizer and chat template.
pub const TEXT_ENCODER: DataType = DataType::new("TextEncoder");
/// An image autoencoder.
pub const VAE: DataType = DataType::new("Vae");
/// Text conditioning `[B, L, C]`.
pub const CONDITIONING: DataType = DataType::new("Conditioning");
/// A latent image `[B, 128, h, w]` in the space the model samples in.
pub const LATENT: DataType = DataType::new("Latent");
/// An RGB image.
pub const IMAGE: DataType = DataType::new("Image");
/// An ordered stack of RGBA layers, bottom to top.
pub const LAYERS: DataType = DataType::new("Layers");
/// Reference pictures for editing, encoded, in order (FLUX.2 multi-reference conditioning).
pub const REFERENCES: DataType = DataType::new("References");

/// Registers every type above.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    let types = [
        TypeInfo::new(
            MODEL,
            "A denoising model (transformer).",
            [0xb3, 0x7f, 0xeb],
        ),
        TypeInfo::new(
            TEXT_ENCODER,
            "A text encoder with its tokenizer and chat template.",
            [0xff, 0xd5, 0x00],
        ),
        TypeInfo::new(VAE, "An image autoencoder.", [0xff, 0x6e, 0x6e]),
        TypeInfo::new(
            CONDITIONING,
            "Text conditioning for a model.",
            [0xff, 0xa9, 0x31],
        )
        .decoder(decode_tensor),
        TypeInfo::new(
            LATENT,
            "A latent image in the space the model samples in.",
            [0xff, 0x9c, 0xf9],
        )
        .decoder(decode_tensor),
        TypeInfo::new(IMAGE, "An RGB image.", [0x64, 0xb5, 0xf6]).decoder(decode_image),
        TypeInfo::new(
            LAYERS,
            "An ordered stack of RGBA layers, bottom to top.",
            [0x81, 0xc7, 0x84],
        )
        .decoder(decode_layers),
        TypeInfo::new(
            REFERENCES,
            "Reference pictures for editing, encoded, in order.",
            [0x4d, 0xd0, 0xe1],
        )
        .decoder(decode_references),
    ];
    for info in types {
        registry.register_type(info)?;
    }
    Ok(())
}
