//! Preview: a small image sent to whoever watches the run.

use std::sync::Arc;

use veetance_engine::{InputSpec, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, Outputs};
use veetance_imaging::RgbImage;

use crate::payload::ImageValue;
use crate::types;

/// Longest side of a preview, in pixels.
pub const PREVIEW_MAX_SIDE_PX: u32 = 256;

/// A PNG of `image` shrunk (never enlarged) to at most [`PREVIEW_MAX_SIDE_PX`] on its longest side.
pub fn preview_png(image: &RgbImage) -> Result<Arc<[u8]>, NodeError> {
    let small = veetance_imaging::thumbnail(image, PREVIEW_MAX_SIDE_PX);
    let mut bytes = Vec::new();
    veetance_imaging::write_png(&mut bytes, &small, &[] as &[(&str, &str)])
        .map_err(|err| NodeError::with_context("encoding the preview", err))?;
    Ok(bytes.into())
}

/// The `Preview` node.
pub struct Preview;

impl NodeKind for Preview {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Preview",
            "output",
            "Sends a small PNG preview of the image to whoever watches the run (the editor, or a `--json` consumer).",
        )
        .effect()
        .input(InputSpec::new("image", types::IMAGE).doc("The image to preview."))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let image = inputs.object::<ImageValue>("image")?;
        ctx.preview(preview_png(&image.0)?);
        Ok(Outputs::new())
    }
}
