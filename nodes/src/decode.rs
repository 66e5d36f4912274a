//! Decode: latent to image with the VAE.

use candle_core::DType;
use veetance_engine::{
    InputSpec, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec, Outputs,
};
use veetance_imaging::rgb8_from_chw_f32;

use crate::device::{model_error, tensor_error};
use crate::payload::{ImageValue, TensorValue, VaeValue};
use crate::preview::preview_png;
use crate::types;

/// Images with more pixels than this (2048²) decode in tiles.
pub const TILED_DECODE_ABOVE_PIXELS: usize = 2048 * 2048;

/// The per-tile callback of a tiled VAE pass: reports progress to the run, and stops between
/// tiles once the run is cancelled.
pub(crate) fn tile_progress<'a>(
    ctx: &'a NodeCtx<'_>,
) -> impl FnMut(usize, usize) -> std::ops::ControlFlow<()> + 'a {
    move |done, total| {
        ctx.progress(done as u64, total as u64);
        if ctx.is_cancelled() {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }
}

/// The `Decode` node.
pub struct Decode;

impl NodeKind for Decode {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Decode",
            "latent",
            "VAE decode of a latent to an RGB image; images above 2048² decode in overlapping blended tiles so memory stays bounded.",
        )
        .input(InputSpec::new("vae", types::VAE).doc("From Load."))
        .input(InputSpec::new("latent", types::LATENT).doc("From Sample or LoadLatent."))
        .output(OutputSpec::new(
            "image",
            types::IMAGE,
            "The decoded RGB image.",
        ))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let vae = inputs.object::<VaeValue>("vae")?;
        let latent = inputs.object::<TensorValue>("latent")?;
        let vae = &vae.0.vae;
        let latent = latent
            .0
            .to_device(vae.device())
            .map_err(tensor_error("moving the latent to the VAE's device"))?;
        let batch = latent
            .dim(0)
            .map_err(tensor_error("reading the latent's shape"))?;
        if batch != 1 {
            return Err(NodeError::msg(format!(
                "Decode takes one latent at a time; this one holds a batch of {batch}"
            )));
        }
        let (_, _, grid_h, grid_w) = latent
            .dims4()
            .map_err(tensor_error("reading the latent's shape"))?;
        let pixels = grid_h * grid_w * vae.pixels_per_token() * vae.pixels_per_token();
        // Whole-image decode matches diffusers exactly; above this size the decoder's
        // activations (128 channels at full resolution) would take gigabytes, so decode in
        // overlapping, blended tiles as diffusers' `enable_tiling` does.
        let image = if pixels > TILED_DECODE_ABOVE_PIXELS {
            // Tile by tile, with progress, and a cancel takes effect after the current tile.
            vae.decode_tiled_with(&latent, tile_progress(ctx))
        } else {
            vae.decode(&latent)
        }
        .map_err(model_error("decoding the latent"))?;
        let (_, _, height_px, width_px) = image
            .dims4()
            .map_err(tensor_error("reading the image's shape"))?;
        let values: Vec<f32> = image
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(tensor_error("reading the decoded pixels"))?;
        let rgb = rgb8_from_chw_f32(&values, height_px as u32, width_px as u32)
            .map_err(|err| NodeError::with_context("converting the decoded pixels", err))?;
        // Whoever watches the run (the editor) sees the picture on the Decode node itself.
        ctx.preview(preview_png(&rgb)?);
        Ok(Outputs::new().with_object("image", types::IMAGE, ImageValue(rgb)))
    }
}
