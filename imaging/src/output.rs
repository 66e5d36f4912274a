//! Atomic, never-overwriting output files.
//!
//! An export must never destroy an earlier result and must never leave a half-written file under
//! a real name (a crash mid-write, or a viewer reading while we write). So the bytes go to a
//! hidden temporary file in the target directory, are flushed and fsynced, and only then get their
//! final name, through a rename that fails instead of replacing an existing file
//! (`renameat2(RENAME_NOREPLACE)`, or link-then-unlink where that is missing; see tempfile's
//! `persist_noclobber`). If the name is taken, the next numbered name is tried. Finally the
//! directory is fsynced so that the new name itself survives a power cut.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::{ImagingError, Result};

/// Numbered names go up to `prefix_99999`; past that something is wrong with the directory.
const MAX_NUMBERED_SUFFIX: u32 = 99_999;
/// Prefix of temporary files, hidden and recognisable should a crash leave one behind.
const TEMP_PREFIX: &str = ".veetance-tmp-";

/// Creates a new file named `<prefix>.<extension>`, or `<prefix>_00001.<extension>`,
/// `<prefix>_00002.<extension>`, ... when taken, filled by `write_contents`, and returns its path.
///
/// `path_prefix` is a path without extension, e.g. `out/golden`; missing directories are created.
/// `extension` is given without the dot. An existing file is never replaced, the final name
/// appears only once the contents are complete and on disk, and if `write_contents` fails nothing
/// is left behind.
pub fn write_new_file<F>(path_prefix: &Path, extension: &str, write_contents: F) -> Result<PathBuf>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let invalid = |reason| ImagingError::InvalidOutputName {
        reason,
        path: path_prefix.into(),
    };
    let stem = path_prefix
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| invalid("the prefix must end in a file name"))?;
    if stem == "." || stem == ".." {
        return Err(invalid("the prefix must end in a file name"));
    }
    let extension = extension.strip_prefix('.').unwrap_or(extension);
    if extension.is_empty() || extension.contains(['/', '\\']) {
        return Err(invalid(
            "the extension must be a non-empty name without slashes",
        ));
    }
    let dir = match path_prefix.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;

    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX);
    // Temp files are private (0600) by default; outputs should get the usual permissions,
    // so ask for 0666 and let the process umask take off what the user wants off.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut temp = builder.tempfile_in(&dir)?;
    {
        let mut buffered = BufWriter::new(temp.as_file_mut());
        write_contents(&mut buffered)?;
        buffered.flush()?;
    }
    temp.as_file().sync_all()?;

    let path = persist_under_free_name(temp, &dir, stem, extension, path_prefix)?;
    sync_dir(&dir)?;
    Ok(path)
}

/// [`write_new_file`] for contents already in memory.
pub fn write_new_file_bytes(path_prefix: &Path, extension: &str, bytes: &[u8]) -> Result<PathBuf> {
    write_new_file(
        path_prefix,
        extension,
        |writer| Ok(writer.write_all(bytes)?),
    )
}

fn persist_under_free_name(
    mut temp: NamedTempFile,
    dir: &Path,
    stem: &str,
    extension: &str,
    path_prefix: &Path,
) -> Result<PathBuf> {
    for suffix in 0..=MAX_NUMBERED_SUFFIX {
        let file_name = if suffix == 0 {
            format!("{stem}.{extension}")
        } else {
            format!("{stem}_{suffix:05}.{extension}")
        };
        let candidate = dir.join(file_name);
        match temp.persist_noclobber(&candidate) {
            Ok(_) => return Ok(candidate),
            Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => {
                // Taken (perhaps by a concurrent export a moment ago): try the next number.
                temp = err.file;
            }
            // Dropping `err.file` deletes the temporary file.
            Err(err) => return Err(err.error.into()),
        }
    }
    Err(ImagingError::NoFreeName {
        n_tries: MAX_NUMBERED_SUFFIX + 1,
        path: path_prefix.into(),
    })
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    // Windows cannot open a directory as a file to flush it; NTFS journals the rename itself.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn takes_plain_name_then_numbered_names_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("golden");
        let first = write_new_file_bytes(&prefix, "png", b"one").unwrap();
        let second = write_new_file_bytes(&prefix, "png", b"two").unwrap();
        let third = write_new_file_bytes(&prefix, ".png", b"three").unwrap();
        let other = write_new_file_bytes(&prefix, "psd", b"psd").unwrap();
        assert_eq!(first, dir.path().join("golden.png"));
        assert_eq!(second, dir.path().join("golden_00001.png"));
        assert_eq!(third, dir.path().join("golden_00002.png"));
        assert_eq!(other, dir.path().join("golden.psd"));
        assert_eq!(std::fs::read(&first).unwrap(), b"one");
        assert_eq!(std::fs::read(&second).unwrap(), b"two");
        assert_eq!(std::fs::read(&third).unwrap(), b"three");
        // No temporary file is left behind.
        assert_eq!(
            names_in(dir.path()),
            [
                "golden.png",
                "golden.psd",
                "golden_00001.png",
                "golden_00002.png"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn outputs_are_readable_by_others_unless_the_umask_says_otherwise() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = write_new_file_bytes(&dir.path().join("shared"), "png", b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // Tests run under the usual umask (022 or 002): group and others may read.
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
    }

    #[test]
    fn fills_gaps_but_skips_names_taken_by_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "theirs").unwrap();
        std::fs::write(dir.path().join("a_00001.txt"), "theirs too").unwrap();
        let path = write_new_file_bytes(&dir.path().join("a"), "txt", b"ours").unwrap();
        assert_eq!(path, dir.path().join("a_00002.txt"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
            "theirs"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a_00001.txt")).unwrap(),
            "theirs too"
        );
    }

    #[test]
    fn failed_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_new_file(&dir.path().join("x"), "png", |writer| {
            writer.write_all(b"partial")?;
            Err(ImagingError::NoLayers)
        })
        .unwrap_err();
        assert!(matches!(err, ImagingError::NoLayers));
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_new_file_bytes(&dir.path().join("a/b/pic"), "png", b"x").unwrap();
        assert_eq!(path, dir.path().join("a/b/pic.png"));
        assert_eq!(names_in(&dir.path().join("a/b")), ["pic.png"]);
    }

    #[test]
    fn rejects_names_that_are_not_files() {
        let dir = tempfile::tempdir().unwrap();
        for (prefix, extension) in [("..", "png"), ("pic", ""), ("pic", "a/b")] {
            let err = write_new_file_bytes(&dir.path().join(prefix), extension, b"x").unwrap_err();
            assert!(
                matches!(err, ImagingError::InvalidOutputName { .. }),
                "{err}"
            );
        }
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn concurrent_writers_get_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("race");
        let paths: Vec<PathBuf> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8_u8)
                .map(|idx| {
                    let prefix = &prefix;
                    scope.spawn(move || write_new_file_bytes(prefix, "bin", &[idx]).unwrap())
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        let mut contents: Vec<u8> = paths
            .iter()
            .map(|path| std::fs::read(path).unwrap())
            .map(|bytes| bytes[0])
            .collect();
        contents.sort();
        assert_eq!(contents, (0..8).collect::<Vec<u8>>());
        assert_eq!(names_in(dir.path()).len(), 8);
    }
}
