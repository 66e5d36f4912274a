//! Reading input files safely: only regular files, and never more than a limit.
//!
//! Paths come from workflows, and a workflow may come from a stranger's PNG. A FIFO must give an
//! error instead of blocking forever in `open()`, and `/dev/zero` or a huge file must not be read
//! until memory runs out.

use std::fs::File;
use std::io::{self, Read as _};
use std::path::Path;

/// Largest image, latent or workflow file read whole: far above any real one (a 16384² PNG is
/// about 800 MB only when it is noise; real pictures and tensors are a fraction of that).
pub const MAX_INPUT_FILE_BYTES: u64 = 1 << 30;

/// Reads `path` whole if it is a regular file of at most `limit_bytes`.
///
/// The file type is checked before opening (opening a FIFO blocks until a writer appears) and
/// again on the open handle, in case the path was swapped in between. Errors are I/O errors
/// whose message says what was wrong; callers add the path.
pub fn read_regular_file(path: &Path, limit_bytes: u64) -> io::Result<Vec<u8>> {
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or socket cannot be read as input)",
        )
    };
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "larger than the {} MiB limit for input files",
                limit_bytes >> 20
            ),
        )
    };
    if metadata.len() > limit_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // Bounded again while reading: the file may grow after the size was read.
    file.take(limit_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(read_regular_file(&path, 5).unwrap(), b"hello");
    }

    #[test]
    fn files_over_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        std::fs::write(&path, b"hello").unwrap();
        let err = read_regular_file(&path, 4).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.png");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let err = read_regular_file(path, MAX_INPUT_FILE_BYTES).unwrap_err();
            assert!(
                err.to_string().contains("not a regular file"),
                "{}: {err}",
                path.display()
            );
        }
    }
}
