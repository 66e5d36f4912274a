//! Preview: a small image sent to whoever watches the run.

use veetance_engine::{DataType, InputSpec, NodeSpec};

use crate::unavailable::Unavailable;

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "Preview",
        "output",
        "Sends a small preview of the image to whoever watches the run (editor, server).",
    )
    .effect()
    .input(InputSpec::new("image", DataType::Image).doc("The image to preview."))
}

pub fn node() -> Unavailable {
    Unavailable::new(
        spec(),
        "the image crate (veetance-imaging) is not wired into the nodes yet",
    )
}
