//! Reading workflows from files: RON text, or the workflow embedded in a PNG written by Export.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// The iTXt key under which Export embeds the workflow as run.
pub const PNG_WORKFLOW_KEY: &str = veetance_imaging::KEY_WORKFLOW;

/// Whether `path` is a picture (its workflow came from whoever made the picture, so it runs
/// under the read policy of docs/security.md unless the user trusts it).
pub fn is_picture(path: &Path) -> bool {
    use std::io::Read as _;
    let mut signature = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut signature))
        .is_ok_and(|()| &signature == PNG_SIGNATURE)
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The workflow text in `path`: the file itself, or for a PNG its embedded workflow.
pub fn read_workflow_source(path: &Path) -> Result<String> {
    let bytes = veetance_imaging::read_regular_file(path, veetance_imaging::MAX_INPUT_FILE_BYTES)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.starts_with(PNG_SIGNATURE) {
        return workflow_from_png(&bytes)
            .with_context(|| format!("reading the workflow embedded in {}", path.display()));
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

fn workflow_from_png(bytes: &[u8]) -> Result<String> {
    match veetance_imaging::read_png_workflow(bytes).context("not a readable PNG")? {
        Some(workflow) => Ok(workflow),
        None => {
            bail!("this PNG has no embedded veetance workflow (no `{PNG_WORKFLOW_KEY}` text chunk)")
        }
    }
}
