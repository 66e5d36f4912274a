//! The fixed parts of the window around the canvas: the menu bar, the status bar, the side
//! panel (inspector, problems, telemetry) and the run's progress line.
//!
//! Separate from the frame loop because these are the bulk of the drawing code; they read the
//! state and queue [`Command`]s, and never change the document themselves.

use egui::{Color32, Ui};
use veetance_engine::InputValue;

use super::{Command, EditorApp, GIB, problem_text};
use crate::canvas::literal_widget;
use crate::document::{Edit, Port, spec_of};
use crate::telemetry::TelemetryThread;

impl EditorApp {
    pub(super) fn menu_bar_ui(&mut self, ui: &mut Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("New").clicked() {
                    self.commands.push(Command::New { force: false });
                }
                if ui.button("Open…").clicked() {
                    self.open_path_dialog(false);
                }
                if ui.button("Save").clicked() {
                    self.commands.push(Command::Save);
                }
                if ui.button("Save As…").clicked() {
                    self.open_path_dialog(true);
                }
                ui.menu_button("Open Recent", |ui| {
                    if self.recent.is_empty() {
                        ui.label("no recent files");
                    }
                    for path in self.recent.clone() {
                        if ui.button(path.display().to_string()).clicked() {
                            self.commands.push(Command::Open { path, force: false });
                        }
                    }
                });
                ui.separator();
                if ui.button("Quit").clicked() {
                    self.commands.push(Command::Quit { force: false });
                }
            });
            ui.menu_button("Edit", |ui| {
                let undo = self.doc.undo_label().map(|l| format!("Undo {l}"));
                if ui
                    .add_enabled(
                        undo.is_some(),
                        egui::Button::new(undo.as_deref().unwrap_or("Undo")),
                    )
                    .clicked()
                {
                    self.commands.push(Command::Undo);
                }
                let redo = self.doc.redo_label().map(|l| format!("Redo {l}"));
                if ui
                    .add_enabled(
                        redo.is_some(),
                        egui::Button::new(redo.as_deref().unwrap_or("Redo")),
                    )
                    .clicked()
                {
                    self.commands.push(Command::Redo);
                }
                ui.separator();
                if ui.button("Add node…").clicked() {
                    self.commands
                        .push(Command::OpenPalette(self.canvas.visible_center()));
                }
                if ui.button("Copy").clicked() {
                    self.commands.push(Command::Copy);
                }
                if ui.button("Duplicate").clicked() {
                    self.commands.push(Command::Duplicate);
                }
                if ui.button("Delete").clicked() {
                    self.commands.push(Command::DeleteSelection);
                }
            });
            ui.separator();
            let mut name = self.doc.workflow().name.clone();
            let label = ui.label("workflow name");
            if ui
                .add(egui::TextEdit::singleline(&mut name).desired_width(140.0))
                .labelled_by(label.id)
                .changed()
            {
                self.commands.push(Command::Edit(Edit::SetName(name)));
            }
            ui.separator();
            if self.runner.is_running() {
                if ui.button("Cancel").clicked() {
                    self.commands.push(Command::Cancel);
                }
            } else if ui.button("▶ Run").on_hover_text("Ctrl+Enter").clicked() {
                self.commands.push(Command::Run);
            }
        });
    }

    pub(super) fn status_bar_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            let file = self
                .path
                .as_ref()
                .map_or("untitled".to_owned(), |p| p.display().to_string());
            ui.label(if self.is_dirty() {
                format!("{file} ●")
            } else {
                file
            });
            ui.separator();
            if let Some(status) = &self.runner.status {
                ui.label(status);
                ui.separator();
            }
            if !self.runner.written.is_empty() {
                // File names here, full paths on hover: the out folder is the same for all.
                let names: Vec<String> = self
                    .runner
                    .written
                    .iter()
                    .map(|f| {
                        std::path::Path::new(&f.path)
                            .file_name()
                            .map_or_else(|| f.path.clone(), |n| n.to_string_lossy().into_owned())
                    })
                    .collect();
                let paths: Vec<&str> = self
                    .runner
                    .written
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect();
                ui.label(format!("wrote {}", names.join(", ")))
                    .on_hover_text(paths.join("\n"));
                ui.separator();
            }
            for warning in &self.runner.warnings {
                ui.colored_label(ui.visuals().warn_fg_color, format!("⚠ {warning}"));
                ui.separator();
            }
            ui.label(&self.status);
        });
    }

    pub(super) fn side_panel_ui(&mut self, ui: &mut Ui) {
        egui::CollapsingHeader::new("Inspector")
            .default_open(true)
            .show(ui, |ui| self.inspector_ui(ui));
        let n_problems = self.validation.diagnostics.len();
        egui::CollapsingHeader::new(format!("Problems ({n_problems})"))
            .default_open(true)
            .show(ui, |ui| self.problems_list_ui(ui));
        egui::CollapsingHeader::new("Telemetry")
            .default_open(true)
            .show(ui, |ui| self.telemetry_panel_ui(ui));
    }

    fn inspector_ui(&mut self, ui: &mut Ui) {
        let [id] = self.selection.as_slice() else {
            ui.label(if self.selection.is_empty() {
                "Select one node to edit it here. Double-click the canvas or press Space to add nodes."
            } else {
                "Several nodes selected."
            });
            return;
        };
        let id = id.clone();
        let Some(node) = self.doc.workflow().nodes.0.get(&id).cloned() else {
            return;
        };
        let Ok(spec) = spec_of(self.doc.workflow(), &self.registry, &id).cloned() else {
            ui.colored_label(Color32::RED, format!("unknown node kind `{}`", node.kind));
            return;
        };
        ui.horizontal(|ui| {
            let label = ui.label("node id");
            let key = ui.id().with(("rename", &id));
            let mut text: String = ui.data(|d| d.get_temp(key)).unwrap_or_else(|| id.clone());
            let response = ui
                .add(egui::TextEdit::singleline(&mut text).desired_width(120.0))
                .labelled_by(label.id);
            if response.lost_focus() && text != id {
                self.commands.push(Command::Edit(Edit::Rename {
                    from: id.clone(),
                    to: text.clone(),
                }));
                ui.data_mut(|d| d.remove::<String>(key));
            } else {
                ui.data_mut(|d| d.insert_temp(key, text));
            }
            ui.label(egui::RichText::new(&spec.kind).strong());
        });
        ui.label(egui::RichText::new(&spec.description).small());
        egui::Grid::new("inputs").num_columns(3).show(ui, |ui| {
            for input in &spec.inputs {
                let qualified = format!("{id}.{}", input.name);
                let label = ui.label(&qualified).on_hover_text(format!(
                    "{} ({})",
                    input.doc,
                    input.data_type.name()
                ));
                let value = node.inputs.0.get(&input.name);
                // Source: a literal value, or a link from a compatible output.
                let current = match value {
                    Some(InputValue::Link(src, out)) => format!("{src}.{out}"),
                    _ if input.data_type.is_literal() => "value".to_owned(),
                    _ => "—".to_owned(),
                };
                let mut picked: Option<Option<(String, String)>> = None;
                egui::ComboBox::from_id_salt(("source", &id, &input.name))
                    .selected_text(current)
                    .show_ui(ui, |ui| {
                        if ui.selectable_label(false, "(unlinked)").clicked() {
                            picked = Some(None);
                        }
                        for (src, src_node) in &self.doc.workflow().nodes.0 {
                            if *src == id {
                                continue;
                            }
                            let Some(src_spec) =
                                self.registry.get(&src_node.kind).map(|n| n.spec())
                            else {
                                continue;
                            };
                            for output in &src_spec.outputs {
                                if input.data_type.accepts(output.data_type)
                                    && ui
                                        .selectable_label(false, format!("{src}.{}", output.name))
                                        .clicked()
                                {
                                    picked = Some(Some((src.clone(), output.name.clone())));
                                }
                            }
                        }
                    })
                    .response
                    .widget_info(|| {
                        egui::WidgetInfo::labeled(
                            egui::WidgetType::ComboBox,
                            true,
                            format!("{qualified} source"),
                        )
                    });
                match picked {
                    Some(Some((src, out))) => self.commands.push(Command::Edit(Edit::Connect {
                        from: Port::new(&src, &out),
                        to: Port::new(&id, &input.name),
                    })),
                    Some(None) => self.commands.push(Command::Edit(Edit::SetInput {
                        input: Port::new(&id, &input.name),
                        value: None,
                    })),
                    None => {}
                }
                if input.data_type.is_literal() && !matches!(value, Some(InputValue::Link(..))) {
                    if let Some(edit) =
                        literal_widget(ui, &id, input, value, label.id, &self.catalog)
                    {
                        self.commands.push(Command::Edit(edit));
                    }
                } else {
                    ui.label("");
                }
                ui.end_row();
            }
        });
    }

    fn problems_list_ui(&mut self, ui: &mut Ui) {
        if self.validation.diagnostics.is_empty() {
            ui.label("No problems.");
            return;
        }
        for diagnostic in &self.validation.diagnostics {
            let color = if diagnostic.is_error() {
                Color32::from_rgb(0xe0, 0x50, 0x50)
            } else {
                Color32::from_rgb(0xe0, 0xb0, 0x40)
            };
            let text = match &diagnostic.node {
                Some(node) => format!("{node}: {}", problem_text(diagnostic)),
                None => problem_text(diagnostic),
            };
            let clicked = ui
                .add(egui::Button::new(egui::RichText::new(text).color(color)).frame(false))
                .clicked();
            if clicked && let Some(node) = &diagnostic.node {
                self.commands.push(Command::Select(vec![node.clone()]));
            }
        }
    }

    fn telemetry_panel_ui(&mut self, ui: &mut Ui) {
        let sample = self.telemetry.as_ref().map(TelemetryThread::latest);
        let mut vram_total_gib = None;
        match &sample {
            None => {
                ui.label("telemetry off");
            }
            Some(sample) => {
                match &sample.gpu {
                    Ok(gpu) => {
                        ui.label(format!("GPU: {}", gpu.name));
                        if let (Some(used), Some(total), Some(line)) =
                            (gpu.vram_used_bytes, gpu.vram_total_bytes, gpu.vram_line())
                        {
                            vram_total_gib = Some(total as f64 / GIB);
                            ui.label(line);
                            if self.vram_budget_on {
                                // Live use against the budget the run is held to.
                                let fraction = used as f64 / (self.vram_budget_gib * GIB);
                                ui.add(
                                    egui::ProgressBar::new(fraction.clamp(0.0, 1.0) as f32).text(
                                        format!(
                                            "{:.1} of the {:.1} GiB budget",
                                            used as f64 / GIB,
                                            self.vram_budget_gib
                                        ),
                                    ),
                                );
                            }
                        }
                        ui.label(gpu.state_line());
                    }
                    // Without a driver NVML's error names a library; people need the fact.
                    Err(reason) if sample.samples > 0 => {
                        ui.label(egui::RichText::new("No NVIDIA GPU found").weak())
                            .on_hover_text(reason);
                    }
                    Err(reason) => {
                        ui.label(egui::RichText::new(reason).small().weak());
                    }
                }
                ui.label(sample.host_line());
            }
        }
        ui.checkbox(&mut self.vram_budget_on, "VRAM budget")
            .on_hover_text(
                "a hard limit on GPU memory: model layers that do not fit stay in RAM and \
                 stream in while their node runs; the plan shows on the nodes",
            );
        let max = vram_total_gib.unwrap_or(80.0).max(1.0);
        ui.add_enabled(
            self.vram_budget_on,
            egui::Slider::new(&mut self.vram_budget_gib, 0.5..=max).suffix(" GiB"),
        );
    }

    pub(super) fn progress_bar_ui(&self, ctx: &egui::Context) {
        let Some(fraction) = self.runner.progress() else {
            return;
        };
        let screen = ctx.content_rect();
        let painter = ctx.layer_painter(egui::LayerId::new(
            egui::Order::Foreground,
            egui::Id::new("run-progress"),
        ));
        let rect =
            egui::Rect::from_min_size(screen.min, egui::vec2(screen.width() * fraction, 2.0));
        painter.rect_filled(rect, 0.0, Color32::from_rgb(0x4c, 0xaf, 0xff));
    }
}
