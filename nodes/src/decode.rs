//! Decode: latent to image with the VAE.

use candle_core::DType;
use veetance_engine::{
    InputSpec, MemoryEstimate, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec,
    Outputs, RunEnv,
};
use veetance_imaging::rgb8_from_chw_f32;
use veetance_models::VaeConfig;
use veetance_models::profile::{WORKING_MARGIN_BYTES, decode_working_bytes};

use crate::device::tensor_error;
use crate::payload::{ImageValue, TensorValue, VaeValue};
use crate::placement::{LatentSizeValue, budget_error, part_use, profile_input, vae_key};
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

/// Tile sides Decode falls back to under a tight VRAM budget, largest first.
const BUDGET_TILES_PX: [usize; 3] = [1024, 512, 256];

/// The tile side Decode uses for a `height_px × width_px` picture: `None` for its usual way
/// (whole, or diffusers' tiles above 2048²); under a VRAM budget, when that would take more than
/// a quarter of the budget (activations only), the largest tile that takes less (else the
/// smallest).
pub(crate) fn budget_tile_px(
    cfg: &VaeConfig,
    height_px: u64,
    width_px: u64,
    dtype: DType,
    budget_bytes: Option<u64>,
) -> Option<usize> {
    let budget_bytes = budget_bytes?;
    let usual_side = |side: u64| {
        if height_px * width_px > TILED_DECODE_ABOVE_PIXELS as u64 {
            side.min(cfg.sample_size as u64)
        } else {
            side
        }
    };
    let usual = decode_working_bytes(cfg, usual_side(height_px), usual_side(width_px), dtype);
    if usual <= budget_bytes / 4 {
        return None;
    }
    let fits = |tile: usize| {
        let side = tile as u64;
        decode_working_bytes(cfg, side.min(height_px), side.min(width_px), dtype)
            <= budget_bytes / 4
    };
    Some(
        BUDGET_TILES_PX
            .into_iter()
            .find(|&tile| fits(tile))
            .unwrap_or(BUDGET_TILES_PX[BUDGET_TILES_PX.len() - 1]),
    )
}

/// The `Decode` node.
pub struct Decode;

impl NodeKind for Decode {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Decode",
            "latent",
            "VAE decode of a latent to an RGB image; images above 2048² decode in overlapping blended tiles so memory stays bounded, and so do images whose whole decode would take more than a quarter of the VRAM budget (in smaller tiles).",
        )
        .input(InputSpec::new("vae", types::VAE).doc("From Load."))
        .input(InputSpec::new("latent", types::LATENT).doc("From Sample or LoadLatent."))
        .output(OutputSpec::new(
            "image",
            types::IMAGE,
            "The decoded RGB image.",
        ))
    }

    fn identity(_inputs: &NodeInputs, env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        // A VRAM budget may make Decode tile (slightly different seams): not the same result.
        Ok(env
            .vram_budget_bytes
            .map(|budget| budget.to_le_bytes().to_vec()))
    }

    fn estimate(inputs: &NodeInputs, env: &RunEnv) -> MemoryEstimate {
        let (Some(value), Ok(Some(size))) = (
            profile_input(inputs, "vae"),
            inputs.opt_object::<LatentSizeValue>("latent"),
        ) else {
            return MemoryEstimate::default();
        };
        let p = &value.profile;
        let (h, w) = (size.height_px, size.width_px);
        let working = match budget_tile_px(&p.vae_config, h, w, p.dtype, env.vram_budget_bytes) {
            Some(tile) => {
                let side = tile as u64;
                decode_working_bytes(&p.vae_config, side.min(h), side.min(w), p.dtype)
            }
            None if h * w > TILED_DECODE_ABOVE_PIXELS as u64 => {
                let side = p.vae_config.sample_size as u64;
                decode_working_bytes(&p.vae_config, side.min(h), side.min(w), p.dtype)
            }
            None => decode_working_bytes(&p.vae_config, h, w, p.dtype),
        };
        MemoryEstimate {
            // The decoded picture comes back to RAM as f32.
            ram_bytes: h * w * 3 * 4,
            vram_bytes: working + WORKING_MARGIN_BYTES,
            uses: vec![part_use(vae_key(&value.key), 1)],
            ..MemoryEstimate::default()
        }
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
        let side_px = vae.pixels_per_token();
        let budget_tile = budget_tile_px(
            vae.config(),
            (grid_h * side_px) as u64,
            (grid_w * side_px) as u64,
            vae.dtype(),
            ctx.env().vram_budget_bytes,
        );
        // Under a plan: the run's limit, and sampling's freed activations back in one piece.
        crate::placement::limit_device(ctx, vae.device())?;
        let image = match budget_tile {
            // Under a VRAM budget the whole decode would take too much of it: smaller tiles.
            Some(tile_px) => vae.decode_tiled_at(&latent, tile_px, tile_progress(ctx)),
            // Tile by tile, with progress, and a cancel takes effect after the current tile.
            None if pixels > TILED_DECODE_ABOVE_PIXELS => {
                vae.decode_tiled_with(&latent, tile_progress(ctx))
            }
            None => vae.decode(&latent),
        }
        .map_err(budget_error(ctx, "decoding the latent"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn decode_tiles_only_when_the_whole_picture_would_take_a_quarter_of_the_budget() {
        let cfg = VaeConfig::flux2();
        // 1024² in bf16 needs about 6 GB whole (5.8 GiB), a 512 px tile a quarter of that.
        for (budget, expected) in [
            (None, None),
            (Some(80 * GIB), None),
            (Some(24 * GIB), None),
            (Some(16 * GIB), Some(512)),
            (Some(8 * GIB), Some(512)),
            (Some(2 * GIB), Some(256)),
        ] {
            assert_eq!(
                budget_tile_px(&cfg, 1024, 1024, DType::BF16, budget),
                expected,
                "{budget:?}"
            );
        }
        // Above 2048² the usual way is already diffusers' 1024 px tiles, which fit 24 GiB.
        assert_eq!(
            budget_tile_px(&cfg, 4096, 4096, DType::BF16, Some(24 * GIB)),
            None
        );
        assert_eq!(
            budget_tile_px(&cfg, 4096, 4096, DType::BF16, Some(16 * GIB)),
            Some(512)
        );
    }
}
