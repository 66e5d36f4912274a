//! Export: write images and layers to files.

use veetance_engine::{DataType, InputSpec, Literal, NodeSpec, OutputSpec, TextWidget};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "Export",
        "output",
        "Writes the image and/or layers: PNG with the workflow embedded, layered PSD, JPEG or WebP. `path` is a prefix; never overwrites; writes atomically.",
    )
    .effect()
    .input(InputSpec::new("image", DataType::Image).optional().doc("The image to write."))
    .input(InputSpec::new("layers", DataType::Layers).optional().doc("Layers to write (PSD), or to composite."))
    .input(
        InputSpec::new("path", DataType::Text)
            .default_value(Literal::Text("veetance".into()))
            .widget(TextWidget::Path)
            .doc("File name prefix; relative paths go under --out."),
    )
    .input(
        InputSpec::new("format", DataType::Text)
            .default_value(Literal::Text("png".into()))
            .choices(&["png", "psd", "jpg", "webp"])
            .doc("File format."),
    )
    .output(OutputSpec::new("files", DataType::Text, "The paths written, one per line."))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the image crate (veetance-imaging) is not wired into the nodes yet",
    )
}
