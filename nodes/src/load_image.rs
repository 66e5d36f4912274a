//! LoadImage: an image file (PNG, JPEG, WebP).

use std::path::Path;

use veetance_engine::{
    DataType, InputSpec, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec, Outputs,
    RunEnv, TextWidget,
};

use crate::payload::ImageValue;
use crate::types;

/// Reads a file the node depends on (a regular file of at most
/// [`veetance_imaging::MAX_INPUT_FILE_BYTES`], where the run's read policy allows), with the
/// path in the error.
pub fn read_input_file(path: &Path, env: &RunEnv) -> Result<Vec<u8>, NodeError> {
    let path = &env.input_path(path);
    env.check_read(path)?;
    veetance_imaging::read_regular_file(path, veetance_imaging::MAX_INPUT_FILE_BYTES)
        .map_err(|err| NodeError::with_context(format!("cannot read {}", path.display()), err))
}

/// The `LoadImage` node.
pub struct LoadImage;

impl NodeKind for LoadImage {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "LoadImage",
            "loaders",
            "Loads a PNG, JPEG or WebP image as RGB.",
        )
        .input(
            InputSpec::new("path", DataType::TEXT)
                .widget(TextWidget::Path)
                .doc("The image file; a relative path is looked up beside the workflow file first, then in the current directory."),
        )
        .output(OutputSpec::new("image", types::IMAGE, "The image as RGB."))
    }

    /// The file's content hash: an edited image is never served from the cache.
    fn identity(inputs: &NodeInputs, env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        let bytes = read_input_file(Path::new(inputs.text("path")?), env)?;
        Ok(Some(blake3::hash(&bytes).as_bytes().to_vec()))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let path = inputs.text("path")?;
        let bytes = read_input_file(Path::new(path), ctx.env())?;
        let image = veetance_imaging::load_image(&bytes)
            .map_err(|err| NodeError::with_context(format!("decoding {path}"), err))?;
        Ok(Outputs::new().with_object("image", types::IMAGE, ImageValue(image)))
    }
}
