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
            "VAE encode of an RGB image to a latent [1, 128, h, w] (the mean of the posterior), for img2img with Sample's `latent` and `denoise`.",
        )
        .input(InputSpec::new("vae", types::VAE).doc("From Load."))
        .input(InputSpec::new("image", types::IMAGE).doc("Its sides must be multiples of the model's pixels per latent token (16 for FLUX.2)."))
        .output(OutputSpec::new("latent", types::LATENT, "The normalised latent."))
    }

    fn run(inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
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
        let latent = encode_picture(vae, &image.0)?;
        Ok(Outputs::new().with_object("latent", types::LATENT, TensorValue(latent)))
    }
}

/// The normalised latent `[1, 128, h, w]` of an RGB picture whose sides are whole tokens.
pub(crate) fn encode_picture(
    vae: &veetance_models::Vae,
    image: &veetance_imaging::RgbImage,
) -> Result<Tensor, NodeError> {
    let (width_px, height_px) = image.dimensions();
    // Refuse up front what would exhaust memory halfway (the encoder is not tiled yet).
    let needed = vae.encode_working_bytes(height_px as usize, width_px as usize);
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
    vae.encode(&pixels)
        .map_err(model_error("encoding the picture"))
}
