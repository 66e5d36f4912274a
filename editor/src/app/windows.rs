//! The windows that float over the canvas without blocking it: the add-node palette and the
//! enlarged preview of a node's image.
//!
//! Separate from the modal [`super::dialogs`]: these windows ask no question that must be
//! answered, and the canvas stays usable while they are open; the palette only queues the
//! kind chosen as an [`Edit::AddNode`].

use egui::Key;

use super::{Command, EditorApp};
use crate::document::Edit;
use crate::palette::{Filter, palette_list};

impl EditorApp {
    pub(super) fn palette_window_ui(&mut self, ctx: &egui::Context) {
        let Some(palette) = &mut self.palette else {
            return;
        };
        let mut open = true;
        let mut chosen = None;
        egui::Window::new("Add node")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                chosen = palette_list(
                    ui,
                    &self.registry,
                    &mut palette.query,
                    Filter::All,
                    palette.just_opened,
                );
                palette.just_opened = false;
            });
        if ctx.input(|i| i.key_pressed(Key::Escape)) {
            open = false;
        }
        if let Some(kind) = chosen {
            self.commands.push(Command::Edit(Edit::AddNode {
                kind,
                pos: palette.at,
                link_from: None,
                link_to: None,
            }));
            open = false;
        }
        if !open {
            self.palette = None;
        }
    }

    pub(super) fn enlarged_window_ui(&mut self, ctx: &egui::Context) {
        let Some(node) = self.enlarged.clone() else {
            return;
        };
        let Some(texture) = self.textures.get(&node) else {
            self.enlarged = None;
            return;
        };
        let mut open = true;
        egui::Window::new(format!("Preview {node}"))
            .open(&mut open)
            .show(ctx, |ui| {
                let size = texture.size_vec2();
                let scale = (512.0 / size.x.max(size.y).max(1.0)).max(1.0);
                ui.image((texture.id(), size * scale));
            });
        if !open {
            self.enlarged = None;
        }
    }
}
