//! Reference: a picture for FLUX.2 multi-reference editing, prepared and encoded as diffusers'
//! `Flux2KleinPipeline(image=[...])` prepares it; chain Reference nodes for several pictures.

use veetance_engine::{
    InputSpec, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec, Outputs,
};
use veetance_imaging::{RgbImage, center_crop, resize_lanczos};

use crate::encode_image::encode_picture;
use crate::payload::{ImageValue, ReferencesValue, VaeValue};
use crate::types;

/// Pixel budget of a reference: larger pictures are scaled down to this area first
/// (`Flux2KleinPipeline.__call__`: `if image_width * image_height > 1024 * 1024`).
const MAX_REFERENCE_AREA_PX: u64 = 1024 * 1024;
/// Shortest side diffusers accepts (`Flux2ImageProcessor.check_image_input`).
const MIN_REFERENCE_SIDE_PX: u32 = 64;
/// Most extreme aspect ratio diffusers accepts (same function).
const MAX_REFERENCE_ASPECT: f64 = 8.0;

/// The `Reference` node.
pub struct Reference;

impl NodeKind for Reference {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Reference",
            "conditioning",
            "A reference picture for editing (FLUX.2 multi-reference): prepared as diffusers prepares \
             it (pictures over 1024² pixels scaled down to that area, then cropped around the centre \
             to whole latent tokens) and encoded with the VAE. Chain Reference nodes for several \
             pictures and link the last one to Sample's `references`; the first one sets the size \
             Sample draws at when it is given none.",
        )
        .input(InputSpec::new("vae", types::VAE).doc("The VAE that encodes the picture."))
        .input(InputSpec::new("image", types::IMAGE).doc("The picture."))
        .input(
            InputSpec::new("references", types::REFERENCES)
                .optional()
                .doc("References before this one (their order is kept)."),
        )
        .output(OutputSpec::new(
            "references",
            types::REFERENCES,
            "The references before this one, then this one.",
        ))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let vae = inputs.object::<VaeValue>("vae")?;
        let image = inputs.object::<ImageValue>("image")?;
        let vae = &vae.0.vae;
        let step_px = u32::try_from(vae.pixels_per_token())
            .map_err(|_| NodeError::msg("the VAE's token size does not fit in 32 bits"))?;
        let latent = encode_picture(vae, &prepare(&image.0, step_px)?, ctx)?;
        let mut references = match inputs.opt_object::<ReferencesValue>("references")? {
            Some(before) => (*before).clone(),
            None => ReferencesValue::default(),
        };
        references.0.push(latent);
        Ok(Outputs::new().with_object("references", types::REFERENCES, references))
    }
}

/// diffusers' preparation of one reference picture: checked (sides ≥ 64 px, aspect ≤ 8:1),
/// scaled down to the pixel budget if larger (`_resize_to_target_area`: each side times
/// √(budget / area), truncated), then cropped around the centre to multiples of `step_px`.
pub fn prepare(image: &RgbImage, step_px: u32) -> Result<RgbImage, NodeError> {
    let (width_px, height_px) = image.dimensions();
    if width_px < MIN_REFERENCE_SIDE_PX || height_px < MIN_REFERENCE_SIDE_PX {
        return Err(NodeError::msg(format!(
            "reference picture is {width_px}×{height_px}; both sides must be at least {MIN_REFERENCE_SIDE_PX} px"
        )));
    }
    let aspect = f64::from(width_px.max(height_px)) / f64::from(width_px.min(height_px));
    if aspect > MAX_REFERENCE_ASPECT {
        return Err(NodeError::msg(format!(
            "reference picture is {width_px}×{height_px} ({aspect:.1}:1); at most {MAX_REFERENCE_ASPECT}:1"
        )));
    }
    let area_px = u64::from(width_px) * u64::from(height_px);
    let scaled = if area_px > MAX_REFERENCE_AREA_PX {
        let scale = (MAX_REFERENCE_AREA_PX as f64 / area_px as f64).sqrt();
        let (w, h) = (
            (f64::from(width_px) * scale) as u32,
            (f64::from(height_px) * scale) as u32,
        );
        resize_lanczos(image, w, h)
    } else {
        image.clone()
    };
    let step_px = step_px.max(1);
    let (w, h) = scaled.dimensions();
    let (crop_w, crop_h) = (w / step_px * step_px, h / step_px * step_px);
    center_crop(&scaled, crop_w, crop_h)
        .ok_or_else(|| NodeError::msg("reference picture too small to crop to whole tokens"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_cropped_around_the_centre_to_whole_tokens() {
        let image = RgbImage::from_fn(70, 90, |x, y| veetance_imaging::Rgb([x as u8, y as u8, 0]));
        let prepared = prepare(&image, 16).unwrap();
        assert_eq!(prepared.dimensions(), (64, 80));
        // (70 - 64) / 2 = 3 columns and (90 - 80) / 2 = 5 rows are cut on the top left.
        assert_eq!(prepared.get_pixel(0, 0).0, [3, 5, 0]);
    }

    #[test]
    fn large_pictures_are_scaled_to_the_pixel_budget_first() {
        let image = RgbImage::new(2048, 1024);
        let prepared = prepare(&image, 16).unwrap();
        // √(1024² / (2048·1024)) = 0.7071…: 1448×724, then cropped to 1440×720.
        assert_eq!(prepared.dimensions(), (1440, 720));
    }

    #[test]
    fn tiny_and_extreme_pictures_are_refused_as_diffusers_refuses_them() {
        assert!(prepare(&RgbImage::new(63, 128), 16).is_err());
        assert!(prepare(&RgbImage::new(64 * 9, 64), 16).is_err());
        assert!(prepare(&RgbImage::new(64 * 8, 64), 16).is_ok());
    }
}
