//! Decoding PNG, JPEG and WebP; encoding JPEG and lossless WebP.
//!
//! Thin wrappers over `image` that pin the accepted formats (only the codecs this crate is built
//! with) and turn "what is this file?" into a clear error instead of a codec's generic one.

use std::io::Write;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ImageFormat, RgbImage, RgbaImage};

use crate::pixels::ImageRef;
use crate::{ImagingError, Result};

/// Decodes PNG, JPEG or WebP bytes (detected from the content, not a file name) to RGB8.
///
/// An alpha channel is dropped, not composited (what PIL's `convert("RGB")` and so ComfyUI's
/// LoadImage do); use [`load_image_rgba`] to keep it. 16-bit and grey images are converted.
pub fn load_image(bytes: &[u8]) -> Result<RgbImage> {
    Ok(decode(bytes)?.to_rgb8())
}

/// Decodes PNG, JPEG or WebP bytes to RGBA8; formats without alpha come out opaque.
pub fn load_image_rgba(bytes: &[u8]) -> Result<RgbaImage> {
    Ok(decode(bytes)?.to_rgba8())
}

/// Encodes a baseline JPEG; `quality_percent` is clamped to 1..=100 (90 is a good default).
pub fn write_jpeg(writer: impl Write, image: &RgbImage, quality_percent: u8) -> Result<()> {
    check_not_empty(image.width(), image.height())?;
    let mut writer = writer;
    let encoder = JpegEncoder::new_with_quality(&mut writer, quality_percent.clamp(1, 100));
    image.write_with_encoder(encoder)?;
    Ok(())
}

/// Encodes a lossless WebP, RGB or RGBA.
pub fn write_webp_lossless<'a>(writer: impl Write, image: impl Into<ImageRef<'a>>) -> Result<()> {
    let image = image.into();
    check_not_empty(image.width_px(), image.height_px())?;
    let encoder = WebPEncoder::new_lossless(writer);
    match image {
        ImageRef::Rgb(image) => image.write_with_encoder(encoder)?,
        ImageRef::Rgba(image) => image.write_with_encoder(encoder)?,
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<image::DynamicImage> {
    let format = match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => format,
        Ok(other) => {
            return Err(ImagingError::UnsupportedFormat {
                detected: format!("{other:?}"),
            });
        }
        Err(_) => {
            let detected = if bytes.is_empty() {
                "empty input".to_owned()
            } else {
                "unrecognised content".to_owned()
            };
            return Err(ImagingError::UnsupportedFormat { detected });
        }
    };
    Ok(image::load_from_memory_with_format(bytes, format)?)
}

fn check_not_empty(width_px: u32, height_px: u32) -> Result<()> {
    if width_px == 0 || height_px == 0 {
        return Err(ImagingError::EmptyImage {
            width_px,
            height_px,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use image::{Rgb, Rgba};

    use super::*;

    fn test_picture() -> RgbImage {
        RgbImage::from_fn(24, 16, |x, y| Rgb([(x * 10) as u8, (y * 15) as u8, 200]))
    }

    #[test]
    fn png_decodes_to_the_same_pixels() {
        let picture = test_picture();
        let mut bytes = Vec::new();
        crate::write_png(&mut bytes, &picture, &[("k", "v")]).unwrap();
        assert_eq!(load_image(&bytes).unwrap(), picture);
    }

    #[test]
    fn webp_lossless_round_trips_exactly() {
        let picture = test_picture();
        let mut bytes = Vec::new();
        write_webp_lossless(&mut bytes, &picture).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(load_image(&bytes).unwrap(), picture);

        let translucent = RgbaImage::from_fn(8, 8, |x, y| Rgba([10, 20, 30, (x * 30 + y) as u8]));
        let mut bytes = Vec::new();
        write_webp_lossless(&mut bytes, &translucent).unwrap();
        assert_eq!(load_image_rgba(&bytes).unwrap(), translucent);
    }

    #[test]
    fn jpeg_round_trips_approximately() {
        let picture = RgbImage::from_pixel(32, 32, Rgb([200, 40, 90]));
        let mut bytes = Vec::new();
        write_jpeg(&mut bytes, &picture, 95).unwrap();
        assert_eq!(&bytes[..2], &[0xff, 0xd8]);
        let back = load_image(&bytes).unwrap();
        assert_eq!(back.dimensions(), (32, 32));
        for (a, b) in back.pixels().zip(picture.pixels()) {
            for (ca, cb) in a.0.iter().zip(b.0) {
                assert!(ca.abs_diff(cb) <= 3, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn unknown_and_empty_input_are_clear_errors() {
        let err = load_image(b"definitely not an image").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported image format (unrecognised content); expected PNG, JPEG or WebP"
        );
        let err = load_image(&[]).unwrap_err();
        assert!(err.to_string().contains("empty input"), "{err}");
        // A GIF header is recognised but not accepted: the crate is built without GIF.
        let err = load_image(b"GIF89a\x01\x00\x01\x00").unwrap_err();
        assert!(err.to_string().contains("Gif"), "{err}");
    }

    #[test]
    fn truncated_png_is_a_codec_error() {
        let mut bytes = Vec::new();
        crate::write_png(&mut bytes, &test_picture(), &[] as &[(&str, &str)]).unwrap();
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(load_image(&bytes), Err(ImagingError::Codec(_))));
    }
}
