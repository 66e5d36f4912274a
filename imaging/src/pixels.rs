//! Image and layer types, float-tensor conversion and alpha-over compositing.
//!
//! Pixels are 8-bit sRGB, not premultiplied, the way PNG and PSD store them.
//! Compositing happens in that same sRGB space (as Photoshop, GIMP and psd-tools do by default),
//! because a composite that differs from what those tools show would make "the PSD matches the
//! PNG" untrue.

use image::{RgbImage, RgbaImage};

use crate::{ImagingError, Result};

/// A borrowed RGB or RGBA image, for writers that accept both.
#[derive(Clone, Copy, Debug)]
pub enum ImageRef<'a> {
    /// Three channels, opaque.
    Rgb(&'a RgbImage),
    /// Four channels, straight (not premultiplied) alpha.
    Rgba(&'a RgbaImage),
}

impl ImageRef<'_> {
    /// Width in pixels.
    pub fn width_px(&self) -> u32 {
        match self {
            ImageRef::Rgb(image) => image.width(),
            ImageRef::Rgba(image) => image.width(),
        }
    }

    /// Height in pixels.
    pub fn height_px(&self) -> u32 {
        match self {
            ImageRef::Rgb(image) => image.height(),
            ImageRef::Rgba(image) => image.height(),
        }
    }

    /// The interleaved 8-bit samples, row by row.
    pub fn samples(&self) -> &[u8] {
        match self {
            ImageRef::Rgb(image) => image.as_raw(),
            ImageRef::Rgba(image) => image.as_raw(),
        }
    }
}

impl<'a> From<&'a RgbImage> for ImageRef<'a> {
    fn from(image: &'a RgbImage) -> Self {
        ImageRef::Rgb(image)
    }
}

impl<'a> From<&'a RgbaImage> for ImageRef<'a> {
    fn from(image: &'a RgbaImage) -> Self {
        ImageRef::Rgba(image)
    }
}

/// One named RGBA layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Shown in layer panels (Photoshop, GIMP, psd-tools); any Unicode.
    pub name: String,
    /// Straight-alpha pixels, the size of the stack.
    pub image: RgbaImage,
}

/// An ordered stack of named RGBA layers of one size, bottom first.
///
/// The stack guarantees that every layer has the stack's size, so writers and [`composite`]
/// need not check it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layers {
    width_px: u32,
    height_px: u32,
    layers: Vec<Layer>,
}

impl Layers {
    /// An empty stack of the given size.
    pub fn new(width_px: u32, height_px: u32) -> Self {
        Layers {
            width_px,
            height_px,
            layers: Vec::new(),
        }
    }

    /// Puts a layer on top of the stack.
    pub fn push(&mut self, name: impl Into<String>, image: RgbaImage) -> Result<()> {
        let name = name.into();
        if image.width() != self.width_px || image.height() != self.height_px {
            return Err(ImagingError::LayerSizeMismatch {
                name,
                width_px: image.width(),
                height_px: image.height(),
                stack_width_px: self.width_px,
                stack_height_px: self.height_px,
            });
        }
        self.layers.push(Layer { name, image });
        Ok(())
    }

    /// Width of every layer, in pixels.
    pub fn width_px(&self) -> u32 {
        self.width_px
    }

    /// Height of every layer, in pixels.
    pub fn height_px(&self) -> u32 {
        self.height_px
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the stack has no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer at `layer_idx` (0 is the bottom).
    pub fn get(&self, layer_idx: usize) -> Option<&Layer> {
        self.layers.get(layer_idx)
    }

    /// The layers, bottom first.
    pub fn as_slice(&self) -> &[Layer] {
        &self.layers
    }

    /// Iterates bottom to top.
    pub fn iter(&self) -> std::slice::Iter<'_, Layer> {
        self.layers.iter()
    }

    /// Gives the layers back, bottom first.
    pub fn into_vec(self) -> Vec<Layer> {
        self.layers
    }
}

impl<'a> IntoIterator for &'a Layers {
    type Item = &'a Layer;
    type IntoIter = std::slice::Iter<'a, Layer>;

    fn into_iter(self) -> Self::IntoIter {
        self.layers.iter()
    }
}

/// Composites the stack bottom to top with Porter-Duff source-over, straight alpha.
///
/// Accumulates in `f32` and rounds once at the end, so a stack of many layers does not drift by
/// repeated rounding. An empty stack gives a fully transparent image.
pub fn composite(layers: &Layers) -> RgbaImage {
    let n_pixels = layers.width_px as usize * layers.height_px as usize;
    // Premultiplied accumulators: source-over is a plain lerp in that form.
    let mut premultiplied: Vec<[f32; 4]> = vec![[0.0; 4]; n_pixels];
    for layer in layers {
        for (acc, src) in premultiplied.iter_mut().zip(layer.image.pixels()) {
            let [r, g, b, a] = src.0;
            let src_alpha = f32::from(a) / 255.0;
            let keep = 1.0 - src_alpha;
            acc[0] = f32::from(r) / 255.0 * src_alpha + acc[0] * keep;
            acc[1] = f32::from(g) / 255.0 * src_alpha + acc[1] * keep;
            acc[2] = f32::from(b) / 255.0 * src_alpha + acc[2] * keep;
            acc[3] = src_alpha + acc[3] * keep;
        }
    }
    let mut out = RgbaImage::new(layers.width_px, layers.height_px);
    for (dst, acc) in out.pixels_mut().zip(&premultiplied) {
        let alpha = acc[3];
        if alpha <= 0.0 {
            continue;
        }
        let unpremultiply = |c: f32| unit_to_u8(c / alpha);
        dst.0 = [
            unpremultiply(acc[0]),
            unpremultiply(acc[1]),
            unpremultiply(acc[2]),
            unit_to_u8(alpha),
        ];
    }
    out
}

/// Converts a float image in CHW layout with values in [-1, 1] (a VAE decoder's output) to RGB8.
///
/// Uses the same mapping as diffusers' `VaeImageProcessor`: `round(clamp(v / 2 + 0.5, 0, 1) * 255)`.
/// NaN becomes 0, so a diverged decode shows as black rather than failing the run.
pub fn rgb8_from_chw_f32(values: &[f32], height_px: u32, width_px: u32) -> Result<RgbImage> {
    let n_plane = height_px as usize * width_px as usize;
    if values.len() != 3 * n_plane {
        return Err(ImagingError::ShapeMismatch {
            n_values: values.len(),
            n_channels: 3,
            height_px,
            width_px,
        });
    }
    let (red, rest) = values.split_at(n_plane);
    let (green, blue) = rest.split_at(n_plane);
    let mut out = RgbImage::new(width_px, height_px);
    for (((dst, r), g), b) in out.pixels_mut().zip(red).zip(green).zip(blue) {
        dst.0 = [
            signed_unit_to_u8(*r),
            signed_unit_to_u8(*g),
            signed_unit_to_u8(*b),
        ];
    }
    Ok(out)
}

/// Converts RGB8 to a float CHW buffer in [-1, 1], the input a VAE encoder expects.
///
/// The exact inverse of [`rgb8_from_chw_f32`] on its outputs.
pub fn chw_f32_from_rgb8(image: &RgbImage) -> Vec<f32> {
    let n_plane = image.width() as usize * image.height() as usize;
    let mut out = vec![0.0_f32; 3 * n_plane];
    let (red, rest) = out.split_at_mut(n_plane);
    let (green, blue) = rest.split_at_mut(n_plane);
    for (((pixel, r), g), b) in image.pixels().zip(red).zip(green).zip(blue) {
        let [pr, pg, pb] = pixel.0;
        *r = f32::from(pr) / 127.5 - 1.0;
        *g = f32::from(pg) / 127.5 - 1.0;
        *b = f32::from(pb) / 127.5 - 1.0;
    }
    out
}

/// Shrinks `image` to fit in `max_side_px` × `max_side_px`, keeping its aspect ratio (each side
/// at least one pixel); images that already fit are returned as they are. Area-averaging, so
/// fine detail turns into the right mean colour rather than aliasing. For previews.
pub fn thumbnail(image: &RgbImage, max_side_px: u32) -> RgbImage {
    let (width_px, height_px) = image.dimensions();
    let max_side_px = max_side_px.max(1);
    if width_px <= max_side_px && height_px <= max_side_px {
        return image.clone();
    }
    let scale = f64::from(max_side_px) / f64::from(width_px.max(height_px));
    let fit = |side_px: u32| ((f64::from(side_px) * scale).round() as u32).clamp(1, max_side_px);
    image::imageops::thumbnail(image, fit(width_px), fit(height_px))
}

/// Maps [-1, 1] to 0..=255 with rounding to nearest; out of range clamps, NaN gives 0.
fn signed_unit_to_u8(value: f32) -> u8 {
    unit_to_u8(value * 0.5 + 0.5)
}

/// Maps [0, 1] to 0..=255 with rounding to nearest; out of range clamps, NaN gives 0.
pub(crate) fn unit_to_u8(value: f32) -> u8 {
    // `as` saturates and maps NaN to 0, which is exactly the clamping wanted here.
    (value * 255.0).round() as u8
}

/// The `width_px` × `height_px` window at the centre of `image` (offsets rounded down, as PIL's
/// `crop((w - W) // 2, (h - H) // 2, ...)`); the window must fit inside the image.
pub fn center_crop(image: &RgbImage, width_px: u32, height_px: u32) -> Option<RgbImage> {
    let (w, h) = image.dimensions();
    if width_px > w || height_px > h {
        return None;
    }
    let (left, top) = ((w - width_px) / 2, (h - height_px) / 2);
    Some(image::imageops::crop_imm(image, left, top, width_px, height_px).to_image())
}

/// `image` resampled to `width_px` × `height_px` with a Lanczos-3 filter (PIL's `LANCZOS` is the
/// same filter; the two differ by rounding, a level or so per channel).
pub fn resize_lanczos(image: &RgbImage, width_px: u32, height_px: u32) -> RgbImage {
    image::imageops::resize(
        image,
        width_px.max(1),
        height_px.max(1),
        image::imageops::FilterType::Lanczos3,
    )
}

#[cfg(test)]
mod tests {
    use image::Rgba;

    use super::*;

    #[test]
    fn float_conversion_rounds_and_clamps() {
        // One pixel per value: 2x3 image, planes R, G, B.
        let values = [
            -1.0,
            1.0,
            0.0,
            2.0,
            -3.0,
            f32::NAN, // R
            -1.0,
            1.0,
            0.0,
            2.0,
            -3.0,
            f32::NAN, // G
            -1.0,
            1.0,
            0.0,
            2.0,
            -3.0,
            f32::NAN, // B
        ];
        let image = rgb8_from_chw_f32(&values, 2, 3).unwrap();
        let reds: Vec<u8> = image.pixels().map(|p| p.0[0]).collect();
        // 0.0 maps to 127.5, which rounds away from zero to 128 (as torch.round would not, but
        // diffusers rounds after a numpy uint8 cast of (x*255).round(), which also gives 128).
        assert_eq!(reds, [0, 255, 128, 255, 0, 0]);
    }

    #[test]
    fn float_conversion_keeps_planes_apart() {
        let mut values = vec![-1.0_f32; 3 * 4];
        values[4] = 1.0; // G plane, first pixel.
        values[11] = 1.0; // B plane, last pixel.
        let image = rgb8_from_chw_f32(&values, 2, 2).unwrap();
        assert_eq!(image.get_pixel(0, 0).0, [0, 255, 0]);
        assert_eq!(image.get_pixel(1, 1).0, [0, 0, 255]);
        assert_eq!(image.get_pixel(1, 0).0, [0, 0, 0]);
    }

    #[test]
    fn float_round_trip_is_exact() {
        let image = RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16 + y) as u8, (y * 16 + x) as u8, (x * y) as u8])
        });
        let back = rgb8_from_chw_f32(&chw_f32_from_rgb8(&image), 16, 16).unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn float_conversion_rejects_wrong_shape() {
        let err = rgb8_from_chw_f32(&[0.0; 11], 2, 2).unwrap_err();
        assert!(
            matches!(err, ImagingError::ShapeMismatch { n_values: 11, .. }),
            "{err}"
        );
    }

    #[test]
    fn thumbnail_fits_and_keeps_aspect() {
        let image = RgbImage::from_fn(256, 128, |x, _| image::Rgb([(x % 2 * 255) as u8, 0, 0]));
        let small = thumbnail(&image, 64);
        assert_eq!(small.dimensions(), (64, 32));
        // Alternating black and red columns average to half red.
        let red = small.get_pixel(10, 10).0[0];
        assert!((126..=129).contains(&red), "{red}");
        assert_eq!(
            thumbnail(&RgbImage::new(300, 100), 64).dimensions(),
            (64, 21)
        );
        assert_eq!(thumbnail(&image, 1000), image);
        assert_eq!(thumbnail(&RgbImage::new(1, 500), 10).dimensions(), (1, 10));
    }

    #[test]
    fn layers_reject_wrong_size() {
        let mut layers = Layers::new(4, 4);
        layers.push("ok", RgbaImage::new(4, 4)).unwrap();
        let err = layers.push("bad", RgbaImage::new(4, 5)).unwrap_err();
        assert!(err.to_string().contains("\"bad\" is 4x5"), "{err}");
        assert_eq!(layers.len(), 1);
    }

    #[test]
    fn composite_is_source_over() {
        let mut layers = Layers::new(1, 1);
        layers
            .push(
                "bottom",
                RgbaImage::from_pixel(1, 1, Rgba([0, 0, 255, 255])),
            )
            .unwrap();
        layers
            .push(
                "half red",
                RgbaImage::from_pixel(1, 1, Rgba([255, 0, 0, 128])),
            )
            .unwrap();
        let out = composite(&layers);
        // 255 * 128/255 = 128 red, 255 * 127/255 = 127 blue.
        assert_eq!(out.get_pixel(0, 0).0, [128, 0, 127, 255]);
    }

    #[test]
    fn composite_of_translucent_layers_unpremultiplies() {
        let mut layers = Layers::new(1, 1);
        layers
            .push("a", RgbaImage::from_pixel(1, 1, Rgba([200, 100, 0, 128])))
            .unwrap();
        layers
            .push("b", RgbaImage::from_pixel(1, 1, Rgba([0, 0, 0, 0])))
            .unwrap();
        assert_eq!(composite(&layers).get_pixel(0, 0).0, [200, 100, 0, 128]);

        let mut two = Layers::new(1, 1);
        two.push("a", RgbaImage::from_pixel(1, 1, Rgba([255, 0, 0, 128])))
            .unwrap();
        two.push("b", RgbaImage::from_pixel(1, 1, Rgba([0, 0, 255, 128])))
            .unwrap();
        // alpha = 0.502 + 0.502 * 0.498 = 0.752; red = 0.502*0.498/0.752 = 0.332.
        assert_eq!(composite(&two).get_pixel(0, 0).0, [85, 0, 170, 192]);
    }

    #[test]
    fn empty_stack_composites_to_transparent() {
        let out = composite(&Layers::new(2, 3));
        assert_eq!((out.width(), out.height()), (2, 3));
        assert!(out.pixels().all(|p| p.0 == [0, 0, 0, 0]));
    }
}
