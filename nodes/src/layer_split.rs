//! LayerSplit: an image into RGBA layers whose composite reproduces it.

use veetance_engine::{
    DataType, InputSpec, Literal, Node, NodeCtx, NodeError, NodeInputs, NodeSpec, OutputSpec,
    Outputs,
};

use crate::payload::{ImageValue, LayersValue};

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "LayerSplit",
        "image",
        "Splits an image into N RGBA layers, bottom to top (background first), whose alpha-over composite reproduces it: regions found by colour clustering and connected regions.",
    )
    .input(InputSpec::new("image", DataType::Image).doc("The image to split."))
    .input(
        InputSpec::new("layers", DataType::Int)
            .default_value(Literal::Int(4))
            .range(2.0, 8.0)
            .doc("Number of layers."),
    )
    .output(OutputSpec::new("layers", DataType::Layers, "RGBA layers, bottom to top."))
}

pub struct LayerSplit(NodeSpec);

pub fn node() -> LayerSplit {
    LayerSplit(spec())
}

impl Node for LayerSplit {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }

    fn run(&self, inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let image = inputs.object::<ImageValue>("image")?;
        let n_layers = usize::try_from(inputs.int("layers")?)
            .map_err(|_| NodeError::msg("layers must be positive"))?;
        let layers = veetance_imaging::layer_split(&image.0, n_layers)
            .map_err(|err| NodeError::with_context("splitting the image into layers", err))?;
        Ok(Outputs::new().with_object("layers", DataType::Layers, LayersValue(layers)))
    }
}
