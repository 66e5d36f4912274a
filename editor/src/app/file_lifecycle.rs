//! The life of the open file: opening, saving, watching it for outside changes, autosaving
//! unsaved work to the recovery file, and the unsaved-changes guard when the window closes.
//!
//! Separate from [`crate::files`], which only reads and writes bytes: this module decides what
//! the editor's state becomes when a file is opened, saved, changed on disk or abandoned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use veetance_engine::{Workflow, validate};

use super::dialogs::Dialog;
use super::{Command, EditorApp};
use crate::canvas::Canvas;
use crate::document::Document;
use crate::files::{FileError, atomic_write, parse_workflow, workflow_source_from_bytes};
use crate::watch::FileWatcher;

/// Unsaved work is autosaved to the recovery file after this much quiet time.
const AUTOSAVE_AFTER: Duration = Duration::from_secs(2);

impl EditorApp {
    pub(super) fn external_change(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // Mid-rename or deleted: the next event will tell.
            Err(_) => return,
        };
        if self.disk_text.as_deref() == Some(text.as_str()) {
            return;
        }
        let workflow = match parse_workflow(&path, &text) {
            Ok(workflow) => workflow,
            Err(err) => {
                self.status =
                    format!("changed on disk but invalid, keeping the last good graph: {err}");
                self.disk_text = Some(text);
                return;
            }
        };
        let validation = validate(&workflow, &self.registry, Some(&text));
        if let Some(first) = validation.diagnostics.iter().find(|d| d.is_error()) {
            self.status = format!(
                "changed on disk but invalid, keeping the last good graph: {}",
                first.message
            );
            self.disk_text = Some(text);
            return;
        }
        if self.is_dirty() {
            self.dialog = Some(Dialog::ExternalChange { workflow, text });
        } else {
            self.reload(workflow, text);
        }
    }

    pub(super) fn reload(&mut self, workflow: Workflow, text: String) {
        self.doc.replace(workflow, "reload from disk");
        self.saved_revision = self.doc.revision();
        self.disk_text = Some(text);
        self.status = "reloaded: the file changed on disk".to_owned();
    }

    pub(super) fn close_guard(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested()) && !self.allow_close {
            if self.is_dirty() {
                ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                self.dialog = Some(Dialog::Unsaved {
                    then: Command::Quit { force: true },
                });
            } else {
                self.clean_exit();
            }
        }
    }

    pub(super) fn clean_exit(&mut self) {
        self.runner.cancel();
        if let Some(state) = &self.config.state_dir {
            state.clear_recovery();
        }
    }

    pub(super) fn autosave(&mut self, ctx: &egui::Context) {
        if self.doc.revision() != self.last_seen_revision {
            self.last_seen_revision = self.doc.revision();
            self.revision_changed_at = Instant::now();
        }
        if !self.is_dirty() || self.autosaved_revision == self.doc.revision() {
            return;
        }
        let quiet = self.revision_changed_at.elapsed();
        if quiet < AUTOSAVE_AFTER {
            ctx.request_repaint_after(AUTOSAVE_AFTER - quiet);
            return;
        }
        if let Some(state) = &self.config.state_dir {
            match state.write_recovery(self.path.as_deref(), &self.doc.workflow().to_ron()) {
                Ok(()) => self.autosaved_revision = self.doc.revision(),
                Err(err) => self.status = format!("autosave failed: {err}"),
            }
        }
    }

    /// Writes the recovery file now if there are unsaved edits (tests; the app autosaves
    /// after a quiet moment).
    pub fn autosave_now(&mut self) -> Result<(), FileError> {
        if let Some(state) = &self.config.state_dir
            && self.is_dirty()
        {
            state.write_recovery(self.path.as_deref(), &self.doc.workflow().to_ron())?;
            self.autosaved_revision = self.doc.revision();
        }
        Ok(())
    }

    pub(super) fn set_document(
        &mut self,
        doc: Document,
        path: Option<PathBuf>,
        disk_text: Option<String>,
    ) {
        self.doc = doc;
        self.saved_revision = self.doc.revision();
        self.autosaved_revision = self.doc.revision();
        // A new document restarts at revision 0: force the views to rebuild.
        self.canvas = Canvas::default();
        self.validated_revision = None;
        self.selection.clear();
        self.runner.states.clear();
        self.runner.previews.clear();
        self.textures.clear();
        self.disk_text = disk_text;
        self.path = path;
        self.watch();
    }

    pub(super) fn watch(&mut self) {
        self.watcher = None;
        if !self.config.watch_files {
            return;
        }
        if let Some(path) = &self.path {
            match FileWatcher::new(path, self.wake()) {
                Ok(watcher) => self.watcher = Some(watcher),
                Err(err) => self.status = format!("not watching the file: {err}"),
            }
        }
    }

    pub(super) fn open(&mut self, path: &Path) {
        let bytes = match crate::files::read_input(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                self.status = format!("cannot open {}: {err}", path.display());
                return;
            }
        };
        let is_png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
        let loaded = workflow_source_from_bytes(path, bytes)
            .and_then(|source| Ok((parse_workflow(path, &source)?, source)));
        match loaded {
            Ok((workflow, source)) => {
                // A workflow taken from a PNG is new work: saving must not overwrite the image.
                let (doc_path, disk_text) = if is_png {
                    (None, None)
                } else {
                    (Some(path.to_owned()), Some(source))
                };
                self.set_document(Document::new(workflow), doc_path, disk_text);
                self.status = format!("opened {}", path.display());
                if let Some(state) = &self.config.state_dir {
                    let _ = state.add_recent(path);
                    self.recent = state.recent();
                }
            }
            Err(err) => self.status = format!("cannot open: {err}"),
        }
    }

    pub(super) fn save(&mut self, path: &Path) {
        let text = self.doc.workflow().to_ron();
        match atomic_write(path, text.as_bytes()) {
            Ok(()) => {
                self.saved_revision = self.doc.revision();
                self.disk_text = Some(text);
                let moved = self.path.as_deref() != Some(path);
                self.path = Some(path.to_owned());
                if moved {
                    self.watch();
                }
                if let Some(state) = &self.config.state_dir {
                    state.clear_recovery();
                    let _ = state.add_recent(path);
                    self.recent = state.recent();
                }
                self.status = format!("saved {}", path.display());
            }
            Err(err) => self.status = format!("save failed: {err}"),
        }
    }
}
