//! Files: reading workflows (RON, or the workflow embedded in an Export PNG), atomic saves,
//! the crash-recovery file and the recent-files list.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use veetance_engine::Workflow;

/// Recent files remembered.
const RECENT_MAX: usize = 10;

/// First line of a recovery file; the rest of the line is the path the work belongs to.
const RECOVERY_HEADER: &str = "// veetance-recovery: ";

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PNG without an embedded workflow, or unreadable.
    #[error("{path}: {message}")]
    Png {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The text is not UTF-8.
    #[error("{0}: not UTF-8 text")]
    NotText(PathBuf),
    /// The text is not a workflow.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The first parse problem, with line and column.
        message: String,
    },
}

/// Reads a workflow or picture the user opens: a regular file of bounded size, so that a FIFO or
/// a device named by mistake is an error instead of a frozen editor.
pub fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    veetance_imaging::read_regular_file(path, veetance_imaging::MAX_INPUT_FILE_BYTES)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The workflow text in `path`: the file itself, or for a PNG its embedded workflow.
pub fn read_workflow_source(path: &Path) -> Result<String, FileError> {
    let bytes = read_input(path).map_err(io_error(path))?;
    workflow_source_from_bytes(path, bytes)
}

/// Like [`read_workflow_source`] on bytes already read.
pub fn workflow_source_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String, FileError> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let workflow =
            veetance_imaging::read_png_workflow(&bytes).map_err(|err| FileError::Png {
                path: path.to_owned(),
                message: format!("not a readable PNG: {err}"),
            })?;
        return workflow.ok_or_else(|| FileError::Png {
            path: path.to_owned(),
            message: format!(
                "this PNG has no embedded veetance workflow (no `{}` text chunk)",
                veetance_imaging::KEY_WORKFLOW
            ),
        });
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotText(path.to_owned()))
}

/// Parses workflow text, turning the first diagnostic into an error message.
pub fn parse_workflow(path: &Path, source: &str) -> Result<Workflow, FileError> {
    Workflow::parse(source).map_err(|diagnostics| FileError::Parse {
        path: path.to_owned(),
        message: diagnostics
            .first()
            .map(|d| match &d.span {
                Some(span) => format!("{}:{}: {}", span.line, span.column, d.message),
                None => d.message.clone(),
            })
            .unwrap_or_else(|| "not a workflow".to_owned()),
    })
}

/// Reads and parses the workflow in `path`.
pub fn load_workflow(path: &Path) -> Result<(Workflow, String), FileError> {
    let source = read_workflow_source(path)?;
    let workflow = parse_workflow(path, &source)?;
    Ok((workflow, source))
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file: a temp
/// file in the same directory, fsync, rename over the target, fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(&dir).map_err(io_error(path))?;
    temp.write_all(bytes).map_err(io_error(path))?;
    temp.as_file().sync_all().map_err(io_error(path))?;
    temp.persist(path)
        .map_err(|err| io_error(path)(err.error))?;
    // The rename is durable only once the directory entry is; not every platform can open a
    // directory for syncing, and the data is already safe, so a failure here is ignored.
    if let Ok(dir) = std::fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Where the editor keeps its own state (recovery file, recent files).
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// The per-user default (`~/.local/share/veetance/editor`), if the system has one.
    pub fn user_default() -> Option<StateDir> {
        dirs::data_dir().map(|dir| StateDir(dir.join("veetance").join("editor")))
    }

    fn recovery_path(&self) -> PathBuf {
        self.0.join("recovery.ron")
    }

    fn recent_path(&self) -> PathBuf {
        self.0.join("recent.txt")
    }

    /// Writes the autosave of unsaved work belonging to `original` (None: never saved).
    pub fn write_recovery(&self, original: Option<&Path>, ron: &str) -> Result<(), FileError> {
        std::fs::create_dir_all(&self.0).map_err(io_error(&self.0))?;
        let header = original.map_or(String::new(), |p| p.display().to_string());
        let text = format!("{RECOVERY_HEADER}{header}\n{ron}");
        atomic_write(&self.recovery_path(), text.as_bytes())
    }

    /// The autosaved work left by a session that did not end cleanly: the path it belonged
    /// to and the workflow text.
    pub fn read_recovery(&self) -> Option<(Option<PathBuf>, String)> {
        let text = std::fs::read_to_string(self.recovery_path()).ok()?;
        let (first, rest) = text.split_once('\n')?;
        let original = first.strip_prefix(RECOVERY_HEADER)?;
        let original = (!original.is_empty()).then(|| PathBuf::from(original));
        Some((original, rest.to_owned()))
    }

    /// Removes the recovery file (after a save, or when the user declines recovery).
    pub fn clear_recovery(&self) {
        let _ = std::fs::remove_file(self.recovery_path());
    }

    /// The recent files, newest first.
    pub fn recent(&self) -> Vec<PathBuf> {
        std::fs::read_to_string(self.recent_path())
            .map(|text| {
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Puts `path` first in the recent files.
    pub fn add_recent(&self, path: &Path) -> Result<(), FileError> {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut recent = self.recent();
        recent.retain(|p| *p != path);
        recent.insert(0, path);
        recent.truncate(RECENT_MAX);
        std::fs::create_dir_all(&self.0).map_err(io_error(&self.0))?;
        let text: String = recent
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        atomic_write(&self.recent_path(), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn atomic_write_replaces_and_recovery_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ron");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        // Only the target is left: the temp file was renamed, not copied.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let state = StateDir(dir.path().join("state"));
        assert!(state.read_recovery().is_none());
        state.write_recovery(Some(&path), "Workflow()").unwrap();
        assert_eq!(
            state.read_recovery(),
            Some((Some(path.clone()), "Workflow()".to_owned()))
        );
        state.clear_recovery();
        assert!(state.read_recovery().is_none());
        state.add_recent(&path).unwrap();
        state.add_recent(&path).unwrap();
        assert_eq!(state.recent().len(), 1);
    }

    #[test]
    fn png_without_workflow_is_explained() {
        let err = workflow_source_from_bytes(Path::new("x.png"), b"\x89PNG\r\n\x1a\nxx".to_vec())
            .unwrap_err();
        assert!(err.to_string().contains("x.png"), "{err}");
    }
}
