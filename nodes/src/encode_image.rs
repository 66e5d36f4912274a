//! EncodeImage: an image to a latent with the VAE, the start of img2img.

use candle_core::Tensor;
use veetance_engine::{
    InputSpec, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec, Outputs,
};
use veetance_imaging::chw_f32_from_rgb8;

use crate::device::{model_error, tensor_error};
use crate::payload::{ImageValue, TensorValue, VaeValue};
use crate::types;

/// The `EncodeImage` node.
pub struct EncodeImage;

impl NodeKind for EncodeImage {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "EncodeImage",
            "latent",
            "VAE encode of an RGB image to a latent [1, 128, h, w] (the mean of the posterior), for img2img with Sample's `latent` and `denoise`; pictures above 2048² encode in overlapping blended tiles so memory stays bounded.",
        )
        .input(InputSpec::new("vae", types::VAE).doc("From Load."))
        .input(InputSpec::new("image", types::IMAGE).doc("Its sides must be multiples of the model's pixels per latent token (16 for FLUX.2)."))
        .output(OutputSpec::new("latent", types::LATENT, "The normalised latent."))
        // 2: pictures above 2048² are encoded in tiles (cached whole-picture latents differ).
        .version(2)
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let vae = inputs.object::<VaeValue>("vae")?;
        let image = inputs.object::<ImageValue>("image")?;
        let vae = &vae.0.vae;
        let (width_px, height_px) = image.0.dimensions();
        let step_px = vae.pixels_per_token() as u32;
        if step_px == 0 || width_px % step_px != 0 || height_px % step_px != 0 {
            return Err(NodeError::msg(format!(
                "image is {width_px}x{height_px}; both sides must be multiples of {step_px} for this VAE"
            )));
        }
        let latent = encode_picture(vae, &image.0, ctx)?;
        Ok(Outputs::new().with_object("latent", types::LATENT, TensorValue(latent)))
    }
}

/// Pictures with more pixels than this (2048², as for Decode) encode in tiles.
pub const TILED_ENCODE_ABOVE_PIXELS: usize = crate::decode::TILED_DECODE_ABOVE_PIXELS;

/// Whether a `width_px` × `height_px` picture encodes in tiles.
pub fn encodes_in_tiles(width_px: u32, height_px: u32) -> bool {
    width_px as usize * height_px as usize > TILED_ENCODE_ABOVE_PIXELS
}

/// The normalised latent `[1, 128, h, w]` of an RGB picture whose sides are whole tokens.
///
/// Whole-picture encoding matches diffusers exactly; above [`TILED_ENCODE_ABOVE_PIXELS`] the
/// encoder's activations (128 channels at full resolution) would take gigabytes, so the picture
/// is encoded in overlapping, blended tiles as diffusers' `enable_tiling` does, with progress per
/// tile, and a cancel takes effect after the current tile.
pub(crate) fn encode_picture(
    vae: &veetance_models::Vae,
    image: &veetance_imaging::RgbImage,
    ctx: &NodeCtx<'_>,
) -> Result<Tensor, NodeError> {
    let (width_px, height_px) = image.dimensions();
    let tiled = encodes_in_tiles(width_px, height_px);
    // Refuse up front what would exhaust memory halfway: the picture and its latent, plus the
    // encoder's working memory for one tile or for the whole picture.
    let (work_h, work_w) = if tiled {
        let tile_px = vae.config().sample_size;
        (
            tile_px.min(height_px as usize),
            tile_px.min(width_px as usize),
        )
    } else {
        (height_px as usize, width_px as usize)
    };
    let picture_bytes = 3 * 4 * u64::from(width_px) * u64::from(height_px);
    let needed = vae.encode_working_bytes(work_h, work_w) + 2 * picture_bytes;
    if vae.device().is_cpu()
        && let Some(available) = veetance_engine::available_memory_bytes()
        && needed > available
    {
        return Err(NodeError::msg(format!(
            "encoding a {width_px}×{height_px} picture needs about {} MiB and {} MiB are available; scale it down first",
            needed >> 20,
            available >> 20
        )));
    }
    let pixels = Tensor::from_vec(
        chw_f32_from_rgb8(image),
        (1, 3, height_px as usize, width_px as usize),
        vae.device(),
    )
    .map_err(tensor_error("preparing the picture"))?;
    if tiled {
        vae.encode_tiled_with(&pixels, crate::decode::tile_progress(ctx))
    } else {
        vae.encode(&pixels)
    }
    .map_err(model_error("encoding the picture"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_above_2048_squared_encode_in_tiles() {
        assert!(!encodes_in_tiles(1024, 1024));
        assert!(!encodes_in_tiles(2048, 2048));
        assert!(!encodes_in_tiles(4096, 1024));
        assert!(encodes_in_tiles(2064, 2048));
        assert!(encodes_in_tiles(16_384, 512));
        assert!(encodes_in_tiles(65_535, 65_535));
    }
}
