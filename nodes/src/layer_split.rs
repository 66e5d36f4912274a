//! LayerSplit: an image into RGBA layers whose composite reproduces it.

use veetance_engine::{DataType, InputSpec, Literal, NodeSpec, OutputSpec};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "LayerSplit",
        "image",
        "Splits an image into N RGBA layers, bottom to top (background first), whose alpha-over composite reproduces it.",
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

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the image crate (veetance-imaging) is not wired into the nodes yet",
    )
}
