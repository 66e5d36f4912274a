//! LayerSplit: an image into RGBA layers whose composite reproduces it.

use veetance_engine::{
    DataType, InputSpec, Literal, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec,
    Outputs,
};

use crate::payload::{ImageValue, LayersValue};
use crate::types;

/// The `LayerSplit` node.
pub struct LayerSplit;

impl NodeKind for LayerSplit {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "LayerSplit",
            "image",
            "Splits an image into N RGBA layers, bottom to top (background first), whose alpha-over composite reproduces it: regions found by colour clustering and connected regions.",
        )
        .input(InputSpec::new("image", types::IMAGE).doc("The image to split."))
        .input(
            InputSpec::new("layers", DataType::INT)
                .default_value(Literal::Int(4))
                .range(2.0, 8.0)
                .doc("Number of layers."),
        )
        .output(OutputSpec::new("layers", types::LAYERS, "RGBA layers, bottom to top."))
    }

    fn run(inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let image = inputs.object::<ImageValue>("image")?;
        let n_layers = usize::try_from(inputs.int("layers")?)
            .map_err(|_| NodeError::msg("layers must be positive"))?;
        let (width_px, height_px) = image.0.dimensions();
        let needed =
            veetance_imaging::split::layer_split_working_bytes(width_px, height_px, n_layers);
        if let Some(available) = veetance_engine::available_memory_bytes()
            && needed > available
        {
            return Err(NodeError::msg(format!(
                "splitting a {width_px}×{height_px} picture into {n_layers} layers needs about {} MiB and {} MiB are available; scale it down first",
                needed >> 20,
                available >> 20
            )));
        }
        let layers = veetance_imaging::layer_split(&image.0, n_layers)
            .map_err(|err| NodeError::with_context("splitting the image into layers", err))?;
        Ok(Outputs::new().with_object("layers", types::LAYERS, LayersValue(layers)))
    }
}
