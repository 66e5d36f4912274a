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
    if !path.exists()
        && let Some(hint) = unquoted_set_hint(path, std::env::args())
    {
        bail!("{hint}");
    }
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

/// When `missing` (a workflow argument that is not a file) is a bare word right after a
/// `--set` value on the command line (`--set encode.prompt=a red square`: the shell split the
/// value), a message saying so and showing the quoted form.
fn unquoted_set_hint(missing: &Path, args: impl IntoIterator<Item = String>) -> Option<String> {
    let args: Vec<String> = args.into_iter().collect();
    let word = missing.to_str()?;
    let at = args.iter().position(|arg| arg == word)?;
    // Walk back over bare words to the `--set` value they follow.
    let mut start = at;
    let value_at = loop {
        let before = start.checked_sub(1)?;
        let arg = args.get(before)?;
        if arg.starts_with('-') {
            return None;
        }
        if before
            .checked_sub(1)
            .and_then(|i| args.get(i))
            .is_some_and(|flag| flag == "--set")
        {
            break before;
        }
        // A real file between them is a workflow argument: the word does not continue a value.
        if Path::new(arg).exists() {
            return None;
        }
        start = before;
    };
    // The value's words go on until a flag or a file that exists.
    let words: Vec<&str> = args
        .iter()
        .skip(value_at)
        .take_while(|arg| !arg.starts_with('-'))
        .enumerate()
        .take_while(|(i, arg)| *i == 0 || !Path::new(arg.as_str()).exists())
        .map(|(_, arg)| arg.as_str())
        .collect();
    let (first, rest) = words.split_first()?;
    let strays = rest
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ");
    // The same message for every stray word, so the caller can show it once.
    Some(format!(
        "{strays} taken as workflow files: they look like the rest of `--set {first}`, which the \
         shell split at the spaces; quote a value with spaces: --set '{}'",
        words.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn words_after_an_unquoted_set_value_are_named_with_the_quoted_form() {
        let line = args("veetance run Cargo.toml --set encode.prompt=a red square --no-cache");
        let hint = unquoted_set_hint(Path::new("square"), line.clone()).unwrap_or_default();
        assert!(
            hint.contains("`red`, `square` taken as workflow files"),
            "{hint}"
        );
        assert!(
            hint.contains("--set 'encode.prompt=a red square'"),
            "{hint}"
        );
        assert_eq!(unquoted_set_hint(Path::new("red"), line), Some(hint));
    }

    #[test]
    fn a_missing_file_that_follows_no_set_gets_no_hint() {
        let line = args("veetance run --set sample.seed=3 Cargo.toml missing.ron");
        assert_eq!(unquoted_set_hint(Path::new("missing.ron"), line), None);
        let line = args("veetance run missing.ron --no-cache");
        assert_eq!(unquoted_set_hint(Path::new("missing.ron"), line), None);
    }
}
