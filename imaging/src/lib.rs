//! Images, layers and their file formats. Knows no engine, no model and no UI.
//!
//! This crate is the edge of Veetance where pixels become files and files become pixels.
//! It speaks in plain 8-bit sRGB images (`image`'s [`RgbImage`] and [`RgbaImage`], re-exported
//! here so that callers need no direct dependency on `image`) and in [`Layers`], an ordered stack
//! of named RGBA layers, bottom to top.
//!
//! What lives where:
//! - [`pixels`]: the image and layer types, conversion from the float CHW tensors a VAE decoder
//!   produces, alpha-over compositing and preview thumbnails.
//! - [`split`]: `LayerSplit`, which turns one picture into a background plus object layers whose
//!   composite reproduces the picture within 1/255 per channel.
//! - [`png_meta`]: PNG writing with UTF-8 text metadata (iTXt), and reading that text back.
//!   The workflow that made a picture travels inside the picture this way.
//! - [`layered_psd`]: our own layered PSD writer; no crate we trust writes PSDs.
//! - [`codecs`]: decoding PNG, JPEG and WebP, and encoding JPEG and lossless WebP.
//! - [`output`]: atomic, never-overwriting file creation with numbered suffixes.
//! - [`export`](mod@export): the Export node's dispatch: format name → encoder → new file.
//!
//! The path the golden workflow takes, Decode → LayerSplit → Export:
//!
//! ```
//! use veetance_imaging::{ExportFormat, KEY_WORKFLOW, export, layer_split, rgb8_from_chw_f32};
//!
//! # fn main() -> Result<(), veetance_imaging::ImagingError> {
//! // A VAE decoder's output: three planes of height × width values in [-1, 1].
//! let (height_px, width_px) = (32, 48);
//! let decoded = vec![0.25_f32; 3 * height_px * width_px];
//! let picture = rgb8_from_chw_f32(&decoded, height_px as u32, width_px as u32)?;
//! let layers = layer_split(&picture, 4)?;
//!
//! let dir = tempfile::tempdir()?;
//! let prefix = dir.path().join("golden");
//! let texts = [(KEY_WORKFLOW, "Workflow(version: 1, name: \"golden\", nodes: {})")];
//! let png = export(&prefix, ExportFormat::Png, Some(&picture), None, &texts)?;
//! let psd = export(&prefix, ExportFormat::Psd, None, Some(&layers), &texts)?;
//! assert_eq!(png, dir.path().join("golden.png"));
//! assert_eq!(psd, dir.path().join("golden.psd"));
//! # Ok(())
//! # }
//! ```
//!
//! Architecture invariants:
//! - No engine, model, tensor library or UI types appear here; tensors arrive as `&[f32]`.
//! - Encoders write into any [`std::io::Write`]; only [`output`] touches the file system, so
//!   every format gets the same atomic, no-clobber guarantee by composing the two.
//! - Everything is deterministic: the same input gives the same bytes, which is what lets the
//!   engine cache outputs and lets a workflow embedded in a PNG replay bit for bit.
//! - Library code never panics on bad input: errors are [`ImagingError`] values.

#![forbid(unsafe_code)]
// Indexing that can panic is a crash waiting for an odd picture size; library code uses `.get()`.
// (clippy.toml allows indexing in tests.)
#![warn(clippy::indexing_slicing)]

pub mod codecs;
mod error;
pub mod export;
pub mod input;
pub mod layered_psd;
pub mod output;
pub mod pixels;
pub mod png_meta;
pub mod split;

pub use codecs::{load_image, load_image_rgba, write_jpeg, write_webp_lossless};
pub use error::ImagingError;
pub use export::{ExportFormat, export};
pub use image::{Rgb, RgbImage, Rgba, RgbaImage};
pub use input::{MAX_INPUT_FILE_BYTES, read_regular_file};
pub use layered_psd::write_psd;
pub use output::{write_new_file, write_new_file_bytes};
pub use pixels::{
    ImageRef, Layer, Layers, center_crop, chw_f32_from_rgb8, composite, resize_lanczos,
    rgb8_from_chw_f32, thumbnail,
};
pub use png_meta::{
    KEY_PARAMETERS, KEY_WORKFLOW, MAX_TEXT_BYTES, read_png_rgba, read_png_text, read_png_workflow,
    write_png,
};
pub use split::layer_split;

/// Shorthand for results whose error is [`ImagingError`].
pub type Result<T, E = ImagingError> = std::result::Result<T, E>;
