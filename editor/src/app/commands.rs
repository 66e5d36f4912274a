//! What the user can ask for: the [`Command`] enum, the keyboard shortcuts and clipboard and
//! drop events that produce commands, and [`EditorApp::execute`], which applies them.
//!
//! Separate from the frame loop and from the drawing code: widgets only queue commands, and
//! this module is where they become changes to the document and the editor state, once per
//! frame.

use std::path::PathBuf;

use egui::{Key, KeyboardShortcut, Modifiers};
use veetance_engine::{RunEnv, validate};

use super::dialogs::Dialog;
use super::{EditorApp, GIB, Palette};
use crate::document::{Document, Edit};

/// Something the user asked for; applied once per frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A change to the workflow.
    Edit(Edit),
    /// Undo the last edit.
    Undo,
    /// Redo the last undone edit.
    Redo,
    /// Start a new workflow (`force`: skip the unsaved-changes guard).
    New {
        /// Skip the guard.
        force: bool,
    },
    /// Open a workflow file (.ron, or a PNG written by Export).
    Open {
        /// The file.
        path: PathBuf,
        /// Skip the guard.
        force: bool,
    },
    /// Save to the current path (asks for one if there is none).
    Save,
    /// Save to `path` and make it the current path.
    SaveAs(PathBuf),
    /// Run the workflow on the worker thread.
    Run,
    /// Cancel the run.
    Cancel,
    /// Copy the selection to the clipboard as RON text.
    Copy,
    /// Paste RON text (nodes) from the clipboard.
    Paste(String),
    /// Copy and paste the selection in one step.
    Duplicate,
    /// Delete the selected nodes.
    DeleteSelection,
    /// Select these nodes.
    Select(Vec<String>),
    /// Open the palette at a canvas position.
    OpenPalette((f64, f64)),
    /// Quit (`force`: without the guard).
    Quit {
        /// Skip the guard.
        force: bool,
    },
}

impl EditorApp {
    pub(super) fn shortcuts(&mut self, ctx: &egui::Context) {
        let typing = ctx.egui_wants_keyboard_input();
        let shortcut = |ctx: &egui::Context, modifiers: Modifiers, key: Key| {
            ctx.input_mut(|i| i.consume_shortcut(&KeyboardShortcut::new(modifiers, key)))
        };
        if shortcut(ctx, Modifiers::COMMAND, Key::Enter) {
            self.commands.push(Command::Run);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::N) {
            self.commands.push(Command::New { force: false });
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::O) {
            self.open_path_dialog(false);
        }
        if shortcut(ctx, Modifiers::COMMAND | Modifiers::SHIFT, Key::S) {
            self.open_path_dialog(true);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::S) {
            self.commands.push(Command::Save);
        }
        if typing {
            // Text fields own Ctrl+Z, Ctrl+C, Delete and Space while they have focus.
            return;
        }
        if shortcut(ctx, Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
            || shortcut(ctx, Modifiers::COMMAND, Key::Y)
        {
            self.commands.push(Command::Redo);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::Z) {
            self.commands.push(Command::Undo);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::D) {
            self.commands.push(Command::Duplicate);
        }
        if shortcut(ctx, Modifiers::NONE, Key::Delete)
            || shortcut(ctx, Modifiers::NONE, Key::Backspace)
        {
            self.commands.push(Command::DeleteSelection);
        }
        if self.palette.is_none() && shortcut(ctx, Modifiers::NONE, Key::Space) {
            let at = ctx.pointer_hover_pos().map_or_else(
                || self.canvas.visible_center(),
                |p| self.canvas.to_canvas(p),
            );
            self.commands.push(Command::OpenPalette(at));
        }
        let events = ctx.input(|i| i.events.clone());
        for event in events {
            match event {
                egui::Event::Copy => self.commands.push(Command::Copy),
                egui::Event::Cut => {
                    self.commands.push(Command::Copy);
                    self.commands.push(Command::DeleteSelection);
                }
                egui::Event::Paste(text) => self.commands.push(Command::Paste(text)),
                _ => {}
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if let Some(path) = dropped.into_iter().next() {
            self.commands.push(Command::Open { path, force: false });
        }
    }

    pub(super) fn execute(&mut self, command: Command) {
        match command {
            Command::Edit(edit) => match self.doc.apply(edit.clone(), &self.registry) {
                Ok(created) => {
                    if let Edit::Rename { from, to } = &edit {
                        for id in &mut self.selection {
                            if id == from {
                                id.clone_from(to);
                            }
                        }
                    }
                    if !created.is_empty() {
                        self.selection = created;
                    }
                    self.selection
                        .retain(|id| self.doc.workflow().nodes.0.contains_key(id));
                }
                Err(err) => self.status = err.to_string(),
            },
            Command::Undo => {
                if let Err(err) = self.doc.undo() {
                    self.status = err.to_string();
                }
                self.prune_selection();
            }
            Command::Redo => {
                if let Err(err) = self.doc.redo() {
                    self.status = err.to_string();
                }
                self.prune_selection();
            }
            Command::New { force } => {
                if !force && self.is_dirty() {
                    self.dialog = Some(Dialog::Unsaved {
                        then: Command::New { force: true },
                    });
                    return;
                }
                self.set_document(Document::default(), None, None);
                self.status = "new workflow".to_owned();
            }
            Command::Open { path, force } => {
                if !force && self.is_dirty() {
                    self.dialog = Some(Dialog::Unsaved {
                        then: Command::Open { path, force: true },
                    });
                    return;
                }
                self.open(&path);
            }
            Command::Save => match self.path.clone() {
                Some(path) => self.save(&path),
                None => self.open_path_dialog(true),
            },
            Command::SaveAs(path) => self.save(&path),
            Command::Run => self.run(),
            Command::Cancel => {
                self.runner.cancel();
                self.status = "cancelling…".to_owned();
            }
            Command::Copy => {
                if let Some(text) = self.doc.copy(&self.selection) {
                    if let Some(ctx) = &self.ctx {
                        ctx.copy_text(text.clone());
                    }
                    self.status = format!("copied {} node(s)", self.selection.len());
                    self.clipboard = text;
                }
            }
            Command::Paste(text) => self.execute(Command::Edit(Edit::Paste(text))),
            Command::Duplicate => {
                if let Some(text) = self.doc.copy(&self.selection) {
                    self.execute(Command::Edit(Edit::Paste(text)));
                }
            }
            Command::DeleteSelection => {
                if !self.selection.is_empty() {
                    let ids = std::mem::take(&mut self.selection);
                    self.execute(Command::Edit(Edit::RemoveNodes(ids)));
                }
            }
            Command::Select(ids) => self.selection = ids,
            Command::OpenPalette(at) => {
                self.palette = Some(Palette {
                    at,
                    query: String::new(),
                    just_opened: true,
                });
            }
            Command::Quit { force } => {
                if !force && self.is_dirty() {
                    self.dialog = Some(Dialog::Unsaved {
                        then: Command::Quit { force: true },
                    });
                    return;
                }
                self.clean_exit();
                self.allow_close = true;
                if let Some(ctx) = &self.ctx {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            }
        }
    }

    fn prune_selection(&mut self) {
        let workflow = self.doc.workflow();
        self.selection
            .retain(|id| workflow.nodes.0.contains_key(id));
    }

    fn run(&mut self) {
        if self.runner.is_running() {
            return;
        }
        let workflow = self.doc.workflow().clone();
        let validation = validate(&workflow, &self.registry, None);
        let Some(graph) = validation.graph else {
            let errors = validation
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .count();
            self.status = format!("cannot run: {errors} problem(s), see Problems");
            return;
        };
        let budget = self
            .vram_budget_on
            .then_some((self.vram_budget_gib * GIB) as u64);
        self.status.clear();
        self.runner.workflow_dir = self.path().and_then(RunEnv::folder_of);
        self.runner
            .start(graph, workflow.to_ron(), budget, self.wake());
    }
}

pub(super) fn force(command: Command) -> Command {
    match command {
        Command::New { .. } => Command::New { force: true },
        Command::Open { path, .. } => Command::Open { path, force: true },
        Command::Quit { .. } => Command::Quit { force: true },
        other => other,
    }
}
