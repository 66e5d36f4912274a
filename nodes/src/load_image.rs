//! LoadImage: an image file (PNG, JPEG, WebP).

use veetance_engine::{DataType, InputSpec, NodeSpec, OutputSpec, TextWidget};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new("LoadImage", "loaders", "Loads a PNG, JPEG or WebP image.")
        .input(
            InputSpec::new("path", DataType::Text)
                .widget(TextWidget::Path)
                .doc("The image file."),
        )
        .output(OutputSpec::new(
            "image",
            DataType::Image,
            "The image as RGB.",
        ))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the image crate (veetance-imaging) is not wired into the nodes yet",
    )
}
