//! The modal questions: unsaved changes, a file path to open or save, recovering unsaved work
//! after a crash, and a file changed on disk while there are unsaved edits.
//!
//! Separate because each dialog holds the command or data it is asking about until the user
//! answers; an answer queues commands or steps the file lifecycle ([`super::file_lifecycle`]).

use std::path::PathBuf;

use egui::Key;
use veetance_engine::Workflow;

use super::commands::force;
use super::{Command, EditorApp};
use crate::document::Document;

pub(super) enum Dialog {
    Unsaved {
        then: Command,
    },
    Path {
        save: bool,
        text: String,
    },
    Recover {
        original: Option<PathBuf>,
        text: String,
    },
    ExternalChange {
        workflow: Workflow,
        text: String,
    },
}

impl EditorApp {
    pub(super) fn open_path_dialog(&mut self, save: bool) {
        let text = self
            .path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string());
        self.dialog = Some(Dialog::Path { save, text });
    }

    pub(super) fn dialogs_ui(&mut self, ctx: &egui::Context) {
        let Some(dialog) = &mut self.dialog else {
            return;
        };
        let mut close = false;
        let mut rewatch = false;
        let mut then = Vec::new();
        match dialog {
            Dialog::Unsaved { then: next } => {
                egui::Window::new("Unsaved changes")
                    .collapsible(false)
                    .show(ctx, |ui| {
                        ui.label("The workflow has unsaved changes.");
                        ui.horizontal(|ui| {
                            if ui.button("Save").clicked() {
                                then.push(Command::Save);
                                then.push(force(next.clone()));
                                close = true;
                            }
                            if ui.button("Discard").clicked() {
                                then.push(force(next.clone()));
                                close = true;
                            }
                            if ui.button("Cancel").clicked() {
                                close = true;
                            }
                        });
                    });
            }
            Dialog::Path { save, text } => {
                let title = if *save {
                    "Save workflow as"
                } else {
                    "Open workflow"
                };
                egui::Window::new(title).collapsible(false).show(ctx, |ui| {
                    let label = ui.label("file path");
                    let response = ui
                        .add(egui::TextEdit::singleline(text).desired_width(360.0))
                        .labelled_by(label.id);
                    let enter = response.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                    if !*save {
                        for path in &self.recent {
                            if ui.button(path.display().to_string()).clicked() {
                                *text = path.display().to_string();
                            }
                        }
                    }
                    ui.horizontal(|ui| {
                        let action = if *save { "Save" } else { "Open" };
                        if (ui.button(action).clicked() || enter) && !text.trim().is_empty() {
                            let path = PathBuf::from(text.trim());
                            then.push(if *save {
                                Command::SaveAs(path)
                            } else {
                                Command::Open { path, force: false }
                            });
                            close = true;
                        }
                        if ui.button("Cancel").clicked() {
                            close = true;
                        }
                    });
                });
            }
            Dialog::Recover { original, text } => {
                egui::Window::new("Recover unsaved work?")
                    .collapsible(false)
                    .show(ctx, |ui| {
                        ui.label(format!(
                            "The editor did not close cleanly. Unsaved work of {} was kept.",
                            original
                                .as_ref()
                                .map_or("an untitled workflow".to_owned(), |p| p
                                    .display()
                                    .to_string())
                        ));
                        ui.horizontal(|ui| {
                            if ui.button("Recover").clicked() {
                                match Workflow::parse(text) {
                                    Ok(workflow) => {
                                        self.doc = Document::new(Workflow::new("untitled"));
                                        self.doc.replace(workflow, "recover");
                                        self.path.clone_from(original);
                                        self.saved_revision = 0;
                                        // The recovered text differs from the file on disk:
                                        // disk_text stays unset so any later change of the
                                        // file is reported.
                                        self.disk_text = None;
                                        rewatch = true;
                                        self.status = "recovered unsaved work".to_owned();
                                    }
                                    Err(_) => {
                                        self.status = "the recovery file is damaged".to_owned();
                                    }
                                }
                                close = true;
                            }
                            if ui.button("Discard").clicked() {
                                if let Some(state) = &self.config.state_dir {
                                    state.clear_recovery();
                                }
                                close = true;
                            }
                        });
                    });
            }
            Dialog::ExternalChange { workflow, text } => {
                let mut reload = None;
                egui::Window::new("File changed on disk")
                    .collapsible(false)
                    .show(ctx, |ui| {
                        ui.label(
                            "The file changed outside the editor, and you have unsaved edits.",
                        );
                        ui.horizontal(|ui| {
                            if ui.button("Reload").clicked() {
                                reload = Some((workflow.clone(), text.clone()));
                                close = true;
                            }
                            if ui.button("Keep mine").clicked() {
                                close = true;
                            }
                        });
                    });
                if let Some((workflow, text)) = reload {
                    self.reload(workflow, text);
                } else if close {
                    self.disk_text = Some(text.clone());
                }
            }
        }
        if close {
            self.dialog = None;
        }
        if rewatch {
            self.watch();
        }
        self.commands.extend(then);
    }
}
