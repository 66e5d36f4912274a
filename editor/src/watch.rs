//! Watching the open file for changes made outside the editor (notify + debouncer).
//!
//! The directory is watched rather than the file: many editors save by writing a new file
//! and renaming it over the old one, which a watch on the old inode would miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// Quiet time before a burst of file events is reported.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches one file; [`FileWatcher::changed`] says whether it was touched since last asked.
pub struct FileWatcher {
    path: PathBuf,
    events: Receiver<DebounceEventResult>,
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl FileWatcher {
    /// Starts watching `path`; `wake` is called when something happens in its directory.
    pub fn new(path: &Path, wake: Arc<dyn Fn() + Send + Sync>) -> Result<FileWatcher, String> {
        let path =
            std::fs::canonicalize(path).map_err(|err| format!("{}: {err}", path.display()))?;
        let dir = path
            .parent()
            .ok_or_else(|| format!("{} has no directory", path.display()))?
            .to_owned();
        let (sender, events) = channel();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
            let _ = sender.send(result);
            wake();
        })
        .map_err(|err| format!("cannot watch {}: {err}", dir.display()))?;
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|err| format!("cannot watch {}: {err}", dir.display()))?;
        Ok(FileWatcher {
            path,
            events,
            _debouncer: debouncer,
        })
    }

    /// Whether any event since the last call touched the watched file.
    pub fn changed(&self) -> bool {
        let mut touched = false;
        while let Ok(result) = self.events.try_recv() {
            if let Ok(events) = result {
                touched |= events.iter().any(|event| event.paths.contains(&self.path));
            }
        }
        touched
    }
}
