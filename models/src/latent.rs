//! The latent convention shared by the sampler, the VAE and SaveLatent/LoadLatent.
//!
//! A latent is the token grid `[B, 128, h, w]` with h, w = image side / 16 (for the released VAE),
//! in the normalised space the transformer sees. The transformer itself takes tokens `[B, h·w, 128]`
//! in raster order; [`pack`] and [`unpack`] convert between the two.

use candle_core::Tensor;

use crate::error::Result;

/// `[B, C, h, w]` → `[B, h·w, C]` (raster order, row-major over h then w).
pub fn pack(latent: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = latent.dims4()?;
    Ok(latent
        .reshape((b, c, h * w))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[B, h·w, C]` → `[B, C, h, w]`.
pub fn unpack(tokens: &Tensor, grid_h: usize, grid_w: usize) -> Result<Tensor> {
    let (b, n, c) = tokens.dims3()?;
    if n != grid_h * grid_w {
        return Err(crate::ModelError::InvalidArgument(format!(
            "{n} tokens do not form a {grid_h}x{grid_w} grid"
        )));
    }
    Ok(tokens.transpose(1, 2)?.reshape((b, c, grid_h, grid_w))?)
}

/// Token grid size for a requested picture size, rounded down to whole tokens as diffusers'
/// FLUX.2 pipelines do (`prepare_latents`: `2 * (int(height) // (vae_scale_factor * 2))`), so a
/// width of 1000 draws 992 px; an error only when a side is less than one token.
pub fn grid_for_requested_size(
    height_px: usize,
    width_px: usize,
    px_per_token: usize,
) -> Result<(usize, usize)> {
    let grid = (
        height_px.checked_div(px_per_token).unwrap_or(0),
        width_px.checked_div(px_per_token).unwrap_or(0),
    );
    if grid.0 == 0 || grid.1 == 0 {
        return Err(crate::ModelError::InvalidArgument(format!(
            "image size {width_px}x{height_px} is smaller than one {px_per_token}-pixel token"
        )));
    }
    Ok(grid)
}

/// Token grid size for an image size: (height / px_per_token, width / px_per_token).
pub fn grid_for_image(
    height_px: usize,
    width_px: usize,
    px_per_token: usize,
) -> Result<(usize, usize)> {
    if px_per_token == 0
        || !height_px.is_multiple_of(px_per_token)
        || !width_px.is_multiple_of(px_per_token)
        || height_px == 0
        || width_px == 0
    {
        return Err(crate::ModelError::InvalidArgument(format!(
            "image size {width_px}x{height_px} must be a positive multiple of {px_per_token}"
        )));
    }
    Ok((height_px / px_per_token, width_px / px_per_token))
}
