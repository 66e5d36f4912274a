//! One call per export: pick what to write for a format, encode it, and create the file
//! atomically under a fresh name.
//!
//! This is the format dispatch the Export node needs, kept here so that the node stays a thin
//! adapter and every format gets the same no-clobber, atomic guarantee from [`write_new_file`].

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::{DynamicImage, RgbImage, RgbaImage};

use crate::codecs::{write_jpeg, write_webp_lossless};
use crate::layered_psd::write_psd;
use crate::output::write_new_file;
use crate::pixels::{ImageRef, Layers, composite};
use crate::png_meta::write_png;
use crate::{ImagingError, Result};

/// JPEG quality used by [`export`]; high enough that generated images show no blocking.
pub const JPEG_QUALITY_PERCENT: u8 = 92;

/// The file formats Export writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// PNG, with the texts as iTXt chunks.
    Png,
    /// Layered PSD.
    Psd,
    /// Baseline JPEG at [`JPEG_QUALITY_PERCENT`].
    Jpeg,
    /// Lossless WebP.
    Webp,
}

impl ExportFormat {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Png => "png",
            ExportFormat::Psd => "psd",
            ExportFormat::Jpeg => "jpg",
            ExportFormat::Webp => "webp",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = ImagingError;

    /// Accepts `png`, `psd`, `jpg`, `jpeg` and `webp`, in any case.
    fn from_str(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "png" => Ok(ExportFormat::Png),
            "psd" => Ok(ExportFormat::Psd),
            "jpg" | "jpeg" => Ok(ExportFormat::Jpeg),
            "webp" => Ok(ExportFormat::Webp),
            _ => Err(ImagingError::UnknownExportFormat {
                name: name.to_owned(),
            }),
        }
    }
}

/// Writes `image` and/or `layers` as `format` to a new file named from `path_prefix` (see
/// [`write_new_file`]) and returns its path.
///
/// - PSD writes the layers; given only an image, a one-layer PSD named "image".
/// - PNG, JPEG and WebP write the image; given only layers, their composite (JPEG drops its
///   alpha, which LayerSplit's opaque background never has).
/// - `texts` go into PNG iTXt chunks; the other formats carry none.
pub fn export<K, V>(
    path_prefix: &Path,
    format: ExportFormat,
    image: Option<&RgbImage>,
    layers: Option<&Layers>,
    texts: &[(K, V)],
) -> Result<PathBuf>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let extension = format.extension();
    match format {
        ExportFormat::Psd => {
            let layers = layers_for_psd(image, layers)?;
            write_new_file(path_prefix, extension, |writer| write_psd(writer, &layers))
        }
        ExportFormat::Png => {
            let flat = Flat::new(image, layers)?;
            write_new_file(path_prefix, extension, |writer| {
                write_png(writer, flat.as_image_ref(), texts)
            })
        }
        ExportFormat::Webp => {
            let flat = Flat::new(image, layers)?;
            write_new_file(path_prefix, extension, |writer| {
                write_webp_lossless(writer, flat.as_image_ref())
            })
        }
        ExportFormat::Jpeg => {
            let rgb = match Flat::new(image, layers)? {
                Flat::Image(image) => Cow::Borrowed(image),
                Flat::Composite(composite) => {
                    Cow::Owned(DynamicImage::ImageRgba8(composite).to_rgb8())
                }
            };
            write_new_file(path_prefix, extension, |writer| {
                write_jpeg(writer, &rgb, JPEG_QUALITY_PERCENT)
            })
        }
    }
}

/// The layers to write as PSD: the stack itself, or a one-layer stack made from the image.
fn layers_for_psd<'a>(
    image: Option<&RgbImage>,
    layers: Option<&'a Layers>,
) -> Result<Cow<'a, Layers>> {
    match (layers, image) {
        (Some(layers), _) => Ok(Cow::Borrowed(layers)),
        (None, Some(image)) => {
            let mut stack = Layers::new(image.width(), image.height());
            stack.push("image", DynamicImage::ImageRgb8(image.clone()).to_rgba8())?;
            Ok(Cow::Owned(stack))
        }
        (None, None) => Err(ImagingError::NothingToExport),
    }
}

/// The single picture a flat format writes: the image, or else the layers' composite.
enum Flat<'a> {
    Image(&'a RgbImage),
    Composite(RgbaImage),
}

impl<'a> Flat<'a> {
    fn new(image: Option<&'a RgbImage>, layers: Option<&Layers>) -> Result<Self> {
        match (image, layers) {
            (Some(image), _) => Ok(Flat::Image(image)),
            (None, Some(layers)) => Ok(Flat::Composite(composite(layers))),
            (None, None) => Err(ImagingError::NothingToExport),
        }
    }

    fn as_image_ref(&self) -> ImageRef<'_> {
        match self {
            Flat::Image(image) => ImageRef::Rgb(image),
            Flat::Composite(composite) => ImageRef::Rgba(composite),
        }
    }
}
